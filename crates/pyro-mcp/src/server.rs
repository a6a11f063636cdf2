//! The MCP server: tool definitions, argument checking, and calls into `pyro_core`.
//!
//! Every tool returns structured JSON (the same serde types the CLI prints with `--json`) plus a text
//! rendering; failures are tool errors whose message says what to do. Slow work (VM boots, clones) happens
//! only inside tool calls, so `initialize` is answered at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pyro_core::host_paths::{Access, HostRoots};
use pyro_core::network::{Network, NetworkPolicy};
use pyro_core::project::{self, ProjectSeed};
use pyro_core::workspace::{self, CreateOptions, ExecCommand, ExecOptions, UpdateOptions};
use pyro_core::{run, Dirs, Error, Progress};
use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::*;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::params::*;
use crate::toolsets::Selection;

/// Where workspaces are seeded from when a call gives no `seed_path`.
#[derive(Debug, Clone)]
pub enum ProjectSource {
    None,
    /// A local directory (detected from the working directory, or `--project-path`).
    Path(ProjectSeed),
    /// Cloned on first use, in a tool call.
    RepoUrl(String),
}

struct Inner {
    dirs: Dirs,
    selection: Selection,
    project: Mutex<ProjectSource>,
    /// Where tool arguments may name host paths.
    roots: HostRoots,
}

#[derive(Clone)]
pub struct PyroServer {
    inner: Arc<Inner>,
}

struct ToolDef {
    name: &'static str,
    description: &'static str,
    read_only: bool,
    destructive: bool,
    schema: fn() -> Arc<JsonObject>,
}

fn schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    let mut schema = (*schema_for_type::<T>()).clone();
    schema.remove("$schema");
    schema.remove("title");
    Arc::new(schema)
}

/// The create schema without `network_policy`, for every set but workspace-full.
fn create_schema_without_network() -> Arc<JsonObject> {
    let mut schema = (*schema::<WorkspaceCreate>()).clone();
    if let Some(Value::Object(props)) = schema.get_mut("properties") {
        props.remove("network_policy");
        props.remove("allow_hosts");
    }
    Arc::new(schema)
}

const TOOLS: &[ToolDef] = &[
    ToolDef { name: "vm_run", description: "Run one shell command in a fresh, isolated Linux VM and return its exit code, stdout and stderr; the VM is deleted afterwards. For several steps on the same files, use a workspace instead.", read_only: false, destructive: false, schema: schema::<VmRun> },
    ToolDef { name: "workspace_create", description: "Create a persistent sandbox VM with /workspace seeded from seed_path (a host directory or archive) or, when omitted, from the current project. Returns workspace_id for the other workspace tools.", read_only: false, destructive: false, schema: create_schema_without_network },
    ToolDef { name: "workspace_list", description: "List workspaces, most recently active first, with state, name and labels.", read_only: true, destructive: false, schema: schema::<NoArgs> },
    ToolDef { name: "workspace_update", description: "Rename a workspace or change its labels.", read_only: false, destructive: false, schema: schema::<WorkspaceUpdate> },
    ToolDef { name: "workspace_status", description: "Show one workspace: state (and why it stopped), seed, command count, last command.", read_only: true, destructive: false, schema: schema::<WorkspaceRef> },
    ToolDef { name: "workspace_sync_push", description: "Copy a host directory or archive into the workspace (default /workspace). The baseline used by diff and reset does not change.", read_only: false, destructive: false, schema: schema::<WorkspaceSyncPush> },
    ToolDef { name: "workspace_exec", description: "Run a shell command in the workspace (in /workspace unless cwd is given). Returns exit_code, stdout, stderr; output over 1 MiB keeps its head and tail.", read_only: false, destructive: false, schema: schema::<WorkspaceExec> },
    ToolDef { name: "workspace_logs", description: "The workspace's activity journal: every command with its output, and every write, patch, sync, export and reset.", read_only: true, destructive: false, schema: schema::<WorkspaceRef> },
    ToolDef { name: "workspace_file_list", description: "List a directory in /workspace (recursively if asked) with types and sizes.", read_only: true, destructive: false, schema: schema::<WorkspaceFileList> },
    ToolDef { name: "workspace_file_read", description: "Read a text file in /workspace (64 KiB by default; `truncated` and `offset` let you read on). Prefer this to `cat` via exec.", read_only: true, destructive: false, schema: schema::<WorkspaceFileRead> },
    ToolDef { name: "workspace_file_write", description: "Write a whole text file in /workspace, creating parent directories. For small edits to existing files, workspace_patch_apply is safer.", read_only: false, destructive: false, schema: schema::<WorkspaceFileWrite> },
    ToolDef { name: "workspace_patch_apply", description: "Apply a unified diff to files in /workspace. All or nothing: if any hunk does not match, nothing changes and the error names the file and hunk.", read_only: false, destructive: false, schema: schema::<WorkspacePatchApply> },
    ToolDef { name: "workspace_diff", description: "What changed in /workspace since the baseline: entries per file and a unified patch (git apply accepts it). Binary files are listed, not patched.", read_only: true, destructive: false, schema: schema::<WorkspaceRef> },
    ToolDef { name: "workspace_export", description: "Copy a file or directory from /workspace to a new path on the host (never overwrites).", read_only: false, destructive: false, schema: schema::<WorkspaceExport> },
    ToolDef { name: "workspace_reset", description: "Start over: a fresh sandbox with /workspace restored to the baseline. The activity journal is kept.", read_only: false, destructive: true, schema: schema::<WorkspaceReset> },
    ToolDef { name: "workspace_delete", description: "Delete a workspace and everything in it.", read_only: false, destructive: true, schema: schema::<WorkspaceRef> },
    ToolDef { name: "workspace_summary", description: "Review what changed and what ran since the last reset: changed files with line counts, commands with exit codes and durations, writes, patches, syncs and exports.", read_only: true, destructive: false, schema: schema::<WorkspaceRef> },
    ToolDef { name: "workspace_stop", description: "Stop a workspace's VM to free the host; its files are kept for workspace_start.", read_only: false, destructive: false, schema: schema::<WorkspaceRef> },
    ToolDef { name: "workspace_start", description: "Start a stopped workspace again with its files as they were.", read_only: false, destructive: false, schema: schema::<WorkspaceRef> },
];

