//! Services: named long-running commands, each in its own session and process group, with their exit
//! status kept and their output captured (head and tail, readable while they run). A start answers
//! once the service's one readiness check passes, or once it failed (the process exited first, or
//! the check timed out and the service was stopped).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pyro_proto::{
    CappedOutput, Command, ExecRequest, OutputStream, Readiness, ServiceInfo, ServiceOutput,
    ServiceSpec, ServiceState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::{confine, exec, reaper};

/// How long a `command` readiness check may run.
const CHECK_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `tcp` or `http` readiness check may take.
const CHECK_NETWORK_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many services per VM (finished ones count until replaced).
const MAX_SERVICES: usize = 64;

struct Service {
    info: Mutex<ServiceInfo>,
    stdout: Mutex<CappedOutput>,
    stderr: Mutex<CappedOutput>,
    /// Becomes `true` once the process has ended (and `info` says how).
    ended: watch::Receiver<bool>,
}

static SERVICES: Mutex<Option<HashMap<String, Arc<Service>>>> = Mutex::new(None);

fn registry() -> std::sync::MutexGuard<'static, Option<HashMap<String, Arc<Service>>>> {
    SERVICES.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn find(name: &str) -> io::Result<Arc<Service>> {
    registry()
        .as_ref()
        .and_then(|r| r.get(name).cloned())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("service '{name}' does not exist"),
            )
        })
}

fn display_command(command: &Command) -> String {
    match command {
        Command::Shell(script) => script.clone(),
        Command::Argv(argv) => shell_quote(argv),
    }
}

fn shell_quote(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,@+".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts `spec` and answers once it is ready or failed.
pub async fn start(spec: ServiceSpec, root: &Path) -> io::Result<ServiceInfo> {
    {
        let mut registry = registry();
        let services = registry.get_or_insert_with(HashMap::new);
        if let Some(existing) = services.get(&spec.name) {
            if lock(&existing.info).state == ServiceState::Running {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("service '{}' is already running", spec.name),
                ));
            }
        } else if services.len() >= MAX_SERVICES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a VM runs at most {MAX_SERVICES} services"),
            ));
        }
    }
    let request = ExecRequest {
        command: spec.command.clone(),
        cwd: spec.cwd.clone(),
        env: spec.env.clone(),
        timeout_ms: 0,
        output_cap_bytes: spec.output_cap_bytes,
        stream_output: false,
    };
    let cwd_on_host = root.join(spec.cwd.trim_start_matches('/'));
    if !cwd_on_host.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("working directory {} does not exist in the VM", spec.cwd),
        ));
    }
    let mut command = exec::build(&request, root)?;
    let (mut child, exited) = reaper::spawn(&mut command)?;
    let pid = child.id() as i32;
    let cap = spec.output_cap_bytes.min(16 << 20) as usize;
    let (ended_tx, ended) = watch::channel(false);
    let service = Arc::new(Service {
        info: Mutex::new(ServiceInfo {
            name: spec.name.clone(),
            state: ServiceState::Running,
            command: display_command(&spec.command),
            cwd: spec.cwd.clone(),
            readiness: spec.readiness.clone(),
            pid: Some(pid),
            started_at_ms: now_ms(),
            ready_at_ms: None,
            ended_at_ms: None,
            exit_code: None,
            stop_reason: None,
        }),
        stdout: Mutex::new(CappedOutput::new(cap)),
        stderr: Mutex::new(CappedOutput::new(cap)),
        ended,
    });
    registry()
        .get_or_insert_with(HashMap::new)
        .insert(spec.name.clone(), service.clone());
    let (tx, mut rx) = mpsc::channel::<(OutputStream, Vec<u8>)>(16);
    if let Some(stdout) = child.stdout.take() {
        exec::spawn_reader(stdout.into(), OutputStream::Stdout, tx.clone())?;
    }
    if let Some(stderr) = child.stderr.take() {
        exec::spawn_reader(stderr.into(), OutputStream::Stderr, tx.clone())?;
    }
    drop(tx);
    let collector = service.clone();
    tokio::spawn(async move {
        while let Some((stream, data)) = rx.recv().await {
            match stream {
                OutputStream::Stdout => lock(&collector.stdout).push(&data),
                OutputStream::Stderr => lock(&collector.stderr).push(&data),
            }
        }
    });
    let watcher = service.clone();
    tokio::spawn(async move {
        let status = exited.await.unwrap_or(0);
        // Whatever the service left in its process group goes with it.
        exec::kill_group(pid);
        let (code, _) = exec::decode_status(status);
        {
            let mut info = lock(&watcher.info);
            info.exit_code = Some(code);
            info.ended_at_ms = Some(now_ms());
            info.pid = None;
            if info.state == ServiceState::Running {
                info.state = ServiceState::Exited;
            }
        }
        let _ = ended_tx.send(true);
    });
    await_ready(&service, &spec, root, pid).await;
    let info = lock(&service.info).clone();
    Ok(info)
}

