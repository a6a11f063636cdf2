//! Every MCP tool pyro offers: one [`ToolDef`] each, and the core call it makes. Profiles and modes
//! (`toolsets`) list these values; nothing else names a tool.

use std::marker::PhantomData;

use pyro_core::host_paths::Access;
use pyro_core::network::NetworkPolicy;
use pyro_core::project::ProjectSeed;
use pyro_core::vocab::TtlAction;
use pyro_core::workspace::secrets::{SecretSource, SecretSpec};
use pyro_core::workspace::services::{self, PortSpec, ReadinessOptions, ServiceOptions};
use pyro_core::workspace::shells::{self, ReadOptions};
use pyro_core::workspace::snapshots;
use pyro_core::workspace::vms;
use pyro_core::workspace::{self, CreateOptions, ExecCommand, ExecOptions, UpdateOptions};
use pyro_core::{run, Error, Progress};
use serde_json::Value;

use crate::params::*;
use crate::registry::{json, Call, Hints, ToolDef, ToolSpec};

type Outcome = Result<Value, Error>;

/// Tool calls report no progress: their result says it all.
struct Quiet;
impl Progress for Quiet {
    fn phase(&self, _message: &str) {}
}

fn no_host_compat(allowed: bool) -> Result<(), Error> {
    if allowed {
        return Err(Error::invalid(
            "allow_host_compat must be false: pyro never runs guest work on the host",
        ));
    }
    Ok(())
}

/// A secret as given: exactly one of a value and a host file (under the roots tools may read).
fn secret(s: SecretParam, c: &Call) -> Result<SecretSpec, Error> {
    let source = match (s.value, s.file_path) {
        (Some(value), None) => SecretSource::Value(value),
        (None, Some(path)) => SecretSource::File(c.server.host_path(&path, Access::Read)?),
        _ => {
            return Err(Error::invalid(format!(
                "secret '{}' must provide exactly one of 'value' or 'file_path'",
                s.name
            )))
        }
    };
    Ok(SecretSpec {
        name: s.name,
        source,
    })
}

fn labels(map: Option<std::collections::BTreeMap<String, String>>) -> Vec<(String, String)> {
    map.unwrap_or_default().into_iter().collect()
}

pub static VM_RUN: ToolDef<VmRun> = ToolDef {
    name: "vm_run",
    description: "Run one shell command in a fresh, isolated Linux VM and return its exit code, stdout and stderr; the VM is deleted afterwards. For several steps on the same files, use a workspace instead.",
    hints: Hints::COMMAND,
    network_args: &[],
    run: |a, c| Box::pin(vm_run(a, c)),
    params: PhantomData,
};

async fn vm_run(a: VmRun, c: Call) -> Outcome {
    no_host_compat(a.allow_host_compat)?;
    if a.ttl_seconds == Some(0) {
        return Err(Error::invalid(
            "ttl_seconds must be positive (the VM lives only for this call anyway)",
        ));
    }
    let options = run::RunOptions {
        vcpu_count: a.vcpu_count,
        mem_mib: a.mem_mib,
        timeout_seconds: a.timeout_seconds,
        network: c
            .server
            .network(a.network.then_some(NetworkPolicy::Egress), a.allow_hosts)?,
        shell_command: Some(a.command),
        ..run::RunOptions::new(&a.environment, Vec::new())
    };
    // A cancelled call (or a client gone) tears the VM down.
    let cancel = c.context.ct.clone();
    let done = async move { cancel.cancelled().await };
    json(&run::run(c.server.dirs(), &options, &Quiet, None, done).await?)
}

pub static VM_LIST_ENVIRONMENTS: ToolDef<NoArgs> = ToolDef {
    name: "vm_list_environments",
    description: "The environments VMs and workspaces boot from, and whether each is built here.",
    hints: Hints::READ,
    network_args: &[],
    run: |_, c| {
        Box::pin(async move {
            let environments = pyro_core::environment::list(c.server.dirs());
            json(&serde_json::json!({ "count": environments.len(), "environments": environments }))
        })
    },
    params: PhantomData,
};

