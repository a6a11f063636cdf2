//! Saving the running VM's whole state: the agent ends its session, the engine migrates the guest
//! (RAM and devices) into a pipe the supervisor writes, with its digest, into a VM directory.
//! `suspend` saves beside the VM's own disk and ends the engine; `fork` saves into another VM's
//! directory with a copy of the disk taken while the guest is paused, and the guest then runs on.
//! A save that fails lets the guest run on with a new session.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use tokio::sync::MutexGuard;

use super::channel::{AgentChannel, Detach};
use super::process::Running;
use super::VmRecord;
use crate::engine::qmp::Qmp;
use crate::engine::{launch, snapshot, QMP_SOCKET};
use crate::{suspend, Error, ErrorKind, Result};

/// The most a save may take (a 16 GiB guest on a slow disk).
const SAVE_LIMIT: Duration = Duration::from_secs(600);

pub(super) enum Outcome {
    /// The state is saved (and, for a suspend, the engine gone).
    Saved { bytes: u64, save_ms: u64 },
    /// Nothing was saved; the VM runs on.
    Failed(Error),
    /// Nothing was saved, and the agent no longer answers: the VM must stop.
    Broken(Error),
}

/// Saves the guest beside its disk and ends the engine.
pub(super) async fn suspend(running: &mut Running, record: &VmRecord, vm_dir: &Path) -> Outcome {
    let started = Instant::now();
    let (raw, _turn) = match detach(running, record, vm_dir, 0).await {
        Ok(raw) => raw,
        Err(outcome) => return outcome,
    };
    let saved = async {
        let (sha256, bytes) = save(record, vm_dir, true).await?;
        let named_ram = record.config.memory.named_ram();
        suspend::commit(vm_dir, &record.config, named_ram, sha256, bytes)?;
        Ok::<_, Error>(bytes)
    }
    .await;
    match saved {
        Ok(bytes) => {
            running.engine.stop(Duration::from_secs(3)).await;
            Outcome::Saved {
                bytes,
                save_ms: started.elapsed().as_millis() as u64,
            }
        }
        Err(err) => {
            let _ = suspend::discard(vm_dir);
            carried_on(running, raw, err.context("the VM could not be suspended")).await
        }
    }
}

/// Saves the guest, and a copy of its disk taken meanwhile, into `into` (another VM's directory),
/// as a suspended VM that resumes there; the guest runs on here.
pub(super) async fn fork(running: &mut Running, record: &VmRecord, into: &Path) -> Outcome {
    let started = Instant::now();
    let disk_bytes = std::fs::metadata(&record.config.data_disk).map_or(0, |m| m.len());
    let (raw, _turn) = match detach(running, record, into, disk_bytes).await {
        Ok(raw) => raw,
        Err(outcome) => return outcome,
    };
    let saved = async {
        let (sha256, bytes) = save(record, into, false).await?;
        // The guest is paused and the engine has flushed and released its disk: the copy is
        // the disk the saved memory belongs to.
        let disk = into.join(crate::disk::FILE_NAME);
        copy_disk(&record.config.data_disk, &disk).await?;
        let mut config = record.config.clone();
        config.data_disk = disk;
        let named_ram = record.config.memory.named_ram();
        suspend::commit(into, &config, named_ram, sha256, bytes)?;
        Ok::<_, Error>(bytes)
    }
    .await;
    let save_ms = started.elapsed().as_millis() as u64;
    match saved {
        Ok(bytes) => match carry_on(running, raw).await {
            Ok(()) => Outcome::Saved { bytes, save_ms },
            Err(err) => Outcome::Broken(err),
        },
        Err(err) => {
            let _ = suspend::discard(into);
            carried_on(running, raw, err.context("the VM could not be forked")).await
        }
    }
}

