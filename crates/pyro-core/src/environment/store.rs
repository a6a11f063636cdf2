//! Reading the cache: manifests, installed state, listing and pruning.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::{self, EnvironmentSpec};
use crate::fsutil::{self, FileLock};
use crate::{Dirs, Error, Result};

pub const MANIFEST_FORMAT: u32 = 1;
pub const KERNEL_FILE: &str = "vmlinuz";
pub const ROOTFS_FILE: &str = "rootfs.ext4";
pub const MODULES_DIR: &str = "modules";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// `manifest.json` of a built environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub recipe_digest: String,
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
    pub kernel_release: String,
    pub kernel_package: String,
    /// Kernel modules in load order (file `modules/<name>.ko`).
    pub modules: Vec<String>,
    pub artifacts: Vec<Artifact>,
    /// Digest over every artifact's digest: names this build.
    pub digest: String,
    pub built_at_unix: u64,
    pub build_seconds: f64,
    pub pyro_version: String,
}

/// An environment that is built, current and complete.
#[derive(Debug, Clone)]
pub struct Installed {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Installed {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(KERNEL_FILE)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS_FILE)
    }

    pub fn module_paths(&self) -> Vec<PathBuf> {
        self.manifest
            .modules
            .iter()
            .map(|m| self.dir.join(MODULES_DIR).join(format!("{m}.ko")))
            .collect()
    }
}

/// What `env list` and `env inspect` show.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentInfo {
    pub name: String,
    pub description: String,
    pub distribution: String,
    pub distribution_version: String,
    pub default_packages: Vec<String>,
    pub installed: bool,
    /// `installed`, `not_installed`, `stale` (built from an older recipe) or `incomplete`.
    pub state: String,
    /// Why a build is stale or incomplete.
    pub state_detail: Option<String>,
    pub cache_dir: String,
    pub install_dir: String,
    pub manifest: Option<Manifest>,
}

pub fn env_dir(dirs: &Dirs, spec: &EnvironmentSpec) -> PathBuf {
    dirs.environments().join(spec.slug())
}

pub fn lock_path(dirs: &Dirs, spec: &EnvironmentSpec) -> PathBuf {
    dirs.environments().join(format!(".{}.lock", spec.slug()))
}

enum State {
    Installed(Installed),
    NotInstalled,
    Stale(Manifest),
    Incomplete(String),
}

fn state(dirs: &Dirs, spec: &EnvironmentSpec) -> State {
    let dir = env_dir(dirs, spec);
    let manifest_path = dir.join("manifest.json");
    let Ok(text) = fs::read(&manifest_path) else {
        return State::NotInstalled;
    };
    let manifest: Manifest = match serde_json::from_slice(&text) {
        Ok(m) => m,
        Err(e) => return State::Incomplete(format!("unreadable manifest: {e}")),
    };
    if manifest.format != MANIFEST_FORMAT || manifest.recipe_digest != spec.recipe_digest() {
        return State::Stale(manifest);
    }
    for artifact in &manifest.artifacts {
        let size = fs::metadata(dir.join(&artifact.path)).map(|m| m.len()).ok();
        if size != Some(artifact.size_bytes) {
            return State::Incomplete(format!(
                "{} is missing or has the wrong size",
                artifact.path
            ));
        }
    }
    State::Installed(Installed { dir, manifest })
}

/// The installed build of `spec`, if there is a current, complete one.
pub fn installed(dirs: &Dirs, spec: &EnvironmentSpec) -> Option<Installed> {
    match state(dirs, spec) {
        State::Installed(installed) => Some(installed),
        _ => None,
    }
}

fn info(dirs: &Dirs, spec: &EnvironmentSpec) -> EnvironmentInfo {
    let (state_name, manifest, state_detail) = match state(dirs, spec) {
        State::Installed(i) => ("installed", Some(i.manifest), None),
        State::NotInstalled => ("not_installed", None, None),
        State::Stale(m) => (
            "stale",
            Some(m),
            Some("built from an older recipe: pull it again".to_string()),
        ),
        State::Incomplete(why) => ("incomplete", None, Some(why)),
    };
    EnvironmentInfo {
        name: spec.name.to_string(),
        description: spec.description.to_string(),
        distribution: spec.distribution.to_string(),
        distribution_version: spec.distribution_version.to_string(),
        default_packages: spec.packages.iter().map(|p| p.to_string()).collect(),
        installed: state_name == "installed",
        state: state_name.to_string(),
        state_detail,
        cache_dir: dirs.cache().display().to_string(),
        install_dir: env_dir(dirs, spec).display().to_string(),
        manifest,
    }
}

