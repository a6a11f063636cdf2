//! `pyro workspace ...`: persistent sandboxes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use pyro_core::vocab::TtlAction;
use pyro_core::workspace::diff::NotPatched;
use pyro_core::workspace::journal::Operation;
use pyro_core::workspace::secrets::{SecretSource, SecretSpec};
use pyro_core::workspace::{
    self, CreateOptions, ExecCommand, ExecOptions, ForkOptions, UpdateOptions, Workspace,
};
use pyro_core::{limits, Dirs, OutputStream};
use serde::Serialize;

use crate::network_args::NetworkArgs;
use crate::output::{self, EXIT_FAILURE, EXIT_RUN_FAILURE};
use crate::progress::StderrProgress;
use crate::terminal;

#[derive(Subcommand)]
pub enum WorkspaceCommand {
    /// Create and start a workspace, with /workspace seeded from a directory or archive
    #[command(
        after_help = "Examples:\n  pyro workspace create debian:12 --seed-path ./repo --name fix-123\n  ID=$(pyro workspace create --id-only)"
    )]
    Create(CreateArgs),
    /// List workspaces, most recent activity first
    List(Json),
    /// Show one workspace
    Status(Target),
    /// Change a workspace's name or labels
    Update(UpdateArgs),
    /// Stop a workspace's VM; /workspace and the rest of its disk are kept
    Stop(Target),
    /// Start a stopped workspace again, with its disk as it was (a suspended one resumes)
    Start(StartArgs),
    /// Save a started workspace's memory beside its disk and stop its VM; `start` or `resume`
    /// brings back every process, service and shell as it was
    Suspend(Target),
    /// Resume a suspended workspace: every process as it was, the clock stepped to now
    Resume(Target),
    /// A new workspace whose memory and disk are a copy of a started one at this moment; both run
    /// on, and processes started before the fork run in both
    #[command(after_help = "Example:\n  pyro workspace fork fix-123 --name fix-123-try2")]
    Fork(ForkArgs),
    /// Delete a workspace and everything in it
    Delete(Target),
    /// The activity journal: every operation, with command output
    Logs(Target),
    /// Run a command in a workspace (in /workspace unless --cwd); exits with its exit code
    #[command(
        after_help = "Options may come anywhere before `--`. The words after it run directly, without a shell:\n  pyro workspace exec ID -- make test\n  pyro workspace exec ID --timeout-seconds 120 -- sh -c 'make 2>&1 | tail -5'"
    )]
    Exec(ExecArgs),
    /// Copy files from the host into a started workspace
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Read and write files in /workspace (no shell quoting involved)
    #[command(subcommand)]
    File(FileCommand),
    /// Apply a unified diff to /workspace, all or nothing
    #[command(subcommand)]
    Patch(PatchCommand),
    /// What changed in /workspace since the baseline, as a patch
    Diff(SinceArgs),
    /// Copy a file or directory out of /workspace to a new host path
    Export(ExportArgs),
    /// Put the whole sandbox back to a snapshot (the baseline unless --snapshot names another)
    Reset(ResetArgs),
    /// What changed and what ran since the last reset
    Summary(SinceArgs),
    /// Named long-running commands (servers, workers) with a readiness check
    #[command(subcommand)]
    Service(crate::service_cmd::ServiceCommand),
    /// Interactive shells on a terminal (PTY) that live between commands
    #[command(subcommand)]
    Shell(crate::shell_cmd::ShellCommand),
    /// Named snapshots of the whole workspace disk, to reset to later
    #[command(subcommand)]
    Snapshot(crate::snapshot_cmd::SnapshotCommand),
    /// Read a stopped workspace's disk without starting it: list, read, export
    #[command(subcommand)]
    Disk(crate::disk_cmd::DiskCommand),
}

#[derive(Args)]
pub struct Json {
    /// Print JSON on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub struct Target {
    /// Workspace id or name
    pub(crate) workspace: String,
    #[command(flatten)]
    pub(crate) json: Json,
}

#[derive(Args)]
pub struct SinceArgs {
    /// Workspace id or name
    workspace: String,
    /// Compare with this snapshot instead of the baseline (see `pyro workspace snapshot list`)
    #[arg(long, value_name = "SNAPSHOT")]
    since: Option<String>,
    #[command(flatten)]
    json: Json,
}

