//! The supervisor process itself.

use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pyro_proto::{read_frame, write_message, HelloReply, Request};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_yamux::Control;

use super::channel::{self, AgentChannel};
use super::suspending::{self, Outcome};

use super::ports::Ports;
use super::protocol::{
    ClientReply, ClientRequest, OwnerCommand, Persist, ReadyInfo, StatusInfo, SupervisorEvent,
};
use super::{disk_snapshots, disk_swap};
use super::{StopRecord, VmRecord, LOCK, RECORD_FILE, SOCKET, STOPPED_FILE};
use crate::engine::instance::Instance;
use crate::engine::qmp::Qmp;
use crate::engine::{snapshot, Memory, Qemu, AGENT_SOCKET, QMP_SOCKET};
use crate::fsutil::{self, FileLock};
use crate::{Error, ErrorKind, Result};

/// A boot that has not reached the agent by then is a failure, with the serial log attached.
const BOOT_DEADLINE: Duration = Duration::from_secs(60);
/// A client connection outlives the deadline its client announced by at most this much.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);
/// The limit of a connection from a client that announced no deadline.
const LEGACY_CONNECTION_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Entry point of `pyro __supervise`. Returns the process exit code.
pub fn main(vm_dir: &Path, owner_fd: i32) -> i32 {
    if let Err(err) = std::env::set_current_dir(vm_dir) {
        eprintln!("supervisor: cannot enter {}: {err}", vm_dir.display());
        return 1;
    }
    let Ok(Some(_lock)) = FileLock::try_acquire(Path::new(LOCK)) else {
        eprintln!("supervisor: another supervisor owns {}", vm_dir.display());
        return 1;
    };
    // SAFETY: the launcher passed this descriptor as one end of a socket pair; we take ownership.
    let owner = unsafe { std::os::unix::net::UnixStream::from_raw_fd(owner_fd) };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("supervisor: cannot start the runtime: {err}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let _ = owner.set_nonblocking(true);
        let owner = match UnixStream::from_std(owner) {
            Ok(owner) => owner,
            Err(err) => {
                eprintln!("supervisor: bad owner socket: {err}");
                return 1;
            }
        };
        supervise(vm_dir.to_path_buf(), owner).await
    })
}

pub(super) struct Running {
    pub(super) engine: Instance,
    ports: std::sync::Arc<Ports>,
    pub(super) views: std::sync::Arc<disk_snapshots::Views>,
    pub(super) channel: AgentChannel,
    boot_ms: u64,
    engine_ms: u64,
    hello: HelloReply,
}

