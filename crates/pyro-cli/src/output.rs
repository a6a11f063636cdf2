//! One place for what goes to stdout (products, JSON) and stderr (diagnostics), and for exit codes.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

/// pyro's own failure in `run` (the guest command's code is reserved for the command).
pub const EXIT_RUN_FAILURE: u8 = 125;
/// pyro's own failure elsewhere.
pub const EXIT_FAILURE: u8 = 1;
/// Interrupted by Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Prints `value` as pretty JSON with sorted keys on stdout.
pub fn print_json<T: Serialize>(value: &T) {
    let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    write_stdout(format!("{text}\n").as_bytes());
}

/// Writes to stdout; a closed pipe (e.g. `| head`) is not an error worth a panic.
pub fn write_stdout(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

pub fn write_stderr(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
}

/// Reports `err` (JSON on stdout with `--json`, else `error:`/`help:` lines on stderr) and returns the
/// exit code for it.
pub fn fail(err: &pyro_core::Error, json: bool, code: u8) -> ExitCode {
    let hint = crate::next_step::hint(err);
    if json {
        let next = err.next().map(crate::next_step::json);
        print_json(&serde_json::json!({ "error": err.to_json_with(hint, next) }));
    } else {
        // Messages may quote the guest (its errors, file names): never raw on a terminal.
        let mut text = format!("error: {}\n", crate::terminal::text(err.message()));
        for cause in err.causes() {
            text.push_str(&format!("caused by: {}\n", crate::terminal::text(cause)));
        }
        if let Some(hint) = hint {
            text.push_str(&format!("help: {}\n", crate::terminal::text(&hint)));
        }
        if err.kind() == pyro_core::ErrorKind::Internal {
            text.push_str("note: this is a bug in pyro; please report it with the output above\n");
        }
        write_stderr(text.as_bytes());
    }
    if err.kind() == pyro_core::ErrorKind::Interrupted {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    ExitCode::from(code)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|err| {
            write_stderr(format!("error: cannot start the async runtime: {err}\n").as_bytes());
            std::process::exit(EXIT_FAILURE as i32)
        })
}

pub fn dirs(json: bool, code: u8) -> Result<pyro_core::Dirs, ExitCode> {
    pyro_core::Dirs::from_env().map_err(|err| fail(&err, json, code))
}