/// `NAME=VALUE` for a secret: a malformed one is refused without repeating it (it may be the value).
fn parse_secret(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err("expected NAME=VALUE (the value is not repeated here)".into()),
    }
}

pub(crate) fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// Environment (see `pyro env list`)
    #[arg(default_value = pyro_core::catalog::DEFAULT_ENVIRONMENT)]
    environment: String,
    /// Seed /workspace from a host directory or a .tar/.tar.gz/.tgz archive (the immutable baseline)
    #[arg(long)]
    seed_path: Option<PathBuf>,
    /// A unique name to use in place of the id
    #[arg(long)]
    name: Option<String>,
    /// A label KEY=VALUE (repeatable)
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    #[arg(long, default_value_t = limits::DEFAULT_VCPU_COUNT, value_parser = clap::value_parser!(u8).range(limits::as_i64(&limits::VCPU_COUNT)))]
    vcpu_count: u8,
    #[arg(long, default_value_t = limits::DEFAULT_MEM_MIB, value_parser = clap::value_parser!(u32).range(limits::as_i64(&limits::MEM_MIB)))]
    mem_mib: u32,
    /// The size of the workspace's own disk, in GiB
    #[arg(long, default_value_t = limits::DEFAULT_DISK_GIB, value_parser = clap::value_parser!(u32).range(limits::as_i64(&limits::DISK_GIB)))]
    disk_gib: u32,
    /// Idle seconds before the workspace is stopped or suspended (never deleted)
    #[arg(long, default_value_t = limits::DEFAULT_TTL_SECONDS, value_parser = clap::value_parser!(u64).range(limits::TTL_SECONDS))]
    ttl_seconds: u64,
    /// What the idle TTL does: `stop` (processes end, the disk stays) or `suspend` (memory kept too)
    #[arg(long, default_value = "stop", value_parser = parse_ttl_action)]
    ttl_action: TtlAction,
    #[command(flatten)]
    network: NetworkArgs,
    /// Seed the directory's `.git` too (left out by default: its config may hold credentials)
    #[arg(long)]
    include_git: bool,
    /// A secret NAME=VALUE, exposed to a command only through --secret-env and redacted from every
    /// output (repeatable)
    #[arg(long = "secret", value_name = "NAME=VALUE", value_parser = parse_secret)]
    secrets: Vec<(String, String)>,
    /// A secret NAME=PATH read from a host file (repeatable)
    #[arg(long = "secret-file", value_name = "NAME=PATH", value_parser = parse_label)]
    secret_files: Vec<(String, String)>,
    /// Boot from the kernel even when a warm template exists
    #[arg(long)]
    cold: bool,
    /// Print only the new workspace's id
    #[arg(long, conflicts_with = "json")]
    id_only: bool,
    #[command(flatten)]
    json: Json,
}

#[derive(Args)]
pub struct UpdateArgs {
    workspace: String,
    #[arg(long, conflicts_with = "clear_name")]
    name: Option<String>,
    #[arg(long)]
    clear_name: bool,
    /// Set a label KEY=VALUE (repeatable)
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Remove a label (repeatable)
    #[arg(long = "clear-label")]
    clear_labels: Vec<String>,
    #[command(flatten)]
    json: Json,
}

#[derive(Args)]
pub struct ExecArgs {
    workspace: String,
    #[arg(long, default_value_t = limits::DEFAULT_TIMEOUT_SECONDS, value_parser = clap::value_parser!(u64).range(limits::TIMEOUT_SECONDS))]
    timeout_seconds: u64,
    /// Working directory (default /workspace)
    #[arg(long)]
    cwd: Option<String>,
    /// Set an environment variable KEY=VALUE for this command (repeatable)
    #[arg(long = "env", short = 'e', value_parser = parse_label)]
    env: Vec<(String, String)>,
    /// Expose the workspace secret SECRET as the variable VAR to this command (repeatable)
    #[arg(long = "secret-env", value_name = "SECRET=VAR", value_parser = parse_label)]
    secret_env: Vec<(String, String)>,
    /// Print one JSON result instead of streaming output
    #[arg(long)]
    json: bool,
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Subcommand)]
pub enum SyncCommand {
    /// Copy a host directory or archive into /workspace (or --dest); the baseline does not change
    Push {
        workspace: String,
        source: PathBuf,
        #[arg(long)]
        dest: Option<String>,
        #[command(flatten)]
        json: Json,
    },
}

