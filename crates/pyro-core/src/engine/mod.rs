//! Engines turn a [`VmConfig`] into a running VM process. QEMU `microvm` is the one engine today; the
//! [`Backend`] trait is the seam a Firecracker backend would implement.

mod qemu;
pub mod qmp;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

pub use qemu::{qemu_version, Qemu};

use crate::host::accel::Accelerator;
use crate::Result;

/// Bumped whenever the engine command line or device list changes (a memory snapshot is only valid for
/// the exact device layout it was taken with).
pub const VM_SHAPE_VERSION: u32 = 1;

/// File names inside a VM's directory. The engine runs with that directory as its working directory,
/// so socket paths stay short whatever the state dir's length.
pub const AGENT_SOCKET: &str = "agent.sock";
pub const QMP_SOCKET: &str = "qmp.sock";

/// Everything needed to start one VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmConfig {
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub network: bool,
    pub accelerator: Accelerator,
    pub tsc_khz: Option<u64>,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The environment's base image, attached read-only.
    pub base_image: PathBuf,
    /// This VM's own writable disk.
    pub data_disk: PathBuf,
    /// Where guest RAM lives: anonymous memory for a cold boot, or a template's RAM file.
    #[serde(default)]
    pub memory: Memory,
}

/// Guest RAM, and whether the VM starts from a memory snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Memory {
    /// Plain anonymous memory: a cold boot.
    #[default]
    Anonymous,
    /// RAM in a shared file: a template being prepared (the file becomes its RAM image).
    TemplateFile { ram: PathBuf },
    /// Start from a template: its RAM file mapped copy-on-write, its device state migrated in.
    Restore {
        ram: PathBuf,
        state: PathBuf,
        /// The data disk size the template was taken with (a different disk is resized after restore).
        disk_bytes: u64,
    },
}

/// An engine: how to start a VM and how to ask it to quit.
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// The command that starts the VM; it runs in the VM directory with the guest serial console on
    /// its stdout.
    fn command(&self, config: &VmConfig) -> Result<Command>;

    /// Asks a running VM to quit at once (used when the guest does not power off by itself).
    fn request_quit(&self, vm_dir: &Path) -> Result<()>;
}
