//! Reading a disk snapshot's `/workspace`. The host attaches the snapshot, read-only, to the VM's
//! third drive (serial [`pyro_proto::VIEW_DISK_SERIAL`]) for the length of one request; the agent
//! mounts it where commands cannot see it (`ro,noload`: a snapshot is a clean file system, and
//! nothing is written to it), exports its `/workspace` as a tar archive and unmounts it.

use std::io::{self, Write};
use std::os::fd::AsRawFd;

use pyro_proto::ArchiveSummary;

use crate::confine::Beneath;
use crate::{archive, disks, sys};

/// Outside the commands' root: only the agent sees it.
const VIEW_MOUNT: &str = "/run/pyro-view";
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// One reader of the drive at a time (the host serialises too; the agent does not rely on it).
static IN_USE: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn export(path: &str, writer: impl Write, max_bytes: u64) -> io::Result<ArchiveSummary> {
    let _one = IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    let device = disks::find_by_serial(pyro_proto::VIEW_DISK_SERIAL).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "this VM has no snapshot drive (it was started by an older pyro)",
        )
    })?;
    // Pages cached from whatever the drive showed before belong to another disk: drop them.
    drop_cached(&device)?;
    std::fs::create_dir_all(VIEW_MOUNT)?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys::mount(&device, VIEW_MOUNT, "ext4", flags, "noload")?;
    let exported = Beneath::at(&format!("{VIEW_MOUNT}/workspace"))
        .and_then(|root| archive::export_from(root, path, writer, max_bytes));
    let unmounted = sys::umount(VIEW_MOUNT);
    let _ = drop_cached(&device);
    let summary = exported?;
    unmounted?;
    Ok(summary)
}

fn drop_cached(device: &str) -> io::Result<()> {
    let dev = std::fs::File::open(device)?;
    sys::ioctl_ptr(
        dev.as_raw_fd(),
        BLKFLSBUF,
        std::ptr::null_mut(),
        "BLKFLSBUF",
    )
}
