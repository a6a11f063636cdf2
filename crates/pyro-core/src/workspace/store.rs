//! Workspace records in the database: insert, load, resolve by id or name, update, list.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::journal::{self, Operation};
use super::model::{seconds, LastCommand, Workspace, WorkspaceSeed};
use super::validate;
use crate::db::{sql_error, Db};
use crate::network::{Network, NetworkPolicy};
use crate::vocab::{BootMode, ExecutionMode, SeedMode, TtlAction, WorkspaceKind, WorkspaceState};
use crate::{Error, ErrorKind, Result};

/// A workspace row as stored.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub name: Option<String>,
    pub environment: String,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub disk_gib: u32,
    pub network: Network,
    pub ttl_seconds: u64,
    pub state: WorkspaceState,
    pub stop_reason: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub seed: WorkspaceSeed,
    pub created_at: i64,
    pub last_activity_at: i64,
    pub reset_count: u64,
    pub last_reset_at: Option<i64>,
    pub boot_mode: Option<BootMode>,
    pub boot_mode_reason: Option<String>,
    pub kind: WorkspaceKind,
    /// The names of its secrets (the values are never in the database).
    pub secret_names: Vec<String>,
    pub ttl_action: TtlAction,
}

const COLUMNS: &str = "id, name, environment, vcpu_count, mem_mib, disk_gib, network, ttl_seconds, state, stop_reason, \
                       labels, seed, created_at, last_activity_at, reset_count, last_reset_at, boot_mode, boot_mode_reason, \
                       network_policy, allow_hosts, kind, secret_names, ttl_action";

fn from_row(row: &Row) -> rusqlite::Result<Record> {
    let labels: String = row.get(10)?;
    let seed: String = row.get(11)?;
    Ok(Record {
        id: row.get(0)?,
        name: row.get(1)?,
        environment: row.get(2)?,
        vcpu_count: row.get(3)?,
        mem_mib: row.get(4)?,
        disk_gib: row.get(5)?,
        network: network_from_row(row)?,
        ttl_seconds: row.get::<_, i64>(7)?.max(0) as u64,
        // A state or boot mode this build does not know (another version's) reads as stopped / none.
        state: row
            .get::<_, String>(8)
            .ok()
            .and_then(|s| WorkspaceState::parse(&s))
            .unwrap_or(WorkspaceState::Stopped),
        stop_reason: row.get(9)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        seed: serde_json::from_str(&seed).unwrap_or(WorkspaceSeed {
            mode: SeedMode::Empty,
            seed_path: None,
            source: None,
            destination: validate::WORKSPACE_ROOT.into(),
            entry_count: 0,
            bytes_written: 0,
        }),
        created_at: row.get(12)?,
        last_activity_at: row.get(13)?,
        reset_count: row.get::<_, i64>(14)?.max(0) as u64,
        last_reset_at: row.get(15)?,
        boot_mode: row
            .get::<_, Option<String>>(16)?
            .and_then(|b| BootMode::parse(&b)),
        boot_mode_reason: row.get(17)?,
        kind: row
            .get::<_, String>(20)
            .ok()
            .and_then(|k| WorkspaceKind::parse(&k))
            .unwrap_or(WorkspaceKind::Workspace),
        secret_names: row
            .get::<_, Option<String>>(21)?
            .and_then(|n| serde_json::from_str(&n).ok())
            .unwrap_or_default(),
        ttl_action: row
            .get::<_, String>(22)
            .ok()
            .and_then(|a| TtlAction::parse(&a))
            .unwrap_or(TtlAction::Stop),
    })
}

/// The network of a row; rows from before policies had only the device flag (on meant egress).
fn network_from_row(row: &Row) -> rusqlite::Result<Network> {
    let device: bool = row.get(6)?;
    let policy: Option<String> = row.get(18)?;
    let allow_hosts: Option<String> = row.get(19)?;
    let policy = policy
        .and_then(|p| p.parse::<NetworkPolicy>().ok())
        .unwrap_or(if device {
            NetworkPolicy::Egress
        } else {
            NetworkPolicy::Off
        });
    Ok(Network {
        policy,
        allow_hosts: allow_hosts
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default(),
    })
}