async fn supervise(mut vm_dir: PathBuf, owner: UnixStream) -> i32 {
    let (owner_read, mut owner_write) = owner.into_split();
    let record: VmRecord = match std::fs::read(RECORD_FILE)
        .map_err(|e| Error::io("read", Path::new(RECORD_FILE), e))
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| Error::internal(format!("bad {RECORD_FILE}: {e}")))
        }) {
        Ok(record) => record,
        Err(err) => return fail(&mut owner_write, &vm_dir, false, err).await,
    };
    let _ = std::fs::remove_file(STOPPED_FILE);
    let (shutdown_tx, mut shutdown_rx) = watch::channel::<Option<Halt>>(None);
    watch_owner(owner_read, record.ephemeral, shutdown_tx.clone());
    watch_signals(shutdown_tx.clone());

    let backend = match Qemu::locate() {
        Ok(backend) => backend,
        Err(err) => return fail(&mut owner_write, &vm_dir, record.ephemeral, err).await,
    };
    let mut booting = Box::pin(boot(&backend, &record));
    let mut running = tokio::select! {
        booted = &mut booting => match booted {
            Ok(running) => running,
            Err(err) => return fail(&mut owner_write, &vm_dir, record.ephemeral, err).await,
        },
        _ = shutdown_rx.changed() => {
            let reason = shutdown_rx.borrow().clone().unwrap_or_default().reason;
            drop(booting);
            cleanup(&vm_dir, record.ephemeral, &reason, false, false);
            let _ = send(&mut owner_write, &SupervisorEvent::Stopped { reason, unexpected: false }).await;
            return 0;
        }
    };
    drop(booting);
    // A supervisor that died uncleanly leaves its socket behind; this one holds the lock now.
    let _ = std::fs::remove_file(SOCKET);
    let listener = match crate::unix_socket::bind(Path::new(SOCKET)).and_then(|l| {
        l.set_nonblocking(true)?;
        UnixListener::from_std(l)
    }) {
        Ok(listener) => listener,
        Err(err) => {
            running.engine.kill().await;
            let err = Error::new(ErrorKind::Io, format!("cannot listen on {SOCKET}: {err}"));
            return fail(&mut owner_write, &vm_dir, record.ephemeral, err).await;
        }
    };
    let ready = ReadyInfo {
        supervisor_pid: std::process::id(),
        engine_pid: running.engine.pid().unwrap_or(0),
        boot_ms: running.boot_ms,
        engine_ms: running.engine_ms,
        agent: running.hello.clone(),
    };
    let owner_present = send(&mut owner_write, &SupervisorEvent::Ready(ready.clone()))
        .await
        .is_ok();
    // Nobody is left to activate the VM: a persistent one would only wait for its TTL.
    if !owner_present {
        let _ = shutdown_tx.send(Some(Halt::power_off(
            "the owner went away before the VM was ready",
        )));
    }
    let status = StatusInfo {
        vm_id: record.id.clone(),
        supervisor_pid: std::process::id(),
        engine_pid: running.engine.pid().unwrap_or(0),
        boot_ms: running.boot_ms,
    };
    let activity = Activity::new();
    let (saves_tx, mut saves_rx) = mpsc::channel::<(Save, UnixStream)>(4);
    let (claims_tx, mut claims_rx) = mpsc::channel::<(Claim, UnixStream)>(4);
    // A pooled VM is taken over once: for one use it then ends with its claimer; to persist it
    // takes the claimer's idle timeout.
    let mut record = record;
    let mut ephemeral = record.ephemeral;
    let mut claimed = false;
    let mut claimers = Vec::new();
    // Seconds (0: none); a client may change it while the VM runs.
    let idle_timeout = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
        record.idle_timeout_seconds.unwrap_or(0),
    ));
    let clients = Clients {
        idle_timeout: idle_timeout.clone(),
        shutdown: shutdown_tx.clone(),
        status,
        activity: activity.clone(),
        ports: running.ports.clone(),
        views: running.views.clone(),
        saves: saves_tx,
        claims: claims_tx,
    };
    let mut idle_check = tokio::time::interval(Duration::from_secs(1));
    let (reason, unexpected, suspended) = loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let client = serve_client(stream, running.channel.control.clone(), clients.clone());
                    tokio::spawn(client);
                }
            }
            _ = idle_check.tick() => {
                // The disk beside the supervisor (a claimed VM's directory has moved).
                if let Some(full) = crate::disk::over_budget(Path::new(crate::disk::FILE_NAME), record.config.disk_gib) {
                    power_off(&mut running).await;
                    break (full, false, false);
                }
                record.idle_timeout_seconds = Some(idle_timeout.load(std::sync::atomic::Ordering::Relaxed)).filter(|s| *s > 0);
                let Some(seconds) = record.idle_timeout_seconds else { continue };
                if activity.idle_for().is_some_and(|idle| idle >= Duration::from_secs(seconds)) {
                    if record.suspend_when_idle {
                        match suspending::suspend(&mut running, &record, &vm_dir).await {
                            Outcome::Saved { .. } => break (super::idle_suspend_reason(seconds), false, true),
                            Outcome::Failed(err) | Outcome::Broken(err) => {
                                power_off(&mut running).await;
                                break (format!("{} (it could not be suspended: {err})", super::idle_stop_reason(seconds)), false, false);
                            }
                        }
                    }
                    power_off(&mut running).await;
                    break (super::idle_stop_reason(seconds), false, false);
                }
            }
            Some((save, mut client)) = saves_rx.recv() => {
                // The answer is written here: the supervisor ends right after a suspend.
                let _busy = activity.begin();
                let outcome = match &save {
                    Save::Suspend => suspending::suspend(&mut running, &record, &vm_dir).await,
                    Save::Fork { into } => suspending::fork(&mut running, &record, into).await,
                };
                match outcome {
                    Outcome::Saved { bytes, save_ms } => {
                        let _ = write_message(&mut client, &ClientReply::Saved { bytes, save_ms }).await;
                        if let Save::Suspend = save {
                            break (SUSPENDED_BY_REQUEST.to_string(), false, true);
                        }
                    }
                    Outcome::Failed(err) => {
                        let _ = write_message(&mut client, &ClientReply::Error { message: err.to_string() }).await;
                    }
                    Outcome::Broken(err) => {
                        let message = err.to_string();
                        power_off(&mut running).await;
                        let _ = write_message(&mut client, &ClientReply::Error { message: message.clone() }).await;
                        break (format!("stopped: {message}"), true, false);
                    }
                }
            }
            Some((Claim { persist, swap_disk }, claimer)) = claims_rx.recv() => {
                let (read, mut write) = claimer.into_split();
                let free = !ephemeral && !claimed;
                if free && swap_disk {
                    if let Err(message) = disk_swap::swap(&running.channel.control).await {
                        // Its own disk is gone or half given up: this VM serves nobody any more.
                        let _ = write_message(&mut write, &ClientReply::Error { message: message.clone() }).await;
                        running.engine.stop(Duration::from_secs(3)).await;
                        break (format!("stopped: {message}"), true, false);
                    }
                }
                let taken = free
                    && write_message(&mut write, &ClientReply::Claimed(ready.clone())).await.is_ok();
                if free && swap_disk && !taken {
                    // A workspace's disk, and the claimer gone: nobody would ever stop this VM.
                    running.engine.stop(Duration::from_secs(3)).await;
                    break ("the claimer went away during the takeover".to_string(), true, false);
                }
                if taken {
                    claimed = true;
                    // Idle time counts from the claim, not from when the VM was pooled.
                    drop(activity.begin());
                    match persist {
                        Some(persist) => {
                            record.idle_timeout_seconds = persist.idle_timeout_seconds;
                            idle_timeout.store(persist.idle_timeout_seconds.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
                            record.suspend_when_idle = persist.suspend_when_idle;
                        }
                        None => ephemeral = true,
                    }
                    // Its directory moved: saves go, and record the disk, where it is now.
                    if let Ok(here) = std::env::current_dir() {
                        record.config.data_disk = here.join(crate::disk::FILE_NAME);
                        vm_dir = here;
                    }
                    watch_owner(read, ephemeral, shutdown_tx.clone());
                    claimers.push(write);
                } else {
                    let _ = write_message(&mut write, &ClientReply::Error { message: "the VM is taken".into() }).await;
                }
            }
            how = running.engine.exited() => {
                break (format!("the VM stopped unexpectedly: QEMU exited ({how})"), true, false);
            }
            _ = shutdown_rx.changed() => {
                let halt = shutdown_rx.borrow().clone().unwrap_or_default();
                // A VM for one use is removed with its disk: nothing of it needs a clean shutdown.
                if halt.discard || ephemeral {
                    running.engine.stop(Duration::from_secs(3)).await;
                } else {
                    power_off(&mut running).await;
                }
                break (halt.reason, false, false);
            }
        }
    };
    drop(listener);
    cleanup(&vm_dir, ephemeral, &reason, unexpected, suspended);
    let stopped = SupervisorEvent::Stopped { reason, unexpected };
    let _ = send(&mut owner_write, &stopped).await;
    for mut claimer in claimers {
        let _ = send(&mut claimer, &stopped).await;
    }
    0
}

