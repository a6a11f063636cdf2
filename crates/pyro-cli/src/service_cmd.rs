//! `pyro workspace service start|list|status|logs|stop`: named long-running commands in a workspace.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use pyro_core::workspace::services::{
    self, PortSpec, Readiness, ReadinessOptions, Service, ServiceOptions, ServiceState,
};
use pyro_core::workspace::ExecCommand;
use pyro_core::{limits, Dirs};

use crate::output::EXIT_FAILURE;
use crate::workspace_cmd::{parse_label, print, print_product, say, show};

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Start a named long-running command and wait until it is ready
    #[command(after_help = "At most one readiness check. Examples:\n  \
        pyro workspace service start WS web --ready-http http://127.0.0.1:8000/ -- python3 -m http.server 8000\n  \
        pyro workspace service start WS worker --ready-file .ready -- sh -c './worker && touch .ready'")]
    Start(Box<StartArgs>),
    /// List a workspace's services
    List(ListArgs),
    /// Show one service
    Status(ServiceTarget),
    /// A service's output: the last lines of each stream (it may still be running)
    Logs(LogsArgs),
    /// Stop a service: SIGTERM to its process group, SIGKILL 5 s later
    Stop(ServiceTarget),
}

impl ServiceCommand {
    pub fn json(&self) -> bool {
        match self {
            ServiceCommand::Start(a) => a.json,
            ServiceCommand::List(a) => a.json,
            ServiceCommand::Status(a) | ServiceCommand::Stop(a) => a.json,
            ServiceCommand::Logs(a) => a.target.json,
        }
    }
}

