//! The serde types workspace operations return (the CLI's `--json` and MCP results share them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::journal::Recorded;
use crate::network::NetworkPolicy;
use crate::vocab::{BootMode, ExecutionMode, SeedMode, TtlAction, WorkspaceKind, WorkspaceState};

/// Where `/workspace` came from at create time. The seed is the immutable baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkspaceSeed {
    pub mode: SeedMode,
    pub seed_path: Option<String>,
    /// For `project` and `repo_url`: the directory or URL the seed came from.
    #[serde(default)]
    pub source: Option<String>,
    pub destination: String,
    pub entry_count: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LastCommand {
    pub sequence: u64,
    pub command: String,
    pub cwd: String,
    pub exit_code: i64,
    pub duration_ms: u64,
}

/// A workspace as status, list, create and the lifecycle operations report it.
#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    pub workspace_id: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub environment: String,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub disk_gib: u32,
    /// Idle seconds after which the supervisor stops (never deletes) the workspace.
    pub ttl_seconds: u64,
    pub state: WorkspaceState,
    /// Why a stopped workspace stopped.
    pub stop_reason: Option<String>,
    pub created_at: f64,
    pub last_activity_at: f64,
    /// When the idle TTL will stop a started workspace, if nothing happens before.
    pub expires_at: Option<f64>,
    pub network_policy: NetworkPolicy,
    pub network_enabled: bool,
    /// The only destinations the workspace reaches (empty: any public address, under `egress`).
    pub allow_hosts: Vec<String>,
    pub execution_mode: ExecutionMode,
    pub workspace_path: String,
    pub workspace_seed: WorkspaceSeed,
    /// Commands run since the last reset.
    pub command_count: u64,
    pub last_command: Option<LastCommand>,
    pub reset_count: u64,
    pub last_reset_at: Option<f64>,
    pub service_count: u64,
    pub running_service_count: u64,
    /// How the VM last booted (restored from a template, or from the kernel), and why.
    pub boot_mode: Option<BootMode>,
    pub boot_mode_reason: Option<String>,
    /// Where the time of the boot this operation made went (create, start, reset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases_ms: Option<crate::vm::Phases>,
    /// `workspace`, or `vm` for one made by `vm_create` (the `vm_*` tools work on those).
    pub kind: WorkspaceKind,
    /// The names of its secrets (`secret_env` exposes them to one call at a time).
    pub secrets: Vec<String>,
    /// What its idle TTL does: `stop`, or `suspend` (keep its memory; `start` resumes).
    pub ttl_action: TtlAction,
}

/// One recorded operation: its place and timing, and (flattened) its `kind`, `params` and `result`.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    pub sequence: u64,
    pub started_at: f64,
    pub duration_ms: u64,
    pub ok: bool,
    #[serde(flatten)]
    pub recorded: Recorded,
}

/// Milliseconds since the epoch as the float seconds results carry.
pub fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}