pub static VM_CREATE: ToolDef<VmCreate> = ToolDef {
    name: "vm_create",
    description: "Create and start a plain VM (nothing seeded; for several commands in one machine). Returns vm_id for the other vm_* tools. Its idle TTL stops it; vm_reap_expired deletes the stopped ones.",
    hints: Hints::CHANGE,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            no_host_compat(a.allow_host_compat)?;
            let options = vms::VmCreateOptions {
                environment: a.environment,
                vcpu_count: a.vcpu_count,
                mem_mib: a.mem_mib,
                ttl_seconds: a.ttl_seconds,
                network: c
                    .server
                    .network(a.network.then_some(NetworkPolicy::Egress), None)?,
            };
            json(&vms::create(c.server.dirs(), &options, &Quiet).await?)
        })
    },
    params: PhantomData,
};

pub static VM_START: ToolDef<VmRef> = ToolDef {
    name: "vm_start",
    description: "Start a stopped VM again, with its disk as it was.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move { json(&vms::start(c.server.dirs(), &a.vm_id, &Quiet).await?) })
    },
    params: PhantomData,
};

pub static VM_STOP: ToolDef<VmRef> = ToolDef {
    name: "vm_stop",
    description: "Stop a VM; its disk is kept for vm_start.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| Box::pin(async move { json(&vms::stop(c.server.dirs(), &a.vm_id).await?) }),
    params: PhantomData,
};

pub static VM_DELETE: ToolDef<VmRef> = ToolDef {
    name: "vm_delete",
    description: "Delete a VM and its disk.",
    hints: Hints::DESTRUCTIVE,
    network_args: &[],
    run: |a, c| Box::pin(async move { json(&vms::delete(c.server.dirs(), &a.vm_id).await?) }),
    params: PhantomData,
};

pub static VM_STATUS: ToolDef<VmRef> = ToolDef {
    name: "vm_status",
    description: "One VM: state (and why it stopped), shape, TTL.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| Box::pin(async move { json(&vms::status(c.server.dirs(), &a.vm_id)?) }),
    params: PhantomData,
};

pub static VM_NETWORK_INFO: ToolDef<VmRef> = ToolDef {
    name: "vm_network_info",
    description:
        "A VM's network: whether it has one, its policy, and the guest's address, gateway and DNS.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| Box::pin(async move { json(&vms::network_info(c.server.dirs(), &a.vm_id)?) }),
    params: PhantomData,
};

pub static VM_EXEC: ToolDef<VmExec> = ToolDef {
    name: "vm_exec",
    description: "Run a shell command in a started VM (in /) and return its exit code, stdout and stderr. The VM stays; delete it with vm_delete.",
    hints: Hints::COMMAND,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&vms::exec(dirs, &a.vm_id, &a.command, a.timeout_seconds).await?)
        })
    },
    params: PhantomData,
};

pub static VM_REAP_EXPIRED: ToolDef<NoArgs> = ToolDef {
    name: "vm_reap_expired",
    description:
        "Delete the VMs their idle TTL stopped (never workspaces). Returns deleted_vm_ids.",
    hints: Hints::DESTRUCTIVE,
    network_args: &[],
    run: |_, c| Box::pin(async move { json(&vms::reap_expired(c.server.dirs()).await?) }),
    params: PhantomData,
};

pub static WORKSPACE_CREATE: ToolDef<WorkspaceCreate> = ToolDef {
    name: "workspace_create",
    description: "Create a persistent sandbox VM with /workspace seeded from seed_path (a host directory or archive) or, when omitted, from the current project. Returns workspace_id for the other workspace tools.",
    hints: Hints::CHANGE,
    network_args: &["network_policy", "allow_hosts"],
    run: |a, c| Box::pin(workspace_create(a, c)),
    params: PhantomData,
};

