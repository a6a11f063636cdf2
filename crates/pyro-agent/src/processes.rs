//! Processes the host starts and keeps by pid: on pipes (stdout and stderr apart, stdin optional)
//! or on a PTY, with their output kept (the last few MiB, each byte's stream known) so that any
//! number of followers, before or after the process ends, see it in order. A process has a
//! deadline, takes its group with it when it ends, and is forgotten a while after.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyro_proto::{
    FollowFrom, OutputStream, ProcessInfo, ProcessSpec, ProcessStream, PtySize, MAX_CHUNK_BYTES,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Interest};
use tokio::sync::watch;

use crate::{exec, reaper, shells};

/// Output kept per process; older output is dropped (a follow from the start begins at the oldest).
const KEEP_BYTES: usize = 8 << 20;
/// At most this many running processes per VM.
const MAX_RUNNING: usize = 64;
/// Ended processes kept for late followers and listing; older ones are forgotten.
const KEEP_ENDED: usize = 16;
/// How long output is still collected after the process exited (a child may hold its pipes).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// A write to stdin that the process does not take within this fails.
const INPUT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Log {
    /// The stream offset of `bytes[0]`.
    base: u64,
    bytes: Vec<u8>,
    /// Where each run of one stream starts (offsets, ascending).
    runs: VecDeque<(u64, ProcessStream)>,
}

impl Log {
    fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }

    fn push(&mut self, stream: ProcessStream, data: &[u8]) {
        if self.runs.back().map(|(_, s)| *s) != Some(stream) {
            self.runs.push_back((self.end(), stream));
        }
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > KEEP_BYTES {
            let drop = self.bytes.len() - KEEP_BYTES / 2;
            self.bytes.drain(..drop);
            self.base += drop as u64;
            // Keep the run the new base falls in.
            while self.runs.len() > 1 && self.runs[1].0 <= self.base {
                self.runs.pop_front();
            }
        }
    }

    /// The next run of one stream from `cursor` (moved up to the oldest kept), at most `max` bytes.
    fn read(&self, cursor: u64, max: usize) -> Option<(u64, ProcessStream, &[u8])> {
        let start = cursor.max(self.base);
        if start >= self.end() {
            return None;
        }
        let index = self.runs.partition_point(|(offset, _)| *offset <= start);
        let stream = self.runs.get(index.checked_sub(1)?)?.1;
        let run_end = self.runs.get(index).map_or(self.end(), |(o, _)| *o);
        let stop = run_end.min(start + max as u64);
        let bytes = &self.bytes[(start - self.base) as usize..(stop - self.base) as usize];
        Some((start, stream, bytes))
    }
}

struct Process {
    info: Mutex<ProcessInfo>,
    /// When it ended, in the order processes end (0: running): the first ended go first.
    ended: std::sync::atomic::AtomicU64,
    log: Mutex<Log>,
    /// Bumped on new output and at the end.
    changed: watch::Sender<u64>,
    /// Where input goes (a pipe, or the PTY's master); `None` once closed.
    input: tokio::sync::Mutex<Option<Arc<AsyncFd<OwnedFd>>>>,
    /// The PTY's master, for resizing.
    master: Option<Arc<AsyncFd<OwnedFd>>>,
}

static PROCESSES: Mutex<Option<HashMap<i32, Arc<Process>>>> = Mutex::new(None);
static ENDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn registry() -> std::sync::MutexGuard<'static, Option<HashMap<i32, Arc<Process>>>> {
    PROCESSES.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn find(pid: i32) -> io::Result<Arc<Process>> {
    registry()
        .as_ref()
        .and_then(|r| r.get(&pid).cloned())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("process {pid} not found")))
}

fn info_of(process: &Process) -> ProcessInfo {
    let mut info = lock(&process.info).clone();
    info.output_bytes = lock(&process.log).end();
    info
}

fn nonblocking(fd: OwnedFd) -> io::Result<Arc<AsyncFd<OwnedFd>>> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: the AsyncFd owns the descriptor, so it stays open (and the same) for its lifetime.
    let registered =
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) };
    Ok(Arc::new(registered.map_err(io::Error::from)?))
}

/// Drops the oldest ended processes beyond [`KEEP_ENDED`]; refuses a start beyond [`MAX_RUNNING`].
fn make_room() -> io::Result<()> {
    let mut registry = registry();
    let processes = registry.get_or_insert_with(HashMap::new);
    let running = processes.values().filter(|p| lock(&p.info).running).count();
    if running >= MAX_RUNNING {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a VM runs at most {MAX_RUNNING} processes at once; kill one first"),
        ));
    }
    let mut ended: Vec<(u64, i32)> = processes
        .iter()
        .filter(|(_, p)| !lock(&p.info).running)
        .map(|(pid, p)| (p.ended.load(std::sync::atomic::Ordering::Relaxed), *pid))
        .collect();
    if ended.len() >= KEEP_ENDED {
        ended.sort_unstable();
        for (_, pid) in &ended[..=ended.len() - KEEP_ENDED] {
            processes.remove(pid);
        }
    }
    Ok(())
}