#[derive(Args)]
pub struct ListArgs {
    /// Workspace id or name
    workspace: String,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ServiceTarget {
    /// Workspace id or name
    workspace: String,
    /// The service's name
    name: String,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StartArgs {
    /// Workspace id or name
    workspace: String,
    /// A name for the service (letters, digits, '.', '_', '-')
    name: String,
    /// Working directory (default /workspace)
    #[arg(long)]
    cwd: Option<String>,
    /// Ready once this path under /workspace exists
    #[arg(long, value_name = "PATH")]
    ready_file: Option<String>,
    /// Ready once a TCP connection to HOST:PORT succeeds (from inside the VM)
    #[arg(long, value_name = "HOST:PORT")]
    ready_tcp: Option<String>,
    /// Ready once GET URL answers below 400 (an http:// URL, from inside the VM)
    #[arg(long, value_name = "URL")]
    ready_http: Option<String>,
    /// Ready once this shell command exits 0 (in the service's directory)
    #[arg(long, value_name = "COMMAND")]
    ready_command: Option<String>,
    /// Give up (and stop the service) when it is not ready after this long
    #[arg(long, default_value_t = limits::DEFAULT_READY_TIMEOUT_SECONDS, value_parser = clap::value_parser!(u64).range(limits::READY_TIMEOUT_SECONDS))]
    ready_timeout_seconds: u64,
    /// How often the readiness check runs
    #[arg(long, default_value_t = limits::DEFAULT_READY_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(limits::READY_INTERVAL_MS))]
    ready_interval_ms: u64,
    /// Start it again whenever the workspace starts (services do not come back otherwise)
    #[arg(long)]
    restart_on_start: bool,
    /// Publish a guest port on the host's 127.0.0.1, at HOST or a free port (repeatable; needs the
    /// egress+published-ports network policy)
    #[arg(long = "publish", value_name = "[HOST:]GUEST", value_parser = parse_port)]
    published_ports: Vec<PortSpec>,
    /// Set an environment variable KEY=VALUE for the service (repeatable)
    #[arg(long = "env", short = 'e', value_parser = parse_label)]
    env: Vec<(String, String)>,
    /// Expose the workspace secret SECRET as the variable VAR to the service (repeatable)
    #[arg(long = "secret-env", value_name = "SECRET=VAR", value_parser = parse_label)]
    secret_env: Vec<(String, String)>,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    target: ServiceTarget,
    /// Keep the last N lines of each stream
    #[arg(long, default_value_t = 200, conflicts_with = "all")]
    tail_lines: usize,
    /// Everything the VM kept (the head and tail of each stream)
    #[arg(long)]
    all: bool,
}

fn parse_port(text: &str) -> Result<PortSpec, String> {
    text.parse()
}

fn describe(s: &Service) -> String {
    let mut text = format!(
        "Service {} ({}): {}",
        s.service_name,
        s.workspace_id,
        state_word(s.state)
    );
    if let Some(pid) = s.pid {
        text.push_str(&format!(" pid={pid}"));
    }
    if let Some(code) = s.exit_code {
        text.push_str(&format!(" exit_code={code}"));
    }
    if let Some(reason) = &s.stop_reason {
        text.push_str(&format!(" reason={reason}"));
    }
    text.push_str(&format!("\n  $ {}\n  in {}\n", s.command, s.cwd));
    if let Some(readiness) = &s.readiness {
        let ready = if s.ready_at.is_some() {
            "passed"
        } else {
            "not passed"
        };
        text.push_str(&format!(
            "  readiness: {} ({ready})\n",
            readiness_text(readiness)
        ));
    }
    for port in &s.published_ports {
        text.push_str(&format!(
            "  published: {}:{} -> guest port {}\n",
            port.host, port.host_port, port.guest_port
        ));
    }
    if s.restart_on_start {
        text.push_str("  restarts when the workspace starts\n");
    }
    text
}

fn state_word(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Running => "running",
        ServiceState::Exited => "exited",
        ServiceState::Stopped => "stopped",
        ServiceState::Failed => "failed",
    }
}

fn readiness_text(readiness: &Readiness) -> String {
    match readiness {
        Readiness::File { path } => format!("file {path}"),
        Readiness::Tcp { address } => format!("tcp {address}"),
        Readiness::Http { url } => format!("http {url}"),
        Readiness::Command { command } => format!("command {command}"),
    }
}

pub async fn dispatch(
    dirs: &Dirs,
    command: ServiceCommand,
    json: bool,
) -> pyro_core::Result<ExitCode> {
    match command {
        ServiceCommand::Start(args) => {
            let options = ServiceOptions {
                cwd: args.cwd,
                env: args.env.into_iter().collect(),
                readiness: ReadinessOptions {
                    file: args.ready_file,
                    tcp: args.ready_tcp,
                    http: args.ready_http,
                    command: args.ready_command,
                },
                ready_timeout_seconds: args.ready_timeout_seconds,
                ready_interval_ms: args.ready_interval_ms,
                restart_on_start: args.restart_on_start,
                published_ports: args.published_ports,
                secret_env: args.secret_env.into_iter().collect(),
                ..ServiceOptions::new(&args.name, ExecCommand::Argv(args.command))
            };
            let service = services::start(dirs, &args.workspace, &options).await?;
            show(&service, json, |s| print(describe(s)));
            if service.state != ServiceState::Running {
                if !json {
                    say(format!(
                        "the service did not become ready; see `pyro workspace service logs {} {}`",
                        service.workspace_id, service.service_name
                    ));
                }
                return Ok(ExitCode::from(EXIT_FAILURE));
            }
        }
        ServiceCommand::List(args) => {
            let list = services::list(dirs, &args.workspace).await?;
            show(&list, json, |list| {
                if list.services.is_empty() {
                    return say("No services.".into());
                }
                let mut text = String::new();
                for s in &list.services {
                    text.push_str(&format!(
                        "{:<20} {:<8} {}\n",
                        s.service_name,
                        state_word(s.state),
                        s.command
                    ));
                }
                print(text);
            });
        }
        ServiceCommand::Status(args) => {
            let service = services::status(dirs, &args.workspace, &args.name).await?;
            show(&service, json, |s| print(describe(s)));
        }
        ServiceCommand::Logs(args) => {
            let tail = (!args.all).then_some(args.tail_lines);
            let logs =
                services::logs(dirs, &args.target.workspace, &args.target.name, tail).await?;
            show(&logs, json, |logs| {
                print_product(&logs.stdout);
                crate::output::write_stderr(
                    crate::terminal::product_stderr(&logs.stderr).as_bytes(),
                );
            });
        }
        ServiceCommand::Stop(args) => {
            let service = services::stop(dirs, &args.workspace, &args.name).await?;
            show(&service, json, |s| print(describe(s)));
        }
    }
    Ok(ExitCode::SUCCESS)
}
