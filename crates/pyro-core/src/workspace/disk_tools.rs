//! The disk tools: a stopped workspace's disk, listed, read and exported without booting the VM and
//! without mounting anything on the host (see [`crate::disk_reader`]). Paths follow the live file
//! tools' rules; the workspace stays stopped and locked against a start while a tool reads.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

use super::lifecycle::{self, vm_dir};
use super::ops::{self, ListedEntry, TextRead, MAX_LIST_ENTRIES};
use super::store::Record;
use super::validate;
use crate::db::Db;
use crate::fsutil::FileLock;
use crate::vocab::WorkspaceState;
use crate::{disk_reader, Dirs, Error, ErrorKind, Next, Result};

/// The file system every exported disk holds.
pub const DISK_FORMAT: &str = "ext4";

/// A stopped workspace, held so that nothing starts it while its disk is read.
struct Stopped {
    record: Record,
    _lock: FileLock,
}

impl Stopped {
    fn take(dirs: &Dirs, reference: &str, tool: &str) -> Result<Stopped> {
        let db = Db::open(dirs)?;
        let (record, lock) = lifecycle::locked(dirs, &db, reference)?;
        // A suspended workspace's disk is as quiet as a stopped one's (flushed when it was saved).
        if !matches!(
            record.state,
            WorkspaceState::Stopped | WorkspaceState::Suspended
        ) {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "workspace {} is {}; {tool} reads a stopped workspace's disk",
                    record.id, record.state
                ),
            )
            .with_hint("stop it first (or use the file tools while it runs)")
            .with_next(Next::WorkspaceStop {
                workspace_id: record.id.clone(),
            }));
        }
        Ok(Stopped {
            record,
            _lock: lock,
        })
    }

    fn disk<'a>(&self, vm_dir: &'a Path) -> disk_reader::Disk<'a> {
        disk_reader::Disk {
            vm_dir,
            gib: self.record.disk_gib,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskListResult {
    pub workspace_id: String,
    pub path: String,
    pub recursive: bool,
    pub entries: Vec<ListedEntry>,
    /// More entries existed than a listing returns.
    pub truncated: bool,
}

/// Lists `path` under `/workspace` on a stopped workspace's disk.
pub async fn disk_list(
    dirs: &Dirs,
    reference: &str,
    path: &str,
    recursive: bool,
) -> Result<DiskListResult> {
    let path = validate::workspace_path(path)?;
    let held = Stopped::take(dirs, reference, "disk list")?;
    let dir = vm_dir(dirs, &held.record.id);
    let list = tokio::task::block_in_place(|| {
        disk_reader::list(&held.disk(&dir), &path, recursive, MAX_LIST_ENTRIES)
    })?;
    Ok(DiskListResult {
        workspace_id: held.record.id,
        path: list.path,
        recursive,
        entries: list
            .entries
            .into_iter()
            .take(MAX_LIST_ENTRIES as usize)
            .map(ListedEntry::from)
            .collect(),
        truncated: list.truncated,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskReadResult {
    pub workspace_id: String,
    #[serde(flatten)]
    pub read: TextRead,
}

/// Reads a text file under `/workspace` on a stopped workspace's disk, as `file read` does on a
/// started one.
pub async fn disk_read(
    dirs: &Dirs,
    reference: &str,
    path: &str,
    offset: u64,
    max_bytes: Option<u64>,
) -> Result<DiskReadResult> {
    let path = validate::workspace_path(path)?;
    let max_bytes = ops::read_limit(max_bytes)?;
    let held = Stopped::take(dirs, reference, "disk read")?;
    let dir = vm_dir(dirs, &held.record.id);
    let read = tokio::task::block_in_place(|| {
        disk_reader::read(&held.disk(&dir), &path, offset, max_bytes)
    })?;
    let read = TextRead::of(read.bytes, path, read.info.size_bytes, offset, max_bytes)
        .map_err(|e| e.with_hint("export the disk and open it with tools of your own"))?;
    Ok(DiskReadResult {
        workspace_id: held.record.id,
        read,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskExportResult {
    pub workspace_id: String,
    pub output_path: String,
    /// The file system in the image: the VM's own disk, holding `workspace/` and, under
    /// `root/upper/`, every change made outside it.
    pub disk_format: &'static str,
    /// The image's length (the disk's size); the file is sparse.
    pub size_bytes: u64,
    /// Bytes of data written (the rest of the image is holes).
    pub bytes_written: u64,
}

/// Copies a stopped workspace's disk to `output` (which must not exist) as a raw ext4 image.
pub async fn disk_export(dirs: &Dirs, reference: &str, output: &Path) -> Result<DiskExportResult> {
    if output.as_os_str().is_empty() {
        return Err(Error::invalid("the output path must not be empty"));
    }
    let output = std::path::absolute(output).map_err(|e| Error::io("resolve", output, e))?;
    let held = Stopped::take(dirs, reference, "disk export")?;
    let dir = vm_dir(dirs, &held.record.id);
    let needed = disk_reader::image_of(&dir)
        .and_then(|(image, _)| crate::disk::host_usage(&image))
        .unwrap_or(0);
    if let Some(parent) = output.parent() {
        crate::host::space::ensure(parent, "the disk export", needed, 0)?;
    }
    if std::fs::symlink_metadata(&output).is_ok() {
        return Err(Error::invalid(format!(
            "{} already exists; export never overwrites",
            output.display()
        ))
        .with_hint("choose a new output path"));
    }
    // The whole disk may hold anything the guest wrote: the image is the user's alone (0600 under
    // the user's own mask).
    let mode = 0o600 & !crate::fsutil::user_umask();
    let exported = super::extract::land(&output, |landed| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(landed)
            .map_err(|e| Error::io("create", landed, e))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("set the mode of", landed, e))?;
        tokio::task::block_in_place(|| disk_reader::export(&held.disk(&dir), &file))
    })?;
    Ok(DiskExportResult {
        workspace_id: held.record.id,
        output_path: output.display().to_string(),
        disk_format: DISK_FORMAT,
        size_bytes: exported.size_bytes,
        bytes_written: exported.data_bytes,
    })
}