/// A listing of a `/workspace` path (`file list`, `disk list`).
#[derive(Args)]
pub struct ListArgs {
    /// Workspace id or name
    pub(crate) workspace: String,
    #[arg(default_value = "/workspace")]
    pub(crate) path: String,
    #[arg(long)]
    pub(crate) recursive: bool,
    #[command(flatten)]
    pub(crate) json: Json,
}

/// A text read of a `/workspace` path (`file read`, `disk read`).
#[derive(Args)]
pub struct ReadArgs {
    /// Workspace id or name
    pub(crate) workspace: String,
    pub(crate) path: String,
    /// Bytes to read at most
    #[arg(long)]
    pub(crate) max_bytes: Option<u64>,
    /// Byte offset to start from
    #[arg(long, default_value_t = 0)]
    pub(crate) offset: u64,
    /// Print only the content, exactly
    #[arg(long, conflicts_with = "json")]
    pub(crate) content_only: bool,
    #[command(flatten)]
    pub(crate) json: Json,
}

#[derive(Subcommand)]
pub enum FileCommand {
    /// List a directory (default /workspace)
    List(ListArgs),
    /// Print a text file
    Read(ReadArgs),
    /// Write a text file (parent directories are created)
    Write {
        workspace: String,
        path: String,
        #[arg(
            long,
            required_unless_present = "text_file",
            conflicts_with = "text_file",
            allow_hyphen_values = true
        )]
        text: Option<String>,
        /// Read the text from a host file (UTF-8)
        #[arg(long)]
        text_file: Option<PathBuf>,
        #[command(flatten)]
        json: Json,
    },
}

/// A listing as lines: mode, kind, size, path (and a link's target).
pub(crate) fn print_listing(entries: &[workspace::ops::ListedEntry], truncated: bool) {
    let mut text = String::new();
    for e in entries {
        let kind = serde_json::to_value(e.artifact_type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let link = e
            .link_target
            .as_deref()
            .map(|t| format!(" -> {}", terminal::field(t)))
            .unwrap_or_default();
        text.push_str(&format!(
            "{} {:<9} {:>10} {}{link}\n",
            e.mode,
            kind,
            e.size_bytes,
            terminal::field(&e.path)
        ));
    }
    if truncated {
        text.push_str("(more entries not shown)\n");
    }
    print(text);
}

/// The content on stdout, then (unless `content_only`) a summary line on stderr.
pub(crate) fn print_read(tag: &str, r: &workspace::ops::TextRead, content_only: bool) {
    print_product(&r.content);
    if content_only {
        return;
    }
    if !r.content.is_empty() && !r.content.ends_with('\n') {
        print("\n".into());
    }
    let more = if r.truncated {
        format!(
            " truncated: yes (continue with --offset {})",
            r.offset + r.content.len() as u64
        )
    } else {
        String::new()
    };
    say(format!(
        "[{tag}] {} size_bytes={}{more}",
        r.path, r.size_bytes
    ));
}

#[derive(Subcommand)]
pub enum PatchCommand {
    /// Apply a unified diff (git's headers for new, deleted and renamed files included)
    Apply {
        workspace: String,
        #[arg(
            long,
            required_unless_present = "patch_file",
            conflicts_with = "patch_file",
            allow_hyphen_values = true
        )]
        patch: Option<String>,
        #[arg(long)]
        patch_file: Option<PathBuf>,
        #[command(flatten)]
        json: Json,
    },
}

#[derive(Args)]
pub struct ExportArgs {
    workspace: String,
    /// Path in /workspace
    path: String,
    /// Host path to create (must not exist)
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    json: Json,
}

