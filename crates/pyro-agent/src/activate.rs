//! Activation: turns a ready guest (freshly booted, or restored from a memory snapshot) into one VM's own.
//!
//! Order matters: the clock and the entropy pool are fixed before anything else runs, then the VM's own
//! writable disk is mounted and the overlay root (lower: the base image, upper: the disk) is assembled.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use pyro_proto::{Activate, Activated};

use crate::{disks, init, log, net, sys};

/// The root directory commands run in once the VM is activated.
pub const ROOT: &str = "/newroot";
/// Where the VM's writable disk is mounted.
pub(crate) const DATA_MOUNT: &str = "/rw";

const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
const BLKFLSBUF: libc::c_ulong = 0x1261;

static ACTIVATED: Mutex<bool> = Mutex::new(false);

pub fn is_active() -> bool {
    *ACTIVATED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Puts every change to the VM's own disk on the disk image, so a VM killed right after pyro answers
/// loses nothing it acknowledged. Nothing to do before activation (no disk is mounted).
pub fn flush_disk() -> io::Result<()> {
    if !is_active() {
        return Ok(());
    }
    sys::syncfs(DATA_MOUNT)
}

pub fn activate(request: &Activate) -> io::Result<Activated> {
    let mut active = ACTIVATED.lock().unwrap_or_else(|p| p.into_inner());
    sys::set_wall_clock(request.unix_time_ns)?;
    add_entropy(&request.entropy_hex)?;
    if !*active {
        mount_root()?;
        set_identity(&request.hostname, &request.machine_id)?;
        if let Some(network) = &request.network {
            net::configure(network)?;
            let resolv: String = network
                .dns
                .iter()
                .map(|d| format!("nameserver {d}\n"))
                .collect();
            write_file(&format!("{ROOT}/etc/resolv.conf"), &resolv)?;
        }
        *active = true;
        log("activated");
    } else if current_hostname() != request.hostname {
        // A fork of another VM: it takes an identity of its own (its entropy is fresh above).
        set_identity(&request.hostname, &request.machine_id)?;
        log("re-identified");
    }
    Ok(Activated {
        boot_id: sys::boot_id(),
    })
}

/// Undoes `mount_root`: unmounts the command root and the VM's disk, so the host can put another
/// disk in its place. Nothing may hold them (a running command does): then it fails part-way, and
/// the host gives this VM up.
pub fn release_disk() -> io::Result<()> {
    let mut active = ACTIVATED.lock().unwrap_or_else(|p| p.into_inner());
    if !*active {
        return Ok(());
    }
    // The newest mounts first: `/proc/self/mountinfo` lists them in the order they were made.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let inside = |point: &str| point == ROOT || point.starts_with(&format!("{ROOT}/"));
    let points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| inside(point) || *point == DATA_MOUNT)
        .collect();
    for point in points.iter().rev() {
        sys::umount(point)?;
    }
    *active = false;
    log("disk released");
    Ok(())
}

fn add_entropy(entropy_hex: &str) -> io::Result<()> {
    let bytes = decode_hex(entropy_hex)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "entropy is not valid hex"))?;
    if bytes.len() < 16 || bytes.len() > 512 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "entropy must be 16 to 512 bytes",
        ));
    }
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len() + 3);
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(&bytes);
    info.resize(8 + bytes.len().div_ceil(4) * 4, 0);
    let urandom = fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    let fd = urandom.as_raw_fd();
    sys::ioctl_ptr(fd, RNDADDENTROPY, info.as_mut_ptr().cast(), "RNDADDENTROPY")?;
    sys::ioctl_ptr(fd, RNDRESEEDCRNG, std::ptr::null_mut(), "RNDRESEEDCRNG")
}

