//! Putting another disk under a running VM: a pooled VM taking over a workspace's disk for a reset.
//! The guest lets go of the disk it has (the agent unmounts it), QEMU opens the disk the claimer
//! moved into the VM directory (pyro opens it and passes the descriptor), and the device's node is
//! reopened onto it. The next activation mounts it. A guest that keeps its disk busy is given up.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use pyro_proto::Request;
use serde_json::json;
use tokio_yamux::Control;

use crate::disk;
use crate::engine::qmp::Qmp;
use crate::engine::{DATA_NODE, QMP_SOCKET};

/// The node the disk taken over is opened as.
const SWAPPED_NODE: &str = "data-taken";
const QMP_LIMIT: Duration = Duration::from_secs(30);

/// Swaps the VM's disk for the file now at `disk.qcow2` in the VM directory.
pub(super) async fn swap(control: &Control) -> Result<(), String> {
    super::disk_snapshots::agent(control, &Request::ReleaseDisk)
        .await
        .map_err(|e| format!("the guest could not let go of its disk: {e}"))?;
    let _turn = super::disk_snapshots::qmp_turn().await;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk::FILE_NAME)
        .map_err(|e| format!("cannot open the disk to take over: {e}"))?;
    let work = async {
        let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(10)).await?;
        let set = qmp.add_fd(file.as_fd()).await?;
        qmp.execute(
            "blockdev-add",
            json!({"driver": disk::FORMAT, "node-name": SWAPPED_NODE, "discard": "unmap",
                   "file": {"driver": "file", "filename": format!("/dev/fdset/{set}"),
                            "discard": "unmap"}}),
        )
        .await?;
        // The disk the VM started with goes with its last reference.
        qmp.execute(
            "blockdev-reopen",
            json!({"options": [{"driver": "raw", "node-name": DATA_NODE, "discard": "unmap",
                                "file": SWAPPED_NODE}]}),
        )
        .await
    };
    match tokio::time::timeout(QMP_LIMIT, work).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("QEMU could not take the disk over: {e}")),
        Err(_) => Err("QEMU could not take the disk over: no answer in time".into()),
    }
}
