//! Requests the host sends and replies the agent returns, one request per stream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A request, the first frame the host writes on a new stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// The version handshake; the supervisor sends it once the channel is up.
    Hello {
        protocol_version: u32,
        host_version: String,
    },
    /// Make a freshly booted (or restored) guest this VM's own: clock, entropy, identity, disks.
    Activate(Activate),
    /// Run a command.
    Exec(ExecRequest),
    /// Sync the disks and power the VM off.
    PowerOff,
    /// End this session after the answer and wait for a new one, as on a fresh channel: the host
    /// is about to save the guest (suspend, fork), and the restored guest starts a session of its own.
    Detach,
    /// Give the VM's own disk back: unmount the command root and the disk, so the host can put
    /// another disk in its place (a pooled VM taking over a workspace's disk); the next `Activate`
    /// mounts whichever disk is there. Refused while anything holds them.
    ReleaseDisk,
    /// Flush every file system to disk.
    Sync,
    /// Describe a path under `/workspace` (a directory's entries, recursively if asked).
    ListFiles {
        path: String,
        recursive: bool,
        max_entries: u32,
    },
    /// Read up to `max_bytes` of a regular file from `offset`; the bytes come as data frames first.
    ReadFile {
        path: String,
        offset: u64,
        max_bytes: u64,
    },
    /// Write the files (their contents follow as one payload each, in order), then delete `deletes`.
    /// All files are staged before any is put in place.
    WriteFiles {
        files: Vec<FileWrite>,
        deletes: Vec<String>,
    },
    /// Every entry under a path with its type, mode, size and (for files) sha256. The entries come as one
    /// JSON payload before the reply (a large tree does not fit in a message frame).
    Manifest { path: String, max_entries: u32 },
    /// Extract the tar archive that follows (one payload) into `destination`.
    ExtractArchive { destination: String },
    /// Send `path` as a tar archive (data frames), at most `max_bytes` of it.
    ExportArchive { path: String, max_bytes: u64 },
    /// Start a service and answer once it is ready, or failed.
    ServiceStart(crate::ServiceSpec),
    /// Stop a service: SIGTERM to its process group, then SIGKILL after `grace_ms`.
    ServiceStop { name: String, grace_ms: u64 },
    /// Every service the agent knows.
    ServiceList,
    /// One service with the output it kept.
    ServiceOutput { name: String },
    /// Open a shell on a new PTY.
    ShellOpen(crate::ShellSpec),
    /// Up to `max_bytes` of a shell's output from `cursor` (a byte offset); the bytes come as one
    /// payload before the reply. Never splits a UTF-8 character at the end.
    ShellRead {
        shell_id: String,
        cursor: u64,
        max_bytes: u64,
    },
    /// Type `input` into a shell.
    ShellWrite { shell_id: String, input: String },
    /// Change a shell's terminal size.
    ShellResize {
        shell_id: String,
        cols: u16,
        rows: u16,
    },
    /// Send a signal to a shell's process group.
    ShellSignal { shell_id: String, signal: i32 },
    /// End a shell: SIGHUP to its group, SIGKILL after `grace_ms`; it is forgotten.
    ShellClose { shell_id: String, grace_ms: u64 },
    /// Every open shell.
    ShellList,
    /// The entry of one path under `/workspace` itself (a symlink's own).
    StatPath { path: String },
    /// Make a directory under `/workspace` and its missing parents.
    MakeDir { path: String },
    /// Remove a path under `/workspace`: a file or link, or a directory with all it holds.
    RemovePath { path: String },
    /// Rename a path under `/workspace` (replacing a file at `to`), making `to`'s parents.
    RenamePath { from: String, to: String },
    /// Connect to `127.0.0.1:port` in the guest; after the `PortOpened` reply the stream carries
    /// that connection's bytes both ways until either end closes.
    OpenPort { port: u16 },
    /// Watch a directory under `/workspace` (and, recursive, every directory below it).
    WatchStart { path: String, recursive: bool },
    /// Take a watcher's events, waiting up to `wait_ms` for a first one.
    WatchEvents { watcher_id: String, wait_ms: u64 },
    /// Stop and forget a watcher.
    WatchStop { watcher_id: String },
    /// Start a process and keep it (see [`crate::process`]).
    ProcessStart(crate::ProcessSpec),
    /// Stream a process's output as output frames (a PTY's as stdout) until it ends, then reply
    /// with its info. Ends early, leaving the process be, when the host closes the stream.
    ProcessFollow { pid: i32, from: crate::FollowFrom },
    /// Write the payload that follows this request to a process's stdin (or its PTY).
    ProcessInput { pid: i32 },
    /// Close a process's stdin.
    ProcessCloseStdin { pid: i32 },
    /// Send a signal to a process's group.
    ProcessSignal { pid: i32, signal: i32 },
    /// Change a process's PTY size.
    ProcessResize { pid: i32, size: crate::PtySize },
    /// The processes kept: running ones, and the last ended ones.
    ProcessList,
    /// Flush the VM's disk and freeze its file system (writers wait), so a disk snapshot taken now is
    /// clean. The agent thaws it by itself after `thaw_after_ms` if no `ThawDisk` came first.
    FreezeDisk { thaw_after_ms: u64 },
    /// Thaw the VM's disk (a disk that is not frozen is fine).
    ThawDisk,
    /// Like `ExportArchive`, from the disk snapshot the host attached to the snapshot drive.
    ExportSnapshotView { path: String, max_bytes: u64 },
}

