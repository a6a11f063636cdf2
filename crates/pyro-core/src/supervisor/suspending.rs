//! Suspending the running VM: the agent ends its session, the engine migrates the guest's whole
//! state into a pipe the supervisor writes (with its digest) beside the disk, and the engine quits.
//! A save that fails lets the guest run on with a new session.

use std::path::Path;
use std::time::{Duration, Instant};

use super::channel::{AgentChannel, Detach};
use super::process::Running;
use super::VmRecord;
use crate::engine::qmp::Qmp;
use crate::engine::{launch, snapshot, QMP_SOCKET};
use crate::{suspend, Error, ErrorKind};

/// The most a save may take (a 16 GiB guest on a slow disk).
const SAVE_LIMIT: Duration = Duration::from_secs(600);

pub(super) enum Outcome {
    /// The state is saved and the engine gone.
    Suspended { bytes: u64, save_ms: u64 },
    /// Nothing was saved; the VM runs on.
    Failed(Error),
    /// Nothing was saved, and the agent no longer answers: the VM must stop.
    Broken(Error),
}

pub(super) async fn suspend(running: &mut Running, record: &VmRecord, vm_dir: &Path) -> Outcome {
    let started = Instant::now();
    let needed = u64::from(record.config.mem_mib) << 20;
    let floor = crate::host::space::floor_bytes();
    if let Err(err) = crate::host::space::ensure(vm_dir, "suspending it", needed, floor) {
        return Outcome::Failed(err);
    }
    // The snapshot drive goes back to its empty device: a resumed guest finds no view attached.
    let _ = running.views.detach().await;
    let raw = match running.channel.detach().await {
        Ok(raw) => raw,
        Err(Detach::Refused(err)) => return Outcome::Failed(err),
        Err(Detach::Lost(err)) => return Outcome::Broken(err),
    };
    match save(record, vm_dir).await {
        Ok((sha256, bytes)) => {
            let named_ram = record.config.memory.named_ram();
            if let Err(err) = suspend::commit(vm_dir, &record.config, named_ram, sha256, bytes) {
                let _ = suspend::discard(vm_dir);
                return carry_on(running, raw, err).await;
            }
            running.engine.stop(Duration::from_secs(3)).await;
            Outcome::Suspended {
                bytes,
                save_ms: started.elapsed().as_millis() as u64,
            }
        }
        Err(err) => {
            suspend::discard_partial(vm_dir);
            carry_on(running, raw, err).await
        }
    }
}

/// Migrates the stopped guest into the state file; the guest stays paused.
async fn save(record: &VmRecord, vm_dir: &Path) -> crate::Result<(String, u64)> {
    let (read, write) = launch::pipe()?;
    let dir = vm_dir.to_path_buf();
    let cap = suspend::max_bytes(record.config.mem_mib);
    let receiver = tokio::task::spawn_blocking(move || suspend::receive(read, &dir, cap));
    let migrated = async {
        let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(5)).await?;
        snapshot::suspend(&mut qmp, write, SAVE_LIMIT).await
    }
    .await;
    let received = receiver
        .await
        .map_err(|e| Error::internal(format!("the state writer failed: {e}")))?;
    migrated?;
    received
}

/// After a failed save: the guest runs again and gets a new session.
async fn carry_on(running: &mut Running, raw: tokio::net::UnixStream, err: Error) -> Outcome {
    let resumed = async {
        let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(5)).await?;
        // A guest the failure left running needs nothing; a paused one goes on.
        let _ = snapshot::run(&mut qmp).await;
        AgentChannel::open(raw).await
    };
    match tokio::time::timeout(Duration::from_secs(30), resumed).await {
        Ok(Ok((channel, _))) => {
            running.channel = channel;
            Outcome::Failed(err.context("the VM could not be suspended; it runs on"))
        }
        Ok(Err(again)) => Outcome::Broken(Error::new(
            ErrorKind::Engine,
            format!("the VM could not be suspended ({err}), nor carry on: {again}"),
        )),
        Err(_) => Outcome::Broken(Error::new(
            ErrorKind::Engine,
            format!("the VM could not be suspended ({err}), nor carry on in time"),
        )),
    }
}
