//! Running the server: stdio (what chat hosts start) or streamable HTTP on 127.0.0.1.

use std::path::PathBuf;

use pyro_core::host_paths::HostRoots;
use pyro_core::{project, Dirs, Error, ErrorKind, Result};
use rmcp::transport::stdio;
use rmcp::ServiceExt;

use crate::server::{ProjectSource, PyroServer};
use crate::toolsets;

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub profile: Option<String>,
    pub mode: Option<String>,
    pub project_path: Option<PathBuf>,
    pub repo_url: Option<String>,
    /// `None` for stdio; `Some(port)` for HTTP on 127.0.0.1 (0 picks a free port).
    pub http_port: Option<u16>,
    /// Directories tools may name host paths in, besides the project.
    pub allow_host_paths: Vec<PathBuf>,
}

/// The host paths tools may use: the project (when it is a local directory) and the allowed roots;
/// relative paths are taken from the project, else the working directory.
pub fn host_roots(dirs: &Dirs, project: &ProjectSource, allowed: &[PathBuf]) -> Result<HostRoots> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut roots = allowed.to_vec();
    let base = match project {
        ProjectSource::Path(seed) => {
            roots.push(seed.root.clone());
            seed.root.clone()
        }
        _ => cwd,
    };
    HostRoots::new(&roots, &base, dirs)
}

/// Validates the options and resolves the project source (cheap: a clone waits for the first create).
pub fn prepare(options: &ServeOptions) -> Result<(toolsets::Selection, ProjectSource)> {
    let selection = toolsets::select(options.profile.as_deref(), options.mode.as_deref())?;
    let project = match (&options.project_path, &options.repo_url) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "--project-path and --repo-url cannot be used together",
            ))
        }
        (Some(path), None) => ProjectSource::Path(project::from_path(path)?),
        (None, Some(url)) => ProjectSource::RepoUrl(url.clone()),
        (None, None) => match std::env::current_dir()
            .ok()
            .and_then(|cwd| project::detect(&cwd))
        {
            Some(root) => ProjectSource::Path(project::ProjectSeed {
                source: root.display().to_string(),
                root,
                mode: pyro_core::vocab::SeedMode::Project,
                include_git: false,
            }),
            None => ProjectSource::None,
        },
    };
    Ok((selection, project))
}

/// Describes where new workspaces are seeded from, for the startup line on stderr.
pub fn describe_project(project: &ProjectSource) -> String {
    match project {
        ProjectSource::None => {
            "no project (workspace_create needs seed_path to seed /workspace)".into()
        }
        ProjectSource::Path(seed) => format!("project {}", seed.root.display()),
        ProjectSource::RepoUrl(url) => format!("repository {url} (cloned on first use)"),
    }
}

pub async fn serve(dirs: Dirs, options: &ServeOptions) -> Result<()> {
    let (selection, project) = prepare(options)?;
    let roots = host_roots(&dirs, &project, &options.allow_host_paths)?;
    let label = selection.label.clone();
    eprintln!("pyro mcp serve: {label}; {}", describe_project(&project));
    let state = dirs.state().to_path_buf();
    let server = PyroServer::new(dirs, selection, project, roots);
    match options.http_port {
        None => {
            let running = server.serve(stdio()).await.map_err(|e| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("the MCP session failed to start: {e}"),
                )
            })?;
            running
                .waiting()
                .await
                .map_err(|e| Error::internal(format!("the MCP server stopped: {e}")))?;
            Ok(())
        }
        Some(port) => crate::http::serve(server, port, &state).await,
    }
}
