//! The opt-in pool: `pyro prepare --pool N` keeps N VMs of `pyro run`'s shape (network off, the
//! default disk) restored from their warm template, activated and warmed up (a first command has
//! run, so the guest code a command needs is already translated under TCG), each under its own
//! supervisor. `pyro run` claims one by renaming its directory (only one claimer can), becomes its
//! owner over the supervisor's socket, gives it an identity of its own (hostname, machine id, clock,
//! entropy) and runs the command; a detached, low-priority job then refills the pool.
//!
//! Layout: `<state>/pool/<template id>/` holds `pool.json` (what to keep) and one directory per VM;
//! a VM is ready to claim once it holds [`READY`]. A pooled VM costs its memory while it waits (see
//! docs/benchmarks.md); `--pool 0` ends them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FileLock};
use crate::network::Network;
use crate::supervisor::protocol::{ClientReply, ClientRequest, Persist};
use crate::vm::{self, Prepared, Vm, VmOptions};
use crate::vocab::BootMode;
use crate::{limits, supervisor, Dirs, Error, ErrorKind, Progress, Result};

/// Marks a pooled VM ready to claim.
const READY: &str = "pool-ready";
const SPEC: &str = "pool.json";
const FILL_LOCK: &str = ".fill.lock";
const FILL_LOG: &str = ".fill.log";

/// What one pool keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub environment: String,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub size: u8,
}

impl PoolSpec {
    fn vm_options(&self) -> VmOptions {
        VmOptions {
            environment: self.environment.clone(),
            vcpu_count: self.vcpu_count,
            mem_mib: self.mem_mib,
            network: Network::off(),
            disk_gib: limits::DEFAULT_DISK_GIB,
            ephemeral: false,
            idle_timeout_seconds: None,
            cold: false,
            suspend_when_idle: false,
            resume: None,
        }
    }
}

/// One pool as `prepare` and `doctor` report it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub environment: String,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub template_id: String,
    /// How many VMs it keeps.
    pub size: u8,
    /// How many are ready to claim now.
    pub ready: usize,
}

fn root(dirs: &Dirs) -> PathBuf {
    dirs.state().join("pool")
}

fn read_spec(dir: &Path) -> Option<PoolSpec> {
    std::fs::read(dir.join(SPEC))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

/// The VM directories of the pool in `dir`, and whether each is ready: warmed up, and its
/// supervisor alive (after a host restart a directory outlives its VM).
fn members(dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            let ready = path.join(READY).exists() && vm::is_running(&path);
            found.push((path, ready));
        }
    }
    found
}

/// Every pool, with how many VMs are ready in each.
pub fn status(dirs: &Dirs) -> Vec<PoolStatus> {
    let mut pools = Vec::new();
    for entry in std::fs::read_dir(root(dirs))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(spec) = read_spec(&entry.path()) else {
            continue;
        };
        pools.push(PoolStatus {
            environment: spec.environment,
            vcpu_count: spec.vcpu_count,
            mem_mib: spec.mem_mib,
            template_id: entry.file_name().to_string_lossy().into_owned(),
            size: spec.size,
            ready: members(&entry.path()).iter().filter(|(_, r)| *r).count(),
        });
    }
    pools.sort_by(|a, b| a.environment.cmp(&b.environment));
    pools
}

/// Makes the pool of `spec`'s shape hold `spec.size` ready VMs (booting or ending VMs as needed),
/// and ends the VMs of older templates of the same shape. At most one fill runs per pool.
pub async fn fill(dirs: &Dirs, spec: &PoolSpec, progress: &dyn Progress) -> Result<PoolStatus> {
    limits::check("pool", spec.size, &limits::POOL_SIZE)?;
    let options = spec.vm_options();
    let probe = tokio::task::block_in_place(|| vm::prepare(dirs, &options, progress))?;
    let template_id = match (&probe.template_id, probe.boot_mode) {
        (Some(id), BootMode::Warm) => id.clone(),
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "a pool needs the warm template of its shape: {}",
                    probe.boot_mode_reason
                ),
            ))
        }
    };
    let dir = root(dirs).join(&template_id);
    fsutil::create_dir_all(&dir)?;
    let json = serde_json::to_vec_pretty(spec).map_err(|e| Error::internal(e.to_string()))?;
    fsutil::write_atomic(&dir.join(SPEC), &json)?;
    end_older_generations(dirs, spec, &template_id).await;
    let Some(_filling) = FileLock::try_acquire(&dir.join(FILL_LOCK))? else {
        // Another fill is at it.
        return Ok(status_of(&dir, spec, &template_id));
    };
    // Counted again each time: runs take VMs while a fill works. A VM a fill that died left half
    // made, or whose supervisor is gone, goes.
    loop {
        let mut ready = Vec::new();
        for (member, is_ready) in members(&dir) {
            if is_ready {
                ready.push(member);
            } else {
                vm::discard(&member, "a pool fill did not finish").await?;
                let _ = fsutil::remove_tree(&member);
            }
        }
        if ready.len() > usize::from(spec.size) {
            if let Some(member) = ready.pop() {
                vm::discard(&member, "the pool shrank").await?;
                let _ = fsutil::remove_tree(&member);
            }
            continue;
        }
        if ready.len() == usize::from(spec.size) {
            break;
        }
        progress.phase(&format!(
            "warming pooled VM {} of {}",
            ready.len() + 1,
            spec.size
        ));
        boot_member(dirs, &options, &dir, progress).await?;
    }
    progress.finish();
    let status = status_of(&dir, spec, &template_id);
    if spec.size == 0 {
        end_pool(&dir).await;
    }
    Ok(status)
}

