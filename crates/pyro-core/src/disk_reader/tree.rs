//! A stopped workspace's `/workspace`, read from the ext4 file system on its disk with the rules
//! the live file tools follow in the guest (`openat2` with `RESOLVE_BENEATH`): a path never leaves
//! `/workspace`, a symlink is followed only while it stays beneath it, an absolute symlink is
//! refused, and listings never follow symlinks.

use std::collections::VecDeque;

use ext4_view::{Ext4, Ext4Error, FileType, Metadata};
use pyro_proto::{ArtifactType, FileEntry, FileList, FileRead};

/// Where `/workspace` is on the VM's disk (the guest mounts the disk at `/rw` and binds
/// `/rw/workspace`).
const ROOT: &str = "/workspace";
/// Symlinks one lookup follows at most, as the kernel does.
const MAX_LINKS: usize = 40;
/// The longest path resolved or listed.
const MAX_PATH_BYTES: usize = 4096;
/// Bytes of JSON one listing's entries take at most.
const MAX_LISTING_BYTES: usize = 8 << 20;
/// Names read from one directory at most (they are sorted before any is listed).
const MAX_DIRECTORY_NAMES: usize = 100_000;

/// Why a lookup or read failed.
#[derive(Debug)]
pub enum TreeError {
    NotFound(String),
    Invalid(String),
    /// The file system is damaged (or forged) where the lookup went.
    Damaged(String),
}

/// `/workspace` on a disk's file system.
pub struct Tree {
    fs: Ext4,
}

fn damaged(what: &str, err: Ext4Error) -> TreeError {
    TreeError::Damaged(format!("cannot read {what} from the disk: {err}"))
}

fn display(parts: &[Vec<u8>]) -> String {
    let mut path = ROOT.to_string();
    for part in parts {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(part));
    }
    path
}

