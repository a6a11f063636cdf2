//! Booting a VM through its supervisor and talking to its agent.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyro_proto::{Activate, ExecRequest, ExecResult, NetworkConfig, OutputStream, Reply, Request};
use serde::Serialize;

use crate::agent_client::{self, AgentCall};
use crate::engine::{Memory, VmConfig};
use crate::environment::{self, Installed};
use crate::host::accel::{self, Accelerator};
use crate::host::tools;
use crate::initramfs::{self, Agent};
use crate::network::Network;
use crate::supervisor::protocol::{ReadyInfo, SupervisorEvent};
use crate::supervisor::{self, OwnerChannel, VmRecord, DATA_DISK, RECORD_FILE};
use crate::template;
use crate::vocab::BootMode;
use crate::{fsutil, limits, Dirs, Error, ErrorKind, Progress, Result};

/// Receives a command's output as it is produced.
pub type OutputSink<'a> = &'a mut (dyn FnMut(OutputStream, &[u8]) + Send);

/// The shape of a VM to boot.
#[derive(Debug, Clone)]
pub struct VmOptions {
    pub environment: String,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub network: Network,
    pub disk_gib: u32,
    /// Tear the VM down when this process goes away (`pyro run`).
    pub ephemeral: bool,
    /// Idle seconds after which the supervisor stops the VM (workspaces).
    pub idle_timeout_seconds: Option<u64>,
    /// Boot from the kernel even when a warm template exists.
    pub cold: bool,
    /// At the idle timeout, suspend instead of stopping.
    pub suspend_when_idle: bool,
    /// Resume this saved state instead of booting (see [`crate::suspend`]).
    pub resume: Option<crate::suspend::Suspension>,
}

impl VmOptions {
    pub fn validate(&self) -> Result<()> {
        limits::check("vcpu_count", self.vcpu_count, &limits::VCPU_COUNT)?;
        limits::check("mem_mib", self.mem_mib, &limits::MEM_MIB)?;
        limits::check("disk_gib", self.disk_gib, &limits::DISK_GIB)?;
        Ok(())
    }
}

/// How the accelerator was chosen, as results report it.
#[derive(Debug, Clone, Serialize)]
pub struct BootFacts {
    pub accelerator: Accelerator,
    pub accelerator_reason: String,
    /// `warm` (restored from a template) or `cold` (booted from the kernel).
    pub boot_mode: BootMode,
    pub boot_mode_reason: String,
    pub boot_ms: u64,
    /// Where the start's time went.
    pub phases: Phases,
}

/// Where the time of a VM's start (and, for `run`, of its command and teardown) went, in
/// milliseconds: results report it as `phases_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Phases {
    /// Checks and choices before anything starts: environment, guest agent, template.
    pub prepare: u64,
    /// The VM's own disk: a copy of the empty image for a new VM.
    pub disk: u64,
    /// The supervisor and QEMU starting, until QEMU runs (and, to restore, answers QMP).
    pub spawn: u64,
    /// The guest restored from its template (or booted cold), up to the agent's handshake.
    pub restore: u64,
    /// Clock, entropy, identity and the VM's disk set up in the guest.
    pub activate: u64,
    /// The command (`run` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<u64>,
    /// Powering the VM off and removing it (`run` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teardown: Option<u64>,
}

