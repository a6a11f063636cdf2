//! Creating, starting, stopping, resetting and deleting workspaces.
//!
//! A workspace is a record in the database, a directory (`<state>/workspaces/<id>/`) holding its
//! immutable baseline (`baseline.tar`) and command outputs, and a persistent VM in `vm/` whose disk
//! (`/workspace` and everything written outside it) survives stop and start. Lifecycle changes of one
//! workspace are serialised by `lifecycle.lock`; the database is the record of what happened.

use std::path::{Path, PathBuf};

use super::archive::{self, Source};
use super::journal;
use super::model::{Workspace, WorkspaceSeed};
use super::snapshots::SnapshotKind;
use super::store::{self, Record};
use super::validate;
use crate::agent_client::{self, AgentCall};
use crate::db::Db;
use crate::fsutil::{self, FileLock};
use crate::network::Network;
use crate::vm::{self, VmOptions};
use crate::vocab::{BootMode, SeedMode, TtlAction, WorkspaceKind, WorkspaceState};
use crate::{limits, supervisor, Dirs, Error, ErrorKind, Progress, Result};
use pyro_proto::{Reply, Request};

pub const BASELINE: &str = "baseline.tar";

pub fn workspace_dir(dirs: &Dirs, id: &str) -> PathBuf {
    dirs.state().join("workspaces").join(id)
}

pub fn vm_dir(dirs: &Dirs, id: &str) -> PathBuf {
    workspace_dir(dirs, id).join("vm")
}

pub(crate) fn lifecycle_lock(dirs: &Dirs, id: &str) -> Result<FileLock> {
    let path = workspace_dir(dirs, id).join("lifecycle.lock");
    tokio::task::block_in_place(|| FileLock::acquire(&path))
}

/// Resolves `reference` and holds its lifecycle lock, then reads the record again under the lock
/// (an operation that finished meanwhile may have changed or deleted it) and refreshes its state.
pub(crate) fn locked(dirs: &Dirs, db: &Db, reference: &str) -> Result<(Record, FileLock)> {
    let id = store::resolve(db.conn(), reference)?.id;
    let lock = lifecycle_lock(dirs, &id)?;
    let record = refresh(dirs, db, store::resolve(db.conn(), &id)?)?;
    Ok((record, lock))
}

pub fn now_ms() -> i64 {
    vm::now_unix_ms() as i64
}

/// Options of `workspace create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub environment: String,
    pub seed_path: Option<PathBuf>,
    /// Where to seed from when there is no `seed_path` (project-aware startup).
    pub project: Option<crate::project::ProjectSeed>,
    /// Seed a directory's (or project's) `.git` too. Off by default: its config may hold credentials.
    pub include_git: bool,
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub disk_gib: u32,
    pub ttl_seconds: u64,
    pub network: Network,
    /// Boot from the kernel even when a warm template exists.
    pub cold: bool,
    /// A workspace, or a plain VM (`vm_create`).
    pub kind: WorkspaceKind,
    pub secrets: Vec<super::secrets::SecretSpec>,
    /// What the idle TTL does: stop (the default) or suspend.
    pub ttl_action: TtlAction,
}

impl CreateOptions {
    pub fn new(environment: &str) -> CreateOptions {
        CreateOptions {
            environment: environment.to_string(),
            seed_path: None,
            project: None,
            include_git: false,
            name: None,
            labels: Vec::new(),
            vcpu_count: limits::DEFAULT_VCPU_COUNT,
            mem_mib: limits::DEFAULT_MEM_MIB,
            disk_gib: limits::DEFAULT_DISK_GIB,
            ttl_seconds: limits::DEFAULT_TTL_SECONDS,
            network: Network::off(),
            cold: false,
            kind: WorkspaceKind::Workspace,
            secrets: Vec::new(),
            ttl_action: TtlAction::Stop,
        }
    }
}

pub(super) fn vm_options(record: &Record, cold: bool) -> VmOptions {
    VmOptions {
        environment: record.environment.clone(),
        vcpu_count: record.vcpu_count,
        mem_mib: record.mem_mib,
        network: record.network.clone(),
        disk_gib: record.disk_gib,
        ephemeral: false,
        idle_timeout_seconds: Some(record.ttl_seconds),
        cold,
        suspend_when_idle: record.ttl_action == TtlAction::Suspend,
        resume: None,
    }
}

