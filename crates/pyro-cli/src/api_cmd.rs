//! `pyro api serve` and `pyro api env`: the E2B-compatible API.

use std::process::ExitCode;

use clap::Subcommand;

use crate::output::{self, EXIT_FAILURE};

#[derive(Subcommand)]
pub enum ApiCommand {
    /// Serve the E2B API on 127.0.0.1, so the unmodified e2b SDKs run their sandboxes on pyro
    #[command(
        after_help = "Point the SDKs at it with the three variables it prints (or\n\
`eval \"$(pyro api env)\"`), then `Sandbox.create()` works as it does with E2B's cloud.\n\
A sandbox is a pyro workspace (`pyro workspace list` shows it); a template is an environment\n\
(`base` is debian:12). docs/e2b.md says what is supported."
    )]
    Serve {
        /// Port on 127.0.0.1 (0: a free one)
        #[arg(long, default_value_t = pyro_api::DEFAULT_PORT)]
        port: u16,
        /// Also serve SDKs in debug mode (E2B_DEBUG=true): one shared sandbox, reached without any
        /// credential, so any local process can use it
        #[arg(long)]
        debug_sandbox: bool,
    },
    /// Print the environment variables that point the e2b SDKs at `pyro api serve`
    Env {
        /// The port the server listens on
        #[arg(long, default_value_t = pyro_api::DEFAULT_PORT)]
        port: u16,
        /// Print them as a JSON object
        #[arg(long)]
        json: bool,
    },
}

pub fn main(command: ApiCommand) -> ExitCode {
    let json = matches!(command, ApiCommand::Env { json: true, .. });
    let dirs = match output::dirs(json, EXIT_FAILURE) {
        Ok(dirs) => dirs,
        Err(code) => return code,
    };
    match command {
        ApiCommand::Serve {
            port,
            debug_sandbox,
        } => match output::runtime().block_on(pyro_api::serve(dirs, port, debug_sandbox)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => output::fail(&err, false, EXIT_FAILURE),
        },
        ApiCommand::Env { port, json } => match pyro_api::sdk_env(&dirs, port) {
            Ok(env) if json => {
                let map: serde_json::Map<String, serde_json::Value> = env
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
                    .collect();
                output::print_json(&map);
                ExitCode::SUCCESS
            }
            Ok(env) => {
                let text: String = env
                    .iter()
                    .map(|(k, v)| format!("export {k}={v}\n"))
                    .collect();
                output::write_stdout(text.as_bytes());
                ExitCode::SUCCESS
            }
            Err(err) => output::fail(&err, json, EXIT_FAILURE),
        },
    }
}
