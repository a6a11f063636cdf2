//! Host-side archives: building a validated tar from a seed directory or archive (exports come back
//! through [`super::extract`]).
//!
//! Both directions refuse absolute names, `..`, links that escape, hard links and device nodes, and
//! bound what they handle.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use pyro_proto::archive_rules::{link_stays_inside, member_path};

use crate::vocab::SeedMode;
use crate::{Error, Result};

/// The most one seed, sync or export may hold.
pub const MAX_ARCHIVE_BYTES: u64 = 4 << 30;
pub const MAX_ARCHIVE_ENTRIES: u64 = 500_000;

#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub entry_count: u64,
    pub bytes_written: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, bytes: u64) -> Result<()> {
        self.entry_count += 1;
        self.bytes_written += bytes;
        if self.entry_count > MAX_ARCHIVE_ENTRIES || self.bytes_written > MAX_ARCHIVE_BYTES {
            return Err(Error::invalid(format!(
                "the archive is too large (limits: {MAX_ARCHIVE_ENTRIES} entries, {} GiB)",
                MAX_ARCHIVE_BYTES >> 30
            )));
        }
        Ok(())
    }
}

/// What a seed or sync source is.
pub enum Source {
    /// A host directory; its `.git` directories (nested repositories' too) only when asked: they
    /// may hold credentials in their config.
    Directory {
        path: PathBuf,
        include_git: bool,
    },
    Tar(PathBuf),
    TarGz(PathBuf),
    /// The files git would commit in a checkout (and `.git` itself when asked).
    Project(crate::project::ProjectSeed),
}

impl Source {
    /// A host directory or a `.tar`, `.tar.gz` or `.tgz` file.
    pub fn classify(path: &Path, include_git: bool) -> Result<Source> {
        let meta = fs::metadata(path)
            .map_err(|_| Error::invalid(format!("{} does not exist", path.display())))?;
        if meta.is_dir() {
            return Ok(Source::Directory {
                path: path.to_path_buf(),
                include_git,
            });
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if meta.is_file() && name.ends_with(".tar") {
            Ok(Source::Tar(path.to_path_buf()))
        } else if meta.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
            Ok(Source::TarGz(path.to_path_buf()))
        } else {
            Err(Error::invalid(format!(
                "{} must be a directory or a .tar, .tar.gz or .tgz archive",
                path.display()
            )))
        }
    }

    pub fn mode(&self) -> SeedMode {
        match self {
            Source::Directory { .. } => SeedMode::Directory,
            Source::Tar(_) | Source::TarGz(_) => SeedMode::TarArchive,
            Source::Project(project) => project.mode,
        }
    }
}

fn bad(what: &str, err: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{what}: {err}"))
}

/// Writes a validated, uncompressed tar of `source` to `out`.
pub fn build_tar(source: &Source, out: &Path) -> Result<Counts> {
    let file = File::create(out).map_err(|e| Error::io("create", out, e))?;
    let mut builder = tar::Builder::new(io::BufWriter::new(file));
    builder.follow_symlinks(false);
    builder.sparse(false);
    let mut counts = Counts::default();
    match source {
        Source::Directory { path, include_git } => {
            let keep = |name: &str| *include_git || name != ".git";
            add_dir_filtered(&mut builder, path, "", &mut counts, &keep)?;
        }
        Source::Tar(path) => copy_members(&mut builder, open(path)?, &mut counts)?,
        Source::TarGz(path) => copy_members(
            &mut builder,
            flate2::read::GzDecoder::new(open(path)?),
            &mut counts,
        )?,
        Source::Project(project) => add_project(&mut builder, project, &mut counts)?,
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| Error::io("write", out, e))?;
    Ok(counts)
}

fn add_project<W: Write>(
    builder: &mut tar::Builder<W>,
    project: &crate::project::ProjectSeed,
    counts: &mut Counts,
) -> Result<()> {
    let files = crate::project::files(&project.root)?;
    if files.is_empty() && crate::project::detect(&project.root).is_none() {
        // Not a checkout: everything but `.git`.
        return add_dir_filtered(builder, &project.root, "", counts, &|name| name != ".git");
    }
    for rel in files {
        let path = project.root.join(&rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        }; // deleted but still tracked
        if meta.is_dir() {
            continue; // a submodule
        }
        add_entry(builder, &path, &rel, &meta, counts)?;
    }
    if project.include_git {
        let git = project.root.join(".git");
        if git.is_dir() {
            counts.add(0)?;
            builder
                .append_dir(".git", &git)
                .map_err(|e| Error::io("archive", &git, e))?;
            add_dir(builder, &git, ".git", counts)?;
        }
    }
    Ok(())
}

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::io("open", path, e))
}

fn add_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    rel: &str,
    counts: &mut Counts,
) -> Result<()> {
    add_dir_filtered(builder, dir, rel, counts, &|_| true)
}

fn add_dir_filtered<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    rel: &str,
    counts: &mut Counts,
    keep: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::io("read", dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| keep(name))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let member = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("inspect", &path, e))?;
        add_entry(builder, &path, &member, &meta, counts)?;
        if meta.is_dir() {
            add_dir_filtered(builder, &path, &member, counts, keep)?;
        }
    }
    Ok(())
}

