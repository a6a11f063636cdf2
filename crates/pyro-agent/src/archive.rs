//! Tar archives in and out of `/workspace`, confined like every other file operation.
//!
//! Extraction refuses absolute names, `..`, hard links, device nodes and symlinks that would point
//! outside the workspace. Export never follows symlinks.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use pyro_proto::archive_rules::{link_stays_inside, member_path};
use pyro_proto::{ArchiveSummary, ArtifactType};

use crate::confine::{self, absolute, describe, Beneath};
use crate::files::{artifact_type, walk_tree};

fn refuse(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Directory descriptors already opened during one extraction, by relative path.
struct Dirs<'a> {
    root: &'a Beneath,
    open: HashMap<String, OwnedFd>,
}

impl Dirs<'_> {
    fn get(&mut self, rel: &str) -> io::Result<RawFd> {
        if !self.open.contains_key(rel) {
            let dir = self.root.mkdirs(rel).map_err(|e| describe(e, rel))?;
            self.open.insert(rel.to_string(), dir);
        }
        Ok(self.open[rel].as_raw_fd())
    }
}

/// Extracts a tar stream into `destination` (created if missing).
pub fn extract(destination: &str, reader: impl Read) -> io::Result<ArchiveSummary> {
    let root = Beneath::workspace()?;
    let dest = confine::relative(destination)?;
    let mut dirs = Dirs {
        root: &root,
        open: HashMap::new(),
    };
    dirs.get(&dest)?;
    let mut archive = tar::Archive::new(reader);
    let (mut entry_count, mut bytes_written) = (0u64, 0u64);

    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_path = entry.path()?.into_owned();
        let member = member_path(&raw_path)?;
        entry_count += 1;
        if member.is_empty() {
            continue;
        }
        let target = if dest.is_empty() {
            member.clone()
        } else {
            format!("{dest}/{member}")
        };
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                let dir = dirs.get(&target)?;
                // The cached descriptor is O_PATH, which fchmod refuses: open the directory itself.
                let opened = confine::open_beneath(dir, "", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                // SAFETY: fchmod on a descriptor we own.
                unsafe { libc::fchmod(opened.as_raw_fd(), mode) };
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let (parent, name) = split(&target);
                let dir = dirs.get(parent)?;
                let file = create_file(dir, name, mode).map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP | libc::EISDIR) => {
                        refuse(format!("file conflicts with existing path: {member}"))
                    }
                    _ => e,
                })?;
                // Streamed: a member may be larger than the guest's memory.
                let mut writer = io::BufWriter::with_capacity(256 << 10, file);
                bytes_written += io::copy(&mut entry, &mut writer)?;
                writer.flush()?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !link_stays_inside(&member, &link) {
                    return Err(refuse(format!("symlink {member} escapes the workspace")));
                }
                let (parent, name) = split(&target);
                let dir = dirs.get(parent)?;
                if let Ok(st) = confine::lstat_at(dir, name) {
                    if !confine::is_symlink(&st) {
                        return Err(refuse(format!(
                            "symlink conflicts with existing path: {member}"
                        )));
                    }
                    let c_name = CString::new(name).map_err(|_| refuse("NUL in name".into()))?;
                    // SAFETY: valid fd and name.
                    unsafe { libc::unlinkat(dir, c_name.as_ptr(), 0) };
                }
                let (c_link, c_name) = (
                    CString::new(link).map_err(|_| refuse("NUL in link".into()))?,
                    CString::new(name).map_err(|_| refuse("NUL in name".into()))?,
                );
                // SAFETY: valid strings and fd.
                if unsafe { libc::symlinkat(c_link.as_ptr(), dir.as_raw_fd(), c_name.as_ptr()) } < 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            tar::EntryType::Link => {
                return Err(refuse(format!(
                    "hard links are not allowed in workspace archives: {member}"
                )))
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            _ => return Err(refuse(format!("unsupported archive member type: {member}"))),
        }
    }
    Ok(ArchiveSummary {
        path: absolute(&dest),
        artifact_type: ArtifactType::Directory,
        entry_count,
        bytes_written,
    })
}

/// Creates `name` in `dir` with exactly `mode`, or truncates an existing regular file and sets its mode.
fn create_file(dir: RawFd, name: &str, mode: u32) -> io::Result<File> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW;
    match confine::open_beneath(dir, name, flags | libc::O_EXCL, mode) {
        Ok(fd) => {
            let file = File::from(fd);
            if mode & 0o022 != 0 {
                // SAFETY: fchmod on a descriptor we own; the umask does not apply to it.
                unsafe { libc::fchmod(file.as_raw_fd(), mode) };
            }
            Ok(file)
        }
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
            let file = File::from(confine::open_beneath(
                dir,
                name,
                flags | libc::O_TRUNC,
                mode,
            )?);
            // SAFETY: fchmod on a descriptor we own.
            unsafe { libc::fchmod(file.as_raw_fd(), mode) };
            Ok(file)
        }
        Err(err) => Err(err),
    }
}

fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// Counts bytes and refuses to grow past a limit.
struct Bounded<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(refuse(format!(
                "the export is larger than the {}-byte limit",
                self.limit
            )));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `path` as a tar archive: a directory's contents, or a single file or symlink by its name.
pub fn export(path: &str, writer: impl Write, max_bytes: u64) -> io::Result<ArchiveSummary> {
    export_from(Beneath::workspace()?, path, writer, max_bytes)
}

/// [`export`] of a path under another root (a disk snapshot's `/workspace`).
pub fn export_from(
    root: Beneath,
    path: &str,
    writer: impl Write,
    max_bytes: u64,
) -> io::Result<ArchiveSummary> {
    let rel = confine::relative(path)?;
    let st = root.lstat(&rel)?;
    let kind = artifact_type(&st);
    let mut builder = tar::Builder::new(Bounded {
        inner: writer,
        written: 0,
        limit: max_bytes,
    });
    builder.follow_symlinks(false);
    // Sparse members (GNU sparse headers) are not accepted on the other side: write files whole.
    builder.sparse(false);
    let mut summary = ArchiveSummary {
        path: absolute(&rel),
        artifact_type: kind,
        entry_count: 0,
        bytes_written: 0,
    };
    match kind {
        ArtifactType::Directory => {
            let dir = root
                .open(
                    &rel,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| describe(e, &rel))?;
            walk_tree(
                dir.as_raw_fd(),
                "",
                true,
                usize::MAX,
                &mut 0,
                &mut |dir, name, member, st| {
                    let kind = artifact_type(st);
                    if kind == ArtifactType::Other {
                        return Ok(());
                    }
                    builder.append_path_with_name(format!("/proc/self/fd/{dir}/{name}"), member)?;
                    summary.entry_count += 1;
                    if kind == ArtifactType::File {
                        summary.bytes_written += st.st_size as u64;
                    }
                    Ok(())
                },
            )?;
        }
        ArtifactType::File | ArtifactType::Symlink => {
            let (dir, name) = root.parent(&rel)?;
            let on_disk = format!("/proc/self/fd/{}/{name}", dir.as_raw_fd());
            builder.append_path_with_name(&on_disk, &name)?;
            summary.entry_count = 1;
            if kind == ArtifactType::File {
                summary.bytes_written = st.st_size as u64;
            }
        }
        ArtifactType::Other => {
            return Err(refuse(format!(
                "{} is not a file, directory or symlink",
                absolute(&rel)
            )))
        }
    }
    builder.into_inner()?.flush()?;
    Ok(summary)
}
