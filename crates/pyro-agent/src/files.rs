//! File operations under `/workspace`: list, read, write (staged, then put in place), manifest.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use pyro_proto::{
    ArtifactType, FileEntry, FileList, FileRead, FileWrite, Manifest, ManifestEntry, Written,
};
use sha2::{Digest, Sha256};

use crate::confine::{self, absolute, describe, Beneath};

/// Files being written are staged under names with this prefix, then renamed into place.
pub const STAGING_PREFIX: &str = ".pyro-write-";

pub fn artifact_type(st: &libc::stat) -> ArtifactType {
    if confine::is_dir(st) {
        ArtifactType::Directory
    } else if confine::is_file(st) {
        ArtifactType::File
    } else if confine::is_symlink(st) {
        ArtifactType::Symlink
    } else {
        ArtifactType::Other
    }
}

pub(crate) fn entry(dir: RawFd, name: &str, rel: &str, st: &libc::stat) -> FileEntry {
    let kind = artifact_type(st);
    FileEntry {
        path: absolute(rel),
        artifact_type: kind,
        size_bytes: if kind == ArtifactType::Directory {
            0
        } else {
            st.st_size as u64
        },
        mode: st.st_mode & 0o7777,
        link_target: (kind == ArtifactType::Symlink)
            .then(|| confine::readlink_at(dir, name).unwrap_or_default()),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

pub fn list(path: &str, recursive: bool, max_entries: u32) -> io::Result<FileList> {
    let root = Beneath::workspace()?;
    let rel = confine::relative(path)?;
    let st = root.lstat(&rel)?;
    let kind = artifact_type(&st);
    let mut entries = Vec::new();
    let mut truncated = false;
    if kind == ArtifactType::Directory {
        let dir = root
            .open(
                &rel,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(|e| describe(e, &rel))?;
        truncated = walk_tree(
            dir.as_raw_fd(),
            &rel,
            recursive,
            max_entries as usize,
            &mut 0,
            &mut |dir, name, child, st| {
                entries.push(entry(dir, name, child, st));
                Ok(())
            },
        )?;
    } else {
        let (dir, name) = root.parent(&rel)?;
        entries.push(entry(dir.as_raw_fd(), &name, &rel, &st));
    }
    Ok(FileList {
        path: absolute(&rel),
        artifact_type: kind,
        entries,
        truncated,
    })
}

/// Visits a directory tree in pre-order, sorted by name, never following symlinks, stopping after `max`
/// entries (then `Ok(true)`: truncated). `visit` gets the directory, the name, the relative path and the
/// entry's `lstat`.
pub fn walk_tree(
    dir: RawFd,
    rel: &str,
    recursive: bool,
    max: usize,
    seen: &mut usize,
    visit: &mut dyn FnMut(RawFd, &str, &str, &libc::stat) -> io::Result<()>,
) -> io::Result<bool> {
    for name in confine::list_dir(dir)? {
        if *seen >= max {
            return Ok(true);
        }
        let child = join(rel, &name);
        let Ok(st) = confine::lstat_at(dir, &name) else {
            continue;
        };
        *seen += 1;
        visit(dir, &name, &child, &st)?;
        if recursive && confine::is_dir(&st) {
            let sub = confine::open_beneath(
                dir,
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            if walk_tree(sub.as_raw_fd(), &child, recursive, max, seen, visit)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Reads `[offset, offset + max_bytes)` of a regular file.
pub fn read(path: &str, offset: u64, max_bytes: u64) -> io::Result<(FileRead, Vec<u8>)> {
    let root = Beneath::workspace()?;
    let rel = confine::relative(path)?;
    let fd = root
        // Non-blocking: opening a FIFO for reading would otherwise wait for a writer for ever.
        .open(&rel, libc::O_RDONLY | libc::O_NONBLOCK, 0)
        .map_err(|e| describe(e, &rel))?;
    let st = confine::fstat(fd.as_raw_fd())?;
    if !confine::is_file(&st) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", absolute(&rel)),
        ));
    }
    let size = st.st_size as u64;
    let want = max_bytes.min(size.saturating_sub(offset)) as usize;
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        // SAFETY: the buffer is valid for the remaining length.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[filled..].as_mut_ptr().cast(),
                want - filled,
                (offset + filled as u64) as libc::off_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        filled += n as usize;
    }
    buf.truncate(filled);
    Ok((
        FileRead {
            path: absolute(&rel),
            size_bytes: size,
            offset,
            bytes_returned: filled as u64,
        },
        buf,
    ))
}

/// Temporary names are unique within the agent, so concurrent writes never share one.
static NEXT_TEMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Staged {
    dir: OwnedFd,
    temp: CString,
    name: CString,
    rel: String,
}

/// Writes every file to a temporary name beside its target, then renames them all into place, then
/// deletes `deletes`. A failure while staging leaves nothing changed.
pub fn write_files(files: &[(FileWrite, Vec<u8>)], deletes: &[String]) -> io::Result<Written> {
    let root = Beneath::workspace()?;
    let mut staged: Vec<Staged> = Vec::new();
    let result = stage_all(&root, files, &mut staged).and_then(|()| check_deletes(&root, deletes));
    if let Err(err) = result {
        for s in &staged {
            // SAFETY: valid fd and name.
            unsafe { libc::unlinkat(s.dir.as_raw_fd(), s.temp.as_ptr(), 0) };
        }
        return Err(err);
    }
    let mut written = Vec::new();
    for s in &staged {
        // SAFETY: valid fds and names.
        if unsafe {
            libc::renameat(
                s.dir.as_raw_fd(),
                s.temp.as_ptr(),
                s.dir.as_raw_fd(),
                s.name.as_ptr(),
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        let name = s.name.to_string_lossy().into_owned();
        let st = confine::lstat_at(s.dir.as_raw_fd(), &name)?;
        written.push(entry(s.dir.as_raw_fd(), &name, &s.rel, &st));
    }
    let mut deleted = Vec::new();
    for path in deletes {
        let rel = confine::relative(path)?;
        let (dir, name) = root.parent(&rel)?;
        let c_name =
            CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid fd and name.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), c_name.as_ptr(), 0) } < 0 {
            return Err(describe(io::Error::last_os_error(), &rel));
        }
        deleted.push(absolute(&rel));
    }
    Ok(Written {
        files: written,
        deleted,
    })
}

fn stage_all(
    root: &Beneath,
    files: &[(FileWrite, Vec<u8>)],
    staged: &mut Vec<Staged>,
) -> io::Result<()> {
    for (spec, content) in files {
        let rel = confine::relative(&spec.path)?;
        if rel.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot write to /workspace itself",
            ));
        }
        let (parent_rel, name) = match rel.rsplit_once('/') {
            Some((dir, name)) => (dir.to_string(), name.to_string()),
            None => (String::new(), rel.clone()),
        };
        let dir = root
            .mkdirs(&parent_rel)
            .map_err(|e| describe(e, &parent_rel))?;
        let existing = confine::lstat_at(dir.as_raw_fd(), &name).ok();
        if let Some(st) = &existing {
            if !confine::is_file(st) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} exists and is not a regular file", absolute(&rel)),
                ));
            }
        }
        let mode = spec
            .mode
            .or(existing.map(|st| st.st_mode & 0o7777))
            .unwrap_or(0o644);
        let temp = format!(
            "{STAGING_PREFIX}{}",
            NEXT_TEMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let fd = confine::open_beneath(
            dir.as_raw_fd(),
            &temp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
            mode,
        )?;
        let c_temp =
            CString::new(temp).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let c_name =
            CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        staged.push(Staged {
            dir: dir.try_clone()?,
            temp: c_temp,
            name: c_name,
            rel: rel.clone(),
        });
        let mut file = File::from(fd);
        file.write_all(content)?;
        // SAFETY: fchmod on an fd we own; applies the mode regardless of the umask.
        unsafe { libc::fchmod(file.as_raw_fd(), mode) };
    }
    Ok(())
}