async fn workspace_create(a: WorkspaceCreate, c: Call) -> Outcome {
    no_host_compat(a.allow_host_compat)?;
    let policy = a
        .network_policy
        .as_deref()
        .map(str::parse::<NetworkPolicy>)
        .transpose()
        .map_err(Error::invalid)?;
    let network = c.server.network(policy, a.allow_hosts)?;
    let project = match &a.seed_path {
        Some(_) => None,
        None => c.server.project()?.map(|p| ProjectSeed {
            include_git: a.include_git,
            ..p
        }),
    };
    let secrets = a
        .secrets
        .unwrap_or_default()
        .into_iter()
        .map(|s| secret(s, &c))
        .collect::<Result<Vec<_>, Error>>()?;
    let options = CreateOptions {
        secrets,
        seed_path: a
            .seed_path
            .map(|p| c.server.host_path(&p, Access::Read))
            .transpose()?,
        project,
        include_git: a.include_git,
        name: a.name,
        labels: labels(a.labels),
        vcpu_count: a.vcpu_count,
        mem_mib: a.mem_mib,
        disk_gib: a.disk_gib,
        ttl_seconds: a.ttl_seconds,
        ttl_action: ttl_action(a.ttl_action.as_deref())?,
        network,
        ..CreateOptions::new(&a.environment)
    };
    json(&workspace::create(c.server.dirs(), &options, &Quiet).await?)
}

/// `ttl_action` as given (`stop` when absent).
fn ttl_action(text: Option<&str>) -> Result<TtlAction, Error> {
    match text {
        None => Ok(TtlAction::Stop),
        Some(text) => TtlAction::parse(text).ok_or_else(|| {
            Error::invalid(format!("ttl_action '{text}' is not one of: stop, suspend"))
        }),
    }
}

pub static WORKSPACE_LIST: ToolDef<NoArgs> = ToolDef {
    name: "workspace_list",
    description: "List workspaces, most recently active first, with state, name and labels.",
    hints: Hints::READ,
    network_args: &[],
    run: |_, c| Box::pin(async move { json(&workspace::list(c.server.dirs())?) }),
    params: PhantomData,
};

pub static WORKSPACE_UPDATE: ToolDef<WorkspaceUpdate> = ToolDef {
    name: "workspace_update",
    description: "Rename a workspace or change its labels.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let options = UpdateOptions {
                name: a.name,
                clear_name: a.clear_name,
                labels: labels(a.labels),
                clear_labels: a.clear_labels.unwrap_or_default(),
            };
            json(&workspace::update(
                c.server.dirs(),
                &a.workspace_id,
                &options,
            )?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_STATUS: ToolDef<WorkspaceRef> = ToolDef {
    name: "workspace_status",
    description:
        "Show one workspace: state (and why it stopped), seed, command count, last command.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move { json(&workspace::status(c.server.dirs(), &a.workspace_id)?) })
    },
    params: PhantomData,
};