impl PyroServer {
    pub fn new(
        dirs: Dirs,
        selection: Selection,
        project: ProjectSource,
        roots: HostRoots,
    ) -> PyroServer {
        PyroServer {
            inner: Arc::new(Inner {
                dirs,
                selection,
                project: Mutex::new(project),
                roots,
            }),
        }
    }

    /// A host path from a tool argument, confined to the roots the user allowed.
    fn host_path(&self, path: &str, access: Access) -> Result<PathBuf, Error> {
        self.inner.roots.check(Path::new(path), access)
    }

    fn offered(&self, name: &str) -> bool {
        self.inner.selection.tools.contains(&name)
    }

    fn full(&self) -> bool {
        self.inner.selection.tools.contains(&"workspace_stop")
    }

    /// `network_policy` is offered by workspace-full and by the modes that allow a network.
    fn offers_network(&self) -> bool {
        !self.inner.selection.network_off
            && (self.full() || self.inner.selection.label.starts_with("mode"))
    }

    fn tool(&self, def: &ToolDef) -> Tool {
        let schema = if def.name == "workspace_create" && self.offers_network() {
            schema::<WorkspaceCreate>()
        } else {
            (def.schema)()
        };
        Tool::new(def.name, def.description, schema).with_annotations(
            ToolAnnotations::new()
                .read_only(def.read_only)
                .destructive(def.destructive)
                .open_world(false),
        )
    }

    /// The project seed, cloning a `--repo-url` on first use.
    fn project(&self) -> Result<Option<ProjectSeed>, Error> {
        let mut project = self.inner.project.lock().unwrap_or_else(|p| p.into_inner());
        match &*project {
            ProjectSource::None => Ok(None),
            ProjectSource::Path(seed) => Ok(Some(seed.clone())),
            ProjectSource::RepoUrl(url) => {
                let seed = tokio::task::block_in_place(|| project::clone(&self.inner.dirs, url))?;
                *project = ProjectSource::Path(seed.clone());
                Ok(Some(seed))
            }
        }
    }
}

struct Quiet;
impl Progress for Quiet {
    fn phase(&self, _message: &str) {}
}

fn parse<T: DeserializeOwned + JsonSchema + 'static>(
    tool: &str,
    args: Option<JsonObject>,
) -> Result<T, Error> {
    serde_json::from_value(Value::Object(args.unwrap_or_default())).map_err(|e| {
        let valid: Vec<String> = schema::<T>()
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        Error::invalid(format!("invalid arguments for {tool}: {e}"))
            .with_hint(format!("valid arguments: {}", valid.join(", ")))
    })
}

