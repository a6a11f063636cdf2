//! Running the server: stdio (what chat hosts start) or streamable HTTP on 127.0.0.1.

use std::path::PathBuf;
use std::sync::Arc;

use pyro_core::{project, Dirs, Error, ErrorKind, Result};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{stdio, StreamableHttpServerConfig, StreamableHttpService};
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
                mode: "project",
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
    let label = selection.label.clone();
    eprintln!("pyro mcp serve: {label}; {}", describe_project(&project));
    let server = PyroServer::new(dirs, selection, project);
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
        Some(port) => serve_http(server, port).await,
    }
}

async fn serve_http(server: PyroServer, port: u16) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot listen on 127.0.0.1:{port}: {e}"),
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
    eprintln!("pyro mcp serve: listening on http://{addr}/mcp");
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
        let service = service.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    async move { Ok::<_, std::convert::Infallible>(service.handle(request).await) }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                .await;
        });
    }
}