/// Starts a process as `spec` says, in the commands' root.
pub fn start(spec: ProcessSpec, root: &Path) -> io::Result<ProcessInfo> {
    make_room()?;
    if !root.join(spec.cwd.trim_start_matches('/')).is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("working directory {} does not exist in the VM", spec.cwd),
        ));
    }
    let mut command = exec::program(&spec.command)?;
    exec::base_env(&mut command).envs(&spec.env);
    let mut master = None;
    match spec.pty {
        Some(size) => {
            let (m, slave) = shells::open_pty(root, size.cols, size.rows)?;
            command
                .env("TERM", "xterm-256color")
                .stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            master = Some(nonblocking(m)?);
        }
        None => {
            command
                .stdin(if spec.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    exec::confine(&mut command, root, &spec.cwd, spec.pty.is_some())?;
    let (mut child, exited) = reaper::spawn(&mut command)?;
    drop(command); // closes the parent's copies of the terminal's end
    let pid = child.id() as i32;
    let mut readers = Vec::new();
    let input = match &master {
        Some(master) => {
            readers.push((master.clone(), ProcessStream::Pty));
            Some(master.clone())
        }
        None => {
            if let Some(out) = child.stdout.take() {
                readers.push((nonblocking(OwnedFd::from(out))?, ProcessStream::Stdout));
            }
            if let Some(err) = child.stderr.take() {
                readers.push((nonblocking(OwnedFd::from(err))?, ProcessStream::Stderr));
            }
            child
                .stdin
                .take()
                .map(|i| nonblocking(OwnedFd::from(i)))
                .transpose()?
        }
    };
    let (changed, _) = watch::channel(0);
    let process = Arc::new(Process {
        info: Mutex::new(ProcessInfo {
            pid,
            tag: spec.tag.clone(),
            command: spec.command.clone(),
            cwd: spec.cwd.clone(),
            env: spec.env.clone(),
            pty: spec.pty,
            running: true,
            exit_code: None,
            signal: None,
            timed_out: false,
            output_bytes: 0,
        }),
        ended: std::sync::atomic::AtomicU64::new(0),
        log: Mutex::new(Log::default()),
        changed,
        input: tokio::sync::Mutex::new(input),
        master,
    });
    registry()
        .get_or_insert_with(HashMap::new)
        .insert(pid, process.clone());
    let mut drained = Vec::new();
    for (fd, stream) in readers {
        drained.push(tokio::spawn(collect(process.clone(), fd, stream)));
    }
    tokio::spawn(watch_end(
        process.clone(),
        pid,
        exited,
        drained,
        spec.timeout_ms,
    ));
    Ok(info_of(&process))
}

/// Keeps what `fd` gives until it ends (EOF, or EIO once a PTY's last user is gone).
async fn collect(process: Arc<Process>, fd: Arc<AsyncFd<OwnedFd>>, stream: ProcessStream) {
    let mut buf = vec![0u8; MAX_CHUNK_BYTES];
    loop {
        let Ok(mut ready) = fd.readable().await else {
            return;
        };
        let n = match ready.try_io(|inner| {
            // SAFETY: read into a buffer we own, of its length.
            let n = unsafe { libc::read(inner.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_would_block) => continue,
        };
        lock(&process.log).push(stream, &buf[..n]);
        process.changed.send_modify(|v| *v += 1);
    }
}

/// Waits for the exit (killing the group at the deadline), drains the output, then marks the end.
async fn watch_end(
    process: Arc<Process>,
    pid: i32,
    exited: tokio::sync::oneshot::Receiver<i32>,
    drained: Vec<tokio::task::JoinHandle<()>>,
    timeout_ms: Option<u64>,
) {
    let deadline = tokio::time::sleep(Duration::from_millis(timeout_ms.unwrap_or(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut exited = exited;
    let mut timed_out = false;
    let status = loop {
        tokio::select! {
            status = &mut exited => break status.unwrap_or(0),
            _ = &mut deadline, if !timed_out => {
                timed_out = true;
                    exec::kill_session(pid);
            }
        }
    };
    let drain = async {
        for reader in drained {
            let _ = reader.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
    // Whatever it left behind in its session goes with it.
    exec::kill_session(pid);
    let (code, signal) = exec::decode_status(status);
    {
        let mut info = lock(&process.info);
        info.running = false;
        info.exit_code = Some(code);
        info.signal = signal;
        info.timed_out = timed_out;
    }
    let order = ENDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    process
        .ended
        .store(order, std::sync::atomic::Ordering::Relaxed);
    *process.input.lock().await = None;
    process.changed.send_modify(|v| *v += 1);
}

/// Streams a process's output to `stream` as output frames (a PTY's as stdout) until it ends, then
/// returns its info. Returns early, the process left running, once the host closes the stream.
pub async fn follow<S: AsyncRead + AsyncWrite + Unpin>(
    pid: i32,
    from: FollowFrom,
    stream: &mut S,
) -> io::Result<ProcessInfo> {
    let process = find(pid)?;
    let mut changed = process.changed.subscribe();
    let mut cursor = match from {
        FollowFrom::Start => 0,
        FollowFrom::Now => lock(&process.log).end(),
    };
    let (mut from_host, mut to_host) = tokio::io::split(stream);
    let mut probe = [0u8; 1];
    loop {
        changed.borrow_and_update();
        loop {
            let chunk = {
                let log = lock(&process.log);
                log.read(cursor, MAX_CHUNK_BYTES)
                    .map(|(at, s, bytes)| (at, s, bytes.to_vec()))
            };
            let Some((at, source, bytes)) = chunk else {
                break;
            };
            let tag = match source {
                ProcessStream::Stderr => OutputStream::Stderr,
                ProcessStream::Stdout | ProcessStream::Pty => OutputStream::Stdout,
            };
            pyro_proto::write_chunk(&mut to_host, tag, &bytes).await?;
            cursor = at + bytes.len() as u64;
        }
        let info = info_of(&process);
        if !info.running && cursor >= info.output_bytes {
            return Ok(info);
        }
        tokio::select! {
            _ = changed.changed() => {}
            // The host sends nothing more: a read ending means it closed the stream.
            _ = from_host.read(&mut probe) => {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the follower left"));
            }
        }
    }
}

/// Writes `data` to the process's stdin (or PTY).
pub async fn input(pid: i32, data: &[u8]) -> io::Result<ProcessInfo> {
    let process = find(pid)?;
    let fd = process.input.lock().await.clone().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("process {pid} takes no input: it was started without stdin, its stdin was closed, or it ended"),
        )
    })?;
    let write = async {
        let mut rest = data;
        while !rest.is_empty() {
            let mut ready = fd.writable().await?;
            match ready.try_io(|inner| {
                // SAFETY: write from a slice we borrow, of its length.
                let n = unsafe { libc::write(inner.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    };
    tokio::time::timeout(INPUT_TIMEOUT, write)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("process {pid} did not take its input within {INPUT_TIMEOUT:?}"),
            )
        })??;
    Ok(info_of(&process))
}

pub async fn close_stdin(pid: i32) -> io::Result<ProcessInfo> {
    let process = find(pid)?;
    if lock(&process.info).pty.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("process {pid} runs on a PTY, which has no stdin to close; send Ctrl-D (\\x04) as input"),
        ));
    }
    *process.input.lock().await = None;
    Ok(info_of(&process))
}

pub fn signal(pid: i32, signal: i32) -> io::Result<ProcessInfo> {
    let process = find(pid)?;
    if !lock(&process.info).running {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {pid} has already ended"),
        ));
    }
    if signal == libc::SIGKILL {
        // Killing it takes everything it started, other groups of its session (a shell's jobs) too.
        exec::kill_session(pid);
    } else {
        // SAFETY: kill takes no pointers; the process leads its own group (setsid).
        unsafe { libc::kill(-pid, signal) };
    }
    Ok(info_of(&process))
}

pub fn resize(pid: i32, size: PtySize) -> io::Result<ProcessInfo> {
    let process = find(pid)?;
    let master = process.master.as_ref().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("process {pid} has no PTY to resize"),
        )
    })?;
    let winsize = shells::winsize(size.cols, size.rows);
    // SAFETY: TIOCSWINSZ reads a valid winsize, on a descriptor we own.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &winsize) } != 0 {
        return Err(io::Error::last_os_error());
    }
    lock(&process.info).pty = Some(size);
    Ok(info_of(&process))
}

