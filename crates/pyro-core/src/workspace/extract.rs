//! Export extraction: a tar that came from the guest becomes a new host file or directory.
//!
//! The guest is hostile, so nothing it sends decides where bytes land or what they point at:
//! - everything is written into a fresh private staging directory beside the output, and moved into
//!   place with one `rename(RENAME_NOREPLACE)`: an output path that appears meanwhile is never
//!   overwritten, and a failure removes only the staging directory, which this call created;
//! - member headers are scanned before parsing, so long names and PAX records stay small;
//! - every symlink is resolved component by component inside the exported tree as it lands on the
//!   host; one that would lead out (or is absolute) is not written, and is reported;
//! - a single-path export writes exactly one regular file, under the name that was asked for;
//! - modes are the guest's permission bits filtered by the user's umask (no setuid, no world-writable
//!   directory the user's own tools would not make).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pyro_proto::archive_rules::member_path;
use serde::Serialize;

use super::archive::{Counts, MAX_ARCHIVE_ENTRIES};
use crate::{fsutil, Error, ErrorKind, Result};

/// The largest GNU long-name or long-link record: real ones are a few hundred bytes.
pub const MAX_HEADER_MEMBER_BYTES: u64 = 64 << 10;
/// Members nest at most this deep.
pub const MAX_DEPTH: usize = 256;
/// Symlinks followed while resolving one link (as the kernel's own limit).
const MAX_LINK_HOPS: usize = 40;

/// What the host asked for, which decides the shape of the result (never the guest's reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// A directory's contents become a new host directory.
    Tree,
    /// One regular file, whose member must carry this name.
    File { name: String },
}

/// A symlink that was not written because it would have led outside the export.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SkippedLink {
    /// Relative to the exported directory.
    pub path: String,
    pub target: String,
}

#[derive(Debug, Default)]
pub struct Extracted {
    pub counts: Counts,
    pub skipped_links: Vec<SkippedLink>,
}

fn guest(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Guest, message.into())
}

/// Extracts the guest's tar at `tar_path` to `output`, which must not exist.
pub fn extract(tar_path: &Path, output: &Path, shape: &Shape) -> Result<Extracted> {
    check_headers(tar_path)?;
    land(output, |landed| match shape {
        Shape::Tree => extract_tree(tar_path, landed),
        Shape::File { name } => extract_file(tar_path, landed, name),
    })
}

/// Has `make` build an export at a path in a private staging directory beside `output`, then moves
/// it to `output` without replacing anything; nothing is left behind when `make` fails.
pub(crate) fn land<T>(output: &Path, make: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = parent.join(format!(".pyro-export-{}", fsutil::random_hex(6)?));
    fs::DirBuilder::new()
        .mode_private()
        .create(&staging)
        .map_err(|e| Error::io("create", &staging, e))?;
    let result = (|| {
        let landed = staging.join("out");
        let made = make(&landed)?;
        rename_noreplace(&landed, output)?;
        Ok(made)
    })();
    let _ = fsutil::remove_tree(&staging);
    result
}

trait PrivateDir {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateDir for fs::DirBuilder {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(fsutil::PRIVATE_DIR_MODE)
    }
}

/// Moves the finished export into place, refusing to replace anything that appeared meanwhile.
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
    let (Ok(from_c), Ok(to_c)) = (c(from), c(to)) else {
        return Err(Error::invalid(format!(
            "{} contains a NUL byte",
            to.display()
        )));
    };
    // SAFETY: two valid NUL-terminated paths; renameat2 takes no other pointers.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Err(Error::invalid(format!(
            "{} appeared while the export ran; export never overwrites",
            to.display()
        ))
        .with_hint("choose a new output path"));
    }
    Err(Error::io("move the export to", to, err))
}

