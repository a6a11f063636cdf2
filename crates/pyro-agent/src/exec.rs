//! Running one command: spawn in its own session, capture or stream output, enforce the timeout.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pyro_proto::{CappedOutput, Command, ExecRequest, ExecResult, OutputStream};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;

use crate::reaper;

/// How long output is still collected after the command exited (a background child may hold the pipes).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `request` with `root` as its root directory. Output chunks go to `out` when streaming is asked.
pub async fn run<W: AsyncWrite + Unpin>(
    request: &ExecRequest,
    root: &Path,
    out: &mut W,
) -> io::Result<ExecResult> {
    let cwd_on_host = root.join(request.cwd.trim_start_matches('/'));
    if !cwd_on_host.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("working directory {} does not exist in the VM", request.cwd),
        ));
    }
    let mut command = build(request, root)?;
    let cap = request.output_cap_bytes.min(64 << 20) as usize;
    let mut stdout_capture = CappedOutput::new(cap);
    let mut stderr_capture = CappedOutput::new(cap);

    let started = Instant::now();
    let (mut child, exit_rx) = match reaper::spawn(&mut command) {
        Ok(spawned) => spawned,
        Err(err) => {
            let result = spawn_failure(request, &err);
            if request.stream_output {
                pyro_proto::write_chunk(out, OutputStream::Stderr, result.stderr.as_bytes())
                    .await?;
            }
            return Ok(result);
        }
    };
    let pid = child.id() as i32;
    let (tx, mut rx) = mpsc::channel::<(OutputStream, Vec<u8>)>(16);
    if let Some(stdout) = child.stdout.take() {
        spawn_reader(OwnedFd::from(stdout), OutputStream::Stdout, tx.clone())?;
    }
    if let Some(stderr) = child.stderr.take() {
        spawn_reader(OwnedFd::from(stderr), OutputStream::Stderr, tx.clone())?;
    }
    drop(tx);

    let timeout = tokio::time::sleep(Duration::from_millis(request.timeout_ms));
    tokio::pin!(timeout);
    let mut exit_rx = exit_rx;
    let mut status: Option<i32> = None;
    let mut duration = Duration::ZERO;
    let mut timed_out = false;
    let mut pipes_open = true;
    let drain = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(drain);
    loop {
        if status.is_some() && !pipes_open {
            break;
        }
        tokio::select! {
            chunk = rx.recv(), if pipes_open => match chunk {
                Some((stream, data)) => {
                    match stream {
                        OutputStream::Stdout => stdout_capture.push(&data),
                        OutputStream::Stderr => stderr_capture.push(&data),
                    }
                    if request.stream_output {
                        if let Err(err) = pyro_proto::write_chunk(out, stream, &data).await {
                            kill_group(pid);
                            return Err(err);
                        }
                    }
                }
                None => pipes_open = false,
            },
            exited = &mut exit_rx, if status.is_none() => {
                duration = started.elapsed();
                status = Some(exited.unwrap_or(0));
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            },
            _ = &mut timeout, if status.is_none() && !timed_out => {
                timed_out = true;
                kill_group(pid);
            },
            _ = &mut drain, if status.is_some() => break,
        }
    }
    // Whatever the command left behind in its process group goes with it.
    kill_group(pid);
    let raw = status.unwrap_or(0);
    let (mut exit_code, signal) = decode_status(raw);
    if timed_out {
        exit_code = 124;
    }
    Ok(ExecResult {
        exit_code,
        signal: if timed_out { None } else { signal },
        stdout: stdout_capture.render(),
        stderr: stderr_capture.render(),
        stdout_truncated: stdout_capture.truncated(),
        stderr_truncated: stderr_capture.truncated(),
        stdout_bytes: stdout_capture.total_bytes(),
        stderr_bytes: stderr_capture.total_bytes(),
        timed_out,
        duration_ms: duration.as_millis() as u64,
    })
}

