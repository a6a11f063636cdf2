//! pyro's library: everything the `pyro` CLI and MCP server do, as plain functions.
//!
//! - [`catalog`] names the environments; [`environment`] builds and caches them from Debian packages;
//!   [`initramfs`] packs the guest agent with the kernel modules it needs.
//! - [`engine`] turns a VM configuration into an engine command line (QEMU `microvm` today), behind the
//!   [`engine::Backend`] trait.
//! - [`supervisor`] is the detached process that owns one VM: it starts the engine, holds the host end
//!   of the agent channel and serves clients on a 0600 unix socket.
//! - [`vm`] boots a VM through a supervisor and talks to its agent; [`run`] is `pyro run`.
//! - [`host`] inspects the machine (tools, KVM, TSC, Debian mirror); [`doctor`] reports on it.
//!
//! Surfaces render the serde result types defined here; they hold no logic of their own.

pub mod agent_client;
pub mod auto_prepare;
pub mod catalog;
mod child;
pub mod daily;
pub mod db;
pub mod disk;
pub mod disk_reader;
pub mod doctor;
pub mod engine;
pub mod environment;
pub mod error;
pub mod fsutil;
pub mod host;
pub mod host_paths;
pub mod initramfs;
pub mod limits;
pub mod network;
pub mod paths;
pub mod pool;
pub mod progress;
pub mod project;
pub mod run;
pub mod supervisor;
pub mod suspend;
pub mod template;
pub mod unix_socket;
pub mod vm;
pub mod vocab;
pub mod workspace;

pub use error::{Error, ErrorKind, Next, Result};
pub use paths::Dirs;
pub use progress::Progress;
pub use pyro_proto::OutputStream;

/// Runs CPU- or disk-bound work on tokio's blocking pool, off the async worker threads (an MCP server
/// serves other calls meanwhile).
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(format!("a background task failed: {e}")))?
}

/// pyro's own version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
