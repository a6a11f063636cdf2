//! Tar archives in and out of `/workspace`, confined like every other file operation.
//!
//! Extraction refuses absolute names, `..`, hard links, device nodes and symlinks that would point
//! outside the workspace. Export never follows symlinks.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use pyro_proto::archive_rules::{link_stays_inside, member_path};
use pyro_proto::{ArchiveSummary, ArtifactType};

use crate::confine::{self, absolute, describe, Beneath};
use crate::files::artifact_type;

fn refuse(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Extracts a tar stream into `destination` (created if missing).
pub fn extract(destination: &str, reader: impl Read) -> io::Result<ArchiveSummary> {
    let root = Beneath::workspace()?;
    let dest = confine::relative(destination)?;
    root.mkdirs(&dest).map_err(|e| describe(e, &dest))?;
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
                let dir = root.mkdirs(&target).map_err(|e| describe(e, &target))?;
                let fd = confine::open_beneath(
                    dir.as_raw_fd(),
                    "",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )?;
                // SAFETY: fchmod on an fd we own.
                unsafe { libc::fchmod(fd.as_raw_fd(), mode) };
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let (parent, name) = split(&target);
                let dir = root.mkdirs(parent).map_err(|e| describe(e, parent))?;
                if let Ok(st) = confine::lstat_at(dir.as_raw_fd(), name) {
                    if !confine::is_file(&st) {
                        return Err(refuse(format!(
                            "file conflicts with existing path: {member}"
                        )));
                    }
                }
                let fd = confine::open_beneath(
                    dir.as_raw_fd(),
                    name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
                    mode,
                )?;
                let mut file = File::from(fd);
                bytes_written += io::copy(&mut entry, &mut file)?;
                // SAFETY: fchmod on an fd we own.
                unsafe { libc::fchmod(file.as_raw_fd(), mode) };
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
                let dir = root.mkdirs(parent).map_err(|e| describe(e, parent))?;
                if let Ok(st) = confine::lstat_at(dir.as_raw_fd(), name) {
                    if !confine::is_symlink(&st) {
                        return Err(refuse(format!(
                            "symlink conflicts with existing path: {member}"
                        )));
                    }
                    let c_name = CString::new(name).map_err(|_| refuse("NUL in name".into()))?;
                    // SAFETY: valid fd and name.
                    unsafe { libc::unlinkat(dir.as_raw_fd(), c_name.as_ptr(), 0) };
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
    let root = Beneath::workspace()?;
    let rel = confine::relative(path)?;
    let st = root.lstat(&rel)?;
    let kind = artifact_type(&st);
    let mut builder = tar::Builder::new(Bounded {
        inner: writer,
        written: 0,
        limit: max_bytes,
    });
    builder.follow_symlinks(false);
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
            append_dir(&mut builder, dir.as_raw_fd(), "", &mut summary)?;
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

fn append_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: i32,
    rel: &str,
    summary: &mut ArchiveSummary,
) -> io::Result<()> {
    for name in confine::list_dir(dir)? {
        let member = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(st) = confine::lstat_at(dir, &name) else {
            continue;
        };
        let kind = artifact_type(&st);
        if kind == ArtifactType::Other {
            continue;
        }
        let on_disk = format!("/proc/self/fd/{dir}/{name}");
        builder.append_path_with_name(&on_disk, &member)?;
        summary.entry_count += 1;
        if kind == ArtifactType::File {
            summary.bytes_written += st.st_size as u64;
        }
        if kind == ArtifactType::Directory {
            let sub = confine::open_beneath(
                dir,
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            append_dir(builder, sub.as_raw_fd(), &member, summary)?;
        }
    }
    Ok(())
}
