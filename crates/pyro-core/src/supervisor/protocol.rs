//! Messages between a supervisor and its clients (host-side only; framed like the agent protocol).

use serde::{Deserialize, Serialize};

use crate::ErrorKind;

/// The first frame a client sends on `supervisor.sock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientRequest {
    /// Carry this connection to the agent as a new stream; after the `attached` reply the connection is
    /// a raw agent stream. It counts as activity until it ends or its deadline (from the client, which
    /// gives up then too) passes; the supervisor closes it at that point.
    Agent {
        #[serde(default)]
        deadline_ms: Option<u64>,
    },
    /// Like `Agent`, for reading only: not counted as activity (the idle TTL keeps running).
    Inspect {
        #[serde(default)]
        deadline_ms: Option<u64>,
    },
    /// Report the VM's state.
    Status,
    /// Listen on the host's 127.0.0.1:`host_port` (a free port when `None`) and carry connections
    /// to the guest's `guest_port`.
    Publish {
        guest_port: u16,
        host_port: Option<u16>,
    },
    /// Stop listening on a published port.
    Unpublish { host_port: u16 },
    /// Stop (or suspend) the VM after this many idle seconds from now on (`None`: never).
    SetIdleTimeout { seconds: Option<u64> },
    /// Take a snapshot of the VM's disk (its file system frozen meanwhile) under `name`.
    TakeDiskSnapshot { name: String },
    /// Delete the disk snapshot `name`.
    DeleteDiskSnapshot { name: String },
    /// Attach the disk snapshot `name`, read-only, to the VM's snapshot drive (the agent reads it).
    AttachSnapshotView { name: String },
    /// Put the snapshot drive back on its empty device.
    DetachSnapshotView,
    /// Power the VM off and clean up. With `discard`, the guest's disk is about to be reverted or
    /// thrown away, so QEMU is quit at once instead of letting the guest shut down.
    Shutdown {
        reason: String,
        #[serde(default)]
        discard: bool,
    },
    /// Save the guest's whole state beside its disk and end (see [`crate::suspend`]).
    Suspend,
    /// Take over a pooled VM: after the `claimed` reply this connection is an owner channel. A VM
    /// taken for one use (`persist` unset) ends with it; one taken to persist (a workspace) lives
    /// on with the idle timeout given.
    Claim {
        #[serde(default)]
        persist: Option<Persist>,
        /// Take over the disk the claimer moved to `disk.qcow2` in the VM directory (a workspace's,
        /// for a reset) in place of the one the VM started with.
        #[serde(default)]
        swap_disk: bool,
    },
    /// Save the guest's whole state, and a copy of its disk, into the VM directory `into` as a
    /// suspended VM; the guest runs on. The state goes into the file [`crate::suspend::expect`]
    /// made there, and the disk into the disk file there, both in place: the fork's engine
    /// follows them as they are written.
    // Named apart from the fork of earlier versions, which replaced the disk file rather than
    // writing into it: a supervisor of such a version refuses this request.
    #[serde(rename = "fork_in_place")]
    Fork { into: std::path::PathBuf },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientReply {
    Attached,
    Status(StatusInfo),
    ShuttingDown,
    Published {
        host_port: u16,
    },
    Unpublished,
    IdleTimeoutSet,
    Done,
    Claimed(ReadyInfo),
    /// A suspend or fork saved `bytes` of state in `save_ms`.
    Saved {
        bytes: u64,
        save_ms: u64,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusInfo {
    pub vm_id: String,
    pub supervisor_pid: u32,
    pub engine_pid: u32,
    pub boot_ms: u64,
}

/// How a VM taken over to persist behaves from then on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Persist {
    pub idle_timeout_seconds: Option<u64>,
    pub suspend_when_idle: bool,
}

/// What the owner may send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OwnerCommand {
    Shutdown { reason: String },
}

/// What the supervisor tells its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorEvent {
    Ready(ReadyInfo),
    Failed {
        kind: ErrorKind,
        message: String,
        hint: Option<String>,
    },
    Stopped {
        reason: String,
        unexpected: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub supervisor_pid: u32,
    pub engine_pid: u32,
    /// From engine start to the agent's handshake reply.
    pub boot_ms: u64,
    /// The part of `boot_ms` until the engine ran (spawned, and for a restore answering QMP); the
    /// rest is the guest's restore (or cold boot) and the agent's handshake.
    #[serde(default)]
    pub engine_ms: u64,
    pub agent: pyro_proto::HelloReply,
}
