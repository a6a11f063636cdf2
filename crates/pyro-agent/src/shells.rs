//! PTY shells: an interactive shell per PTY, in the commands' root and without their dropped
//! capabilities, that lives on between requests (and clients) until it is closed or exits. Its
//! output is kept (the last few MiB) so that reads by cursor neither lose nor repeat any of it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyro_proto::{ShellChunk, ShellInfo, ShellSpec, ShellState};
use tokio::sync::watch;

use crate::{exec, reaper};

/// Output kept per shell; older output is dropped (reads from before it start at the oldest kept).
const KEEP_BYTES: usize = 8 << 20;
/// At most this many shells per VM.
const MAX_SHELLS: usize = 32;

struct Output {
    /// The stream offset of `bytes[0]`.
    base: u64,
    bytes: Vec<u8>,
}

struct Shell {
    info: Mutex<ShellInfo>,
    output: Mutex<Output>,
    master: File,
    ended: watch::Receiver<bool>,
}

static SHELLS: Mutex<Option<HashMap<String, Arc<Shell>>>> = Mutex::new(None);

fn registry() -> std::sync::MutexGuard<'static, Option<HashMap<String, Arc<Shell>>>> {
    SHELLS.lock().unwrap_or_else(|p| p.into_inner())
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

fn find(shell_id: &str) -> io::Result<Arc<Shell>> {
    registry()
        .as_ref()
        .and_then(|r| r.get(shell_id).cloned())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("shell '{shell_id}' does not exist"),
            )
        })
}

/// 12 hex digits from the kernel's generator.
fn random_id() -> io::Result<String> {
    let mut bytes = [0u8; 6];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn winsize(cols: u16, rows: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn info_of(shell: &Shell) -> ShellInfo {
    let mut info = lock(&shell.info).clone();
    let output = lock(&shell.output);
    info.output_bytes = output.base + output.bytes.len() as u64;
    info
}

/// A new PTY from the commands' own devpts (so the shell finds it at `/dev/pts/N`): its master and
/// terminal ends, sized.
pub(crate) fn open_pty(root: &Path, cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let pts = root.join("dev/pts");
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(pts.join("ptmx"))?;
    let unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: both ioctls take a pointer to an int of ours, on a descriptor we own.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0
            || libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(pts.join(number.to_string()))?;
    let size = winsize(cols, rows);
    // SAFETY: TIOCSWINSZ reads a valid winsize, on a descriptor we own.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((OwnedFd::from(master), OwnedFd::from(slave)))
}

/// Opens a shell on a new PTY.
pub fn open(spec: ShellSpec, root: &Path) -> io::Result<ShellInfo> {
    if registry().as_ref().is_some_and(|r| r.len() >= MAX_SHELLS) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a VM keeps at most {MAX_SHELLS} shells open; close one first"),
        ));
    }
    if !root.join(spec.cwd.trim_start_matches('/')).is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("working directory {} does not exist in the VM", spec.cwd),
        ));
    }
    let (master, slave) = open_pty(root, spec.cols, spec.rows)?;
    let bash = root.join("bin/bash").exists();
    let mut command = std::process::Command::new(if bash { "/bin/bash" } else { "/bin/sh" });
    if bash {
        command.args(["--noprofile", "--norc", "-i"]);
    } else {
        command.arg("-i");
    }
    exec::base_env(&mut command)
        .env("TERM", "xterm-256color")
        .env("PS1", "pyro$ ")
        .env("PROMPT_COMMAND", "")
        .envs(&spec.env)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    exec::confine(&mut command, root, &spec.cwd, true)?;
    let (child, exited) = reaper::spawn(&mut command)?;
    drop(command); // closes the parent's copies of the terminal's end
    let pid = child.id() as i32;
    let shell_id = random_id()?;
    let (ended_tx, ended) = watch::channel(false);
    let master = File::from(master);
    let shell = Arc::new(Shell {
        info: Mutex::new(ShellInfo {
            shell_id: shell_id.clone(),
            state: ShellState::Running,
            cwd: spec.cwd.clone(),
            cols: spec.cols,
            rows: spec.rows,
            pid: Some(pid),
            started_at_ms: now_ms(),
            ended_at_ms: None,
            exit_code: None,
            output_bytes: 0,
        }),
        output: Mutex::new(Output {
            base: 0,
            bytes: Vec::new(),
        }),
        master: master.try_clone()?,
        ended,
    });
    registry()
        .get_or_insert_with(HashMap::new)
        .insert(shell_id, shell.clone());
    // The terminal's output, kept as it comes (a blocking read on its own thread).
    let reader = shell.clone();
    let mut from_terminal = master;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match from_terminal.read(&mut buf) {
                Ok(0) | Err(_) => return, // EIO once the shell and its children are gone
                Ok(n) => {
                    let mut output = lock(&reader.output);
                    output.bytes.extend_from_slice(&buf[..n]);
                    if output.bytes.len() > KEEP_BYTES {
                        let drop = output.bytes.len() - KEEP_BYTES / 2;
                        output.bytes.drain(..drop);
                        output.base += drop as u64;
                    }
                }
            }
        }
    });
    let watcher = shell.clone();
    tokio::spawn(async move {
        let status = exited.await.unwrap_or(0);
        let (code, _) = exec::decode_status(status);
        {
            let mut info = lock(&watcher.info);
            info.state = ShellState::Stopped;
            info.exit_code = Some(code);
            info.ended_at_ms = Some(now_ms());
            info.pid = None;
        }
        let _ = ended_tx.send(true);
    });
    Ok(info_of(&shell))
}

