//! Freezing the VM's disk while the host snapshots it, so the snapshot holds a clean file system
//! (journal flushed, nothing half-written) instead of a crash-consistent one.
//!
//! Writers in the guest wait while the disk is frozen. A freeze therefore always ends: the host
//! thaws it as soon as the snapshot is taken, and the agent thaws it by itself at the deadline the
//! host gave, should the host never come back.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

use crate::activate;

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` from `<linux/fs.h>`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// The longest a freeze may last before the agent thaws it by itself.
pub const MAX_FREEZE: Duration = Duration::from_secs(60);

struct Frozen {
    mount: File,
    generation: u64,
}

static FROZEN: Mutex<Option<Frozen>> = Mutex::new(None);
static GENERATION: Mutex<u64> = Mutex::new(0);

pub fn freeze(thaw_after: Duration) -> io::Result<()> {
    if !activate::is_active() {
        return Err(io::Error::other("the VM is not activated yet"));
    }
    // Written out before the freeze, so the frozen window holds only what comes in meanwhile.
    activate::flush_disk()?;
    let mut frozen = FROZEN.lock().unwrap_or_else(|p| p.into_inner());
    if frozen.is_some() {
        return Err(io::Error::other(
            "the disk is already frozen for a snapshot",
        ));
    }
    let mount = File::open(activate::DATA_MOUNT)?;
    ioctl(&mount, FIFREEZE).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => io::Error::other("the disk is already frozen for a snapshot"),
        _ => io::Error::new(e.kind(), format!("cannot freeze the VM's disk: {e}")),
    })?;
    let generation = {
        let mut counter = GENERATION.lock().unwrap_or_else(|p| p.into_inner());
        *counter += 1;
        *counter
    };
    *frozen = Some(Frozen { mount, generation });
    let thaw_after = thaw_after.min(MAX_FREEZE);
    std::thread::spawn(move || {
        std::thread::sleep(thaw_after);
        let _ = thaw_if(|f| f.generation == generation);
    });
    Ok(())
}

/// Thaws the disk; says whether a freeze was still in effect (false: its deadline had ended it).
pub fn thaw() -> io::Result<bool> {
    thaw_if(|_| true)
}

fn thaw_if(which: impl Fn(&Frozen) -> bool) -> io::Result<bool> {
    let mut frozen = FROZEN.lock().unwrap_or_else(|p| p.into_inner());
    match frozen.take() {
        Some(f) if which(&f) => match ioctl(&f.mount, FITHAW) {
            // EINVAL: not frozen (someone else thawed it), which is what was wanted.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot thaw the VM's disk: {e}"),
            )),
            Ok(()) => Ok(true),
        },
        other => {
            *frozen = other;
            Ok(false)
        }
    }
}

fn ioctl(file: &File, request: libc::c_ulong) -> io::Result<()> {
    // SAFETY: both requests take no argument; the descriptor is open for the call.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), request as _, 0) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
