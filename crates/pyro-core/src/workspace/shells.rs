//! PTY shells in a workspace: interactive shells the guest agent keeps open between calls (and
//! clients), read by cursor so that no output is lost or repeated, optionally rendered as the text
//! a person would see on the terminal.

use std::time::{Duration, Instant};

pub use pyro_proto::ShellState;
use pyro_proto::{Reply, Request, ShellChunk, ShellInfo, ShellSpec};
use serde::Serialize;

use super::model::seconds;
use super::ops::{resolve_cwd, started};
use crate::agent_client::{self, AgentCall};
use crate::vocab::ExecutionMode;
use crate::{limits, Dirs, Error, ErrorKind, Result};

/// How long a closed shell gets between SIGHUP and SIGKILL.
const CLOSE_GRACE_MS: u64 = 5000;
/// How often an idle wait looks for new output.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// The signals a shell takes, by name.
pub const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("TERM", libc::SIGTERM),
    ("KILL", libc::SIGKILL),
];

#[derive(Debug, Clone, Serialize)]
pub struct Shell {
    pub workspace_id: String,
    pub shell_id: String,
    pub state: ShellState,
    pub cwd: String,
    pub cols: u16,
    pub rows: u16,
    pub pid: Option<i32>,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub exit_code: Option<i32>,
    /// Bytes of output so far: the cursor where the next output starts.
    pub output_bytes: u64,
    pub execution_mode: ExecutionMode,
}

