//! Reading a stopped VM's disk without booting it and without mounting it on the host.
//!
//! The disk was last written by the guest, so every byte of it is untrusted: its image file is
//! decoded by [`image`] and its ext4 file system by `ext4-view` (safe Rust, read-only), both in a
//! child process (`pyro __read-disk`) that runs as the VM's engine user, may not gain privileges,
//! has limits on memory, CPU time and file size, and is killed at a deadline. The parent gets one
//! JSON reply line (and, for a read, the bytes after it), bounded in size.

mod image;
mod tree;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pyro_proto::{FileList, FileRead};
use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind, Result};

/// What the reader is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// List a `/workspace` path.
    List {
        path: String,
        recursive: bool,
        max_entries: u32,
    },
    /// Read part of a regular file under `/workspace`.
    Read {
        path: String,
        offset: u64,
        max_bytes: u64,
    },
    /// Copy the whole disk, as raw bytes, into the output descriptor (sparse).
    Export,
}

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    /// "qcow2" or "raw".
    format: String,
    /// The workspace's disk size: an image that claims more is refused.
    max_size: u64,
    request: Request,
}

/// What went wrong, as the reader sorts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Failure {
    NotFound,
    Invalid,
    Damaged,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Listed(FileList),
    /// Followed on stdout by `bytes_returned` bytes.
    Read(FileRead),
    Exported {
        size_bytes: u64,
        data_bytes: u64,
    },
    Failed {
        failure: Failure,
        message: String,
    },
}

/// The reader's descriptors: the disk image, and the export's output.
const DISK_FD: i32 = 3;
const OUTPUT_FD: i32 = 4;
/// A request is a few hundred bytes; more is not read.
const MAX_REQUEST_BYTES: u64 = 64 << 10;
/// The reply line: a listing's paths are bounded by the tree's own limit, plus JSON's overhead.
const MAX_REPLY_LINE: usize = 24 << 20;
/// The reader's address space: the file system's caches and one read's bytes fit many times over.
const READER_MEMORY: u64 = 1 << 30;

/// Entry point of `pyro __read-disk`: becomes `user` (uid, gid) first when given, makes sure it
/// dies with `parent`, then answers the request on stdin. Returns the process exit code.
pub fn main(user: Option<(u32, u32)>, parent: Option<i32>) -> i32 {
    if let Some((uid, gid)) = user {
        // SAFETY: plain system calls on integers; nothing runs before them that reads the disk.
        let dropped = unsafe {
            libc::setgroups(1, &gid) == 0
                && libc::setresgid(gid, gid, gid) == 0
                && libc::setresuid(uid, uid, uid) == 0
        };
        if !dropped {
            eprintln!(
                "cannot become the engine user: {}",
                std::io::Error::last_os_error()
            );
            return 1;
        }
    }
    // Changing user cleared the parent-death signal: set it again, then check that the parent did
    // not die in between (the reader would then belong to init).
    // SAFETY: prctl with integer arguments; getppid cannot fail.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return 1;
        }
        if parent.is_some_and(|pid| libc::getppid() != pid) {
            return 1;
        }
    }
    let mut input = Vec::new();
    let read = std::io::stdin()
        .take(MAX_REQUEST_BYTES)
        .read_to_end(&mut input);
    let reply = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice::<Job>(&input).map_err(|e| e.to_string()))
    {
        Ok(job) => serve(job),
        Err(e) => (
            Reply::Failed {
                failure: Failure::Invalid,
                message: format!("unreadable request: {e}"),
            },
            Vec::new(),
        ),
    };
    let (reply, bytes) = reply;
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, &reply)
        .map_err(std::io::Error::other)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.write_all(&bytes))
        .and_then(|()| out.flush());
    i32::from(written.is_err())
}