fn ms_since(start: std::time::Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// A booted, activated VM. Dropping it without [`Vm::shutdown`] leaves an ephemeral VM to its
/// supervisor, which tears it down when it sees this process's channel close.
pub struct Vm {
    pub id: String,
    pub dir: PathBuf,
    pub environment: Installed,
    pub facts: BootFacts,
    pub ready: ReadyInfo,
    owner: OwnerChannel,
    /// The directory goes with the VM (`pyro run`); a persistent VM's directory holds its disk.
    ephemeral: bool,
}

/// Everything resolved before a boot: environment, agent, initramfs, accelerator.
#[derive(Clone)]
pub struct Prepared {
    pub environment: Installed,
    pub initramfs: PathBuf,
    pub accelerator: accel::AcceleratorChoice,
    /// Anonymous memory (a cold boot) or a warm template to restore.
    pub memory: Memory,
    /// `warm` or `cold`.
    pub boot_mode: BootMode,
    pub boot_mode_reason: String,
    /// The empty disk image a new VM's disk is copied from.
    pub empty_disk: PathBuf,
    /// How long [`prepare`] took.
    pub prepare_ms: u64,
    /// The id of the warm template it restores from (`None` for a cold boot or a resume).
    pub template_id: Option<String>,
}

/// Pulls the environment if needed, packs the initramfs, and picks a warm template when a valid one
/// exists for this shape (a cold boot otherwise, with the reason).
pub fn prepare(dirs: &Dirs, options: &VmOptions, progress: &dyn Progress) -> Result<Prepared> {
    let started = std::time::Instant::now();
    options.validate()?;
    crate::catalog::lookup(&options.environment)?;
    tools::QEMU.find()?;
    tools::MKE2FS.find()?;
    tools::QEMU_IMG.find()?;
    let empty_disk = crate::disk::empty_image(dirs, options.disk_gib)?;
    let agent = Agent::locate(dirs)?;
    let environment = match environment::installed_by_name(dirs, &options.environment)? {
        Some(installed) => installed,
        None => {
            progress.phase(&format!(
                "{} is not built yet: pulling it (once)",
                options.environment
            ));
            environment::pull(dirs, &options.environment, false, progress)?
        }
    };
    let initramfs = initramfs::ensure(dirs, &environment, &agent)?;
    let accelerator = accel::choose();
    let mut template_id = None;
    let (memory, boot_mode, boot_mode_reason) = if let Some(suspension) = &options.resume {
        let now = vm_config(
            options,
            &environment,
            &initramfs,
            accelerator.accelerator,
            suspension.config.data_disk.clone(),
            Memory::Anonymous,
        );
        if let Some(why) = crate::suspend::mismatch(suspension, &now) {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!("the suspended state cannot be resumed: {why}"),
            ));
        }
        let memory = Memory::Resume {
            state: crate::suspend::state_path(&suspension.config.data_disk),
            sha256: suspension.sha256.clone(),
            bytes: suspension.bytes,
            named_ram: suspension.named_ram,
            following: suspension.following,
        };
        let reason = "resumed from its suspended state".to_string();
        (memory, BootMode::Resumed, reason)
    } else if options.cold {
        (
            Memory::Anonymous,
            BootMode::Cold,
            "a cold boot was asked for".to_string(),
        )
    } else {
        let key = template::key_for(
            dirs,
            &environment,
            &agent,
            accelerator.accelerator,
            options.vcpu_count,
            options.mem_mib,
            options.network.has_device(),
            options.disk_gib,
        )?;
        match template::check(dirs, &key) {
            template::Readiness::Warm(template) => {
                let reason = format!(
                    "restored from template {} (prepared for {})",
                    key.id(),
                    key.shape()
                );
                template_id = Some(key.id());
                (template.memory(), BootMode::Warm, reason)
            }
            template::Readiness::Cold(why) | template::Readiness::Stale(why) => {
                // The next start of this shape should not pay for this one's missing template.
                let why = match crate::auto_prepare::spawn(dirs, &key) {
                    Ok(true) => format!(
                        "{why}; it is being made in the background ({}=1 turns this off)",
                        crate::auto_prepare::DISABLE_ENV
                    ),
                    _ => why,
                };
                (Memory::Anonymous, BootMode::Cold, why)
            }
        }
    };
    Ok(Prepared {
        environment,
        initramfs,
        accelerator,
        memory,
        boot_mode,
        boot_mode_reason,
        empty_disk,
        prepare_ms: ms_since(started),
        template_id,
    })
}

/// A fresh VM id and the directory its supervisor will own.
pub fn allocate(dirs: &Dirs) -> Result<(String, PathBuf)> {
    let id = fsutil::random_hex(6)?;
    let dir = dirs.vms().join(&id);
    Ok((id, dir))
}

