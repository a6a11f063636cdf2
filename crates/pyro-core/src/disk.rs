//! A VM's own disk: a qcow2 image holding an ext4 file system, and the disk snapshots inside it.
//!
//! Every new disk is a copy of one empty, formatted image made once per size (so no VM waits for
//! `mke2fs`). Snapshots are qcow2 *internal* snapshots: a snapshot shares every cluster with the
//! live disk by reference count, so taking one, going back to one and deleting one touch metadata only,
//! whatever the amount of data, and no snapshot ever depends on another.
//!
//! pyro's snapshots are stored under a prefix ([`internal_name`]), so a caller's name can never be
//! read by QEMU as a numeric snapshot id, and snapshots pyro did not make are ignored.
//!
//! Offline work (the VM stopped) runs `qemu-img` on the image through a descriptor, as the VM's own
//! engine user when pyro is root: the image's metadata was last written by the engine, so the tool
//! reading it gets no more privilege than the engine had.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::launch::EngineUser;
use crate::host::tools;
use crate::{fsutil, Dirs, Error, ErrorKind, Result};

/// The image format of every VM disk.
pub const FORMAT: &str = "qcow2";
/// A VM's disk inside its directory.
pub const FILE_NAME: &str = "disk.qcow2";
/// A disk from before disks were qcow2 (raw ext4), converted on the workspace's next start.
pub const LEGACY_FILE_NAME: &str = "disk.img";
/// The snapshot every workspace gets right after its seed is in place: `reset` goes back to it.
pub const BASELINE: &str = "baseline";

/// Bumped when the empty image's recipe changes, so a stale cached one is never copied.
const EMPTY_IMAGE_VERSION: u32 = 1;
const PREFIX: &str = "pyro.";
/// `qemu-img info` of an image with the most snapshots pyro allows is a few KiB.
const MAX_INFO_BYTES: usize = 4 << 20;

/// The name a snapshot has inside the image.
pub fn internal_name(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// A snapshot pyro made, as the image records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSnapshot {
    pub name: String,
    /// When it was taken, in milliseconds since the epoch.
    pub created_at_ms: u64,
}

/// The cached empty image for `gib`, made on first use (concurrent callers wait for one maker).
pub fn empty_image(dirs: &Dirs, gib: u32) -> Result<PathBuf> {
    let dir = dirs.cache().join("disks");
    let image = dir.join(format!("empty-{gib}G-v{EMPTY_IMAGE_VERSION}.qcow2"));
    if image.exists() {
        return Ok(image);
    }
    fsutil::create_dir_all(&dir)?;
    let _lock = fsutil::FileLock::acquire(&dir.join(".lock"))?;
    if image.exists() {
        return Ok(image);
    }
    let raw = dir.join(format!(".empty-{gib}G.raw"));
    let partial = dir.join(format!(".empty-{gib}G.qcow2.partial"));
    let made = make_empty(&raw, &partial, gib).and_then(|()| {
        std::fs::rename(&partial, &image).map_err(|e| Error::io("rename", &partial, e))
    });
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&partial);
    made.map(|()| image)
}

fn make_empty(raw: &Path, qcow2: &Path, gib: u32) -> Result<()> {
    let _ = std::fs::remove_file(raw);
    let mut mke2fs = Command::new(tools::MKE2FS.find()?);
    // Inode tables and journal are written now, into a sparse file: a guest never runs the lazy
    // initialiser, whose writes would land in every early snapshot.
    mke2fs
        .args(["-q", "-F", "-t", "ext4", "-E"])
        .arg("lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0")
        .arg("-L")
        .arg(pyro_proto::DATA_DISK_LABEL)
        .arg(raw)
        .arg(format!("{gib}G"));
    run(&mut mke2fs, "mke2fs")?;
    let mut convert = Command::new(tools::QEMU_IMG.find()?);
    convert
        .args(["convert", "-q", "-f", "raw", "-O", FORMAT])
        .arg(raw)
        .arg(qcow2);
    run(&mut convert, "qemu-img convert")?;
    Ok(())
}

/// The most host disk a VM disk of `gib` may take: its size, plus room for qcow2's own tables (about
/// 0.02% of the size), for the tables snapshots copy when the guest writes after them, and for the
/// journal blocks a snapshot shares, which the guest rewrites at once. Snapshots'
/// data counts against it: what they keep leaves the guest less room to write.
pub fn host_budget(gib: u32) -> u64 {
    let size = u64::from(gib) << 30;
    size + size / 128 + (128 << 20)
}

/// Bytes of host disk the file at `path` takes (its allocated blocks, not its length).
pub fn host_usage(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.blocks() * 512)
}

/// Why the VM disk at `path` (of `gib`) cannot take more data on the host, if it cannot: its file is
/// within a few clusters of its budget.
pub fn over_budget(path: &Path, gib: u32) -> Option<String> {
    if gib == 0 {
        return None;
    }
    let budget = host_budget(gib);
    let used = host_usage(path)?;
    (used + (1 << 20) >= budget).then(|| {
        format!(
            "the VM's disk file reached its host budget of {} MiB (the {gib} GiB disk, with what its snapshots keep); delete snapshots it no longer needs, or reset it",
            budget >> 20
        )
    })
}

/// A new VM disk of `gib` at `path`.
pub fn create(dirs: &Dirs, path: &Path, gib: u32) -> Result<()> {
    copy_empty(&empty_image(dirs, gib)?, path)
}

