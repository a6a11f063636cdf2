//! Snapshots of a running VM's disk, taken where both halves meet: the agent freezes the guest's file
//! system (so the snapshot is clean) while QEMU records a qcow2 internal snapshot over QMP, then the
//! file system is thawed, on every path. The guest keeps running throughout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pyro_proto::{read_frame, write_message, Reply, Request};
use serde_json::json;
use tokio::sync::Mutex;
use tokio_yamux::Control;

use crate::disk;
use crate::engine::qmp::Qmp;
use crate::engine::QMP_SOCKET;

/// One QMP conversation at a time.
static QMP: Mutex<()> = Mutex::const_new(());

/// Holds every other QMP conversation (snapshots, views) off until dropped: a save of the whole
/// guest takes its turn for as long as it lasts.
pub(super) async fn qmp_turn() -> tokio::sync::MutexGuard<'static, ()> {
    QMP.lock().await
}
/// The guest thaws by itself after this, should the supervisor never get to it. Taking a snapshot
/// must end well before: one that outlasts the freeze is not known to be clean, and is dropped.
const THAW_AFTER: Duration = Duration::from_secs(30);
const TAKE_LIMIT: Duration = Duration::from_secs(20);
/// A freeze or thaw the agent has not answered by then has failed.
const AGENT_LIMIT: Duration = Duration::from_secs(15);
const QMP_LIMIT: Duration = Duration::from_secs(60);

pub async fn take(control: &Control, name: &str) -> Result<(), String> {
    let _one = QMP.lock().await;
    let internal = disk::internal_name(name);
    let freeze = Request::FreezeDisk {
        thaw_after_ms: THAW_AFTER.as_millis() as u64,
    };
    if let Err(e) = agent(control, &freeze).await {
        // A freeze that lands after its answer timed out must not hold the guest's writers.
        let _ = agent(control, &Request::ThawDisk).await;
        return Err(format!(
            "the guest could not freeze its disk for the snapshot: {e}"
        ));
    }
    let taken = qmp(
        "blockdev-snapshot-internal-sync",
        json!({"device": crate::engine::DATA_NODE, "name": internal}),
        TAKE_LIMIT,
    )
    .await;
    let thawed = agent(control, &Request::ThawDisk).await;
    taken.map_err(|e| format!("QEMU could not take the snapshot: {e}"))?;
    match thawed {
        Ok(true) => Ok(()),
        // The freeze ended before the snapshot did: it may hold half-written files.
        Ok(false) => {
            let _ = delete_unlocked(name).await;
            Err(
                "the snapshot took longer than the guest's file system could stay frozen; \
                 it was dropped"
                    .into(),
            )
        }
        // Taken while frozen; the guest thaws by itself at its deadline.
        Err(_) => Ok(()),
    }
}

pub async fn delete(name: &str) -> Result<(), String> {
    let _one = QMP.lock().await;
    delete_unlocked(name).await
}

async fn delete_unlocked(name: &str) -> Result<(), String> {
    qmp(
        "blockdev-snapshot-delete-internal-sync",
        json!({"device": crate::engine::DATA_NODE, "name": disk::internal_name(name)}),
        QMP_LIMIT,
    )
    .await
    .map_err(|e| format!("QEMU could not delete the snapshot: {e}"))
}

async fn qmp(command: &str, arguments: serde_json::Value, limit: Duration) -> Result<(), String> {
    let work = async {
        let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(10)).await?;
        qmp.execute(command, arguments).await
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", limit.as_secs())),
    }
}

/// Sends a freeze, a thaw or a release of the disk; a thaw says whether the freeze was still in
/// effect (the others: true).
pub(super) async fn agent(control: &Control, request: &Request) -> Result<bool, String> {
    let work = async {
        let mut stream = control
            .clone()
            .open_stream()
            .await
            .map_err(|e| e.to_string())?;
        write_message(&mut stream, request)
            .await
            .map_err(|e| e.to_string())?;
        let frame = read_frame(&mut stream)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the agent closed the stream without answering")?;
        match frame.into_message::<Reply>().map_err(|e| e.to_string())? {
            Reply::Frozen | Reply::DiskReleased => Ok(true),
            Reply::Thawed { was_frozen } => Ok(was_frozen),
            Reply::Error { message, .. } => Err(message),
            other => Err(format!("unexpected reply {other:?}")),
        }
    };
    match tokio::time::timeout(AGENT_LIMIT, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {}s", AGENT_LIMIT.as_secs())),
    }
}

/// The VM's snapshot drive: empty (a null block device) unless a disk snapshot is attached to it,
/// read-only, for the agent to read. A snapshot is served by `qemu-nbd` (QEMU cannot open an internal
/// snapshot itself), as the engine's own user, over a socket pyro connects and hands QEMU by descriptor.
pub struct Views {
    vm_dir: PathBuf,
    attached: Mutex<Option<tokio::process::Child>>,
}

/// The listening socket `qemu-nbd` is started on (it exists only while one is attached).
const VIEW_SOCKET: &str = "view.sock";

impl Views {
    pub fn new(vm_dir: PathBuf) -> Views {
        Views {
            vm_dir,
            attached: Mutex::new(None),
        }
    }