fn status_of(dir: &Path, spec: &PoolSpec, template_id: &str) -> PoolStatus {
    PoolStatus {
        environment: spec.environment.clone(),
        vcpu_count: spec.vcpu_count,
        mem_mib: spec.mem_mib,
        template_id: template_id.to_string(),
        size: spec.size,
        ready: members(dir).iter().filter(|(_, r)| *r).count(),
    }
}

/// Ends the pools of the same shape made from templates that are no longer current.
async fn end_older_generations(dirs: &Dirs, spec: &PoolSpec, current: &str) {
    for entry in std::fs::read_dir(root(dirs))
        .into_iter()
        .flatten()
        .flatten()
    {
        let same_shape = read_spec(&entry.path()).is_some_and(|other| {
            other.environment == spec.environment
                && other.vcpu_count == spec.vcpu_count
                && other.mem_mib == spec.mem_mib
        });
        if same_shape && entry.file_name().to_string_lossy() != current {
            end_pool(&entry.path()).await;
        }
    }
}

async fn end_pool(dir: &Path) {
    for (member, _) in members(dir) {
        let _ = vm::discard(&member, "the pool was emptied").await;
        let _ = fsutil::remove_tree(&member);
    }
    let _ = fsutil::remove_tree(dir);
}

/// Boots one VM into the pool in `dir`, runs a first command in it, and marks it ready.
async fn boot_member(
    dirs: &Dirs,
    options: &VmOptions,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let prepared = tokio::task::block_in_place(|| vm::prepare(dirs, options, progress))?;
    let id = fsutil::random_hex(6)?;
    let member = dir.join(&id);
    let booted = async {
        let vm = vm::boot(&id, &member, options, prepared).await?;
        // The commands `run` sends most: a program by argv, and a shell string.
        for command in [
            pyro_proto::Command::Argv(vec!["true".into()]),
            pyro_proto::Command::Shell("true".into()),
        ] {
            let request = pyro_proto::ExecRequest {
                command,
                cwd: "/".into(),
                env: Default::default(),
                timeout_ms: 60_000,
                output_cap_bytes: 4096,
                stream_output: false,
            };
            vm.exec(request, &mut |_, _| {}).await?;
        }
        fsutil::write_atomic(&member.join(READY), b"")
    }
    .await;
    match booted {
        Ok(()) => Ok(member),
        Err(err) => {
            let _ = vm::discard(&member, "warming it failed").await;
            let _ = fsutil::remove_tree(&member);
            Err(err.context("a pooled VM could not be warmed"))
        }
    }
}

/// Whether VMs of `options` can come from a pool: the shape pools keep (network off, the default
/// disk). The template (environment, vCPUs, memory) picks the pool.
pub fn fits(options: &VmOptions) -> bool {
    !options.network.has_device() && options.disk_gib == limits::DEFAULT_DISK_GIB && !options.cold
}

