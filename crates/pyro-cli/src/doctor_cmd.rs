//! `pyro doctor`.

use std::process::ExitCode;

use clap::Args;
use pyro_core::doctor;

use crate::output::{self, EXIT_FAILURE};

#[derive(Args)]
pub struct DoctorArgs {
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Report this environment's daily-loop readiness: warm, cold or stale (with the fix)
    #[arg(long)]
    environment: Option<String>,
}

pub fn main(args: DoctorArgs) -> ExitCode {
    let dirs = match output::dirs(args.json, EXIT_FAILURE) {
        Ok(dirs) => dirs,
        Err(code) => return code,
    };
    let report = match doctor::report(&dirs, args.environment.as_deref()) {
        Ok(report) => report,
        Err(err) => return output::fail(&err, args.json, EXIT_FAILURE),
    };
    if args.json {
        // Each fix as the core names it, with the command that takes it.
        let mut json = serde_json::to_value(&report).unwrap_or_default();
        if let Some(readiness) = json["readiness"].as_array_mut() {
            for (r, fix) in readiness.iter_mut().zip(&report.readiness) {
                if let Some(next) = &fix.fix {
                    r["fix"] = crate::next_step::json(next);
                }
            }
        }
        output::print_json(&json);
    } else {
        let mut text = format!(
            "pyro {} on {} {} (kernel {})\n",
            report.pyro_version,
            report.platform.os,
            report.platform.arch,
            report.platform.kernel_release
        );
        text.push_str(&format!(
            "QEMU:         {}\n",
            match (&report.qemu.binary, &report.qemu.version) {
                (Some(bin), Some(version)) => format!("{bin} (version {version})"),
                (Some(bin), None) => format!("{bin} (version unknown)"),
                (None, _) => format!("missing: install the `{}` package", report.qemu.package),
            }
        ));
        text.push_str(&format!(
            "KVM:          {} ({})\n",
            serde_json::to_value(report.kvm.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            report.kvm.reason
        ));
        text.push_str(&format!(
            "Accelerator:  {} ({})\n",
            report.accelerator.accelerator.as_str(),
            report.accelerator.reason
        ));
        for tool in &report.tools {
            text.push_str(&format!(
                "Tool:         {:<20} {}\n",
                tool.binary,
                tool.path
                    .clone()
                    .unwrap_or_else(|| format!("MISSING (apt-get install {})", tool.package))
            ));
        }
        text.push_str(&format!(
            "Guest agent:  {}\n",
            report.agent.path.clone().unwrap_or_else(|| report
                .agent
                .error
                .clone()
                .unwrap_or_default())
        ));
        text.push_str(&format!(
            "Cache dir:    {}\nState dir:    {}\nMirror:       {}\n",
            report.cache_dir, report.state_dir, report.debian_mirror
        ));
        for env in &report.environments {
            let readiness = report.readiness.iter().find(|r| r.environment == env.name);
            let daily = readiness
                .map(|r| format!(", {}", r.state))
                .unwrap_or_default();
            text.push_str(&format!(
                "Environment:  {:<16} {}{daily}\n",
                env.name,
                env.state.replace('_', " ")
            ));
        }
        for r in &report.readiness {
            text.push_str(&format!(
                "Daily loop:   {:<16} {}: {}\n",
                r.environment, r.state, r.reason
            ));
            if let Some(fix) = &r.fix {
                text.push_str(&format!(
                    "              fix: {}\n",
                    crate::next_step::advice(fix)
                ));
            }
        }
        let auto = &report.auto_prepare;
        text.push_str(&match (auto.enabled, auto.in_progress.len()) {
            (false, _) => format!(
                "Auto-prepare: off ({}=1)\n",
                pyro_core::auto_prepare::DISABLE_ENV
            ),
            (true, 0) => {
                "Auto-prepare: on (a cold boot makes its missing template in the background)\n"
                    .to_string()
            }
            (true, n) => format!("Auto-prepare: on, making {n} template(s) now\n"),
        });
        for pool in &report.pools {
            text.push_str(&format!(
                "Pool: {} ({} vCPU, {} MiB), {} of {} VMs ready\n",
                pool.environment, pool.vcpu_count, pool.mem_mib, pool.ready, pool.size
            ));
        }
        if report.issues.is_empty() {
            text.push_str("No issues found.\n");
        } else {
            text.push_str("Notes:\n");
            for issue in &report.issues {
                text.push_str(&format!("  - {issue}\n"));
            }
        }
        output::write_stdout(text.as_bytes());
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}