pub fn list() -> Vec<ProcessInfo> {
    let mut processes: Vec<ProcessInfo> = registry()
        .as_ref()
        .map(|r| r.values().map(|p| info_of(p)).collect())
        .unwrap_or_default();
    processes.sort_by_key(|p| p.pid);
    processes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_runs_in_order_and_drops_the_oldest() {
        let mut log = Log::default();
        log.push(ProcessStream::Stdout, b"ab");
        log.push(ProcessStream::Stdout, b"c");
        log.push(ProcessStream::Stderr, b"E");
        log.push(ProcessStream::Stdout, b"d");
        let (at, s, b) = log.read(0, 100).unwrap();
        assert_eq!((at, s, b), (0, ProcessStream::Stdout, &b"abc"[..]));
        let (at, s, b) = log.read(3, 100).unwrap();
        assert_eq!((at, s, b), (3, ProcessStream::Stderr, &b"E"[..]));
        let (at, s, b) = log.read(4, 100).unwrap();
        assert_eq!((at, s, b), (4, ProcessStream::Stdout, &b"d"[..]));
        assert!(log.read(5, 100).is_none());
        assert_eq!(log.read(1, 1).unwrap().2, b"b");

        let big = vec![b'x'; KEEP_BYTES];
        log.push(ProcessStream::Stderr, &big);
        assert!(log.bytes.len() <= KEEP_BYTES);
        let (at, s, _) = log.read(0, 10).unwrap();
        assert_eq!((at, s), (log.base, ProcessStream::Stderr));
    }
}