#[derive(Args)]
pub struct StartArgs {
    workspace: String,
    /// Boot from the kernel even when a warm template exists
    #[arg(long)]
    cold: bool,
    /// What the idle TTL does from now on: `stop` or `suspend` (kept for later starts)
    #[arg(long, value_parser = parse_ttl_action)]
    ttl_action: Option<TtlAction>,
    #[command(flatten)]
    json: Json,
}

#[derive(Args)]
pub struct ForkArgs {
    /// The workspace to copy (started)
    workspace: String,
    /// A unique name for the fork
    #[arg(long)]
    name: Option<String>,
    /// Let the fork use the source's secrets too (otherwise it only redacts them)
    #[arg(long)]
    inherit_secrets: bool,
    #[command(flatten)]
    json: Json,
}

#[derive(Args)]
pub struct ResetArgs {
    workspace: String,
    /// Boot from the kernel even when a warm template exists
    #[arg(long)]
    cold: bool,
    /// The snapshot to go back to (see `pyro workspace snapshot list`)
    #[arg(long, default_value = "baseline", value_name = "NAME")]
    snapshot: String,
    #[command(flatten)]
    json: Json,
}

fn parse_ttl_action(text: &str) -> Result<TtlAction, String> {
    TtlAction::parse(text)
        .ok_or_else(|| format!("'{text}' is not a TTL action: use stop or suspend"))
}

/// The text given inline or read from a host file (clap makes sure exactly one is given).
fn inline_or_file(
    inline: Option<String>,
    file: Option<&std::path::Path>,
) -> pyro_core::Result<String> {
    match (inline, file) {
        (Some(text), _) => Ok(text),
        (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
            pyro_core::Error::invalid(format!("cannot read {} as UTF-8 text: {e}", file.display()))
        }),
        (None, None) => Err(pyro_core::Error::invalid("no text given")),
    }
}

/// Prints `value` as JSON, or runs `human` to print it for people.
pub(crate) fn show<T: Serialize>(value: &T, json: bool, human: impl FnOnce(&T)) {
    if json {
        output::print_json(value);
    } else {
        human(value);
    }
}

/// A message on stderr; guest-controlled parts never reach the terminal raw.
pub(crate) fn say(text: String) {
    output::write_stderr(format!("{}\n", terminal::text(&text)).as_bytes());
}

/// Human-readable output on stdout (listings, descriptions), escaped like [`say`].
pub(crate) fn print(text: String) {
    output::write_stdout(terminal::text(&text).as_bytes());
}

/// A product on stdout (patch, file content): exact unless stdout is a terminal.
pub(crate) fn print_product(text: &str) {
    output::write_stdout(terminal::product(text).as_bytes());
}

fn describe(ws: &Workspace) -> String {
    let name = ws
        .name
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    let mut text = format!("Workspace {}{name}: {}\n", ws.workspace_id, ws.state);
    text.push_str(&format!(
        "  environment {} | {} vCPU | {} MiB | {} GiB disk | network {} | {} after {} s idle\n",
        ws.environment,
        ws.vcpu_count,
        ws.mem_mib,
        ws.disk_gib,
        ws.network_policy,
        match ws.ttl_action {
            TtlAction::Stop => "stops",
            TtlAction::Suspend => "suspends",
        },
        ws.ttl_seconds
    ));
    if !ws.secrets.is_empty() {
        text.push_str(&format!("  secrets: {}\n", ws.secrets.join(", ")));
    }
    let seed = &ws.workspace_seed;
    text.push_str(&format!(
        "  seed: {}{} ({} entries, {} bytes)\n",
        seed.mode,
        seed.seed_path
            .as_deref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default(),
        seed.entry_count,
        seed.bytes_written
    ));
    if !ws.labels.is_empty() {
        let labels: Vec<String> = ws.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!("  labels: {}\n", labels.join(", ")));
    }
    match &ws.last_command {
        Some(last) => text.push_str(&format!(
            "  commands since reset: {} (last #{}: `{}` exit {} in {} ms)\n",
            ws.command_count, last.sequence, last.command, last.exit_code, last.duration_ms
        )),
        None => text.push_str("  commands since reset: 0\n"),
    }
    if ws.reset_count > 0 {
        text.push_str(&format!("  resets: {}\n", ws.reset_count));
    }
    if let Some(reason) = &ws.stop_reason {
        text.push_str(&format!("  {}: {reason}\n", ws.state));
    }
    text
}