pub fn list(dirs: &Dirs) -> Vec<EnvironmentInfo> {
    catalog::CATALOG
        .iter()
        .map(|spec| info(dirs, spec))
        .collect()
}

pub fn inspect(dirs: &Dirs, name: &str) -> Result<EnvironmentInfo> {
    Ok(info(dirs, catalog::lookup(name)?))
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub deleted_environment_dirs: Vec<String>,
    /// Initramfs images of kernels or agents no longer in use.
    pub deleted_initramfs: Vec<String>,
    /// Warm templates no current environment and agent can use.
    pub deleted_templates: Vec<String>,
    pub count: usize,
}

/// Removes what no current environment uses: interrupted builds, stale or incomplete builds, unknown
/// directories, and initramfs images of other kernels or agents than the installed ones.
pub fn prune(dirs: &Dirs) -> Result<PruneReport> {
    let in_use = base_images_in_use(dirs);
    let root = dirs.environments();
    let mut deleted = Vec::new();
    let entries: Vec<fs::DirEntry> = match fs::read_dir(&root) {
        Ok(entries) => entries.flatten().collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("read", &root, e)),
    };
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.ends_with(".lock") || !path.is_dir() {
            continue;
        }
        let known = catalog::CATALOG.iter().find(|spec| spec.slug() == name);
        let remove = match known {
            Some(spec) => {
                let _lock = FileLock::acquire(&lock_path(dirs, spec))?;
                // A base image an existing workspace boots from stays, stale or not.
                !matches!(state(dirs, spec), State::Installed(_))
                    && !in_use.contains(&path.join(ROOTFS_FILE))
            }
            None => staging_is_abandoned(dirs, &name),
        };
        if remove {
            fsutil::remove_tree(&path)?;
            deleted.push(name);
        }
    }
    deleted.sort();
    let kernels: Vec<String> = catalog::CATALOG
        .iter()
        .filter_map(|spec| installed(dirs, spec))
        .map(|i| i.manifest.kernel_release)
        .collect();
    let deleted_initramfs = crate::initramfs::prune(dirs, &kernels)?;
    let digests: Vec<String> = catalog::CATALOG
        .iter()
        .filter_map(|spec| installed(dirs, spec))
        .map(|i| i.manifest.digest)
        .collect();
    let deleted_templates = crate::template::prune(dirs, &digests)?;
    Ok(PruneReport {
        count: deleted.len() + deleted_initramfs.len() + deleted_templates.len(),
        deleted_environment_dirs: deleted,
        deleted_initramfs,
        deleted_templates,
    })
}

/// The base images the state dir's workspaces boot from (their VM records name them).
fn base_images_in_use(dirs: &Dirs) -> Vec<PathBuf> {
    let workspaces = dirs.state().join("workspaces");
    fs::read_dir(&workspaces)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            fs::read(entry.path().join("vm").join(crate::supervisor::RECORD_FILE)).ok()
        })
        .filter_map(|bytes| serde_json::from_slice::<crate::supervisor::VmRecord>(&bytes).ok())
        .map(|record| record.config.base_image)
        .collect()
}

/// A `.staging-<slug>-*` directory whose build is not running (its lock is free), or anything else.
fn staging_is_abandoned(dirs: &Dirs, name: &str) -> bool {
    let slug_of = |spec: &&EnvironmentSpec| name.starts_with(&format!(".staging-{}-", spec.slug()));
    match catalog::CATALOG.iter().find(slug_of) {
        Some(spec) => FileLock::try_acquire(&lock_path(dirs, spec))
            .ok()
            .flatten()
            .is_some(),
        None => true,
    }
}

pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join("manifest.json")
}

/// The installed build of the environment called `name`, if any.
pub fn installed_by_name(dirs: &Dirs, name: &str) -> Result<Option<Installed>> {
    Ok(installed(dirs, catalog::lookup(name)?))
}
