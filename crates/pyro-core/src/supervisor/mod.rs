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

mod launch;
mod process;
pub mod protocol;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use launch::{remove_if_abandoned, spawn, OwnerChannel};
pub use process::main;

use crate::engine::VmConfig;

pub const RECORD_FILE: &str = "vm.json";
pub const SOCKET: &str = "supervisor.sock";
pub const LOCK: &str = "lock";
pub const SERIAL_LOG: &str = "serial.log";
pub const ENGINE_LOG: &str = "engine.log";
pub const SUPERVISOR_LOG: &str = "supervisor.log";
pub const DATA_DISK: &str = "disk.img";

/// What a supervisor needs to know about its VM (`vm.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    pub id: String,
    pub environment: String,
    pub config: VmConfig,
    /// Tear the VM down (and remove its directory) when the owner goes away.
    pub ephemeral: bool,
    pub created_at_unix_ms: u64,
}

pub fn socket_path(vm_dir: &Path) -> PathBuf {
    vm_dir.join(SOCKET)
}