/// Scans the raw headers: GNU long names and links and PAX records are read whole into memory by any
/// tar parser, so each must be small, and the member count is bounded before parsing starts.
pub fn check_headers(tar_path: &Path) -> Result<()> {
    let mut file = File::open(tar_path).map_err(|e| Error::io("open", tar_path, e))?;
    let total = file
        .metadata()
        .map_err(|e| Error::io("inspect", tar_path, e))?
        .len();
    let mut header = [0u8; 512];
    let mut offset = 0u64;
    let mut members = 0u64;
    while offset + 512 <= total {
        file.read_exact(&mut header)
            .map_err(|e| Error::io("read", tar_path, e))?;
        offset += 512;
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let size = parse_size(&header[124..136])
            .ok_or_else(|| guest("the VM sent a malformed archive: a member size is unreadable"))?;
        let kind = header[156];
        // A PAX record may override the next member's size, so this walk and the tar reader could
        // disagree on where members start, and a record hidden from the walk be read whole. The
        // agent writes GNU records only.
        if matches!(kind, b'x' | b'g') {
            return Err(guest(
                "refused export: the VM sent a PAX header record (pyro's agent writes none)",
            ));
        }
        if matches!(kind, b'L' | b'K') && size > MAX_HEADER_MEMBER_BYTES {
            return Err(guest(format!(
                "refused export: the VM sent a {size}-byte archive header record (at most {MAX_HEADER_MEMBER_BYTES})"
            )));
        }
        members += 1;
        if members > 2 * MAX_ARCHIVE_ENTRIES + 2 {
            return Err(guest(format!(
                "refused export: more than {MAX_ARCHIVE_ENTRIES} members"
            )));
        }
        let padded = size.div_ceil(512).saturating_mul(512);
        offset = offset.saturating_add(padded);
        if offset > total {
            return Err(guest("the VM sent a truncated archive"));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("read", tar_path, e))?;
    }
    Ok(())
}

/// A tar size field: octal text, or GNU base-256 when the top bit is set.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn open_archive(tar_path: &Path) -> Result<tar::Archive<io::BufReader<File>>> {
    let file = File::open(tar_path).map_err(|e| Error::io("open", tar_path, e))?;
    Ok(tar::Archive::new(io::BufReader::new(file)))
}

fn malformed(e: io::Error) -> Error {
    guest(format!("the VM sent a malformed archive: {e}"))
}

/// The mode a new host file or directory gets: the guest's permission bits, through the user's umask.
fn host_mode(guest_mode: u32, directory: bool) -> u32 {
    let mode = guest_mode & 0o777;
    let mode = if directory {
        mode | 0o700
    } else {
        mode | 0o600
    };
    mode & !fsutil::user_umask()
}

/// Writes one regular file member's bytes to a new file at `target`, then gives it its mode.
fn write_file(entry: &mut tar::Entry<impl Read>, target: &Path, mode: u32) -> Result<u64> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(target)
        .map_err(|e| Error::io("create", target, e))?;
    let bytes = io::copy(entry, &mut file).map_err(|e| Error::io("write", target, e))?;
    file.set_permissions(fs::Permissions::from_mode(host_mode(mode, false)))
        .map_err(|e| Error::io("set the mode of", target, e))?;
    Ok(bytes)
}

fn extract_file(tar_path: &Path, target: &Path, name: &str) -> Result<Extracted> {
    let mut archive = open_archive(tar_path)?;
    let mut extracted = Extracted::default();
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let raw = entry.path().map_err(malformed)?.into_owned();
        let member = member_path(&raw).map_err(|e| guest(format!("refused export member: {e}")))?;
        if extracted.counts.entry_count > 0 {
            return Err(guest(
                "refused export: the VM sent more than one member for a single file",
            ));
        }
        if member != name {
            return Err(guest(format!(
                "refused export: asked for {name}, the VM sent {member}"
            )));
        }
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Symlink {
            let link = entry
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(Error::invalid(format!(
                "{name} is a symlink (to {link}); a single-path export only writes regular files"
            ))
            .with_hint("export the file it points to, or the directory that holds both"));
        }
        if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            return Err(guest(format!(
                "refused export: {member} is not a regular file"
            )));
        }
        extracted.counts.add(entry.size())?;
        let mode = entry.header().mode().unwrap_or(0o644);
        write_file(&mut entry, target, mode)?;
    }
    if extracted.counts.entry_count == 0 {
        return Err(guest("the VM sent an empty archive for a file export"));
    }
    Ok(extracted)
}

