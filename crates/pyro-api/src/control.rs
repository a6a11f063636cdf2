//! The control plane: create, connect (resume), get, list, kill, set the timeout, pause. Each is one
//! call into pyro's workspace library; the JSON keys are the E2B API's.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pyro_core::network::Network;
use pyro_core::vocab::{TtlAction, WorkspaceState};
use pyro_core::workspace::{self, CreateOptions, Workspace};
use pyro_core::{limits, progress};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::sandboxes::{self, Settings};
use crate::{to_the_end, Api, ENVD_VERSION};

/// The E2B default: a sandbox without activity for this long is stopped (here: its idle TTL).
const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
/// Reported as the client every sandbox belongs to.
const CLIENT_ID: &str = "pyro";

/// What `Sandbox.create()` sends. Fields pyro has no counterpart for are refused, not ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID", default = "default_template")]
    template_id: String,
    timeout: Option<u64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    auto_pause: Option<bool>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    mcp: Option<Value>,
    #[serde(default)]
    volume_mounts: Option<Vec<Value>>,
    network: Option<NetworkOptions>,
}

/// `network`: only whether the sandbox's ports take requests without its traffic token.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetworkOptions {
    allow_public_traffic: Option<bool>,
    /// Anything else (egress rules, proxies, …) pyro does not do.
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

fn default_template() -> String {
    sandboxes::DEFAULT_TEMPLATE.to_string()
}

#[derive(Debug, Deserialize, Default)]
struct TimeoutBody {
    timeout: Option<u64>,
}

/// A JSON body, or a 400 that says what is wrong with it (an empty body is `{}`).
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed request body: {e}")))
}

/// The timeout in seconds, within what an idle TTL may be.
fn ttl_of(timeout: u64) -> Result<u64, ApiError> {
    if !limits::TTL_SECONDS.contains(&timeout) {
        return Err(ApiError::bad_request(format!(
            "timeout {timeout} s is out of range: pyro keeps an idle sandbox between {} and {} seconds",
            limits::TTL_SECONDS.start(),
            limits::TTL_SECONDS.end()
        )));
    }
    Ok(timeout)
}

/// The `Sandbox` object create and connect return.
fn sandbox_json(api: &Api, workspace: &Workspace) -> Value {
    let public = workspace
        .labels
        .contains_key(sandboxes::PUBLIC_TRAFFIC_LABEL);
    json!({
        "templateID": sandboxes::template_of(workspace).unwrap_or(sandboxes::DEFAULT_TEMPLATE),
        "sandboxID": workspace.workspace_id,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": api.token(&workspace.workspace_id),
        // Sent as `e2b-traffic-access-token` to the hosts `get_host` names, unless traffic is public.
        "trafficAccessToken": (!public).then(|| api.traffic_token(&workspace.workspace_id)),
        // `get_host(port)` names a host of this server (see `ports`).
        "domain": crate::ports::domain(api.port),
    })
}

/// The `SandboxDetail` (and listed sandbox) object.
fn detail_json(api: &Api, workspace: &Workspace) -> Value {
    let started = (workspace.created_at * 1000.0) as i64;
    let end = workspace
        .expires_at
        .unwrap_or(workspace.last_activity_at + workspace.ttl_seconds as f64);
    json!({
        "templateID": sandboxes::template_of(workspace).unwrap_or(sandboxes::DEFAULT_TEMPLATE),
        "sandboxID": workspace.workspace_id,
        "clientID": CLIENT_ID,
        "alias": workspace.environment,
        "startedAt": sandboxes::rfc3339(started),
        "endAt": sandboxes::rfc3339((end * 1000.0) as i64),
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": api.token(&workspace.workspace_id),
        "cpuCount": workspace.vcpu_count,
        "memoryMB": workspace.mem_mib,
        "diskSizeMB": u64::from(workspace.disk_gib) * 1024,
        "state": sandboxes::state_of(workspace),
        "metadata": sandboxes::metadata_of(workspace),
        "allowInternetAccess": workspace.network_enabled,
        "domain": crate::ports::domain(api.port),
    })
}

pub async fn create(State(api): State<Arc<Api>>, bytes: Bytes) -> Result<Response, ApiError> {
    let request: NewSandbox = body(&bytes)?;
    if request.mcp.is_some() {
        return Err(ApiError::bad_request(
            "MCP gateways in sandboxes are not supported by pyro; run `pyro mcp serve` on the host instead",
        ));
    }
    if request
        .volume_mounts
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        return Err(ApiError::bad_request(
            "volume mounts are not supported by pyro; seed files with `files.write` or use `pyro workspace create --seed-path`",
        ));
    }
    let public_traffic = match &request.network {
        Some(network) if !network.rest.is_empty() => {
            let keys: Vec<&str> = network.rest.keys().map(String::as_str).collect();
            return Err(ApiError::bad_request(format!(
                "network options {keys:?} are not supported by pyro: a sandbox's network is on (allow_internet_access) or off, and `allow_public_traffic` says whether its ports want the traffic token"
            )));
        }
        Some(network) => network.allow_public_traffic == Some(true),
        None => false,
    };
    let environment = sandboxes::environment_of(&request.template_id)?;
    let env_vars = request.env_vars.unwrap_or_default();
    pyro_core::run::validate_env(&env_vars)?;
    let mut labels = sandboxes::metadata_labels(&request.metadata.unwrap_or_default())?;
    labels.push((
        sandboxes::TEMPLATE_LABEL.to_string(),
        request.template_id.clone(),
    ));
    if public_traffic {
        labels.push((
            sandboxes::PUBLIC_TRAFFIC_LABEL.to_string(),
            "true".to_string(),
        ));
    }
    let mut options = CreateOptions::new(&environment);
    options.labels = labels;
    options.ttl_seconds = ttl_of(request.timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS))?;
    if request.auto_pause == Some(true) {
        options.ttl_action = TtlAction::Suspend;
    }
    if request.allow_internet_access == Some(true) {
        options.network = Network::egress();
    }
    let dirs = api.dirs.clone();
    let workspace = to_the_end(async move {
        let workspace = workspace::create(&dirs, &options, &progress::Silent).await?;
        let id = workspace.workspace_id.clone();
        if let Err(err) = sandboxes::save_settings(&dirs, &id, &Settings { env_vars }) {
            let _ = workspace::delete(&dirs, &id).await;
            return Err(err);
        }
        Ok(workspace)
    })
    .await??;
    Ok((StatusCode::CREATED, Json(sandbox_json(&api, &workspace))).into_response())
}