pub static WORKSPACE_SYNC_PUSH: ToolDef<WorkspaceSyncPush> = ToolDef {
    name: "workspace_sync_push",
    description: "Copy a host directory or archive into the workspace (default /workspace). The baseline used by diff and reset does not change.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let source = c.server.host_path(&a.source_path, Access::Read)?;
            let dirs = c.server.dirs();
            json(&workspace::sync_push(dirs, &a.workspace_id, &source, Some(&a.dest)).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_EXEC: ToolDef<WorkspaceExec> = ToolDef {
    name: "workspace_exec",
    description: "Run a shell command in the workspace (in /workspace unless cwd is given). Returns exit_code, stdout, stderr; output over 1 MiB keeps its head and tail.",
    hints: Hints::COMMAND,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let options = ExecOptions {
                command: ExecCommand::Shell(a.command),
                cwd: Some(a.cwd),
                env: Default::default(),
                secret_env: a.secret_env.unwrap_or_default(),
                timeout_seconds: a.timeout_seconds,
            };
            let dirs = c.server.dirs();
            json(&workspace::exec(dirs, &a.workspace_id, &options, &mut |_, _| {}).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_LOGS: ToolDef<WorkspaceRef> = ToolDef {
    name: "workspace_logs",
    description: "The workspace's activity journal: every command with its output, and every write, patch, sync, export and reset.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| Box::pin(async move { json(&workspace::logs(c.server.dirs(), &a.workspace_id)?) }),
    params: PhantomData,
};

pub static WORKSPACE_FILE_LIST: ToolDef<WorkspaceFileList> = ToolDef {
    name: "workspace_file_list",
    description: "List a directory in /workspace (recursively if asked) with types and sizes.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&workspace::file_list(dirs, &a.workspace_id, &a.path, a.recursive).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_FILE_READ: ToolDef<WorkspaceFileRead> = ToolDef {
    name: "workspace_file_read",
    description: "Read a text file in /workspace (64 KiB by default; `truncated` and `offset` let you read on). Prefer this to `cat` via exec.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            let read = workspace::file_read(dirs, &a.workspace_id, &a.path, a.offset, a.max_bytes);
            json(&read.await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_FILE_WRITE: ToolDef<WorkspaceFileWrite> = ToolDef {
    name: "workspace_file_write",
    description: "Write a whole text file in /workspace, creating parent directories. For small edits to existing files, workspace_patch_apply is safer.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&workspace::file_write(dirs, &a.workspace_id, &a.path, &a.text).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_PATCH_APPLY: ToolDef<WorkspacePatchApply> = ToolDef {
    name: "workspace_patch_apply",
    description: "Apply a unified diff to files in /workspace. All or nothing: if any hunk does not match, nothing changes and the error names the file and hunk.",
    hints: Hints::CHANGE,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&workspace::patch_apply(dirs, &a.workspace_id, &a.patch).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_DIFF: ToolDef<WorkspaceSince> = ToolDef {
    name: "workspace_diff",
    description: "What changed in /workspace since the baseline (or since the snapshot `since` names): entries per file and a unified patch (git apply accepts it). Binary files are listed, not patched.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&workspace::diff(dirs, &a.workspace_id, a.since.as_deref()).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_EXPORT: ToolDef<WorkspaceExport> = ToolDef {
    name: "workspace_export",
    description:
        "Copy a file or directory from /workspace to a new path on the host (never overwrites).",
    hints: Hints::CHANGE,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let output = c.server.host_path(&a.output_path, Access::Create)?;
            let dirs = c.server.dirs();
            json(&workspace::export(dirs, &a.workspace_id, &a.path, &output).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_RESET: ToolDef<WorkspaceReset> = ToolDef {
    name: "workspace_reset",
    description: "Start over: the whole sandbox (/workspace and the rest of the disk) back to a snapshot, `baseline` unless `snapshot` names one from snapshot_create. Services and shells end; the activity journal is kept.",
    hints: Hints::DESTRUCTIVE,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&workspace::reset(dirs, &a.workspace_id, &a.snapshot, false, &Quiet).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_DELETE: ToolDef<WorkspaceRef> = ToolDef {
    name: "workspace_delete",
    description: "Delete a workspace and everything in it.",
    hints: Hints {
        idempotent: true,
        ..Hints::DESTRUCTIVE
    },
    network_args: &[],
    run: |a, c| {
        Box::pin(async move { json(&workspace::delete(c.server.dirs(), &a.workspace_id).await?) })
    },
    params: PhantomData,
};

pub static WORKSPACE_SUMMARY: ToolDef<WorkspaceSince> = ToolDef {
    name: "workspace_summary",
    description: "Review what changed and what ran since the last reset (or since the snapshot `since` names): changed files with line counts, commands with exit codes and durations, writes, patches, syncs and exports.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&workspace::summary(dirs, &a.workspace_id, a.since.as_deref()).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_STOP: ToolDef<WorkspaceRef> = ToolDef {
    name: "workspace_stop",
    description: "Stop a workspace's VM to free the host; its files are kept for workspace_start.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move { json(&workspace::stop(c.server.dirs(), &a.workspace_id).await?) })
    },
    params: PhantomData,
};

pub static WORKSPACE_DISK_LIST: ToolDef<WorkspaceFileList> = ToolDef {
    name: "workspace_disk_list",
    description: "List a directory in /workspace of a STOPPED workspace, read from its disk without booting it (same paths and results as workspace_file_list).",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&workspace::disk_list(dirs, &a.workspace_id, &a.path, a.recursive).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_DISK_READ: ToolDef<WorkspaceFileRead> = ToolDef {
    name: "workspace_disk_read",
    description: "Read a text file in /workspace of a STOPPED workspace from its disk without booting it (64 KiB by default; `truncated` and `offset` let you read on).",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            let read = workspace::disk_read(dirs, &a.workspace_id, &a.path, a.offset, a.max_bytes);
            json(&read.await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_DISK_EXPORT: ToolDef<WorkspaceDiskExport> = ToolDef {
    name: "workspace_disk_export",
    description: "Copy a STOPPED workspace's whole disk to a new host file as a raw ext4 image (sparse; /workspace is `workspace/` in it, other changes are under `root/upper/`). Never overwrites.",
    hints: Hints::CHANGE,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let output = c.server.host_path(&a.output_path, Access::Create)?;
            let dirs = c.server.dirs();
            json(&workspace::disk_export(dirs, &a.workspace_id, &output).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_START: ToolDef<WorkspaceRef> = ToolDef {
    name: "workspace_start",
    description: "Start a stopped workspace again with its files as they were.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&workspace::start(dirs, &a.workspace_id, false, None, &Quiet).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_SUSPEND: ToolDef<WorkspaceRef> = ToolDef {
    name: "workspace_suspend",
    description: "Suspend a started workspace: its memory is saved beside its disk and its VM stops, so it costs the host nothing; workspace_resume brings back every process, service and shell as it was.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move { json(&workspace::suspend(c.server.dirs(), &a.workspace_id).await?) })
    },
    params: PhantomData,
};

pub static WORKSPACE_RESUME: ToolDef<WorkspaceRef> = ToolDef {
    name: "workspace_resume",
    description: "Resume a suspended workspace with every process as it was (the clock stepped to now). A saved state that cannot be used is dropped and the workspace boots from its disk, saying why in boot_mode_reason.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&workspace::resume(dirs, &a.workspace_id, &Quiet).await?)
        })
    },
    params: PhantomData,
};

pub static WORKSPACE_FORK: ToolDef<WorkspaceFork> = ToolDef {
    name: "workspace_fork",
    description: "Copy a started workspace, memory and disk, into a new workspace: both run on, processes started before the fork run in both, and writes in one never reach the other. The fork gets its own identity, entropy and network; it uses the source's secrets only with inherit_secrets.",
    hints: Hints::CHANGE,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let options = workspace::ForkOptions {
                name: a.name,
                inherit_secrets: a.inherit_secrets,
            };
            json(&workspace::fork(c.server.dirs(), &a.workspace_id, &options, &Quiet).await?)
        })
    },
    params: PhantomData,
};

pub static SERVICE_START: ToolDef<ServiceStart> = ToolDef {
    name: "service_start",
    description: "Start a named long-running command (a server, a worker) in the workspace and wait until its readiness check passes: ready_file, ready_tcp, ready_http or ready_command (at most one). A service that exits first or is not ready in time is stopped and reported failed; service_logs shows why.",
    hints: Hints::COMMAND,
    network_args: &[],
    run: |a, c| Box::pin(service_start(a, c)),
    params: PhantomData,
};

async fn service_start(a: ServiceStart, c: Call) -> Outcome {
    let options = ServiceOptions {
        cwd: Some(a.cwd),
        readiness: ReadinessOptions {
            file: a.ready_file,
            tcp: a.ready_tcp,
            http: a.ready_http,
            command: a.ready_command,
        },
        ready_timeout_seconds: a.ready_timeout_seconds,
        ready_interval_ms: a.ready_interval_ms,
        restart_on_start: a.restart_on_start,
        secret_env: a.secret_env.unwrap_or_default(),
        published_ports: a
            .published_ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| PortSpec {
                guest_port: p.guest_port,
                host_port: p.host_port,
            })
            .collect(),
        ..ServiceOptions::new(&a.service_name, ExecCommand::Shell(a.command))
    };
    json(&services::start(c.server.dirs(), &a.workspace_id, &options).await?)
}

pub static SERVICE_LIST: ToolDef<WorkspaceRef> = ToolDef {
    name: "service_list",
    description:
        "List a workspace's services with their states (running, exited, stopped, failed).",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move { json(&services::list(c.server.dirs(), &a.workspace_id).await?) })
    },
    params: PhantomData,
};

pub static SERVICE_STATUS: ToolDef<ServiceRef> = ToolDef {
    name: "service_status",
    description: "One service: state, pid, exit code, readiness and why it stopped.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&services::status(dirs, &a.workspace_id, &a.service_name).await?)
        })
    },
    params: PhantomData,
};

pub static SERVICE_LOGS: ToolDef<ServiceLogs> = ToolDef {
    name: "service_logs",
    description: "A service's stdout and stderr so far (the last tail_lines lines of each; all=true for everything kept). Works while it runs.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let tail = (!a.all).then_some(a.tail_lines);
            let dirs = c.server.dirs();
            json(&services::logs(dirs, &a.workspace_id, &a.service_name, tail).await?)
        })
    },
    params: PhantomData,
};

