//! Warm without asking: when a VM boots cold because its template is missing or stale (not because
//! the caller asked for a cold boot), a detached, low-priority job (`pyro __auto-prepare`) makes that
//! template, so the next start of the same environment and shape is warm. At most one job runs per
//! template; `PYRO_NO_AUTO_PREPARE=1` turns it off.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::environment;
use crate::fsutil::FileLock;
use crate::host::accel;
use crate::initramfs::Agent;
use crate::template::{self, TemplateKey};
use crate::{initramfs, Dirs, Error, ErrorKind, Result};

/// Set to `1`, pyro never starts a template job on its own.
pub const DISABLE_ENV: &str = "PYRO_NO_AUTO_PREPARE";

/// Whether cold boots start template jobs.
pub fn enabled() -> bool {
    std::env::var(DISABLE_ENV).map_or(true, |v| v.trim() != "1")
}

/// The shape a job makes a template for: everything of the key that is not derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub environment: String,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub network: bool,
    pub disk_gib: u32,
}

impl Shape {
    fn of(key: &TemplateKey) -> Shape {
        Shape {
            environment: key.environment.clone(),
            vcpu_count: key.vcpu_count,
            mem_mib: key.mem_mib,
            network: key.network,
            disk_gib: key.disk_gib,
        }
    }
}

/// What doctor reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub enabled: bool,
    /// Templates being made in the background now.
    pub in_progress: Vec<String>,
}

/// The lock a job holds while it makes the template `id` (and its log beside it).
fn job_files(dirs: &Dirs, id: &str) -> (PathBuf, PathBuf) {
    let root = template::templates_dir(dirs);
    (
        root.join(format!(".{id}.auto.lock")),
        root.join(format!(".{id}.auto.log")),
    )
}

/// Starts a job that makes the template `key` unless auto-prepare is off or one already runs for
/// it. Returns whether one runs now.
pub(crate) fn spawn(dirs: &Dirs, key: &TemplateKey) -> Result<bool> {
    if !enabled() {
        return Ok(false);
    }
    crate::fsutil::create_dir_all(&template::templates_dir(dirs))?;
    let (lock, log) = job_files(dirs, &key.id());
    if FileLock::try_acquire(&lock)?.is_none() {
        return Ok(true);
    }
    let shape = Shape::of(key);
    spawn_detached(
        &[
            "__auto-prepare".to_string(),
            "--environment".to_string(),
            shape.environment,
            "--vcpu-count".to_string(),
            shape.vcpu_count.to_string(),
            "--mem-mib".to_string(),
            shape.mem_mib.to_string(),
            "--disk-gib".to_string(),
            shape.disk_gib.to_string(),
            "--network".to_string(),
            if shape.network { "on" } else { "off" }.to_string(),
        ],
        &log,
    )?;
    Ok(true)
}

/// Starts `pyro ARGS…` detached (its own session, lowest CPU priority), its output in `log`.
pub(crate) fn spawn_detached(args: &[String], log: &std::path::Path) -> Result<()> {
    let out = std::fs::File::create(log).map_err(|e| Error::io("create", log, e))?;
    let err = out.try_clone().map_err(|e| Error::io("create", log, e))?;
    let mut command = Command::new(crate::supervisor::pyro_program()?);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid and setpriority are async-signal-safe and take no pointers.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            // Detached: no terminal's Ctrl-C reaches it, and it outlives whoever started it.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start a background job: {e}")))?;
    // Reaped here by a long-lived process (an MCP server); by init once a short-lived one is gone.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// The lowest CPU priority and the idle I/O class: a background job's work yields to everything
/// else.
pub(crate) fn lowest_priority() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    // SAFETY: plain system calls with integer arguments.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            IOPRIO_CLASS_IDLE << 13,
        );
    }
}

/// Entry point of `pyro __auto-prepare`: makes the template of `shape` at low priority, unless it is
/// warm already or another job makes it. Returns the process exit code.
pub fn main(dirs: &Dirs, shape: &Shape) -> i32 {
    background_job("pyro __auto-prepare", make(dirs, shape))
}

/// Runs a detached job's work at the lowest priority on a runtime of its own; returns the process
/// exit code (its error, if any, goes to its log).
pub(crate) fn background_job(
    name: &str,
    work: impl std::future::Future<Output = Result<()>>,
) -> i32 {
    lowest_priority();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start a runtime: {e}")))
        .and_then(|runtime| runtime.block_on(work));
    match outcome {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("{name}: {err}");
            1
        }
    }
}

async fn make(dirs: &Dirs, shape: &Shape) -> Result<()> {
    let Some(env) = environment::installed_by_name(dirs, &shape.environment)? else {
        return Ok(());
    };
    let agent = Agent::locate(dirs)?;
    let key = template::key_for(
        dirs,
        &env,
        &agent,
        accel::choose().accelerator,
        shape.vcpu_count,
        shape.mem_mib,
        shape.network,
        shape.disk_gib,
    )?;
    let (lock, _) = job_files(dirs, &key.id());
    let Some(_held) = FileLock::try_acquire(&lock)? else {
        return Ok(());
    };
    if let template::Readiness::Warm(_) = template::check(dirs, &key) {
        return Ok(());
    }
    let initramfs = initramfs::ensure(dirs, &env, &agent)?;
    template::prepare(
        dirs,
        &env,
        &initramfs,
        &key,
        false,
        &crate::progress::Silent,
    )
    .await
    .map(drop)
}

/// Whether auto-prepare is on, and the templates its jobs are making now.
pub fn status(dirs: &Dirs) -> Status {
    let mut in_progress = Vec::new();
    let root = template::templates_dir(dirs);
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".auto.lock"))
        else {
            continue;
        };
        if matches!(FileLock::try_acquire(&entry.path()), Ok(None)) {
            in_progress.push(id.to_string());
        }
    }
    in_progress.sort();
    Status {
        enabled: enabled(),
        in_progress,
    }
}