pub fn insert(db: &mut Db, record: &Record) -> Result<()> {
    db.write(|tx| {
        if let Some(name) = &record.name {
            ensure_name_free(tx, name, &record.id)?;
        }
        tx.execute(
            &format!("INSERT INTO workspaces ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)"),
            params![
                record.id,
                record.name,
                record.environment,
                record.vcpu_count,
                record.mem_mib,
                record.disk_gib,
                record.network.has_device(),
                record.ttl_seconds as i64,
                record.state,
                record.stop_reason,
                serde_json::to_string(&record.labels).unwrap_or_default(),
                serde_json::to_string(&record.seed).unwrap_or_default(),
                record.created_at,
                record.last_activity_at,
                record.reset_count as i64,
                record.last_reset_at,
                record.boot_mode,
                record.boot_mode_reason,
                record.network.policy.as_str(),
                serde_json::to_string(&record.network.allow_hosts).unwrap_or_default(),
                record.kind,
                serde_json::to_string(&record.secret_names).unwrap_or_default(),
                record.ttl_action,
            ],
        )
        .map_err(sql_error)?;
        Ok(())
    })
}

pub fn ensure_name_free(conn: &Connection, name: &str, own_id: &str) -> Result<()> {
    let taken: Option<String> = conn
        .query_row(
            "SELECT id FROM workspaces WHERE name = ?1 AND id != ?2",
            params![name, own_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_error)?;
    match taken {
        Some(other) => Err(Error::invalid(format!(
            "the name '{name}' is already used by workspace {other}"
        ))
        .with_hint("pick another name, or rename the other workspace")
        .with_next(crate::Next::WorkspaceUpdate {
            workspace_id: other,
        })),
        None => Ok(()),
    }
}

pub fn load(conn: &Connection, id: &str) -> Result<Option<Record>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM workspaces WHERE id = ?1"),
        params![id],
        from_row,
    )
    .optional()
    .map_err(sql_error)
}

/// Finds a workspace by id or by name; an unknown reference lists what exists.
pub fn resolve(conn: &Connection, reference: &str) -> Result<Record> {
    let reference = reference.trim();
    if validate::is_id(reference) {
        if let Some(record) = load(conn, reference)? {
            return Ok(record);
        }
    }
    let by_name: Option<Record> = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM workspaces WHERE name = ?1"),
            params![reference],
            from_row,
        )
        .optional()
        .map_err(sql_error)?;
    if let Some(record) = by_name {
        return Ok(record);
    }
    let known = list(conn)?;
    let candidates: Vec<String> = known
        .iter()
        .take(10)
        .map(|r| match &r.name {
            Some(name) => format!("{} ({name})", r.id),
            None => r.id.clone(),
        })
        .collect();
    let err = Error::new(
        ErrorKind::NotFound,
        format!("workspace '{reference}' does not exist"),
    );
    Err(if candidates.is_empty() {
        err.with_hint("there are no workspaces")
            .with_next(crate::Next::WorkspaceCreate)
    } else {
        err.with_hint(format!("known workspaces: {}", candidates.join(", ")))
    })
}

/// Every workspace, most recent activity first.
pub fn list(conn: &Connection) -> Result<Vec<Record>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM workspaces ORDER BY last_activity_at DESC, created_at DESC, id"
        ))
        .map_err(sql_error)?;
    let rows = stmt.query_map([], from_row).map_err(sql_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql_error)
}

