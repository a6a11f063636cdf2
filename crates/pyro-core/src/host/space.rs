//! Host disk space. Work that makes files grow (a new VM disk, a booted VM writing to its disk, a
//! snapshot keeping old data) is refused when it would leave less than a floor free, so a busy
//! sandbox never fills the file system the user's own work lives on.

use std::path::Path;

use crate::{Error, ErrorKind, Result};

/// Free space pyro leaves on the state dir's file system, in MiB, unless [`FLOOR_ENV`] says otherwise.
pub const DEFAULT_FLOOR_MIB: u64 = 1024;
pub const FLOOR_ENV: &str = "PYRO_MIN_FREE_MIB";

/// Bytes available to this user in the file system holding `dir` (`None` when it cannot be read).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a plain struct for a valid path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid buffer, both alive for the call.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The floor for VM disks: [`FLOOR_ENV`] in MiB, else [`DEFAULT_FLOOR_MIB`].
pub fn floor_bytes() -> u64 {
    std::env::var(FLOOR_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_FLOOR_MIB)
        << 20
}

/// Refuses `what` when taking `needed` bytes in `dir` would leave less than `floor` free.
pub fn ensure(dir: &Path, what: &str, needed: u64, floor: u64) -> Result<()> {
    let Some(free) = free_bytes(dir) else {
        return Ok(());
    };
    if free >= needed.saturating_add(floor) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "not enough free disk space in {}: {what} needs about {} MiB and pyro leaves {} MiB free; {} MiB are free",
            dir.display(),
            needed.div_ceil(1 << 20),
            floor >> 20,
            free >> 20
        ),
    )
    .with_hint(format!(
        "free some space (delete workspaces or snapshots you no longer need), or set {FLOOR_ENV} to a lower floor in MiB"
    )))
}
