//! Starting a supervisor, and the owner's end of the channel to it.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pyro_proto::{read_frame, write_message};
use tokio::net::UnixStream;

use super::protocol::{OwnerCommand, SupervisorEvent};
use super::{LOCK, SUPERVISOR_LOG};
use crate::fsutil::{self, FileLock};
use crate::{Error, ErrorKind, Result};

/// The owner's end: learns when the VM is ready or stopped, and can ask it to shut down.
pub struct OwnerChannel {
    stream: UnixStream,
    pub supervisor_pid: u32,
}

impl OwnerChannel {
    /// The owner's end of a connection the supervisor accepted as its owner (a claim of a pooled
    /// VM): it reports `stopped` on it, takes `shutdown` from it and ends the VM when it closes.
    pub fn claimed(stream: UnixStream, supervisor_pid: u32) -> OwnerChannel {
        OwnerChannel {
            stream,
            supervisor_pid,
        }
    }

    /// The next event; `None` when the supervisor is gone without a word (it was killed).
    pub async fn next_event(&mut self) -> Result<Option<SupervisorEvent>> {
        match read_frame(&mut self.stream).await {
            Ok(Some(frame)) => frame
                .into_message()
                .map(Some)
                .map_err(|e| Error::new(ErrorKind::Protocol, format!("bad supervisor event: {e}"))),
            Ok(None) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
            Err(e) => Err(Error::new(
                ErrorKind::Protocol,
                format!("supervisor channel failed: {e}"),
            )),
        }
    }

    pub async fn request_shutdown(&mut self, reason: &str) -> Result<()> {
        write_message(
            &mut self.stream,
            &OwnerCommand::Shutdown {
                reason: reason.to_string(),
            },
        )
        .await
        .map_err(|e| Error::new(ErrorKind::Engine, format!("the supervisor is gone: {e}")))
    }
}

/// The `pyro` binary, which runs supervisors and other helpers: `PYRO_BIN`, else the running
/// executable.
pub(crate) fn pyro_program() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PYRO_BIN").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    std::env::current_exe()
        .map_err(|e| Error::internal(format!("cannot find the running executable: {e}")))
}

/// Starts a detached supervisor for the VM in `vm_dir` (which holds its `vm.json`).
pub fn spawn(vm_dir: &Path) -> Result<OwnerChannel> {
    let program = pyro_program()?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot create a socket pair: {e}")))?;
    let log_path = vm_dir.join(SUPERVISOR_LOG);
    let log = std::fs::File::create(&log_path).map_err(|e| Error::io("create", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io("create", &log_path, e))?;
    let their_fd = theirs.as_raw_fd();
    const OWNER_FD: i32 = 3;
    let mut command = Command::new(&program);
    command
        .arg("__supervise")
        .arg("--vm-dir")
        .arg(vm_dir)
        .arg("--owner-fd")
        .arg(OWNER_FD.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // A session of its own: the terminal's Ctrl-C reaches the starter, not the supervisor.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if their_fd == OWNER_FD {
                // dup2 onto itself would keep close-on-exec set.
                if libc::fcntl(OWNER_FD, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(their_fd, OWNER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        Error::new(
            ErrorKind::Engine,
            format!("cannot start the supervisor {}: {e}", program.display()),
        )
    })?;
    drop(theirs);
    let supervisor_pid = child.id();
    // Reap the supervisor whenever it exits, so a long-lived starter collects no zombies.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    ours.set_nonblocking(true)
        .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
    let stream =
        UnixStream::from_std(ours).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
    Ok(OwnerChannel {
        stream,
        supervisor_pid,
    })
}

/// Removes a VM directory whose supervisor is dead (nobody holds its lock). Returns whether it did.
pub fn remove_if_abandoned(vm_dir: &Path) -> Result<bool> {
    if !vm_dir.exists() {
        return Ok(false);
    }
    match FileLock::try_acquire(&vm_dir.join(LOCK))? {
        Some(_lock) => {
            fsutil::remove_tree(vm_dir)?;
            Ok(true)
        }
        None => Ok(false),
    }
}