/// The agent's answer, the last frame it writes on a stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Hello(HelloReply),
    Activated(Activated),
    Exited(ExecResult),
    PoweringOff,
    Detached,
    DiskReleased,
    Synced,
    Frozen,
    /// `was_frozen`: the freeze this thaw ends was still in effect (not already ended by its deadline).
    Thawed {
        was_frozen: bool,
    },
    Files(FileList),
    FileRead(FileRead),
    Written(Written),
    Manifest(Manifest),
    Extracted(ArchiveSummary),
    Exported(ArchiveSummary),
    Service(crate::ServiceInfo),
    Services {
        services: Vec<crate::ServiceInfo>,
    },
    ServiceOutput(crate::ServiceOutput),
    Shell(crate::ShellInfo),
    Shells {
        shells: Vec<crate::ShellInfo>,
    },
    ShellOutput(crate::ShellChunk),
    Entry(FileEntry),
    MadeDir {
        entry: FileEntry,
        /// `false`: a directory was there already.
        created: bool,
    },
    Removed,
    PortOpened,
    Watching {
        watcher_id: String,
    },
    WatchEvents {
        events: Vec<crate::WatchEvent>,
        /// Some events were lost (too many before they were taken).
        dropped: bool,
    },
    WatchStopped,
    Process(crate::ProcessInfo),
    Processes {
        processes: Vec<crate::ProcessInfo>,
    },
    Error {
        message: String,
        /// What was wrong: the request (`invalid`), a missing path (`not_found`), or the guest (`failed`).
        #[serde(default)]
        kind: GuestErrorKind,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestErrorKind {
    Invalid,
    NotFound,
    #[default]
    Failed,
}

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactType {
    File,
    Directory,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Absolute, e.g. `/workspace/src/main.rs`.
    pub path: String,
    pub artifact_type: ArtifactType,
    pub size_bytes: u64,
    /// Permission bits, e.g. 0o644.
    pub mode: u32,
    pub link_target: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileList {
    pub path: String,
    pub artifact_type: ArtifactType,
    pub entries: Vec<FileEntry>,
    /// More entries existed than `max_entries`.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRead {
    pub path: String,
    pub size_bytes: u64,
    pub offset: u64,
    pub bytes_returned: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileWrite {
    pub path: String,
    pub size: u64,
    /// Permission bits for a new file (existing files keep theirs unless set).
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    pub files: Vec<FileEntry>,
    pub deleted: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the manifest's root, `/`-separated.
    pub path: String,
    pub artifact_type: ArtifactType,
    pub mode: u32,
    pub size_bytes: u64,
    pub sha256: Option<String>,
    pub link_target: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveSummary {
    pub path: String,
    pub artifact_type: ArtifactType,
    pub entry_count: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloReply {
    pub protocol_version: u32,
    pub agent_version: String,
    /// The guest kernel's release (`uname -r`).
    pub kernel_release: String,
    /// `/proc/sys/kernel/random/boot_id`: names one boot of the guest.
    pub boot_id: String,
    /// Guest uptime when the hello was answered.
    pub uptime_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Activate {
    /// Host wall clock, nanoseconds since the Unix epoch.
    pub unix_time_ns: u64,
    /// Fresh host entropy (hex) credited to the guest's pool before anything runs.
    pub entropy_hex: String,
    pub hostname: String,
    /// 32 lowercase hex digits, written to `/etc/machine-id`.
    pub machine_id: String,
    /// Outbound networking through the VM's NIC, or none.
    pub network: Option<NetworkConfig>,
}

/// Static IPv4 configuration of `eth0` (QEMU user networking: no DHCP client in the guest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub address: String,
    pub prefix_len: u8,
    pub gateway: String,
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Activated {
    pub boot_id: String,
}

/// What to execute: an argv run directly, or a string run by `/bin/sh -lc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Argv(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub command: Command,
    /// Working directory inside the VM's root.
    pub cwd: String,
    /// Added to the agent's default environment (PATH, HOME, LANG).
    pub env: BTreeMap<String, String>,
    pub timeout_ms: u64,
    /// Bytes kept per stream in the result (head and tail).
    pub output_cap_bytes: u64,
    /// Send output chunks as they are produced, before the result.
    pub stream_output: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: i32,
    /// The signal that ended the command, if one did (then `exit_code` is 128 + signal).
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub timed_out: bool,
    /// Measured in the guest, from spawn to exit.
    pub duration_ms: u64,
}