pub fn main(command: WorkspaceCommand) -> ExitCode {
    let (json, failure_code) = match &command {
        WorkspaceCommand::Create(a) => (a.json.json, EXIT_FAILURE),
        WorkspaceCommand::List(j) => (j.json, EXIT_FAILURE),
        WorkspaceCommand::Status(t)
        | WorkspaceCommand::Stop(t)
        | WorkspaceCommand::Suspend(t)
        | WorkspaceCommand::Resume(t)
        | WorkspaceCommand::Delete(t)
        | WorkspaceCommand::Logs(t) => (t.json.json, EXIT_FAILURE),
        WorkspaceCommand::Diff(t) | WorkspaceCommand::Summary(t) => (t.json.json, EXIT_FAILURE),
        WorkspaceCommand::Update(a) => (a.json.json, EXIT_FAILURE),
        WorkspaceCommand::Start(a) => (a.json.json, EXIT_FAILURE),
        WorkspaceCommand::Fork(a) => (a.json.json, EXIT_FAILURE),
        WorkspaceCommand::Exec(a) => (a.json, EXIT_RUN_FAILURE),
        WorkspaceCommand::Sync(SyncCommand::Push { json, .. }) => (json.json, EXIT_FAILURE),
        WorkspaceCommand::File(
            FileCommand::List(ListArgs { json, .. })
            | FileCommand::Read(ReadArgs { json, .. })
            | FileCommand::Write { json, .. },
        ) => (json.json, EXIT_FAILURE),
        WorkspaceCommand::Patch(PatchCommand::Apply { json, .. }) => (json.json, EXIT_FAILURE),
        WorkspaceCommand::Export(a) => (a.json.json, EXIT_FAILURE),
        WorkspaceCommand::Reset(a) => (a.json.json, EXIT_FAILURE),
        WorkspaceCommand::Service(c) => (c.json(), EXIT_FAILURE),
        WorkspaceCommand::Shell(c) => (c.json(), EXIT_FAILURE),
        WorkspaceCommand::Snapshot(c) => (c.json(), EXIT_FAILURE),
        WorkspaceCommand::Disk(c) => (c.json(), EXIT_FAILURE),
    };
    let dirs = match output::dirs(json, failure_code) {
        Ok(dirs) => dirs,
        Err(code) => return code,
    };
    match output::runtime().block_on(dispatch(&dirs, command, json)) {
        Ok(code) => code,
        Err(err) => output::fail(&err, json, failure_code),
    }
}

