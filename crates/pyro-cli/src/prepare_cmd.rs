//! `pyro prepare`: warm the daily loop.

use std::process::ExitCode;

use clap::Args;
use pyro_core::daily::{self, PrepareOptions};
use pyro_core::limits;

use crate::output::{self, EXIT_FAILURE};
use crate::progress::StderrProgress;

#[derive(Args)]
#[command(
    after_help = "Builds each environment if needed, boots it once to agent-ready and saves a memory snapshot\n\
(network off and on). Later `run`, `workspace create`, `reset` and `start` restore from it in a fraction of a\n\
cold boot. Idempotent: a warm environment is left as it is unless --force."
)]
pub struct PrepareArgs {
    /// Environments to prepare (default debian:12)
    environments: Vec<String>,
    /// Prepare for VMs with this many vCPUs (default 1)
    #[arg(long, default_value_t = limits::DEFAULT_VCPU_COUNT, value_parser = clap::value_parser!(u8).range(limits::as_i64(&limits::VCPU_COUNT)))]
    vcpu_count: u8,
    /// Prepare for VMs with this much memory in MiB (default 1024)
    #[arg(long, default_value_t = limits::DEFAULT_MEM_MIB, value_parser = clap::value_parser!(u32).range(limits::as_i64(&limits::MEM_MIB)))]
    mem_mib: u32,
    /// Make the templates again even when they are warm
    #[arg(long)]
    force: bool,
    /// Keep N VMs of `run`'s shape restored, activated and warmed up, so a `run` only claims one
    /// (each costs its memory while it waits; 0 ends them)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(limits::as_i64(&limits::POOL_SIZE)))]
    pool: Option<u8>,
    #[arg(long)]
    json: bool,
}

pub fn main(args: PrepareArgs) -> ExitCode {
    let dirs = match output::dirs(args.json, EXIT_FAILURE) {
        Ok(dirs) => dirs,
        Err(code) => return code,
    };
    let mut options = PrepareOptions {
        vcpu_count: args.vcpu_count,
        mem_mib: args.mem_mib,
        force: args.force,
        pool: args.pool,
        ..PrepareOptions::default()
    };
    if !args.environments.is_empty() {
        options.environments = args.environments;
    }
    let progress = StderrProgress::new("prepare");
    match output::runtime().block_on(daily::prepare(&dirs, &options, &progress)) {
        Ok(result) => {
            if args.json {
                output::print_json(&result);
            } else {
                let mut text = String::new();
                for t in &result.templates {
                    text.push_str(&format!(
                        "{} ({}): {} template {} (boot {} ms, snapshot {} ms)\n",
                        t.environment,
                        t.shape,
                        t.action,
                        t.template_id,
                        t.manifest.boot_ms,
                        t.manifest.snapshot_ms
                    ));
                }
                for p in &result.pools {
                    text.push_str(&format!(
                        "{} ({} vCPU, {} MiB): pool of {} VMs, {} ready\n",
                        p.environment, p.vcpu_count, p.mem_mib, p.size, p.ready
                    ));
                }
                output::write_stderr(text.as_bytes());
            }
            ExitCode::SUCCESS
        }
        Err(err) => output::fail(&err, args.json, EXIT_FAILURE),
    }
}