/// A new VM disk at `path`: a copy of an empty image (a reflink where the host file system can).
pub fn copy_empty(empty: &Path, path: &Path) -> Result<()> {
    let partial = path.with_extension("partial");
    std::fs::copy(empty, &partial).map_err(|e| Error::io("copy", empty, e))?;
    std::fs::rename(&partial, path).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        Error::io("rename", &partial, e)
    })
}

/// Turns a legacy raw disk into a qcow2 one in place (once; it then has no snapshots, not even the
/// baseline, and `reset` rebuilds it from the seed).
pub fn convert_legacy(vm_dir: &Path) -> Result<()> {
    let raw = vm_dir.join(LEGACY_FILE_NAME);
    if !raw.exists() {
        return Ok(());
    }
    let qcow2 = vm_dir.join(FILE_NAME);
    let partial = qcow2.with_extension("partial");
    let mut convert = Command::new(tools::QEMU_IMG.find()?);
    convert
        .args(["convert", "-q", "-f", "raw", "-O", FORMAT])
        .arg(&raw)
        .arg(&partial);
    run(&mut convert, "qemu-img convert").inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    std::fs::rename(&partial, &qcow2).map_err(|e| Error::io("rename", &partial, e))?;
    std::fs::remove_file(&raw).map_err(|e| Error::io("remove", &raw, e))
}

/// The snapshots pyro made in the disk of the VM in `vm_dir` (readable while the VM runs).
pub fn snapshots(vm_dir: &Path) -> Result<Vec<DiskSnapshot>> {
    #[derive(Deserialize)]
    struct Info {
        #[serde(default)]
        snapshots: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        name: String,
        #[serde(rename = "date-sec", default)]
        date_sec: u64,
        #[serde(rename = "date-nsec", default)]
        date_nsec: u64,
    }
    let out = qemu_img(vm_dir, &["info", "-U", "--output=json"], true)?;
    let info: Info = serde_json::from_slice(&out).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("unreadable `qemu-img info` of the VM's disk: {e}"),
        )
    })?;
    Ok(info
        .snapshots
        .into_iter()
        .filter_map(|e| {
            e.name.strip_prefix(PREFIX).map(|name| DiskSnapshot {
                name: name.to_string(),
                created_at_ms: e.date_sec * 1000 + e.date_nsec / 1_000_000,
            })
        })
        .collect())
}

/// Takes a snapshot of a stopped VM's disk.
pub fn snapshot_offline(vm_dir: &Path, name: &str) -> Result<()> {
    qemu_img(vm_dir, &["snapshot", "-c", &internal_name(name)], false).map(drop)
}

/// Deletes a snapshot of a stopped VM's disk.
pub fn delete_offline(vm_dir: &Path, name: &str) -> Result<()> {
    qemu_img(vm_dir, &["snapshot", "-d", &internal_name(name)], false).map(drop)
}

/// Puts a stopped VM's disk back to a snapshot (the snapshot stays).
pub fn revert_offline(vm_dir: &Path, name: &str) -> Result<()> {
    qemu_img(vm_dir, &["snapshot", "-a", &internal_name(name)], false).map(drop)
}

/// Runs `qemu-img ARGS` on the VM's disk (given as descriptor 3) and returns its stdout.
fn qemu_img(vm_dir: &Path, args: &[&str], read_only: bool) -> Result<Vec<u8>> {
    let disk = vm_dir.join(FILE_NAME);
    let file: File = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(&disk)
        .map_err(|e| Error::io("open", &disk, e))?;
    let mut command = Command::new(tools::QEMU_IMG.find()?);
    command
        .args(args)
        .arg("--image-opts")
        .arg(format!(
            "driver={FORMAT},file.driver=file,file.filename=/proc/self/fd/3"
        ))
        .stdin(std::process::Stdio::null());
    // The image's metadata was last written by the engine: read it as the engine's user.
    if let Some(user) = EngineUser::take_disk(&disk, vm_dir)? {
        crate::engine::launch::become_user(&mut command, user, vec![user.gid]);
    }
    crate::engine::inherit_fds(&mut command, vec![(OwnedFd::from(file), 3)])?;
    fsutil::die_with_parent(&mut command, libc::SIGKILL);
    let out = run_bounded(&mut command, Duration::from_secs(120))?;
    if out.len() > MAX_INFO_BYTES {
        return Err(Error::new(
            ErrorKind::Io,
            "`qemu-img` said more than pyro reads about the VM's disk",
        ));
    }
    Ok(out)
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let out = command
        .output()
        .map_err(|e| Error::new(ErrorKind::MissingTool, format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Runs `command` to completion within `limit` and returns its stdout, or its stderr as the error.
fn run_bounded(command: &mut Command, limit: Duration) -> Result<Vec<u8>> {
    let finished = crate::child::run(command, &[], limit, MAX_INFO_BYTES)
        .map_err(|e| Error::new(ErrorKind::MissingTool, format!("cannot run qemu-img: {e}")))?;
    match finished.status {
        Some(status) if status.success() => Ok(finished.stdout),
        Some(_) => Err(Error::new(
            ErrorKind::Io,
            format!(
                "qemu-img failed on the VM's disk: {}",
                String::from_utf8_lossy(&finished.stderr).trim()
            ),
        )),
        None => Err(Error::new(
            ErrorKind::Io,
            format!("qemu-img did not finish within {}s", limit.as_secs()),
        )),
    }
}