fn on_disk(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut path = ROOT.as_bytes().to_vec();
    for part in parts {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    path
}

fn artifact_type(kind: FileType) -> ArtifactType {
    match kind {
        FileType::Regular => ArtifactType::File,
        FileType::Directory => ArtifactType::Directory,
        FileType::Symlink => ArtifactType::Symlink,
        _ => ArtifactType::Other,
    }
}

/// The parts of an absolute `/workspace/...` path (already checked by the caller to stay inside).
fn parts_of(path: &str) -> Vec<Vec<u8>> {
    path.strip_prefix(ROOT)
        .unwrap_or(path)
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(|p| p.as_bytes().to_vec())
        .collect()
}

impl Tree {
    pub fn new(fs: Ext4) -> Tree {
        Tree { fs }
    }

    fn lstat(&self, parts: &[Vec<u8>]) -> Result<Metadata, TreeError> {
        let path = on_disk(parts);
        self.fs
            .symlink_metadata(path.as_slice())
            .map_err(|err| match err {
                Ext4Error::NotFound => TreeError::NotFound(format!(
                    "workspace path does not exist: {}",
                    display(parts)
                )),
                Ext4Error::NotADirectory => {
                    TreeError::Invalid(format!("a parent of {} is not a directory", display(parts)))
                }
                other => damaged(&display(parts), other),
            })
    }

    /// Resolves `path` to the parts of a path with no symlink in it (but the last one when
    /// `follow_last` is false), and that path's metadata.
    fn resolve(
        &self,
        path: &str,
        follow_last: bool,
    ) -> Result<(Vec<Vec<u8>>, Metadata), TreeError> {
        let escape = || {
            TreeError::Invalid(format!(
                "{path} resolves outside /workspace (through a symlink)"
            ))
        };
        let mut pending: VecDeque<Vec<u8>> = parts_of(path).into();
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        let mut meta = self.lstat(&resolved)?;
        while let Some(part) = pending.pop_front() {
            // Whatever comes next (a name, `.`, `..`, a trailing `/`), what is before it must be a
            // directory, as for the kernel.
            if !meta.is_dir() {
                return Err(TreeError::Invalid(format!(
                    "a parent of {path} is not a directory"
                )));
            }
            match part.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if resolved.pop().is_none() {
                        return Err(escape());
                    }
                    meta = self.lstat(&resolved)?;
                    continue;
                }
                _ => {}
            }
            resolved.push(part);
            if on_disk(&resolved).len() > MAX_PATH_BYTES {
                return Err(TreeError::Invalid(format!(
                    "{path} resolves to a path longer than {MAX_PATH_BYTES} bytes"
                )));
            }
            meta = self.lstat(&resolved)?;
            if meta.is_symlink() && (follow_last || !pending.is_empty()) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(TreeError::Invalid(format!(
                        "{path} goes through a symlink that cannot be followed here"
                    )));
                }
                let target = self
                    .fs
                    .read_link(on_disk(&resolved).as_slice())
                    .map_err(|e| damaged(&display(&resolved), e))?;
                let target = target.as_ref();
                if target.starts_with(b"/") {
                    return Err(escape());
                }
                resolved.pop();
                for piece in target.split(|&b| b == b'/').rev() {
                    pending.push_front(piece.to_vec());
                }
                meta = self.lstat(&resolved)?;
            }
        }
        Ok((resolved, meta))
    }

    /// The entry at `parts` (found by name, as every later lookup is), shown as `shown`. A
    /// symlink whose target cannot be read shows an empty one, as in the guest.
    fn entry(&self, parts: &[Vec<u8>], shown: String, meta: &Metadata) -> FileEntry {
        let kind = artifact_type(meta.file_type());
        let link_target = (kind == ArtifactType::Symlink).then(|| {
            self.fs
                .read_link(on_disk(parts).as_slice())
                .map(|t| String::from_utf8_lossy(t.as_ref()).into_owned())
                .unwrap_or_default()
        });
        FileEntry {
            path: shown,
            artifact_type: kind,
            size_bytes: if kind == ArtifactType::Directory {
                0
            } else {
                meta.len()
            },
            mode: u32::from(meta.mode()),
            link_target,
        }
    }

    /// Lists `path` (the entry itself when it is not a directory), in pre-order sorted by name,
    /// never following symlinks, stopping after `max_entries`. Paths are shown under `path` as
    /// asked, whatever symlinks led there.
    pub fn list(
        &self,
        path: &str,
        recursive: bool,
        max_entries: usize,
    ) -> Result<FileList, TreeError> {
        let (parts, meta) = self.resolve(path, false)?;
        let shown = display(&parts_of(path));
        let kind = artifact_type(meta.file_type());
        let mut listing = Listing {
            entries: Vec::new(),
            bytes: 0,
            max_entries,
            truncated: false,
        };
        if meta.is_dir() {
            self.walk(&parts, &shown, recursive, &mut listing)?;
        } else {
            listing
                .entries
                .push(self.entry(&parts, shown.clone(), &meta));
        }
        Ok(FileList {
            path: shown,
            artifact_type: kind,
            entries: listing.entries,
            truncated: listing.truncated,
        })
    }

    fn walk(
        &self,
        dir: &[Vec<u8>],
        shown: &str,
        recursive: bool,
        listing: &mut Listing,
    ) -> Result<(), TreeError> {
        let mut names = Vec::new();
        let entries = self
            .fs
            .read_dir(on_disk(dir).as_slice())
            .map_err(|e| damaged(&display(dir), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| damaged(&display(dir), e))?;
            let name = entry.file_name();
            let name = name.as_ref();
            if name == b"." || name == b".." {
                continue;
            }
            names.push(name.to_vec());
            if names.len() > MAX_DIRECTORY_NAMES {
                // Sorting needs them all; a directory this large is cut short instead.
                listing.truncated = true;
                break;
            }
        }
        names.sort_by(|a, b| String::from_utf8_lossy(a).cmp(&String::from_utf8_lossy(b)));
        // A forged directory may repeat a name: every lookup finds the first, so it is listed once.
        names.dedup();
        let mut child = dir.to_vec();
        for name in names {
            if listing.full() {
                listing.truncated = true;
                return Ok(());
            }
            let child_shown = format!("{shown}/{}", String::from_utf8_lossy(&name));
            child.push(name);
            // By name, as the guest's `lstat` does: the entry and any directory walked into are
            // the ones a lookup finds. One that cannot be read is left out, as in the guest.
            if let Ok(meta) = self.lstat(&child) {
                let entry = self.entry(&child, child_shown.clone(), &meta);
                listing.bytes += serde_json::to_string(&entry).map_or(0, |json| json.len());
                listing.entries.push(entry);
                if recursive && meta.is_dir() {
                    // Its entries' paths must fit too: a name is at most 255 bytes.
                    if on_disk(&child).len() + 256 > MAX_PATH_BYTES {
                        listing.truncated = true;
                    } else {
                        self.walk(&child, &child_shown, recursive, listing)?;
                    }
                }
            }
            child.pop();
        }
        Ok(())
    }

    /// Reads up to `max_bytes` of the regular file at `path` from `offset`.
    pub fn read(
        &self,
        path: &str,
        offset: u64,
        max_bytes: u64,
    ) -> Result<(FileRead, Vec<u8>), TreeError> {
        let (parts, meta) = self.resolve(path, true)?;
        if !meta.file_type().is_regular_file() {
            return Err(TreeError::Invalid(format!("{path} is not a regular file")));
        }
        let size = meta.len();
        let want = max_bytes.min(size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        if want > 0 {
            let mut file = self
                .fs
                .open(on_disk(&parts).as_slice())
                .map_err(|e| damaged(&display(&parts), e))?;
            file.seek_to(offset)
                .map_err(|e| damaged(&display(&parts), e))?;
            while filled < want {
                let n = file
                    .read_bytes(&mut buf[filled..])
                    .map_err(|e| damaged(&display(&parts), e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
        }
        buf.truncate(filled);
        Ok((
            FileRead {
                path: path.to_string(),
                size_bytes: size,
                offset,
                bytes_returned: filled as u64,
            },
            buf,
        ))
    }
}

struct Listing {
    entries: Vec<FileEntry>,
    bytes: usize,
    max_entries: usize,
    truncated: bool,
}

impl Listing {
    fn full(&self) -> bool {
        self.entries.len() >= self.max_entries || self.bytes >= MAX_LISTING_BYTES
    }
}
