//! Tool arguments. Unknown arguments are refused (the error names the valid ones); defaults match the CLI.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

fn default_environment() -> String {
    pyro_core::catalog::DEFAULT_ENVIRONMENT.to_string()
}
fn default_vcpu() -> u8 {
    pyro_core::limits::DEFAULT_VCPU_COUNT
}
fn default_disk() -> u32 {
    pyro_core::limits::DEFAULT_DISK_GIB
}
fn default_mem() -> u32 {
    pyro_core::limits::DEFAULT_MEM_MIB
}
fn default_timeout() -> u64 {
    pyro_core::limits::DEFAULT_TIMEOUT_SECONDS
}
fn default_vm_ttl() -> u64 {
    pyro_core::workspace::vms::DEFAULT_VM_TTL_SECONDS
}
fn default_ttl() -> u64 {
    pyro_core::limits::DEFAULT_TTL_SECONDS
}
fn default_root() -> String {
    "/workspace".to_string()
}
fn default_baseline() -> String {
    "baseline".to_string()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRun {
    /// Environment to boot, e.g. debian:12 (git), debian:12-base, debian:12-build (compilers, python3).
    #[serde(default = "default_environment")]
    pub environment: String,
    /// Shell command, run with /bin/sh -lc in /.
    pub command: String,
    #[serde(default = "default_vcpu")]
    pub vcpu_count: u8,
    #[serde(default = "default_mem")]
    pub mem_mib: u32,
    /// Kill the command after this many seconds (exit code 124).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Accepted for compatibility; the VM lives only for this call.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Outbound networking for the VM (to public addresses, or only to allow_hosts).
    #[serde(default)]
    pub network: bool,
    /// The only destinations the VM may reach, as HOST or HOST:PORT (turns on networking).
    #[serde(default)]
    pub allow_hosts: Option<Vec<String>>,
    /// Must be false: pyro never runs guest work on the host.
    #[serde(default)]
    pub allow_host_compat: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceCreate {
    #[serde(default = "default_environment")]
    pub environment: String,
    /// Host directory or .tar/.tar.gz/.tgz to copy into /workspace. Omit it to copy the current project.
    #[serde(default)]
    pub seed_path: Option<String>,
    /// With the project seed: also copy the .git directory.
    #[serde(default)]
    pub include_git: bool,
    /// A unique name to use instead of the id.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default = "default_vcpu")]
    pub vcpu_count: u8,
    #[serde(default = "default_mem")]
    pub mem_mib: u32,
    /// The size of the workspace's own disk, in GiB (1 to 1024).
    #[serde(default = "default_disk")]
    pub disk_gib: u32,
    /// Idle seconds before the workspace is stopped or suspended (never deleted).
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// What the idle TTL does: `stop` (the default; processes end, files stay) or `suspend`
    /// (memory kept too; workspace_resume brings it back).
    #[serde(default)]
    pub ttl_action: Option<String>,
    /// Must be false: pyro never runs guest work on the host.
    #[serde(default)]
    pub allow_host_compat: bool,
    /// `off` (no network device, the default), `egress` (outbound TCP to public addresses and DNS) or
    /// `egress+published-ports`. The host itself is never reachable. Only where the server offers it.
    #[serde(default)]
    pub network_policy: Option<String>,
    /// The only destinations the workspace may reach, as HOST or HOST:PORT (implies egress).
    #[serde(default)]
    pub allow_hosts: Option<Vec<String>>,
    /// Secrets, as {name, value} or {name, file_path}: never written to the VM's disk, exposed to a
    /// call only through its secret_env, and redacted from every output.
    #[serde(default)]
    pub secrets: Option<Vec<SecretParam>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretParam {
    /// An environment variable name: letters, digits and '_', not starting with a digit.
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    /// A host file holding the value (read at create).
    #[serde(default)]
    pub file_path: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceFork {
    /// The started workspace to copy (id or name).
    pub workspace_id: String,
    /// A unique name for the fork.
    #[serde(default)]
    pub name: Option<String>,
    /// Let the fork use the source's secrets (otherwise they are only redacted from its output).
    #[serde(default)]
    pub inherit_secrets: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreate {
    #[serde(default = "default_environment")]
    pub environment: String,
    #[serde(default = "default_vcpu")]
    pub vcpu_count: u8,
    #[serde(default = "default_mem")]
    pub mem_mib: u32,
    /// Idle seconds before the VM is stopped (vm_reap_expired then deletes it).
    #[serde(default = "default_vm_ttl")]
    pub ttl_seconds: u64,
    /// Outbound networking for the VM (to public addresses; the host is never reachable).
    #[serde(default)]
    pub network: bool,
    /// Must be false: pyro never runs guest work on the host.
    #[serde(default)]
    pub allow_host_compat: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmRef {
    /// The id vm_create returned.
    pub vm_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmExec {
    pub vm_id: String,
    /// Shell command, run with /bin/sh -lc in /.
    pub command: String,
    /// Kill the command after this many seconds (exit code 124).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceRef {
    /// Workspace id or name.
    pub workspace_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceUpdate {
    pub workspace_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub clear_name: bool,
    /// Labels to set.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Label keys to remove.
    #[serde(default)]
    pub clear_labels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceExec {
    pub workspace_id: String,
    /// Shell command, run with /bin/sh -lc.
    pub command: String,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Working directory (default /workspace).
    #[serde(default = "default_root")]
    pub cwd: String,
    /// Workspace secrets to expose to this command: {SECRET_NAME: ENV_VAR}.
    #[serde(default)]
    pub secret_env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSyncPush {
    pub workspace_id: String,
    /// Host directory or .tar/.tar.gz/.tgz.
    pub source_path: String,
    #[serde(default = "default_root")]
    pub dest: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceFileList {
    pub workspace_id: String,
    #[serde(default = "default_root")]
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceFileRead {
    pub workspace_id: String,
    pub path: String,
    /// At most this many bytes (default 65536); `truncated` says if the file goes on.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Start reading here (to continue a truncated read).
    #[serde(default)]
    pub offset: u64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceFileWrite {
    pub workspace_id: String,
    pub path: String,
    /// The whole new content of the file (UTF-8).
    pub text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePatchApply {
    pub workspace_id: String,
    /// A unified diff (git's headers for new, deleted and renamed files are fine).
    pub patch: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceExport {
    pub workspace_id: String,
    /// Path in /workspace.
    pub path: String,
    /// Host path to create; it must not exist.
    pub output_path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceDiskExport {
    pub workspace_id: String,
    /// Host file to create; it must not exist.
    pub output_path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceReset {
    pub workspace_id: String,
    /// The snapshot to go back to: `baseline` (the default) or one made with snapshot_create.
    #[serde(default = "default_baseline")]
    pub snapshot: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSince {
    pub workspace_id: String,
    /// Compare with this snapshot (from snapshot_create) instead of the baseline.
    #[serde(default)]
    pub since: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRef {
    pub workspace_id: String,
    /// Letters, digits, '.', '_' or '-' (up to 64, starting with a letter or digit); not `baseline`.
    pub snapshot_name: String,
}

fn default_ready_timeout() -> u64 {
    pyro_core::limits::DEFAULT_READY_TIMEOUT_SECONDS
}
fn default_ready_interval() -> u64 {
    pyro_core::limits::DEFAULT_READY_INTERVAL_MS
}
fn default_tail_lines() -> usize {
    200
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceStart {
    pub workspace_id: String,
    /// Workspace secrets to expose to the service: {SECRET_NAME: ENV_VAR}.
    #[serde(default)]
    pub secret_env: Option<BTreeMap<String, String>>,
    /// A name for the service (letters, digits, '.', '_', '-'); unique while it runs.
    pub service_name: String,
    /// Shell command, run with /bin/sh -lc; it should keep running (a server, a worker).
    pub command: String,
    #[serde(default = "default_root")]
    pub cwd: String,
    /// Ready once this path under /workspace exists. Give at most one ready_* check.
    #[serde(default)]
    pub ready_file: Option<String>,
    /// Ready once a TCP connection to HOST:PORT succeeds, from inside the VM.
    #[serde(default)]
    pub ready_tcp: Option<String>,
    /// Ready once GET of this http:// URL answers below 400, from inside the VM.
    #[serde(default)]
    pub ready_http: Option<String>,
    /// Ready once this shell command exits 0 in the service's directory.
    #[serde(default)]
    pub ready_command: Option<String>,
    /// Stop the service and report it failed when it is not ready after this long.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_seconds: u64,
    #[serde(default = "default_ready_interval")]
    pub ready_interval_ms: u64,
    /// Start it again whenever the workspace starts (services do not come back otherwise).
    #[serde(default)]
    pub restart_on_start: bool,
    /// Guest ports to publish on the host's 127.0.0.1 once ready (the workspace needs the
    /// egress+published-ports network policy); the result says which host port each got.
    #[serde(default)]
    pub published_ports: Option<Vec<PublishPort>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishPort {
    /// 1 to 65535.
    pub guest_port: u16,
    /// 1025 to 65535; a free port when left out.
    #[serde(default)]
    pub host_port: Option<u16>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    pub workspace_id: String,
    pub service_name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceLogs {
    pub workspace_id: String,
    pub service_name: String,
    /// Keep the last N lines of each stream.
    #[serde(default = "default_tail_lines")]
    pub tail_lines: usize,
    /// Everything kept instead (the head and tail of each stream).
    #[serde(default)]
    pub all: bool,
}

fn default_cols() -> u16 {
    pyro_core::limits::DEFAULT_SHELL_COLS
}
fn default_rows() -> u16 {
    pyro_core::limits::DEFAULT_SHELL_ROWS
}
fn default_max_chars() -> u64 {
    pyro_core::limits::DEFAULT_SHELL_READ_BYTES
}
fn default_true() -> bool {
    true
}
fn default_signal() -> String {
    "INT".to_string()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellOpen {
    pub workspace_id: String,
    #[serde(default = "default_root")]
    pub cwd: String,
    #[serde(default = "default_cols")]
    pub cols: u16,
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Workspace secrets to expose to the shell: {SECRET_NAME: ENV_VAR}.
    #[serde(default)]
    pub secret_env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellRef {
    pub workspace_id: String,
    pub shell_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellReadParams {
    pub workspace_id: String,
    pub shell_id: String,
    /// Byte offset in the shell's output to read from: 0, then the previous read's next_cursor.
    #[serde(default)]
    pub cursor: u64,
    /// At most this many bytes of output.
    #[serde(default = "default_max_chars")]
    pub max_chars: u64,
    /// The text a person would see on the terminal (escape sequences applied) instead of raw output.
    #[serde(default)]
    pub plain: bool,
    /// Wait until the shell has printed nothing for this long (1 to 10000 ms), e.g. for a command
    /// to finish.
    #[serde(default)]
    pub wait_for_idle_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellWriteParams {
    pub workspace_id: String,
    pub shell_id: String,
    /// What to type.
    pub input: String,
    /// Press Enter after it.
    #[serde(default = "default_true")]
    pub append_newline: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellSignalParams {
    pub workspace_id: String,
    pub shell_id: String,
    /// HUP, INT, TERM or KILL.
    #[serde(default = "default_signal")]
    pub signal_name: String,
}