/// What this extraction created, by member path: the only things later members may build on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Made {
    Directory,
    Other,
}

fn extract_tree(tar_path: &Path, root: &Path) -> Result<Extracted> {
    let mut archive = open_archive(tar_path)?;
    let mut extracted = Extracted::default();
    fs::DirBuilder::new()
        .mode_private()
        .create(root)
        .map_err(|e| Error::io("create", root, e))?;
    let mut made: HashMap<String, Made> = HashMap::new();
    let mut dir_modes: Vec<(String, u32)> = Vec::new();
    let mut links: Vec<(String, String)> = Vec::new();
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let raw = entry.path().map_err(malformed)?.into_owned();
        let member = member_path(&raw).map_err(|e| guest(format!("refused export member: {e}")))?;
        if member.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        extracted
            .counts
            .add(if kind.is_file() { entry.size() } else { 0 })?;
        let target = make_parents(root, &member, &mut made)?;
        match kind {
            tar::EntryType::Directory => {
                match made.get(&member) {
                    Some(Made::Directory) => {}
                    Some(Made::Other) => return Err(twice(&member)),
                    None => {
                        fs::DirBuilder::new()
                            .mode_private()
                            .create(&target)
                            .map_err(|e| Error::io("create", &target, e))?;
                        made.insert(member.clone(), Made::Directory);
                    }
                }
                dir_modes.push((member, mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                claim(&mut made, &member)?;
                write_file(&mut entry, &target, mode)?;
            }
            tar::EntryType::Symlink => {
                claim(&mut made, &member)?;
                let link = entry
                    .link_name()
                    .map_err(malformed)?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if link.is_empty() || link.as_bytes().contains(&0) {
                    return Err(guest(format!(
                        "refused export member: symlink {member} has no target"
                    )));
                }
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| Error::io("create", &target, e))?;
                links.push((member, link));
            }
            _ => {
                return Err(guest(format!(
                    "refused export member of an unsupported type: {member}"
                )))
            }
        }
    }
    // Links are judged once the whole tree is in place, as they resolve on the host; all are judged
    // before any is removed, so removing one cannot change another's verdict.
    let escaping: Vec<(String, String)> = links
        .into_iter()
        .filter(|(member, _)| !resolves_inside(root, member))
        .collect();
    for (member, target) in escaping {
        let path = root.join(&member);
        fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        extracted.skipped_links.push(SkippedLink {
            path: member,
            target,
        });
    }
    // The export's own directory gets the mode the user's tools would give it (the archive does not
    // carry one); then members, deepest first, so a directory made read-only does not stop its
    // children getting theirs.
    fs::set_permissions(root, fs::Permissions::from_mode(host_mode(0o755, true)))
        .map_err(|e| Error::io("set the mode of", root, e))?;
    dir_modes.sort_by_key(|(member, _)| std::cmp::Reverse(member.matches('/').count()));
    for (member, mode) in dir_modes {
        let path = root.join(&member);
        fs::set_permissions(&path, fs::Permissions::from_mode(host_mode(mode, true)))
            .map_err(|e| Error::io("set the mode of", &path, e))?;
    }
    Ok(extracted)
}

fn twice(member: &str) -> Error {
    guest(format!("refused export: {member} appears twice"))
}

fn claim(made: &mut HashMap<String, Made>, member: &str) -> Result<()> {
    if made.insert(member.to_string(), Made::Other).is_some() {
        return Err(twice(member));
    }
    Ok(())
}

