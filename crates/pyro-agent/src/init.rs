//! PID 1 duties at boot: pseudo file systems, kernel modules, the read-only base image.

use std::time::Duration;

use crate::{disks, log, sys};

/// Where the environment's base image is mounted (read-only, shared by every VM).
pub const BASE_MOUNT: &str = "/base";

pub fn boot() -> Result<(), String> {
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    let mounts: [(&str, &str, &str, libc::c_ulong, &str); 5] = [
        ("proc", "/proc", "proc", nosuid_nodev | libc::MS_NOEXEC, ""),
        ("sysfs", "/sys", "sysfs", nosuid_nodev | libc::MS_NOEXEC, ""),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        ("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755"),
        ("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777"),
    ];
    for (source, target, fstype, flags, data) in mounts {
        if !sys::is_mount_point(target) {
            sys::mount(source, target, fstype, flags, data).map_err(|e| e.to_string())?;
        }
    }
    load_modules()?;
    // The same for every VM, so done before a template is saved rather than at each activation.
    crate::net::loopback_up().map_err(|e| format!("cannot bring up lo: {e}"))?;
    let base = disks::wait_for_label(pyro_proto::BASE_DISK_LABEL, Duration::from_secs(20))?;
    sys::mount(&base, BASE_MOUNT, "ext4", libc::MS_RDONLY, "noload").map_err(|e| e.to_string())?;
    log(&format!("base image {base} mounted read-only"));
    Ok(())
}

/// Loads the modules listed, in dependency order, in `/lib/modules/order`.
fn load_modules() -> Result<(), String> {
    let Ok(order) = std::fs::read_to_string("/lib/modules/order") else {
        return Ok(());
    };
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = std::path::Path::new("/lib/modules").join(format!("{name}.ko"));
        sys::load_module(&path).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Flushes the disks and powers the VM off. Never returns.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 the agent may power the machine off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
