//! The wire protocol between the pyro host and `pyro-agent`, the guest's PID 1.
//!
//! Transport: one virtio-serial port per VM (named [`AGENT_PORT_NAME`]) carries a yamux session; the host
//! (the VM's supervisor) opens one yamux stream per request. Inside a stream both ends exchange
//! [`frame`]s: a tag byte, a big-endian `u32` length and a payload. A request is one JSON [`Request`];
//! the agent answers with optional output chunks and one JSON [`Reply`], then closes the stream.
//!
//! Nothing here trusts the peer: frame lengths are capped at [`MAX_FRAME_BYTES`] before any allocation.
//! Both ends refuse a [`PROTOCOL_VERSION`] mismatch in the [`Request::Hello`] handshake.

pub mod archive_rules;
pub mod capture;
pub mod frame;
pub mod message;
pub mod preamble;
pub mod process;
pub mod service;
pub mod shell;

pub use capture::CappedOutput;
pub use frame::{
    read_frame, write_chunk, write_data, write_message, write_payload, Frame, OutputStream,
};
pub use message::*;
pub use process::{
    FollowFrom, ProcessInfo, ProcessSpec, ProcessStream, PtySize, WatchEvent, WatchEventKind,
};
pub use service::{Readiness, ServiceInfo, ServiceOutput, ServiceSpec, ServiceState};
pub use shell::{ShellChunk, ShellInfo, ShellSpec, ShellState};

/// Bumped on any incompatible change to frames or messages.
pub const PROTOCOL_VERSION: u32 = 6;

/// The name of the virtio-serial port the agent listens on (`/sys/class/virtio-ports/*/name`).
pub const AGENT_PORT_NAME: &str = "org.pyro.agent.0";

/// The largest frame either end accepts.
pub const MAX_FRAME_BYTES: usize = 8 << 20;

/// The largest input one `ProcessInput` carries.
pub const MAX_PROCESS_INPUT_BYTES: u64 = 1 << 20;

/// The largest output chunk the agent sends in one frame.
pub const MAX_CHUNK_BYTES: usize = 64 << 10;

/// Ext4 volume label of an environment's shared, read-only base image.
pub const BASE_DISK_LABEL: &str = "pyro-base";

/// Ext4 volume label of a VM's own writable disk.
pub const DATA_DISK_LABEL: &str = "pyro-data";
/// The serial of the drive the host attaches disk snapshots to, read-only, for the agent to read.
pub const VIEW_DISK_SERIAL: &str = "pyro-view";

/// The yamux settings both ends use. An emulated guest can be slow to answer and a VM may be paused,
/// so there are no keep-alive pings that could declare the peer dead.
pub fn mux_config() -> tokio_yamux::Config {
    tokio_yamux::Config {
        enable_keepalive: false,
        connection_write_timeout: std::time::Duration::from_secs(300),
        max_stream_window_size: 1 << 20,
        ..tokio_yamux::Config::default()
    }
}
