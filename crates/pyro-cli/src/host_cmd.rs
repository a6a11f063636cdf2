//! `pyro host connect|repair|status|print-config HOST`: connect a chat host to pyro's MCP server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use pyro_mcp::hosts::{self, Host, ServeFlags, ServerEntry};

use crate::output::{self, EXIT_FAILURE};

#[derive(Subcommand)]
pub enum HostCommand {
    /// Add pyro to a chat host's MCP servers (idempotent; other servers are never touched)
    Connect(HostArgs),
    /// Rewrite pyro's entry: fixes a stale binary path, profile, mode or project path
    Repair(HostArgs),
    /// Show pyro's entry in a host, and prove it works by starting it and listing its tools
    Status(HostArgs),
    /// Print the config snippet for a host, to paste by hand
    PrintConfig(HostArgs),
}

#[derive(Args)]
#[command(after_help = "Hosts: claude-code, codex, opencode, cursor, claude-desktop.")]
pub struct HostArgs {
    /// claude-code, codex, opencode, cursor or claude-desktop
    host: String,
    #[arg(long, conflicts_with = "mode")]
    profile: Option<String>,
    #[arg(long)]
    mode: Option<String>,
    /// Pin the project the server seeds workspaces from
    #[arg(long)]
    project_path: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

fn entry(args: &HostArgs) -> pyro_core::Result<(Host, ServerEntry)> {
    let host = Host::parse(&args.host)?;
    // Refuse unknown profiles and modes before writing anything.
    pyro_mcp::toolsets::select(args.profile.as_deref(), args.mode.as_deref())?;
    let flags = ServeFlags {
        profile: args.profile.clone(),
        mode: args.mode.clone(),
        project_path: args.project_path.clone(),
    };
    Ok((host, ServerEntry::for_this_pyro(&flags)?))
}

pub fn main(command: HostCommand) -> ExitCode {
    let (args, kind) = match &command {
        HostCommand::Connect(a) => (a, "connect"),
        HostCommand::Repair(a) => (a, "repair"),
        HostCommand::Status(a) => (a, "status"),
        HostCommand::PrintConfig(a) => (a, "print-config"),
    };
    let json = args.json;
    let result = entry(args).and_then(|(host, entry)| match kind {
        "connect" | "repair" => {
            let report = if kind == "connect" { hosts::connect(host, &entry)? } else { hosts::repair(host, &entry)? };
            if json {
                output::print_json(&report);
            } else {
                let backup = report.backup_path.as_deref().map(|b| format!(" (backup: {b})")).unwrap_or_default();
                output::write_stderr(
                    format!("{}: pyro {} in {} via {}{backup}\n", host.name(), report.action, report.config_path, report.via).as_bytes(),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        "status" => {
            let compare_args = args.profile.is_some() || args.mode.is_some() || args.project_path.is_some();
            let status = output::runtime().block_on(hosts::status(host, &entry, compare_args))?;
            let healthy = status.problems.is_empty();
            if json {
                output::print_json(&status);
            } else {
                let mut text = format!("{}: {}\n", host.name(), status.config_path);
                match &status.entry {
                    Some(e) => text.push_str(&format!("  entry: {} {}\n", e.command, e.args.join(" "))),
                    None => text.push_str("  entry: none\n"),
                }
                if let Some(probe) = &status.probe {
                    if probe.ok {
                        text.push_str(&format!("  works: started and listed {} tools\n", probe.tools.len()));
                    }
                }
                for problem in &status.problems {
                    text.push_str(&format!("  problem: {problem}\n"));
                }
                output::write_stdout(text.as_bytes());
            }
            Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) })
        }
        _ => {
            if json {
                output::print_json(&serde_json::json!({"host": host, "config_path": hosts::config_path(host)?.display().to_string(), "entry": entry, "snippet": hosts::print_config(host, &entry)}));
            } else {
                output::write_stdout(hosts::print_config(host, &entry).as_bytes());
            }
            Ok(ExitCode::SUCCESS)
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => output::fail(&err, json, EXIT_FAILURE),
    }
}