/// Creates the missing parent directories of `member` (each remembered, so deep trees cost one
/// lookup per member), refusing to go through anything but a directory this extraction made.
fn make_parents(root: &Path, member: &str, made: &mut HashMap<String, Made>) -> Result<PathBuf> {
    let parts: Vec<&str> = member.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(guest(format!(
            "refused export: {member} is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let mut prefix = String::new();
    for part in &parts[..parts.len() - 1] {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        match made.get(prefix.as_str()) {
            Some(Made::Directory) => {}
            Some(Made::Other) => {
                return Err(guest(format!(
                    "refused export: {member} goes through a non-directory"
                )))
            }
            None => {
                let path = root.join(&prefix);
                fs::DirBuilder::new()
                    .mode_private()
                    .create(&path)
                    .map_err(|e| Error::io("create", &path, e))?;
                made.insert(prefix.clone(), Made::Directory);
            }
        }
    }
    Ok(root.join(member))
}

/// Whether the symlink at `member` (relative to `root`) resolves inside `root`, following the links
/// beside it exactly as the host kernel would. A missing component is taken lexically from there on:
/// a dangling link must not lead out either, as a later write through it would create a file there.
pub fn resolves_inside(root: &Path, member: &str) -> bool {
    let mut current: Vec<String> = member.split('/').map(str::to_string).collect();
    current.pop();
    let Ok(first) = fs::read_link(root.join(member)) else {
        return false;
    };
    let mut pending: Vec<String> = Vec::new();
    let mut hops = 0;
    if !push_target(&mut pending, &first) {
        return false;
    }
    let mut exists = true;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => {}
            ".." => {
                if current.pop().is_none() {
                    return false;
                }
            }
            name => {
                current.push(name.to_string());
                if !exists {
                    continue;
                }
                let path = root.join(current.join("/"));
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        hops += 1;
                        let Ok(target) = fs::read_link(&path) else {
                            return false;
                        };
                        if hops > MAX_LINK_HOPS || !push_target(&mut pending, &target) {
                            return false;
                        }
                        current.pop();
                    }
                    Ok(_) => {}
                    Err(_) => exists = false,
                }
            }
        }
    }
    true
}