async fn boot(backend: &Qemu, record: &VmRecord) -> Result<Running> {
    let started = Instant::now();
    // The supervisor runs in its VM's directory.
    let vm_dir = std::env::current_dir().map_err(|e| Error::io("resolve", Path::new("."), e))?;
    let (mut engine, nic) = Instance::spawn(backend, &record.config, &vm_dir)?;
    let mut inbound_tx = None;
    if let Some(nic) = nic {
        let gateway = pyro_net::Gateway::new(record.egress.clone());
        let nic = nic
            .set_nonblocking(true)
            .and_then(|_| UnixStream::from_std(nic))
            .map_err(|e| Error::new(ErrorKind::Engine, format!("cannot serve the NIC: {e}")))?;
        let (tx, inbound) = tokio::sync::mpsc::channel(16);
        inbound_tx = Some(tx);
        tokio::spawn(async move {
            let _ = gateway.run(nic, inbound).await;
        });
    }
    let ports = std::sync::Arc::new(Ports::new(inbound_tx));
    let mut engine_ms = started.elapsed().as_millis() as u64;
    let incoming = engine.take_incoming();
    // A resume loads the guest's whole memory first: it gets time for that too (32 MiB/s at least).
    let deadline = match &record.config.memory {
        // A fork waits for the whole save as well: at most the guest's memory, and a disk copy.
        // (A followed state's `bytes` is the size of the disk being copied.)
        Memory::Resume {
            following: true,
            bytes,
            ..
        } => {
            let work = crate::suspend::max_bytes(record.config.mem_mib).saturating_add(*bytes);
            BOOT_DEADLINE + Duration::from_secs(work >> 24)
        }
        Memory::Resume { bytes, .. } => BOOT_DEADLINE + Duration::from_secs(bytes >> 25),
        _ => BOOT_DEADLINE,
    };
    let handshake = async {
        match &record.config.memory {
            Memory::Restore { .. } => {
                let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(10)).await?;
                engine_ms = started.elapsed().as_millis() as u64;
                snapshot::restore(&mut qmp).await?;
            }
            Memory::Resume {
                state,
                sha256,
                bytes,
                named_ram,
                following,
            } => {
                let mut qmp = Qmp::connect(Path::new(QMP_SOCKET), Duration::from_secs(10)).await?;
                engine_ms = started.elapsed().as_millis() as u64;
                let incoming = incoming
                    .ok_or_else(|| Error::internal("a resuming engine has no state pipe"))?;
                let saved = Saved {
                    state,
                    sha256,
                    bytes: *bytes,
                    named_ram: *named_ram,
                    following: following.then(|| {
                        (
                            crate::suspend::max_bytes(record.config.mem_mib),
                            std::time::Instant::now() + deadline,
                        )
                    }),
                };
                resume(&mut qmp, incoming, &saved, deadline).await?;
            }
            Memory::Anonymous | Memory::TemplateFile { .. } => {}
        }
        AgentChannel::open(channel::connect().await?).await
    };
    match engine.wait_ready("the guest", deadline, handshake).await {
        Ok((channel, hello)) => Ok(Running {
            engine,
            ports,
            views: std::sync::Arc::new(disk_snapshots::Views::new(vm_dir.to_path_buf())),
            channel,
            boot_ms: started.elapsed().as_millis() as u64,
            engine_ms,
            hello,
        }),
        Err(err) => {
            engine.kill().await;
            Err(err)
        }
    }
}