/// Brings the stored state in line with reality: a `started` workspace whose supervisor is gone is
/// `stopped`, with the reason its supervisor left (or that it died).
pub fn refresh(dirs: &Dirs, db: &Db, mut record: Record) -> Result<Record> {
    if matches!(
        record.state,
        WorkspaceState::Stopped | WorkspaceState::Suspended
    ) {
        return Ok(record);
    }
    let dir = vm_dir(dirs, &record.id);
    if vm::is_running(&dir) {
        return Ok(record);
    }
    if record.state == WorkspaceState::Creating {
        // Still being created if its creator holds the lifecycle lock.
        let lock = workspace_dir(dirs, &record.id).join("lifecycle.lock");
        if matches!(FileLock::try_acquire(&lock), Ok(None)) {
            return Ok(record);
        }
    }
    let stop = supervisor::stop_record(&dir);
    // Its TTL suspended it: the state is beside its disk.
    let state = match &stop {
        Some(stop) if stop.suspended && crate::suspend::load(&dir).is_some() => {
            WorkspaceState::Suspended
        }
        _ => WorkspaceState::Stopped,
    };
    let reason = match stop {
        Some(stop) => stop.reason,
        None if record.state == WorkspaceState::Creating => "the create did not finish".to_string(),
        None => "the VM's supervisor is gone (killed or crashed)".to_string(),
    };
    store::set_state(db.conn(), &record.id, state, Some(&reason))?;
    record.state = state;
    record.stop_reason = Some(reason);
    Ok(record)
}

/// Resolves `reference` (id or name) and refreshes its state.
pub fn find(dirs: &Dirs, db: &Db, reference: &str) -> Result<Record> {
    let record = store::resolve(db.conn(), reference)?;
    refresh(dirs, db, record)
}

/// An error for an operation that needs a started workspace.
pub fn require_started(record: &Record, operation: &str) -> Result<()> {
    if record.state == WorkspaceState::Started {
        return Ok(());
    }
    let why = record
        .stop_reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    Err(Error::new(
        ErrorKind::InvalidState,
        format!(
            "workspace {} is {}{why}; {operation} needs it started",
            record.id, record.state
        ),
    )
    .with_next(crate::Next::WorkspaceStart {
        workspace_id: record.id.clone(),
    }))
}

pub async fn create(
    dirs: &Dirs,
    options: &CreateOptions,
    progress: &dyn Progress,
) -> Result<Workspace> {
    let name = options.name.as_deref().map(validate::name).transpose()?;
    let labels = validate::labels(&options.labels)?;
    let ttl_seconds = validate::ttl_seconds(options.ttl_seconds)?;
    limits::check("disk_gib", options.disk_gib, &limits::DISK_GIB)?;
    // Read and checked before anything is made: a missing secret file leaves nothing behind.
    let secret_values = super::secrets::read(&options.secrets)?;
    crate::catalog::lookup(&options.environment)?;
    // An explicit seed path wins over the server's project.
    let source = match (&options.seed_path, &options.project) {
        (Some(path), _) => Some(Source::classify(path, options.include_git)?),
        (None, Some(project)) => Some(Source::Project(project.clone())),
        (None, None) => None,
    };
    let mut db = Db::open(dirs)?;
    let (id, dir, lock) = allocate(dirs, &db, name.as_deref())?;
    let timer = journal::Timer::start();
    let created_at = timer.started_at_ms();
    let outcome = async {
        let floor = crate::host::space::floor_bytes();
        crate::host::space::ensure(&dir, "a new workspace", 0, floor)?;
        super::secrets::store(&dir, &secret_values)?;
        progress.phase("preparing the baseline");
        let baseline = dir.join(BASELINE);
        let counts = match &source {
            Some(source) => tokio::task::block_in_place(|| archive::build_tar(source, &baseline))?,
            None => {
                archive::write_empty_tar(&baseline)?;
                archive::Counts::default()
            }
        };
        let seed = WorkspaceSeed {
            mode: source.as_ref().map_or(SeedMode::Empty, Source::mode),
            seed_path: match &source {
                Some(Source::Project(project)) => Some(project.root.display().to_string()),
                _ => options
                    .seed_path
                    .as_deref()
                    .map(|p| absolute(p).display().to_string()),
            },
            source: match &source {
                Some(Source::Project(project)) => Some(project.source.clone()),
                _ => None,
            },
            destination: validate::WORKSPACE_ROOT.to_string(),
            entry_count: counts.entry_count,
            bytes_written: counts.bytes_written,
        };
        let record = Record {
            id: id.clone(),
            name: name.clone(),
            environment: options.environment.clone(),
            vcpu_count: options.vcpu_count,
            mem_mib: options.mem_mib,
            disk_gib: options.disk_gib,
            network: options.network.clone(),
            ttl_seconds,
            state: WorkspaceState::Creating,
            stop_reason: None,
            labels: labels.clone(),
            seed,
            created_at,
            last_activity_at: created_at,
            reset_count: 0,
            last_reset_at: None,
            boot_mode: None,
            boot_mode_reason: None,
            kind: options.kind,
            secret_names: secret_values.keys().cloned().collect(),
            ttl_action: options.ttl_action,
        };
        vm_options(&record, false).validate()?;
        store::insert(&mut db, &record)?;
        let phases = boot_recorded(
            dirs,
            &mut db,
            &record,
            true,
            options.cold,
            "create",
            progress,
        )
        .await?
        .phases;
        let operation = journal::Operation::Create {
            params: journal::CreateParams {
                environment: record.environment.clone(),
                seed_path: record.seed.seed_path.clone(),
                name: record.name.clone(),
                labels: record.labels.clone(),
                network: record.network.has_device(),
                network_policy: Some(record.network.policy.as_str().to_string()),
                allow_hosts: record.network.allow_host_names(),
                ttl_seconds: Some(ttl_seconds),
            },
            result: journal::CreateRecord {
                workspace_seed: record.seed.clone(),
            },
        };
        timer.record(&mut db, &id, true, &operation)?;
        Ok::<_, Error>(phases)
    }
    .await;
    let phases = match outcome {
        Ok(phases) => phases,
        Err(err) => return Err(abandon(dirs, db, &id, lock, "create", err).await),
    };
    drop(lock);
    let record = store::resolve(db.conn(), &id)?;
    with_phases(store::view(db.conn(), &record), phases)
}

