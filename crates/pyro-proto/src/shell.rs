//! PTY shells: interactive shells the agent keeps open, with their output kept for cursor reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShellSpec {
    /// Working directory inside the VM's root.
    pub cwd: String,
    pub cols: u16,
    pub rows: u16,
    /// Added to the shell's environment.
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellState {
    Running,
    /// Its process ended (by itself, a signal, or `close`).
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShellInfo {
    pub shell_id: String,
    pub state: ShellState,
    pub cwd: String,
    pub cols: u16,
    pub rows: u16,
    pub pid: Option<i32>,
    /// Guest wall clock, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    /// 128 + n for a signal.
    pub exit_code: Option<i32>,
    /// Bytes of output so far (the end of the stream, where the next output goes).
    pub output_bytes: u64,
}

/// The output between two cursors (byte offsets in the shell's output); the bytes follow the
/// request as one payload, before this reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShellChunk {
    pub shell: ShellInfo,
    /// Where the bytes start: the cursor asked for, or later when output before it was dropped
    /// (the agent keeps the last few MiB).
    pub cursor: u64,
    pub next_cursor: u64,
}