fn no_host_compat(allowed: bool) -> Result<(), Error> {
    if allowed {
        return Err(Error::invalid(
            "allow_host_compat must be false: pyro never runs guest work on the host",
        ));
    }
    Ok(())
}

fn ok<T: Serialize>(value: &T) -> CallToolResult {
    let value = serde_json::to_value(value).unwrap_or(Value::Null);
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut result = CallToolResult::structured(value);
    result.content = vec![ContentBlock::text(text)];
    result
}

fn fail(err: &Error) -> CallToolResult {
    let mut text = format!("error: {err}");
    if let Some(hint) = err.hint() {
        text.push_str(&format!("\nhelp: {hint}"));
    }
    let mut result = CallToolResult::structured_error(json!({ "error": err.to_json() }));
    result.content = vec![ContentBlock::text(text)];
    result
}

fn labels(map: Option<std::collections::BTreeMap<String, String>>) -> Vec<(String, String)> {
    map.unwrap_or_default().into_iter().collect()
}

impl PyroServer {
    /// The network a tool call asks for, within what this server offers.
    fn network(
        &self,
        policy: Option<NetworkPolicy>,
        allow_hosts: Option<Vec<String>>,
    ) -> Result<Network, Error> {
        let allow_hosts = Network::parse_allow_hosts(&allow_hosts.unwrap_or_default())?;
        let network = Network::choose(policy, allow_hosts)?;
        if network.has_device() && !self.offers_network() {
            return Err(Error::invalid(format!(
                "this server ({}) gives VMs no network",
                self.inner.selection.label
            )));
        }
        Ok(network)
    }

