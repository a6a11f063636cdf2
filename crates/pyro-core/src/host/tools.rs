//! Host programs pyro runs, and the Debian package that provides each.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tool {
    pub binary: &'static str,
    pub package: &'static str,
    pub purpose: &'static str,
}

pub const QEMU: Tool = Tool {
    binary: "qemu-system-x86_64",
    package: "qemu-system-x86",
    purpose: "runs the microVMs",
};
pub const QEMU_IMG: Tool = Tool {
    binary: "qemu-img",
    package: "qemu-utils",
    purpose: "makes the VMs' disks and their snapshots",
};
pub const QEMU_NBD: Tool = Tool {
    binary: "qemu-nbd",
    package: "qemu-utils",
    purpose: "serves disk snapshots to their VM for diffs",
};
pub const MMDEBSTRAP: Tool = Tool {
    binary: "mmdebstrap",
    package: "mmdebstrap",
    purpose: "builds environments from Debian packages",
};
pub const MKE2FS: Tool = Tool {
    binary: "mke2fs",
    package: "e2fsprogs",
    purpose: "creates disk images",
};

pub const GIT: Tool = Tool {
    binary: "git",
    package: "git",
    purpose: "lists a project's files for project-aware seeding",
};

/// Everything pyro needs on the host.
pub const REQUIRED: &[Tool] = &[QEMU, QEMU_IMG, QEMU_NBD, MMDEBSTRAP, MKE2FS];

/// Extra directories searched after `PATH`: `mke2fs` lives in `/usr/sbin`, which a user's PATH may lack.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin"];

impl Tool {
    /// The tool's path, or an error naming the package to install.
    pub fn find(&self) -> Result<PathBuf> {
        self.locate().ok_or_else(|| {
            Error::new(
                ErrorKind::MissingTool,
                format!("`{}` is not installed; pyro needs it because it {}", self.binary, self.purpose),
            )
            .with_hint(format!(
                "install the Debian package `{}` (sudo apt-get install {}), or run scripts/setup.sh",
                self.package, self.package
            ))
        })
    }

    pub fn locate(&self) -> Option<PathBuf> {
        let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        path_dirs
            .iter()
            .map(PathBuf::as_path)
            .chain(EXTRA_DIRS.iter().map(Path::new))
            .map(|dir| dir.join(self.binary))
            .find(|candidate| is_executable(candidate))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
