//! Warm templates: a memory snapshot of an agent-ready guest that any VM of the same shape starts from.
//!
//! `prepare` boots a guest whose RAM lives in a file (`share=on`), waits until the agent answers a probe
//! (ready, before any per-VM disk is mounted and before any session), stops it and migrates its device
//! state out with `x-ignore-shared` (the RAM stays in the file). A restore maps that file copy-on-write
//! (`share=off`), migrates the state in, and resumes; activation then makes the guest the VM's own.
//!
//! A template is keyed by everything the snapshot depends on (environment digest, agent digest, kernel,
//! QEMU version, accelerator, vCPUs, memory, network, disk size, and [`VM_SHAPE_VERSION`]). Its files are
//! hashed at `prepare`; the digests are cached with each file's (device, inode, size, mtime, ctime), and a
//! restore re-hashes only a file whose identity changed. Files are never rewritten in place.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::engine::instance::Instance;
use crate::engine::qmp::Qmp;
use crate::engine::snapshot;
use crate::engine::{Memory, Qemu, VmConfig, AGENT_SOCKET, QMP_SOCKET, VM_SHAPE_VERSION};
use crate::environment::Installed;
use crate::host::accel::{self, Accelerator};
use crate::initramfs::Agent;
use crate::{fsutil, Dirs, Error, ErrorKind, Progress, Result};

pub const RAM_FILE: &str = "ram";
pub const STATE_FILE: &str = "state";
const MANIFEST_FILE: &str = "template.json";
const DIGESTS_FILE: &str = "digests.json";
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Everything a memory snapshot depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateKey {
    pub environment: String,
    pub environment_digest: String,
    pub agent_sha256: String,
    pub kernel_release: String,
    pub qemu_version: String,
    pub accelerator: Accelerator,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub network: bool,
    pub disk_gib: u32,
    pub shape_version: u32,
}

impl TemplateKey {
    pub fn id(&self) -> String {
        let canonical = serde_json::to_string(self).unwrap_or_default();
        hex::encode(Sha256::digest(canonical.as_bytes()))[..16].to_string()
    }

    /// The shape, in words, for messages.
    pub fn shape(&self) -> String {
        format!(
            "{} vCPU, {} MiB, network {}",
            self.vcpu_count,
            self.mem_mib,
            if self.network { "on" } else { "off" }
        )
    }

