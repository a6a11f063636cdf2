//! What `diff` and `summary` compare with: the baseline (the seed, `baseline.tar`), or a named snapshot
//! (`--since NAME`). A snapshot's `/workspace` is read once, by the guest, from the snapshot attached
//! read-only to the VM's snapshot drive, and kept as an archive beside the baseline: a snapshot never
//! changes, so the archive is reused until the snapshot is deleted or the VM boots again.
//!
//! The archive comes from the guest, so it is held to the export rules: capped in bytes, its headers
//! checked before any tar reader sees it; and it is dropped at every boot (see [`forget_all`]).

use std::path::{Path, PathBuf};

use pyro_proto::{Reply, Request};

use super::lifecycle::{workspace_dir, BASELINE};
use super::{archive, extract, snapshots, validate};
use crate::agent_client::{self, AgentCall};
use crate::supervisor::protocol::ClientRequest;
use crate::{disk, fsutil, Error, Result};

/// The tree a diff compares with.
pub struct Base {
    /// `baseline` or the snapshot's name.
    pub label: String,
    pub archive: PathBuf,
    /// Where its manifest is cached.
    pub manifest_cache: PathBuf,
}

const TREES: &str = "snapshot-trees";

/// The base for `since` (`None` or `baseline`: the baseline) of the started workspace `id`, whose VM
/// is in `vm_dir`.
pub async fn resolve(
    dirs: &crate::Dirs,
    id: &str,
    vm_dir: &Path,
    since: Option<&str>,
) -> Result<Base> {
    let wdir = workspace_dir(dirs, id);
    let name = match since.map(str::trim) {
        None | Some(disk::BASELINE) => {
            return Ok(Base {
                label: disk::BASELINE.into(),
                archive: wdir.join(BASELINE),
                manifest_cache: wdir.join("baseline.manifest.json"),
            })
        }
        Some(name) => snapshots::name(name)?,
    };
    // One reader of the snapshot drive per workspace, and no snapshot deleted while it is read.
    let _view = view_lock(&wdir)?;
    let snapshot = snapshots::find(vm_dir, id, &name)?;
    let trees = wdir.join(TREES);
    fsutil::create_dir_all(&trees)?;
    let stem = format!("{name}@{}", snapshot.created_at_ms);
    let base = Base {
        label: name.clone(),
        archive: trees.join(format!("{stem}.tar")),
        manifest_cache: trees.join(format!("{stem}.manifest.json")),
    };
    if !base.archive.exists() {
        forget(&wdir, &name);
        fetch(vm_dir, &name, &base.archive).await?;
    }
    Ok(base)
}

/// Held while the snapshot drive is in use, and while a snapshot is deleted.
pub fn view_lock(wdir: &Path) -> Result<fsutil::FileLock> {
    let path = wdir.join("view.lock");
    tokio::task::block_in_place(|| fsutil::FileLock::acquire(&path))
}

/// Drops every kept tree. The guest wrote them: they do not outlive the boot that read them, so a
/// guest compromised then cannot hide changes from diffs after a reset or a restart.
pub fn forget_all(wdir: &Path) -> Result<()> {
    fsutil::remove_tree(&wdir.join(TREES))
}

/// Drops what is kept of snapshot `name`'s tree (it was deleted, or a new one took its name).
pub fn forget(wdir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(wdir.join(TREES)) else {
        return;
    };
    let prefix = format!("{name}@");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Has the guest read snapshot `name`'s `/workspace` into an archive at `to`.
async fn fetch(vm_dir: &Path, name: &str, to: &Path) -> Result<()> {
    let attach = ClientRequest::AttachSnapshotView {
        name: name.to_string(),
    };
    snapshots::supervisor_call(vm_dir, &attach).await?;
    let spool = Spool::open(to)?;
    let fetched = async {
        let file = spool
            .file
            .try_clone()
            .map_err(|e| Error::io("open", to, e))?;
        let mut file = tokio::fs::File::from_std(file);
        let request = Request::ExportSnapshotView {
            path: validate::WORKSPACE_ROOT.into(),
            max_bytes: archive::MAX_ARCHIVE_BYTES,
        };
        let reply = AgentCall::start_moving(vm_dir, &request, archive::MAX_ARCHIVE_BYTES)
            .await?
            .receive(&mut file, archive::MAX_ARCHIVE_BYTES)
            .await?;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| Error::io("write", to, e))?;
        drop(file);
        match reply {
            Reply::Exported(_) => {}
            other => return Err(agent_client::unexpected(other)),
        }
        let checked = spool.path();
        crate::blocking(move || extract::check_headers(&checked)).await
    }
    .await;
    let detached = snapshots::supervisor_call(vm_dir, &ClientRequest::DetachSnapshotView).await;
    let outcome = fetched.and(detached).and_then(|()| spool.keep(to));
    outcome.map_err(|e| e.context(format!("cannot read snapshot '{name}' to compare with")))
}

/// Where a tree is spooled until it is whole: an unnamed file beside `to` (`O_TMPFILE`), so that a
/// pyro killed half-way leaves nothing behind; or, where the file system has no unnamed files, a
/// named one removed on failure.
struct Spool {
    file: std::fs::File,
    /// The named file, when there is one.
    named: Option<PathBuf>,
}

impl Spool {
    fn open(to: &Path) -> Result<Spool> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = to.parent().unwrap_or(Path::new("."));
        let unnamed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir);
        match unnamed {
            Ok(file) => Ok(Spool { file, named: None }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
                let path = to.with_extension(format!("partial-{}", fsutil::random_hex(4)?));
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| Error::io("create", &path, e))?;
                Ok(Spool {
                    file,
                    named: Some(path),
                })
            }
            Err(e) => Err(Error::io("create a file in", dir, e)),
        }
    }

    /// A path that opens the spool.
    fn path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        match &self.named {
            Some(path) => path.clone(),
            None => PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd())),
        }
    }

    /// Gives the whole spool its name `to`.
    fn keep(mut self, to: &Path) -> Result<()> {
        match self.named.take() {
            Some(path) => std::fs::rename(&path, to).map_err(|e| Error::io("rename", &path, e)),
            None => {
                use std::os::unix::ffi::OsStrExt;
                let from = std::ffi::CString::new(self.path().as_os_str().as_bytes())
                    .map_err(|_| Error::invalid("a path with a NUL byte"))?;
                let target = std::ffi::CString::new(to.as_os_str().as_bytes())
                    .map_err(|_| Error::invalid("a path with a NUL byte"))?;
                // SAFETY: two valid C strings; linkat reads them only.
                let linked = unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        from.as_ptr(),
                        libc::AT_FDCWD,
                        target.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                };
                if linked != 0 {
                    return Err(Error::io("name", to, std::io::Error::last_os_error()));
                }
                Ok(())
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(path) = &self.named {
            let _ = std::fs::remove_file(path);
        }
    }
}