fn mount_root() -> io::Result<()> {
    let data = disks::wait_for_label(pyro_proto::DATA_DISK_LABEL, Duration::from_secs(10))
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
    // The guest may hold stale pages of this device from before a snapshot restore: drop them.
    {
        let dev = fs::File::open(&data)?;
        sys::ioctl_ptr(
            dev.as_raw_fd(),
            BLKFLSBUF,
            std::ptr::null_mut(),
            "BLKFLSBUF",
        )?;
    }
    sys::mount(&data, DATA_MOUNT, "ext4", libc::MS_NOATIME, "")?;
    for dir in ["root/upper", "root/work", "workspace"] {
        fs::create_dir_all(Path::new(DATA_MOUNT).join(dir))?;
    }
    let options = format!(
        "lowerdir={},upperdir={DATA_MOUNT}/root/upper,workdir={DATA_MOUNT}/root/work",
        init::BASE_MOUNT
    );
    sys::mount("overlay", ROOT, "overlay", 0, &options)?;
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    // Commands see a /dev of their own with only the usual character devices: no disks and no
    // agent channel (and without CAP_MKNOD they cannot make them). /sys is read-only.
    let mounts: [(&str, &str, &str, libc::c_ulong, &str); 7] = [
        ("proc", "proc", "proc", nosuid_nodev | libc::MS_NOEXEC, ""),
        (
            "sysfs",
            "sys",
            "sysfs",
            nosuid_nodev | libc::MS_NOEXEC | libc::MS_RDONLY,
            "",
        ),
        (
            "tmpfs",
            "dev",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "mode=0755",
        ),
        (
            "devpts",
            "dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=620",
        ),
        ("tmpfs", "dev/shm", "tmpfs", nosuid_nodev, "mode=1777"),
        ("tmpfs", "run", "tmpfs", nosuid_nodev, "mode=0755"),
        ("tmpfs", "tmp", "tmpfs", nosuid_nodev, "mode=1777"),
    ];
    for (source, target, fstype, flags, data) in mounts {
        if target == "dev/pts" {
            make_devices(&format!("{ROOT}/dev"))?;
        }
        sys::mount(source, &format!("{ROOT}/{target}"), fstype, flags, data)?;
    }
    protect_proc(&format!("{ROOT}/proc"))?;
    sys::mount(
        &format!("{DATA_MOUNT}/workspace"),
        &format!("{ROOT}/workspace"),
        "",
        libc::MS_BIND,
        "",
    )
}

/// The character devices commands get, as (name, major, minor, mode).
const DEVICES: [(&str, u32, u32, u32); 6] = [
    ("null", 1, 3, 0o666),
    ("zero", 1, 5, 0o666),
    ("full", 1, 7, 0o666),
    ("random", 1, 8, 0o666),
    ("urandom", 1, 9, 0o666),
    ("tty", 5, 0, 0o666),
];

fn make_devices(dev: &str) -> io::Result<()> {
    for (name, major, minor, mode) in DEVICES {
        sys::mknod_char(&format!("{dev}/{name}"), major, minor, mode)?;
    }
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, format!("{dev}/{name}"))?;
    }
    Ok(())
}

/// Kernel knobs under /proc are the kernel's, not a command's: `/proc/sys` (core_pattern and
/// modprobe would run a program outside the overlay root) becomes read-only, and the SysRq trigger
/// goes away.
fn protect_proc(proc: &str) -> io::Result<()> {
    let sys_dir = format!("{proc}/sys");
    sys::mount(&sys_dir, &sys_dir, "", libc::MS_BIND | libc::MS_REC, "")?;
    sys::mount(
        "",
        &sys_dir,
        "",
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        "",
    )?;
    let trigger = format!("{proc}/sysrq-trigger");
    sys::mount("/dev/null", &trigger, "", libc::MS_BIND, "")?;
    sys::mount(
        "",
        &trigger,
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        "",
    )
}

fn current_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn set_identity(hostname: &str, machine_id: &str) -> io::Result<()> {
    let valid_host = !hostname.is_empty()
        && hostname.len() <= 63
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let valid_id = machine_id.len() == 32 && machine_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid_host || !valid_id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid hostname or machine id",
        ));
    }
    sys::set_hostname(hostname)?;
    write_file(&format!("{ROOT}/etc/hostname"), &format!("{hostname}\n"))?;
    write_file(
        &format!("{ROOT}/etc/machine-id"),
        &format!("{machine_id}\n"),
    )?;
    write_file(
        &format!("{ROOT}/etc/hosts"),
        &format!("127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    )
}

fn write_file(path: &str, contents: &str) -> io::Result<()> {
    // Whatever the guest left there (a symlink, even a directory) is replaced, never followed.
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(_) => {}
    }
    fs::write(path, contents)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
