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
    /// `base` (as given, perhaps through a link) is itself one of the roots.
    base_is_root: bool,
    /// The roots as the user spelled them (absolute, perhaps through links), for paths spelled so.
    given: Vec<PathBuf>,
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
        let base_is_root = std::fs::canonicalize(base).is_ok_and(|real| resolved.contains(&real));
        let given = roots
            .iter()
            .filter_map(|r| std::path::absolute(r).ok())
            .map(|r| lexically_normal(&r))
            .collect();
        Ok(HostRoots {
            roots: resolved,
            base: base.to_path_buf(),
            private,
            base_is_root,
            given,
        })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// `path` as a real absolute path inside a root, or an error that names the roots and the flag
    /// that adds one. Links are resolved first, so one cannot point out of a root. Errors name the
    /// path as given: they never tell whether something outside the roots exists, nor where a link
    /// leads.
    pub fn check(&self, path: &Path, access: Access) -> Result<PathBuf> {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        };
        if !self.holds(&lexically_normal(&absolute)) {
            return Err(self.refusal(&absolute, false));
        }
        let real = match access {
            Access::Read => match std::fs::canonicalize(&absolute) {
                Ok(real) => real,
                // Missing: say so only when what exists of it lies inside (else nothing is told).
                Err(_) => match resolve_new(&lexically_normal(&absolute)) {
                    Ok(real) if self.holds(&real) => {
                        return Err(Error::invalid(format!(
                            "{} does not exist",
                            absolute.display()
                        )))
                    }
                    _ => return Err(self.refusal(&absolute, false)),
                },
            },
            Access::Create => resolve_new(&absolute)?,
        };
        let private = self.private.iter().any(|dir| real.starts_with(dir));
        if self.holds(&real) && !private {
            return Ok(real);
        }
        Err(self.refusal(&absolute, private))
    }

    /// Whether `path` lies in a root, by its name alone (a root counts as given, and resolved).
    fn holds(&self, path: &Path) -> bool {
        self.roots
            .iter()
            .chain(&self.given)
            .any(|root| path.starts_with(root))
            || (self.base_is_root && path.starts_with(lexically_normal(&self.base)))
    }

    fn refusal(&self, path: &Path, private: bool) -> Error {
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
        Error::invalid(format!("{} {why}", path.display())).with_next(crate::Next::AllowHostPath)
    }
}

/// `path` with `.` and `..` taken away by name (an absolute path).
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::Normal(name) => normal.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normal
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
                err.next() == Some(&crate::Next::AllowHostPath) || err.message().contains(".."),
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

    #[test]
    fn refusals_reveal_nothing_outside_the_roots() {
        let top = tempfile::tempdir().unwrap();
        let project = top.path().join("project");
        let secret = top.path().join("secret");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(&secret).unwrap();
        std::os::unix::fs::symlink(&secret, project.join("link")).unwrap();
        let dirs = Dirs::new(top.path().join("cache"), top.path().join("state"));
        let roots = HostRoots::new(std::slice::from_ref(&project), &project, &dirs).unwrap();
        // Existing or not, a path outside gets the same refusal.
        let there = roots.check(&secret, Access::Read).unwrap_err();
        let absent = roots
            .check(&secret.join("nothing"), Access::Read)
            .unwrap_err();
        assert!(there.message().contains("outside"), "{}", there.message());
        assert!(absent.message().contains("outside"), "{}", absent.message());
        // A link out is refused under its own name, not its target's, whether its target exists.
        let err = roots
            .check(Path::new("link/new.txt"), Access::Create)
            .unwrap_err();
        assert!(!err.message().contains("secret"), "{}", err.message());
        let there = roots.check(Path::new("link"), Access::Read).unwrap_err();
        let absent = roots
            .check(Path::new("link/nothing"), Access::Read)
            .unwrap_err();
        assert!(there.message().contains("outside"), "{}", there.message());
        assert!(absent.message().contains("outside"), "{}", absent.message());
        // `..` that climbs out is judged by where it leads, existing or not.
        let climb = roots
            .check(Path::new("../secret"), Access::Read)
            .unwrap_err();
        assert!(climb.message().contains("outside"), "{}", climb.message());
        // Inside, a missing file is just missing.
        let err = roots
            .check(Path::new("missing.txt"), Access::Read)
            .unwrap_err();
        assert!(
            err.message().contains("does not exist"),
            "{}",
            err.message()
        );
    }
}
