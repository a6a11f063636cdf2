//! `workspace summary`: what changed and what ran since the last reset, in one concise view.

use serde::Serialize;

use super::diff::{self, DiffSummary};
use super::journal::{self, Operation};
use super::lifecycle;
use super::model::seconds;
use crate::db::Db;
use crate::vocab::{ChangeStatus, WorkspaceState};
use crate::{Dirs, Result};

#[derive(Debug, Clone, Serialize)]
pub struct ChangedFile {
    pub path: String,
    pub status: ChangeStatus,
    pub text: bool,
    pub lines_added: u64,
    pub lines_removed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    pub changed: bool,
    pub summary: DiffSummary,
    pub files: Vec<ChangedFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandRun {
    pub sequence: u64,
    pub command: String,
    pub cwd: String,
    pub exit_code: i64,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub started_at: f64,
}

/// One operation since the last reset, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub sequence: u64,
    pub kind: String,
    pub started_at: f64,
    pub duration_ms: u64,
    pub ok: bool,
    /// A one-line description (the command, the path, the file count).
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub commands: u64,
    pub failed_commands: u64,
    pub file_writes: u64,
    pub patches: u64,
    pub syncs: u64,
    pub exports: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SummaryResult {
    pub workspace_id: String,
    pub name: Option<String>,
    pub state: WorkspaceState,
    /// When the period began: the snapshot asked for, else the last reset, else the creation.
    pub since: f64,
    /// The snapshot the period starts at and the file changes are against (none: the baseline).
    pub since_snapshot: Option<String>,
    pub reset_count: u64,
    /// File changes against the baseline (or `since_snapshot`); absent while the workspace is stopped.
    pub changes: Option<Changes>,
    pub changes_note: Option<String>,
    pub counts: Counts,
    pub commands: Vec<CommandRun>,
    pub activity: Vec<Activity>,
}

/// A one-line description of an operation for the activity list.
fn describe(operation: &Operation) -> String {
    match operation {
        Operation::Exec { params, .. } => params.command.clone(),
        Operation::FileWrite { params, result } => {
            format!("{} ({} bytes)", params.path, result.bytes_written)
        }
        Operation::PatchApply { params, .. } => params.files.join(", "),
        Operation::SyncPush { params, .. } => {
            format!("{} -> {}", params.source_path, params.destination)
        }
        Operation::Export { params, .. } => format!("{} -> {}", params.path, params.output_path),
        Operation::Create { params, .. } => format!(
            "seeded from {}",
            params.seed_path.as_deref().unwrap_or("nothing")
        ),
        Operation::ServiceStart { params, result } => {
            format!("{} ({:?})", params.name, result.state)
        }
        Operation::ServiceStop { params, .. } => params.name.clone(),
        Operation::SnapshotCreate { params, .. } | Operation::SnapshotDelete { params, .. } => {
            params.name.clone()
        }
        Operation::Reset { .. }
        | Operation::Start { .. }
        | Operation::Stop { .. }
        | Operation::Suspend { .. } => String::new(),
        Operation::PathChange { params, .. } => match &params.to {
            Some(to) => format!("{} {} -> {to}", params.action, params.path),
            None => format!("{} {}", params.action, params.path),
        },
        Operation::ProcessStart { params, result } => format!(
            "{} (pid {})",
            shlex::try_join(params.argv.iter().map(String::as_str))
                .unwrap_or_else(|_| params.argv.join(" ")),
            result.pid
        ),
        Operation::Fork { result, .. } => format!(
            "{} -> {}",
            result.source_workspace_id, result.fork_workspace_id
        ),
    }
}

/// What changed and ran since the last reset, or since the snapshot `since` names (then the file
/// changes are against that snapshot).
pub async fn summary(dirs: &Dirs, reference: &str, since: Option<&str>) -> Result<SummaryResult> {
    let since = since.map(str::trim).filter(|s| *s != crate::disk::BASELINE);
    let (record, entries, period_start) = {
        let db = Db::open(dirs)?;
        let record = lifecycle::find(dirs, &db, reference)?;
        let period_start = match since {
            Some(name) => {
                let name = super::snapshots::name(name)?;
                let vm_dir = lifecycle::vm_dir(dirs, &record.id);
                super::snapshots::find(&vm_dir, &record.id, &name)?.created_at_ms as i64
            }
            None => record.last_reset_at.unwrap_or(record.created_at),
        };
        let entries = journal::entries(&db, &record.id, Some(period_start))?;
        (record, entries, period_start)
    };
    let mut counts = Counts::default();
    let mut commands = Vec::new();
    let mut activity = Vec::new();
    for entry in &entries {
        match entry.recorded.operation() {
            Some(Operation::Exec { params, result }) => {
                counts.commands += 1;
                if result.exit_code != 0 {
                    counts.failed_commands += 1;
                }
                commands.push(CommandRun {
                    sequence: entry.sequence,
                    command: params.command.clone(),
                    cwd: params.cwd.clone(),
                    exit_code: result.exit_code,
                    timed_out: result.timed_out,
                    duration_ms: entry.duration_ms,
                    started_at: entry.started_at,
                });
            }
            // The rest is counted by kind, so an entry of another version's shape counts too.
            _ => match entry.recorded.kind() {
                "file_write" => counts.file_writes += 1,
                "patch_apply" => counts.patches += 1,
                "sync_push" => counts.syncs += 1,
                "export" => counts.exports += 1,
                _ => {}
            },
        }
        activity.push(Activity {
            sequence: entry.sequence,
            kind: entry.recorded.kind().to_string(),
            started_at: entry.started_at,
            duration_ms: entry.duration_ms,
            ok: entry.ok,
            detail: entry.recorded.operation().map(describe).unwrap_or_default(),
        });
    }
    let (changes, changes_note) = if record.state == WorkspaceState::Started {
        // Reading for the summary is not activity: it neither moves the workspace up the list nor
        // postpones its idle stop.
        let vm_dir = lifecycle::vm_dir(dirs, &record.id);
        let base = super::since::resolve(dirs, &record.id, &vm_dir, since).await?;
        let diff = diff::diff_as(
            dirs,
            &record.id,
            &base,
            crate::agent_client::Purpose::Inspection,
        )
        .await?;
        let files = diff
            .entries
            .iter()
            .map(|e| ChangedFile {
                path: e.path.clone(),
                status: e.status,
                text: e.text,
                lines_added: e.lines_added,
                lines_removed: e.lines_removed,
            })
            .collect();
        (
            Some(Changes {
                changed: diff.changed,
                summary: diff.summary,
                files,
            }),
            None,
        )
    } else {
        (
            None,
            Some(format!(
                "workspace {} is stopped; start it to include file changes",
                record.id
            )),
        )
    };
    Ok(SummaryResult {
        workspace_id: record.id.clone(),
        name: record.name.clone(),
        state: record.state,
        since: seconds(period_start),
        since_snapshot: since.map(str::to_string),
        reset_count: record.reset_count,
        changes,
        changes_note,
        counts,
        commands,
        activity,
    })
}
