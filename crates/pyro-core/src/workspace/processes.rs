//! Processes in a workspace: commands the guest agent starts and keeps by pid, on pipes or a PTY,
//! with stdin, signals, a deadline, and output that any number of followers stream as it comes.
//! The E2B-compatible API's commands and PTYs are these.

use std::collections::BTreeMap;
use std::time::Duration;

pub use pyro_proto::{FollowFrom, ProcessInfo, PtySize};
use pyro_proto::{ProcessSpec, Reply, Request};

use super::journal::{self, Operation, ProcessParams, ProcessRecord};
use super::ops::{resolve_cwd, started};
use super::{lifecycle, store};
use crate::agent_client::{self, AgentCall, Purpose};
use crate::vm::OutputSink;
use crate::{limits, Dirs, Error, Result};

/// How long a follow of a process without a deadline may last.
const FOLLOW_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Bytes of a process's arguments and environment together, at most: the agent reports them back
/// with every listing, which must fit one message.
pub const MAX_SPEC_BYTES: usize = 64 << 10;

/// What to start.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Default `/workspace`; a relative path is taken under it.
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    pub pty: Option<PtySize>,
    /// Keep stdin open for input (a PTY always takes input).
    pub stdin: bool,
    pub tag: Option<String>,
    /// Kill it after this long (`None`: it runs until it ends or is killed).
    pub timeout_seconds: Option<u64>,
}

fn process_of(reply: Reply) -> Result<ProcessInfo> {
    match reply {
        Reply::Process(info) => Ok(info),
        other => Err(agent_client::unexpected(other)),
    }
}

/// One request about a process of a started workspace, counted as activity.
async fn call(dirs: &Dirs, reference: &str, operation: &str, request: Request) -> Result<Reply> {
    let (db, record, dir) = started(dirs, reference, operation)?;
    let reply = agent_client::call(&dir, &request).await?;
    store::touch(db.conn(), &record.id, lifecycle::now_ms())?;
    Ok(reply)
}

pub async fn start(dirs: &Dirs, reference: &str, options: &ProcessOptions) -> Result<ProcessInfo> {
    if options.argv.is_empty() || options.argv[0].is_empty() {
        return Err(Error::invalid("a command is required"));
    }
    if let Some(seconds) = options.timeout_seconds {
        limits::check("timeout_seconds", seconds, &limits::TIMEOUT_SECONDS)?;
    }
    if let Some(size) = options.pty {
        if size.cols == 0 || size.rows == 0 {
            return Err(Error::invalid(
                "a PTY needs at least one column and one row",
            ));
        }
    }
    crate::run::validate_env(&options.env)?;
    let spec_bytes: usize = options.argv.iter().map(String::len).sum::<usize>()
        + options
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if spec_bytes > MAX_SPEC_BYTES {
        return Err(Error::invalid(format!(
            "the command and its environment are {spec_bytes} bytes; at most {MAX_SPEC_BYTES} are taken"
        ))
        .with_hint("pass large data as a file, or through stdin"));
    }
    let spec = ProcessSpec {
        command: pyro_proto::Command::Argv(options.argv.clone()),
        cwd: resolve_cwd(options.cwd.as_deref())?,
        env: options.env.clone(),
        pty: options.pty,
        stdin: options.stdin,
        tag: options.tag.clone(),
        timeout_ms: options.timeout_seconds.map(|s| s.saturating_mul(1000)),
    };
    let (mut db, record, dir) = started(dirs, reference, "process start")?;
    let timer = journal::Timer::start();
    let params = ProcessParams {
        argv: options.argv.clone(),
        cwd: spec.cwd.clone(),
        pty: spec.pty.is_some(),
        timeout_seconds: options.timeout_seconds,
    };
    let info = process_of(agent_client::call(&dir, &Request::ProcessStart(spec)).await?)?;
    let operation = Operation::ProcessStart {
        params,
        result: ProcessRecord { pid: info.pid },
    };
    if let Err(err) = timer.record(&mut db, &record.id, true, &operation) {
        // Nobody will hear of it: it does not run on unrecorded.
        let _ = agent_client::call(
            &dir,
            &Request::ProcessSignal {
                pid: info.pid,
                signal: libc::SIGKILL,
            },
        )
        .await;
        return Err(err);
    }
    Ok(info)
}

/// Streams the process's output to `on_output` (a PTY's as stdout) until it ends; returns how it
/// ended. Output the guest sends is passed on as it comes: bounding it is the caller's part.
pub async fn follow(
    dirs: &Dirs,
    reference: &str,
    pid: i32,
    from: FollowFrom,
    on_output: OutputSink<'_>,
) -> Result<ProcessInfo> {
    let (_db, _record, dir) = started(dirs, reference, "process follow")?;
    let request = Request::ProcessFollow { pid, from };
    let call = AgentCall::start_with(&dir, &request, Purpose::Activity, FOLLOW_LIMIT).await?;
    process_of(call.finish(on_output, &mut tokio::io::sink(), 0).await?)
}

/// Writes `data` to the process's stdin (or PTY).
pub async fn input(dirs: &Dirs, reference: &str, pid: i32, data: &[u8]) -> Result<ProcessInfo> {
    if data.len() as u64 > pyro_proto::MAX_PROCESS_INPUT_BYTES {
        return Err(Error::invalid(format!(
            "the input is {} bytes; one write takes at most {}",
            data.len(),
            pyro_proto::MAX_PROCESS_INPUT_BYTES
        ))
        .with_hint("send it in smaller pieces"));
    }
    let (db, record, dir) = started(dirs, reference, "process input")?;
    let mut call =
        AgentCall::start_moving(&dir, &Request::ProcessInput { pid }, data.len() as u64).await?;
    call.send_payload(data).await?;
    let reply = call.collect(0).await?.0;
    store::touch(db.conn(), &record.id, lifecycle::now_ms())?;
    process_of(reply)
}

pub async fn close_stdin(dirs: &Dirs, reference: &str, pid: i32) -> Result<ProcessInfo> {
    process_of(
        call(
            dirs,
            reference,
            "close stdin",
            Request::ProcessCloseStdin { pid },
        )
        .await?,
    )
}

pub async fn signal(dirs: &Dirs, reference: &str, pid: i32, signal: i32) -> Result<ProcessInfo> {
    process_of(
        call(
            dirs,
            reference,
            "signal",
            Request::ProcessSignal { pid, signal },
        )
        .await?,
    )
}

pub async fn resize(dirs: &Dirs, reference: &str, pid: i32, size: PtySize) -> Result<ProcessInfo> {
    if size.cols == 0 || size.rows == 0 {
        return Err(Error::invalid(
            "a PTY needs at least one column and one row",
        ));
    }
    process_of(
        call(
            dirs,
            reference,
            "resize",
            Request::ProcessResize { pid, size },
        )
        .await?,
    )
}

pub async fn list(dirs: &Dirs, reference: &str) -> Result<Vec<ProcessInfo>> {
    let (_db, _record, dir) = started(dirs, reference, "process list")?;
    match agent_client::call_as(&dir, &Request::ProcessList, Purpose::Inspection).await? {
        Reply::Processes { processes } => Ok(processes),
        other => Err(agent_client::unexpected(other)),
    }
}