/// Up to `max_bytes` of output from `cursor`, never ending inside a UTF-8 character.
pub fn read(shell_id: &str, cursor: u64, max_bytes: u64) -> io::Result<(ShellChunk, Vec<u8>)> {
    let shell = find(shell_id)?;
    let info = info_of(&shell);
    let output = lock(&shell.output);
    let end = output.base + output.bytes.len() as u64;
    let start = cursor.clamp(output.base, end);
    let stop = start.saturating_add(max_bytes).min(end);
    let mut data =
        output.bytes[(start - output.base) as usize..(stop - output.base) as usize].to_vec();
    if stop < end {
        if let Err(err) = std::str::from_utf8(&data) {
            if err.error_len().is_none() {
                data.truncate(err.valid_up_to());
            }
        }
    }
    let next_cursor = start + data.len() as u64;
    Ok((
        ShellChunk {
            shell: info,
            cursor: start,
            next_cursor,
        },
        data,
    ))
}

pub fn write(shell_id: &str, input: &str) -> io::Result<ShellInfo> {
    let shell = find(shell_id)?;
    if lock(&shell.info).state != ShellState::Running {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("shell '{shell_id}' is not running"),
        ));
    }
    (&shell.master).write_all(input.as_bytes())?;
    Ok(info_of(&shell))
}

pub fn resize(shell_id: &str, cols: u16, rows: u16) -> io::Result<ShellInfo> {
    let shell = find(shell_id)?;
    let size = winsize(cols, rows);
    // SAFETY: TIOCSWINSZ reads a valid winsize from a descriptor we own.
    if unsafe { libc::ioctl(shell.master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    {
        let mut info = lock(&shell.info);
        info.cols = cols;
        info.rows = rows;
    }
    Ok(info_of(&shell))
}

pub fn signal(shell_id: &str, signal: i32) -> io::Result<ShellInfo> {
    let shell = find(shell_id)?;
    if let Some(pid) = lock(&shell.info).pid {
        // SAFETY: kill takes no pointers; the shell leads its own process group.
        unsafe { libc::kill(-pid, signal) };
    }
    Ok(info_of(&shell))
}

/// Hangs up the shell (SIGHUP to its group), kills it after `grace`, and forgets it.
pub async fn close(shell_id: &str, grace: Duration) -> io::Result<ShellInfo> {
    let shell = find(shell_id)?;
    let pid = lock(&shell.info).pid;
    if let Some(pid) = pid {
        let mut ended = shell.ended.clone();
        // SAFETY: kill takes no pointers; the shell leads its own process group.
        unsafe { libc::kill(-pid, libc::SIGHUP) };
        if tokio::time::timeout(grace, ended.wait_for(|e| *e))
            .await
            .is_err()
        {
            exec::kill_group(pid);
            let _ = tokio::time::timeout(Duration::from_secs(5), ended.wait_for(|e| *e)).await;
        }
    }
    if let Some(registry) = registry().as_mut() {
        registry.remove(shell_id);
    }
    Ok(info_of(&shell))
}

pub fn list() -> Vec<ShellInfo> {
    let mut shells: Vec<ShellInfo> = registry()
        .as_ref()
        .map(|r| r.values().map(|s| info_of(s)).collect())
        .unwrap_or_default();
    shells.sort_by_key(|s| s.started_at_ms);
    shells
}