    async fn dispatch(
        &self,
        name: &str,
        args: Option<JsonObject>,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, Error> {
        let dirs = &self.inner.dirs;
        Ok(match name {
            "vm_run" => {
                let a: VmRun = parse(name, args)?;
                no_host_compat(a.allow_host_compat)?;
                if a.ttl_seconds == Some(0) {
                    return Err(Error::invalid(
                        "ttl_seconds must be positive (the VM lives only for this call anyway)",
                    ));
                }
                let options = run::RunOptions {
                    vcpu_count: a.vcpu_count,
                    mem_mib: a.mem_mib,
                    timeout_seconds: a.timeout_seconds,
                    network: self
                        .network(a.network.then_some(NetworkPolicy::Egress), a.allow_hosts)?,
                    shell_command: Some(a.command),
                    ..run::RunOptions::new(&a.environment, Vec::new())
                };
                // A cancelled call (or a client gone) tears the VM down.
                let cancel = context.ct.clone();
                ok(&run::run(dirs, &options, &Quiet, None, async move {
                    cancel.cancelled().await
                })
                .await?)
            }
            "workspace_create" => {
                let a: WorkspaceCreate = parse(name, args)?;
                no_host_compat(a.allow_host_compat)?;
                let policy = a
                    .network_policy
                    .as_deref()
                    .map(str::parse::<NetworkPolicy>)
                    .transpose()
                    .map_err(Error::invalid)?;
                let network = self.network(policy, a.allow_hosts)?;
                let project = match &a.seed_path {
                    Some(_) => None,
                    None => self.project()?.map(|p| ProjectSeed {
                        include_git: a.include_git,
                        ..p
                    }),
                };
                let options = CreateOptions {
                    seed_path: a
                        .seed_path
                        .map(|p| self.host_path(&p, Access::Read))
                        .transpose()?,
                    project,
                    include_git: a.include_git,
                    name: a.name,
                    labels: labels(a.labels),
                    vcpu_count: a.vcpu_count,
                    mem_mib: a.mem_mib,
                    ttl_seconds: a.ttl_seconds,
                    network,
                    ..CreateOptions::new(&a.environment)
                };
                ok(&workspace::create(dirs, &options, &Quiet).await?)
            }
            "workspace_list" => {
                let _: NoArgs = parse(name, args)?;
                ok(&workspace::list(dirs)?)
            }
            "workspace_update" => {
                let a: WorkspaceUpdate = parse(name, args)?;
                let options = UpdateOptions {
                    name: a.name,
                    clear_name: a.clear_name,
                    labels: labels(a.labels),
                    clear_labels: a.clear_labels.unwrap_or_default(),
                };
                ok(&workspace::update(dirs, &a.workspace_id, &options)?)
            }
            "workspace_status" => ok(&workspace::status(
                dirs,
                &parse::<WorkspaceRef>(name, args)?.workspace_id,
            )?),
            "workspace_logs" => ok(&workspace::logs(
                dirs,
                &parse::<WorkspaceRef>(name, args)?.workspace_id,
            )?),
            "workspace_diff" => ok(&workspace::diff(
                dirs,
                &parse::<WorkspaceRef>(name, args)?.workspace_id,
            )
            .await?),
            "workspace_summary" => ok(&workspace::summary(
                dirs,
                &parse::<WorkspaceRef>(name, args)?.workspace_id,
            )
            .await?),
            "workspace_delete" => ok(&workspace::delete(
                dirs,
                &parse::<WorkspaceRef>(name, args)?.workspace_id,
            )
            .await?),
            "workspace_stop" => ok(&workspace::stop(
                dirs,
                &parse::<WorkspaceRef>(name, args)?.workspace_id,
            )
            .await?),
            "workspace_start" => ok(&workspace::start(
                dirs,
                &parse::<WorkspaceRef>(name, args)?.workspace_id,
                false,
                &Quiet,
            )
            .await?),
            "workspace_sync_push" => {
                let a: WorkspaceSyncPush = parse(name, args)?;
                ok(&workspace::sync_push(
                    dirs,
                    &a.workspace_id,
                    &self.host_path(&a.source_path, Access::Read)?,
                    Some(&a.dest),
                )
                .await?)
            }
            "workspace_exec" => {
                let a: WorkspaceExec = parse(name, args)?;
                let options = ExecOptions {
                    command: ExecCommand::Shell(a.command),
                    cwd: Some(a.cwd),
                    env: Default::default(),
                    timeout_seconds: a.timeout_seconds,
                };
                ok(&workspace::exec(dirs, &a.workspace_id, &options, &mut |_, _| {}).await?)
            }
            "workspace_file_list" => {
                let a: WorkspaceFileList = parse(name, args)?;
                ok(&workspace::file_list(dirs, &a.workspace_id, &a.path, a.recursive).await?)
            }
            "workspace_file_read" => {
                let a: WorkspaceFileRead = parse(name, args)?;
                ok(
                    &workspace::file_read(dirs, &a.workspace_id, &a.path, a.offset, a.max_bytes)
                        .await?,
                )
            }
            "workspace_file_write" => {
                let a: WorkspaceFileWrite = parse(name, args)?;
                ok(&workspace::file_write(dirs, &a.workspace_id, &a.path, &a.text).await?)
            }
            "workspace_patch_apply" => {
                let a: WorkspacePatchApply = parse(name, args)?;
                ok(&workspace::patch_apply(dirs, &a.workspace_id, &a.patch).await?)
            }
            "workspace_export" => {
                let a: WorkspaceExport = parse(name, args)?;
                ok(&workspace::export(
                    dirs,
                    &a.workspace_id,
                    &a.path,
                    &self.host_path(&a.output_path, Access::Create)?,
                )
                .await?)
            }
            "workspace_reset" => {
                let a: WorkspaceReset = parse(name, args)?;
                ok(&workspace::reset(dirs, &a.workspace_id, &a.snapshot, false, &Quiet).await?)
            }
            other => return Err(Error::invalid(format!("unknown tool '{other}'"))),
        })
    }
}

impl ServerHandler for PyroServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pyro", pyro_core::VERSION))
            .with_instructions(self.inner.selection.instructions.clone())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = self
            .inner
            .selection
            .tools
            .iter()
            .filter_map(|name| TOOLS.iter().find(|t| t.name == *name))
            .map(|def| self.tool(def))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        if !self.offered(name) {
            return None;
        }
        TOOLS
            .iter()
            .find(|t| t.name == name)
            .map(|def| self.tool(def))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        if !self.offered(&name) {
            let err = Error::invalid(format!(
                "tool '{name}' is not offered by this server ({})",
                self.inner.selection.label
            ))
            .with_hint(format!(
                "available tools: {}",
                self.inner.selection.tools.join(", ")
            ));
            return Ok(fail(&err).into());
        }
        let result = match self.dispatch(&name, request.arguments, &context).await {
            Ok(result) => result,
            Err(err) => fail(&err),
        };
        Ok(result.into())
    }
}