fn check_deletes(root: &Beneath, deletes: &[String]) -> io::Result<()> {
    for path in deletes {
        let rel = confine::relative(path)?;
        let st = root.lstat(&rel)?;
        if confine::is_dir(&st) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a directory", absolute(&rel)),
            ));
        }
    }
    Ok(())
}

/// Every entry under `path` (relative names), files with their sha256.
pub fn manifest(path: &str, max_entries: u32) -> io::Result<Manifest> {
    let root = Beneath::workspace()?;
    let rel = confine::relative(path)?;
    let dir = root
        .open(
            &rel,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| describe(e, &rel))?;
    let mut entries = Vec::new();
    let truncated = walk_tree(
        dir.as_raw_fd(),
        "",
        true,
        max_entries as usize,
        &mut 0,
        &mut |dir, name, child, st| {
            let kind = artifact_type(st);
            let (sha256, link_target) = match kind {
                ArtifactType::File => (Some(hash_file(dir, name)?), None),
                ArtifactType::Symlink => (None, Some(confine::readlink_at(dir, name)?)),
                _ => (None, None),
            };
            entries.push(ManifestEntry {
                path: child.to_string(),
                artifact_type: kind,
                mode: st.st_mode & 0o7777,
                size_bytes: if kind == ArtifactType::File {
                    st.st_size as u64
                } else {
                    0
                },
                sha256,
                link_target,
            });
            Ok(())
        },
    )?;
    Ok(Manifest { entries, truncated })
}

fn hash_file(dir: RawFd, name: &str) -> io::Result<String> {
    let fd = confine::open_beneath(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
    let mut file = File::from(fd);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