/// A suspended guest's saved state, as its record describes it.
struct Saved<'a> {
    state: &'a Path,
    sha256: &'a str,
    bytes: u64,
    named_ram: bool,
    /// A fork's state, still being saved: followed up to this many bytes, until this instant.
    following: Option<(u64, std::time::Instant)>,
}

/// Feeds a suspended guest's state to the engine, and lets the guest run only when what was fed is
/// what was saved. The state is used once: its record goes before the guest runs, so the disk it
/// belongs to never gets it again once the guest has written to it.
async fn resume(
    qmp: &mut Qmp,
    incoming: std::os::fd::OwnedFd,
    saved: &Saved<'_>,
    limit: Duration,
) -> Result<()> {
    let (state, bytes, sha256) = (
        saved.state.to_path_buf(),
        saved.bytes,
        saved.sha256.to_string(),
    );
    let following = saved.following;
    let feeder = tokio::task::spawn_blocking(move || match following {
        // The record, written once the save is done, says what the state should have been.
        Some((cap, until)) => crate::suspend::follow(Path::new("."), incoming, cap, until)
            .map(|(fed, record)| (fed, record.sha256)),
        None => crate::suspend::feed(&state, incoming, bytes).map(|fed| (fed, sha256)),
    });
    snapshot::resume(qmp, saved.named_ram, limit).await?;
    // The engine has read the whole stream; a feeder still writing means trailing bytes. A fork's
    // feeder also waits for the end of the save (the disk copy).
    let settle = if following.is_some() {
        limit
    } else {
        Duration::from_secs(10)
    };
    let (fed, expected) = match tokio::time::timeout(settle, feeder).await {
        Ok(Ok(fed)) => fed?,
        Ok(Err(e)) => return Err(Error::internal(format!("the state feeder failed: {e}"))),
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Engine,
                "the saved state is damaged: it goes on past its end",
            ))
        }
    };
    if fed != expected {
        return Err(Error::new(
            ErrorKind::Engine,
            "the saved state is damaged: its sha256 does not match the one recorded when it was saved",
        ));
    }
    crate::suspend::spend()?;
    snapshot::run(qmp).await
}

