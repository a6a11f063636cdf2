//! Building an environment from Debian packages: kernel, modules, root filesystem, ext4 base image.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::kmod;
use super::store::{
    self, Artifact, Installed, Manifest, KERNEL_FILE, MANIFEST_FORMAT, MODULES_DIR, ROOTFS_FILE,
};
use crate::catalog::{self, EnvironmentSpec};
use crate::fsutil::{self, FileLock};
use crate::host::{mirror, tools};
use crate::{Dirs, Error, ErrorKind, Progress, Result};

const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// Builds `name` unless a current build is installed, and returns it. Concurrent pulls of one
/// environment wait for each other; the loser finds the winner's build.
pub fn pull(dirs: &Dirs, name: &str, force: bool, progress: &dyn Progress) -> Result<Installed> {
    let spec = catalog::lookup(name)?;
    fsutil::create_dir_all(&dirs.environments())?;
    fsutil::harden(
        dirs.cache(),
        &["environments", "initramfs", "templates", "repos"],
    );
    let _lock = FileLock::acquire(&store::lock_path(dirs, spec))?;
    if !force {
        if let Some(installed) = store::installed(dirs, spec) {
            return Ok(installed);
        }
    }
    let mmdebstrap = tools::MMDEBSTRAP.find()?;
    let mke2fs = tools::MKE2FS.find()?;
    remove_abandoned_staging(dirs, spec);
    let staging = dirs.environments().join(format!(
        ".staging-{}-{}",
        spec.slug(),
        fsutil::random_hex(4)?
    ));
    fsutil::create_dir_all(&staging)?;
    let result = build_into(&staging, spec, &mmdebstrap, &mke2fs, progress);
    let manifest = match result {
        Ok(manifest) => manifest,
        Err(err) => {
            let _ = fsutil::remove_tree(&staging);
            return Err(err);
        }
    };
    let final_dir = store::env_dir(dirs, spec);
    let trash =
        dirs.environments()
            .join(format!(".trash-{}-{}", spec.slug(), fsutil::random_hex(4)?));
    if final_dir.exists() {
        fs::rename(&final_dir, &trash).map_err(|e| Error::io("move aside", &final_dir, e))?;
    }
    fs::rename(&staging, &final_dir).map_err(|e| Error::io("install", &final_dir, e))?;
    let _ = fsutil::remove_tree(&trash);
    progress.finish();
    Ok(Installed {
        dir: final_dir,
        manifest,
    })
}

/// Removes what earlier builds of `spec` left (their lock is ours now, so they are over). Best
/// effort: a step of a build whose pyro was killed may still be writing in its directory for a
/// moment (it is told to stop, its own children are not), and that is no reason to fail this
/// build, which stages elsewhere. What is left goes at the next pull or prune.
fn remove_abandoned_staging(dirs: &Dirs, spec: &EnvironmentSpec) {
    let prefixes = [
        format!(".staging-{}-", spec.slug()),
        format!(".trash-{}-", spec.slug()),
    ];
    if let Ok(entries) = fs::read_dir(dirs.environments()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                let _ = fsutil::remove_tree(&entry.path());
            }
        }
    }
}