    /// Attaches the snapshot `name` (detaching whatever was attached).
    pub async fn attach(&self, name: &str) -> Result<(), String> {
        let mut attached = self.attached.lock().await;
        let _one = QMP.lock().await;
        if let Some(child) = attached.take() {
            let _ = detach(child).await;
        }
        let _ = std::fs::remove_file(VIEW_SOCKET);
        let listener = std::os::unix::net::UnixListener::bind(VIEW_SOCKET)
            .map_err(|e| format!("cannot listen for the snapshot server: {e}"))?;
        let child = self.serve(&listener, name);
        // Connected before the server accepts: the connection waits in the listener's queue.
        let connection = std::os::unix::net::UnixStream::connect(VIEW_SOCKET);
        let _ = std::fs::remove_file(VIEW_SOCKET);
        drop(listener);
        let mut child = child?;
        let plugged = async {
            let connection =
                connection.map_err(|e| format!("cannot reach the snapshot server: {e}"))?;
            let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())?;
            qmp.send_fd("viewnbd", std::os::fd::AsFd::as_fd(&connection))
                .await
                .map_err(|e| e.to_string())?;
            drop(connection);
            qmp.execute(
                "blockdev-add",
                json!({"driver": "nbd", "node-name": "view-src", "read-only": true,
                       "server": {"type": "fd", "str": "viewnbd"}}),
            )
            .await
            .map_err(|e| e.to_string())?;
            qmp.execute("blockdev-reopen", reopen_onto("view-src"))
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(QMP_LIMIT, plugged).await {
            Ok(Ok(_)) => {
                *attached = Some(child);
                Ok(())
            }
            outcome => {
                let _ = child.kill().await;
                let _ = unplug().await;
                Err(match outcome {
                    Ok(Err(e)) => format!("cannot attach the snapshot: {e}"),
                    _ => "cannot attach the snapshot: QEMU did not answer".into(),
                })
            }
        }
    }

    pub async fn detach(&self) -> Result<(), String> {
        let mut attached = self.attached.lock().await;
        match attached.take() {
            Some(child) => {
                let _one = QMP.lock().await;
                detach(child).await
            }
            None => Ok(()),
        }
    }

    /// Starts `qemu-nbd` on `listener` serving the snapshot `name` of the VM's disk, read-only.
    fn serve(
        &self,
        listener: &std::os::unix::net::UnixListener,
        name: &str,
    ) -> Result<tokio::process::Child, String> {
        let qemu_nbd = crate::host::tools::QEMU_NBD
            .find()
            .map_err(|e| e.to_string())?;
        let disk = std::fs::File::open(disk::FILE_NAME)
            .map_err(|e| format!("cannot open the VM's disk: {e}"))?;
        let listener = listener
            .try_clone()
            .map_err(|e| format!("cannot share the snapshot socket: {e}"))?;
        let mut command = std::process::Command::new("/bin/sh");
        // Socket activation wants LISTEN_PID to be the server's own pid: the shell's, which `exec` keeps.
        command
            .arg("-c")
            .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
            .arg(qemu_nbd)
            .arg("--read-only")
            .arg(format!(
                "--load-snapshot=snapshot.name={}",
                disk::internal_name(name)
            ))
            .arg("--image-opts")
            .arg(format!(
                "driver={},file.driver=file,file.filename=/proc/self/fd/4,file.locking=off",
                disk::FORMAT
            ))
            .env("LISTEN_FDS", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        crate::engine::inherit_fds(
            &mut command,
            vec![
                (std::os::fd::OwnedFd::from(listener), 3),
                (std::os::fd::OwnedFd::from(disk), 4),
            ],
        )
        .map_err(|e| e.to_string())?;
        let owner =
            crate::engine::launch::EngineUser::take_disk(Path::new(disk::FILE_NAME), &self.vm_dir)
                .map_err(|e| e.to_string())?;
        if let Some(user) = owner {
            crate::engine::launch::become_user(&mut command, user, vec![user.gid]);
        }
        crate::fsutil::die_with_parent(&mut command, libc::SIGKILL);
        tokio::process::Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start qemu-nbd: {e}"))
    }
}

fn reopen_onto(file: &str) -> serde_json::Value {
    json!({"options": [{"driver": "raw", "node-name": "view", "file": file, "read-only": true}]})
}

/// Puts the snapshot drive back on the empty device and lets go of the snapshot server.
async fn unplug() -> Result<(), String> {
    let work = async {
        let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(10)).await?;
        qmp.execute("blockdev-reopen", reopen_onto("view-empty"))
            .await?;
        qmp.execute("blockdev-del", json!({"node-name": "view-src"}))
            .await
    };
    match tokio::time::timeout(QMP_LIMIT, work).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("QEMU did not answer".into()),
    }
}

async fn detach(mut child: tokio::process::Child) -> Result<(), String> {
    let unplugged = unplug().await;
    // qemu-nbd leaves once its one client has; it is not waited for longer than that takes.
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    unplugged.map_err(|e| format!("cannot detach the snapshot: {e}"))
}
