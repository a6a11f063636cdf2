//! `workspace fork`: a new workspace whose memory and disk are a copy of a running one at that
//! moment. The source's supervisor saves the guest (paused meanwhile) and a copy of its disk into
//! the new workspace's VM directory, while the fork's engine, started first, loads the state as
//! it is written; the source runs on, and the fork starts with an identity (hostname, machine id)
//! and entropy of its own. Processes started before the fork run in both.

use serde::{Deserialize, Serialize};

use super::lifecycle::{
    abandon, allocate, locked, now_ms, require_started, vm_dir, vm_options, with_phases,
    workspace_dir, BASELINE,
};
use super::model::Workspace;
use super::store::{self, Record};
use super::{journal, services, validate};
use crate::db::Db;
use crate::supervisor::protocol::{ClientReply, ClientRequest};
use crate::vocab::WorkspaceState;
use crate::{fsutil, supervisor, Dirs, Error, ErrorKind, Progress, Result};

#[derive(Debug, Clone, Default)]
pub struct ForkOptions {
    pub name: Option<String>,
    /// Let the fork use the source's secrets (`secret_env`). Otherwise it only redacts them: its
    /// processes may hold them from before the fork.
    pub inherit_secrets: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForkParams {
    pub name: Option<String>,
    pub inherit_secrets: bool,
}

/// What a fork copied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForkInfo {
    pub source_workspace_id: String,
    pub fork_workspace_id: String,
    /// The size of the memory and device state copied.
    pub state_bytes: u64,
    /// How long the source was paused while its memory and disk were copied.
    pub source_paused_ms: u64,
}

/// The result of `workspace fork`: the new workspace and what was copied.
#[derive(Debug, Clone, Serialize)]
pub struct ForkResult {
    #[serde(flatten)]
    pub workspace: Workspace,
    pub workspace_fork: ForkInfo,
}

