//! Files: `GET`/`POST /files` (content) and `filesystem.Filesystem` (entries). pyro's file rules
//! apply: every path is under `/workspace` (a relative one is taken under it), and the guest agent
//! resolves it there without following symlinks out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use pyro_core::workspace::ops::{ListedEntry, MAX_READ_BYTES, MAX_WRITE_BYTES};
use pyro_core::workspace::watchers::{self, WatchEvent, WatchEventKind};
use pyro_core::workspace::{self, entries};
use pyro_proto::ArtifactType;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::connect::{self, Code, RpcError};
use crate::control::parse_query;
use crate::errors::ApiError;
use crate::{Api, Sandbox};

/// Files one upload may carry.
const MAX_FILES_PER_UPLOAD: usize = 1000;
/// Bytes one upload may carry in all.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn file_type(kind: ArtifactType) -> &'static str {
    match kind {
        ArtifactType::File => "FILE_TYPE_FILE",
        ArtifactType::Directory => "FILE_TYPE_DIRECTORY",
        ArtifactType::Symlink => "FILE_TYPE_SYMLINK",
        ArtifactType::Other => "FILE_TYPE_UNSPECIFIED",
    }
}

/// `drwxr-xr-x` from a type and permission bits.
fn permissions(kind: ArtifactType, mode: u32) -> String {
    let mut text = String::with_capacity(10);
    text.push(match kind {
        ArtifactType::Directory => 'd',
        ArtifactType::Symlink => 'l',
        _ => '-',
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

/// An `EntryInfo` message.
fn entry_info(entry: &ListedEntry) -> Value {
    let mode = u32::from_str_radix(&entry.mode, 8).unwrap_or(0);
    let mut info = json!({
        "name": name_of(&entry.path),
        "type": file_type(entry.artifact_type),
        "path": entry.path,
        "size": entry.size_bytes.to_string(),
        "mode": mode,
        "permissions": permissions(entry.artifact_type, mode),
        "owner": "root",
        "group": "root",
    });
    if let Some(target) = &entry.link_target {
        info["symlinkTarget"] = json!(target);
        info["isSymlink"] = json!(true);
    }
    info
}

fn query_path(query: Option<&str>) -> Option<String> {
    parse_query(query.unwrap_or(""))
        .remove("path")
        .filter(|p| !p.is_empty())
}

/// `GET /files?path=…`: the file's bytes.
pub async fn read(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let path = query_path(query.as_deref()).ok_or_else(|| {
        ApiError::bad_request("give the file's path as the `path` query parameter")
    })?;
    let (_, bytes) = workspace::file_read_bytes(&api.dirs, &sandbox, &path, MAX_READ_BYTES).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `POST /files`: multipart parts named `file`, each's file name its path (or the `path` query),
/// or one raw `application/octet-stream` body for the `path` query.
pub async fn write(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    let query_path = query_path(query.as_deref());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if headers.contains_key(header::CONTENT_ENCODING)
        && headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            != Some("identity")
    {
        return Err(ApiError::bad_request(
            "compressed uploads are not supported; send the content uncompressed",
        ));
    }
    let mut uploads: Vec<(String, Vec<u8>)> = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart =
            <Multipart as axum::extract::FromRequest<()>>::from_request(request, &())
                .await
                .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?;
        let mut total = 0usize;
        while let Some(mut field) = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?
        {
            if uploads.len() >= MAX_FILES_PER_UPLOAD {
                return Err(ApiError::bad_request(format!(
                    "an upload carries at most {MAX_FILES_PER_UPLOAD} files"
                )));
            }
            let path = field
                .file_name()
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .or_else(|| query_path.clone())
                .ok_or_else(|| {
                    ApiError::bad_request("a file part has no file name and the request no `path`")
                })?;
            let mut content = Vec::new();
            while let Some(chunk) = field
                .chunk()
                .await
                .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?
            {
                total += chunk.len();
                if content.len() + chunk.len() > MAX_WRITE_BYTES as usize
                    || total > MAX_UPLOAD_BYTES
                {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("{path} is over the limit: one file at most {MAX_WRITE_BYTES} bytes, one upload {MAX_UPLOAD_BYTES}"),
                    ));
                }
                content.extend_from_slice(&chunk);
            }
            uploads.push((path, content));
        }
    } else {
        let path = query_path.ok_or_else(|| {
            ApiError::bad_request("give the file's path as the `path` query parameter")
        })?;
        let body = axum::body::to_bytes(request.into_body(), MAX_WRITE_BYTES as usize)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the upload is unreadable or over {MAX_WRITE_BYTES} bytes: {e}"),
                )
            })?;
        uploads.push((path, body.to_vec()));
    }
    if uploads.is_empty() {
        return Err(ApiError::bad_request("the upload carries no file"));
    }
    let mut written = Vec::with_capacity(uploads.len());
    for (path, content) in uploads {
        let result = workspace::file_write_bytes(&api.dirs, &sandbox, &path, &content).await?;
        written.push(json!({"name": name_of(&result.path), "type": "file", "path": result.path}));
    }
    Ok(Json(Value::Array(written)))
}