/// Creates the VM directory, starts its supervisor and waits until the agent is ready and activated.
/// Dropping the future before it completes leaves an ephemeral VM to its supervisor's teardown.
pub async fn boot(id: &str, dir: &Path, options: &VmOptions, prepared: Prepared) -> Result<Vm> {
    fsutil::create_dir_all(dir)?;
    match start(id, dir, options, prepared).await {
        Ok(vm) => Ok(vm),
        Err(err) => {
            // A persistent VM's directory holds its disk: only an ephemeral one is removed.
            if options.ephemeral {
                let _ = supervisor::remove_if_abandoned(dir);
            }
            Err(err)
        }
    }
}

async fn start(id: &str, dir: &Path, options: &VmOptions, prepared: Prepared) -> Result<Vm> {
    // A persistent VM keeps its disk across stop and start; a new one gets a fresh disk.
    let disk_started = std::time::Instant::now();
    let data_disk = dir.join(DATA_DISK);
    if !data_disk.exists() {
        crate::disk::copy_empty(&prepared.empty_disk, &data_disk)?;
    }
    let disk_ms = ms_since(disk_started);
    let config = vm_config(
        options,
        &prepared.environment,
        &prepared.initramfs,
        prepared.accelerator.accelerator,
        data_disk,
        prepared.memory.clone(),
    );
    let record = VmRecord {
        id: id.to_string(),
        environment: options.environment.clone(),
        config,
        ephemeral: options.ephemeral,
        idle_timeout_seconds: options.idle_timeout_seconds,
        suspend_when_idle: options.suspend_when_idle,
        egress: options.network.rules(),
        created_at_unix_ms: now_unix_ms(),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::internal(e.to_string()))?;
    fsutil::write_atomic(&dir.join(RECORD_FILE), &json)?;
    let spawned = std::time::Instant::now();
    let mut owner = supervisor::spawn(dir)?;
    let ready = match owner.next_event().await? {
        Some(SupervisorEvent::Ready(ready)) => ready,
        Some(SupervisorEvent::Failed {
            kind,
            message,
            hint,
        }) => {
            let err = Error::new(kind, message);
            return Err(match hint {
                Some(hint) => err.with_hint(hint),
                None => err.with_next(crate::Next::Doctor),
            });
        }
        Some(SupervisorEvent::Stopped { reason, .. }) => {
            return Err(Error::new(
                ErrorKind::Engine,
                format!("the VM stopped while booting: {reason}"),
            ))
        }
        None => {
            let log =
                std::fs::read_to_string(dir.join(supervisor::SUPERVISOR_LOG)).unwrap_or_default();
            return Err(Error::new(
                ErrorKind::Engine,
                format!("the supervisor exited while booting the VM\n{log}"),
            ));
        }
    };
    let guest_ms = ready.boot_ms.saturating_sub(ready.engine_ms);
    let facts = BootFacts {
        accelerator: prepared.accelerator.accelerator,
        accelerator_reason: prepared.accelerator.reason.clone(),
        boot_mode: prepared.boot_mode,
        boot_mode_reason: prepared.boot_mode_reason.clone(),
        boot_ms: ready.boot_ms,
        phases: Phases {
            prepare: prepared.prepare_ms,
            disk: disk_ms,
            spawn: ms_since(spawned).saturating_sub(guest_ms),
            restore: guest_ms,
            ..Phases::default()
        },
    };
    let vm = Vm {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        environment: prepared.environment,
        facts,
        ready,
        owner,
        ephemeral: options.ephemeral,
    };
    vm.activate(options.network.has_device()).await
}

/// A running VM whose supervisor answered a claim (a pooled VM, see [`crate::pool`]).
pub struct Taken {
    pub owner: OwnerChannel,
    pub ready: ReadyInfo,
    /// Why it was taken, as `boot_mode_reason` says.
    pub reason: String,
    pub claim_ms: u64,
    /// Taken for one use: it ends with this process.
    pub ephemeral: bool,
}