/// Asks the guest to power off; falls back to QMP `quit`, then to SIGKILL.
async fn power_off(running: &mut Running) {
    let polite = async {
        let mut stream = running.channel.control.clone().open_stream().await.ok()?;
        write_message(&mut stream, &Request::PowerOff).await.ok()?;
        read_frame(&mut stream).await.ok()
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), polite).await;
    if running.engine.exits_within(Duration::from_secs(10)).await {
        return;
    }
    running.engine.stop(Duration::from_secs(3)).await;
}

/// What every client connection shares with the supervisor.
#[derive(Clone)]
struct Clients {
    /// The idle timeout in seconds (0: none), read by the supervisor's loop.
    idle_timeout: std::sync::Arc<std::sync::atomic::AtomicU64>,
    shutdown: watch::Sender<Option<Halt>>,
    status: StatusInfo,
    activity: Activity,
    ports: std::sync::Arc<Ports>,
    views: std::sync::Arc<disk_snapshots::Views>,
    /// Hands a client asking for a save to the supervisor's loop, which owns the engine.
    saves: mpsc::Sender<(Save, UnixStream)>,
    /// Hands a client claiming the VM to the supervisor's loop.
    claims: mpsc::Sender<(Claim, UnixStream)>,
}

/// A client taking the VM over (see [`ClientRequest::Claim`]).
struct Claim {
    persist: Option<Persist>,
    swap_disk: bool,
}

/// Why the VM is to end, and whether its disk is wanted afterwards.
#[derive(Clone, Default)]
struct Halt {
    reason: String,
    /// The disk is about to be reverted or removed: QEMU is quit without a guest shutdown.
    discard: bool,
}

impl Halt {
    fn power_off(reason: &str) -> Self {
        Self {
            reason: reason.to_string(),
            discard: false,
        }
    }
}

/// A save of the guest's whole state the supervisor's loop carries out.
enum Save {
    Suspend,
    Fork { into: PathBuf },
}