pub static SERVICE_STOP: ToolDef<ServiceRef> = ToolDef {
    name: "service_stop",
    description: "Stop a service: SIGTERM to its process group, SIGKILL 5 s later.",
    hints: Hints::SET,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&services::stop(dirs, &a.workspace_id, &a.service_name).await?)
        })
    },
    params: PhantomData,
};

pub static SNAPSHOT_CREATE: ToolDef<SnapshotRef> = ToolDef {
    name: "snapshot_create",
    description: "Snapshot the workspace's whole disk under a name, to come back to later with workspace_reset (snapshot=NAME). Fast whatever the amount of data; the workspace keeps running.",
    hints: Hints::CHANGE,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&snapshots::create(dirs, &a.workspace_id, &a.snapshot_name).await?)
        })
    },
    params: PhantomData,
};

pub static SNAPSHOT_LIST: ToolDef<WorkspaceRef> = ToolDef {
    name: "snapshot_list",
    description: "A workspace's snapshots: the baseline, then named ones, newest first.",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| Box::pin(async move { json(&snapshots::list(c.server.dirs(), &a.workspace_id)?) }),
    params: PhantomData,
};

pub static SNAPSHOT_DELETE: ToolDef<SnapshotRef> = ToolDef {
    name: "snapshot_delete",
    description: "Delete a named snapshot (the baseline stays).",
    hints: Hints::DESTRUCTIVE,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&snapshots::delete(dirs, &a.workspace_id, &a.snapshot_name).await?)
        })
    },
    params: PhantomData,
};