/// Makes a VM taken over from the pool this VM's own: identity, clock and entropy.
pub async fn adopt(id: &str, dir: &Path, taken: Taken, prepared: Prepared) -> Result<Vm> {
    let vm = Vm {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        environment: prepared.environment,
        facts: BootFacts {
            accelerator: prepared.accelerator.accelerator,
            accelerator_reason: prepared.accelerator.reason.clone(),
            boot_mode: BootMode::Pooled,
            boot_mode_reason: taken.reason,
            boot_ms: 0,
            phases: Phases {
                prepare: prepared.prepare_ms,
                spawn: taken.claim_ms,
                ..Phases::default()
            },
        },
        ready: taken.ready,
        owner: taken.owner,
        ephemeral: taken.ephemeral,
    };
    vm.activate(false).await
}

/// The engine configuration of a VM of `options` on `data_disk`.
fn vm_config(
    options: &VmOptions,
    environment: &Installed,
    initramfs: &Path,
    accelerator: Accelerator,
    data_disk: PathBuf,
    memory: Memory,
) -> VmConfig {
    VmConfig {
        vcpu_count: options.vcpu_count,
        mem_mib: options.mem_mib,
        network: options.network.has_device(),
        accelerator,
        tsc_khz: accel::tsc_khz(),
        kernel: environment.kernel(),
        initramfs: initramfs.to_path_buf(),
        base_image: environment.rootfs(),
        data_disk,
        disk_gib: options.disk_gib,
        memory,
    }
}

/// The guest's side of pyro's gateway (10.0.2.15, gateway 10.0.2.2, resolver 10.0.2.3): the
/// gateway is pyro's own, and no address maps to the host.
fn guest_network() -> NetworkConfig {
    let a = pyro_net::GUEST_ADDRESSING;
    NetworkConfig {
        address: a.guest.to_string(),
        prefix_len: a.prefix_len,
        gateway: a.gateway.to_string(),
        dns: vec![a.dns.to_string()],
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Vm {
    /// Makes the guest this VM's own: clock, entropy, identity (a guest already activated, as a
    /// pooled or resumed one is, takes a new identity when its hostname differs), its disk and
    /// network. A VM that fails it is shut down.
    async fn activate(mut self, network: bool) -> Result<Vm> {
        let activated = std::time::Instant::now();
        let activation = Activate {
            unix_time_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            entropy_hex: fsutil::random_hex(32)?,
            hostname: format!("pyro-{}", self.id),
            machine_id: fsutil::random_hex(16)?,
            network: network.then(guest_network),
        };
        match self.request(&Request::Activate(activation)).await {
            Ok(Reply::Activated(_)) => {
                self.facts.phases.activate = ms_since(activated);
                Ok(self)
            }
            Ok(other) => {
                self.shutdown("activation failed").await.ok();
                Err(agent_client::unexpected(other))
            }
            Err(err) => {
                self.shutdown("activation failed").await.ok();
                Err(err.context("activation failed"))
            }
        }
    }

    /// Sends one request and returns the agent's reply.
    pub async fn request(&self, request: &Request) -> Result<Reply> {
        agent_client::call(&self.dir, request).await
    }

    /// Runs a command. `on_output` receives chunks as they come when `request.stream_output` is set.
    pub async fn exec(
        &self,
        request: ExecRequest,
        on_output: OutputSink<'_>,
    ) -> Result<ExecResult> {
        exec(&self.dir, request, on_output).await
    }

    /// Asks the supervisor to power the VM off and clean up, and returns at once: the caller has its
    /// result, and the supervisor removes everything of an ephemeral VM on its own (it would also
    /// do so when this process's channel closes).
    pub async fn release(mut self, reason: &str) {
        self.owner.request_shutdown(reason).await.ok();
    }

    /// Powers the VM off and waits until its supervisor has cleaned up.
    pub async fn shutdown(mut self, reason: &str) -> Result<()> {
        self.owner.request_shutdown(reason).await.ok();
        self.wait_stopped().await.map(|_| ())
    }

    /// Waits for the supervisor's `stopped` and returns its reason; `None` if the supervisor vanished
    /// without one. Afterwards nothing of an ephemeral VM is left: a dead supervisor's directory is
    /// removed here (a persistent VM's directory, which holds its disk, stays).
    pub async fn wait_stopped(&mut self) -> Result<Option<String>> {
        let reason = loop {
            match self.owner.next_event().await {
                Ok(Some(SupervisorEvent::Stopped { reason, .. })) => break Some(reason),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break None,
            }
        };
        if self.ephemeral {
            supervisor::remove_if_abandoned(&self.dir)?;
        }
        Ok(reason)
    }

    /// After a lost connection: why the VM stopped, waiting at most `limit` for its supervisor to say.
    pub async fn stop_reason(&mut self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, self.wait_stopped())
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten()
    }
}

/// Runs a command in the VM in `vm_dir`. The result is checked against the requested cap: the guest
/// is not trusted to honour it.
pub async fn exec(
    vm_dir: &Path,
    request: ExecRequest,
    on_output: OutputSink<'_>,
) -> Result<ExecResult> {
    let cap = request.output_cap_bytes as usize;
    // The guest enforces the timeout; the host gives it a minute more, then gives up on it.
    let limit = Duration::from_millis(request.timeout_ms).saturating_add(Duration::from_secs(60));
    let call = AgentCall::start_with(
        vm_dir,
        &Request::Exec(request),
        agent_client::Purpose::Activity,
        limit,
    )
    .await?;
    let reply = call.finish(on_output, &mut tokio::io::sink(), 0).await?;
    match reply {
        Reply::Exited(mut result) => {
            bound_output(&mut result.stdout, &mut result.stdout_truncated, cap);
            bound_output(&mut result.stderr, &mut result.stderr_truncated, cap);
            Ok(result)
        }
        other => Err(agent_client::unexpected(other)),
    }
}

/// Keeps at most `cap` bytes (plus pyro's marker) of guest-reported output.
fn bound_output(text: &mut String, truncated: &mut bool, cap: usize) {
    let limit = cap + 128;
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        *truncated = true;
    }
}

