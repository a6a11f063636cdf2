//! `pyro run`: create, boot, exec, collect, delete, always cleaning up.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use pyro_proto::{Command, ExecRequest, ExecResult, OutputStream};
use serde::Serialize;

use crate::host::accel::Accelerator;
use crate::network::Network;
use crate::vm::{self, OutputSink, VmOptions};
use crate::vocab::BootMode;
use crate::{limits, Dirs, Error, ErrorKind, Progress, Result};

/// Bytes of each output stream kept in a result (head and tail).
pub const DEFAULT_OUTPUT_CAP_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub environment: String,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    pub timeout_seconds: u64,
    pub network: Network,
    /// The command's argv, run directly (no shell)...
    pub argv: Vec<String>,
    /// ...or, when set, a string run by `/bin/sh -lc` (`argv` is then ignored).
    pub shell_command: Option<String>,
    /// Added to the command's environment.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the VM (absolute).
    pub cwd: String,
    pub output_cap_bytes: u64,
    /// Boot from the kernel even when a warm template exists.
    pub cold: bool,
}

impl RunOptions {
    pub fn new(environment: &str, argv: Vec<String>) -> RunOptions {
        RunOptions {
            environment: environment.to_string(),
            vcpu_count: limits::DEFAULT_VCPU_COUNT,
            mem_mib: limits::DEFAULT_MEM_MIB,
            timeout_seconds: limits::DEFAULT_TIMEOUT_SECONDS,
            network: Network::off(),
            argv,
            shell_command: None,
            env: BTreeMap::new(),
            cwd: "/".into(),
            output_cap_bytes: DEFAULT_OUTPUT_CAP_BYTES,
            cold: false,
        }
    }

    fn vm_options(&self) -> VmOptions {
        VmOptions {
            environment: self.environment.clone(),
            vcpu_count: self.vcpu_count,
            mem_mib: self.mem_mib,
            network: self.network.clone(),
            disk_gib: limits::DEFAULT_DISK_GIB,
            ephemeral: true,
            idle_timeout_seconds: None,
            cold: self.cold,
            suspend_when_idle: false,
            resume: None,
        }
    }
}

/// A VM from the pool when one of this shape is ready (see [`crate::pool`]), else a new one.
async fn boot_or_claim(
    dirs: &Dirs,
    id: &str,
    dir: &std::path::Path,
    options: &VmOptions,
    prepared: vm::Prepared,
) -> Result<vm::Vm> {
    if crate::pool::fits(options) {
        if let Some(claimed) =
            crate::pool::claim(dirs, id, dir, options, prepared.clone(), None).await
        {
            return Ok(claimed);
        }
    }
    vm::boot(id, dir, options, prepared).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Cleanup {
    pub vm_id: String,
    pub deleted: bool,
    pub reason: String,
}

/// The result of `pyro run` (the CLI's `--json` and MCP's `vm_run` share it).
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub vm_id: String,
    pub environment: String,
    pub command: String,
    /// The argv, when the command was one (not a shell string).
    pub argv: Option<Vec<String>>,
    /// `exit_code`, `signal`, `stdout`, `stderr`, `*_truncated`, `*_bytes`, `timed_out`, `duration_ms`
    /// (measured in the guest).
    #[serde(flatten)]
    pub result: ExecResult,
    pub execution_mode: &'static str,
    pub accelerator: Accelerator,
    pub accelerator_reason: String,
    pub boot_mode: BootMode,
    pub boot_mode_reason: String,
    pub boot_ms: u64,
    pub exec_ms: u64,
    pub total_ms: u64,
    /// Where the time went: prepare, disk, spawn, restore, activate, exec, teardown.
    pub phases_ms: crate::vm::Phases,
    pub kernel_release: String,
    pub cleanup: Cleanup,
}