/// Checks there is room for the save (and `extra` bytes more) in `into`, puts the snapshot drive
/// back on its empty device (a restored guest finds no view attached), takes the QMP turn (no disk
/// snapshot or view meanwhile) and ends the agent's session.
async fn detach(
    running: &mut Running,
    record: &VmRecord,
    into: &Path,
    extra: u64,
) -> std::result::Result<(UnixStream, MutexGuard<'static, ()>), Outcome> {
    let needed = (u64::from(record.config.mem_mib) << 20).saturating_add(extra);
    let floor = crate::host::space::floor_bytes();
    crate::host::space::ensure(into, "saving the VM", needed, floor).map_err(Outcome::Failed)?;
    let _ = running.views.detach().await;
    let turn = super::disk_snapshots::qmp_turn().await;
    match running.channel.detach().await {
        Ok(raw) => Ok((raw, turn)),
        Err(Detach::Refused(err)) => Err(Outcome::Failed(err)),
        Err(Detach::Lost(err)) => Err(Outcome::Broken(err)),
    }
}

/// Migrates the stopped guest into the state file in `dir`; the guest stays paused. `durable`: the
/// file is flushed to the disk (a suspension, which must outlive a crash of the host).
async fn save(record: &VmRecord, dir: &Path, durable: bool) -> Result<(String, u64)> {
    let (read, write) = launch::pipe()?;
    let target = dir.to_path_buf();
    let cap = suspend::max_bytes(record.config.mem_mib);
    let receiver =
        tokio::task::spawn_blocking(move || suspend::receive(read, &target, cap, durable));
    let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(5)).await;
    let migrated = match &mut qmp {
        Ok(qmp) => snapshot::suspend(qmp, write, SAVE_LIMIT).await,
        Err(err) => Err(Error::new(err.kind(), err.message().to_string())),
    };
    if migrated.is_err() {
        // The engine may still hold the pipe: once it lets go, the writer sees its end.
        if let Ok(qmp) = &mut qmp {
            snapshot::abandon_suspend(qmp).await;
        }
    }
    let received = match tokio::time::timeout(SAVE_LIMIT, receiver).await {
        Ok(joined) => {
            joined.map_err(|e| Error::internal(format!("the state writer failed: {e}")))?
        }
        Err(_) => Err(Error::new(
            ErrorKind::Engine,
            "the engine did not let go of the saved state's pipe",
        )),
    };
    if migrated.is_err() || received.is_err() {
        suspend::discard_partial(dir);
    }
    migrated?;
    received
}

/// Copies the disk (in the kernel, sharing blocks where the file system can) into the file `to`,
/// in place: the fork's engine already has that file open, and reads it afresh when it starts.
async fn copy_disk(from: &Path, to: &Path) -> Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut source = std::fs::File::open(&from).map_err(|e| Error::io("open", &from, e))?;
        let mut target = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&to)
            .map_err(|e| Error::io("open", &to, e))?;
        std::io::copy(&mut source, &mut target)
            .map(drop)
            .map_err(|e| Error::io("copy the disk to", &to, e))
    })
    .await
    .map_err(|e| Error::internal(format!("the disk copy failed: {e}")))?
}

/// After a failed save: the VM runs on (reporting `err`), or is broken if it cannot.
async fn carried_on(running: &mut Running, raw: UnixStream, err: Error) -> Outcome {
    match carry_on(running, raw).await {
        Ok(()) => Outcome::Failed(err),
        Err(broken) => Outcome::Broken(broken),
    }
}

/// After a save: the guest runs again and gets a new session.
async fn carry_on(running: &mut Running, raw: UnixStream) -> Result<()> {
    let resumed = async {
        let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(5)).await?;
        // A guest a failure left running needs nothing; a paused one goes on.
        let _ = snapshot::run(&mut qmp).await;
        AgentChannel::open(raw).await
    };
    match tokio::time::timeout(Duration::from_secs(30), resumed).await {
        Ok(Ok((channel, _))) => {
            running.channel = channel;
            Ok(())
        }
        Ok(Err(err)) => Err(Error::new(
            ErrorKind::Engine,
            format!("the VM could not carry on after its state was saved: {err}"),
        )),
        Err(_) => Err(Error::new(
            ErrorKind::Engine,
            "the VM could not carry on in time after its state was saved",
        )),
    }
}