/// Waits until the VM directory is gone or abandoned (then removes it), for at most `limit`.
pub async fn wait_removed(dir: &Path, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if !dir.exists() || supervisor::remove_if_abandoned(dir).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a supervisor owns the VM directory (it holds the lock for as long as it lives).
pub fn is_running(dir: &Path) -> bool {
    dir.join(supervisor::LOCK).exists()
        && matches!(
            crate::fsutil::FileLock::try_acquire(&dir.join(supervisor::LOCK)),
            Ok(None)
        )
}

/// Waits until no supervisor owns `dir`, for at most `limit`.
pub async fn wait_gone(dir: &Path, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while is_running(dir) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks the supervisor of a persistent VM to power it off, and waits until it has exited.
pub async fn stop(dir: &Path, reason: &str) -> Result<()> {
    end(dir, reason, false).await
}

/// Like [`stop`], for a VM whose disk is about to be reverted or removed: QEMU is quit at once, as
/// a guest shutdown would only tidy a file system that nobody reads again.
pub async fn discard(dir: &Path, reason: &str) -> Result<()> {
    end(dir, reason, true).await
}

async fn end(dir: &Path, reason: &str, discard: bool) -> Result<()> {
    if !is_running(dir) {
        return Ok(());
    }
    let status = supervisor::request(dir, &supervisor::protocol::ClientRequest::Status)
        .await
        .ok();
    let _ = supervisor::request(
        dir,
        &supervisor::protocol::ClientRequest::Shutdown {
            reason: reason.to_string(),
            discard,
        },
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while is_running(dir) {
        if tokio::time::Instant::now() > deadline {
            // The supervisor did not finish in time: end it (QEMU dies with it).
            if let Some(supervisor::protocol::ClientReply::Status(status)) = &status {
                // SAFETY: kill takes no pointers.
                unsafe { libc::kill(status.supervisor_pid as i32, libc::SIGKILL) };
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
