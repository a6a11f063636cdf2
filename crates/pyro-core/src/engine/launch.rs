//! Starting the engine, the one way both a VM's supervisor and `pyro prepare` do it.
//!
//! pyro opens every file QEMU needs (kernel, initramfs, disks, RAM file, incoming state) and binds its
//! sockets (the agent channel, QMP; 0600), and hands them over as descriptors at fixed numbers: QEMU
//! opens nothing by a path of its own. So when pyro runs as root, QEMU can run as an unprivileged user
//! of its VM's own (a uid of a reserved range, derived from the VM directory; no account is needed) that
//! owns nothing but the VM's disk: it reaches neither pyro's directories nor other VMs' processes.
//! The privilege drop happens before `exec`, as QEMU's own `-runas` would need the very system calls
//! its `-sandbox` denies. The shared read-only inputs (kernel, initramfs, base image, RAM templates)
//! are given to the engines' group, inside pyro's 0700 cache.

use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{
    inherit_fds, Backend, Memory, Qemu, VmConfig, AGENT_CHANNEL_FD, AGENT_SOCKET, BASE_FD, DATA_FD,
    INCOMING_FD, INITRD_FD, KERNEL_FD, NIC_FD, QMP_FD, QMP_SOCKET, RAM_FD,
};
use crate::host::accel::Accelerator;
use crate::{fsutil, unix_socket, Error, ErrorKind, Result};

/// The group every engine run by root belongs to (it may read the shared inputs).
pub const ENGINE_GID: u32 = 0x7e00_0000;
/// Engine uids are `ENGINE_GID + 1 + n` for `n` below this.
const ENGINE_UIDS: u32 = 1 << 20;

/// A prepared engine command, and the gateway end of its NIC when it has one.
pub struct Launch {
    pub command: Command,
    pub nic: Option<std::os::unix::net::UnixStream>,
    /// The write end of the pipe a resuming engine reads its state from.
    pub incoming: Option<OwnedFd>,
}

enum BootFile {
    Kernel,
    Initramfs,
}

/// What QEMU gets as `-kernel` or `-initrd`. A guest restored from memory never reads either again,
/// but QEMU keeps both in its own memory for the VM's life (about 18 MiB): it gets the kernel's
/// header alone (the setup sectors QEMU checks, which pick its boot path and option ROM, and one
/// sector more) and an empty initramfs, each in a memory file.
fn boot_file(config: &VmConfig, which: BootFile) -> Result<OwnedFd> {
    let restored = matches!(
        config.memory,
        Memory::Restore { .. } | Memory::Resume { .. }
    );
    match (which, restored) {
        (BootFile::Kernel, false) => open_read(&config.kernel),
        (BootFile::Initramfs, false) => open_read(&config.initramfs),
        (BootFile::Kernel, true) => memory_file("kernel-header", &kernel_header(&config.kernel)?),
        (BootFile::Initramfs, true) => memory_file("initramfs", &[]),
    }
}

/// The setup sectors of a bzImage and one sector of its payload.
fn kernel_header(kernel: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    const SECTOR: usize = 512;
    let mut file = File::open(kernel).map_err(|e| Error::io("open", kernel, e))?;
    let mut head = vec![0u8; 2 * SECTOR];
    file.read_exact(&mut head)
        .map_err(|e| Error::io("read", kernel, e))?;
    // setup_sects at 0x1f1 (0 means 4); the boot sector comes first.
    let setup_sects = match head[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let wanted = (setup_sects + 2) * SECTOR;
    let mut header = Vec::with_capacity(wanted);
    file = File::open(kernel).map_err(|e| Error::io("open", kernel, e))?;
    file.take(wanted as u64)
        .read_to_end(&mut header)
        .map_err(|e| Error::io("read", kernel, e))?;
    Ok(header)
}

/// A sealed memory file holding `contents`, for the engine to read by descriptor.
fn memory_file(name: &str, contents: &[u8]) -> Result<OwnedFd> {
    use std::io::Write;
    let c_name = std::ffi::CString::new(name).map_err(|e| Error::internal(e.to_string()))?;
    // SAFETY: a NUL-terminated name; memfd_create returns a new descriptor we then own.
    let fd = unsafe { libc::memfd_create(c_name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::new(
            ErrorKind::Engine,
            format!(
                "cannot create a memory file: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    // SAFETY: fd is fresh and owned by nothing else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(contents)
        .map_err(|e| Error::new(ErrorKind::Engine, format!("cannot fill a memory file: {e}")))?;
    Ok(OwnedFd::from(file))
}

/// A pipe (both ends close-on-exec), with room for a megabyte in flight.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::new(
            ErrorKind::Engine,
            format!("cannot create a pipe: {}", std::io::Error::last_os_error()),
        ));
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ on a descriptor we own; a failure only leaves the default size.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    Ok((read, write))
}

/// Who the engine runs as when pyro is root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineUser {
    pub uid: u32,
    pub gid: u32,
}

impl EngineUser {
    /// The engine user of the VM in `vm_dir`, when this process is root (else the engine runs as the
    /// invoking user, who owns everything already).
    pub fn for_vm(vm_dir: &Path) -> Option<EngineUser> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(vm_dir.as_os_str().as_encoded_bytes());
        let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % ENGINE_UIDS;
        Some(EngineUser {
            uid: ENGINE_GID + 1 + n,
            gid: ENGINE_GID,
        })
    }
}

