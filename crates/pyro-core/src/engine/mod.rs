//! Engines turn a [`VmConfig`] into a running VM process. QEMU `microvm` is the one engine today; the
//! [`Backend`] trait is the seam a Firecracker backend would implement.

pub mod instance;
pub mod launch;
mod qemu;
pub mod qmp;
pub mod snapshot;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

pub use qemu::{qemu_version, Qemu, DATA_NODE};

use crate::host::accel::Accelerator;
use crate::Result;

/// Bumped whenever the engine command line or device list changes (a memory snapshot is only valid for
/// the exact device layout it was taken with).
pub const VM_SHAPE_VERSION: u32 = 6;

/// The descriptor the engine finds its NIC on: one end of a stream socket pair whose other end is
/// the VM's gateway (see `pyro-net`).
pub const NIC_FD: RawFd = 3;
/// The descriptor a restoring engine reads the template's device state from.
pub const INCOMING_FD: RawFd = 4;
/// The descriptors of the files and listening sockets the engine uses (see [`launch`]).
pub const KERNEL_FD: RawFd = 5;
pub const INITRD_FD: RawFd = 6;
pub const BASE_FD: RawFd = 7;
pub const DATA_FD: RawFd = 8;
pub const RAM_FD: RawFd = 9;
pub const AGENT_CHANNEL_FD: RawFd = 10;
pub const QMP_FD: RawFd = 11;

/// Hands each descriptor to the engine at the given number (and no others: all other descriptors
/// pyro holds are close-on-exec).
pub fn inherit_fds(command: &mut Command, fds: Vec<(OwnedFd, RawFd)>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    // Move every source above the targets first, so a source never sits on another's target.
    let mut moved = Vec::with_capacity(fds.len());
    for (fd, target) in fds {
        // SAFETY: F_DUPFD_CLOEXEC on an fd we own returns a new fd we then own.
        let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64) };
        if high < 0 {
            return Err(crate::Error::io(
                "duplicate a descriptor for",
                Path::new("the engine"),
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `high` is a fresh descriptor owned by nothing else.
        moved.push((unsafe { OwnedFd::from_raw_fd(high) }, target));
    }
    // SAFETY: dup2 is async-signal-safe; the closure only uses descriptors it owns.
    unsafe {
        command.pre_exec(move || {
            for (fd, target) in &moved {
                if libc::dup2(fd.as_raw_fd(), *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

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
    /// Its size (the snapshot drive, which shows the disk's snapshots, has the same).
    #[serde(default)]
    pub disk_gib: u32,
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
    Restore { ram: PathBuf, state: PathBuf },
    /// Resume a suspended guest: RAM and device state streamed in from `state` (see
    /// [`crate::suspend`]), into RAM laid out as it was saved from.
    Resume {
        state: PathBuf,
        sha256: String,
        bytes: u64,
        named_ram: bool,
        /// A fork's state, still being saved by the VM it is forked from: `sha256` and `bytes`
        /// come from its record once the save is done (see [`crate::suspend::follow`]).
        #[serde(default)]
        following: bool,
    },
}

impl Memory {
    /// Whether the guest's RAM is the `mem` backend object rather than the machine's own RAM (a
    /// migration stream names its RAM blocks: a resume must lay RAM out the same way).
    pub fn named_ram(&self) -> bool {
        match self {
            Memory::Anonymous => false,
            Memory::TemplateFile { .. } | Memory::Restore { .. } => true,
            Memory::Resume { named_ram, .. } => *named_ram,
        }
    }
}

/// An engine: the command that starts a VM (see [`instance::Instance`] for running it).
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// The command that starts the VM; it runs in the VM directory with the guest serial console on
    /// its stdout.
    fn command(&self, config: &VmConfig) -> Result<Command>;
}
