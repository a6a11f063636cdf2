//! What a guest command may do. Commands run as root in the overlay root, but with a reduced set of
//! capabilities in the spirit of Docker's default, so that no command can reach the agent or the
//! kernel behind it:
//!
//! - kept: chown, dac_override, fowner, fsetid, kill, setgid, setuid, setpcap, setfcap,
//!   net_bind_service, net_raw, audit_write (what package managers, compilers and test runners use);
//! - gone, among others: sys_admin (mount, namespaces), sys_module (kernel modules), sys_rawio,
//!   sys_boot, sys_ptrace (so no command can read or trace PID 1, whose capabilities are a superset),
//!   mknod (so the agent's channel device, absent from the commands' `/dev`, cannot be recreated),
//!   sys_chroot (a chroot inside the overlay root could be climbed out of, to the agent's own root),
//!   net_admin, sys_time, sys_resource, bpf, perfmon.
//!
//! Dropped from the bounding set too, so no setuid program or file capability brings them back.

use std::io;

/// The capabilities a command keeps.
pub const KEPT: [u32; 12] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// The highest capability number the kernel may know (it refuses larger ones with EINVAL).
const CAP_LAST_POSSIBLE: u32 = 63;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability but [`KEPT`] from the calling process: bounding, ambient, effective,
/// permitted and inheritable sets. Only async-signal-safe calls: it runs between fork and exec.
pub fn drop_for_command() -> io::Result<()> {
    let kept = |cap: u32| KEPT.contains(&cap);
    for cap in 0..=CAP_LAST_POSSIBLE {
        if kept(cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(err);
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let mut mask = [0u32; 2];
    for cap in KEPT {
        mask[(cap / 32) as usize] |= 1 << (cap % 32);
    }
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [0, 1].map(|i| CapData {
        effective: mask[i],
        permitted: mask[i],
        inheritable: 0,
    });
    // SAFETY: capset takes a v3 header and two data words, which is what we pass.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Keeps other processes (commands) from reading or tracing the agent's memory, whatever their
/// capabilities: a non-dumpable process is reachable only with CAP_SYS_PTRACE.
pub fn protect_agent() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}
