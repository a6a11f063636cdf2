//! Thin, checked wrappers over the system calls the agent needs.

use std::ffi::CString;
use std::io;
use std::path::Path;

fn cstring(value: &str) -> io::Result<CString> {
    CString::new(value)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn check(ret: libc::c_int, what: &str) -> io::Result<()> {
    if ret < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(())
}

pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    if std::fs::symlink_metadata(target).is_err() {
        std::fs::create_dir_all(target)?;
    }
    let (source_c, target_c, fstype_c, data_c) = (
        cstring(source)?,
        cstring(target)?,
        cstring(fstype)?,
        cstring(data)?,
    );
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            flags,
            data_c.as_ptr() as *const libc::c_void,
        )
    };
    check(ret, &format!("mount {fstype} {source} on {target}"))
}

pub fn umount(target: &str) -> io::Result<()> {
    let target_c = cstring(target)?;
    // SAFETY: a valid NUL-terminated path.
    let ret = unsafe { libc::umount2(target_c.as_ptr(), 0) };
    check(ret, &format!("umount {target}"))
}

/// Writes out everything of the file system that holds `path`, and waits for the device to have it.
pub fn syncfs(path: &str) -> io::Result<()> {
    let dir = std::fs::File::open(path)?;
    // SAFETY: the descriptor is open for the duration of the call.
    let ret = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    check(ret, &format!("syncfs {path}"))
}

/// Creates a character device node (the agent runs with every capability; commands do not).
pub fn mknod_char(path: &str, major: u32, minor: u32, mode: u32) -> io::Result<()> {
    let path_c = cstring(path)?;
    // SAFETY: a valid NUL-terminated path; makedev and mknod take plain integers besides.
    let ret = unsafe {
        libc::mknod(
            path_c.as_ptr(),
            libc::S_IFCHR | mode,
            libc::makedev(major, minor),
        )
    };
    check(ret, &format!("mknod {path}"))?;
    // The umask may have trimmed the mode.
    // SAFETY: a valid NUL-terminated path.
    let ret = unsafe { libc::chmod(path_c.as_ptr(), mode) };
    check(ret, &format!("chmod {path}"))
}

pub fn is_mount_point(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|mounts| {
            mounts
                .lines()
                .any(|line| line.split(' ').nth(1) == Some(path))
        })
        .unwrap_or(false)
}

pub fn ioctl_ptr(
    fd: libc::c_int,
    request: libc::c_ulong,
    arg: *mut libc::c_void,
    what: &str,
) -> io::Result<()> {
    // SAFETY: callers pass a pointer to a buffer of the size the request expects.
    check(unsafe { libc::ioctl(fd, request as _, arg) }, what)
}

pub fn set_wall_clock(unix_time_ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (unix_time_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_time_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec.
    check(
        unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) },
        "clock_settime",
    )
}

pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    check(
        unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) },
        "sethostname",
    )
}

pub fn load_module(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    let params = cstring("")?;
    // SAFETY: finit_module reads from a valid fd and a NUL-terminated parameter string.
    let ret =
        unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(io::Error::new(
            err.kind(),
            format!("load {}: {err}", path.display()),
        ));
    }
    Ok(())
}

pub fn uname_release() -> String {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid buffer for uname to fill.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
