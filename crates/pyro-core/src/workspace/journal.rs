//! The activity journal: every mutating operation with its parameters, result and duration, in order.
//! Command output lives beside it in files (capped), named by sequence number.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lifecycle::{now_ms, ResetInfo};
use super::model::{seconds, JournalEntry, WorkspaceSeed};
use super::ops::{ExportResult, SyncInfo};
use super::patch::PatchResult;
use crate::db::{sql_error, Db};
use crate::{fsutil, Result};

/// One recorded operation, by kind: what was asked (`params`) and what came of it (`result`). It is
/// stored as its kind and those two JSON documents, so readers match on it instead of reading keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    Create {
        params: CreateParams,
        result: CreateRecord,
    },
    Exec {
        params: ExecParams,
        result: ExecRecord,
    },
    FileWrite {
        params: FileWriteParams,
        result: FileWriteRecord,
    },
    PatchApply {
        params: PatchParams,
        result: PatchResult,
    },
    SyncPush {
        params: SyncParams,
        result: SyncInfo,
    },
    Export {
        params: ExportParams,
        result: ExportResult,
    },
    Reset {
        params: ResetParams,
        result: ResetInfo,
    },
    Start {
        params: Nothing,
        result: Nothing,
    },
    Stop {
        params: Nothing,
        result: Nothing,
    },
    Suspend {
        params: Nothing,
        result: super::lifecycle::SuspendInfo,
    },
    Fork {
        params: super::fork::ForkParams,
        result: super::fork::ForkInfo,
    },
    ServiceStart {
        params: ServiceParams,
        result: pyro_proto::ServiceInfo,
    },
    ServiceStop {
        params: ServiceParams,
        result: pyro_proto::ServiceInfo,
    },
    SnapshotCreate {
        params: SnapshotParams,
        result: super::snapshots::Snapshot,
    },
    SnapshotDelete {
        params: SnapshotParams,
        result: Nothing,
    },
    PathChange {
        params: PathChangeParams,
        result: Nothing,
    },
    ProcessStart {
        params: ProcessParams,
        result: ProcessRecord,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotParams {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceParams {
    pub name: String,
}

/// The kind commands are journalled as (for queries that count them).
pub const EXEC: &str = "exec";

/// An empty document (`{}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Nothing {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateParams {
    pub environment: String,
    pub seed_path: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether it had a network (older entries wrote the whole network here).
    #[serde(default, deserialize_with = "had_network")]
    pub network: bool,
    #[serde(default)]
    pub network_policy: Option<String>,
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRecord {
    pub workspace_seed: WorkspaceSeed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecParams {
    /// The command as one string (an argv shell-quoted).
    pub command: String,
    /// The argv, when the command was one.
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    pub cwd: String,
    pub timeout_seconds: u64,
    /// The names of the variables the caller set (never their values).
    #[serde(default)]
    pub env_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRecord {
    pub exit_code: i64,
    #[serde(default)]
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// How long the command ran in the guest.
    pub guest_duration_ms: u64,
}

/// A directory made, a path removed or renamed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathChangeParams {
    /// `make_dir`, `remove` or `rename`.
    pub action: String,
    pub path: String,
    /// Where a rename went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessParams {
    pub argv: Vec<String>,
    pub cwd: String,
    pub pty: bool,
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileWriteParams {
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileWriteRecord {
    pub bytes_written: u64,
    pub lines: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchParams {
    pub files: Vec<String>,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncParams {
    pub source_path: String,
    pub destination: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportParams {
    pub path: String,
    pub output_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResetParams {
    pub snapshot: String,
}

/// `true`/`false`, or an older entry's network object (on unless its policy is `off`).
fn had_network<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(on) => on,
        Value::Object(network) => network
            .get("policy")
            .and_then(Value::as_str)
            .is_some_and(|p| p != "off"),
        _ => false,
    })
}

impl Operation {
    /// The kind, as stored and shown (`exec`, `file_write`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Create { .. } => "create",
            Operation::Exec { .. } => EXEC,
            Operation::FileWrite { .. } => "file_write",
            Operation::PatchApply { .. } => "patch_apply",
            Operation::SyncPush { .. } => "sync_push",
            Operation::Export { .. } => "export",
            Operation::Reset { .. } => "reset",
            Operation::Start { .. } => "start",
            Operation::Stop { .. } => "stop",
            Operation::Suspend { .. } => "suspend",
            Operation::Fork { .. } => "fork",
            Operation::ServiceStart { .. } => "service_start",
            Operation::ServiceStop { .. } => "service_stop",
            Operation::SnapshotCreate { .. } => "snapshot_create",
            Operation::SnapshotDelete { .. } => "snapshot_delete",
            Operation::PathChange { .. } => "path_change",
            Operation::ProcessStart { .. } => "process_start",
        }
    }

    /// Stored as kind, params and result.
    fn to_columns(&self) -> (String, String) {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        let take = |key: &str, value: &mut Value| {
            value
                .get_mut(key)
                .map(Value::take)
                .unwrap_or(Value::Null)
                .to_string()
        };
        (take("params", &mut value), take("result", &mut value))
    }
}

/// A journal entry as read back: typed when its kind and documents are ones this build knows,
/// else kept as it was written (entries from another version stay readable).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Recorded {
    Known(Operation),
    Other {
        kind: String,
        params: Value,
        result: Value,
    },
}

impl Recorded {
    fn read(kind: String, params: Value, result: Value) -> Recorded {
        let document = serde_json::json!({"kind": kind, "params": params, "result": result});
        match serde_json::from_value(document) {
            Ok(operation) => Recorded::Known(operation),
            Err(_) => Recorded::Other {
                kind,
                params,
                result,
            },
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            Recorded::Known(operation) => operation.kind(),
            Recorded::Other { kind, .. } => kind,
        }
    }

    pub fn operation(&self) -> Option<&Operation> {
        match self {
            Recorded::Known(operation) => Some(operation),
            Recorded::Other { .. } => None,
        }
    }
}

/// Times one operation from its start; `record` appends it to the journal.
pub struct Timer {
    started_at_ms: i64,
    clock: Instant,
}

impl Timer {
    pub fn start() -> Timer {
        Timer {
            started_at_ms: now_ms(),
            clock: Instant::now(),
        }
    }

    pub fn started_at_ms(&self) -> i64 {
        self.started_at_ms
    }

    /// Appends the operation and returns its sequence number. Sequence numbers are allocated inside the
    /// write transaction, so concurrent writers never collide or lose an entry.
    pub fn record(
        &self,
        db: &mut Db,
        workspace_id: &str,
        ok: bool,
        operation: &Operation,
    ) -> Result<u64> {
        let duration_ms = self.clock.elapsed().as_millis() as i64;
        let kind = operation.kind();
        let (params_text, result_text) = operation.to_columns();
        db.write(|tx| {
            let seq: i64 = tx
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE workspace_id = ?1", params![workspace_id], |r| r.get(0))
                .map_err(sql_error)?;
            tx.execute(
                "INSERT INTO journal (workspace_id, seq, kind, started_at, duration_ms, ok, params, result) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![workspace_id, seq, kind, self.started_at_ms, duration_ms, ok, params_text, result_text],
            )
            .map_err(sql_error)?;
            tx.execute(
                "UPDATE workspaces SET last_activity_at = MAX(last_activity_at, ?2) WHERE id = ?1",
                params![workspace_id, self.started_at_ms + duration_ms],
            )
            .map_err(sql_error)?;
            Ok(seq as u64)
        })
    }
}

/// Entries in order; `since_ms` keeps those that started at or after it.
pub fn entries(db: &Db, workspace_id: &str, since_ms: Option<i64>) -> Result<Vec<JournalEntry>> {
    select(
        db.conn(),
        "WHERE workspace_id = ?1 AND started_at >= ?2 ORDER BY seq",
        params![workspace_id, since_ms.unwrap_or(i64::MIN)],
    )
}

/// The last command since `since_ms`, and how many there were.
pub fn last_command(
    conn: &rusqlite::Connection,
    workspace_id: &str,
    since_ms: i64,
) -> Result<(u64, Option<JournalEntry>)> {
    let count: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM journal WHERE workspace_id = ?1 AND kind = ?2 AND started_at >= ?3",
            params![workspace_id, EXEC, since_ms],
            |r| r.get(0),
        )
        .map_err(sql_error)?;
    let last = select(
        conn,
        "WHERE workspace_id = ?1 AND started_at >= ?2 AND kind = ?3 ORDER BY seq DESC LIMIT 1",
        params![workspace_id, since_ms, EXEC],
    )?
    .pop();
    Ok((count.max(0) as u64, last))
}

fn select(
    conn: &rusqlite::Connection,
    filter: &str,
    values: &[&dyn rusqlite::ToSql],
) -> Result<Vec<JournalEntry>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT seq, kind, started_at, duration_ms, ok, params, result FROM journal {filter}"
        ))
        .map_err(sql_error)?;
    let rows = stmt
        .query_map(values, |row| {
            let params_text: String = row.get(5)?;
            let result_text: String = row.get(6)?;
            Ok(JournalEntry {
                sequence: row.get::<_, i64>(0)? as u64,
                started_at: seconds(row.get(2)?),
                duration_ms: row.get::<_, i64>(3)?.max(0) as u64,
                ok: row.get(4)?,
                recorded: Recorded::read(
                    row.get(1)?,
                    serde_json::from_str(&params_text).unwrap_or(Value::Null),
                    serde_json::from_str(&result_text).unwrap_or(Value::Null),
                ),
            })
        })
        .map_err(sql_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)
}

