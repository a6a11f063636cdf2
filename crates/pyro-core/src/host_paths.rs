//! Host paths a model may name. An MCP client is steered by what it reads, and a hostile guest writes
//! much of that (file names, command output), so the host paths its tool calls name (`seed_path`,
//! `source_path`, `output_path`) must stay inside roots the user chose when starting the server:
//! the project, and directories given with `--allow-host-path`. pyro's own state and cache are
//! never among them.

use std::path::{Component, Path, PathBuf};

use crate::{Dirs, Error, Result};

/// The directories host paths must stay in.
#[derive(Debug, Clone, Default)]
pub struct HostRoots {
    roots: Vec<PathBuf>,
    /// Relative paths are taken from here (the project, else the server's working directory).
    base: PathBuf,
    /// pyro's own directories, refused even inside a root.
    private: Vec<PathBuf>,
}

/// What a path is for: reading an existing file or directory, or creating a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Create,
}

impl HostRoots {
    /// Roots from directories that must exist; `base` resolves relative paths.
    pub fn new(roots: &[PathBuf], base: &Path, dirs: &Dirs) -> Result<HostRoots> {
        let mut resolved = Vec::new();
        for root in roots {
            let real = std::fs::canonicalize(root).map_err(|e| {
                Error::invalid(format!(
                    "cannot use {} as an allowed host path: {e}",
                    root.display()
                ))
            })?;
            if !real.is_dir() {
                return Err(Error::invalid(format!(
                    "{} is not a directory; --allow-host-path takes directories",
                    root.display()
                )));
            }
            resolved.push(real);
        }
        let private = [dirs.state(), dirs.cache()]
            .iter()
            .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf()))
            .collect();
        Ok(HostRoots {
            roots: resolved,
            base: base.to_path_buf(),
            private,
        })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// `path` as a real absolute path inside a root, or an error that names the roots and the flag
    /// that adds one. Links are resolved first, so one cannot point out of a root.
    pub fn check(&self, path: &Path, access: Access) -> Result<PathBuf> {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        };
        let real = match access {
            Access::Read => std::fs::canonicalize(&absolute)
                .map_err(|_| Error::invalid(format!("{} does not exist", absolute.display())))?,
            Access::Create => resolve_new(&absolute)?,
        };
        let inside = self.roots.iter().any(|root| real.starts_with(root));
        let private = self.private.iter().any(|dir| real.starts_with(dir));
        if inside && !private {
            return Ok(real);
        }
        let roots = if self.roots.is_empty() {
            "none".to_string()
        } else {
            self.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let why = if private {
            "is inside pyro's own state or cache".to_string()
        } else {
            format!("is outside the host paths this server may use ({roots})")
        };
        Err(Error::invalid(format!("{} {why}", real.display())).with_hint(
            "start the server with --allow-host-path DIR to let tools use DIR (the project is allowed already)",
        ))
    }
}

/// A path that does not exist yet, with its existing ancestors' links resolved.
fn resolve_new(path: &Path) -> Result<PathBuf> {
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(Error::invalid(format!(
            "{} must not contain `.` or `..` components",
            path.display()
        )));
    }
    let mut existing = path;
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        let Some(name) = existing.file_name() else {
            break;
        };
        rest.push(name.to_owned());
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let mut real = std::fs::canonicalize(existing)
        .map_err(|e| Error::invalid(format!("cannot resolve {}: {e}", existing.display())))?;
    for name in rest.iter().rev() {
        real.push(name);
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_roots() {
        let top = tempfile::tempdir().unwrap();
        let project = top.path().join("project");
        let outside = top.path().join("outside");
        let state = top.path().join("state");
        for d in [&project, &outside, &state] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(&outside, project.join("escape")).unwrap();
        let dirs = Dirs::new(top.path().join("cache"), state.clone());
        let roots = HostRoots::new(std::slice::from_ref(&project), &project, &dirs).unwrap();
        assert!(roots.check(Path::new("."), Access::Read).is_ok());
        assert!(roots
            .check(Path::new("out/report.md"), Access::Create)
            .is_ok());
        for (path, access) in [
            (outside.clone(), Access::Read),
            (project.join("escape"), Access::Read),
            (project.join("escape/new.txt"), Access::Create),
            (project.join("../outside/x"), Access::Create),
            (PathBuf::from("/etc/passwd"), Access::Read),
        ] {
            let err = roots.check(&path, access).unwrap_err();
            assert!(
                err.hint().unwrap_or_default().contains("--allow-host-path")
                    || err.message().contains(".."),
                "{}: {}",
                path.display(),
                err.message()
            );
        }
        let with_state = HostRoots::new(&[top.path().to_path_buf()], &project, &dirs).unwrap();
        assert!(with_state.check(&state, Access::Read).is_err());
        assert!(with_state.check(&outside, Access::Read).is_ok());
        let none = HostRoots::new(&[], &project, &dirs).unwrap();
        assert!(none.check(&project, Access::Read).is_err());
    }
}