/// Queues a link target's components (reversed, for popping); an absolute target leads out.
fn push_target(pending: &mut Vec<String>, target: &Path) -> bool {
    let text = target.to_string_lossy();
    if text.is_empty() || text.starts_with('/') {
        return false;
    }
    pending.extend(text.split('/').rev().map(str::to_string));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(links: &[(&str, &str)], dirs: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for d in dirs {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for (at, to) in links {
            std::os::unix::fs::symlink(to, dir.path().join(at)).unwrap();
        }
        dir
    }

    #[test]
    fn links_are_judged_where_they_land() {
        // (links, directories, the link judged, whether it stays inside)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str, bool);
        let cases: &[Case] = &[
            (&[("a/l", "../b")], &["a", "b"], "a/l", true),
            (&[("l", ".ssh")], &[], "l", true),
            (&[("l", "..")], &[], "l", false),
            (&[("l", "/etc/passwd")], &[], "l", false),
            // A chain: `up` stays inside, `esc` climbs past the root through it.
            (
                &[("e/a/b/up", "../.."), ("e/a/b/esc", "up/../../x")],
                &["e/a/b"],
                "e/a/b/esc",
                false,
            ),
            (&[("e/a/b/up", "../..")], &["e/a/b"], "e/a/b/up", true),
            // Dangling, but lexically inside: fine; dangling and leading out: not.
            (&[("a/l", "missing/../../b")], &["a"], "a/l", true),
            (&[("a/l", "missing/../../../b")], &["a"], "a/l", false),
            // A loop never resolves.
            (&[("x", "y"), ("y", "x")], &[], "x", false),
        ];
        for (links, dirs, member, inside) in cases {
            let dir = tree(links, dirs);
            assert_eq!(
                resolves_inside(dir.path(), member),
                *inside,
                "{member} in {links:?}"
            );
        }
    }

    #[test]
    fn size_fields_parse() {
        let mut field = [0u8; 12];
        field[..11].copy_from_slice(b"00000001000");
        assert_eq!(parse_size(&field), Some(512));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[8] = 1;
        assert_eq!(parse_size(&big), Some(1 << 24));
    }

    fn tar_with(build: impl FnOnce(&mut tar::Builder<File>)) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut builder = tar::Builder::new(file.reopen().unwrap());
        build(&mut builder);
        builder.finish().unwrap();
        file
    }

    fn regular(builder: &mut tar::Builder<File>, name: &str, data: &[u8], mode: u32) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, data).unwrap();
    }

    fn symlink(builder: &mut tar::Builder<File>, name: &str, target: &str) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, name, target).unwrap();
    }

    #[test]
    fn escaping_links_are_skipped_and_reported() {
        let tar = tar_with(|b| {
            regular(b, "src/a.txt", b"hi", 0o644);
            symlink(b, "src/ok", "a.txt");
            symlink(b, "keys", "../.ssh");
            symlink(b, "abs", "/etc/passwd");
        });
        let out = tempfile::tempdir().unwrap();
        let output = out.path().join("export");
        let got = extract(tar.path(), &output, &Shape::Tree).unwrap();
        let skipped: Vec<&str> = got.skipped_links.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(skipped, ["keys", "abs"]);
        assert_eq!(fs::read_to_string(output.join("src/ok")).unwrap(), "hi");
        assert!(fs::symlink_metadata(output.join("keys")).is_err());
        let leftovers: Vec<_> = fs::read_dir(out.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the export itself remains");
    }

    #[test]
    fn a_single_file_must_be_the_file_asked_for() {
        let out = tempfile::tempdir().unwrap();
        let link = tar_with(|b| symlink(b, "keys", ".ssh"));
        let err = extract(
            link.path(),
            &out.path().join("o"),
            &Shape::File {
                name: "keys".into(),
            },
        )
        .unwrap_err();
        assert!(err.message().contains("symlink"), "{}", err.message());
        let other = tar_with(|b| regular(b, "other", b"x", 0o644));
        let err = extract(
            other.path(),
            &out.path().join("o"),
            &Shape::File { name: "a".into() },
        )
        .unwrap_err();
        assert!(err.message().contains("asked for a"), "{}", err.message());
        let two = tar_with(|b| {
            regular(b, "a", b"x", 0o644);
            regular(b, "b", b"y", 0o644);
        });
        assert!(extract(
            two.path(),
            &out.path().join("o"),
            &Shape::File { name: "a".into() }
        )
        .is_err());
        assert_eq!(
            fs::read_dir(out.path()).unwrap().count(),
            0,
            "nothing left behind"
        );
        let good = tar_with(|b| regular(b, "a", b"x", 0o4777));
        extract(
            good.path(),
            &out.path().join("o"),
            &Shape::File { name: "a".into() },
        )
        .unwrap();
        let mode = fs::metadata(out.path().join("o"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o777 & !fsutil::user_umask());
    }

    #[test]
    fn an_output_that_appears_meanwhile_is_kept() {
        let tar = tar_with(|b| regular(b, "a", b"x", 0o644));
        let out = tempfile::tempdir().unwrap();
        let output = out.path().join("o");
        fs::create_dir(&output).unwrap();
        fs::write(output.join("precious"), "keep").unwrap();
        assert!(extract(tar.path(), &output, &Shape::Tree).is_err());
        assert_eq!(fs::read_to_string(output.join("precious")).unwrap(), "keep");
    }

    #[test]
    fn huge_header_records_are_refused_before_parsing() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(1 << 30);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.resize(512 + (1 << 20), b'a');
        fs::write(file.path(), &bytes).unwrap();
        let err = check_headers(file.path()).unwrap_err();
        assert!(
            err.message().contains("header record") || err.message().contains("truncated"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn pax_records_are_refused_as_they_could_hide_a_huge_one() {
        // `size=0` for the next member would make tar read the bytes after its header as the
        // following header, where the walk sees the member's data.
        let tar = tar_with(|b| {
            let record = b"11 size=0\n";
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(tar::EntryType::XHeader);
            header.set_size(record.len() as u64);
            b.append_data(&mut header, "pax", &record[..]).unwrap();
            regular(b, "a", &[0u8; 1024], 0o644);
        });
        let err = check_headers(tar.path()).unwrap_err();
        assert!(err.message().contains("PAX"), "{}", err.message());
    }

    #[test]
    fn world_writable_directories_follow_the_umask() {
        let tar = tar_with(|b| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o777);
            header.set_size(0);
            b.append_data(&mut header, "d", &[][..]).unwrap();
        });
        let out = tempfile::tempdir().unwrap();
        extract(tar.path(), &out.path().join("o"), &Shape::Tree).unwrap();
        let mode = fs::metadata(out.path().join("o/d"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o777 & !fsutil::user_umask());
    }
}