/// Where the output of command `seq` is kept.
pub fn output_path(workspace_dir: &Path, seq: u64, stream: &str) -> PathBuf {
    workspace_dir
        .join("outputs")
        .join(format!("{seq:06}.{stream}"))
}

pub fn save_output(workspace_dir: &Path, seq: u64, stdout: &str, stderr: &str) -> Result<()> {
    fsutil::create_dir_all(&workspace_dir.join("outputs"))?;
    fsutil::write_replace(
        &output_path(workspace_dir, seq, "stdout"),
        stdout.as_bytes(),
    )?;
    fsutil::write_replace(
        &output_path(workspace_dir, seq, "stderr"),
        stderr.as_bytes(),
    )
}

pub fn load_output(workspace_dir: &Path, seq: u64, stream: &str) -> Option<String> {
    std::fs::read_to_string(output_path(workspace_dir, seq, stream)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_typed_and_print_as_before() {
        let params = serde_json::json!({"command": "make test", "argv": null, "cwd": "/workspace",
            "timeout_seconds": 30, "env_keys": []});
        let result = serde_json::json!({"exit_code": 2, "signal": null, "timed_out": false,
            "stdout_bytes": 3, "stderr_bytes": 0, "stdout_truncated": false,
            "stderr_truncated": false, "guest_duration_ms": 40});
        let recorded = Recorded::read("exec".into(), params.clone(), result.clone());
        match recorded.operation() {
            Some(Operation::Exec { params, result }) => {
                assert_eq!(params.command, "make test");
                assert_eq!(result.exit_code, 2);
            }
            other => panic!("{other:?}"),
        }
        let entry = JournalEntry {
            sequence: 7,
            started_at: 1.5,
            duration_ms: 41,
            ok: false,
            recorded,
        };
        assert_eq!(
            serde_json::to_value(&entry).unwrap(),
            serde_json::json!({"sequence": 7, "kind": "exec", "started_at": 1.5, "duration_ms": 41,
                "ok": false, "params": params, "result": result})
        );
        // What a typed operation stores is what it reads back from.
        let Recorded::Known(operation) = entry.recorded else {
            panic!("typed")
        };
        let (params_text, result_text) = operation.to_columns();
        assert_eq!(serde_json::from_str::<Value>(&params_text).unwrap(), params);
        assert_eq!(serde_json::from_str::<Value>(&result_text).unwrap(), result);
    }

    #[test]
    fn entries_of_another_version_stay_readable() {
        let odd = Recorded::read(
            "some_future_kind".into(),
            serde_json::json!({"name": "a"}),
            serde_json::json!({}),
        );
        assert_eq!(odd.kind(), "some_future_kind");
        assert!(odd.operation().is_none());
        assert_eq!(
            serde_json::to_value(&odd).unwrap(),
            serde_json::json!({"kind": "some_future_kind", "params": {"name": "a"}, "result": {}})
        );
        // A known kind written with fewer keys (an older create) still reads as that kind.
        let create = Recorded::read(
            "create".into(),
            serde_json::json!({"environment": "debian:12", "seed_path": null, "name": null}),
            serde_json::json!({"workspace_seed": {"mode": "empty", "seed_path": null,
                "destination": "/workspace", "entry_count": 0, "bytes_written": 0}}),
        );
        assert!(matches!(create.operation(), Some(Operation::Create { .. })));
        // Older creates wrote the whole network object where a flag stands now.
        let networked = Recorded::read(
            "create".into(),
            serde_json::json!({"environment": "debian:12", "seed_path": null, "name": null,
                "network": {"policy": "egress", "allow_hosts": []}}),
            serde_json::json!({"workspace_seed": {"mode": "empty", "seed_path": null,
                "destination": "/workspace", "entry_count": 0, "bytes_written": 0}}),
        );
        match networked.operation() {
            Some(Operation::Create { params, .. }) => assert!(params.network),
            other => panic!("{other:?}"),
        }
    }
}