pub fn set_state(
    conn: &Connection,
    id: &str,
    state: WorkspaceState,
    stop_reason: Option<&str>,
) -> Result<()> {
    conn.execute(
        "UPDATE workspaces SET state = ?2, stop_reason = ?3 WHERE id = ?1",
        params![id, state, stop_reason],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// How long the workspace may sit idle before its TTL acts.
pub fn set_ttl_seconds(conn: &Connection, id: &str, seconds: u64) -> Result<()> {
    conn.execute(
        "UPDATE workspaces SET ttl_seconds = ?2 WHERE id = ?1",
        params![id, seconds as i64],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// What the idle TTL does to the workspace from its next start on.
pub fn set_ttl_action(conn: &Connection, id: &str, action: TtlAction) -> Result<()> {
    conn.execute(
        "UPDATE workspaces SET ttl_action = ?2 WHERE id = ?1",
        params![id, action],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// Records how the VM last booted (and that it is started).
pub fn set_started(conn: &Connection, id: &str, boot_mode: BootMode, reason: &str) -> Result<()> {
    conn.execute(
        "UPDATE workspaces SET state = ?4, stop_reason = NULL, boot_mode = ?2, boot_mode_reason = ?3 WHERE id = ?1",
        params![id, boot_mode, reason, WorkspaceState::Started],
    )
    .map_err(sql_error)?;
    Ok(())
}

pub fn touch(conn: &Connection, id: &str, now_ms: i64) -> Result<()> {
    conn.execute(
        "UPDATE workspaces SET last_activity_at = MAX(last_activity_at, ?2) WHERE id = ?1",
        params![id, now_ms],
    )
    .map_err(sql_error)?;
    Ok(())
}

pub fn update_metadata(conn: &Connection, record: &Record) -> Result<()> {
    conn.execute(
        "UPDATE workspaces SET name = ?2, labels = ?3 WHERE id = ?1",
        params![
            record.id,
            record.name,
            serde_json::to_string(&record.labels).unwrap_or_default()
        ],
    )
    .map_err(sql_error)?;
    Ok(())
}

pub fn mark_reset(conn: &Connection, id: &str, now_ms: i64) -> Result<()> {
    conn.execute(
        "UPDATE workspaces SET reset_count = reset_count + 1, last_reset_at = ?2, last_activity_at = ?2 WHERE id = ?1",
        params![id, now_ms],
    )
    .map_err(sql_error)?;
    Ok(())
}

pub fn delete(conn: &Connection, id: &str) -> Result<()> {
    conn.execute("DELETE FROM workspaces WHERE id = ?1", params![id])
        .map_err(sql_error)?;
    Ok(())
}

/// The public view of a record, with the command counters from the journal.
pub fn view(conn: &Connection, record: &Record) -> Result<Workspace> {
    let since = record.last_reset_at.unwrap_or(0);
    let (command_count, last) = journal::last_command(conn, &record.id, since)?;
    let last_command = last.and_then(|entry| match entry.recorded.operation() {
        Some(Operation::Exec { params, result }) => Some(LastCommand {
            sequence: entry.sequence,
            command: params.command.clone(),
            cwd: params.cwd.clone(),
            exit_code: result.exit_code,
            duration_ms: entry.duration_ms,
        }),
        _ => None,
    });
    let started = record.state == WorkspaceState::Started;
    let (service_count, running_service_count) =
        super::services::counts(conn, &record.id, started)?;
    Ok(Workspace {
        workspace_id: record.id.clone(),
        name: record.name.clone(),
        labels: record.labels.clone(),
        environment: record.environment.clone(),
        vcpu_count: record.vcpu_count,
        mem_mib: record.mem_mib,
        disk_gib: record.disk_gib,
        ttl_seconds: record.ttl_seconds,
        state: record.state,
        stop_reason: record.stop_reason.clone(),
        created_at: seconds(record.created_at),
        last_activity_at: seconds(record.last_activity_at),
        expires_at: started.then(|| seconds(record.last_activity_at) + record.ttl_seconds as f64),
        network_policy: record.network.policy,
        network_enabled: record.network.has_device(),
        allow_hosts: record.network.allow_host_names(),
        execution_mode: ExecutionMode::Guest,
        workspace_path: validate::WORKSPACE_ROOT.into(),
        workspace_seed: record.seed.clone(),
        command_count,
        last_command,
        reset_count: record.reset_count,
        last_reset_at: record.last_reset_at.map(seconds),
        service_count,
        running_service_count,
        boot_mode: record.boot_mode,
        boot_mode_reason: record.boot_mode_reason.clone(),
        phases_ms: None,
        kind: record.kind,
        secrets: record.secret_names.clone(),
        ttl_action: record.ttl_action,
    })
}
