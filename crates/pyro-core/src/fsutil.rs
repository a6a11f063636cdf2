//! File-system helpers: atomic writes, digests, advisory locks, and removal that never leaves its file
//! system (a build interrupted inside a chroot may leave `/proc` or `/dev` mounted under it).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Writes `contents` to `path` through a temporary file and a rename: readers see all or nothing, and
/// the data is on disk before the rename.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_via_rename(path, contents, true, None)
}

/// Like [`write_atomic`], the new file getting permission bits `mode` from the start (for files that
/// may hold secrets, which must never be readable by others, not even for a moment).
pub fn write_atomic_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    write_via_rename(path, contents, true, Some(mode))
}

/// Like [`write_atomic`] without waiting for the disk: for data that may be lost in a crash (logs).
pub fn write_replace(path: &Path, contents: &[u8]) -> Result<()> {
    write_via_rename(path, contents, false, None)
}

fn write_via_rename(path: &Path, contents: &[u8], durable: bool, mode: Option<u32>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        NEXT_TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let write = || -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut file = options.open(&tmp)?;
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        file.write_all(contents)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("write", path, e)
    })
}

/// Distinguishes temporary files of concurrent writers within one process.
static NEXT_TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Creates `path` and its missing parents, each new one private to the user (0700): everything pyro
/// keeps (disks, baselines, command output, templates) sits below such a directory.
pub fn create_dir_all(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

/// The mode of every directory pyro creates for itself.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// The file-creation mask the process started with, before [`restrict_umask`]; files pyro writes for
/// the user (exports) follow it, so they get the modes the user's own tools would give them.
static USER_UMASK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0o022);

/// Makes every file and socket this process (and the engine it starts) creates private to the user:
/// umask 077. Called first thing by the `pyro` binary.
pub fn restrict_umask() {
    // SAFETY: umask takes no pointers and cannot fail.
    let old = unsafe { libc::umask(0o077) };
    USER_UMASK.store(old as u32, std::sync::atomic::Ordering::Relaxed);
}

/// The user's own umask (see [`restrict_umask`]).
pub fn user_umask() -> u32 {
    USER_UMASK.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `command` with umask 022: tools that build what a guest sees (root file systems, clones)
/// must give its files their usual modes, whatever pyro's own mask.
pub fn with_guest_umask(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: umask is async-signal-safe and takes no pointers.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        })
    }
}

/// Tightens what older versions of pyro created with default modes: the given children of `dir` (the
/// state or cache root) become 0700 (directories) or 0600 (files). The root itself is left alone, as
/// the user may have pointed pyro at a directory it does not own; new roots are created 0700.
pub fn harden(dir: &Path, children: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    let set = |path: &Path, mode: u32| {
        if let Ok(meta) = fs::symlink_metadata(path) {
            if !meta.file_type().is_symlink() && meta.permissions().mode() & 0o777 != mode {
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
            }
        }
    };
    for child in children {
        let path = dir.join(child);
        let mode = if path.is_dir() {
            PRIVATE_DIR_MODE
        } else {
            0o600
        };
        set(&path, mode);
    }
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// An exclusive `flock` held until dropped. The kernel releases it when the holder dies.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for the lock.
    pub fn acquire(path: &Path) -> Result<FileLock> {
        Self::lock(path, true)?
            .ok_or_else(|| Error::internal("blocking flock returned without the lock"))
    }

    /// Takes the lock if free; `None` if someone holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        Self::lock(path, false)
    }

    fn lock(path: &Path, wait: bool) -> Result<Option<FileLock>> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open lock file", path, e))?;
        let op = if wait {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Some(FileLock { _file: file }));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => return Ok(None),
                _ => return Err(Error::io("lock", path, err)),
            }
        }
    }
}

/// Removes `path` and everything under it, but never descends into another file system: a mount point
/// found inside is detached first (lazily) and skipped if that fails.
pub fn remove_tree(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("inspect", path, e)),
    };
    if !meta.is_dir() {
        return fs::remove_file(path).map_err(|e| Error::io("remove", path, e));
    }
    remove_dir_on_device(path, meta.dev()).map_err(|e| Error::io("remove", path, e))
}

fn remove_dir_on_device(dir: &Path, dev: u64) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let child: PathBuf = entry.path();
        let meta = fs::symlink_metadata(&child)?;
        if meta.is_dir() {
            if meta.dev() != dev && !detach(&child) {
                continue;
            }
            remove_dir_on_device(&child, dev)?;
        } else {
            fs::remove_file(&child)?;
        }
    }
    fs::remove_dir(dir)
}

fn detach(mount_point: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(mount_point.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) == 0 }
}

/// The last `n` lines of a text file (empty if unreadable), for error messages.
pub fn tail_lines(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Makes the child receive `signal` when the thread that spawned it exits, so a helper process (QEMU, a
/// build step) never outlives the pyro process that started it.
pub fn die_with_parent(command: &mut std::process::Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and takes no pointers.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A random lowercase hex string of `bytes` random bytes, from the kernel.
/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("read", Path::new("/dev/urandom"), e))?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let held = FileLock::acquire(&path).unwrap();
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn remove_tree_removes_nested_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a");
        fs::create_dir_all(root.join("b/c")).unwrap();
        fs::write(root.join("b/c/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert!(Path::new("/etc").exists());
    }
}
