//! Plain VMs, for the `vm_*` tools: a VM made by `vm_create` is a workspace of kind `vm` with nothing
//! seeded, so it has one lifecycle, one store and one journal with workspaces (and `workspace list`
//! shows it). The `vm_*` operations refuse anything that is not of that kind.
//!
//! Unlike the reference's in-memory VMs, these live in the state database (any `pyro` process can use
//! them), their ids are checked, and their idle TTL stops them; `reap_expired` deletes the ones it
//! stopped, when the caller asks.

use serde::Serialize;

use super::lifecycle::{self, CreateOptions};
use super::model::Workspace;
use super::ops::{self, ExecOptions, WorkspaceExecResult};
use super::store::{self, Record};
use crate::db::Db;
use crate::network::{Network, NetworkPolicy};
use crate::vocab::{BootMode, WorkspaceKind, WorkspaceState};
use crate::{limits, Dirs, Error, ErrorKind, Progress, Result};

/// Default idle TTL of a VM, in seconds (the reference's).
pub const DEFAULT_VM_TTL_SECONDS: u64 = 600;

#[derive(Debug, Clone)]
pub struct VmCreateOptions {
    pub environment: String,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub ttl_seconds: u64,
    pub network: Network,
}

/// A VM as the `vm_*` tools report it.
#[derive(Debug, Clone, Serialize)]
pub struct VmView {
    pub vm_id: String,
    pub environment: String,
    pub state: WorkspaceState,
    pub stop_reason: Option<String>,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub disk_gib: u32,
    pub ttl_seconds: u64,
    pub network_enabled: bool,
    pub created_at: f64,
    pub last_activity_at: f64,
    pub expires_at: Option<f64>,
    pub boot_mode: Option<BootMode>,
}

