//! `pyro env list|pull|inspect|prune`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use pyro_core::environment::{self, EnvironmentInfo};

use crate::output::{self, EXIT_FAILURE};
use crate::progress::StderrProgress;

#[derive(Subcommand)]
pub enum EnvCommand {
    /// List the catalog and what is built
    List(JsonFlag),
    /// Build an environment locally from Debian packages (kernel, root filesystem, base image)
    Pull {
        /// Environment name, e.g. debian:12
        name: String,
        /// Rebuild even if a current build is installed
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one environment's details and build manifest
    Inspect {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove interrupted, stale and unknown builds (environments, initramfs images, warm templates)
    Prune(JsonFlag),
}

#[derive(Args)]
pub struct JsonFlag {
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
}

pub fn main(command: EnvCommand) -> ExitCode {
    let json = match &command {
        EnvCommand::List(f) | EnvCommand::Prune(f) => f.json,
        EnvCommand::Pull { json, .. } | EnvCommand::Inspect { json, .. } => json.json,
    };
    let dirs = match output::dirs(json, EXIT_FAILURE) {
        Ok(dirs) => dirs,
        Err(code) => return code,
    };
    let result = match command {
        EnvCommand::List(_) => {
            let list = environment::list(&dirs);
            if json {
                output::print_json(&serde_json::json!({ "environments": list }));
            } else {
                let mut text = String::new();
                for env in &list {
                    text.push_str(&format!(
                        "{:<16} {:<14} {}\n",
                        env.name,
                        env.state.replace('_', " "),
                        env.description
                    ));
                }
                output::write_stdout(text.as_bytes());
            }
            Ok(())
        }
        EnvCommand::Pull { name, force, .. } => {
            let progress = StderrProgress::new("pull");
            environment::pull(&dirs, &name, force, &progress).and_then(|_| {
                let info = environment::inspect(&dirs, &name)?;
                show(&info, json);
                Ok(())
            })
        }
        EnvCommand::Inspect { name, .. } => {
            environment::inspect(&dirs, &name).map(|info| show(&info, json))
        }
        EnvCommand::Prune(_) => environment::prune(&dirs).map(|report| {
            if json {
                output::print_json(&report);
            } else {
                let mut text = format!(
                    "Deleted {} cache entr{}.\n",
                    report.count,
                    if report.count == 1 { "y" } else { "ies" }
                );
                for name in report
                    .deleted_environment_dirs
                    .iter()
                    .chain(&report.deleted_initramfs)
                    .chain(&report.deleted_templates)
                {
                    text.push_str(&format!("- {name}\n"));
                }
                output::write_stdout(text.as_bytes());
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => output::fail(&err, json, EXIT_FAILURE),
    }
}

fn show(info: &EnvironmentInfo, json: bool) {
    if json {
        return output::print_json(info);
    }
    let mut text = format!(
        "Environment: {}\nDescription: {}\nDistribution: {} {}\nPackages: {}\nState: {}\nInstall dir: {}\n",
        info.name,
        info.description,
        info.distribution,
        info.distribution_version,
        if info.default_packages.is_empty() { "(essential packages only)".to_string() } else { info.default_packages.join(", ") },
        info.state.replace('_', " "),
        info.install_dir,
    );
    if let Some(detail) = &info.state_detail {
        text.push_str(&format!("Detail: {detail}\n"));
    }
    if let Some(m) = &info.manifest {
        let image = m.artifacts.iter().find(|a| a.path == "rootfs.ext4");
        text.push_str(&format!(
            "Kernel: {}\nMirror: {}\nDigest: {}\nBase image: {} MiB\nBuilt in: {:.1} s by pyro {}\n",
            m.kernel_release,
            m.mirror,
            m.digest,
            image.map(|a| a.size_bytes >> 20).unwrap_or(0),
            m.build_seconds,
            m.pyro_version
        ));
    }
    output::write_stdout(text.as_bytes());
}