/// Runs the readiness check until it passes, the process ends, or the time is up.
async fn await_ready(service: &Arc<Service>, spec: &ServiceSpec, root: &Path, pid: i32) {
    let Some(readiness) = &spec.readiness else {
        lock(&service.info).ready_at_ms = Some(now_ms());
        return;
    };
    let deadline = Instant::now() + Duration::from_millis(spec.ready_timeout_ms);
    let interval = Duration::from_millis(spec.ready_interval_ms.max(10));
    let mut ended = service.ended.clone();
    loop {
        if *ended.borrow() {
            let mut info = lock(&service.info);
            info.state = ServiceState::Failed;
            info.stop_reason = Some("process_exited_before_ready".into());
            return;
        }
        if check(readiness, &spec.cwd, root).await {
            lock(&service.info).ready_at_ms = Some(now_ms());
            return;
        }
        if Instant::now() >= deadline {
            {
                let mut info = lock(&service.info);
                info.state = ServiceState::Failed;
                info.stop_reason = Some("readiness_timeout".into());
            }
            terminate(service, pid, Duration::from_secs(2)).await;
            return;
        }
        let wait = interval.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ended.changed() => {}
        }
    }
}

/// Whether `readiness` holds now.
async fn check(readiness: &Readiness, cwd: &str, root: &Path) -> bool {
    match readiness {
        Readiness::File { path } => confine::relative(path)
            .and_then(|rel| confine::Beneath::workspace()?.lstat(&rel))
            .is_ok(),
        Readiness::Tcp { address } => {
            let connect = tokio::net::TcpStream::connect(address.as_str());
            matches!(
                tokio::time::timeout(CHECK_NETWORK_TIMEOUT, connect).await,
                Ok(Ok(_))
            )
        }
        Readiness::Http { url } => {
            let get = http_status(url);
            matches!(tokio::time::timeout(CHECK_NETWORK_TIMEOUT, get).await, Ok(Some(status)) if status < 400)
        }
        Readiness::Command { command } => {
            let request = ExecRequest {
                command: Command::Shell(command.clone()),
                cwd: cwd.to_string(),
                env: Default::default(),
                timeout_ms: CHECK_COMMAND_TIMEOUT.as_millis() as u64,
                output_cap_bytes: 4096,
                stream_output: false,
            };
            let mut sink = tokio::io::sink();
            matches!(exec::run(&request, root, &mut sink).await, Ok(r) if r.exit_code == 0 && !r.timed_out)
        }
    }
}

/// The status code of `GET url` (`http://HOST[:PORT][/PATH]`), from its status line.
async fn http_status(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < head.len() {
        match stream.read(&mut head[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
        if head[..filled].contains(&b'\n') {
            break;
        }
    }
    let line = std::str::from_utf8(&head[..filled]).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    // Read the rest (within bounds) before closing, so the server is not cut off mid-answer.
    let mut rest = [0u8; 16 << 10];
    let mut drained = 0usize;
    while drained < (1 << 20) {
        match stream.read(&mut rest).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Some(status)
}

/// SIGTERM to the service's group, then SIGKILL if it is still there after `grace`.
async fn terminate(service: &Arc<Service>, pid: i32, grace: Duration) -> &'static str {
    let mut ended = service.ended.clone();
    // SAFETY: kill takes no pointers; the service leads its own process group.
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let gone = tokio::time::timeout(grace, ended.wait_for(|e| *e))
        .await
        .is_ok();
    if gone {
        return "sigterm";
    }
    exec::kill_group(pid);
    let _ = tokio::time::timeout(Duration::from_secs(5), ended.wait_for(|e| *e)).await;
    "sigkill"
}

/// Stops a service; a service that is not running is reported as it is.
pub async fn stop(name: &str, grace: Duration) -> io::Result<ServiceInfo> {
    let service = find(name)?;
    let pid = {
        let info = lock(&service.info);
        match (info.state, info.pid) {
            (ServiceState::Running, Some(pid)) => pid,
            _ => return Ok(info.clone()),
        }
    };
    let how = terminate(&service, pid, grace).await;
    let mut info = lock(&service.info);
    info.state = ServiceState::Stopped;
    info.stop_reason = Some(how.into());
    Ok(info.clone())
}

pub fn list() -> Vec<ServiceInfo> {
    let mut services: Vec<ServiceInfo> = registry()
        .as_ref()
        .map(|r| r.values().map(|s| lock(&s.info).clone()).collect())
        .unwrap_or_default();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    services
}

pub fn output(name: &str) -> io::Result<ServiceOutput> {
    let service = find(name)?;
    let info = lock(&service.info).clone();
    let (stdout, stdout_truncated) = {
        let out = lock(&service.stdout);
        (out.render(), out.truncated())
    };
    let (stderr, stderr_truncated) = {
        let err = lock(&service.stderr);
        (err.render(), err.truncated())
    };
    Ok(ServiceOutput {
        service: info,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
    })
}