/// Takes a descriptor the parent handed over.
fn inherited(fd: i32) -> Option<File> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open and was handed to this process to own.
    Some(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn failed(failure: Failure, message: impl Into<String>) -> (Reply, Vec<u8>) {
    (
        Reply::Failed {
            failure,
            message: message.into(),
        },
        Vec::new(),
    )
}

fn serve(job: Job) -> (Reply, Vec<u8>) {
    let Some(disk) = inherited(DISK_FD) else {
        return failed(Failure::Invalid, "no disk image was handed over");
    };
    let mut image = match image::Image::open(disk, &job.format, job.max_size) {
        Ok(image) => image,
        Err(e) => return failed(Failure::Damaged, e.to_string()),
    };
    let outcome = match job.request {
        Request::Export => {
            let Some(output) = inherited(OUTPUT_FD) else {
                return failed(Failure::Invalid, "no output was handed over");
            };
            return match copy_out(&mut image, &output) {
                Ok((size_bytes, data_bytes)) => (
                    Reply::Exported {
                        size_bytes,
                        data_bytes,
                    },
                    Vec::new(),
                ),
                Err(e) => failed(Failure::Damaged, e),
            };
        }
        Request::List {
            path,
            recursive,
            max_entries,
        } => tree(image).and_then(|tree| {
            tree.list(&path, recursive, max_entries as usize)
                .map(|list| (Reply::Listed(list), Vec::new()))
        }),
        Request::Read {
            path,
            offset,
            max_bytes,
        } => tree(image).and_then(|tree| {
            tree.read(&path, offset, max_bytes)
                .map(|(info, bytes)| (Reply::Read(info), bytes))
        }),
    };
    outcome.unwrap_or_else(|e| match e {
        tree::TreeError::NotFound(m) => failed(Failure::NotFound, m),
        tree::TreeError::Invalid(m) => failed(Failure::Invalid, m),
        tree::TreeError::Damaged(m) => failed(Failure::Damaged, m),
    })
}

fn tree(image: image::Image) -> std::result::Result<tree::Tree, tree::TreeError> {
    ext4_view::Ext4::load(Box::new(image))
        .map(tree::Tree::new)
        .map_err(|e| {
            tree::TreeError::Damaged(format!("the disk's file system cannot be read: {e}"))
        })
}

/// Writes every cluster of the disk that holds data to `output` at its offset and sizes `output`
/// to the disk: a sparse raw copy. Returns the disk's size and the bytes written.
fn copy_out(image: &mut image::Image, output: &File) -> std::result::Result<(u64, u64), String> {
    let cluster = image.cluster_size() as usize;
    let mut buf = vec![0u8; cluster];
    let mut written = 0u64;
    let mut failed_write = None;
    image
        .for_each_cluster(|image, at| {
            let n = cluster.min((image.size() - at) as usize);
            image.read_at(at, &mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                if let Err(e) = output.write_all_at(&buf[..n], at) {
                    failed_write = Some(format!("cannot write the export: {e}"));
                    return Err(image::ImageError("the export stopped".into()));
                }
                written += n as u64;
            }
            Ok(())
        })
        .map_err(|e| failed_write.take().unwrap_or_else(|| e.to_string()))?;
    output
        .set_len(image.size())
        .map_err(|e| format!("cannot size the export: {e}"))?;
    output
        .sync_all()
        .map_err(|e| format!("cannot flush the export: {e}"))?;
    Ok((image.size(), written))
}

/// What a read returned.
pub(crate) struct ReadOutcome {
    pub info: FileRead,
    pub bytes: Vec<u8>,
}

/// Asks a reader about `disk`. `output` receives an export.
fn ask(
    disk: &Disk,
    request: &Request,
    output: Option<&File>,
    max_bytes: u64,
    limit: Duration,
) -> Result<(Reply, Vec<u8>)> {
    let vm_dir = disk.vm_dir;
    let disk_gib = disk.gib;
    let (disk, format) = image_of(vm_dir).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "the workspace has no disk (it was never started, or its files were removed)",
        )
    })?;
    let image = open_image(&disk)?;
    let job = serde_json::to_vec(&Job {
        format: format.to_string(),
        max_size: u64::from(disk_gib.max(1)) << 30,
        request: request.clone(),
    })
    .map_err(|e| Error::internal(format!("cannot encode a disk request: {e}")))?;
    let mut command = Command::new(crate::supervisor::pyro_program()?);
    command.arg("__read-disk").env_clear();
    // It becomes the engine's user itself, right after exec: the engine's user may not be able to
    // reach the `pyro` binary (under a private home, say).
    if let Some(user) = crate::engine::launch::EngineUser::for_vm(vm_dir) {
        command
            .arg("--uid")
            .arg(user.uid.to_string())
            .arg("--gid")
            .arg(user.gid.to_string());
    }
    command.arg("--parent").arg(std::process::id().to_string());
    let mut fds = vec![(OwnedFd::from(image), DISK_FD)];
    if let Some(output) = output {
        let copy = output
            .try_clone()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot hand over the output: {e}")))?;
        fds.push((OwnedFd::from(copy), OUTPUT_FD));
    }
    crate::engine::inherit_fds(&mut command, fds)?;
    confine(&mut command, output.is_some(), limit);
    let finished = crate::child::run(
        &mut command,
        &job,
        limit,
        MAX_REPLY_LINE + max_bytes as usize,
    )
    .map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot run the disk reader: {e}"),
        )
    })?;
    let Some(status) = finished.status else {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "reading the workspace's disk did not finish within {}s",
                limit.as_secs()
            ),
        ));
    };
    let out = finished.stdout;
    let Some(newline) = out.iter().position(|&b| b == b'\n') else {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "the disk reader ended ({status}) without a reply: {}",
                String::from_utf8_lossy(&finished.stderr).trim()
            ),
        ));
    };
    let reply: Reply = serde_json::from_slice(&out[..newline])
        .map_err(|e| Error::internal(format!("unreadable reply from the disk reader: {e}")))?;
    let bytes = out[newline + 1..].to_vec();
    if bytes.len() as u64 > max_bytes {
        return Err(Error::internal(
            "the disk reader returned more than was asked",
        ));
    }
    Ok((reply, bytes))
}