impl EngineUser {
    /// Who may work on the VM disk `disk` (of the VM in `vm_dir`) outside the engine: the engine user
    /// that owns it already, else the VM's own, which then gets it. `None` when pyro is not root.
    pub fn take_disk(disk: &Path, vm_dir: &Path) -> Result<Option<EngineUser>> {
        let Some(user) = EngineUser::for_vm(vm_dir) else {
            return Ok(None);
        };
        let owner = fs::metadata(disk)
            .map_err(|e| Error::io("inspect", disk, e))?
            .uid();
        // Whatever path spelling made it, the uid the running engine has is the disk's owner.
        if owner > ENGINE_GID && owner <= ENGINE_GID + ENGINE_UIDS {
            return Ok(Some(EngineUser {
                uid: owner,
                gid: ENGINE_GID,
            }));
        }
        std::os::unix::fs::chown(disk, Some(user.uid), Some(user.gid))
            .map_err(|e| Error::io("give the engine", disk, e))?;
        Ok(Some(user))
    }
}

fn open_read(path: &Path) -> Result<OwnedFd> {
    File::open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io("open", path, e))
}

fn open_write(path: &Path) -> Result<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io("open", path, e))
}

/// Binds a fresh listening socket at `path` (0600) for the engine to serve.
fn listen(path: &Path) -> Result<OwnedFd> {
    let _ = fs::remove_file(path);
    unix_socket::bind(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io("listen on", path, e))
}

/// Lets the engines' group read (and, for `writable`, write) a shared input, which stays inside
/// pyro's private cache. Unchanged when it is so already (a change would make templates re-hash).
fn share_with_engines(path: &Path, writable: bool) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| Error::io("inspect", path, e))?;
    let wanted = meta.mode() & 0o700 | if writable { 0o060 } else { 0o040 };
    if meta.gid() != ENGINE_GID {
        std::os::unix::fs::chown(path, None, Some(ENGINE_GID))
            .map_err(|e| Error::io("give the engines' group", path, e))?;
    }
    if meta.mode() & 0o777 != wanted {
        fs::set_permissions(path, fs::Permissions::from_mode(wanted))
            .map_err(|e| Error::io("set the mode of", path, e))?;
    }
    Ok(())
}

/// The group that may use `/dev/kvm`, for an engine that runs with KVM.
fn kvm_gid() -> Option<u32> {
    fs::metadata("/dev/kvm").ok().map(|m| m.gid())
}