pub static SHELL_OPEN: ToolDef<ShellOpen> = ToolDef {
    name: "shell_open",
    description: "Open an interactive shell (bash on a terminal) in the workspace. It stays open between calls: type with shell_write, read with shell_read; close it with shell_close.",
    hints: Hints::COMMAND,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            let secret_env = a.secret_env.unwrap_or_default();
            let size = (a.cols, a.rows);
            json(&shells::open(dirs, &a.workspace_id, Some(&a.cwd), size, &secret_env).await?)
        })
    },
    params: PhantomData,
};

pub static SHELL_READ: ToolDef<ShellReadParams> = ToolDef {
    name: "shell_read",
    description: "Read a shell's output from cursor (start at 0, then pass the previous next_cursor: nothing is lost or repeated). plain=true gives the text a person would see on the terminal; wait_for_idle_ms waits until output stops (e.g. for a command to finish).",
    hints: Hints::READ,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let options = ReadOptions {
                cursor: a.cursor,
                max_chars: a.max_chars,
                plain: a.plain,
                wait_for_idle_ms: a.wait_for_idle_ms,
            };
            let dirs = c.server.dirs();
            json(&shells::read(dirs, &a.workspace_id, &a.shell_id, &options).await?)
        })
    },
    params: PhantomData,
};

pub static SHELL_WRITE: ToolDef<ShellWriteParams> = ToolDef {
    name: "shell_write",
    description: "Type input into a shell (Enter is pressed after it unless append_newline=false). Read what it printed with shell_read.",
    hints: Hints::COMMAND,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            let written = shells::write(dirs, &a.workspace_id, &a.shell_id, &a.input, a.append_newline);
            json(&written.await?)
        })
    },
    params: PhantomData,
};

