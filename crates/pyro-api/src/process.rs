//! `process.Process`: commands and PTYs. Each is a pyro workspace process; a `Start` stream follows
//! it to its end. A process whose `Start` stream the client drops before the end is killed: nothing
//! the API started outlives the client that started it unnoticed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use base64::Engine;
use pyro_core::workspace::processes::{self, FollowFrom, ProcessInfo, ProcessOptions, PtySize};
use pyro_core::{limits, OutputStream};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::connect::{self, Code, RpcError};
use crate::sandboxes;
use crate::{Api, Sandbox};

/// Output waiting for one slow client, at most; beyond it output is dropped (and the client told).
const MAX_PENDING_BYTES: usize = 16 << 20;
/// Output waiting for all clients together, at most.
pub const MAX_PENDING_BYTES_IN_ALL: usize = 256 << 20;
/// A stream with nothing to say sends a keepalive this often (idle HTTP clients give up).
const KEEPALIVE: Duration = Duration::from_secs(30);

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Default, Deserialize)]
struct ProcessConfig {
    #[serde(default)]
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Size {
    #[serde(default)]
    cols: u16,
    #[serde(default)]
    rows: u16,
}

#[derive(Debug, Default, Deserialize)]
struct Pty {
    size: Option<Size>,
}

#[derive(Debug, Default, Deserialize)]
struct StartRequest {
    #[serde(default)]
    process: ProcessConfig,
    pty: Option<Pty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct Selector {
    pid: Option<i32>,
    tag: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Input {
    stdin: Option<String>,
    pty: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Selected {
    #[serde(default)]
    process: Selector,
    #[serde(default)]
    input: Input,
    signal: Option<Value>,
    pty: Option<Pty>,
}

/// A streaming request's messages: `{"start": {"process": …}}`, `{"data": {"input": …}}`, keepalives.
#[derive(Debug, Default, Deserialize)]
struct StreamInputMessage {
    start: Option<Selected>,
    data: Option<Selected>,
}

fn pty_size(pty: &Pty) -> Result<PtySize, RpcError> {
    let size = pty
        .size
        .as_ref()
        .ok_or_else(|| RpcError::invalid("a PTY needs its size"))?;
    Ok(PtySize {
        cols: size.cols,
        rows: size.rows,
    })
}

/// The pid a selector names (a tag is looked up among the running processes).
async fn pid_of(api: &Api, sandbox: &str, selector: &Selector) -> Result<i32, RpcError> {
    if let Some(pid) = selector.pid {
        return Ok(pid);
    }
    let tag = selector
        .tag
        .as_deref()
        .ok_or_else(|| RpcError::invalid("select the process by pid or tag"))?;
    processes::list(&api.dirs, sandbox)
        .await?
        .into_iter()
        .find(|p| p.running && p.tag.as_deref() == Some(tag))
        .map(|p| p.pid)
        .ok_or_else(|| {
            RpcError::new(
                Code::NotFound,
                format!("no running process has tag '{tag}'"),
            )
        })
}

/// How a process ended, as an end event (a signal as Go reports one: exit code -1).
fn end_event(info: &ProcessInfo) -> Value {
    let (code, exited, status) = match (info.signal, info.exit_code) {
        (Some(signal), _) => (-1, false, format!("signal: {}", signal_name(signal))),
        (None, Some(code)) => (code, true, format!("exit status {code}")),
        (None, None) => (-1, false, "unknown".to_string()),
    };
    let mut end = json!({"exitCode": code, "exited": exited, "status": status});
    if info.timed_out {
        end["error"] = json!("the command was killed at its timeout");
    }
    json!({"event": {"end": end}})
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGHUP => "hangup".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGKILL => "killed".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGPIPE => "broken pipe".into(),
        other => format!("signal {other}"),
    }
}

/// Bytes of frames waiting for one client, counted in the server's total too; what is still
/// counted when the last holder lets go leaves the total with it.
struct Budget {
    waiting: AtomicUsize,
    in_all: Arc<AtomicUsize>,
}

impl Budget {
    fn add(&self, bytes: usize) {
        self.waiting.fetch_add(bytes, Ordering::Relaxed);
        self.in_all.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.waiting.fetch_sub(bytes, Ordering::Relaxed);
        self.in_all.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn full(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > MAX_PENDING_BYTES
            || self.in_all.load(Ordering::Relaxed) > MAX_PENDING_BYTES_IN_ALL
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.in_all
            .fetch_sub(self.waiting.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Frames on their way to the client.
struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    budget: Arc<Budget>,
}

impl Outbox {
    fn send(&self, frame: Bytes) {
        let bytes = frame.len();
        self.budget.add(bytes);
        if self.tx.send(frame).is_err() {
            self.budget.sub(bytes);
        }
    }
}

/// The stream body of a `Start` or `Connect`: the start event, then the process's output, then its
/// end. With `kill_if_left`, a client that goes before the end takes the process with it.
fn follow_stream(
    api: Arc<Api>,
    sandbox: String,
    info: ProcessInfo,
    from: FollowFrom,
    kill_if_left: bool,
) -> Response {
    let pid = info.pid;
    let pty = info.pty.is_some();
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let budget = Arc::new(Budget {
        waiting: AtomicUsize::new(0),
        in_all: api.output_pending.clone(),
    });
    let outbox = Outbox {
        tx,
        budget: budget.clone(),
    };
    let finished = Arc::new(AtomicBool::new(false));
    outbox.send(connect::envelope(
        &json!({"event": {"start": {"pid": pid}}}),
    ));
    let task = {
        let (api, sandbox, finished) = (api.clone(), sandbox.clone(), finished.clone());
        tokio::spawn(async move {
            let dropped = AtomicBool::new(false);
            let mut on_output = |stream: OutputStream, chunk: &[u8]| {
                if outbox.budget.full() {
                    dropped.store(true, Ordering::Relaxed);
                    return;
                }
                let key = match stream {
                    OutputStream::Stderr => "stderr",
                    OutputStream::Stdout if pty => "pty",
                    OutputStream::Stdout => "stdout",
                };
                outbox.send(connect::envelope(
                    &json!({"event": {"data": {key: B64.encode(chunk)}}}),
                ));
            };
            let follow = processes::follow(&api.dirs, &sandbox, pid, from, &mut on_output);
            tokio::pin!(follow);
            let mut keepalive = tokio::time::interval(KEEPALIVE);
            keepalive.tick().await;
            let ended = loop {
                tokio::select! {
                    ended = &mut follow => break ended,
                    _ = keepalive.tick() => {
                        outbox.send(connect::envelope(&json!({"event": {"keepalive": {}}})));
                    }
                }
            };
            if dropped.load(Ordering::Relaxed) {
                let note = "\n[pyro: output was dropped: the client read it too slowly]\n";
                outbox.send(connect::envelope(
                    &json!({"event": {"data": {"stderr": B64.encode(note)}}}),
                ));
            }
            match ended {
                Ok(info) => {
                    outbox.send(connect::envelope(&end_event(&info)));
                    outbox.send(connect::end_of_stream(None));
                    finished.store(true, Ordering::Relaxed);
                }
                // Following failed, the process may still run: the guard kills it (a suspended
                // sandbox's process is not reached, and lives on with its sandbox).
                Err(err) => outbox.send(connect::end_of_stream(Some(&RpcError::from(err)))),
            }
        })
    };
    let guard = LeaveGuard {
        api,
        sandbox,
        pid,
        finished,
        kill_if_left,
        task: task.abort_handle(),
    };
    // The body ends when the task is done and everything it sent was read.
    let body = futures::stream::unfold((rx, budget, guard), |(mut rx, budget, guard)| async move {
        let frame = rx.recv().await?;
        budget.sub(frame.len());
        Some((
            Ok::<_, std::convert::Infallible>(frame),
            (rx, budget, guard),
        ))
    });
    connect::stream_response(Body::from_stream(body))
}

/// Ends what a stream left behind when its client goes first.
struct LeaveGuard {
    api: Arc<Api>,
    sandbox: String,
    pid: i32,
    finished: Arc<AtomicBool>,
    kill_if_left: bool,
    task: tokio::task::AbortHandle,
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        self.task.abort();
        if self.kill_if_left && !self.finished.load(Ordering::Relaxed) {
            kill(self.api.clone(), self.sandbox.clone(), self.pid);
        }
    }
}

pub async fn start(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: StartRequest = match connect::request_message(&headers, &body) {
        Ok(request) => request,
        Err(err) => return connect::stream_error(err),
    };
    let pty = match request.pty.as_ref().map(pty_size).transpose() {
        Ok(pty) => pty,
        Err(err) => return connect::stream_error(err),
    };
    let mut env = sandboxes::load_settings(&api.dirs, &sandbox).env_vars;
    env.extend(request.process.envs);
    let mut argv = vec![request.process.cmd];
    argv.extend(request.process.args);
    // The call's deadline bounds the process too: a client that stopped waiting wants it no more.
    let timeout_seconds = connect::timeout_ms(&headers)
        .map(|ms| ms.div_ceil(1000).min(*limits::TIMEOUT_SECONDS.end()));
    let options = ProcessOptions {
        argv,
        cwd: request.process.cwd,
        env,
        pty,
        stdin: request.stdin.unwrap_or(true),
        tag: request.tag,
        timeout_seconds,
    };
    // Started to the end even if the client goes meanwhile; then nobody follows it, so it is killed.
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let (api, sandbox) = (api.clone(), sandbox.clone());
        tokio::spawn(async move {
            let started = processes::start(&api.dirs, &sandbox, &options).await;
            if let Err(Ok(info)) = tx.send(started) {
                kill(api, sandbox, info.pid);
            }
        });
    }
    let mut pending = PendingStart {
        rx: Some(rx),
        api: api.clone(),
        sandbox: sandbox.clone(),
    };
    let started = match pending.rx.as_mut() {
        Some(rx) => rx.await,
        None => return connect::stream_error(RpcError::new(Code::Internal, "the start was lost")),
    };
    pending.rx = None;
    match started {
        Ok(Ok(info)) => follow_stream(api, sandbox, info, FollowFrom::Start, true),
        Ok(Err(err)) => connect::stream_error(err.into()),
        Err(_) => connect::stream_error(RpcError::new(Code::Internal, "the start was lost")),
    }
}

fn kill(api: Arc<Api>, sandbox: String, pid: i32) {
    tokio::spawn(async move {
        let _ = processes::signal(&api.dirs, &sandbox, pid, libc::SIGKILL).await;
    });
}

/// A start whose answer the handler waits for: a handler dropped after the answer came, but before
/// it was taken, still has the process killed.
struct PendingStart {
    rx: Option<tokio::sync::oneshot::Receiver<pyro_core::Result<ProcessInfo>>>,
    api: Arc<Api>,
    sandbox: String,
}

impl Drop for PendingStart {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(Ok(info)) = rx.try_recv() {
                kill(self.api.clone(), self.sandbox.clone(), info.pid);
            }
        }
    }
}

pub async fn connect(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let found = async {
        let request: Selected = connect::request_message(&headers, &body)?;
        let pid = pid_of(&api, &sandbox, &request.process).await?;
        processes::list(&api.dirs, &sandbox)
            .await?
            .into_iter()
            .find(|p| p.pid == pid)
            .ok_or_else(|| RpcError::new(Code::NotFound, format!("process {pid} not found")))
    };
    match found.await {
        Ok(info) => follow_stream(api, sandbox, info, FollowFrom::Now, false),
        Err(err) => connect::stream_error(err),
    }
}

pub async fn list(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
) -> Result<Response, RpcError> {
    let processes: Vec<Value> = processes::list(&api.dirs, &sandbox)
        .await?
        .into_iter()
        .filter(|p| p.running)
        .map(|p| {
            let (cmd, args) = match &p.command {
                pyro_proto::Command::Argv(argv) => (
                    argv.first().cloned().unwrap_or_default(),
                    argv[1..].to_vec(),
                ),
                pyro_proto::Command::Shell(script) => (
                    "/bin/sh".to_string(),
                    vec!["-lc".to_string(), script.clone()],
                ),
            };
            let mut entry = json!({
                "pid": p.pid,
                "config": {"cmd": cmd, "args": args, "envs": p.env, "cwd": p.cwd},
            });
            if let Some(tag) = p.tag {
                entry["tag"] = json!(tag);
            }
            entry
        })
        .collect();
    Ok(connect::unary(&json!({ "processes": processes })))
}

fn decode(text: &str) -> Result<Vec<u8>, RpcError> {
    B64.decode(text)
        .map_err(|e| RpcError::invalid(format!("input is not base64: {e}")))
}

async fn send_input(api: &Api, sandbox: &str, request: &Selected) -> Result<(), RpcError> {
    let pid = pid_of(api, sandbox, &request.process).await?;
    let data = match (&request.input.stdin, &request.input.pty) {
        (Some(text), _) | (None, Some(text)) => decode(text)?,
        (None, None) => return Err(RpcError::invalid("the input is empty: give stdin or pty")),
    };
    processes::input(&api.dirs, sandbox, pid, &data).await?;
    Ok(())
}

pub async fn send_input_rpc(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: Selected = connect::request_message(&headers, &body)?;
    send_input(&api, &sandbox, &request).await?;
    Ok(connect::unary(&json!({})))
}

/// `StreamInput`: a start message naming the process, then input messages; one reply at the end.
pub async fn stream_input(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    body: Bytes,
) -> Response {
    let result = async {
        let mut process = None;
        for raw in connect::messages(&body)? {
            let message: StreamInputMessage = serde_json::from_slice(raw)
                .map_err(|e| RpcError::invalid(format!("malformed message: {e}")))?;
            if let Some(start) = message.start {
                process = Some(start.process);
            }
            if let Some(mut data) = message.data {
                data.process = match &process {
                    Some(p) => Selector {
                        pid: p.pid,
                        tag: p.tag.clone(),
                    },
                    None => return Err(RpcError::invalid("input came before the start message")),
                };
                send_input(&api, &sandbox, &data).await?;
            }
        }
        Ok::<_, RpcError>(())
    };
    match result.await {
        Ok(()) => {
            let mut body = connect::envelope(&json!({})).to_vec();
            body.extend_from_slice(&connect::end_of_stream(None));
            connect::stream_response(Body::from(body))
        }
        Err(err) => connect::stream_error(err),
    }
}

pub async fn send_signal(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: Selected = connect::request_message(&headers, &body)?;
    let pid = pid_of(&api, &sandbox, &request.process).await?;
    let signal = match &request.signal {
        Some(Value::String(name)) if name == "SIGNAL_SIGTERM" => libc::SIGTERM,
        Some(Value::Number(n)) if n.as_i64() == Some(15) => libc::SIGTERM,
        Some(Value::String(name)) if name == "SIGNAL_SIGKILL" => libc::SIGKILL,
        Some(Value::Number(n)) if n.as_i64() == Some(9) => libc::SIGKILL,
        other => {
            return Err(RpcError::invalid(format!(
                "signal {other:?} is not one the API sends: SIGNAL_SIGTERM or SIGNAL_SIGKILL"
            )))
        }
    };
    processes::signal(&api.dirs, &sandbox, pid, signal).await?;
    Ok(connect::unary(&json!({})))
}

pub async fn update(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: Selected = connect::request_message(&headers, &body)?;
    let pid = pid_of(&api, &sandbox, &request.process).await?;
    if let Some(pty) = &request.pty {
        processes::resize(&api.dirs, &sandbox, pid, pty_size(pty)?).await?;
    }
    Ok(connect::unary(&json!({})))
}

pub async fn close_stdin(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: Selected = connect::request_message(&headers, &body)?;
    let pid = pid_of(&api, &sandbox, &request.process).await?;
    processes::close_stdin(&api.dirs, &sandbox, pid).await?;
    Ok(connect::unary(&json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(exit_code: Option<i32>, signal: Option<i32>) -> ProcessInfo {
        ProcessInfo {
            pid: 7,
            tag: None,
            command: pyro_proto::Command::Argv(vec!["true".into()]),
            cwd: "/workspace".into(),
            env: BTreeMap::new(),
            pty: None,
            running: false,
            exit_code,
            signal,
            timed_out: false,
            output_bytes: 0,
        }
    }

    #[test]
    fn ends_read_as_envd_reports_them() {
        let end = end_event(&ended(Some(3), None));
        assert_eq!(end["event"]["end"]["exitCode"], 3);
        assert_eq!(end["event"]["end"]["status"], "exit status 3");
        let killed = end_event(&ended(Some(137), Some(9)));
        assert_eq!(killed["event"]["end"]["exitCode"], -1);
        assert_eq!(killed["event"]["end"]["status"], "signal: killed");
    }
}
