//! `pyro doctor`: what a newcomer needs to know (and fix) about the host.

use serde::Serialize;

use crate::environment::{self, EnvironmentInfo};
use crate::host::accel::{self, AcceleratorChoice};
use crate::host::{mirror, tools};
use crate::initramfs::Agent;
use crate::{engine, Dirs};

#[derive(Debug, Clone, Serialize)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub kernel_release: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolStatus {
    pub binary: String,
    pub package: String,
    pub purpose: String,
    pub found: bool,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QemuStatus {
    pub binary: Option<String>,
    pub version: Option<String>,
    pub package: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    pub path: Option<String>,
    pub sha256: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub ok: bool,
    pub pyro_version: String,
    pub platform: Platform,
    pub qemu: QemuStatus,
    pub kvm: accel::KvmReport,
    pub accelerator: AcceleratorChoice,
    pub tsc_khz: Option<u64>,
    pub tools: Vec<ToolStatus>,
    pub agent: AgentStatus,
    pub debian_mirror: String,
    pub cache_dir: String,
    pub state_dir: String,
    pub environments: Vec<EnvironmentInfo>,
    /// Daily-loop readiness (`warm`, `cold`, `stale`) of each built environment, or of the one asked for.
    pub readiness: Vec<crate::daily::EnvironmentReadiness>,
    /// Whether cold boots make their missing templates in the background, and which it makes now.
    pub auto_prepare: crate::auto_prepare::Status,
    /// The pools of warm VMs `prepare --pool` keeps, with how many are ready.
    pub pools: Vec<crate::pool::PoolStatus>,
    /// What is wrong, each with what to do about it.
    pub issues: Vec<String>,
}

/// The report; with `environment`, readiness is reported for that environment (built or not).
pub fn report(dirs: &Dirs, environment: Option<&str>) -> crate::Result<DoctorReport> {
    if let Some(name) = environment {
        crate::catalog::lookup(name)?;
    }
    let mut issues = Vec::new();
    let tools: Vec<ToolStatus> = tools::REQUIRED
        .iter()
        .map(|tool| {
            let path = tool.locate();
            if path.is_none() {
                issues.push(format!(
                    "`{}` is missing ({}): install the Debian package `{}`",
                    tool.binary, tool.purpose, tool.package
                ));
            }
            ToolStatus {
                binary: tool.binary.into(),
                package: tool.package.into(),
                purpose: tool.purpose.into(),
                found: path.is_some(),
                path: path.map(|p| p.display().to_string()),
            }
        })
        .collect();
    let qemu_binary = tools::QEMU.locate();
    let qemu_version = qemu_binary
        .as_deref()
        .and_then(|b| engine::qemu_version(b).ok());
    let accelerator = accel::choose();
    if accelerator.accelerator == accel::Accelerator::Tcg {
        issues.push(format!(
            "VMs run under TCG (software emulation, several times slower than KVM): {}",
            accelerator.kvm.reason
        ));
    }
    let tsc_khz = accel::tsc_khz();
    if tsc_khz.is_none() {
        issues.push("the host TSC frequency is unknown; TCG guests may hang calibrating it".into());
    }
    let agent = match Agent::locate(dirs) {
        Ok(agent) => AgentStatus {
            path: Some(agent.path.display().to_string()),
            sha256: Some(agent.sha256),
            error: None,
        },
        Err(err) => {
            issues.push(format!(
                "{err}{}",
                err.hint().map(|h| format!(" ({h})")).unwrap_or_default()
            ));
            AgentStatus {
                path: None,
                sha256: None,
                error: Some(err.to_string()),
            }
        }
    };
    let environments = environment::list(dirs);
    if !environments.iter().any(|e| e.installed) {
        issues.push(format!(
            "no environment is built yet: the first run builds {}, or pull it ahead of time",
            crate::catalog::DEFAULT_ENVIRONMENT
        ));
    }
    let names: Vec<String> = match environment {
        Some(name) => vec![name.to_string()],
        None => environments
            .iter()
            .filter(|e| e.installed)
            .map(|e| e.name.clone())
            .collect(),
    };
    let readiness: Vec<crate::daily::EnvironmentReadiness> = names
        .iter()
        .filter_map(|n| crate::daily::readiness(dirs, n).ok())
        .collect();
    for r in readiness
        .iter()
        .filter(|r| r.state != crate::vocab::Readiness::Warm)
    {
        issues.push(format!("{} is {}: {}", r.environment, r.state, r.reason));
    }
    let blocking = tools.iter().any(|t| !t.found) || agent.error.is_some();
    Ok(DoctorReport {
        ok: !blocking,
        pyro_version: crate::VERSION.into(),
        platform: platform(),
        qemu: QemuStatus {
            binary: qemu_binary.map(|p| p.display().to_string()),
            version: qemu_version,
            package: tools::QEMU.package.into(),
        },
        kvm: accelerator.kvm.clone(),
        accelerator,
        tsc_khz,
        tools,
        agent,
        debian_mirror: mirror::debian_mirror(),
        cache_dir: dirs.cache().display().to_string(),
        state_dir: dirs.state().display().to_string(),
        environments,
        readiness,
        auto_prepare: crate::auto_prepare::status(dirs),
        pools: crate::pool::status(dirs),
        issues,
    })
}

fn platform() -> Platform {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Platform {
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        kernel_release: release.trim().into(),
    }
}