/// Runs `options.argv` in a fresh VM. `on_output` gets output as it is produced (for a terminal);
/// when `cancel` completes first (Ctrl-C) the VM is torn down and the error kind is `interrupted`.
pub async fn run(
    dirs: &Dirs,
    options: &RunOptions,
    progress: &dyn Progress,
    mut on_output: Option<OutputSink<'_>>,
    cancel: impl Future<Output = ()>,
) -> Result<RunResult> {
    if options
        .shell_command
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        return Err(Error::invalid("command must not be empty"));
    }
    if options.shell_command.is_none() && options.argv.is_empty() {
        return Err(Error::invalid("a command is required")
            .with_hint("name the command to run and its arguments, e.g. git --version"));
    }
    limits::check(
        "timeout_seconds",
        options.timeout_seconds,
        &limits::TIMEOUT_SECONDS,
    )?;
    validate_env(&options.env)?;
    if !options.cwd.starts_with('/') {
        return Err(Error::invalid(format!(
            "cwd must be an absolute path inside the VM, got '{}'",
            options.cwd
        )));
    }
    let started = Instant::now();
    let vm_options = options.vm_options();
    let prepared = tokio::task::block_in_place(|| vm::prepare(dirs, &vm_options, progress))?;
    progress.finish();
    tokio::pin!(cancel);

    let (id, dir) = vm::allocate(dirs)?;
    let booted = tokio::select! {
        booted = boot_or_claim(dirs, &id, &dir, &vm_options, prepared) => booted,
        _ = &mut cancel => {
            // The supervisor sees this process's channel close and tears the VM down; a pooled VM
            // caught between its claim and its take-over has no owner yet, and is stopped here.
            let _ = vm::discard(&dir, "interrupted").await;
            vm::wait_removed(&dir, Duration::from_secs(20)).await;
            return Err(interrupted());
        }
    };
    let mut vm = booted?;
    let kernel_release = vm.ready.agent.kernel_release.clone();

    let request = ExecRequest {
        command: match &options.shell_command {
            Some(script) => Command::Shell(script.clone()),
            None => Command::Argv(options.argv.clone()),
        },
        cwd: options.cwd.clone(),
        env: options.env.clone(),
        timeout_ms: options.timeout_seconds.saturating_mul(1000),
        output_cap_bytes: options.output_cap_bytes,
        stream_output: on_output.is_some(),
    };
    let exec_started = Instant::now();
    let mut ignore = |_: OutputStream, _: &[u8]| {};
    let sink: OutputSink<'_> = match on_output.as_mut() {
        Some(sink) => *sink,
        None => &mut ignore,
    };
    let outcome = tokio::select! {
        result = vm.exec(request, sink) => Some(result),
        _ = &mut cancel => None,
    };
    let exec_ms = exec_started.elapsed().as_millis() as u64;
    let result = match outcome {
        None => {
            vm.shutdown("interrupted").await.ok();
            return Err(interrupted());
        }
        Some(Err(err)) => {
            let reason = vm.stop_reason(Duration::from_secs(5)).await;
            vm::wait_removed(&dir, Duration::from_secs(20)).await;
            let message = reason
                .unwrap_or_else(|| format!("the VM's supervisor exited unexpectedly ({err})"));
            return Err(Error::new(ErrorKind::Engine, message));
        }
        Some(Ok(result)) => result,
    };
    let mut facts = vm.facts.clone();
    // The result does not wait for the VM to go: its supervisor powers it off and removes it.
    let teardown = Instant::now();
    vm.release("post_exec_cleanup").await;
    facts.phases.exec = Some(exec_ms);
    facts.phases.teardown = Some(teardown.elapsed().as_millis() as u64);
    Ok(RunResult {
        vm_id: id.clone(),
        environment: options.environment.clone(),
        command: match &options.shell_command {
            Some(script) => script.clone(),
            None => shlex::try_join(options.argv.iter().map(String::as_str))
                .unwrap_or_else(|_| options.argv.join(" ")),
        },
        argv: options
            .shell_command
            .is_none()
            .then(|| options.argv.clone()),
        result,
        execution_mode: "guest",
        accelerator: facts.accelerator,
        accelerator_reason: facts.accelerator_reason,
        boot_mode: facts.boot_mode,
        boot_mode_reason: facts.boot_mode_reason,
        boot_ms: facts.boot_ms,
        exec_ms,
        total_ms: started.elapsed().as_millis() as u64,
        phases_ms: facts.phases,
        kernel_release,
        cleanup: Cleanup {
            vm_id: id,
            deleted: true,
            reason: "post_exec_cleanup".into(),
        },
    })
}

fn interrupted() -> Error {
    Error::new(ErrorKind::Interrupted, "interrupted; the VM was torn down")
}

/// Environment variable names a shell accepts: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<()> {
    for key in env.keys() {
        let mut chars = key.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::invalid(format!(
                "invalid environment variable name '{key}': use letters, digits and '_', not starting with a digit"
            )));
        }
    }
    Ok(())
}