impl From<Workspace> for VmView {
    fn from(ws: Workspace) -> VmView {
        VmView {
            vm_id: ws.workspace_id,
            environment: ws.environment,
            state: ws.state,
            stop_reason: ws.stop_reason,
            vcpu_count: ws.vcpu_count,
            mem_mib: ws.mem_mib,
            disk_gib: ws.disk_gib,
            ttl_seconds: ws.ttl_seconds,
            network_enabled: ws.network_enabled,
            created_at: ws.created_at,
            last_activity_at: ws.last_activity_at,
            expires_at: ws.expires_at,
            boot_mode: ws.boot_mode,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VmDeleted {
    pub vm_id: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VmExecResult {
    pub vm_id: String,
    #[serde(flatten)]
    pub exec: WorkspaceExecResult,
}

#[derive(Debug, Clone, Serialize)]
pub struct VmNetworkInfo {
    pub vm_id: String,
    pub network_enabled: bool,
    pub network_policy: NetworkPolicy,
    /// The guest's side (the same in every VM: each has a network of its own).
    pub guest_ip: Option<String>,
    pub gateway: Option<String>,
    pub dns: Vec<String>,
    pub prefix_len: Option<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reaped {
    pub deleted_vm_ids: Vec<String>,
    pub count: usize,
}

/// The VM `reference` names; a workspace, or nothing, is an error that says which.
fn resolve(dirs: &Dirs, reference: &str) -> Result<Record> {
    let db = Db::open(dirs)?;
    let not_found = || {
        Error::new(
            ErrorKind::NotFound,
            format!("vm '{}' does not exist", reference.trim()),
        )
    };
    let record = store::resolve(db.conn(), reference).map_err(|e| match e.kind() {
        ErrorKind::NotFound => not_found(),
        _ => e,
    })?;
    if record.kind != WorkspaceKind::Vm {
        return Err(not_found().with_hint(format!(
            "{} is a workspace, not a VM made by vm_create: use the workspace tools on it",
            record.id
        )));
    }
    Ok(record)
}

pub async fn create(
    dirs: &Dirs,
    options: &VmCreateOptions,
    progress: &dyn Progress,
) -> Result<VmView> {
    let create = CreateOptions {
        vcpu_count: options.vcpu_count,
        mem_mib: options.mem_mib,
        ttl_seconds: options.ttl_seconds,
        network: options.network.clone(),
        kind: WorkspaceKind::Vm,
        ..CreateOptions::new(&options.environment)
    };
    limits::check("ttl_seconds", options.ttl_seconds, &limits::TTL_SECONDS)?;
    Ok(lifecycle::create(dirs, &create, progress).await?.into())
}

pub async fn start(dirs: &Dirs, reference: &str, progress: &dyn Progress) -> Result<VmView> {
    let record = resolve(dirs, reference)?;
    Ok(lifecycle::start(dirs, &record.id, false, None, progress)
        .await?
        .into())
}

pub async fn stop(dirs: &Dirs, reference: &str) -> Result<VmView> {
    let record = resolve(dirs, reference)?;
    Ok(lifecycle::stop(dirs, &record.id).await?.into())
}

pub async fn delete(dirs: &Dirs, reference: &str) -> Result<VmDeleted> {
    let record = resolve(dirs, reference)?;
    let deleted = lifecycle::delete(dirs, &record.id).await?;
    Ok(VmDeleted {
        vm_id: deleted.workspace_id,
        deleted: deleted.deleted,
    })
}

pub fn status(dirs: &Dirs, reference: &str) -> Result<VmView> {
    let record = resolve(dirs, reference)?;
    Ok(lifecycle::status(dirs, &record.id)?.into())
}

/// Runs a shell command in the VM (in `/`); the VM stays (delete it with `delete`).
pub async fn exec(
    dirs: &Dirs,
    reference: &str,
    command: &str,
    timeout_seconds: u64,
) -> Result<VmExecResult> {
    let record = resolve(dirs, reference)?;
    let options = ExecOptions {
        command: ops::ExecCommand::Shell(command.to_string()),
        cwd: Some("/".into()),
        env: Default::default(),
        secret_env: Default::default(),
        timeout_seconds,
    };
    let exec = ops::exec(dirs, &record.id, &options, &mut |_, _| {}).await?;
    Ok(VmExecResult {
        vm_id: record.id,
        exec,
    })
}

pub fn network_info(dirs: &Dirs, reference: &str) -> Result<VmNetworkInfo> {
    let record = resolve(dirs, reference)?;
    let enabled = record.network.has_device();
    let a = pyro_net::GUEST_ADDRESSING;
    Ok(VmNetworkInfo {
        vm_id: record.id,
        network_enabled: enabled,
        network_policy: record.network.policy,
        guest_ip: enabled.then(|| a.guest.to_string()),
        gateway: enabled.then(|| a.gateway.to_string()),
        dns: if enabled {
            vec![a.dns.to_string()]
        } else {
            Vec::new()
        },
        prefix_len: enabled.then_some(a.prefix_len),
    })
}

/// Whether the idle TTL stopped this VM (and nothing started it since).
fn expired(kind: WorkspaceKind, state: WorkspaceState, stop_reason: Option<&str>) -> bool {
    kind == WorkspaceKind::Vm
        && state == WorkspaceState::Stopped
        && stop_reason.is_some_and(crate::supervisor::is_idle_stop)
}

/// Deletes the VMs their idle TTL stopped (workspaces are never touched). Each is checked again
/// under its lifecycle lock, so one started meanwhile stays; one that cannot be deleted is skipped
/// (and reaped next time).
pub async fn reap_expired(dirs: &Dirs) -> Result<Reaped> {
    let candidates: Vec<String> = lifecycle::list(dirs)?
        .workspaces
        .into_iter()
        .filter(|w| expired(w.kind, w.state, w.stop_reason.as_deref()))
        .map(|w| w.workspace_id)
        .collect();
    let mut deleted_vm_ids = Vec::new();
    for id in candidates {
        let still = |r: &Record| expired(r.kind, r.state, r.stop_reason.as_deref());
        if let Ok(Some(deleted)) = lifecycle::delete_if(dirs, &id, still).await {
            deleted_vm_ids.push(deleted.workspace_id);
        }
    }
    Ok(Reaped {
        count: deleted_vm_ids.len(),
        deleted_vm_ids,
    })
}
