//! Paths under `/workspace`, resolved by the kernel without ever leaving it.
//!
//! Every lookup starts from a directory descriptor of the workspace and uses `openat2` with
//! `RESOLVE_BENEATH`: `..`, absolute symlinks and symlinks that point outside fail instead of escaping.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The workspace as commands see it.
pub const WORKSPACE: &str = "/workspace";
/// The same directory as the agent reaches it (the VM's disk, outside the overlay root).
const WORKSPACE_ON_DISK: &str = "/rw/workspace";

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// `/workspace/a/b` or `a/b` → `a/b`; `/workspace` → `` (the root itself). `..` is never accepted.
pub fn relative(path: &str) -> io::Result<String> {
    let trimmed = path.trim();
    if trimmed.is_empty() {
        return Err(invalid("workspace path must not be empty".into()));
    }
    if trimmed.contains('\0') {
        return Err(invalid("workspace path must not contain NUL bytes".into()));
    }
    let rest = if let Some(rest) = trimmed.strip_prefix(WORKSPACE) {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(invalid(format!(
                "workspace path must stay inside /workspace: {path}"
            )));
        }
        rest
    } else if trimmed.starts_with('/') {
        return Err(invalid(format!(
            "workspace path must stay inside /workspace: {path}"
        )));
    } else {
        trimmed
    };
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => continue,
            ".." => {
                return Err(invalid(format!(
                    "workspace path must stay inside /workspace: {path}"
                )))
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// The absolute form of a relative workspace path.
pub fn absolute(rel: &str) -> String {
    if rel.is_empty() {
        WORKSPACE.to_string()
    } else {
        format!("{WORKSPACE}/{rel}")
    }
}

fn cstring(text: &str) -> io::Result<CString> {
    CString::new(text).map_err(|_| invalid("path contains a NUL byte".into()))
}

/// A directory that lookups may not leave.
pub struct Beneath {
    root: OwnedFd,
}

impl Beneath {
    pub fn workspace() -> io::Result<Beneath> {
        Beneath::at(WORKSPACE_ON_DISK)
    }

    /// A root elsewhere: the `/workspace` of a mounted disk snapshot.
    pub fn at(dir: &str) -> io::Result<Beneath> {
        let path = cstring(dir)?;
        // SAFETY: a valid path; the result is checked.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the workspace is not mounted ({})",
                    io::Error::last_os_error()
                ),
            ));
        }
        Ok(Beneath {
            // SAFETY: fd is a fresh descriptor we own.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Opens `rel` (relative to the root) with `openat2(RESOLVE_BENEATH)`.
    pub fn open(&self, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        open_beneath(self.root.as_raw_fd(), rel, flags, mode)
    }

    /// The directory holding `rel` (opened beneath the root) and the final name.
    pub fn parent(&self, rel: &str) -> io::Result<(OwnedFd, String)> {
        let (dir, name) = match rel.rsplit_once('/') {
            Some((dir, name)) => (dir, name),
            None => ("", rel),
        };
        if name.is_empty() {
            return Err(invalid("the workspace root has no parent".into()));
        }
        let fd = self
            .open(dir, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| describe(e, dir))?;
        Ok((fd, name.to_string()))
    }

    /// `lstat` of `rel`: the final component is not followed.
    pub fn lstat(&self, rel: &str) -> io::Result<libc::stat> {
        if rel.is_empty() {
            return fstat(self.root.as_raw_fd());
        }
        let (dir, name) = self.parent(rel)?;
        lstat_at(dir.as_raw_fd(), &name).map_err(|e| describe(e, rel))
    }

    /// Creates `rel` and its missing parents as directories; returns the directory.
    pub fn mkdirs(&self, rel: &str) -> io::Result<OwnedFd> {
        let mut current = self.open("", libc::O_PATH | libc::O_DIRECTORY, 0)?;
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            let name = cstring(part)?;
            // SAFETY: valid fd and name.
            let ret = unsafe { libc::mkdirat(current.as_raw_fd(), name.as_ptr(), 0o755) };
            if ret < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EEXIST) {
                    return Err(err);
                }
            }
            current = open_beneath(current.as_raw_fd(), part, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
                .map_err(|e| match lstat_at(current.as_raw_fd(), part) {
                    Ok(st) if is_symlink(&st) => invalid(format!(
                        "{} is a symlink; writes never go through symlinks (it may lead outside /workspace)",
                        absolute(&prefix_of(rel, part))
                    )),
                    _ => describe(e, rel),
                })?;
        }
        Ok(current)
    }
}

/// The part of `rel` up to and including the component `part`.
fn prefix_of(rel: &str, part: &str) -> String {
    let mut prefix = Vec::new();
    for component in rel.split('/').filter(|p| !p.is_empty()) {
        prefix.push(component);
        if component == part {
            break;
        }
    }
    prefix.join("/")
}

pub fn open_beneath(dir: RawFd, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let path = cstring(if rel.is_empty() { "." } else { rel })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid dirfd, path and a correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    // SAFETY: fd is a fresh descriptor the call above returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat buffer for fstat to fill.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

pub fn lstat_at(dir: RawFd, name: &str) -> io::Result<libc::stat> {
    let name = cstring(name)?;
    // SAFETY: stat is plain data, filled by fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a NUL-terminated string and `st` a valid buffer, both alive for the call.
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

pub fn readlink_at(dir: RawFd, name: &str) -> io::Result<String> {
    let name = cstring(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Names in a directory, sorted.
pub fn list_dir(dir: RawFd) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/self/fd/{dir}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_file(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

pub fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// Turns kernel errors from a confined lookup into messages about the workspace path.
pub fn describe(err: io::Error, rel: &str) -> io::Error {
    let path = absolute(rel);
    match err.raw_os_error() {
        Some(libc::EXDEV) => invalid(format!(
            "{path} resolves outside /workspace (through a symlink)"
        )),
        Some(libc::ELOOP) => invalid(format!(
            "{path} goes through a symlink that cannot be followed here"
        )),
        Some(libc::ENOENT) => io::Error::new(
            io::ErrorKind::NotFound,
            format!("workspace path does not exist: {path}"),
        ),
        Some(libc::ENOTDIR) => invalid(format!("a parent of {path} is not a directory")),
        _ => io::Error::new(err.kind(), format!("{path}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(relative("/workspace").unwrap(), "");
        assert_eq!(relative("/workspace/a//b/./c").unwrap(), "a/b/c");
        assert_eq!(relative("src/main.rs").unwrap(), "src/main.rs");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "/workspace/../etc",
            "a/../../b",
            "/workspacex/y",
        ] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }
}