#[derive(Debug, Default, Deserialize)]
struct PathRequest {
    #[serde(default)]
    path: String,
    #[serde(default)]
    depth: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct MoveRequest {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

pub async fn stat(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: PathRequest = connect::request_message(&headers, &body)?;
    let entry = entries::stat(&api.dirs, &sandbox, &request.path).await?;
    Ok(connect::unary(&json!({"entry": entry_info(&entry)})))
}

pub async fn make_dir(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: PathRequest = connect::request_message(&headers, &body)?;
    let (entry, created) = entries::make_dir(&api.dirs, &sandbox, &request.path).await?;
    if !created {
        return Err(RpcError::new(
            Code::AlreadyExists,
            format!("directory {} already exists", entry.path),
        ));
    }
    Ok(connect::unary(&json!({"entry": entry_info(&entry)})))
}

pub async fn remove(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: PathRequest = connect::request_message(&headers, &body)?;
    entries::remove(&api.dirs, &sandbox, &request.path).await?;
    Ok(connect::unary(&json!({})))
}

pub async fn rename(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: MoveRequest = connect::request_message(&headers, &body)?;
    let entry = entries::rename(&api.dirs, &sandbox, &request.source, &request.destination).await?;
    Ok(connect::unary(&json!({"entry": entry_info(&entry)})))
}

/// `ListDir`: the entries under a directory, `depth` levels down (1: its own entries).
pub async fn list_dir(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: PathRequest = connect::request_message(&headers, &body)?;
    let depth = request.depth.unwrap_or(1).max(1);
    let listed = workspace::file_list(&api.dirs, &sandbox, &request.path, depth > 1).await?;
    if listed.truncated {
        return Err(RpcError::new(
            Code::ResourceExhausted,
            format!(
                "{} holds more entries than one listing returns; list a directory further down",
                listed.path
            ),
        ));
    }
    let prefix = format!("{}/", listed.path.trim_end_matches('/'));
    let levels = |path: &str| {
        path.strip_prefix(&prefix)
            .map(|rest| rest.split('/').count())
    };
    let entries: Vec<Value> = listed
        .entries
        .iter()
        .filter(|e| levels(&e.path).is_some_and(|n| n <= depth as usize))
        .map(entry_info)
        .collect();
    Ok(connect::unary(&json!({ "entries": entries })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_as_envd_reports_them() {
        let entry = ListedEntry {
            path: "/workspace/src/a.rs".into(),
            artifact_type: ArtifactType::File,
            size_bytes: 12,
            mode: "0644".into(),
            link_target: None,
        };
        let info = entry_info(&entry);
        assert_eq!(info["name"], "a.rs");
        assert_eq!(info["type"], "FILE_TYPE_FILE");
        assert_eq!(info["size"], "12");
        assert_eq!(info["mode"], 0o644);
        assert_eq!(info["permissions"], "-rw-r--r--");
        assert_eq!(permissions(ArtifactType::Directory, 0o755), "drwxr-xr-x");
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatchRequest {
    #[serde(default)]
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default, alias = "watcher_id")]
    watcher_id: String,
}

fn event_type(kind: WatchEventKind) -> &'static str {
    match kind {
        WatchEventKind::Create => "EVENT_TYPE_CREATE",
        WatchEventKind::Write => "EVENT_TYPE_WRITE",
        WatchEventKind::Remove => "EVENT_TYPE_REMOVE",
        WatchEventKind::Rename => "EVENT_TYPE_RENAME",
        WatchEventKind::Chmod => "EVENT_TYPE_CHMOD",
    }
}

fn event_json(event: &WatchEvent) -> Value {
    json!({"name": event.name, "type": event_type(event.kind)})
}

pub async fn create_watcher(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: WatchRequest = connect::request_message(&headers, &body)?;
    let id = watchers::start(&api.dirs, &sandbox, &request.path, request.recursive).await?;
    Ok(connect::unary(&json!({ "watcherId": id })))
}

pub async fn watcher_events(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: WatchRequest = connect::request_message(&headers, &body)?;
    let (events, _) =
        watchers::events(&api.dirs, &sandbox, &request.watcher_id, Duration::ZERO).await?;
    let events: Vec<Value> = events.iter().map(event_json).collect();
    Ok(connect::unary(&json!({ "events": events })))
}

pub async fn remove_watcher(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RpcError> {
    let request: WatchRequest = connect::request_message(&headers, &body)?;
    watchers::stop(&api.dirs, &sandbox, &request.watcher_id).await?;
    Ok(connect::unary(&json!({})))
}

/// Stops a stream's watcher when the stream ends, the client gone or not.
struct StopWatcher {
    api: Arc<Api>,
    sandbox: String,
    watcher_id: String,
}

impl Drop for StopWatcher {
    fn drop(&mut self) {
        let (api, sandbox, id) = (
            self.api.clone(),
            self.sandbox.clone(),
            std::mem::take(&mut self.watcher_id),
        );
        tokio::spawn(async move {
            let _ = watchers::stop(&api.dirs, &sandbox, &id).await;
        });
    }
}

/// `WatchDir`: a start message, then each change as it comes (a keepalive when there is none).
pub async fn watch_dir(
    State(api): State<Arc<Api>>,
    Extension(Sandbox(sandbox)): Extension<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = async {
        let request: WatchRequest = connect::request_message(&headers, &body)?;
        let id = watchers::start(&api.dirs, &sandbox, &request.path, request.recursive).await?;
        Ok::<_, RpcError>(id)
    };
    let watcher_id = match started.await {
        Ok(id) => id,
        Err(err) => return connect::stream_error(err),
    };
    let queue = VecDeque::from([connect::envelope(&json!({"start": {}}))]);
    let stop = StopWatcher {
        api,
        sandbox,
        watcher_id,
    };
    let body = futures::stream::unfold(
        (queue, false, stop),
        |(mut queue, mut done, stop)| async move {
            while queue.is_empty() && !done {
                let asked = std::time::Instant::now();
                match watchers::events(&stop.api.dirs, &stop.sandbox, &stop.watcher_id, WATCH_WAIT)
                    .await
                {
                    Ok((events, _)) if events.is_empty() => {
                        // An honest agent answers nothing only after the wait; one that answers
                        // sooner does not get to make this loop spin.
                        tokio::time::sleep(WATCH_WAIT.saturating_sub(asked.elapsed())).await;
                        queue.push_back(connect::envelope(&json!({"keepalive": {}})));
                    }
                    Ok((events, _)) => queue.extend(
                        events
                            .iter()
                            .map(|e| connect::envelope(&json!({ "filesystem": event_json(e) }))),
                    ),
                    Err(err) => {
                        queue.push_back(connect::end_of_stream(Some(&RpcError::from(err))));
                        done = true;
                    }
                }
            }
            let frame = queue.pop_front()?;
            Some((
                Ok::<_, std::convert::Infallible>(frame),
                (queue, done, stop),
            ))
        },
    );
    connect::stream_response(Body::from_stream(body))
}

/// How long a watch stream waits for a change before it sends a keepalive.
const WATCH_WAIT: Duration = Duration::from_secs(25);
