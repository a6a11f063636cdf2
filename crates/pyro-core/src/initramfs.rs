//! The initramfs every VM boots: `pyro-agent` as `/init` plus the kernel modules it loads.
//!
//! The agent is not baked into environments: pyro packs it at run time and caches the image by
//! (kernel release, agent digest), so a new pyro never means rebuilding an environment.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::environment::Installed;
use crate::fsutil;
use crate::{Dirs, Error, ErrorKind, Result};

/// The guest agent binary pyro will put in VMs.
#[derive(Debug, Clone)]
pub struct Agent {
    pub path: PathBuf,
    pub sha256: String,
}

impl Agent {
    /// `PYRO_AGENT`, else `pyro-agent` beside the running executable.
    pub fn locate(dirs: &Dirs) -> Result<Agent> {
        let path = match std::env::var_os("PYRO_AGENT").filter(|v| !v.is_empty()) {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe()
                .map_err(|e| Error::internal(format!("cannot find the running executable: {e}")))?
                .with_file_name("pyro-agent"),
        };
        let meta = fs::metadata(&path).map_err(|_| {
            Error::new(ErrorKind::MissingTool, format!("the guest agent is missing: {} does not exist", path.display()))
                .with_hint("install pyro with scripts/setup.sh (it installs pyro-agent beside pyro), or set PYRO_AGENT")
        })?;
        check_static(&path)?;
        let sha256 = cached_digest(dirs, &path, &meta)?;
        Ok(Agent { path, sha256 })
    }
}

/// The agent is PID 1 in an initramfs with no libc: a dynamically linked build cannot start there.
fn check_static(path: &Path) -> Result<()> {
    let bytes = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let bad = |why: &str| {
        Error::new(ErrorKind::InvalidArgument, format!("{} cannot be the guest agent: {why}", path.display()))
            .with_hint("build it with the workspace's .cargo/config.toml (static, crt-static), e.g. `cargo build -p pyro-agent`")
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err(bad("not a 64-bit ELF executable"));
    }
    let u16_at = |off: usize| u16::from_le_bytes([bytes[off], bytes[off + 1]]) as usize;
    let u64_at = |off: usize| {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&bytes[off..off + 8]);
        u64::from_le_bytes(raw) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if at + 4 > bytes.len() {
            return Err(bad("truncated program headers"));
        }
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) == PT_INTERP
        {
            return Err(bad("it is dynamically linked"));
        }
    }
    Ok(())
}

/// Hashing the agent on every run is wasted work: cache its digest by (inode, size, mtime, ctime).
fn cached_digest(dirs: &Dirs, path: &Path, meta: &fs::Metadata) -> Result<String> {
    let key = format!(
        "{}-{}-{}-{}-{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
        meta.ctime()
    );
    let cache = dirs.initramfs().join("agent-digests").join(key);
    if let Ok(digest) = fs::read_to_string(&cache) {
        if digest.len() == 64 {
            return Ok(digest);
        }
    }
    let digest = fsutil::sha256_file(path)?;
    if fsutil::create_dir_all(cache.parent().unwrap_or(Path::new("."))).is_ok() {
        let _ = fsutil::write_atomic(&cache, digest.as_bytes());
    }
    Ok(digest)
}

/// The initramfs for `env` and `agent`, built on first use.
pub fn ensure(dirs: &Dirs, env: &Installed, agent: &Agent) -> Result<PathBuf> {
    let dir = dirs.initramfs();
    let path = dir.join(format!(
        "{}-{}.cpio",
        env.manifest.kernel_release,
        &agent.sha256[..16]
    ));
    if path.exists() {
        return Ok(path);
    }
    fsutil::create_dir_all(&dir)?;
    let mut archive = Cpio::default();
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "base",
        "rw",
        "newroot",
        "lib",
        "lib/modules",
    ] {
        archive.dir(d, 0o755);
    }
    archive.char_device("dev/console", 0o600, 5, 1);
    archive.char_device("dev/null", 0o666, 1, 3);
    let agent_bytes = fs::read(&agent.path).map_err(|e| Error::io("read", &agent.path, e))?;
    archive.file("init", 0o755, &agent_bytes);
    for (name, module) in env.manifest.modules.iter().zip(env.module_paths()) {
        let bytes = fs::read(&module).map_err(|e| Error::io("read", &module, e))?;
        archive.file(&format!("lib/modules/{name}.ko"), 0o644, &bytes);
    }
    let order = env.manifest.modules.join("\n") + "\n";
    archive.file("lib/modules/order", 0o644, order.as_bytes());
    fsutil::write_atomic(&path, &archive.finish())?;
    Ok(path)
}

/// Removes initramfs images that no installed kernel with the current agent would use. A running VM is
/// not affected: QEMU reads its initramfs once, at start.
pub fn prune(dirs: &Dirs, kernel_releases: &[String]) -> Result<Vec<String>> {
    let Ok(agent) = Agent::locate(dirs) else {
        return Ok(Vec::new()); // without the current agent we cannot tell what is stale
    };
    let keep: Vec<String> = kernel_releases
        .iter()
        .map(|k| format!("{k}-{}.cpio", &agent.sha256[..16]))
        .collect();
    let mut deleted = Vec::new();
    for entry in fs::read_dir(dirs.initramfs())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cpio") && !keep.contains(&name) {
            fs::remove_file(entry.path()).map_err(|e| Error::io("remove", &entry.path(), e))?;
            deleted.push(name);
        }
    }
    deleted.sort();
    Ok(deleted)
}

/// A writer of the `newc` cpio format the kernel unpacks.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, &[], (0, 0));
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data, (0, 0));
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut cpio = Cpio::default();
        cpio.dir("dev", 0o755);
        cpio.file("init", 0o755, b"abc");
        let out = cpio.finish();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