fn view(workspace_id: &str, info: &ShellInfo) -> Shell {
    Shell {
        workspace_id: workspace_id.to_string(),
        shell_id: info.shell_id.clone(),
        state: info.state,
        cwd: info.cwd.clone(),
        cols: info.cols,
        rows: info.rows,
        pid: info.pid,
        started_at: seconds(info.started_at_ms as i64),
        ended_at: info.ended_at_ms.map(|t| seconds(t as i64)),
        exit_code: info.exit_code,
        output_bytes: info.output_bytes,
        execution_mode: ExecutionMode::Guest,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ShellRead {
    #[serde(flatten)]
    pub shell: Shell,
    /// Where this output starts (later than asked only when older output was dropped: the VM keeps
    /// the last few MiB of each shell).
    pub cursor: u64,
    /// Where the next read should start.
    pub next_cursor: u64,
    pub output: String,
    /// More output is waiting after `next_cursor`.
    pub truncated: bool,
    /// `output` is the text a terminal would show (escape sequences applied), not the raw bytes.
    pub plain: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShellList {
    pub workspace_id: String,
    pub count: usize,
    pub shells: Vec<Shell>,
}

#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub cursor: u64,
    pub max_chars: u64,
    pub plain: bool,
    /// Wait until no output has come for this long (then answer with all that came).
    pub wait_for_idle_ms: Option<u64>,
}

impl Default for ReadOptions {
    fn default() -> ReadOptions {
        ReadOptions {
            cursor: 0,
            max_chars: limits::DEFAULT_SHELL_READ_BYTES,
            plain: false,
            wait_for_idle_ms: None,
        }
    }
}

fn not_found<'a>(workspace_id: &'a str, shell_id: &'a str) -> impl Fn(Error) -> Error + 'a {
    move |err| {
        if err.kind() == ErrorKind::NotFound || err.message().contains("does not exist") {
            Error::new(
                ErrorKind::NotFound,
                format!("shell '{shell_id}' does not exist in workspace {workspace_id}"),
            )
            .with_hint(
                "shells end with their workspace's VM (stop, reset, a restart); open another",
            )
        } else {
            err
        }
    }
}

async fn call(dir: &std::path::Path, request: &Request) -> Result<ShellInfo> {
    match agent_client::call(dir, request).await? {
        Reply::Shell(info) => Ok(info),
        other => Err(agent_client::unexpected(other)),
    }
}

/// Opens a shell; `secret_env` (secret name → variable) puts secrets in its environment.
pub async fn open(
    dirs: &Dirs,
    reference: &str,
    cwd: Option<&str>,
    (cols, rows): (u16, u16),
    secret_env: &std::collections::BTreeMap<String, String>,
) -> Result<Shell> {
    limits::check("cols", cols, &limits::SHELL_COLS)?;
    limits::check("rows", rows, &limits::SHELL_ROWS)?;
    let cwd = resolve_cwd(cwd)?;
    let (_, record, dir) = started(dirs, reference, "shell open")?;
    let wdir = super::lifecycle::workspace_dir(dirs, &record.id);
    let spec = ShellSpec {
        cwd,
        cols,
        rows,
        env: super::ops::with_secrets(&wdir, &record.id, &Default::default(), secret_env)?,
    };
    let info = call(&dir, &Request::ShellOpen(spec)).await?;
    Ok(view(&record.id, &info))
}

/// One read from the agent: the chunk and its bytes.
async fn read_once(
    dir: &std::path::Path,
    shell_id: &str,
    cursor: u64,
    max_bytes: u64,
) -> Result<(ShellChunk, Vec<u8>)> {
    let request = Request::ShellRead {
        shell_id: shell_id.to_string(),
        cursor,
        max_bytes,
    };
    let (reply, data) = AgentCall::start(dir, &request)
        .await?
        .collect(max_bytes)
        .await?;
    match reply {
        Reply::ShellOutput(chunk) => Ok((chunk, data)),
        other => Err(agent_client::unexpected(other)),
    }
}

pub async fn read(
    dirs: &Dirs,
    reference: &str,
    shell_id: &str,
    options: &ReadOptions,
) -> Result<ShellRead> {
    limits::check("max_chars", options.max_chars, &limits::SHELL_READ_BYTES)?;
    if let Some(ms) = options.wait_for_idle_ms {
        limits::check("wait_for_idle_ms", ms, &limits::SHELL_IDLE_MS)?;
    }
    let (_, record, dir) = started(dirs, reference, "shell read")?;
    let missing = not_found(&record.id, shell_id);
    let (mut chunk, mut data) = read_once(&dir, shell_id, options.cursor, options.max_chars)
        .await
        .map_err(&missing)?;
    if let Some(idle_ms) = options.wait_for_idle_ms {
        // Keep reading until no output has come for `idle_ms`, the shell ended, or the read is full.
        let idle = Duration::from_millis(idle_ms);
        let mut last_output = Instant::now();
        loop {
            let full = data.len() as u64 >= options.max_chars;
            if full || chunk.shell.state != ShellState::Running || last_output.elapsed() >= idle {
                break;
            }
            tokio::time::sleep(IDLE_POLL).await;
            let left = options.max_chars - data.len() as u64;
            let (more, bytes) = read_once(&dir, shell_id, chunk.next_cursor, left)
                .await
                .map_err(&missing)?;
            if !bytes.is_empty() {
                last_output = Instant::now();
            }
            data.extend_from_slice(&bytes);
            chunk = ShellChunk {
                cursor: chunk.cursor,
                ..more
            };
        }
    }
    // Secrets are redacted before anything sees the bytes; a tail that may be the start of one waits
    // for the next read (or the shell's end).
    let redactor = super::secrets::Redactor::for_workspace(&super::lifecycle::workspace_dir(
        dirs, &record.id,
    ))?;
    let truncated = chunk.next_cursor < chunk.shell.output_bytes;
    if !redactor.is_empty() {
        let longest = redactor.longest() as u64;
        // A read that stopped at the start of what may be a secret, when more is there, reads on.
        let (_, used) = redactor.window(&data, false);
        if used == 0 && !data.is_empty() && truncated {
            let (more, bytes) = read_once(&dir, shell_id, chunk.next_cursor, longest)
                .await
                .map_err(&missing)?;
            data.extend_from_slice(&bytes);
            chunk = ShellChunk {
                cursor: chunk.cursor,
                ..more
            };
        }
        // Whatever the cursor: a secret that began before it is redacted too.
        let from = chunk.cursor.saturating_sub(longest.saturating_sub(1));
        let before = if from < chunk.cursor {
            match read_once(&dir, shell_id, from, chunk.cursor - from).await {
                Ok((seen, bytes))
                    if seen.cursor == from && bytes.len() as u64 == chunk.cursor - from =>
                {
                    bytes
                }
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let ended = chunk.shell.state != ShellState::Running
            && chunk.next_cursor >= chunk.shell.output_bytes;
        let all = [before.as_slice(), data.as_slice()].concat();
        let (shown, used) = redactor.window_after(&all, before.len(), ended);
        chunk.next_cursor -= (data.len() - used) as u64;
        data = shown;
    }
    let output = if options.plain {
        render_plain(&data, chunk.shell.cols)
    } else {
        String::from_utf8_lossy(&data).into_owned()
    };
    Ok(ShellRead {
        shell: view(&record.id, &chunk.shell),
        cursor: chunk.cursor,
        next_cursor: chunk.next_cursor,
        output,
        truncated,
        plain: options.plain,
    })
}

/// What a terminal `cols` wide shows after `bytes`: escape sequences applied (colours dropped,
/// cursor moves and erasures done), every line kept, trailing blanks trimmed.
pub fn render_plain(bytes: &[u8], cols: u16) -> String {
    // Tall enough that nothing scrolls away: each line of output is at least one row.
    let lines = bytes.iter().filter(|&&b| b == b'\n').count();
    let rows = (lines + 2).min(u16::MAX as usize) as u16;
    let mut parser = vt100::Parser::new(rows, cols.max(1), 0);
    parser.process(bytes);
    let contents = parser.screen().contents();
    let mut text: Vec<&str> = contents.lines().map(str::trim_end).collect();
    while text.last().is_some_and(|l| l.is_empty()) {
        text.pop();
    }
    text.join("\n")
}

pub async fn write(
    dirs: &Dirs,
    reference: &str,
    shell_id: &str,
    input: &str,
    append_newline: bool,
) -> Result<Shell> {
    let (_, record, dir) = started(dirs, reference, "shell write")?;
    let mut input = input.to_string();
    if append_newline {
        input.push('\n');
    }
    let request = Request::ShellWrite {
        shell_id: shell_id.to_string(),
        input,
    };
    let info = call(&dir, &request)
        .await
        .map_err(not_found(&record.id, shell_id))?;
    Ok(view(&record.id, &info))
}

pub async fn resize(
    dirs: &Dirs,
    reference: &str,
    shell_id: &str,
    cols: u16,
    rows: u16,
) -> Result<Shell> {
    limits::check("cols", cols, &limits::SHELL_COLS)?;
    limits::check("rows", rows, &limits::SHELL_ROWS)?;
    let (_, record, dir) = started(dirs, reference, "shell resize")?;
    let request = Request::ShellResize {
        shell_id: shell_id.to_string(),
        cols,
        rows,
    };
    let info = call(&dir, &request)
        .await
        .map_err(not_found(&record.id, shell_id))?;
    Ok(view(&record.id, &info))
}

pub async fn signal(dirs: &Dirs, reference: &str, shell_id: &str, name: &str) -> Result<Shell> {
    let signal = SIGNALS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim_start_matches("SIG")))
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
            Error::invalid(format!(
                "signal_name must be one of: {}, got '{name}'",
                names.join(", ")
            ))
        })?;
    let (_, record, dir) = started(dirs, reference, "shell signal")?;
    let request = Request::ShellSignal {
        shell_id: shell_id.to_string(),
        signal,
    };
    let info = call(&dir, &request)
        .await
        .map_err(not_found(&record.id, shell_id))?;
    Ok(view(&record.id, &info))
}