/// `connect`: a running sandbox as it is (200), a paused one resumed (201).
pub async fn connect(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let request: TimeoutBody = body(&bytes)?;
    let found = sandboxes::find(&api.dirs, &id)?;
    let ttl = request.timeout.map(ttl_of).transpose()?;
    let (dirs, running) = (api.dirs.clone(), found.state == WorkspaceState::Started);
    let workspace = to_the_end(async move {
        if let Some(ttl) = ttl {
            workspace::set_ttl(&dirs, &id, ttl).await?;
        }
        if running {
            workspace::status(&dirs, &id)
        } else {
            workspace::start(&dirs, &id, false, None, &progress::Silent).await
        }
    })
    .await??;
    let status = if running {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(sandbox_json(&api, &workspace))).into_response())
}

pub async fn get(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = sandboxes::find(&api.dirs, &id)?;
    Ok(Json(detail_json(&api, &found)))
}

/// The sandboxes, filtered as the SDKs' `list` asks: `state=running,paused`, `metadata=k%3Dv%26…`.
pub async fn list(
    State(api): State<Arc<Api>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = parse_query(query.as_deref().unwrap_or(""));
    let states: Option<Vec<&str>> = query
        .get("state")
        .map(|s| s.split(',').map(str::trim).collect());
    let metadata: BTreeMap<String, String> = query
        .get("metadata")
        .map(|m| parse_query(m))
        .unwrap_or_default();
    let listed = workspace::list(&api.dirs)?;
    let sandboxes: Vec<Value> = listed
        .workspaces
        .iter()
        .filter(|w| sandboxes::template_of(w).is_some())
        .filter(|w| {
            states
                .as_ref()
                .is_none_or(|s| s.contains(&sandboxes::state_of(w)))
        })
        .filter(|w| {
            let have = sandboxes::metadata_of(w);
            metadata.iter().all(|(k, v)| have.get(k) == Some(v))
        })
        .map(|w| detail_json(&api, w))
        .collect();
    Ok(Json(Value::Array(sandboxes)))
}

pub async fn kill(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    sandboxes::find(&api.dirs, &id)?;
    let dirs = api.dirs.clone();
    to_the_end(async move {
        workspace::delete(&dirs, &id).await?;
        sandboxes::forget_settings(&dirs, &id);
        Ok::<_, pyro_core::Error>(())
    })
    .await??;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_timeout(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<StatusCode, ApiError> {
    let request: TimeoutBody = body(&bytes)?;
    let timeout = request
        .timeout
        .ok_or_else(|| ApiError::bad_request("the body must give `timeout` in seconds"))?;
    sandboxes::find(&api.dirs, &id)?;
    let (dirs, ttl) = (api.dirs.clone(), ttl_of(timeout)?);
    to_the_end(async move { workspace::set_ttl(&dirs, &id, ttl).await }).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `pause`: suspend (memory and processes kept); 409 when it is not running.
pub async fn pause(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let found = sandboxes::find(&api.dirs, &id)?;
    if found.state != WorkspaceState::Started {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("sandbox '{id}' is already paused (hint: `Sandbox.connect` resumes it)"),
        ));
    }
    let dirs = api.dirs.clone();
    to_the_end(async move { workspace::suspend(&dirs, &id).await }).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// pyro keeps no metrics history: an empty series, which the SDKs accept.
pub async fn metrics(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    sandboxes::find(&api.dirs, &id)?;
    Ok(Json(json!([])))
}

/// `a=1&b=x%20y` as a map (percent-decoded, `+` as space).
pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_nested_metadata() {
        let query = parse_query("state=running%2Cpaused&metadata=owner%3Dci%26team%3Da%2Bb");
        assert_eq!(query["state"], "running,paused");
        let metadata = parse_query(&query["metadata"]);
        assert_eq!(metadata["owner"], "ci");
        assert_eq!(metadata["team"], "a b");
        assert_eq!(parse_query("x=%4")["x"], "%4");
        assert_eq!(parse_query("x=%zz")["x"], "%zz");
        assert_eq!(parse_query("x=%C3%A9%")["x"], "é%");
    }
}
