//! `pyro mcp serve` and `pyro mcp tools`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use pyro_mcp::serve::{self, ServeOptions};
use pyro_mcp::toolsets;

use crate::output::{self, EXIT_FAILURE};

#[derive(Subcommand)]
pub enum McpCommand {
    /// Serve MCP for a chat host (stdio by default)
    #[command(
        after_help = "Profiles: vm-run, workspace-core (default), workspace-full.\n\
Modes: repro-fix, inspect, cold-start, review-eval (`pyro mcp tools` lists their tools).\n\
Started inside a git checkout, workspace_create without seed_path copies that checkout."
    )]
    Serve(ServeArgs),
    /// Print the profiles and modes, and every tool with its arguments and annotations (Markdown)
    Tools {
        /// Print them as JSON, with each mode's instructions and each tool's input schema
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Transport {
    Stdio,
    Http,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Tool set by breadth: vm-run, workspace-core (default) or workspace-full
    #[arg(long, conflicts_with = "mode")]
    profile: Option<String>,
    /// Tool set and instructions for one use case: repro-fix, inspect, cold-start or review-eval
    #[arg(long)]
    mode: Option<String>,
    /// Seed new workspaces from this directory (default: the git checkout around the working directory)
    #[arg(long, conflicts_with = "repo_url")]
    project_path: Option<PathBuf>,
    /// Seed new workspaces from a shallow clone of this repository (made on first use)
    #[arg(long)]
    repo_url: Option<String>,
    #[arg(long, value_enum, default_value = "stdio")]
    transport: Transport,
    /// Port for --transport http on 127.0.0.1 (0: a free one, printed on stderr). Clients must send
    /// the bearer token printed at start (also written, 0600, under the state dir)
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Let tools use host paths (seed_path, source_path, output_path) under DIR, besides the project
    /// (repeatable)
    #[arg(long = "allow-host-path", value_name = "DIR")]
    allow_host_paths: Vec<PathBuf>,
}

pub fn main(command: McpCommand) -> ExitCode {
    match command {
        McpCommand::Tools { json } => {
            if json {
                output::print_json(&toolsets::catalog_json());
            } else {
                let text = format!(
                    "{}\n{}",
                    toolsets::markdown_tables(),
                    toolsets::markdown_tools()
                );
                output::write_stdout(text.as_bytes());
            }
            ExitCode::SUCCESS
        }
        McpCommand::Serve(args) => {
            let dirs = match output::dirs(false, EXIT_FAILURE) {
                Ok(dirs) => dirs,
                Err(code) => return code,
            };
            let options = ServeOptions {
                profile: args.profile,
                mode: args.mode,
                project_path: args.project_path,
                repo_url: args.repo_url,
                http_port: matches!(args.transport, Transport::Http).then_some(args.port),
                allow_host_paths: args.allow_host_paths,
            };
            match output::runtime().block_on(serve::serve(dirs, &options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => output::fail(&err, false, EXIT_FAILURE),
            }
        }
    }
}