#[derive(Debug, Clone, Serialize)]
pub struct Closed {
    #[serde(flatten)]
    pub shell: Shell,
    pub closed: bool,
}

pub async fn close(dirs: &Dirs, reference: &str, shell_id: &str) -> Result<Closed> {
    let (_, record, dir) = started(dirs, reference, "shell close")?;
    let request = Request::ShellClose {
        shell_id: shell_id.to_string(),
        grace_ms: CLOSE_GRACE_MS,
    };
    let info = call(&dir, &request)
        .await
        .map_err(not_found(&record.id, shell_id))?;
    Ok(Closed {
        shell: view(&record.id, &info),
        closed: true,
    })
}

pub async fn list(dirs: &Dirs, reference: &str) -> Result<ShellList> {
    let (_, record, dir) = started(dirs, reference, "shell list")?;
    let shells =
        match agent_client::call_as(&dir, &Request::ShellList, agent_client::Purpose::Inspection)
            .await?
        {
            Reply::Shells { shells } => shells,
            other => return Err(agent_client::unexpected(other)),
        };
    let shells: Vec<Shell> = shells.iter().map(|s| view(&record.id, s)).collect();
    Ok(ShellList {
        workspace_id: record.id,
        count: shells.len(),
        shells,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_output_is_what_the_terminal_shows() {
        let raw = b"pyro$ echo hi\r\nhi\r\n\x1b[31mred\x1b[0m\rR\r\npyro$ ";
        assert_eq!(render_plain(raw, 80), "pyro$ echo hi\nhi\nRed\npyro$");
        // A line erased and rewritten, as progress bars do.
        assert_eq!(render_plain(b"10%\r\x1b[2K100%\r\n", 80), "100%");
    }
}
