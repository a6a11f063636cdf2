//! Where pyro keeps things: environments in the XDG cache dir, VMs and records in the XDG state dir.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Dirs {
    cache: PathBuf,
    state: PathBuf,
}

impl Dirs {
    /// `PYRO_CACHE_DIR`, else `$XDG_CACHE_HOME/pyro`, else `~/.cache/pyro`; the state dir likewise with
    /// `PYRO_STATE_DIR`, `$XDG_STATE_HOME/pyro`, `~/.local/state/pyro`.
    pub fn from_env() -> Result<Dirs> {
        let cache = resolve("PYRO_CACHE_DIR", "XDG_CACHE_HOME", ".cache")?;
        let state = resolve("PYRO_STATE_DIR", "XDG_STATE_HOME", ".local/state")?;
        Ok(Dirs { cache, state })
    }

    pub fn new(cache: PathBuf, state: PathBuf) -> Dirs {
        Dirs { cache, state }
    }

    pub fn cache(&self) -> &Path {
        &self.cache
    }

    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Built environments, one directory each.
    pub fn environments(&self) -> PathBuf {
        self.cache.join("environments")
    }

    /// Initramfs images, by kernel release and agent digest.
    pub fn initramfs(&self) -> PathBuf {
        self.cache.join("initramfs")
    }

    /// Running VMs, one directory each, owned by that VM's supervisor.
    pub fn vms(&self) -> PathBuf {
        self.state.join("vms")
    }
}

fn resolve(own: &str, xdg: &str, home_default: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(own).filter(|v| !v.is_empty()) {
        return absolute(PathBuf::from(dir), own);
    }
    if let Some(dir) = std::env::var_os(xdg).filter(|v| !v.is_empty()) {
        return absolute(PathBuf::from(dir).join("pyro"), xdg);
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::invalid("HOME is not set")
                .with_hint(format!("set {own} to a directory pyro may use"))
        })?;
    Ok(PathBuf::from(home).join(home_default).join("pyro"))
}

fn absolute(path: PathBuf, var: &str) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|e| {
            Error::invalid(format!(
                "{var} is relative and the current directory is unreadable: {e}"
            ))
        })
}
