//! Services: named long-running commands the agent supervises, with one typed readiness check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Command;

/// How the agent tells that a service is ready (exactly one; none means ready once started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Readiness {
    /// A path under `/workspace` exists.
    File { path: String },
    /// A TCP connection to `HOST:PORT` (from inside the guest) succeeds.
    Tcp { address: String },
    /// An HTTP GET of `url` (from inside the guest) answers with a status below 400.
    Http { url: String },
    /// A shell command (in the service's directory) exits 0.
    Command { command: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub command: Command,
    /// Working directory inside the VM's root.
    pub cwd: String,
    /// Added to the agent's default environment.
    pub env: BTreeMap<String, String>,
    pub readiness: Option<Readiness>,
    /// Give up (stop the service, state `failed`) when it is not ready after this long.
    pub ready_timeout_ms: u64,
    /// How often the readiness check runs.
    pub ready_interval_ms: u64,
    /// Bytes of each output stream kept (head and tail).
    pub output_cap_bytes: u64,
}

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Started (and ready, if it has a check).
    Running,
    /// Its process ended by itself.
    Exited,
    /// Stopped on request (or with its workspace).
    Stopped,
    /// Never became ready (it exited first, or the check timed out and it was stopped).
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub state: ServiceState,
    /// The command as one string (an argv shell-quoted).
    pub command: String,
    pub cwd: String,
    pub readiness: Option<Readiness>,
    pub pid: Option<i32>,
    /// Guest wall clock, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    pub ready_at_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
    /// Set once the process ended: its exit code (128 + n for a signal).
    pub exit_code: Option<i32>,
    /// Why it is not running: `process_exited_before_ready`, `readiness_timeout`, `sigterm`, `sigkill`.
    pub stop_reason: Option<String>,
}

/// A service and the output it has produced so far (head and tail of each stream).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceOutput {
    pub service: ServiceInfo,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}