/// A new workspace's id and directory, its lifecycle held, once its `name` is known to be free.
pub(super) fn allocate(
    dirs: &Dirs,
    db: &Db,
    name: Option<&str>,
) -> Result<(String, PathBuf, FileLock)> {
    if let Some(name) = name {
        store::ensure_name_free(db.conn(), name, "")?;
    }
    let id = fsutil::random_hex(6)?;
    let dir = workspace_dir(dirs, &id);
    fsutil::create_dir_all(&dir)?;
    let lock = lifecycle_lock(dirs, &id)?;
    Ok((id, dir, lock))
}

/// Undoes a workspace whose making (`operation`) failed with `err`: its VM, record and directory
/// go, and `err` comes back.
pub(super) async fn abandon(
    dirs: &Dirs,
    db: Db,
    id: &str,
    lock: FileLock,
    operation: &str,
    err: Error,
) -> Error {
    let _ = vm::discard(&vm_dir(dirs, id), &format!("the {operation} failed")).await;
    let _ = store::delete(db.conn(), id);
    drop(lock);
    let _ = fsutil::remove_tree(&workspace_dir(dirs, id));
    err
}

/// A workspace's view with the phases of the boot that just happened.
pub(super) fn with_phases(view: Result<Workspace>, phases: vm::Phases) -> Result<Workspace> {
    view.map(|view| Workspace {
        phases_ms: Some(phases),
        ..view
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Boots the workspace's VM (warm when a template allows, unless `cold`); with `fresh`, on a new disk
/// seeded from the baseline.
async fn boot(
    dirs: &Dirs,
    record: &Record,
    fresh: bool,
    cold: bool,
    progress: &dyn Progress,
) -> Result<vm::BootFacts> {
    let dir = vm_dir(dirs, &record.id);
    // A VM still running here was left by an operation that died half-way (its caller killed before
    // it finished): nobody activated it, so it goes before a new one boots.
    vm::stop(&dir, LEFT_RUNNING).await?;
    crate::pool::recover_aside(&dir)?;
    tokio::task::block_in_place(|| crate::disk::convert_legacy(&dir))?;
    super::since::forget_all(&workspace_dir(dirs, &record.id))?;
    let disk = dir.join(supervisor::DATA_DISK);
    if fresh && disk.exists() {
        std::fs::remove_file(&disk).map_err(|e| Error::io("remove", &disk, e))?;
    }
    // A disk lost (say, to a reset that failed half-way) is recreated from the baseline, never empty.
    let fresh = fresh || !disk.exists();
    let options = vm_options(record, cold);
    // A suspended VM resumes as it was; a state that cannot resume is dropped and the VM boots
    // afresh from its disk, saying why.
    let mut resume_failure = None;
    match crate::suspend::load(&dir) {
        Some(suspension) if !fresh => {
            progress.phase("resuming the VM");
            match resume_saved(dirs, record, &dir, &options, suspension, progress).await? {
                Ok(facts) => {
                    progress.finish();
                    return Ok(facts);
                }
                Err(err) => resume_failure = Some(err),
            }
        }
        _ => crate::suspend::discard(&dir)?,
    }
    let mut attempt = 0;
    let mut facts = loop {
        let prepared = tokio::task::block_in_place(|| vm::prepare(dirs, &options, progress))?;
        // A new workspace may take a VM from the pool (`prepare --pool`).
        if fresh && !dir.exists() && crate::pool::fits(&options) {
            let persist = supervisor::protocol::Persist {
                idle_timeout_seconds: options.idle_timeout_seconds,
                suspend_when_idle: options.suspend_when_idle,
            };
            let claimed = crate::pool::claim(
                dirs,
                &record.id,
                &dir,
                &options,
                prepared.clone(),
                Some(persist),
            )
            .await;
            if let Some(vm) = claimed {
                break vm.facts.clone();
            }
        }
        progress.phase("booting the VM");
        // The VM outlives this process: dropping the handle leaves it to its supervisor.
        match vm::boot(&record.id, &dir, &options, prepared).await {
            Ok(vm) => break vm.facts.clone(),
            // A supervisor an interrupted operation had just spawned took the VM directory first:
            // it goes, and the boot is tried once more.
            Err(_) if attempt == 0 && vm::is_running(&dir) => {
                vm::stop(&dir, LEFT_RUNNING).await?;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    };
    if let Some(err) = resume_failure {
        let why = err.message().lines().next().unwrap_or_default().to_string();
        facts.boot_mode_reason = format!(
            "its suspended state could not be resumed ({why}), so it booted afresh from its disk; {}",
            facts.boot_mode_reason
        );
    }
    progress.finish();
    if fresh {
        let baseline = workspace_dir(dirs, &record.id).join(BASELINE);
        let size = std::fs::metadata(&baseline)
            .map_err(|e| Error::io("inspect", &baseline, e))?
            .len();
        let mut call = AgentCall::start_moving(
            &dir,
            &Request::ExtractArchive {
                destination: validate::WORKSPACE_ROOT.into(),
            },
            size,
        )
        .await?;
        call.send_file(&baseline).await?;
        match call.collect(0).await?.0 {
            Reply::Extracted(_) => {}
            other => return Err(agent_client::unexpected(other)),
        }
        // What `reset` goes back to, inside the disk itself.
        super::snapshots::take(&dir, &WorkspaceState::Started, crate::disk::BASELINE).await?;
    }
    Ok(facts)
}

/// The rest of a reset when the pool (`prepare --pool`) has a VM of the workspace's shape: that VM,
/// already restored, activated and past its first command, takes over the disk just reverted to
/// `snapshot`, so the guest's first activation and command are not paid again. `None`: boot as
/// usual (a takeover that failed left the disk where it was, reverted once more).
async fn reset_pooled(
    dirs: &Dirs,
    db: &mut Db,
    record: &Record,
    snapshot: &str,
    cold: bool,
    progress: &dyn Progress,
) -> Result<Option<vm::BootFacts>> {
    let options = vm_options(record, cold);
    // Without any pool, a warm reset is not held up by preparing twice.
    if !crate::pool::fits(&options) || crate::pool::status(dirs).is_empty() {
        return Ok(None);
    }
    let dir = vm_dir(dirs, &record.id);
    super::since::forget_all(&workspace_dir(dirs, &record.id))?;
    let prepared = tokio::task::block_in_place(|| vm::prepare(dirs, &options, progress))?;
    let persist = supervisor::protocol::Persist {
        idle_timeout_seconds: options.idle_timeout_seconds,
        suspend_when_idle: options.suspend_when_idle,
    };
    match crate::pool::claim_with_disk(dirs, &record.id, &dir, prepared, persist).await {
        crate::pool::DiskClaim::Unavailable => Ok(None),
        crate::pool::DiskClaim::Taken(vm) => {
            let facts = vm.facts.clone();
            store::set_started(
                db.conn(),
                &record.id,
                facts.boot_mode,
                &facts.boot_mode_reason,
            )?;
            Ok(Some(facts))
        }
        crate::pool::DiskClaim::Failed => {
            // The guest may have mounted the disk before the takeover failed: it goes back again.
            crate::pool::recover_aside(&dir)?;
            tokio::task::block_in_place(|| crate::disk::revert_offline(&dir, snapshot))?;
            Ok(None)
        }
    }
}

/// Resumes the suspended VM in `dir`. The outer error leaves the saved state for a later try (the
/// host could not prepare the boot); the inner one means the state is dropped, and the VM is to
/// boot afresh from its disk.
async fn resume_saved(
    dirs: &Dirs,
    record: &Record,
    dir: &Path,
    options: &VmOptions,
    suspension: crate::suspend::Suspension,
    progress: &dyn Progress,
) -> Result<std::result::Result<vm::BootFacts, Error>> {
    // The state belongs to this directory's disk, wherever it was saved from.
    let disk = dir.join(supervisor::DATA_DISK);
    let options = VmOptions {
        resume: Some(suspension.clone()),
        ..options.clone()
    };
    let outcome = if suspension.config.data_disk != disk {
        Err(Error::new(
            ErrorKind::InvalidState,
            "the suspended state was saved for another disk",
        ))
    } else {
        match tokio::task::block_in_place(|| vm::prepare(dirs, &options, progress)) {
            Ok(prepared) => vm::boot(&record.id, dir, &options, prepared)
                .await
                .map(|vm| vm.facts.clone()),
            // The state does not fit this VM any more (a new pyro, a rebuilt environment).
            Err(err) if err.kind() == ErrorKind::InvalidState => Err(err),
            Err(err) => return Err(err),
        }
    };
    crate::suspend::discard(dir)?;
    if outcome.is_err() {
        vm::stop(dir, "the resume failed").await?;
    }
    Ok(outcome)
}

/// Boots the workspace's VM and records the outcome: started (and how it booted), or stopped with why
/// the `operation` failed, its VM gone.
pub(super) async fn boot_recorded(
    dirs: &Dirs,
    db: &mut Db,
    record: &Record,
    fresh: bool,
    cold: bool,
    operation: &str,
    progress: &dyn Progress,
) -> Result<vm::BootFacts> {
    match boot(dirs, record, fresh, cold, progress).await {
        Ok(facts) => store::set_started(
            db.conn(),
            &record.id,
            facts.boot_mode,
            &facts.boot_mode_reason,
        )
        .map(|()| facts),
        Err(err) => {
            let _ = vm::stop(
                &vm_dir(dirs, &record.id),
                &format!("the {operation} failed"),
            )
            .await;
            Err(recorded_failure(db, &record.id, operation, err)?)
        }
    }
}

/// Why a VM directory's VM was stopped before a new boot.
const LEFT_RUNNING: &str = "left running by an interrupted operation";

/// Records the workspace stopped because `operation` failed with `err`, and gives `err` back.
fn recorded_failure(db: &Db, id: &str, operation: &str, err: Error) -> Result<Error> {
    let reason = format!("the {operation} failed: {err}");
    store::set_state(db.conn(), id, WorkspaceState::Stopped, Some(&reason))?;
    Ok(err)
}

/// Journals a lifecycle operation and returns the workspace's view.
fn finish(
    db: &mut Db,
    id: &str,
    operation: journal::Operation,
    timer: journal::Timer,
) -> Result<Workspace> {
    timer.record(db, id, true, &operation)?;
    let record = store::resolve(db.conn(), id)?;
    store::view(db.conn(), &record)
}

pub async fn start(
    dirs: &Dirs,
    reference: &str,
    cold: bool,
    ttl_action: Option<TtlAction>,
    progress: &dyn Progress,
) -> Result<Workspace> {
    let mut db = Db::open(dirs)?;
    let (mut record, _lock) = locked(dirs, &db, reference)?;
    if let Some(action) = ttl_action {
        store::set_ttl_action(db.conn(), &record.id, action)?;
        record.ttl_action = action;
    }
    if record.state == WorkspaceState::Started {
        return store::view(db.conn(), &record);
    }
    let floor = crate::host::space::floor_bytes();
    crate::host::space::ensure(&workspace_dir(dirs, &record.id), "starting it", 0, floor)?;
    let disk = vm_dir(dirs, &record.id).join(crate::disk::FILE_NAME);
    if let Some(full) = crate::disk::over_budget(&disk, record.disk_gib) {
        return Err(Error::new(ErrorKind::InvalidState, full).with_next(
            crate::Next::SnapshotList {
                workspace_id: record.id.clone(),
            },
        ));
    }
    let timer = journal::Timer::start();
    let facts = boot_recorded(dirs, &mut db, &record, false, cold, "start", progress).await?;
    let start = journal::Operation::Start {
        params: journal::Nothing {},
        result: journal::Nothing {},
    };
    finish(&mut db, &record.id, start, timer)?;
    if facts.boot_mode == BootMode::Resumed {
        // Its services ran on; their ports need the new supervisor's listeners.
        super::services::republish(dirs, &record.id).await?;
    } else {
        // Services that asked to come back with the workspace; their outcomes are in their records.
        super::services::restart_marked(dirs, &record.id).await?;
    }
    let record = store::resolve(db.conn(), &record.id)?;
    with_phases(store::view(db.conn(), &record), facts.phases)
}

/// `workspace resume`: [`start`] of a suspended workspace (a started one is left as it is; a
/// stopped one has nothing to resume).
pub async fn resume(dirs: &Dirs, reference: &str, progress: &dyn Progress) -> Result<Workspace> {
    let record = find(dirs, &Db::open(dirs)?, reference)?;
    if record.state == WorkspaceState::Stopped {
        return Err(Error::new(
            ErrorKind::InvalidState,
            format!(
                "workspace {} is stopped, not suspended: it has no saved memory to resume",
                record.id
            ),
        )
        .with_next(crate::Next::WorkspaceStart {
            workspace_id: record.id,
        }));
    }
    start(dirs, &record.id, false, None, progress).await
}

/// What a suspend saved.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SuspendInfo {
    /// The size of the saved memory and device state.
    pub state_bytes: u64,
    pub save_ms: u64,
}

/// The result of `workspace suspend`: the workspace and what was saved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SuspendResult {
    #[serde(flatten)]
    pub workspace: Workspace,
    pub workspace_suspend: SuspendInfo,
}

/// Saves a started workspace's memory and device state beside its disk and stops its VM: every
/// process, service and shell is kept, and `start` (or `resume`) brings it back as it was.
pub async fn suspend(dirs: &Dirs, reference: &str) -> Result<SuspendResult> {
    let mut db = Db::open(dirs)?;
    let (record, _lock) = locked(dirs, &db, reference)?;
    require_started(&record, "suspend")?;
    let timer = journal::Timer::start();
    let dir = vm_dir(dirs, &record.id);
    let info =
        match supervisor::request(&dir, &supervisor::protocol::ClientRequest::Suspend).await? {
            supervisor::protocol::ClientReply::Saved { bytes, save_ms } => SuspendInfo {
                state_bytes: bytes,
                save_ms,
            },
            supervisor::protocol::ClientReply::Error { message } => {
                // A VM the failure broke is stopped, with the reason its supervisor left.
                refresh(dirs, &db, record)?;
                return Err(Error::new(ErrorKind::Engine, message));
            }
            other => {
                return Err(Error::internal(format!(
                    "unexpected supervisor reply: {other:?}"
                )))
            }
        };
    vm::wait_gone(&dir, std::time::Duration::from_secs(30)).await;
    store::set_state(
        db.conn(),
        &record.id,
        WorkspaceState::Suspended,
        Some(supervisor::SUSPENDED_BY_REQUEST),
    )?;
    let operation = journal::Operation::Suspend {
        params: journal::Nothing {},
        result: info.clone(),
    };
    Ok(SuspendResult {
        workspace: finish(&mut db, &record.id, operation, timer)?,
        workspace_suspend: info,
    })
}

pub async fn stop(dirs: &Dirs, reference: &str) -> Result<Workspace> {
    let mut db = Db::open(dirs)?;
    let (record, _lock) = locked(dirs, &db, reference)?;
    if record.state == WorkspaceState::Stopped {
        return store::view(db.conn(), &record);
    }
    let timer = journal::Timer::start();
    let dir = vm_dir(dirs, &record.id);
    let reason = if record.state == WorkspaceState::Suspended {
        "stopped by request (its suspended memory was discarded)"
    } else {
        "stopped by request"
    };
    vm::stop(&dir, reason).await?;
    crate::suspend::discard(&dir)?;
    store::set_state(db.conn(), &record.id, WorkspaceState::Stopped, Some(reason))?;
    let stop = journal::Operation::Stop {
        params: journal::Nothing {},
        result: journal::Nothing {},
    };
    finish(&mut db, &record.id, stop, timer)
}

/// The result of `workspace reset`: the workspace plus what the reset restored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResetResult {
    #[serde(flatten)]
    pub workspace: Workspace,
    pub workspace_reset: ResetInfo,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResetInfo {
    pub snapshot_name: String,
    pub kind: SnapshotKind,
    pub destination: String,
    /// What the seed put in `/workspace` (known for the baseline; a named snapshot holds the whole disk
    /// as it was, uncounted).
    pub entry_count: Option<u64>,
    pub bytes_written: Option<u64>,
}

/// Puts the whole sandbox back to a snapshot (`baseline` or a named one): the VM stops, its disk
/// (everything the guest changed, `/workspace` and the rest) goes back to the snapshot, and it boots
/// again. Services and shells do not survive it. The snapshot stays; the journal keeps its history
/// and gains a marker.
pub async fn reset(
    dirs: &Dirs,
    reference: &str,
    snapshot: &str,
    cold: bool,
    progress: &dyn Progress,
) -> Result<ResetResult> {
    let snapshot = snapshot.trim();
    let is_baseline = snapshot == crate::disk::BASELINE;
    if !is_baseline {
        super::snapshots::name(snapshot)?;
    }
    let mut db = Db::open(dirs)?;
    let (record, _lock) = locked(dirs, &db, reference)?;
    let timer = journal::Timer::start();
    let dir = vm_dir(dirs, &record.id);
    // Checked before anything stops: a wrong name leaves the workspace as it was. (A pooled reset
    // interrupted half-way left the disk aside: the check waits until it is back.)
    if !crate::pool::aside_of(&dir).exists() {
        super::snapshots::require(&dir, &record.id, snapshot)?;
    }
    vm::discard(&dir, "reset").await?;
    crate::pool::recover_aside(&dir)?;
    // A suspended memory belongs to the disk as it is now, not to the snapshot.
    crate::suspend::discard(&dir)?;
    tokio::task::block_in_place(|| crate::disk::convert_legacy(&dir))?;
    let in_disk = super::snapshots::require(&dir, &record.id, snapshot)?;
    store::set_state(
        db.conn(),
        &record.id,
        WorkspaceState::Stopped,
        Some("being reset"),
    )?;
    if in_disk {
        if let Err(err) =
            tokio::task::block_in_place(|| crate::disk::revert_offline(&dir, snapshot))
        {
            return Err(recorded_failure(&db, &record.id, "reset", err)?);
        }
    }
    // A pooled VM of the workspace's shape takes the reverted disk over, when there is one.
    let pooled = if in_disk {
        reset_pooled(dirs, &mut db, &record, snapshot, cold, progress).await?
    } else {
        None
    };
    // A disk without its baseline snapshot (made before disks had snapshots) is rebuilt from the seed.
    let phases = match pooled {
        Some(facts) => facts.phases,
        None => {
            boot_recorded(dirs, &mut db, &record, !in_disk, cold, "reset", progress)
                .await?
                .phases
        }
    };
    store::mark_reset(db.conn(), &record.id, timer.started_at_ms())?;
    let info = ResetInfo {
        snapshot_name: snapshot.to_string(),
        kind: if is_baseline {
            SnapshotKind::Baseline
        } else {
            SnapshotKind::Named
        },
        destination: validate::WORKSPACE_ROOT.into(),
        entry_count: is_baseline.then_some(record.seed.entry_count),
        bytes_written: is_baseline.then_some(record.seed.bytes_written),
    };
    let operation = journal::Operation::Reset {
        params: journal::ResetParams {
            snapshot: snapshot.to_string(),
        },
        result: info.clone(),
    };
    timer.record(&mut db, &record.id, true, &operation)?;
    let record = store::resolve(db.conn(), &record.id)?;
    Ok(ResetResult {
        workspace: with_phases(store::view(db.conn(), &record), phases)?,
        workspace_reset: info,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DeleteResult {
    pub workspace_id: String,
    pub deleted: bool,
    pub reason: String,
}

pub async fn delete(dirs: &Dirs, reference: &str) -> Result<DeleteResult> {
    delete_if(dirs, reference, |_| true)
        .await?
        .ok_or_else(|| Error::internal("a delete without a condition did not delete"))
}

/// Deletes the workspace if, once its lifecycle is locked and its state refreshed, `still` holds
/// (`None` when it does not: it changed meanwhile).
pub(crate) async fn delete_if(
    dirs: &Dirs,
    reference: &str,
    still: impl Fn(&Record) -> bool,
) -> Result<Option<DeleteResult>> {
    let db = Db::open(dirs)?;
    let (record, lock) = locked(dirs, &db, reference)?;
    if !still(&record) {
        return Ok(None);
    }
    vm::discard(&vm_dir(dirs, &record.id), "deleted").await?;
    store::delete(db.conn(), &record.id)?;
    drop(lock);
    fsutil::remove_tree(&workspace_dir(dirs, &record.id))?;
    Ok(Some(DeleteResult {
        workspace_id: record.id,
        deleted: true,
        reason: "explicit_delete".into(),
    }))
}

/// The stored record of a workspace, its state refreshed: less than [`status`] reads.
pub fn record(dirs: &Dirs, reference: &str) -> Result<Record> {
    find(dirs, &Db::open(dirs)?, reference)
}

pub fn status(dirs: &Dirs, reference: &str) -> Result<Workspace> {
    let db = Db::open(dirs)?;
    let record = find(dirs, &db, reference)?;
    store::view(db.conn(), &record)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListResult {
    pub count: usize,
    pub workspaces: Vec<Workspace>,
}

pub fn list(dirs: &Dirs) -> Result<ListResult> {
    let db = Db::open(dirs)?;
    let mut workspaces = Vec::new();
    for record in store::list(db.conn())? {
        let record = refresh(dirs, &db, record)?;
        workspaces.push(store::view(db.conn(), &record)?);
    }
    Ok(ListResult {
        count: workspaces.len(),
        workspaces,
    })
}

/// Sets the idle TTL: stored for the next starts, and given to a running VM, where it counts from now.
pub async fn set_ttl(dirs: &Dirs, reference: &str, ttl_seconds: u64) -> Result<Workspace> {
    let ttl_seconds = validate::ttl_seconds(ttl_seconds)?;
    let db = Db::open(dirs)?;
    let (record, _lock) = locked(dirs, &db, reference)?;
    store::set_ttl_seconds(db.conn(), &record.id, ttl_seconds)?;
    if record.state == WorkspaceState::Started {
        let request = supervisor::protocol::ClientRequest::SetIdleTimeout {
            seconds: Some(ttl_seconds),
        };
        match supervisor::request(&vm_dir(dirs, &record.id), &request).await? {
            supervisor::protocol::ClientReply::IdleTimeoutSet => {}
            other => {
                return Err(Error::internal(format!(
                    "unexpected supervisor reply: {other:?}"
                )))
            }
        }
        store::touch(db.conn(), &record.id, now_ms())?;
    }
    let record = find(dirs, &db, &record.id)?;
    store::view(db.conn(), &record)
}

/// Options of `workspace update`.
#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    pub name: Option<String>,
    pub clear_name: bool,
    pub labels: Vec<(String, String)>,
    pub clear_labels: Vec<String>,
}

pub fn update(dirs: &Dirs, reference: &str, options: &UpdateOptions) -> Result<Workspace> {
    if options.name.is_some() && options.clear_name {
        return Err(Error::invalid(
            "a new name and clearing the name cannot be asked for together",
        ));
    }
    if options.name.is_none()
        && !options.clear_name
        && options.labels.is_empty()
        && options.clear_labels.is_empty()
    {
        return Err(Error::invalid("workspace update requested no change")
            .with_hint("give a new name, clear the name, or set or clear labels"));
    }
    let name = options.name.as_deref().map(validate::name).transpose()?;
    let labels = validate::labels(&options.labels)?;
    let clear: Vec<String> = options
        .clear_labels
        .iter()
        .map(|k| validate::label_key(k))
        .collect::<Result<_>>()?;
    let mut db = Db::open(dirs)?;
    let id = store::resolve(db.conn(), reference)?.id;
    db.write(|tx| {
        let mut record = store::load(tx, &id)?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("workspace '{id}' does not exist"),
            )
        })?;
        if let Some(name) = &name {
            store::ensure_name_free(tx, name, &id)?;
            record.name = Some(name.clone());
        }
        if options.clear_name {
            record.name = None;
        }
        for key in &clear {
            record.labels.remove(key);
        }
        record.labels.extend(labels.clone());
        store::update_metadata(tx, &record)
    })?;
    let record = find(dirs, &db, &id)?;
    store::view(db.conn(), &record)
}