/// Takes a ready VM of `prepared`'s template from its pool into `dir` (a new VM directory) and
/// makes it VM `id`, for one use or, with `persist`, to live on (a workspace's); `None` when there
/// is none to take, or the one taken could not be taken over (it is ended; the caller boots a VM
/// instead). A claim starts a refill of the pool.
pub async fn claim(
    dirs: &Dirs,
    id: &str,
    dir: &Path,
    options: &VmOptions,
    prepared: Prepared,
    persist: Option<Persist>,
) -> Option<Vm> {
    let started = std::time::Instant::now();
    let template_id = prepared.template_id.clone()?;
    let pool = root(dirs).join(&template_id);
    let Some(spec) = read_spec(&pool) else {
        // A pool of this shape made from an older template: the refill makes the current one.
        if let Some(older) = status(dirs).into_iter().find(|p| {
            p.environment == options.environment
                && p.vcpu_count == options.vcpu_count
                && p.mem_mib == options.mem_mib
        }) {
            let spec = PoolSpec {
                environment: older.environment,
                vcpu_count: older.vcpu_count,
                mem_mib: older.mem_mib,
                size: older.size,
            };
            refill(dirs, &spec, &pool);
        }
        return None;
    };
    fsutil::create_dir_all(dir.parent()?).ok()?;
    take(dirs, &spec, &pool, dir)?;
    let adopted = take_over(id, dir, prepared, persist, false, &template_id, started).await;
    match adopted {
        Ok(vm) => Some(vm),
        Err(_) => {
            let _ = vm::discard(dir, "the claim failed").await;
            let _ = fsutil::remove_tree(dir);
            None
        }
    }
}

/// Like [`claim`], for a workspace whose disk was just reverted (a reset): a pooled VM of its
/// shape takes `dir`'s place and takes over the workspace's disk, `disk.qcow2` in `dir`, instead
/// of its own. When the takeover fails, the workspace's directory and disk are put back where they
/// were (or left for [`recover_aside`]); the guest may have mounted the disk meanwhile.
pub async fn claim_with_disk(
    dirs: &Dirs,
    id: &str,
    dir: &Path,
    prepared: Prepared,
    persist: Persist,
) -> DiskClaim {
    let started = std::time::Instant::now();
    let Some(template_id) = prepared.template_id.clone() else {
        return DiskClaim::Unavailable;
    };
    let pool = root(dirs).join(&template_id);
    let Some(spec) = read_spec(&pool) else {
        return DiskClaim::Unavailable;
    };
    let aside = aside_of(dir);
    // Whatever an earlier takeover left aside was settled by `recover_aside` before the reset.
    if aside.exists() || !members(&pool).iter().any(|(_, ready)| *ready) {
        return DiskClaim::Unavailable;
    }
    if std::fs::rename(dir, &aside).is_err() {
        return DiskClaim::Unavailable;
    }
    if take(dirs, &spec, &pool, dir).is_none() {
        let _ = std::fs::rename(&aside, dir);
        return DiskClaim::Unavailable;
    }
    // The workspace's disk in place of the pooled VM's own, which its engine holds until the swap.
    let disk = dir.join(crate::disk::FILE_NAME);
    let moved = std::fs::rename(aside.join(crate::disk::FILE_NAME), &disk);
    let adopted = match &moved {
        Ok(()) => {
            take_over(
                id,
                dir,
                prepared,
                Some(persist),
                true,
                &template_id,
                started,
            )
            .await
        }
        Err(_) => Err(Error::internal("the workspace's disk could not be moved")),
    };
    match adopted {
        Ok(vm) => {
            let _ = fsutil::remove_tree(&aside);
            DiskClaim::Taken(Box::new(vm))
        }
        Err(_) => {
            let _ = vm::discard(dir, "the claim failed").await;
            // Only the workspace's own disk goes back: the pooled VM's stays with its directory.
            if moved.is_ok() {
                let _ = std::fs::rename(&disk, aside.join(crate::disk::FILE_NAME));
            }
            // What could not be put back here, `recover_aside` puts back.
            if fsutil::remove_tree(dir).is_ok() {
                let _ = std::fs::rename(&aside, dir);
            }
            DiskClaim::Failed
        }
    }
}

/// What [`claim_with_disk`] came to.
pub enum DiskClaim {
    /// No pooled VM to take: nothing was touched.
    Unavailable,
    /// A pooled VM was taken but could not take the disk over (it is ended).
    Failed,
    Taken(Box<Vm>),
}

/// Where [`claim_with_disk`] keeps a workspace's VM directory while a pooled VM takes its place.
pub fn aside_of(dir: &Path) -> PathBuf {
    dir.with_file_name("vm.aside")
}

/// Puts back what a [`claim_with_disk`] interrupted half-way left: the workspace's VM directory is
/// the one that holds its disk. `dir`'s VM must be stopped.
pub fn recover_aside(dir: &Path) -> Result<()> {
    let aside = aside_of(dir);
    if !aside.exists() {
        return Ok(());
    }
    // Moving the disk out of the directory put aside is what hands it over: while it is still
    // there, the directory put aside is the workspace's.
    if aside.join(crate::disk::FILE_NAME).exists() {
        fsutil::remove_tree(dir)?;
        std::fs::rename(&aside, dir).map_err(|e| Error::io("rename", &aside, e))
    } else {
        fsutil::remove_tree(&aside)
    }
}