pub async fn fork(
    dirs: &Dirs,
    reference: &str,
    options: &ForkOptions,
    progress: &dyn Progress,
) -> Result<ForkResult> {
    let name = options.name.as_deref().map(validate::name).transpose()?;
    let mut db = Db::open(dirs)?;
    let (source, _source_lock) = locked(dirs, &db, reference)?;
    require_started(&source, "fork")?;
    let (id, dir, lock) = allocate(dirs, &db, name.as_deref())?;
    let timer = journal::Timer::start();
    let outcome = async {
        let source_disk = vm_dir(dirs, &source.id).join(crate::disk::FILE_NAME);
        let disk_bytes = std::fs::metadata(&source_disk)
            .map_err(|e| Error::io("inspect", &source_disk, e))?
            .len();
        let needed = (u64::from(source.mem_mib) << 20).saturating_add(disk_bytes);
        let floor = crate::host::space::floor_bytes();
        crate::host::space::ensure(&dir, "forking the workspace", needed, floor)?;
        let source_dir = workspace_dir(dirs, &source.id);
        std::fs::copy(source_dir.join(BASELINE), dir.join(BASELINE))
            .map_err(|e| Error::io("copy the baseline to", &dir, e))?;
        super::secrets::fork(&source_dir, &dir, options.inherit_secrets)?;
        let now = now_ms();
        let record = Record {
            id: id.clone(),
            name: name.clone(),
            state: WorkspaceState::Creating,
            stop_reason: None,
            created_at: now,
            last_activity_at: now,
            reset_count: 0,
            last_reset_at: None,
            boot_mode: None,
            boot_mode_reason: None,
            secret_names: if options.inherit_secrets {
                source.secret_names.clone()
            } else {
                Vec::new()
            },
            ..source.clone()
        };
        store::insert(&mut db, &record)?;
        services::copy_records(&mut db, &source.id, &id)?;
        let fork_vm = vm_dir(dirs, &id);
        fsutil::create_dir_all(&fork_vm)?;
        // The fork's engine starts first and follows the source's save as it is written: the
        // state into a file made for it, the disk into a placeholder it opens at once and reads
        // afresh when it starts. Loading overlaps saving, and the source pauses no longer.
        let source_vm = vm_dir(dirs, &source.id);
        let config = running_config(&source_vm)?;
        let disk = fork_vm.join(crate::disk::FILE_NAME);
        tokio::task::block_in_place(|| crate::disk::create(dirs, &disk, source.disk_gib))?;
        crate::suspend::expect(&fork_vm)?;
        let named_ram = config.memory.named_ram();
        let suspension = crate::suspend::Suspension::following(
            crate::engine::VmConfig {
                data_disk: disk,
                ..config
            },
            named_ram,
            disk_bytes,
        );
        progress.phase("copying the running workspace");
        let vm_options = crate::vm::VmOptions {
            resume: Some(suspension),
            ..vm_options(&record, false)
        };
        let prepared =
            tokio::task::block_in_place(|| crate::vm::prepare(dirs, &vm_options, progress))
                .map_err(|err| match err.kind() {
                    // The source runs on what its environment and agent were when it started.
                    ErrorKind::InvalidState => Error::new(
                        ErrorKind::InvalidState,
                        format!(
                        "workspace '{}' cannot be forked as it runs: its environment or the guest \
                         agent changed since it started",
                        source.id
                    ),
                    )
                    .with_hint("stop and start it, then fork it"),
                    _ => err,
                })?;
        let booting = async {
            let booted = crate::vm::boot(&id, &fork_vm, &vm_options, prepared)
                .await
                .map(|vm| vm.facts.clone());
            let _ = crate::suspend::discard(&fork_vm);
            booted
        };
        let saving = async {
            let reply = supervisor::request(
                &source_vm,
                &ClientRequest::Fork {
                    into: fork_vm.clone(),
                },
            )
            .await;
            if !matches!(reply, Ok(ClientReply::Saved { .. })) {
                // The fork's engine sees its state file go, and gives up.
                let _ = crate::suspend::discard(&fork_vm);
            }
            reply
        };
        let (booted, saved) = tokio::join!(booting, saving);
        let info = match saved? {
            ClientReply::Saved { bytes, save_ms } => ForkInfo {
                source_workspace_id: source.id.clone(),
                fork_workspace_id: id.clone(),
                state_bytes: bytes,
                source_paused_ms: save_ms,
            },
            ClientReply::Error { message } => {
                // The source runs on, unless the error says it could not carry on (it then
                // stopped, with the reason in its status).
                return Err(Error::new(ErrorKind::Engine, message));
            }
            other => {
                return Err(Error::internal(format!(
                    "unexpected supervisor reply: {other:?}"
                )))
            }
        };
        let mut facts = booted.map_err(|e| e.context("the fork could not start"))?;
        facts.boot_mode_reason = format!("forked from {}", source.id);
        store::set_started(db.conn(), &id, facts.boot_mode, &facts.boot_mode_reason)?;
        services::republish(dirs, &id).await?;
        let operation = journal::Operation::Fork {
            params: ForkParams {
                name: name.clone(),
                inherit_secrets: options.inherit_secrets,
            },
            result: info.clone(),
        };
        timer.record(&mut db, &source.id, true, &operation)?;
        timer.record(&mut db, &id, true, &operation)?;
        Ok::<_, Error>((facts, info))
    }
    .await;
    let (facts, info) = match outcome {
        Ok(done) => done,
        Err(err) => return Err(abandon(dirs, db, &id, lock, "fork", err).await),
    };
    drop(lock);
    let record = store::resolve(db.conn(), &id)?;
    Ok(ForkResult {
        workspace: with_phases(store::view(db.conn(), &record), facts.phases)?,
        workspace_fork: info,
    })
}

/// The configuration the VM in `vm_dir` runs with, as its supervisor was given it.
fn running_config(vm_dir: &std::path::Path) -> Result<crate::engine::VmConfig> {
    let path = vm_dir.join(supervisor::RECORD_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    serde_json::from_slice::<supervisor::VmRecord>(&bytes)
        .map(|record| record.config)
        .map_err(|e| Error::internal(format!("bad {}: {e}", path.display())))
}
