//! Unix sockets at paths of any length.
//!
//! `sockaddr_un` holds at most 107 path bytes. A longer path is reached through the directory's file
//! descriptor: `/proc/self/fd/<fd>/<name>` is short whatever the directory's own path.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

const MAX_SUN_PATH: usize = 107;

fn with_short_path<T>(path: &Path, op: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= MAX_SUN_PATH {
        return op(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path has no parent",
        ));
    };
    let dir_fd = File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(dir_fd.as_raw_fd().to_string())
        .join(name);
    op(&short)
}

/// Binds a listener at `path` with mode 0600.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    // SAFETY: umask only changes this process's file-creation mask; restored right after.
    let old = unsafe { libc::umask(0o177) };
    let result = with_short_path(path, |p| UnixListener::bind(p));
    // SAFETY: as above; puts the previous mask back. (The mask is process-wide: binding happens
    // where no other thread creates files at the same time.)
    unsafe { libc::umask(old) };
    result
}

pub fn connect(path: &Path) -> io::Result<UnixStream> {
    with_short_path(path, |p| UnixStream::connect(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn long_paths_bind_and_connect() {
        let base = tempfile::tempdir().unwrap();
        let deep = base
            .path()
            .join("d".repeat(60))
            .join("e".repeat(60))
            .join("f".repeat(40));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("s.sock");
        assert!(path.as_os_str().len() > 150);
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _client = connect(&path).unwrap();
        let _accepted = listener.accept().unwrap();
    }
}
