//! The daily loop: `pyro prepare` makes warm templates, and `doctor` reports each environment's
//! readiness (`warm`, `cold` or `stale`, with the reason and the step that fixes it).

use serde::Serialize;

use crate::host::accel;
use crate::initramfs::{self, Agent};
use crate::limits::{self, DEFAULT_DISK_GIB};
use crate::template::{self, TemplateKey};
use crate::vocab::Readiness;
use crate::{catalog, environment, Dirs, Next, Progress, Result};

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub environments: Vec<String>,
    pub vcpu_count: u8,
    pub mem_mib: u32,
    /// Make the templates again even when they are warm.
    pub force: bool,
    /// Keep this many VMs of the shape ready for `run` (see [`crate::pool`]); `None` leaves the
    /// pools as they are.
    pub pool: Option<u8>,
}

impl Default for PrepareOptions {
    fn default() -> PrepareOptions {
        PrepareOptions {
            environments: vec![catalog::DEFAULT_ENVIRONMENT.to_string()],
            vcpu_count: limits::DEFAULT_VCPU_COUNT,
            mem_mib: limits::DEFAULT_MEM_MIB,
            force: false,
            pool: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PrepareResult {
    pub templates: Vec<template::Prepared>,
    /// The pools of warm VMs, when `--pool` was given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<crate::pool::PoolStatus>,
}

/// The template keys of one shape, network off and on.
fn keys(
    dirs: &Dirs,
    env: &environment::Installed,
    agent: &Agent,
    vcpu_count: u8,
    mem_mib: u32,
) -> Result<Vec<TemplateKey>> {
    let accelerator = accel::choose().accelerator;
    [false, true]
        .into_iter()
        .map(|network| {
            template::key_for(
                dirs,
                env,
                agent,
                accelerator,
                vcpu_count,
                mem_mib,
                network,
                DEFAULT_DISK_GIB,
            )
        })
        .collect()
}

/// Builds each environment if needed and makes its warm templates (network off and on).
pub async fn prepare(
    dirs: &Dirs,
    options: &PrepareOptions,
    progress: &dyn Progress,
) -> Result<PrepareResult> {
    let vm_options = crate::vm::VmOptions {
        environment: String::new(),
        vcpu_count: options.vcpu_count,
        mem_mib: options.mem_mib,
        network: crate::network::Network::off(),
        disk_gib: DEFAULT_DISK_GIB,
        ephemeral: true,
        idle_timeout_seconds: None,
        cold: true,
        suspend_when_idle: false,
        resume: None,
    };
    vm_options.validate()?;
    if let Some(size) = options.pool {
        limits::check("pool", size, &limits::POOL_SIZE)?;
    }
    for name in &options.environments {
        catalog::lookup(name)?;
    }
    crate::host::tools::QEMU.find()?;
    let agent = Agent::locate(dirs)?;
    let mut templates = Vec::new();
    for name in &options.environments {
        let env = tokio::task::block_in_place(|| environment::pull(dirs, name, false, progress))?;
        let initramfs = initramfs::ensure(dirs, &env, &agent)?;
        for key in keys(dirs, &env, &agent, options.vcpu_count, options.mem_mib)? {
            templates.push(
                template::prepare(dirs, &env, &initramfs, &key, options.force, progress).await?,
            );
        }
    }
    let mut pools = Vec::new();
    if let Some(size) = options.pool {
        for name in &options.environments {
            let spec = crate::pool::PoolSpec {
                environment: name.clone(),
                vcpu_count: options.vcpu_count,
                mem_mib: options.mem_mib,
                size,
            };
            pools.push(crate::pool::fill(dirs, &spec, progress).await?);
        }
    }
    progress.finish();
    Ok(PrepareResult { templates, pools })
}

#[derive(Debug, Clone, Serialize)]
pub struct ShapeReadiness {
    pub shape: String,
    pub state: Readiness,
    pub reason: String,
    pub template_id: Option<String>,
}

/// How ready one environment is for a fast daily loop.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentReadiness {
    pub environment: String,
    /// Warm when every default template is valid.
    pub state: Readiness,
    pub reason: String,
    /// What makes it warm, when it is not.
    pub fix: Option<Next>,
    pub templates: Vec<ShapeReadiness>,
}

/// The readiness of `name` for the default shape (1 vCPU, 1024 MiB), network off and on.
pub fn readiness(dirs: &Dirs, name: &str) -> Result<EnvironmentReadiness> {
    catalog::lookup(name)?;
    let prepare = |force: bool| Next::Prepare {
        environment: name.to_string(),
        vcpu_count: limits::DEFAULT_VCPU_COUNT,
        mem_mib: limits::DEFAULT_MEM_MIB,
        force,
    };
    let cold = |reason: String, fix: Next| EnvironmentReadiness {
        environment: name.to_string(),
        state: Readiness::Cold,
        reason,
        fix: Some(fix),
        templates: Vec::new(),
    };
    let Some(env) = environment::installed_by_name(dirs, name)? else {
        return Ok(cold(format!("{name} is not built"), prepare(false)));
    };
    let agent = match Agent::locate(dirs) {
        Ok(agent) => agent,
        Err(err) => return Ok(cold(err.to_string(), Next::Reinstall)),
    };
    let mut templates = Vec::new();
    for key in keys(
        dirs,
        &env,
        &agent,
        limits::DEFAULT_VCPU_COUNT,
        limits::DEFAULT_MEM_MIB,
    )? {
        let (state, reason, template_id) = match template::check(dirs, &key) {
            template::Readiness::Warm(t) => (
                Readiness::Warm,
                format!("prepared {}", age(t.manifest.created_at_unix_ms)),
                Some(key.id()),
            ),
            template::Readiness::Stale(why) => (Readiness::Stale, why, Some(key.id())),
            template::Readiness::Cold(why) => (Readiness::Cold, why, None),
        };
        templates.push(ShapeReadiness {
            shape: key.shape(),
            state,
            reason,
            template_id,
        });
    }
    let worst = [Readiness::Stale, Readiness::Cold]
        .into_iter()
        .find(|s| templates.iter().any(|t| t.state == *s));
    let (state, reason, fix) = match worst {
        None => (
            Readiness::Warm,
            "every default template is valid".to_string(),
            None,
        ),
        Some(state) => {
            let first = templates
                .iter()
                .find(|t| t.state == state)
                .map(|t| t.reason.clone())
                .unwrap_or_default();
            (state, first, Some(prepare(state == Readiness::Stale)))
        }
    };
    Ok(EnvironmentReadiness {
        environment: name.to_string(),
        state,
        reason,
        fix,
        templates,
    })
}

fn age(created_at_unix_ms: u64) -> String {
    let seconds = crate::vm::now_unix_ms().saturating_sub(created_at_unix_ms) / 1000;
    match seconds {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}