/// Takes a ready member of `pool` by renaming it to `dir` (a rename succeeds for one claimer only),
/// and starts a refill. `None` when there was none to take.
fn take(dirs: &Dirs, spec: &PoolSpec, pool: &Path, dir: &Path) -> Option<()> {
    let taken = members(pool)
        .into_iter()
        .find_map(|(member, ready)| (ready && std::fs::rename(&member, dir).is_ok()).then_some(()));
    refill(dirs, spec, pool);
    taken?;
    let _ = std::fs::remove_file(dir.join(READY));
    Some(())
}

/// Takes the pooled VM now in `dir` over on its supervisor's socket and makes it VM `id`.
async fn take_over(
    id: &str,
    dir: &Path,
    prepared: Prepared,
    persist: Option<Persist>,
    swap_disk: bool,
    template_id: &str,
    started: std::time::Instant,
) -> Result<Vm> {
    let ephemeral = persist.is_none();
    let request = ClientRequest::Claim { persist, swap_disk };
    let (stream, reply) = supervisor::open(dir, &request).await?;
    let ready = match reply {
        ClientReply::Claimed(ready) => ready,
        ClientReply::Error { message } => {
            return Err(Error::new(
                ErrorKind::Engine,
                format!("the pooled VM could not be claimed: {message}"),
            ))
        }
        other => {
            return Err(Error::new(
                ErrorKind::Engine,
                format!("the pooled VM could not be claimed: {other:?}"),
            ))
        }
    };
    let owner = supervisor::OwnerChannel::claimed(stream, ready.supervisor_pid);
    let reason = format!("taken from the pool of template {template_id}");
    let claim_ms = started.elapsed().as_millis() as u64;
    let taken = vm::Taken {
        owner,
        ready,
        reason,
        claim_ms,
        ephemeral,
    };
    vm::adopt(id, dir, taken, prepared).await
}

/// Starts a detached job that fills the pool of `spec` again, unless one runs.
fn refill(dirs: &Dirs, spec: &PoolSpec, pool: &Path) {
    let busy =
        pool.exists() && !matches!(FileLock::try_acquire(&pool.join(FILL_LOCK)), Ok(Some(_)));
    if spec.size == 0 || busy {
        return;
    }
    let _ = crate::auto_prepare::spawn_detached(
        &[
            "__pool-fill".to_string(),
            "--environment".to_string(),
            spec.environment.clone(),
            "--vcpu-count".to_string(),
            spec.vcpu_count.to_string(),
            "--mem-mib".to_string(),
            spec.mem_mib.to_string(),
        ],
        &root(dirs).join(FILL_LOG),
    );
}

/// Entry point of `pyro __pool-fill`: fills the pool of the shape to the size it keeps. Returns
/// the process exit code.
pub fn main(dirs: &Dirs, environment: &str, vcpu_count: u8, mem_mib: u32) -> i32 {
    let size = status(dirs)
        .into_iter()
        .find(|p| {
            p.environment == environment && p.vcpu_count == vcpu_count && p.mem_mib == mem_mib
        })
        .map_or(0, |p| p.size);
    let spec = PoolSpec {
        environment: environment.to_string(),
        vcpu_count,
        mem_mib,
        size,
    };
    let work = async move { fill(dirs, &spec, &crate::progress::Silent).await.map(drop) };
    crate::auto_prepare::background_job("pyro __pool-fill", work)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace's `vm` directory with its disk, and a pooled VM's that took its place.
    fn layout(root: &Path, disk_aside: bool) -> PathBuf {
        let dir = root.join("vm");
        let aside = aside_of(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&aside).unwrap();
        std::fs::write(aside.join("vm.json"), "workspace's").unwrap();
        let (with_disk, other) = if disk_aside {
            (&aside, &dir)
        } else {
            (&dir, &aside)
        };
        std::fs::write(with_disk.join(crate::disk::FILE_NAME), "workspace's disk").unwrap();
        if disk_aside {
            std::fs::write(other.join(crate::disk::FILE_NAME), "pooled VM's disk").unwrap();
        }
        dir
    }

    #[test]
    fn an_interrupted_takeover_leaves_the_workspace_its_disk() {
        for disk_aside in [true, false] {
            let root = tempfile::tempdir().unwrap();
            let dir = layout(root.path(), disk_aside);
            recover_aside(&dir).unwrap();
            assert!(!aside_of(&dir).exists());
            let disk = std::fs::read_to_string(dir.join(crate::disk::FILE_NAME)).unwrap();
            assert_eq!(disk, "workspace's disk", "disk aside: {disk_aside}");
        }
    }
}