/// Adds one file, directory or symlink (which must stay inside), refusing anything else.
fn add_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    member: &str,
    meta: &fs::Metadata,
    counts: &mut Counts,
) -> Result<()> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(path).map_err(|e| Error::io("read link", path, e))?;
        if !link_stays_inside(member, &target.to_string_lossy()) {
            return Err(Error::invalid(format!(
                "symlink {} points outside the seed ({}); workspaces only take links that stay inside",
                path.display(),
                target.display()
            )));
        }
    } else if !kind.is_dir() && !kind.is_file() {
        return Err(Error::invalid(format!(
            "{} is not a file, directory or symlink",
            path.display()
        )));
    }
    counts.add(if kind.is_file() { meta.len() } else { 0 })?;
    builder
        .append_path_with_name(path, member)
        .map_err(|e| Error::io("archive", path, e))
}

fn copy_members<R: Read, W: Write>(
    builder: &mut tar::Builder<W>,
    reader: R,
    counts: &mut Counts,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive
        .entries()
        .map_err(|e| bad("unreadable archive", e))?
    {
        let mut entry = entry.map_err(|e| bad("unreadable archive", e))?;
        let raw = entry
            .path()
            .map_err(|e| bad("unreadable archive member", e))?
            .into_owned();
        let member = member_path(&raw).map_err(|e| Error::invalid(e.to_string()))?;
        let kind = entry.header().entry_type();
        let mut header = entry.header().clone();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !link_stays_inside(&member, &target) {
                    return Err(Error::invalid(format!(
                        "symlink {member} escapes the workspace"
                    )));
                }
            }
            tar::EntryType::Link => {
                return Err(Error::invalid(format!(
                    "hard links are not allowed in workspace archives: {member}"
                )))
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            _ => {
                return Err(Error::invalid(format!(
                    "unsupported archive member type: {member}"
                )))
            }
        }
        if member.is_empty() {
            continue;
        }
        counts.add(if kind.is_file() { entry.size() } else { 0 })?;
        let link = entry.link_name().ok().flatten().map(|l| l.into_owned());
        match link {
            Some(target) if kind == tar::EntryType::Symlink => builder
                .append_link(&mut header, &member, &target)
                .map_err(|e| bad("cannot write the archive", e))?,
            _ => builder
                .append_data(&mut header, &member, &mut entry)
                .map_err(|e| bad("cannot write the archive", e))?,
        }
    }
    Ok(())
}

/// An empty tar (two zero blocks).
pub fn write_empty_tar(out: &Path) -> Result<()> {
    fs::write(out, [0u8; 1024]).map_err(|e| Error::io("write", out, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_with_an_escaping_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        fs::create_dir(&seed).unwrap();
        fs::write(seed.join("a.txt"), "hi").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", seed.join("evil")).unwrap();
        let err = build_tar(
            &Source::Directory {
                path: seed,
                include_git: false,
            },
            &dir.path().join("out.tar"),
        )
        .unwrap_err();
        assert!(
            err.message().contains("points outside"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_directory_seed_leaves_git_out_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        fs::create_dir_all(seed.join(".git")).unwrap();
        fs::write(
            seed.join(".git/config"),
            "[remote]\n url = https://token@host/x\n",
        )
        .unwrap();
        fs::write(seed.join("a.txt"), "hi").unwrap();
        fs::create_dir_all(seed.join("vendor/lib/.git")).unwrap();
        fs::write(seed.join("vendor/lib/.git/config"), "[credential]\n").unwrap();
        // a.txt, vendor, vendor/lib; with git: .git, .git/config, vendor/lib/.git and its config.
        for (include_git, entries) in [(false, 3), (true, 7)] {
            let source = Source::Directory {
                path: seed.clone(),
                include_git,
            };
            let counts = build_tar(&source, &dir.path().join("out.tar")).unwrap();
            assert_eq!(counts.entry_count, entries, "include_git={include_git}");
        }
    }

    #[test]
    fn a_malicious_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let evil = dir.path().join("evil.tar");
        let mut builder = tar::Builder::new(File::create(&evil).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_entry_type(tar::EntryType::Regular);
        // Bypass the builder's own path checks to write a `..` member.
        header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        header.set_cksum();
        builder.append(&header, &b"hi"[..]).unwrap();
        builder.finish().unwrap();
        let err = build_tar(&Source::Tar(evil), &dir.path().join("out.tar")).unwrap_err();
        assert!(
            err.message().contains("unsafe archive member"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_clean_directory_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        fs::create_dir_all(seed.join("src")).unwrap();
        fs::write(seed.join("src/a.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("src/a.txt", seed.join("link")).unwrap();
        let counts = build_tar(
            &Source::Directory {
                path: seed,
                include_git: false,
            },
            &dir.path().join("out.tar"),
        )
        .unwrap();
        assert_eq!(counts.entry_count, 3);
        assert_eq!(counts.bytes_written, 5);
        let out = dir.path().join("export");
        let shape = super::super::extract::Shape::Tree;
        super::super::extract::extract(&dir.path().join("out.tar"), &out, &shape).unwrap();
        assert_eq!(fs::read_to_string(out.join("src/a.txt")).unwrap(), "hello");
        assert_eq!(
            fs::read_link(out.join("link")).unwrap(),
            Path::new("src/a.txt")
        );
    }
}
