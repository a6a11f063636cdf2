//! The MCP server: it lists and calls the tools of its selection (see `tools` and `registry`), and
//! renders results and errors for models.
//!
//! Every tool returns structured JSON (the same serde types the CLI prints with `--json`) plus a text
//! rendering; failures are tool errors whose hint says what to do, naming tools (never command
//! lines). Slow work (VM boots, clones) happens only inside tool calls, so `initialize` is answered at
//! once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pyro_core::host_paths::{Access, HostRoots};
use pyro_core::network::{Network, NetworkPolicy};
use pyro_core::project::{self, ProjectSeed};
use pyro_core::{Dirs, Error};
use rmcp::model::*;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{json, Value};

use crate::registry::Call;
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

    pub(crate) fn dirs(&self) -> &Dirs {
        &self.inner.dirs
    }

    /// A host path from a tool argument, confined to the roots the user allowed.
    pub(crate) fn host_path(&self, path: &str, access: Access) -> Result<PathBuf, Error> {
        self.inner.roots.check(Path::new(path), access)
    }

    /// The network a tool call asks for, within what this server offers.
    pub(crate) fn network(
        &self,
        policy: Option<NetworkPolicy>,
        allow_hosts: Option<Vec<String>>,
    ) -> Result<Network, Error> {
        let allow_hosts = Network::parse_allow_hosts(&allow_hosts.unwrap_or_default())?;
        let network = Network::choose(policy, allow_hosts)?;
        if network.has_device() && !self.inner.selection.offers_network {
            return Err(Error::invalid(format!(
                "this server ({}) gives VMs no network",
                self.inner.selection.label
            )));
        }
        Ok(network)
    }

    /// The project seed, cloning a `--repo-url` on first use.
    pub(crate) fn project(&self) -> Result<Option<ProjectSeed>, Error> {
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

fn ok(value: Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut result = CallToolResult::structured(value);
    result.content = vec![ContentBlock::text(text)];
    result
}

impl PyroServer {
    /// A failed call as a tool error: the message, the advice with tools to call (never a command
    /// line), the causes.
    fn fail(&self, err: &Error) -> CallToolResult {
        let offered = |name: &str| self.inner.selection.tool(name).is_some();
        let step = err
            .next()
            .map(|next| crate::next_step::render(next, &offered));
        let hint = match (err.hint(), &step) {
            (Some(hint), Some(step)) => Some(format!("{hint}; {}", step.advice)),
            (Some(hint), None) => Some(hint.to_string()),
            (None, Some(step)) => Some(step.advice.clone()),
            (None, None) => None,
        };
        let mut text = format!("error: {}", err.message());
        for cause in err.causes() {
            text.push_str(&format!("\ncaused by: {cause}"));
        }
        if let Some(hint) = &hint {
            text.push_str(&format!("\nhelp: {hint}"));
        }
        let next = step.and_then(|s| s.call);
        let mut result =
            CallToolResult::structured_error(json!({ "error": err.to_json_with(hint, next) }));
        result.content = vec![ContentBlock::text(text)];
        result
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
        let selection = &self.inner.selection;
        let tools = selection
            .tools
            .iter()
            .map(|t| t.tool(selection.offers_network))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        let selection = &self.inner.selection;
        selection
            .tool(name)
            .map(|t| t.tool(selection.offers_network))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let selection = &self.inner.selection;
        let Some(tool) = selection.tool(&request.name) else {
            let err = Error::invalid(format!(
                "tool '{}' is not offered by this server ({})",
                request.name, selection.label
            ))
            .with_hint(format!(
                "available tools: {}",
                selection.tool_names().join(", ")
            ));
            return Ok(self.fail(&err).into());
        };
        let call = Call {
            server: self.clone(),
            context,
        };
        let result = match tool.call(request.arguments, call).await {
            Ok(value) => ok(value),
            Err(err) => self.fail(&err),
        };
        Ok(result.into())
    }
}
