//! A running engine: the one way a VM's supervisor and `pyro prepare` start QEMU, wait for its guest,
//! capture its logs (capped), ask it to quit and reap it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

use super::qmp::Qmp;
use super::{launch, Qemu, VmConfig, QMP_SOCKET};
use crate::{fsutil, Error, ErrorKind, Result};

/// The guest console (the engine's stdout), in the VM directory.
pub const SERIAL_LOG: &str = "serial.log";
/// The engine's own messages (its stderr), in the VM directory.
pub const ENGINE_LOG: &str = "engine.log";
/// Each log keeps at most this much; the rest is read and dropped (both are guest-influenced).
pub const LOG_CAP: u64 = 1 << 20;

pub struct Instance {
    child: Child,
    dir: VmDirectory,
    /// Where a resuming engine's state is written (see [`Instance::take_incoming`]).
    incoming: Option<std::os::fd::OwnedFd>,
}

/// The VM directory, followed wherever it is renamed to (a pooled VM's moves when it is claimed):
/// paths go through a descriptor of it.
struct VmDirectory {
    handle: Option<std::fs::File>,
    at_spawn: PathBuf,
}

impl VmDirectory {
    fn open(dir: &Path) -> VmDirectory {
        VmDirectory {
            handle: std::fs::File::open(dir).ok(),
            at_spawn: dir.to_path_buf(),
        }
    }

    fn join(&self, name: &str) -> PathBuf {
        use std::os::fd::AsRawFd;
        match &self.handle {
            Some(handle) => {
                PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd())).join(name)
            }
            None => self.at_spawn.join(name),
        }
    }
}

impl Instance {
    /// Starts the VM described by `config` in `dir`; returns it and the gateway end of its NIC, if
    /// it has one. The engine dies with this process, and with the returned value.
    pub fn spawn(
        backend: &Qemu,
        config: &VmConfig,
        dir: &Path,
    ) -> Result<(Instance, Option<std::os::unix::net::UnixStream>)> {
        let launch = launch::prepare(backend, config, dir)?;
        let mut command = launch.command;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::new(ErrorKind::Engine, format!("cannot start QEMU: {e}")))?;
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(copy_capped(stdout, dir.join(SERIAL_LOG), LOG_CAP));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(copy_capped(stderr, dir.join(ENGINE_LOG), LOG_CAP));
        }
        let instance = Instance {
            child,
            dir: VmDirectory::open(dir),
            incoming: launch.incoming,
        };
        Ok((instance, launch.nic))
    }

    /// The write end of the pipe a resuming engine reads its state from (once).
    pub fn take_incoming(&mut self) -> Option<std::os::fd::OwnedFd> {
        self.incoming.take()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Runs `until_ready` while watching the engine: its result, or an error (with the logs' last
    /// lines) when the engine exits first or `deadline` passes. `what` names the guest in messages.
    pub async fn wait_ready<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        until_ready: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            ready = tokio::time::timeout(deadline, until_ready) => match ready {
                Ok(ready) => ready,
                Err(_) => Err(Error::new(
                    ErrorKind::BootTimeout,
                    format!("{what} did not become ready within {}s\n{}", deadline.as_secs(), self.logs_tail()),
                )),
            },
            status = self.child.wait() => {
                let how = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                Err(Error::new(
                    ErrorKind::Engine,
                    format!("QEMU exited while booting {what} ({how})\n{}", self.logs_tail()),
                ))
            }
        }
    }

    /// Waits for the engine to exit.
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(err) => err.to_string(),
        }
    }

    /// Whether the engine exits within `limit`.
    pub async fn exits_within(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.child.wait()).await.is_ok()
    }

    /// Asks the engine to quit at once (QMP `quit`), for a guest that does not power off. A frozen
    /// engine that does not answer within 2 s is left to [`Instance::kill`].
    pub async fn request_quit(&self) -> Result<()> {
        let quit = async {
            let mut qmp = Qmp::connect(&self.dir.join(QMP_SOCKET), Duration::from_secs(2)).await?;
            qmp.execute("quit", json!({})).await.map(|_| ())
        };
        tokio::time::timeout(Duration::from_secs(2), quit)
            .await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Engine, "QMP quit timed out")))
    }

    /// Kills the engine and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Quits the engine: `quit` over QMP, then a kill if it lingers.
    pub async fn stop(&mut self, grace: Duration) {
        if self.request_quit().await.is_ok() && self.exits_within(grace).await {
            return;
        }
        self.kill().await;
    }

    /// The last lines of the engine's log and the guest console, for error messages.
    pub fn logs_tail(&self) -> String {
        let tail = |name: &str| fsutil::tail_lines(&self.dir.join(name), 20);
        format!(
            "--- QEMU log ---\n{}\n--- guest console ---\n{}",
            tail(ENGINE_LOG),
            tail(SERIAL_LOG)
        )
    }
}

/// Copies `from` to a new file at `path`, keeping its first `cap` bytes and draining the rest.
async fn copy_capped(mut from: impl AsyncRead + Unpin, path: PathBuf, cap: u64) {
    let Ok(mut file) = tokio::fs::File::create(&path).await else {
        return;
    };
    let mut written = 0u64;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if written < cap {
            let take = ((cap - written) as usize).min(n);
            if file.write_all(&buf[..take]).await.is_err() {
                return;
            }
            let _ = file.flush().await;
            written += take as u64;
        }
    }
}