/// The reason a VM suspended on request stopped with.
pub const SUSPENDED_BY_REQUEST: &str = "suspended by request";

async fn serve_client(mut stream: UnixStream, control: Control, clients: Clients) {
    let Clients {
        idle_timeout,
        shutdown,
        status,
        activity,
        ports,
        views,
        saves,
        claims,
    } = clients;
    let request: ClientRequest = match read_frame(&mut stream).await {
        Ok(Some(frame)) => match frame.into_message() {
            Ok(request) => request,
            Err(_) => return,
        },
        _ => return,
    };
    match request {
        ClientRequest::Agent { deadline_ms } | ClientRequest::Inspect { deadline_ms } => {
            let counts_as_activity = matches!(request, ClientRequest::Agent { .. });
            let mut agent = match control.clone().open_stream().await {
                Ok(agent) => agent,
                Err(err) => {
                    let _ = write_message(
                        &mut stream,
                        &ClientReply::Error {
                            message: err.to_string(),
                        },
                    )
                    .await;
                    return;
                }
            };
            // An operation in progress keeps the VM alive and idle time counts from its end, but only
            // until its deadline: a call the guest keeps hanging must not keep the VM from its TTL.
            let limit = deadline_ms
                .map(|ms| Duration::from_millis(ms).saturating_add(CONNECTION_GRACE))
                .unwrap_or(LEGACY_CONNECTION_LIMIT);
            let _busy = counts_as_activity.then(|| activity.begin());
            if write_message(&mut stream, &ClientReply::Attached)
                .await
                .is_ok()
            {
                let relay = tokio::io::copy_bidirectional(&mut stream, &mut agent);
                let _ = tokio::time::timeout(limit, relay).await;
            }
        }
        ClientRequest::Status => {
            let _ = write_message(&mut stream, &ClientReply::Status(status)).await;
        }
        ClientRequest::Suspend | ClientRequest::Fork { .. } => {
            let save = match request {
                ClientRequest::Fork { into } => Save::Fork { into },
                _ => Save::Suspend,
            };
            if let Err(mpsc::error::SendError((_, mut stream))) = saves.send((save, stream)).await {
                let reply = ClientReply::Error {
                    message: "the supervisor is ending".into(),
                };
                let _ = write_message(&mut stream, &reply).await;
            }
        }
        ClientRequest::Claim { persist, swap_disk } => {
            let _ = claims.send((Claim { persist, swap_disk }, stream)).await;
        }
        ClientRequest::Shutdown { reason, discard } => {
            let _ = shutdown.send(Some(Halt { reason, discard }));
            let _ = write_message(&mut stream, &ClientReply::ShuttingDown).await;
        }
        ClientRequest::Publish {
            guest_port,
            host_port,
        } => {
            let reply = match ports.publish(guest_port, host_port).await {
                Ok(host_port) => ClientReply::Published { host_port },
                Err(message) => ClientReply::Error { message },
            };
            let _ = write_message(&mut stream, &reply).await;
        }
        ClientRequest::SetIdleTimeout { seconds } => {
            idle_timeout.store(seconds.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
            // A new timeout counts from now.
            drop(activity.begin());
            let _ = write_message(&mut stream, &ClientReply::IdleTimeoutSet).await;
        }
        ClientRequest::Unpublish { host_port } => {
            ports.unpublish(host_port);
            let _ = write_message(&mut stream, &ClientReply::Unpublished).await;
        }
        ClientRequest::TakeDiskSnapshot { .. } | ClientRequest::DeleteDiskSnapshot { .. } => {
            let _busy = activity.begin();
            let outcome = match &request {
                ClientRequest::TakeDiskSnapshot { name } => {
                    disk_snapshots::take(&control, name).await
                }
                ClientRequest::DeleteDiskSnapshot { name } => disk_snapshots::delete(name).await,
                _ => Ok(()),
            };
            let reply = match outcome {
                Ok(()) => ClientReply::Done,
                Err(message) => ClientReply::Error { message },
            };
            let _ = write_message(&mut stream, &reply).await;
        }
        ClientRequest::AttachSnapshotView { .. } | ClientRequest::DetachSnapshotView => {
            let _busy = activity.begin();
            let outcome = match &request {
                ClientRequest::AttachSnapshotView { name } => views.attach(name).await,
                _ => views.detach().await,
            };
            let reply = match outcome {
                Ok(()) => ClientReply::Done,
                Err(message) => ClientReply::Error { message },
            };
            let _ = write_message(&mut stream, &reply).await;
        }
    }
}

fn watch_owner(
    mut owner: tokio::net::unix::OwnedReadHalf,
    ephemeral: bool,
    shutdown: watch::Sender<Option<Halt>>,
) {
    tokio::spawn(async move {
        loop {
            match read_frame(&mut owner).await {
                Ok(Some(frame)) => {
                    if let Ok(OwnerCommand::Shutdown { reason }) = frame.into_message() {
                        let _ = shutdown.send(Some(Halt::power_off(&reason)));
                    }
                }
                _ => {
                    if ephemeral {
                        let _ = shutdown.send(Some(Halt::power_off(
                            "the process that started the VM went away",
                        )));
                    }
                    return;
                }
            }
        }
    });
}

fn watch_signals(shutdown: watch::Sender<Option<Halt>>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
        let _ = shutdown.send(Some(Halt::power_off("the supervisor was asked to stop")));
    });
}

