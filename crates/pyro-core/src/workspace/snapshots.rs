//! Named snapshots of a workspace: the whole VM disk (`/workspace` and everything else the guest
//! changed) at one moment, kept inside the disk image (see [`crate::disk`]). Taking one, resetting to
//! one and deleting one cost the same whatever the amount of data. The baseline is the snapshot every
//! workspace gets when its seed is in place; it cannot be deleted.

use serde::{Deserialize, Serialize};

use super::journal::{self, Operation};
use super::lifecycle::{self, vm_dir};
use super::model::seconds;
use super::{store, validate};
use crate::db::Db;
use crate::disk::{self, DiskSnapshot};
use crate::supervisor::{self, protocol::ClientReply, protocol::ClientRequest};
use crate::vocab::{ExecutionMode, WorkspaceState};
use crate::{limits, Dirs, Error, ErrorKind, Next, Result};

/// What a snapshot is: the baseline every workspace has, or one a caller named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    Baseline,
    Named,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub snapshot_name: String,
    pub kind: SnapshotKind,
    pub created_at: f64,
    /// Named snapshots can be deleted; the baseline cannot.
    pub deletable: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotCreated {
    pub workspace_id: String,
    pub snapshot: Snapshot,
    pub execution_mode: ExecutionMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotList {
    pub workspace_id: String,
    pub count: usize,
    /// The baseline first, then named snapshots, newest first.
    pub snapshots: Vec<Snapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotDeleted {
    pub workspace_id: String,
    pub snapshot_name: String,
    pub deleted: bool,
}

/// A snapshot name a caller chose: like a workspace name, and never `baseline`.
pub fn name(text: &str) -> Result<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::invalid("snapshot_name must not be empty"));
    }
    if text == disk::BASELINE {
        return Err(Error::invalid("snapshot_name 'baseline' is reserved")
            .with_hint("the baseline snapshot exists already: choose another name"));
    }
    if !validate::is_token(text) {
        return Err(Error::invalid(format!(
            "invalid snapshot name '{text}': use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    Ok(text.to_string())
}

/// A workspace held for a change to its snapshots: no lifecycle change (stop, reset) runs meanwhile.
struct Locked {
    db: Db,
    record: store::Record,
    _lock: crate::fsutil::FileLock,
    dir: std::path::PathBuf,
}

impl Locked {
    fn take(dirs: &Dirs, reference: &str) -> Result<Locked> {
        let db = Db::open(dirs)?;
        let (record, lock) = lifecycle::locked(dirs, &db, reference)?;
        let dir = vm_dir(dirs, &record.id);
        if record.state != WorkspaceState::Started {
            tokio::task::block_in_place(|| disk::convert_legacy(&dir))?;
        }
        Ok(Locked {
            db,
            record,
            _lock: lock,
            dir,
        })
    }
}

fn missing(workspace_id: &str, name: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("snapshot '{name}' does not exist in workspace '{workspace_id}'"),
    )
    .with_next(Next::SnapshotList {
        workspace_id: workspace_id.to_string(),
    })
}

/// Takes a snapshot of the workspace's whole disk; a started workspace keeps running (its file
/// system is frozen for the moment it takes), a stopped one stays stopped.
pub async fn create(dirs: &Dirs, reference: &str, snapshot_name: &str) -> Result<SnapshotCreated> {
    let snapshot_name = name(snapshot_name)?;
    let Locked {
        mut db,
        record,
        _lock,
        dir,
    } = Locked::take(dirs, reference)?;
    let timer = journal::Timer::start();
    let existing = in_image(&dir)?;
    if existing.iter().any(|s| s.name == snapshot_name) {
        return Err(Error::invalid(format!(
            "snapshot '{snapshot_name}' already exists in workspace '{}'",
            record.id
        ))
        .with_hint("choose another name, or delete the old snapshot first"));
    }
    let named = existing.iter().filter(|s| s.name != disk::BASELINE).count();
    if named >= limits::MAX_SNAPSHOTS {
        return Err(Error::invalid(format!(
            "workspace '{}' has {named} snapshots, the most it may keep",
            record.id
        ))
        .with_hint("delete a snapshot it no longer needs"));
    }
    let floor = crate::host::space::floor_bytes();
    crate::host::space::ensure(&dir, "a snapshot", 0, floor)?;
    take(&dir, &record.state, &snapshot_name).await?;
    let snapshot = in_image(&dir)?
        .into_iter()
        .find(|s| s.name == snapshot_name)
        .map(|s| view(s, record.created_at))
        .ok_or_else(|| Error::internal("the snapshot was taken but the disk does not list it"))?;
    let operation = Operation::SnapshotCreate {
        params: journal::SnapshotParams {
            name: snapshot_name,
        },
        result: snapshot.clone(),
    };
    timer.record(&mut db, &record.id, true, &operation)?;
    Ok(SnapshotCreated {
        workspace_id: record.id,
        snapshot,
        execution_mode: ExecutionMode::Guest,
    })
}

/// Takes the snapshot `name` of the disk of the VM in `dir`: live through its supervisor when the
/// workspace is started, with `qemu-img` when it is stopped.
pub(crate) async fn take(dir: &std::path::Path, state: &WorkspaceState, name: &str) -> Result<()> {
    if *state == WorkspaceState::Started {
        let request = ClientRequest::TakeDiskSnapshot {
            name: name.to_string(),
        };
        supervisor_call(dir, &request).await
    } else {
        tokio::task::block_in_place(|| disk::snapshot_offline(dir, name))
    }
}

pub(crate) async fn supervisor_call(dir: &std::path::Path, request: &ClientRequest) -> Result<()> {
    match supervisor::request(dir, request).await? {
        ClientReply::Done => Ok(()),
        ClientReply::Error { message } => Err(Error::new(ErrorKind::Engine, message)),
        other => Err(Error::new(
            ErrorKind::Protocol,
            format!("unexpected supervisor reply: {other:?}"),
        )),
    }
}

fn in_image(dir: &std::path::Path) -> Result<Vec<DiskSnapshot>> {
    if !dir.join(disk::FILE_NAME).exists() {
        return Ok(Vec::new());
    }
    tokio::task::block_in_place(|| disk::snapshots(dir))
}

fn view(snapshot: DiskSnapshot, workspace_created_at_ms: i64) -> Snapshot {
    let baseline = snapshot.name == disk::BASELINE;
    Snapshot {
        kind: if baseline {
            SnapshotKind::Baseline
        } else {
            SnapshotKind::Named
        },
        created_at: if baseline {
            seconds(workspace_created_at_ms)
        } else {
            snapshot.created_at_ms as f64 / 1000.0
        },
        deletable: !baseline,
        snapshot_name: snapshot.name,
    }
}

/// The workspace's snapshots, in any state: the baseline first, then named ones, newest first.
pub fn list(dirs: &Dirs, reference: &str) -> Result<SnapshotList> {
    let db = Db::open(dirs)?;
    let record = lifecycle::find(dirs, &db, reference)?;
    let mut snapshots: Vec<Snapshot> = in_image(&vm_dir(dirs, &record.id))?
        .into_iter()
        .filter(|s| s.name != disk::BASELINE)
        .map(|s| view(s, record.created_at))
        .collect();
    snapshots.sort_by(|a, b| {
        b.created_at
            .total_cmp(&a.created_at)
            .then_with(|| a.snapshot_name.cmp(&b.snapshot_name))
    });
    // The baseline is always there to reset to (from the seed, should the disk not hold it).
    snapshots.insert(
        0,
        view(
            DiskSnapshot {
                name: disk::BASELINE.into(),
                created_at_ms: 0,
            },
            record.created_at,
        ),
    );
    Ok(SnapshotList {
        workspace_id: record.id,
        count: snapshots.len(),
        snapshots,
    })
}

pub async fn delete(dirs: &Dirs, reference: &str, snapshot_name: &str) -> Result<SnapshotDeleted> {
    if snapshot_name.trim() == disk::BASELINE {
        return Err(Error::invalid("cannot delete the baseline snapshot")
            .with_hint("reset goes back to it; named snapshots can be deleted"));
    }
    let snapshot_name = name(snapshot_name)?;
    let Locked {
        mut db,
        record,
        _lock,
        dir,
    } = Locked::take(dirs, reference)?;
    let timer = journal::Timer::start();
    let wdir = lifecycle::workspace_dir(dirs, &record.id);
    let _view = super::since::view_lock(&wdir)?;
    if !in_image(&dir)?.iter().any(|s| s.name == snapshot_name) {
        return Err(missing(&record.id, &snapshot_name));
    }
    if record.state == WorkspaceState::Started {
        let request = ClientRequest::DeleteDiskSnapshot {
            name: snapshot_name.clone(),
        };
        supervisor_call(&dir, &request).await?;
    } else {
        tokio::task::block_in_place(|| disk::delete_offline(&dir, &snapshot_name))?;
    }
    super::since::forget(&wdir, &snapshot_name);
    let operation = Operation::SnapshotDelete {
        params: journal::SnapshotParams {
            name: snapshot_name.clone(),
        },
        result: journal::Nothing {},
    };
    timer.record(&mut db, &record.id, true, &operation)?;
    Ok(SnapshotDeleted {
        workspace_id: record.id,
        snapshot_name,
        deleted: true,
    })
}

/// The snapshot `name` (named, or the baseline) of the disk in `dir`, or a not-found error.
pub(crate) fn find(dir: &std::path::Path, workspace_id: &str, name: &str) -> Result<DiskSnapshot> {
    in_image(dir)?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| missing(workspace_id, name))
}

/// Whether the stopped disk in `dir` holds the snapshot `name` (reset uses it; an unknown name is the
/// caller's error).
pub(crate) fn require(dir: &std::path::Path, workspace_id: &str, name: &str) -> Result<bool> {
    let snapshots = in_image(dir)?;
    let present = snapshots.iter().any(|s| s.name == name);
    if !present && name != disk::BASELINE {
        return Err(missing(workspace_id, name));
    }
    // A disk from before snapshots has no baseline in it: going back means a new disk, which would
    // take the named snapshots with it.
    if !present && !snapshots.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidState,
            format!(
                "workspace '{workspace_id}' was made before disk snapshots and has no baseline snapshot; \
                 a reset to the baseline would drop its named snapshots"
            ),
        )
        .with_hint("delete its named snapshots first, or reset to one of them")
        .with_next(Next::SnapshotList {
            workspace_id: workspace_id.to_string(),
        }));
    }
    Ok(present)
}
