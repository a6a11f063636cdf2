//! pyro's records: one SQLite database (WAL) in the state dir, safe under concurrent `pyro` processes.
//!
//! The schema is versioned with `PRAGMA user_version`; migrations run in order at open. Writers take
//! `BEGIN IMMEDIATE` transactions, so a read-modify-write never loses an update to another process.

use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::{fsutil, Dirs, Error, ErrorKind, Result};

const MIGRATIONS: &[&str] = &[
    // 1: workspaces and their activity journal.
    "CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE,
        environment TEXT NOT NULL,
        vcpu_count INTEGER NOT NULL,
        mem_mib INTEGER NOT NULL,
        disk_gib INTEGER NOT NULL,
        network INTEGER NOT NULL,
        ttl_seconds INTEGER NOT NULL,
        state TEXT NOT NULL,
        stop_reason TEXT,
        labels TEXT NOT NULL,
        seed TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_activity_at INTEGER NOT NULL,
        reset_count INTEGER NOT NULL DEFAULT 0,
        last_reset_at INTEGER
    );
    CREATE TABLE journal (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        params TEXT NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (workspace_id, seq)
    );",
    // 2: how each workspace's VM last booted.
    "ALTER TABLE workspaces ADD COLUMN boot_mode TEXT;
     ALTER TABLE workspaces ADD COLUMN boot_mode_reason TEXT;",
    // 3: network policies with allow lists (`network` stays: whether the VM has a device).
    "ALTER TABLE workspaces ADD COLUMN network_policy TEXT;
     ALTER TABLE workspaces ADD COLUMN allow_hosts TEXT;",
    // 4: services: each one's definition and last known state (JSON).
    "CREATE TABLE services (
        workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (workspace_id, name)
    );",
    // 5: what each row was made as (a workspace, or a plain VM of the vm_* tools), and the names of
    // its secrets (never their values).
    "ALTER TABLE workspaces ADD COLUMN kind TEXT NOT NULL DEFAULT 'workspace';
     ALTER TABLE workspaces ADD COLUMN secret_names TEXT;",
    // 6: what the idle TTL does (stop, or suspend).
    "ALTER TABLE workspaces ADD COLUMN ttl_action TEXT NOT NULL DEFAULT 'stop';",
];

pub struct Db {
    conn: Connection,
}

pub fn sql_error(err: rusqlite::Error) -> Error {
    Error::new(ErrorKind::Io, format!("the state database failed: {err}"))
}

impl Db {
    pub fn open(dirs: &Dirs) -> Result<Db> {
        fsutil::create_dir_all(dirs.state())?;
        fsutil::harden(
            dirs.state(),
            &["vms", "workspaces", "pyro.db", "pyro.db-wal", "pyro.db-shm"],
        );
        let path = dirs.state().join("pyro.db");
        let conn = Connection::open(&path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(sql_error)?;
        // Every `pyro` command opens the database and closes it; a checkpoint at each close would
        // cost each command several fsyncs (and the WAL file's re-creation). SQLite checkpoints
        // on its own once the WAL grows; each commit is synced to the WAL (`synchronous = FULL`),
        // so none is lost to a power cut before that.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(sql_error)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(sql_error)?;
        let mut db = Db { conn };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(sql_error)?;
        let version = version.max(0) as usize;
        if version > MIGRATIONS.len() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("the state database is from a newer pyro (schema {version}, this pyro knows {})", MIGRATIONS.len()),
            )
            .with_hint("upgrade pyro, or point PYRO_STATE_DIR elsewhere"));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql).map_err(sql_error)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(sql_error)?;
        }
        tx.commit().map_err(sql_error)
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs `work` in a write transaction taken up front (no lost updates between processes).
    pub fn write<T>(&mut self, work: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let value = work(&tx)?;
        tx.commit().map_err(sql_error)?;
        Ok(value)
    }
}