async fn send(owner: &mut OwnedWriteHalf, event: &SupervisorEvent) -> std::io::Result<()> {
    write_message(owner, event).await
}

async fn fail(owner: &mut OwnedWriteHalf, vm_dir: &Path, ephemeral: bool, err: Error) -> i32 {
    eprintln!("supervisor: {err}");
    cleanup(
        vm_dir,
        ephemeral,
        &format!("the VM failed to start: {err}"),
        true,
        false,
    );
    let event = SupervisorEvent::Failed {
        kind: err.kind(),
        message: err.message().to_string(),
        hint: err.hint().map(str::to_string),
    };
    let _ = send(owner, &event).await;
    1
}

/// Removes the sockets and records why the VM stopped; an ephemeral VM's whole directory goes too.
fn cleanup(vm_dir: &Path, ephemeral: bool, reason: &str, unexpected: bool, suspended: bool) {
    if ephemeral {
        // Where the directory is now: a claimed VM's was moved since the supervisor started.
        let here = std::env::current_dir().unwrap_or_else(|_| vm_dir.to_path_buf());
        let _ = fsutil::remove_tree(&here);
        return;
    }
    for socket in [SOCKET, AGENT_SOCKET, QMP_SOCKET] {
        let _ = std::fs::remove_file(socket);
    }
    let record = StopRecord {
        reason: reason.to_string(),
        unexpected,
        suspended,
        at_unix_ms: crate::vm::now_unix_ms(),
    };
    if let Ok(json) = serde_json::to_vec(&record) {
        let _ = fsutil::write_atomic(Path::new(STOPPED_FILE), &json);
    }
}

/// Agent connections in progress and when the last one ended: the idle clock of the TTL.
#[derive(Clone)]
struct Activity(std::sync::Arc<std::sync::Mutex<(usize, Instant)>>);

/// Marks one operation in progress until dropped.
struct Busy(Activity);

impl Activity {
    fn new() -> Activity {
        Activity(std::sync::Arc::new(std::sync::Mutex::new((
            0,
            Instant::now(),
        ))))
    }

    fn begin(&self) -> Busy {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
        Busy(self.clone())
    }

    /// How long nothing has been in progress, or `None` while something is.
    fn idle_for(&self) -> Option<Duration> {
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (state.0 == 0).then(|| state.1.elapsed())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        state.0 -= 1;
        state.1 = Instant::now();
    }
}