pub(crate) fn build(request: &ExecRequest, root: &Path) -> io::Result<std::process::Command> {
    let mut command = program(&request.command)?;
    base_env(&mut command)
        .envs(&request.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    confine(&mut command, root, &request.cwd, false)?;
    Ok(command)
}

/// The program and arguments of `command`: an argv as it is, a string under `/bin/sh -lc`.
pub(crate) fn program(command: &Command) -> io::Result<std::process::Command> {
    Ok(match command {
        Command::Argv(argv) => {
            let Some(program) = argv.first() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the command is empty",
                ));
            };
            let mut command = std::process::Command::new(program);
            command.args(&argv[1..]);
            command
        }
        Command::Shell(script) => {
            let mut command = std::process::Command::new("/bin/sh");
            command.arg("-lc").arg(script);
            command
        }
    })
}

/// The environment every command starts from (PATH, HOME, LANG); the caller's comes on top.
pub(crate) fn base_env(command: &mut std::process::Command) -> &mut std::process::Command {
    command
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
}

/// Makes `command` run as commands do: chrooted in `root`, in `cwd`, in a session of its own (with
/// its stdin as controlling terminal when `controlling_tty`), without the dropped capabilities.
pub(crate) fn confine(
    command: &mut std::process::Command,
    root: &Path,
    cwd: &str,
    controlling_tty: bool,
) -> io::Result<()> {
    let root_c = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in root path"))?;
    let cwd_c = CString::new(cwd.as_bytes()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in working directory")
    })?;
    // SAFETY: the closure only makes async-signal-safe system calls on pre-built C strings.
    unsafe {
        command.pre_exec(move || {
            if libc::chroot(root_c.as_ptr()) != 0 || libc::chdir(cwd_c.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            crate::privileges::drop_for_command()
        });
    }
    Ok(())
}

/// A command that could not start: 127 when not found, 126 when not executable, as shells do.
fn spawn_failure(request: &ExecRequest, err: &io::Error) -> ExecResult {
    let program = match &request.command {
        Command::Argv(argv) => argv.first().cloned().unwrap_or_default(),
        Command::Shell(_) => "/bin/sh".to_string(),
    };
    let (exit_code, what) = match err.kind() {
        io::ErrorKind::NotFound => (127, "command not found"),
        io::ErrorKind::PermissionDenied => (126, "permission denied"),
        _ => (126, "cannot execute"),
    };
    ExecResult {
        exit_code,
        signal: None,
        stdout: String::new(),
        stderr: format!("{program}: {what}\n"),
        stdout_truncated: false,
        stderr_truncated: false,
        stdout_bytes: 0,
        stderr_bytes: (program.len() + what.len() + 3) as u64,
        timed_out: false,
        duration_ms: 0,
    }
}

pub(crate) fn spawn_reader(
    fd: OwnedFd,
    stream: OutputStream,
    tx: mpsc::Sender<(OutputStream, Vec<u8>)>,
) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; pyro_proto::MAX_CHUNK_BYTES];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((stream, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(())
}

pub(crate) fn kill_group(pid: i32) {
    // SAFETY: kill takes no pointers; the child leads its own process group (setsid).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Kills every process of the session `sid` leads (its own group and any other its shell made);
/// a process that left the session with `setsid` of its own is not found.
pub(crate) fn kill_session(sid: i32) {
    kill_group(sid);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if session_of(&stat) == Some(sid) {
            // SAFETY: kill takes no pointers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The session field of a `/proc/PID/stat` line: after the command name (which may hold anything,
/// parentheses included) come state, ppid, pgrp, session.
fn session_of(stat: &str) -> Option<i32> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(3))
        .and_then(|s| s.parse().ok())
}

pub(crate) fn decode_status(status: i32) -> (i32, Option<i32>) {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        (128 + signal, Some(signal))
    } else {
        (libc::WEXITSTATUS(status), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_read_past_any_command_name() {
        assert_eq!(session_of("42 (sleep) S 1 42 40 0 -1"), Some(40));
        assert_eq!(session_of("7 (a) b) (c) R 1 7 9 0"), Some(9));
        assert_eq!(session_of("garbage"), None);
    }
}