/// The reader runs without new privileges and without any descriptor but its own, with its memory,
/// CPU time (no more than its deadline) and file sizes bounded, and dies with its parent.
fn confine(command: &mut Command, exports: bool, limit: Duration) {
    use std::os::unix::process::CommandExt;
    let max_file = if exports { libc::RLIM_INFINITY } else { 0 };
    let cpu = limit.as_secs().max(1);
    // SAFETY: prctl, setrlimit and close_range are async-signal-safe and take no pointers into
    // the heap.
    unsafe {
        command.pre_exec(move || {
            let limits = [
                (libc::RLIMIT_AS, READER_MEMORY),
                (libc::RLIMIT_CPU, cpu),
                (libc::RLIMIT_FSIZE, max_file),
                (libc::RLIMIT_CORE, 0),
            ];
            for (resource, value) in limits {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Descriptors pyro itself inherited without close-on-exec stay out of the reader
            // (best effort: an older kernel has no close_range).
            libc::syscall(
                libc::SYS_close_range,
                OUTPUT_FD + 1,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    crate::fsutil::die_with_parent(command, libc::SIGKILL);
}

/// The disk image of the VM in `vm_dir` and its format: qcow2, or raw for a disk from before disks
/// were qcow2.
pub(crate) fn image_of(vm_dir: &Path) -> Option<(std::path::PathBuf, &'static str)> {
    [
        (crate::disk::FILE_NAME, crate::disk::FORMAT),
        (crate::disk::LEGACY_FILE_NAME, "raw"),
    ]
    .into_iter()
    .map(|(name, format)| (vm_dir.join(name), format))
    .find(|(path, _)| path.exists())
}

/// Opens a disk image to hand over: a regular file, never through a symlink.
fn open_image(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let is_file = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    if !is_file {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

fn failure_error(failure: Failure, message: String) -> Error {
    match failure {
        Failure::NotFound => Error::new(ErrorKind::NotFound, message),
        Failure::Invalid => Error::invalid(message),
        Failure::Damaged => Error::new(
            ErrorKind::Io,
            format!("the workspace's disk cannot be read: {message}"),
        )
        .with_hint(
            "start the workspace and use the file tools; the guest repairs its file system at boot",
        ),
    }
}

fn unexpected(reply: Reply) -> Error {
    match reply {
        Reply::Failed { failure, message } => failure_error(failure, message),
        other => Error::internal(format!("unexpected reply from the disk reader: {other:?}")),
    }
}

/// How long a listing or a read may take.
const READ_LIMIT: Duration = Duration::from_secs(60);

/// A VM's disk: where its directory is, and its size.
pub(crate) struct Disk<'a> {
    pub vm_dir: &'a Path,
    pub gib: u32,
}

/// Lists `path` (an absolute `/workspace` path) on the disk of a stopped VM.
pub(crate) fn list(disk: &Disk, path: &str, recursive: bool, max_entries: u32) -> Result<FileList> {
    let request = Request::List {
        path: path.to_string(),
        recursive,
        max_entries,
    };
    match ask(disk, &request, None, 0, READ_LIMIT)? {
        (Reply::Listed(list), _) => Ok(list),
        (other, _) => Err(unexpected(other)),
    }
}

/// Reads up to `max_bytes` of the file `path` from `offset` on the disk of a stopped VM.
pub(crate) fn read(disk: &Disk, path: &str, offset: u64, max_bytes: u64) -> Result<ReadOutcome> {
    let request = Request::Read {
        path: path.to_string(),
        offset,
        max_bytes,
    };
    match ask(disk, &request, None, max_bytes, READ_LIMIT)? {
        (Reply::Read(info), bytes) if info.bytes_returned == bytes.len() as u64 => {
            Ok(ReadOutcome { info, bytes })
        }
        (Reply::Read(_), _) => Err(Error::internal(
            "the disk reader's reply and bytes disagree",
        )),
        (other, _) => Err(unexpected(other)),
    }
}

/// What an export wrote.
pub(crate) struct Exported {
    /// The disk's size: the output file's length.
    pub size_bytes: u64,
    /// The bytes of data written (the rest is a hole).
    pub data_bytes: u64,
}

/// Copies the disk of a stopped VM into `output` as a sparse raw image.
pub(crate) fn export(disk: &Disk, output: &File) -> Result<Exported> {
    // Bounded by the disk's data: at a pessimistic 20 MB/s, a full 8 GiB disk takes seven minutes.
    let limit = Duration::from_secs(30 * 60);
    match ask(disk, &Request::Export, Some(output), 0, limit)? {
        (
            Reply::Exported {
                size_bytes,
                data_bytes,
            },
            _,
        ) => Ok(Exported {
            size_bytes,
            data_bytes,
        }),
        (other, _) => Err(unexpected(other)),
    }
}
