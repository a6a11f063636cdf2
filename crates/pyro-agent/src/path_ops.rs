//! Operations on one path under `/workspace`: stat, make a directory, remove (a tree too), rename.
//! Every lookup stays beneath `/workspace` and no symlink is followed: a link is what is stat'ed,
//! removed or renamed, never where it leads.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use pyro_proto::FileEntry;

use crate::confine::{self, absolute, describe, Beneath};
use crate::files::entry;

/// How deep a removed tree may be.
const MAX_DEPTH: usize = 256;

fn cname(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn refuse_root(rel: &str, what: &str) -> io::Result<()> {
    if rel.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot {what} /workspace itself; give a path under it"),
        ));
    }
    Ok(())
}

/// The entry of `path` itself (a symlink's own).
pub fn stat(path: &str) -> io::Result<FileEntry> {
    let root = Beneath::workspace()?;
    let rel = confine::relative(path)?;
    if rel.is_empty() {
        let st = root.lstat("")?;
        let mut root_entry = entry(-1, "", "", &st);
        root_entry.link_target = None;
        return Ok(root_entry);
    }
    let (dir, name) = root.parent(&rel)?;
    let st = confine::lstat_at(dir.as_raw_fd(), &name).map_err(|e| describe(e, &rel))?;
    Ok(entry(dir.as_raw_fd(), &name, &rel, &st))
}

/// Makes `path` and its missing parents; whether it was made (`false`: a directory was there).
pub fn make_dir(path: &str) -> io::Result<(FileEntry, bool)> {
    let root = Beneath::workspace()?;
    let rel = confine::relative(path)?;
    refuse_root(&rel, "make")?;
    let existed = match root.lstat(&rel) {
        Ok(st) if confine::is_dir(&st) => true,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", absolute(&rel)),
            ))
        }
        Err(_) => false,
    };
    root.mkdirs(&rel)?;
    Ok((stat(&rel)?, !existed))
}

/// Removes `path`: a file or link, or a directory with everything in it.
pub fn remove(path: &str) -> io::Result<()> {
    let root = Beneath::workspace()?;
    let rel = confine::relative(path)?;
    refuse_root(&rel, "remove")?;
    let (dir, name) = root.parent(&rel)?;
    remove_at(dir.as_raw_fd(), &name, 0).map_err(|e| describe(e, &rel))
}

fn remove_at(dir: RawFd, name: &str, depth: usize) -> io::Result<()> {
    let st = confine::lstat_at(dir, name)?;
    let c_name = cname(name)?;
    if confine::is_dir(&st) {
        if depth >= MAX_DEPTH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the tree is deeper than {MAX_DEPTH} levels"),
            ));
        }
        let inner: OwnedFd = confine::open_beneath(
            dir,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        for child in confine::list_dir(inner.as_raw_fd())? {
            remove_at(inner.as_raw_fd(), &child, depth + 1)?;
        }
        // SAFETY: valid fd and name.
        if unsafe { libc::unlinkat(dir, c_name.as_ptr(), libc::AT_REMOVEDIR) } < 0 {
            return Err(io::Error::last_os_error());
        }
    } else {
        // SAFETY: valid fd and name.
        if unsafe { libc::unlinkat(dir, c_name.as_ptr(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Renames `from` to `to` (a file there is replaced), making `to`'s missing parents.
pub fn rename(from: &str, to: &str) -> io::Result<FileEntry> {
    let root = Beneath::workspace()?;
    let from_rel = confine::relative(from)?;
    let to_rel = confine::relative(to)?;
    refuse_root(&from_rel, "move")?;
    refuse_root(&to_rel, "replace")?;
    let (from_dir, from_name) = root.parent(&from_rel)?;
    confine::lstat_at(from_dir.as_raw_fd(), &from_name).map_err(|e| describe(e, &from_rel))?;
    let to_parent = to_rel.rsplit_once('/').map_or("", |(dir, _)| dir);
    root.mkdirs(to_parent)?;
    let (to_dir, to_name) = root.parent(&to_rel)?;
    let (a, b) = (cname(&from_name)?, cname(&to_name)?);
    // SAFETY: valid fds and names.
    if unsafe {
        libc::renameat(
            from_dir.as_raw_fd(),
            a.as_ptr(),
            to_dir.as_raw_fd(),
            b.as_ptr(),
        )
    } < 0
    {
        return Err(describe(io::Error::last_os_error(), &from_rel));
    }
    stat(&to_rel)
}
