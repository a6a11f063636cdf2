//! Processes: commands the agent starts and keeps, each with a pid, its output (pipes or a PTY) kept
//! for followers, optional stdin, signals and a deadline. They outlive the request that started
//! them; a follower streams their output as it comes and gets their end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub command: Command,
    /// Working directory inside the VM's root.
    pub cwd: String,
    /// Added to the agent's default environment.
    pub env: BTreeMap<String, String>,
    /// Run on a new PTY of this size (output is then one stream), or on pipes.
    pub pty: Option<PtySize>,
    /// Keep stdin open for input (on pipes; a PTY always takes input).
    pub stdin: bool,
    /// A name the caller may select the process by.
    pub tag: Option<String>,
    /// Kill the process's group after this long.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: i32,
    pub tag: Option<String>,
    pub command: Command,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    pub pty: Option<PtySize>,
    pub running: bool,
    /// Set once it ended: its exit code (128 + n for a signal).
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It was killed at its deadline.
    pub timed_out: bool,
    /// Bytes of output so far.
    pub output_bytes: u64,
}

/// Which stream a followed chunk came from: a PTY's output is [`ProcessStream::Pty`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStream {
    Stdout,
    Stderr,
    Pty,
}

/// Where a follow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowFrom {
    /// The oldest output kept.
    Start,
    /// Only what comes next.
    Now,
}

/// A change under a watched directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Relative to the watched directory.
    pub name: String,
    pub kind: WatchEventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEventKind {
    Create,
    Write,
    Remove,
    /// Moved away (its new name, if still watched, comes as a create).
    Rename,
    Chmod,
}
