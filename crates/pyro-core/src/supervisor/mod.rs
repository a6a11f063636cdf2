//! The per-VM supervisor: a detached process (`pyro __supervise`) that owns one VM.
//!
//! It starts the engine, owns its QMP socket and the host end of the agent channel (a yamux session
//! over the virtio-serial port), and serves any number of concurrent clients on `supervisor.sock` (mode
//! 0600) in the VM directory; each client that asks for the agent gets its own yamux stream. It outlives
//! the process that started it and cleans up after itself when the engine exits.
//!
//! The starter keeps the other end of an *owner* socket pair: the supervisor reports `ready` or `failed`
//! on it, takes `shutdown` from it, and reports `stopped` when the VM is gone. An ephemeral VM (`pyro
//! run`) is shut down when its owner goes away, even if the owner was killed.

mod channel;
mod disk_snapshots;
mod disk_swap;
mod launch;
pub mod ports;
pub(crate) mod process;
pub mod protocol;
mod suspending;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) use launch::pyro_program;
pub use launch::{remove_if_abandoned, spawn, OwnerChannel};
pub use process::{main, SUSPENDED_BY_REQUEST};

use crate::engine::VmConfig;

pub const RECORD_FILE: &str = "vm.json";
pub const SOCKET: &str = "supervisor.sock";
pub const LOCK: &str = "lock";
pub use crate::engine::instance::{ENGINE_LOG, SERIAL_LOG};
pub const SUPERVISOR_LOG: &str = "supervisor.log";
pub const DATA_DISK: &str = crate::disk::FILE_NAME;

/// What a supervisor needs to know about its VM (`vm.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    pub id: String,
    pub environment: String,
    pub config: VmConfig,
    /// Tear the VM down (and remove its directory) when the owner goes away.
    pub ephemeral: bool,
    /// Stop the VM after this many idle seconds (no client connected).
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
    /// At the idle timeout, suspend the VM (keep its memory) instead of stopping it.
    #[serde(default)]
    pub suspend_when_idle: bool,
    /// What the guest may reach when it has a network device (its gateway enforces it).
    #[serde(default)]
    pub egress: crate::network::EgressRules,
    pub created_at_unix_ms: u64,
}

pub const STOPPED_FILE: &str = "stopped.json";

/// Why a supervisor ended, written into the VM directory as it exits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopRecord {
    pub reason: String,
    pub unexpected: bool,
    /// The VM's state was saved beside its disk: it can resume.
    #[serde(default)]
    pub suspended: bool,
    pub at_unix_ms: u64,
}

pub fn socket_path(vm_dir: &Path) -> PathBuf {
    vm_dir.join(SOCKET)
}

/// Why the VM in `vm_dir` last stopped, if its supervisor said.
pub fn stop_record(vm_dir: &Path) -> Option<StopRecord> {
    std::fs::read(vm_dir.join(STOPPED_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Connects to the supervisor of `vm_dir`, sends `request` and returns the connection with the reply.
pub async fn open(
    vm_dir: &Path,
    request: &protocol::ClientRequest,
) -> crate::Result<(tokio::net::UnixStream, protocol::ClientReply)> {
    use crate::{Error, ErrorKind};
    let socket = socket_path(vm_dir);
    let gone = |e: std::io::Error| {
        Error::new(
            ErrorKind::Engine,
            format!(
                "cannot reach the VM's supervisor at {}: {e}",
                socket.display()
            ),
        )
    };
    let std_stream = crate::unix_socket::connect(&socket).map_err(gone)?;
    std_stream.set_nonblocking(true).map_err(gone)?;
    let mut stream = tokio::net::UnixStream::from_std(std_stream).map_err(gone)?;
    pyro_proto::write_message(&mut stream, request)
        .await
        .map_err(gone)?;
    match pyro_proto::read_frame(&mut stream).await.map_err(gone)? {
        Some(frame) => Ok((stream, frame.into_message().map_err(gone)?)),
        None => Err(Error::new(
            ErrorKind::Engine,
            "the supervisor closed the connection",
        )),
    }
}

/// Sends one control request to the supervisor of `vm_dir` and returns its reply.
pub async fn request(
    vm_dir: &Path,
    request: &protocol::ClientRequest,
) -> crate::Result<protocol::ClientReply> {
    open(vm_dir, request).await.map(|(_, reply)| reply)
}

/// Why a supervisor stopped its VM after `seconds` without activity.
pub fn idle_stop_reason(seconds: u64) -> String {
    format!("stopped after {seconds}s without activity (its ttl_seconds)")
}

/// Why a supervisor suspended its VM after `seconds` without activity.
pub fn idle_suspend_reason(seconds: u64) -> String {
    format!("suspended after {seconds}s without activity (its ttl_seconds)")
}

/// Whether `reason` says the idle TTL stopped the VM.
pub fn is_idle_stop(reason: &str) -> bool {
    reason.starts_with("stopped after ") && reason.ends_with("without activity (its ttl_seconds)")
}