/// Builds the command that starts the VM described by `config` in `vm_dir` (its working directory,
/// where the sockets are bound). The engine dies with the calling thread.
pub fn prepare(backend: &Qemu, config: &VmConfig, vm_dir: &Path) -> Result<Launch> {
    let mut command = backend.command(config)?;
    command.current_dir(vm_dir);
    let user = EngineUser::for_vm(vm_dir);
    let mut fds: Vec<(OwnedFd, i32)> = vec![
        (boot_file(config, BootFile::Kernel)?, KERNEL_FD),
        (boot_file(config, BootFile::Initramfs)?, INITRD_FD),
        (open_read(&config.base_image)?, BASE_FD),
        (open_write(&config.data_disk)?, DATA_FD),
        (listen(&vm_dir.join(AGENT_SOCKET))?, AGENT_CHANNEL_FD),
        (listen(&vm_dir.join(QMP_SOCKET))?, QMP_FD),
    ];
    let ram: Option<&PathBuf> = match &config.memory {
        Memory::Anonymous | Memory::Resume { .. } => None,
        Memory::TemplateFile { ram } | Memory::Restore { ram, .. } => Some(ram),
    };
    if let Some(ram) = ram {
        // QEMU maps the RAM file read-write even when the mapping is private; a template's is new
        // (QEMU sizes it).
        let file = match &config.memory {
            Memory::TemplateFile { .. } => OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(ram)
                .map(OwnedFd::from)
                .map_err(|e| Error::io("create", ram, e))?,
            _ => open_write(ram)?,
        };
        fds.push((file, RAM_FD));
    }
    if let Memory::Restore { state, .. } = &config.memory {
        // QEMU may not spawn (`-sandbox spawn=deny`): it reads the device state from a descriptor.
        fds.push((open_read(state)?, INCOMING_FD));
    }
    // A suspended guest's state comes through a pipe the supervisor feeds (checking its digest).
    let incoming = if let Memory::Resume { .. } = &config.memory {
        let (read, write) = pipe()?;
        fds.push((read, INCOMING_FD));
        Some(write)
    } else {
        None
    };
    let nic = if config.network {
        let (engine_end, gateway_end) = std::os::unix::net::UnixStream::pair().map_err(|e| {
            Error::new(
                ErrorKind::Engine,
                format!("cannot create the NIC socket: {e}"),
            )
        })?;
        fds.push((OwnedFd::from(engine_end), NIC_FD));
        Some(gateway_end)
    } else {
        None
    };
    if let Some(user) = user {
        // Reopening /proc/self/fd/N checks the file's own permissions: the engine's user owns its
        // disk; the shared inputs are its group's to read.
        std::os::unix::fs::chown(&config.data_disk, Some(user.uid), Some(user.gid))
            .map_err(|e| Error::io("give the engine", &config.data_disk, e))?;
        for path in [&config.kernel, &config.initramfs, &config.base_image] {
            share_with_engines(path, false)?;
        }
        if let Some(ram) = ram {
            share_with_engines(ram, true)?;
        }
        if let Memory::Restore { state, .. } = &config.memory {
            share_with_engines(state, false)?;
        }
    }
    inherit_fds(&mut command, fds)?;
    if config.disk_gib > 0 && !matches!(config.memory, Memory::TemplateFile { .. }) {
        // The disk file can never grow past its budget (a template's engine writes its RAM file too,
        // and has only a placeholder disk). A write past it fails and the guest sees an I/O error;
        // the supervisor then stops the VM with the reason.
        limit_file_size(&mut command, crate::disk::host_budget(config.disk_gib));
    }
    if let Some(user) = user {
        let mut groups = vec![user.gid];
        if config.accelerator == Accelerator::Kvm {
            groups.extend(kvm_gid());
        }
        become_user(&mut command, user, groups);
    }
    // After the privilege drop, which clears the parent-death signal.
    fsutil::die_with_parent(&mut command, libc::SIGKILL);
    Ok(Launch {
        command,
        nic,
        incoming,
    })
}

/// Caps the size of every file the engine writes at `bytes` (`RLIMIT_FSIZE`); a write past it fails
/// with `EFBIG` instead of killing the engine (`SIGXFSZ` ignored).
fn limit_file_size(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit and signal are async-signal-safe and take no pointers into the heap.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0
                || libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes the engine process `user` (with `groups`) before it executes.
pub(crate) fn become_user(command: &mut Command, user: EngineUser, groups: Vec<u32>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setgroups, setresgid and setresuid are async-signal-safe, and nothing is allocated
    // between fork and exec: `groups` was built before and is only read.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(user.gid, user.gid, user.gid) != 0
                || libc::setresuid(user.uid, user.uid, user.uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
