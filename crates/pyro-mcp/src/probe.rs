//! Proving that a configured MCP entry works: start it as a server and list its tools.

use std::time::Duration;

use pyro_core::{Error, ErrorKind, Result};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::ServiceExt;
use serde::Serialize;

use crate::hosts::ServerEntry;

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub ok: bool,
    pub server_name: Option<String>,
    pub tools: Vec<String>,
    pub error: Option<String>,
}

/// Starts `entry` as a stdio MCP server, initializes, lists its tools and stops it.
pub async fn probe(entry: &ServerEntry) -> Probe {
    match tokio::time::timeout(Duration::from_secs(60), list_tools(entry)).await {
        Ok(Ok((server_name, tools))) => Probe {
            ok: true,
            server_name,
            tools,
            error: None,
        },
        Ok(Err(err)) => Probe {
            ok: false,
            server_name: None,
            tools: Vec::new(),
            error: Some(err.to_string()),
        },
        Err(_) => Probe {
            ok: false,
            server_name: None,
            tools: Vec::new(),
            error: Some("the server did not answer within 60 s".into()),
        },
    }
}

async fn list_tools(entry: &ServerEntry) -> Result<(Option<String>, Vec<String>)> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        Error::new(ErrorKind::Engine, format!("{what}: {e}"))
    };
    let command = tokio::process::Command::new(&entry.command).configure(|c| {
        c.args(&entry.args);
    });
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| failed(&format!("cannot start {}", entry.command), &e))?;
    let client = ()
        .serve(transport)
        .await
        .map_err(|e| failed("the server did not initialize", &e))?;
    let server_name = client
        .peer_info()
        .and_then(|info| info.server_info.as_ref().map(|i| i.name.to_string()));
    let tools = client
        .list_all_tools()
        .await
        .map_err(|e| failed("tools/list failed", &e))?;
    let _ = client.cancel().await;
    Ok((
        server_name,
        tools.into_iter().map(|t| t.name.to_string()).collect(),
    ))
}