pub static SHELL_SIGNAL: ToolDef<ShellSignalParams> = ToolDef {
    name: "shell_signal",
    description: "Send HUP, INT, TERM or KILL to a shell's process group (INT is Ctrl-C for the shell itself; a foreground job may need Ctrl-C typed: shell_write of the character U+0003 with append_newline=false).",
    hints: Hints::CHANGE,
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            let dirs = c.server.dirs();
            json(&shells::signal(dirs, &a.workspace_id, &a.shell_id, &a.signal_name).await?)
        })
    },
    params: PhantomData,
};

pub static SHELL_CLOSE: ToolDef<ShellRef> = ToolDef {
    name: "shell_close",
    description: "Close a shell: SIGHUP to its process group, SIGKILL 5 s later.",
    hints: Hints {
        idempotent: true,
        ..Hints::CHANGE
    },
    network_args: &[],
    run: |a, c| {
        Box::pin(async move {
            json(&shells::close(c.server.dirs(), &a.workspace_id, &a.shell_id).await?)
        })
    },
    params: PhantomData,
};

/// One-shot runs.
pub static RUN: &[&dyn ToolSpec] = &[&VM_RUN];

/// A workspace's daily loop: create, work in it, review, reset, delete.
pub static WORKSPACE: &[&dyn ToolSpec] = &[
    &WORKSPACE_CREATE,
    &WORKSPACE_LIST,
    &WORKSPACE_UPDATE,
    &WORKSPACE_STATUS,
    &WORKSPACE_SYNC_PUSH,
    &WORKSPACE_EXEC,
    &WORKSPACE_LOGS,
    &WORKSPACE_FILE_LIST,
    &WORKSPACE_FILE_READ,
    &WORKSPACE_FILE_WRITE,
    &WORKSPACE_PATCH_APPLY,
    &WORKSPACE_DIFF,
    &WORKSPACE_EXPORT,
    &WORKSPACE_RESET,
    &WORKSPACE_DELETE,
    &WORKSPACE_SUMMARY,
];

/// Stopping a workspace's VM and starting it again.
pub static LIFECYCLE: &[&dyn ToolSpec] = &[
    &WORKSPACE_STOP,
    &WORKSPACE_START,
    &WORKSPACE_SUSPEND,
    &WORKSPACE_RESUME,
    &WORKSPACE_FORK,
];

/// A stopped workspace's disk, read without booting it.
pub static DISK: &[&dyn ToolSpec] = &[
    &WORKSPACE_DISK_EXPORT,
    &WORKSPACE_DISK_LIST,
    &WORKSPACE_DISK_READ,
];

/// Services: long-running commands with a readiness check.
pub static SERVICES: &[&dyn ToolSpec] = &[
    &SERVICE_START,
    &SERVICE_LIST,
    &SERVICE_STATUS,
    &SERVICE_LOGS,
    &SERVICE_STOP,
];

/// Plain VMs, the reference's `vm_*` lifecycle.
pub static VMS: &[&dyn ToolSpec] = &[
    &VM_LIST_ENVIRONMENTS,
    &VM_CREATE,
    &VM_START,
    &VM_STOP,
    &VM_DELETE,
    &VM_STATUS,
    &VM_NETWORK_INFO,
    &VM_EXEC,
    &VM_REAP_EXPIRED,
];

/// Named snapshots of a workspace's disk.
pub static SNAPSHOTS: &[&dyn ToolSpec] = &[&SNAPSHOT_CREATE, &SNAPSHOT_LIST, &SNAPSHOT_DELETE];

/// Interactive shells on a terminal.
pub static SHELLS: &[&dyn ToolSpec] = &[
    &SHELL_OPEN,
    &SHELL_READ,
    &SHELL_WRITE,
    &SHELL_SIGNAL,
    &SHELL_CLOSE,
];

/// Every tool pyro implements, in the order hosts list them.
pub fn all() -> Vec<&'static dyn ToolSpec> {
    [
        RUN, WORKSPACE, LIFECYCLE, DISK, SERVICES, SHELLS, SNAPSHOTS, VMS,
    ]
    .concat()
}
