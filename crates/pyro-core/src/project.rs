//! Project-aware seeding: which repository an MCP server works on, and the files git would commit.
//!
//! A bare `pyro mcp serve` started inside a git checkout seeds new workspaces from that checkout;
//! `--project-path` pins a directory and `--repo-url` clones a repository (shallowly) into the cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::vocab::SeedMode;
use crate::{fsutil, Dirs, Error, ErrorKind, Result};

/// Where new workspaces are seeded from when a call gives no `seed_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSeed {
    /// The directory whose files are copied.
    pub root: PathBuf,
    /// `project` (a local directory) or `repo_url` (a clone).
    pub mode: SeedMode,
    /// What the user pointed at: the directory or the URL.
    pub source: String,
    /// Copy `.git` too.
    pub include_git: bool,
}

/// The git checkout containing `start`, found by walking up to a `.git` entry.
pub fn detect(start: &Path) -> Option<PathBuf> {
    let start = std::fs::canonicalize(start).ok()?;
    start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

/// A directory given with `--project-path`.
pub fn from_path(path: &Path) -> Result<ProjectSeed> {
    let root = std::fs::canonicalize(path)
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| {
            Error::invalid(format!(
                "project path {} is not a directory",
                path.display()
            ))
        })?;
    Ok(ProjectSeed {
        source: root.display().to_string(),
        root,
        mode: SeedMode::Project,
        include_git: false,
    })
}

/// A shallow clone of `url` in the cache (reused if it is there), for `--repo-url`.
pub fn clone(dirs: &Dirs, url: &str) -> Result<ProjectSeed> {
    if url.trim().is_empty() || url.starts_with('-') {
        return Err(Error::invalid(format!("'{url}' is not a repository URL")));
    }
    let repos = dirs.cache().join("repos");
    fsutil::create_dir_all(&repos)?;
    let key = hex::encode(Sha256::digest(url.as_bytes()));
    let target = repos.join(&key[..16]);
    if !target.join(".git").exists() {
        let git = git_binary()?;
        let staging = repos.join(format!(".clone-{}-{}", &key[..16], fsutil::random_hex(4)?));
        let out = fsutil::with_guest_umask(&mut Command::new(git))
            .args(["clone", "--depth", "1", "--quiet", "--", url])
            .arg(&staging)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot run git: {e}")))?;
        if !out.status.success() {
            let _ = fsutil::remove_tree(&staging);
            return Err(Error::invalid(format!(
                "cannot clone {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
            .with_hint("check the URL and that this machine can reach it, or give the server a local checkout instead"));
        }
        if std::fs::rename(&staging, &target).is_err() {
            // Another process cloned it first.
            let _ = fsutil::remove_tree(&staging);
        }
    }
    Ok(ProjectSeed {
        root: target,
        mode: SeedMode::RepoUrl,
        source: url.to_string(),
        include_git: false,
    })
}

fn git_binary() -> Result<PathBuf> {
    crate::host::tools::GIT.find()
}

/// The files git would commit (tracked, plus untracked files not ignored), relative to `root`. For a
/// directory outside any checkout the list is empty, and the caller copies everything but `.git`.
pub fn files(root: &Path) -> Result<Vec<String>> {
    // Inside a checkout (at its root or below), git lists the files relative to `root`.
    if detect(root).is_none() {
        return Ok(Vec::new());
    }
    let git = git_binary()?;
    let out = Command::new(git)
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "cannot list the files of {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut files: Vec<String> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_files_respect_gitignore() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::write(root.join(".gitignore"), "target/\n").unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        std::fs::write(root.join("target/big"), "x").unwrap();
        std::fs::write(root.join("tracked.txt"), "t").unwrap();
        git(&["add", "tracked.txt"]);
        std::fs::write(root.join("untracked.txt"), "u").unwrap();
        assert_eq!(
            files(root).unwrap(),
            [".gitignore", "tracked.txt", "untracked.txt"]
        );
        assert_eq!(
            detect(&root.join("target")).unwrap(),
            std::fs::canonicalize(root).unwrap()
        );
    }
}