async fn dispatch(
    dirs: &Dirs,
    command: WorkspaceCommand,
    json: bool,
) -> pyro_core::Result<ExitCode> {
    match command {
        WorkspaceCommand::Service(command) => {
            return crate::service_cmd::dispatch(dirs, command, json).await
        }
        WorkspaceCommand::Snapshot(command) => {
            return crate::snapshot_cmd::dispatch(dirs, command, json).await
        }
        WorkspaceCommand::Shell(command) => {
            return crate::shell_cmd::dispatch(dirs, command, json).await
        }
        WorkspaceCommand::Disk(command) => {
            return crate::disk_cmd::dispatch(dirs, command, json).await
        }
        WorkspaceCommand::Create(args) => {
            let options = CreateOptions {
                seed_path: args.seed_path,
                include_git: args.include_git,
                name: args.name,
                labels: args.labels,
                vcpu_count: args.vcpu_count,
                mem_mib: args.mem_mib,
                disk_gib: args.disk_gib,
                ttl_seconds: args.ttl_seconds,
                network: args.network.network()?,
                secrets: args
                    .secrets
                    .into_iter()
                    .map(|(name, value)| SecretSpec {
                        name,
                        source: SecretSource::Value(value),
                    })
                    .chain(
                        args.secret_files
                            .into_iter()
                            .map(|(name, path)| SecretSpec {
                                name,
                                source: SecretSource::File(path.into()),
                            }),
                    )
                    .collect(),
                cold: args.cold,
                ttl_action: args.ttl_action,
                ..CreateOptions::new(&args.environment)
            };
            let progress = StderrProgress::new("workspace-create");
            let ws = workspace::create(dirs, &options, &progress).await?;
            if args.id_only {
                print(format!("{}\n", ws.workspace_id));
            } else {
                show(&ws, json, |ws| print(describe(ws)));
            }
        }
        WorkspaceCommand::List(_) => {
            let list = workspace::list(dirs)?;
            show(&list, json, |list| {
                if list.workspaces.is_empty() {
                    return say("No workspaces.".into());
                }
                let mut text = String::new();
                for ws in &list.workspaces {
                    let labels: Vec<String> =
                        ws.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    text.push_str(&format!(
                        "{}  {:<8} {:<16} {:<20} commands={} {}\n",
                        ws.workspace_id,
                        ws.state,
                        ws.environment,
                        ws.name.as_deref().unwrap_or("-"),
                        ws.command_count,
                        labels.join(",")
                    ));
                }
                print(text);
            });
        }
        WorkspaceCommand::Status(t) => show(&workspace::status(dirs, &t.workspace)?, json, |ws| {
            print(describe(ws));
        }),
        WorkspaceCommand::Update(args) => {
            let options = UpdateOptions {
                name: args.name,
                clear_name: args.clear_name,
                labels: args.labels,
                clear_labels: args.clear_labels,
            };
            show(
                &workspace::update(dirs, &args.workspace, &options)?,
                json,
                |ws| print(describe(ws)),
            );
        }
        WorkspaceCommand::Stop(t) => {
            show(&workspace::stop(dirs, &t.workspace).await?, json, |ws| {
                print(describe(ws));
            });
        }
        WorkspaceCommand::Start(t) => {
            let progress = StderrProgress::new("workspace-start");
            show(
                &workspace::start(dirs, &t.workspace, t.cold, t.ttl_action, &progress).await?,
                json,
                |ws| print(describe(ws)),
            );
        }
        WorkspaceCommand::Suspend(t) => {
            show(&workspace::suspend(dirs, &t.workspace).await?, json, |r| {
                say(format!(
                    "Suspended workspace {}: {} MiB of memory saved in {} ms; `pyro workspace resume {}` brings it back",
                    r.workspace.workspace_id,
                    r.workspace_suspend.state_bytes.div_ceil(1 << 20),
                    r.workspace_suspend.save_ms,
                    r.workspace.workspace_id
                ));
            });
        }
        WorkspaceCommand::Fork(args) => {
            let progress = StderrProgress::new("workspace-fork");
            let options = ForkOptions {
                name: args.name,
                inherit_secrets: args.inherit_secrets,
            };
            let forked = workspace::fork(dirs, &args.workspace, &options, &progress).await?;
            show(&forked, json, |r| {
                say(format!(
                    "Forked {} (paused {} ms, {} MiB of memory copied)",
                    r.workspace_fork.source_workspace_id,
                    r.workspace_fork.source_paused_ms,
                    r.workspace_fork.state_bytes.div_ceil(1 << 20)
                ));
                print(describe(&r.workspace));
            });
        }
        WorkspaceCommand::Resume(t) => {
            let progress = StderrProgress::new("workspace-resume");
            show(
                &workspace::resume(dirs, &t.workspace, &progress).await?,
                json,
                |ws| print(describe(ws)),
            );
        }
        WorkspaceCommand::Delete(t) => {
            show(&workspace::delete(dirs, &t.workspace).await?, json, |r| {
                say(format!("Deleted workspace {}", r.workspace_id));
            });
        }
        WorkspaceCommand::Logs(t) => {
            show(&workspace::logs(dirs, &t.workspace)?, json, |logs| {
                if logs.entries.is_empty() {
                    return say("No activity recorded.".into());
                }
                for entry in &logs.entries {
                    let e = &entry.entry;
                    let status = if e.ok { "ok" } else { "failed" };
                    let mut text = format!(
                        "#{} {} ({} ms, {status})",
                        e.sequence,
                        e.recorded.kind(),
                        e.duration_ms
                    );
                    if let Some(Operation::Exec { params, result }) = e.recorded.operation() {
                        text.push_str(&format!(
                            " exit_code={} cwd={}\n$ {}\n",
                            result.exit_code, params.cwd, params.command
                        ));
                        print(text);
                        print_product(entry.stdout.as_deref().unwrap_or_default());
                        output::write_stderr(
                            terminal::product_stderr(entry.stderr.as_deref().unwrap_or_default())
                                .as_bytes(),
                        );
                    } else {
                        let document = serde_json::to_value(&e.recorded).unwrap_or_default();
                        text.push_str(&format!(" {}\n", document["params"]));
                        print(text);
                    }
                }
            });
        }
        WorkspaceCommand::Exec(args) => {
            let options = ExecOptions {
                command: ExecCommand::Argv(args.command),
                cwd: args.cwd,
                env: args.env.into_iter().collect(),
                secret_env: args.secret_env.into_iter().collect(),
                timeout_seconds: args.timeout_seconds,
            };
            let mut passthrough = |stream: OutputStream, data: &[u8]| {
                if !json {
                    match stream {
                        OutputStream::Stdout => output::write_stdout(data),
                        OutputStream::Stderr => output::write_stderr(data),
                    }
                }
            };
            let result = workspace::exec(dirs, &args.workspace, &options, &mut passthrough).await?;
            show(&result, json, |r| {
                say(format!(
                    "[workspace-exec] workspace_id={} sequence={} exit_code={} duration_ms={}{}",
                    r.workspace_id,
                    r.sequence,
                    r.result.exit_code,
                    r.result.duration_ms,
                    if r.result.timed_out {
                        " timed_out=yes"
                    } else {
                        ""
                    }
                ));
            });
            return Ok(ExitCode::from(result.result.exit_code.clamp(0, 255) as u8));
        }
        WorkspaceCommand::Sync(SyncCommand::Push {
            workspace,
            source,
            dest,
            ..
        }) => {
            let result = workspace::sync_push(dirs, &workspace, &source, dest.as_deref()).await?;
            show(&result, json, |r| {
                let s = &r.workspace_sync;
                say(format!(
                    "Pushed {} ({} entries, {} bytes) to {}",
                    s.source_path, s.entry_count, s.bytes_written, s.destination
                ));
            });
        }
        WorkspaceCommand::File(FileCommand::List(ListArgs {
            workspace,
            path,
            recursive,
            ..
        })) => {
            let result = workspace::file_list(dirs, &workspace, &path, recursive).await?;
            show(&result, json, |r| print_listing(&r.entries, r.truncated));
        }
        WorkspaceCommand::File(FileCommand::Read(ReadArgs {
            workspace,
            path,
            max_bytes,
            offset,
            content_only,
            ..
        })) => {
            let result = workspace::file_read(dirs, &workspace, &path, offset, max_bytes).await?;
            show(&result, json, |r| {
                print_read("workspace-file-read", &r.read, content_only);
            });
        }
        WorkspaceCommand::File(FileCommand::Write {
            workspace,
            path,
            text,
            text_file,
            ..
        }) => {
            let text = inline_or_file(text, text_file.as_deref())?;
            let result = workspace::file_write(dirs, &workspace, &path, &text).await?;
            show(&result, json, |r| {
                say(format!("Wrote {} bytes to {}", r.bytes_written, r.path));
            });
        }
        WorkspaceCommand::Patch(PatchCommand::Apply {
            workspace,
            patch,
            patch_file,
            ..
        }) => {
            let patch = inline_or_file(patch, patch_file.as_deref())?;
            let result = workspace::patch_apply(dirs, &workspace, &patch).await?;
            show(&result, json, |r| {
                for e in &r.entries {
                    say(format!(
                        "{:<9} {} (+{} -{})",
                        e.status, e.path, e.lines_added, e.lines_removed
                    ));
                }
            });
        }
        WorkspaceCommand::Diff(t) => {
            let result = workspace::diff(dirs, &t.workspace, t.since.as_deref()).await?;
            show(&result, json, |r| {
                print_product(&r.patch());
                if !r.changed {
                    return say("No changes against the baseline.".into());
                }
                let s = &r.summary;
                say(format!(
                    "[workspace-diff] total={} added={} modified={} deleted={} type_changed={} mode_changed={} non_text={}",
                    s.total, s.added, s.modified, s.deleted, s.type_changed, s.mode_changed, s.non_text
                ));
                for e in r.entries.iter().filter(|e| !e.text) {
                    let why = match e.not_patched {
                        Some(NotPatched::TooLargeToDiff) => "too large to diff",
                        Some(NotPatched::UnsafeName) => "name kept out of patches",
                        Some(NotPatched::ChangedWhileReading) => "changed while the diff ran",
                        _ => "binary or not text",
                    };
                    say(format!(
                        "  {} {} (not shown in the patch: {why})",
                        e.status,
                        terminal::field(&e.path)
                    ));
                }
                if r.budget_exceeded {
                    say("  the diff reached its size or time budget; the rest is only listed (see --json for sizes and digests)".into());
                }
            });
        }
        WorkspaceCommand::Export(args) => {
            let result = workspace::export(dirs, &args.workspace, &args.path, &args.output).await?;
            show(&result, json, |r| {
                say(format!(
                    "Exported {} to {} ({} entries, {} bytes)",
                    r.workspace_path, r.output_path, r.entry_count, r.bytes_written
                ));
                for link in &r.skipped_links {
                    say(format!(
                        "  skipped symlink {} -> {} (it would lead outside the export)",
                        terminal::field(&link.path),
                        terminal::field(&link.target)
                    ));
                }
            });
        }
        WorkspaceCommand::Reset(args) => {
            let progress = StderrProgress::new("workspace-reset");
            let result =
                workspace::reset(dirs, &args.workspace, &args.snapshot, args.cold, &progress)
                    .await?;
            show(&result, json, |r| {
                print(describe(&r.workspace));
                say(match r.workspace_reset.entry_count {
                    Some(entries) => format!(
                        "Reset to {} ({entries} entries in /workspace)",
                        r.workspace_reset.snapshot_name
                    ),
                    None => format!("Reset to snapshot {}", r.workspace_reset.snapshot_name),
                });
            });
        }
        WorkspaceCommand::Summary(t) => {
            let result = workspace::summary(dirs, &t.workspace, t.since.as_deref()).await?;
            show(&result, json, |r| {
                let mut text = format!(
                    "Workspace {}{}: {} | since {} | resets: {}\n",
                    r.workspace_id,
                    r.name
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    r.state,
                    match &r.since_snapshot {
                        Some(name) => format!("snapshot {name}"),
                        None if r.reset_count > 0 => "the last reset".into(),
                        None => "creation".into(),
                    },
                    r.reset_count
                );
                match &r.changes {
                    Some(changes) if changes.changed => {
                        text.push_str(&format!("Changed files ({}):\n", changes.files.len()));
                        for f in &changes.files {
                            let lines = if f.text {
                                format!("+{} -{}", f.lines_added, f.lines_removed)
                            } else {
                                "binary or not text".into()
                            };
                            text.push_str(&format!(
                                "  {:<12} {} ({lines})\n",
                                f.status,
                                terminal::field(&f.path)
                            ));
                        }
                    }
                    Some(_) => text.push_str("Changed files: none\n"),
                    None => text.push_str(&format!(
                        "Changed files: unknown ({})\n",
                        r.changes_note.as_deref().unwrap_or("")
                    )),
                }
                let c = &r.counts;
                text.push_str(&format!(
                    "Commands: {} ({} failed) | file writes: {} | patches: {} | syncs: {} | exports: {}\n",
                    c.commands, c.failed_commands, c.file_writes, c.patches, c.syncs, c.exports
                ));
                if !r.activity.is_empty() {
                    text.push_str("Activity:\n");
                    for a in &r.activity {
                        let outcome = match a.kind.as_str() {
                            "exec" => {
                                let exit = r
                                    .commands
                                    .iter()
                                    .find(|c| c.sequence == a.sequence)
                                    .map(|c| c.exit_code)
                                    .unwrap_or(-1);
                                format!("exit {exit}")
                            }
                            _ if a.ok => "ok".to_string(),
                            _ => "failed".to_string(),
                        };
                        text.push_str(&format!(
                            "  #{:<4} {:<12} {:<8} {:>7} ms  {}\n",
                            a.sequence, a.kind, outcome, a.duration_ms, a.detail
                        ));
                    }
                }
                print(text);
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
