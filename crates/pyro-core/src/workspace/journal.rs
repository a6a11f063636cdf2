//! The activity journal: every mutating operation with its parameters, result and duration, in order.
//! Command output lives beside it in files (capped), named by sequence number.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::params;
use serde_json::Value;

use super::lifecycle::now_ms;
use super::model::{seconds, JournalEntry};
use crate::db::{sql_error, Db};
use crate::{fsutil, Result};

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
        kind: &str,
        ok: bool,
        params_value: &Value,
        result: &Value,
    ) -> Result<u64> {
        let duration_ms = self.clock.elapsed().as_millis() as i64;
        db.write(|tx| {
            let seq: i64 = tx
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM journal WHERE workspace_id = ?1", params![workspace_id], |r| r.get(0))
                .map_err(sql_error)?;
            tx.execute(
                "INSERT INTO journal (workspace_id, seq, kind, started_at, duration_ms, ok, params, result) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![workspace_id, seq, kind, self.started_at_ms, duration_ms, ok, params_value.to_string(), result.to_string()],
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
    let mut stmt = db
        .conn()
        .prepare(
            "SELECT seq, kind, started_at, duration_ms, ok, params, result FROM journal \
             WHERE workspace_id = ?1 AND started_at >= ?2 ORDER BY seq",
        )
        .map_err(sql_error)?;
    let rows = stmt
        .query_map(params![workspace_id, since_ms.unwrap_or(i64::MIN)], |row| {
            let params_text: String = row.get(5)?;
            let result_text: String = row.get(6)?;
            Ok(JournalEntry {
                sequence: row.get::<_, i64>(0)? as u64,
                kind: row.get(1)?,
                started_at: seconds(row.get(2)?),
                duration_ms: row.get::<_, i64>(3)?.max(0) as u64,
                ok: row.get(4)?,
                params: serde_json::from_str(&params_text).unwrap_or(Value::Null),
                result: serde_json::from_str(&result_text).unwrap_or(Value::Null),
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
