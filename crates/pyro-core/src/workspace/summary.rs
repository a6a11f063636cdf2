//! `workspace summary`: what changed and what ran since the last reset, in one concise view.

use serde::Serialize;
use serde_json::Value;

use super::diff::{self, DiffSummary};
use super::journal;
use super::lifecycle;
use super::model::seconds;
use crate::db::Db;
use crate::{Dirs, Result};

#[derive(Debug, Clone, Serialize)]
pub struct ChangedFile {
    pub path: String,
    pub status: String,
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
    pub state: String,
    /// When the period began: the last reset, else the creation.
    pub since: f64,
    pub reset_count: u64,
    /// File changes against the baseline; absent while the workspace is stopped.
    pub changes: Option<Changes>,
    pub changes_note: Option<String>,
    pub counts: Counts,
    pub commands: Vec<CommandRun>,
    pub activity: Vec<Activity>,
}

fn describe(kind: &str, params: &Value, result: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match kind {
        "exec" => text(&params["command"]),
        "file_write" => format!(
            "{} ({} bytes)",
            text(&params["path"]),
            result["bytes_written"]
        ),
        "patch_apply" => {
            let files: Vec<String> = params["files"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            files.join(", ")
        }
        "sync_push" => format!(
            "{} -> {}",
            text(&params["source_path"]),
            text(&params["destination"])
        ),
        "export" => format!(
            "{} -> {}",
            text(&params["path"]),
            text(&params["output_path"])
        ),
        "create" => format!(
            "seeded from {}",
            params["seed_path"].as_str().unwrap_or("nothing")
        ),
        _ => String::new(),
    }
}

pub async fn summary(dirs: &Dirs, reference: &str) -> Result<SummaryResult> {
    let (record, entries) = {
        let db = Db::open(dirs)?;
        let record = lifecycle::find(dirs, &db, reference)?;
        let since = record.last_reset_at.unwrap_or(record.created_at);
        let entries = journal::entries(&db, &record.id, Some(since))?;
        (record, entries)
    };
    let mut counts = Counts::default();
    let mut commands = Vec::new();
    let mut activity = Vec::new();
    for entry in &entries {
        match entry.kind.as_str() {
            "exec" => {
                counts.commands += 1;
                let exit_code = entry.result["exit_code"].as_i64().unwrap_or(-1);
                if exit_code != 0 {
                    counts.failed_commands += 1;
                }
                commands.push(CommandRun {
                    sequence: entry.sequence,
                    command: entry.params["command"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    cwd: entry.params["cwd"].as_str().unwrap_or_default().to_string(),
                    exit_code,
                    timed_out: entry.result["timed_out"].as_bool().unwrap_or(false),
                    duration_ms: entry.duration_ms,
                    started_at: entry.started_at,
                });
            }
            "file_write" => counts.file_writes += 1,
            "patch_apply" => counts.patches += 1,
            "sync_push" => counts.syncs += 1,
            "export" => counts.exports += 1,
            _ => {}
        }
        activity.push(Activity {
            sequence: entry.sequence,
            kind: entry.kind.clone(),
            started_at: entry.started_at,
            duration_ms: entry.duration_ms,
            ok: entry.ok,
            detail: describe(&entry.kind, &entry.params, &entry.result),
        });
    }
    let (changes, changes_note) = if record.state == "started" {
        // Reading for the summary is not activity: it neither moves the workspace up the list nor
        // postpones its idle stop.
        let diff =
            diff::diff_as(dirs, &record.id, crate::agent_client::Purpose::Inspection).await?;
        let files = diff
            .entries
            .iter()
            .map(|e| ChangedFile {
                path: e.path.clone(),
                status: e.status.clone(),
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
        state: record.state.clone(),
        since: seconds(record.last_reset_at.unwrap_or(record.created_at)),
        reset_count: record.reset_count,
        changes,
        changes_note,
        counts,
        commands,
        activity,
    })
}
