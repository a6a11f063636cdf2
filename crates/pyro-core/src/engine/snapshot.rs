//! Memory snapshots of a guest, both halves side by side. For templates, `save` writes a stopped
//! guest's device state to a file while its RAM stays in the shared file it runs on
//! (`x-ignore-shared`), and `restore` migrates that state into an engine started with `-incoming
//! defer` over the RAM file mapped copy-on-write. For a suspended VM, `suspend` migrates its RAM and
//! device state into a pipe, and `resume` takes them back from one. A snapshot fits only the exact
//! device layout it was taken with: any change to the engine's command line or devices bumps
//! [`super::VM_SHAPE_VERSION`].

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::qmp::Qmp;
use super::INCOMING_FD;
use crate::{Error, Result};

/// RAM stays in the file the guest runs on; only the device state is migrated.
async fn ignore_shared_ram(qmp: &mut Qmp) -> Result<()> {
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
    )
    .await?;
    Ok(())
}

/// Stops the guest and writes its device state to `state_path` (through a descriptor pyro opens:
/// the engine may not spawn a process to write it).
pub async fn save(qmp: &mut Qmp, state_path: &Path) -> Result<()> {
    qmp.execute("stop", json!({})).await?;
    ignore_shared_ram(qmp).await?;
    let state =
        std::fs::File::create(state_path).map_err(|e| Error::io("create", state_path, e))?;
    qmp.send_fd("state", std::os::fd::AsFd::as_fd(&state))
        .await?;
    drop(state);
    qmp.execute("migrate", json!({"uri": "fd:state"})).await?;
    qmp.wait_for_migration(Duration::from_secs(120)).await
}

/// Brings an engine started with `-incoming defer` to life: migrates the device state in (from the
/// descriptor it was given) and resumes the guest. The data disk has the size the snapshot was taken
/// with: templates are made per disk size.
pub async fn restore(qmp: &mut Qmp) -> Result<()> {
    ignore_shared_ram(qmp).await?;
    qmp.execute(
        "migrate-incoming",
        json!({"uri": format!("fd:{INCOMING_FD}")}),
    )
    .await?;
    qmp.wait_for_status(&["paused", "postmigrate"], Duration::from_secs(30))
        .await?;
    qmp.execute("cont", json!({})).await?;
    Ok(())
}

/// A migration bandwidth no local pipe reaches.
const UNPACED_BYTES_PER_SECOND: u64 = 1 << 40;

/// Stops the guest and migrates its whole state (RAM and devices) into `to`, which the caller
/// reads meanwhile. The engine stays paused afterwards, its disks flushed and released.
pub async fn suspend(qmp: &mut Qmp, to: std::os::fd::OwnedFd, limit: Duration) -> Result<()> {
    qmp.execute("stop", json!({})).await?;
    // QEMU paces migrations (128 MiB/s by default) for live use over a network; this one goes
    // to a local pipe with the guest stopped.
    qmp.execute(
        "migrate-set-parameters",
        json!({"max-bandwidth": UNPACED_BYTES_PER_SECOND}),
    )
    .await?;
    qmp.send_fd("suspend", std::os::fd::AsFd::as_fd(&to))
        .await?;
    // The engine holds its own copy: the reader sees the end when the engine closes it.
    drop(to);
    qmp.execute("migrate", json!({"uri": "fd:suspend"})).await?;
    qmp.wait_for_migration(limit).await
}

/// After a failed [`suspend`]: stops a migration still under way and closes the engine's copy of
/// the pipe, so its reader ends.
pub async fn abandon_suspend(qmp: &mut Qmp) {
    let _ = qmp.execute("migrate_cancel", json!({})).await;
    let _ = qmp.execute("closefd", json!({"fdname": "suspend"})).await;
}

/// Takes the state the engine is fed on [`INCOMING_FD`] (by the caller, meanwhile) and leaves the
/// guest paused: the caller checks what it fed before [`run`] lets the guest go on. `named_ram`:
/// the guest came from a template, whose engine had `x-ignore-shared` on; a stream carries its
/// capabilities, and the receiving engine must have the same (its RAM is not shared, so nothing
/// is skipped).
pub async fn resume(qmp: &mut Qmp, named_ram: bool, limit: Duration) -> Result<()> {
    if named_ram {
        ignore_shared_ram(qmp).await?;
    }
    // The disk is taken up (its metadata read afresh) at `cont`, not when the stream ends: a fork's
    // disk is still being copied into its file while the stream loads.
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "late-block-activate", "state": true}]}),
    )
    .await?;
    qmp.execute(
        "migrate-incoming",
        json!({"uri": format!("fd:{INCOMING_FD}")}),
    )
    .await?;
    qmp.wait_for_status(&["paused", "postmigrate"], limit)
        .await?;
    Ok(())
}

/// Lets a paused guest run.
pub async fn run(qmp: &mut Qmp) -> Result<()> {
    qmp.execute("cont", json!({})).await.map(|_| ())
}
