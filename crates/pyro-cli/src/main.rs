//! The `pyro` command. It parses arguments, calls `pyro_core` and renders results; nothing else.

mod api_cmd;
mod disk_cmd;
mod doctor_cmd;
mod env_cmd;
mod host_cmd;
mod mcp_cmd;
mod network_args;
mod next_step;
mod output;
mod prepare_cmd;
mod progress;
mod run_cmd;
mod service_cmd;
mod shell_cmd;
mod snapshot_cmd;
mod terminal;
mod workspace_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pyro",
    version,
    about = "Disposable Linux microVMs for coding agents",
    long_about = "Disposable Linux microVMs for coding agents.\n\n\
                  pyro boots a real VM (QEMU microvm; KVM when usable, software emulation otherwise) from a \
                  Debian environment it builds locally, runs commands in it, and tears it down.",
    after_help = "Start with `pyro doctor`, then `pyro run debian:12 -- git --version`."
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run one command in a fresh microVM, then delete the VM
    Run(run_cmd::RunArgs),
    /// List, build, inspect and prune environments
    #[command(subcommand)]
    Env(env_cmd::EnvCommand),
    /// Warm the daily loop: memory snapshots that make later starts fast
    Prepare(prepare_cmd::PrepareArgs),
    /// Persistent workspaces: create, exec, files, patch, diff, export, reset, summary
    #[command(subcommand)]
    Workspace(workspace_cmd::WorkspaceCommand),
    /// The MCP server chat hosts start (`pyro mcp serve`)
    #[command(subcommand)]
    Mcp(mcp_cmd::McpCommand),
    /// The E2B-compatible API: the e2b SDKs run their sandboxes on pyro (`pyro api serve`)
    #[command(subcommand)]
    Api(api_cmd::ApiCommand),
    /// Connect a chat host (Claude Code, Codex, OpenCode, Cursor, Claude Desktop) to pyro
    #[command(subcommand)]
    Host(host_cmd::HostCommand),
    /// Check the host: QEMU, KVM, tools, the guest agent, environments
    Doctor(doctor_cmd::DoctorArgs),
    /// Internal: supervise one VM (started by pyro itself)
    #[command(name = "__supervise", hide = true)]
    Supervise {
        #[arg(long)]
        vm_dir: PathBuf,
        #[arg(long)]
        owner_fd: i32,
    },
    /// Internal: make one warm template in the background (started by pyro itself)
    #[command(name = "__auto-prepare", hide = true)]
    AutoPrepare {
        #[command(flatten)]
        shape: JobShape,
        #[arg(long)]
        disk_gib: u32,
        #[arg(long, value_parser = ["on", "off"])]
        network: String,
    },
    /// Internal: fill a pool of warm VMs in the background (started by pyro itself)
    #[command(name = "__pool-fill", hide = true)]
    PoolFill {
        #[command(flatten)]
        shape: JobShape,
    },
    /// Internal: read a stopped VM's disk (started by pyro itself)
    #[command(name = "__read-disk", hide = true)]
    ReadDisk {
        #[arg(long, requires = "gid")]
        uid: Option<u32>,
        #[arg(long, requires = "uid")]
        gid: Option<u32>,
        /// The process that started it: the reader exits if it is gone
        #[arg(long)]
        parent: Option<i32>,
    },
}

/// The shape a background job works on (its environment and VM size).
#[derive(clap::Args)]
struct JobShape {
    #[arg(long)]
    environment: String,
    #[arg(long)]
    vcpu_count: u8,
    #[arg(long)]
    mem_mib: u32,
}

fn main() -> ExitCode {
    // Everything pyro keeps (disks, baselines, outputs, sockets, tokens) is the user's alone.
    pyro_core::fsutil::restrict_umask();
    let cli = Cli::parse();
    match cli.command {
        Commands::Supervise { vm_dir, owner_fd } => {
            ExitCode::from(pyro_core::supervisor::main(&vm_dir, owner_fd).clamp(0, 255) as u8)
        }
        Commands::ReadDisk { uid, gid, parent } => {
            let user = uid.zip(gid);
            ExitCode::from(pyro_core::disk_reader::main(user, parent).clamp(0, 255) as u8)
        }
        Commands::AutoPrepare {
            shape:
                JobShape {
                    environment,
                    vcpu_count,
                    mem_mib,
                },
            disk_gib,
            network,
        } => {
            let Ok(dirs) = pyro_core::Dirs::from_env() else {
                return ExitCode::FAILURE;
            };
            let shape = pyro_core::auto_prepare::Shape {
                environment,
                vcpu_count,
                mem_mib,
                network: network == "on",
                disk_gib,
            };
            ExitCode::from(pyro_core::auto_prepare::main(&dirs, &shape).clamp(0, 255) as u8)
        }
        Commands::PoolFill {
            shape:
                JobShape {
                    environment,
                    vcpu_count,
                    mem_mib,
                },
        } => {
            let Ok(dirs) = pyro_core::Dirs::from_env() else {
                return ExitCode::FAILURE;
            };
            let code = pyro_core::pool::main(&dirs, &environment, vcpu_count, mem_mib);
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Commands::Run(args) => run_cmd::main(args),
        Commands::Env(command) => env_cmd::main(command),
        Commands::Doctor(args) => doctor_cmd::main(args),
        Commands::Prepare(args) => prepare_cmd::main(args),
        Commands::Workspace(command) => workspace_cmd::main(command),
        Commands::Mcp(command) => mcp_cmd::main(command),
        Commands::Api(command) => api_cmd::main(command),
        Commands::Host(command) => host_cmd::main(command),
    }
}