fn build_into(
    staging: &Path,
    spec: &EnvironmentSpec,
    mmdebstrap: &Path,
    mke2fs: &Path,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let started = Instant::now();
    let mirror = mirror::debian_mirror();
    let log = staging.join("build.log");

    progress.phase(&format!(
        "{}: fetching the kernel ({KERNEL_PACKAGE} from {mirror})",
        spec.name
    ));
    let kernel_tree = staging.join("kernel-tree");
    run_logged(
        fsutil::with_guest_umask(&mut Command::new(mmdebstrap))
            .args(["--quiet", "--variant=extract", "--mode=auto"])
            .arg(format!("--include={KERNEL_PACKAGE}"))
            .arg(spec.suite)
            .arg(&kernel_tree)
            .arg(&mirror),
        &log,
        "fetching the kernel package",
    )?;
    let (kernel_release, vmlinuz) = find_kernel(&kernel_tree)?;
    fs::copy(&vmlinuz, staging.join(KERNEL_FILE)).map_err(|e| Error::io("copy", &vmlinuz, e))?;
    let modules = kmod::resolve(&kernel_tree.join("lib/modules").join(&kernel_release))?;
    let modules_dir = staging.join(MODULES_DIR);
    fsutil::create_dir_all(&modules_dir)?;
    for (name, path) in &modules {
        let target = modules_dir.join(format!("{name}.ko"));
        fs::copy(path, &target).map_err(|e| Error::io("copy", path, e))?;
    }
    fsutil::remove_tree(&kernel_tree)?;

    progress.phase(&format!(
        "{}: building the root filesystem (mmdebstrap {})",
        spec.name, spec.suite
    ));
    let rootfs = staging.join("rootfs");
    let mut command = Command::new(mmdebstrap);
    fsutil::with_guest_umask(&mut command).args(["--quiet", "--variant=apt", "--mode=auto"]);
    if !spec.packages.is_empty() {
        command.arg(format!("--include={}", spec.packages.join(",")));
    }
    command.arg(spec.suite).arg(&rootfs).arg(&mirror);
    run_logged(&mut command, &log, "building the root filesystem")?;
    fsutil::create_dir_all(&rootfs.join("workspace"))?;
    // Identity is given per VM at activation.
    let _ = fs::remove_file(rootfs.join("etc/machine-id"));
    let _ = fs::remove_file(rootfs.join("etc/hostname"));

    progress.phase(&format!("{}: writing the ext4 base image", spec.name));
    let image = staging.join(ROOTFS_FILE);
    let size_mib = image_size_mib(&rootfs);
    run_logged(
        fsutil::with_guest_umask(&mut Command::new(mke2fs))
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-O",
                "^has_journal",
                "-E",
                "root_owner=0:0",
                "-L",
            ])
            .arg(pyro_proto::BASE_DISK_LABEL)
            .arg("-d")
            .arg(&rootfs)
            .arg(&image)
            .arg(format!("{size_mib}M")),
        &log,
        "writing the ext4 image",
    )?;
    fsutil::remove_tree(&rootfs)?;

    progress.phase(&format!("{}: recording digests", spec.name));
    let mut artifact_paths: Vec<String> = vec![KERNEL_FILE.into(), ROOTFS_FILE.into()];
    artifact_paths.extend(
        modules
            .iter()
            .map(|(name, _)| format!("{MODULES_DIR}/{name}.ko")),
    );
    let mut artifacts = Vec::new();
    let mut digest = Sha256::new();
    for path in artifact_paths {
        let full = staging.join(&path);
        let sha256 = fsutil::sha256_file(&full)?;
        let size_bytes = fs::metadata(&full)
            .map_err(|e| Error::io("stat", &full, e))?
            .len();
        digest.update(format!("{path}={sha256}\n"));
        artifacts.push(Artifact {
            path,
            sha256,
            size_bytes,
        });
    }
    let _ = fs::remove_file(&log);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: spec.name.to_string(),
        recipe_digest: spec.recipe_digest(),
        suite: spec.suite.to_string(),
        mirror,
        packages: spec.packages.iter().map(|p| p.to_string()).collect(),
        kernel_release: kernel_release.clone(),
        kernel_package: format!("linux-image-{kernel_release}"),
        modules: modules.into_iter().map(|(name, _)| name).collect(),
        artifacts,
        digest: hex::encode(digest.finalize()),
        built_at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        build_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        pyro_version: crate::VERSION.to_string(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::internal(e.to_string()))?;
    fsutil::write_atomic(&store::manifest_path(staging), &json)?;
    Ok(manifest)
}

/// Runs a build step with its output in `log`; a failure carries the log's tail.
fn run_logged(command: &mut Command, log: &Path, step: &str) -> Result<()> {
    // If pyro dies mid-build, the step is told to stop (and mmdebstrap unmounts what it mounted).
    fsutil::die_with_parent(command, libc::SIGTERM);
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io("open", log, e))?;
    let file2 = file.try_clone().map_err(|e| Error::io("open", log, e))?;
    let status = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .status()
        .map_err(|e| {
            Error::new(
                ErrorKind::EnvironmentBuild,
                format!("{step}: cannot start {command:?}: {e}"),
            )
        })?;
    if status.success() {
        return Ok(());
    }
    Err(Error::new(ErrorKind::EnvironmentBuild, format!("{step} failed ({status}):\n{}", fsutil::tail_lines(log, 15)))
    .with_hint("check that the Debian mirror is reachable (PYRO_DEBIAN_MIRROR overrides it), then pull again"))
}

fn find_kernel(tree: &Path) -> Result<(String, PathBuf)> {
    let boot = tree.join("boot");
    let entries = fs::read_dir(&boot).map_err(|e| Error::io("read", &boot, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((release.to_string(), entry.path()));
        }
    }
    Err(Error::new(
        ErrorKind::EnvironmentBuild,
        format!("{KERNEL_PACKAGE} held no boot/vmlinuz-*"),
    ))
}

/// Size for the base image: the tree's apparent size plus room for metadata, at least 256 MiB.
fn image_size_mib(root: &Path) -> u64 {
    fn walk(dir: &Path, total: &mut u64, inodes: &mut u64) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            *inodes += 1;
            *total += meta.len().div_ceil(4096) * 4096;
            if meta.is_dir() {
                walk(&entry.path(), total, inodes);
            }
        }
    }
    let (mut bytes, mut inodes) = (0, 0);
    walk(root, &mut bytes, &mut inodes);
    let with_metadata = bytes + inodes * 512 + bytes / 5;
    (with_metadata / (1 << 20) + 64).max(256)
}
