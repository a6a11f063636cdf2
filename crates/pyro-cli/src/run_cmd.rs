//! `pyro run`.

use std::process::ExitCode;

use clap::Args;
use pyro_core::limits;
use pyro_core::run::{self, RunOptions};
use pyro_core::vm::OutputSink;
use pyro_core::OutputStream;

use crate::network_args::NetworkArgs;
use crate::output::{self, EXIT_RUN_FAILURE};
use crate::progress::StderrProgress;

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pyro run debian:12 -- git --version\n  pyro run debian:12 --json -- sh -c 'echo $HOME'\n  pyro run debian:12-build --network --timeout-seconds 120 -- curl -sI https://deb.debian.org\n\n\
The command's words run directly, without a shell; use `sh -c '...'` for shell syntax.\n\
pyro exits with the command's exit code (124 on timeout); 125 means pyro itself failed."
)]
pub struct RunArgs {
    /// Environment to boot (see `pyro env list`)
    environment: String,
    /// Virtual CPUs
    #[arg(long, default_value_t = limits::DEFAULT_VCPU_COUNT, value_parser = clap::value_parser!(u8).range(limits::as_i64(&limits::VCPU_COUNT)))]
    vcpu_count: u8,
    /// Guest memory in MiB
    #[arg(long, default_value_t = limits::DEFAULT_MEM_MIB, value_parser = clap::value_parser!(u32).range(limits::as_i64(&limits::MEM_MIB)))]
    mem_mib: u32,
    /// Kill the command (and everything it started) after this many seconds; exit code 124
    #[arg(long, default_value_t = limits::DEFAULT_TIMEOUT_SECONDS, value_parser = clap::value_parser!(u64).range(limits::TIMEOUT_SECONDS))]
    timeout_seconds: u64,
    /// Set an environment variable for the command (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// Working directory inside the VM
    #[arg(long, default_value = "/")]
    cwd: String,
    #[command(flatten)]
    network: NetworkArgs,
    /// Boot from the kernel even when a warm template exists (for debugging and benchmarks)
    #[arg(long)]
    cold: bool,
    /// Print one JSON result on stdout instead of streaming the command's output
    #[arg(long)]
    json: bool,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn main(args: RunArgs) -> ExitCode {
    let dirs = match output::dirs(args.json, EXIT_RUN_FAILURE) {
        Ok(dirs) => dirs,
        Err(code) => return code,
    };
    let network = match args.network.network() {
        Ok(network) => network,
        Err(err) => return output::fail(&err, args.json, EXIT_RUN_FAILURE),
    };
    let options = RunOptions {
        vcpu_count: args.vcpu_count,
        mem_mib: args.mem_mib,
        timeout_seconds: args.timeout_seconds,
        network,
        env: args.env.iter().cloned().collect(),
        cwd: args.cwd.clone(),
        cold: args.cold,
        ..RunOptions::new(&args.environment, args.command.clone())
    };
    let progress = StderrProgress::new("run");
    let json = args.json;
    let outcome = output::runtime().block_on(async {
        let cancel = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let mut passthrough = |stream: OutputStream, data: &[u8]| match stream {
            OutputStream::Stdout => output::write_stdout(data),
            OutputStream::Stderr => output::write_stderr(data),
        };
        let sink: Option<OutputSink<'_>> = if json { None } else { Some(&mut passthrough) };
        run::run(&dirs, &options, &progress, sink, cancel).await
    });
    match outcome {
        Ok(result) => {
            if json {
                output::print_json(&result);
            } else {
                output::write_stderr(
                    format!(
                        "[run] environment={} accelerator={} boot_mode={} exit_code={} boot_ms={} exec_ms={} total_ms={}{}\n",
                        result.environment,
                        result.accelerator.as_str(),
                        result.boot_mode,
                        result.result.exit_code,
                        result.boot_ms,
                        result.exec_ms,
                        result.total_ms,
                        if result.result.timed_out { " timed_out=yes" } else { "" },
                    )
                    .as_bytes(),
                );
            }
            ExitCode::from(result.result.exit_code.clamp(0, 255) as u8)
        }
        Err(err) => output::fail(&err, json, EXIT_RUN_FAILURE),
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}