    /// The step that makes this template (anew, with `force`).
    pub fn prepare_next(&self, force: bool) -> crate::Next {
        crate::Next::Prepare {
            environment: self.environment.clone(),
            vcpu_count: self.vcpu_count,
            mem_mib: self.mem_mib,
            force,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileDigest {
    pub name: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// The daily-loop manifest of one template (`template.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateManifest {
    pub key: TemplateKey,
    pub pyro_version: String,
    pub created_at_unix_ms: u64,
    /// The template guest's boot id: every VM restored from it reports the same one.
    pub boot_id: String,
    pub files: Vec<FileDigest>,
    pub boot_ms: u64,
    pub snapshot_ms: u64,
}

/// A valid template, ready to restore.
#[derive(Debug, Clone)]
pub struct Template {
    pub dir: PathBuf,
    pub manifest: TemplateManifest,
}

impl Template {
    pub fn memory(&self) -> Memory {
        Memory::Restore {
            ram: self.dir.join(RAM_FILE),
            state: self.dir.join(STATE_FILE),
        }
    }
}

/// What a VM of one shape would boot from.
#[derive(Debug, Clone)]
pub enum Readiness {
    Warm(Box<Template>),
    /// Never prepared (or not built).
    Cold(String),
    /// Prepared, but something it depends on changed or its files are damaged.
    Stale(String),
}

pub fn templates_dir(dirs: &Dirs) -> PathBuf {
    dirs.cache().join("templates")
}

fn template_dir(dirs: &Dirs, key: &TemplateKey) -> PathBuf {
    templates_dir(dirs).join(key.id())
}

/// The QEMU version, cached by the binary's identity (running `--version` costs a process start).
pub fn qemu_version(dirs: &Dirs, binary: &Path) -> Result<String> {
    let meta = fs::metadata(binary).map_err(|e| Error::io("inspect", binary, e))?;
    let cache = dirs.cache().join("engine-versions").join(format!(
        "{}-{}-{}",
        meta.ino(),
        meta.size(),
        meta.mtime()
    ));
    if let Ok(version) = fs::read_to_string(&cache) {
        return Ok(version);
    }
    let version = crate::engine::qemu_version(binary)?;
    if fsutil::create_dir_all(cache.parent().unwrap_or(Path::new("."))).is_ok() {
        let _ = fsutil::write_replace(&cache, version.as_bytes());
    }
    Ok(version)
}

/// The key of the template a VM of this shape would use.
#[allow(clippy::too_many_arguments)]
pub fn key_for(
    dirs: &Dirs,
    env: &Installed,
    agent: &Agent,
    accelerator: Accelerator,
    vcpu_count: u8,
    mem_mib: u32,
    network: bool,
    disk_gib: u32,
) -> Result<TemplateKey> {
    let qemu = crate::host::tools::QEMU.find()?;
    Ok(TemplateKey {
        environment: env.manifest.name.clone(),
        environment_digest: env.manifest.digest.clone(),
        agent_sha256: agent.sha256.clone(),
        kernel_release: env.manifest.kernel_release.clone(),
        qemu_version: qemu_version(dirs, &qemu)?,
        accelerator,
        vcpu_count,
        mem_mib,
        network,
        disk_gib,
        shape_version: VM_SHAPE_VERSION,
    })
}

fn read_manifest(dir: &Path) -> Option<TemplateManifest> {
    fs::read(dir.join(MANIFEST_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// A file's identity: if it is unchanged, so is its content (a changed byte changes the ctime).
fn identity(meta: &fs::Metadata) -> String {
    format!(
        "{}:{}:{}:{}.{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// Checks every file against its digest, re-hashing only files whose identity changed since the last check.
fn verify(dir: &Path, manifest: &TemplateManifest) -> std::result::Result<(), String> {
    let cache_path = dir.join(DIGESTS_FILE);
    let mut cache: std::collections::BTreeMap<String, String> = fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut changed = false;
    for file in &manifest.files {
        let path = dir.join(&file.name);
        let meta = fs::metadata(&path)
            .map_err(|_| format!("the template file {} is missing", file.name))?;
        if meta.size() != file.size_bytes {
            return Err(format!(
                "the template file {} has the wrong size",
                file.name
            ));
        }
        let id = identity(&meta);
        if cache.get(&file.name) == Some(&id) {
            continue;
        }
        let digest = fsutil::sha256_file(&path).map_err(|e| e.to_string())?;
        if digest != file.sha256 {
            return Err(format!(
                "the template file {} is damaged (its sha256 changed)",
                file.name
            ));
        }
        cache.insert(file.name.clone(), id);
        changed = true;
    }
    if changed {
        if let Ok(json) = serde_json::to_vec(&cache) {
            let _ = fsutil::write_replace(&cache_path, &json);
        }
    }
    Ok(())
}

/// What the key's template is: warm, never prepared, or stale (and why).
pub fn check(dirs: &Dirs, key: &TemplateKey) -> Readiness {
    let dir = template_dir(dirs, key);
    if let Some(manifest) = read_manifest(&dir) {
        return match verify(&dir, &manifest) {
            Ok(()) => Readiness::Warm(Box::new(Template { dir, manifest })),
            Err(why) => Readiness::Stale(format!("{why}; prepare it anew")),
        };
    }
    // Another template of the same environment and shape means something it depended on changed.
    let same_shape = |k: &TemplateKey| {
        k.environment == key.environment
            && k.vcpu_count == key.vcpu_count
            && k.mem_mib == key.mem_mib
            && k.network == key.network
    };
    let others = fs::read_dir(templates_dir(dirs))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| read_manifest(&e.path()));
    for other in others.filter(|m| same_shape(&m.key)) {
        let k = &other.key;
        let what = if k.agent_sha256 != key.agent_sha256 {
            "the guest agent changed"
        } else if k.environment_digest != key.environment_digest {
            "the environment was rebuilt"
        } else if k.kernel_release != key.kernel_release {
            "the kernel changed"
        } else if k.qemu_version != key.qemu_version {
            "QEMU changed"
        } else if k.accelerator != key.accelerator {
            "the accelerator changed"
        } else if k.disk_gib != key.disk_gib || k.shape_version != key.shape_version {
            "the VM layout changed"
        } else {
            continue;
        };
        return Readiness::Stale(format!("{what} since it was prepared; prepare it again"));
    }
    Readiness::Cold(format!(
        "{} was never prepared for {}",
        key.environment,
        key.shape()
    ))
}

/// Removes templates that can never be restored again: made from an environment build that is gone, or
/// with another guest agent than the current one, and interrupted `prepare` runs. A running VM is not
/// affected: it keeps its private mapping of the RAM file.
pub fn prune(dirs: &Dirs, environment_digests: &[String]) -> Result<Vec<String>> {
    let agent = Agent::locate(dirs).ok();
    let mut deleted = Vec::new();
    for entry in fs::read_dir(templates_dir(dirs))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let unusable = match read_manifest(&path) {
            None => {
                // Interrupted: remove unless a prepare holds its lock right now.
                let id = name
                    .trim_start_matches(".staging-")
                    .trim_start_matches(".trash-");
                let id = id.split('-').next().unwrap_or_default();
                let lock = templates_dir(dirs).join(format!(".{id}.lock"));
                matches!(fsutil::FileLock::try_acquire(&lock), Ok(Some(_)))
            }
            Some(manifest) => {
                !environment_digests.contains(&manifest.key.environment_digest)
                    || agent
                        .as_ref()
                        .is_some_and(|a| a.sha256 != manifest.key.agent_sha256)
            }
        };
        if unusable {
            fsutil::remove_tree(&path)?;
            deleted.push(name);
        }
    }
    deleted.sort();
    Ok(deleted)
}

/// The result of `pyro prepare` for one template.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    pub environment: String,
    pub shape: String,
    pub template_id: String,
    /// `created`, or `unchanged` when it was already warm.
    pub action: String,
    pub manifest: TemplateManifest,
}

/// Makes the template for `key` unless a valid one exists (or `force`).
pub async fn prepare(
    dirs: &Dirs,
    env: &Installed,
    initramfs: &Path,
    key: &TemplateKey,
    force: bool,
    progress: &dyn Progress,
) -> Result<Prepared> {
    let root = templates_dir(dirs);
    fsutil::create_dir_all(&root)?;
    let lock_path = root.join(format!(".{}.lock", key.id()));
    let _lock = tokio::task::block_in_place(|| fsutil::FileLock::acquire(&lock_path))?;
    if !force {
        if let Readiness::Warm(template) = check(dirs, key) {
            return Ok(Prepared {
                environment: key.environment.clone(),
                shape: key.shape(),
                template_id: key.id(),
                action: "unchanged".into(),
                manifest: template.manifest,
            });
        }
    }
    ensure_free_space(&root, u64::from(key.mem_mib) << 20)?;
    let staging = root.join(format!(".staging-{}-{}", key.id(), fsutil::random_hex(4)?));
    fsutil::create_dir_all(&staging)?;
    progress.phase(&format!(
        "{}: booting the template guest ({})",
        key.environment,
        key.shape()
    ));
    let outcome = snapshot(dirs, &staging, env, initramfs, key).await;
    let manifest = match outcome {
        Ok(manifest) => manifest,
        Err(err) => {
            let _ = fsutil::remove_tree(&staging);
            return Err(err);
        }
    };
    let target = template_dir(dirs, key);
    let trash = root.join(format!(".trash-{}-{}", key.id(), fsutil::random_hex(4)?));
    if target.exists() {
        fs::rename(&target, &trash).map_err(|e| Error::io("move aside", &target, e))?;
    }
    fs::rename(&staging, &target).map_err(|e| Error::io("install", &target, e))?;
    let _ = fsutil::remove_tree(&trash);
    Ok(Prepared {
        environment: key.environment.clone(),
        shape: key.shape(),
        template_id: key.id(),
        action: "created".into(),
        manifest,
    })
}

fn ensure_free_space(dir: &Path, needed: u64) -> Result<()> {
    crate::host::space::ensure(dir, "a template", needed, 64 << 20).map_err(|e| {
        e.with_hint("free some space (or point PYRO_CACHE_DIR elsewhere), then prepare again")
    })
}

/// Boots the template guest in `dir`, waits for the agent, and saves RAM and device state there.
async fn snapshot(
    dirs: &Dirs,
    dir: &Path,
    env: &Installed,
    initramfs: &Path,
    key: &TemplateKey,
) -> Result<TemplateManifest> {
    let started = Instant::now();
    let placeholder = dir.join("placeholder.qcow2");
    crate::disk::create(dirs, &placeholder, key.disk_gib)?;
    let config = VmConfig {
        vcpu_count: key.vcpu_count,
        mem_mib: key.mem_mib,
        network: key.network,
        accelerator: key.accelerator,
        tsc_khz: accel::tsc_khz(),
        kernel: env.kernel(),
        initramfs: initramfs.to_path_buf(),
        base_image: env.rootfs(),
        data_disk: placeholder.clone(),
        disk_gib: key.disk_gib,
        memory: Memory::TemplateFile {
            ram: dir.join(RAM_FILE),
        },
    };
    let backend = Qemu::locate()?;
    // The template's NIC needs a peer; the guest sends nothing before it is activated, so none
    // serves it. It stays open until QEMU is gone.
    let (mut engine, _nic_peer) = Instance::spawn(&backend, &config, dir)?;
    let ready = engine
        .wait_ready("the template guest", READY_DEADLINE, probe(dir))
        .await?;
    let boot_ms = started.elapsed().as_millis() as u64;
    let snapshot_started = Instant::now();
    let mut qmp = Qmp::connect(&dir.join(QMP_SOCKET), Duration::from_secs(5)).await?;
    snapshot::save(&mut qmp, &dir.join(STATE_FILE)).await?;
    let _ = qmp.execute("quit", json!({})).await;
    if !engine.exits_within(Duration::from_secs(10)).await {
        engine.kill().await;
    }
    let snapshot_ms = snapshot_started.elapsed().as_millis() as u64;
    for leftover in ["placeholder.qcow2", AGENT_SOCKET, QMP_SOCKET] {
        let _ = fs::remove_file(dir.join(leftover));
    }
    let files = tokio::task::block_in_place(|| {
        [RAM_FILE, STATE_FILE]
            .iter()
            .map(|name| {
                let path = dir.join(name);
                let size_bytes = fs::metadata(&path)
                    .map_err(|e| Error::io("inspect", &path, e))?
                    .size();
                Ok(FileDigest {
                    name: name.to_string(),
                    sha256: fsutil::sha256_file(&path)?,
                    size_bytes,
                })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let manifest = TemplateManifest {
        key: key.clone(),
        pyro_version: crate::VERSION.into(),
        created_at_unix_ms: crate::vm::now_unix_ms(),
        boot_id: ready,
        files,
        boot_ms,
        snapshot_ms,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::internal(e.to_string()))?;
    fsutil::write_atomic(&dir.join(MANIFEST_FILE), &json)?;
    // Prime the digest cache so the first restore does not re-hash.
    verify(dir, &manifest).map_err(|why| Error::new(ErrorKind::Io, why))?;
    Ok(manifest)
}

/// Asks the agent whether it is ready (without starting a session) and returns its boot id.
async fn probe(dir: &Path) -> Result<String> {
    use pyro_proto::preamble::{read_line, PROBE, READY};
    let socket = dir.join(AGENT_SOCKET);
    let mut stream = loop {
        match crate::unix_socket::connect(&socket) {
            Ok(stream) => {
                stream
                    .set_nonblocking(true)
                    .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
                break tokio::net::UnixStream::from_std(stream)
                    .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    let nonce = fsutil::random_hex(8)?;
    let channel = |e: std::io::Error| {
        Error::new(
            ErrorKind::Protocol,
            format!("the agent channel failed: {e}"),
        )
    };
    stream
        .write_all(format!("{PROBE} {nonce}\n").as_bytes())
        .await
        .map_err(channel)?;
    loop {
        let line = read_line(&mut stream).await.map_err(channel)?;
        let mut words = line.split_whitespace();
        if words.next() == Some(READY) && words.next() == Some(nonce.as_str()) {
            return Ok(words.next().unwrap_or_default().to_string());
        }
    }
}
