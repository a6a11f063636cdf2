//! `pyro api serve`: the E2B API on 127.0.0.1, so that the unmodified e2b SDKs (Python and
//! JavaScript) run their sandboxes on pyro.
//!
//! - [`control`] is the control plane (`/v2/sandboxes`, `/sandboxes/{id}/…`): a sandbox is a pyro
//!   workspace made through this API ([`sandboxes`] maps the two), a template an environment,
//!   `pause` a suspend, the timeout the idle TTL.
//! - [`process`] and [`files`] are the in-sandbox API the SDKs reach at `E2B_SANDBOX_URL`: the
//!   Connect protocol ([`connect`]) over JSON, plus `/files` and `/health`. The sandbox is named by
//!   the `E2b-Sandbox-Id` header, so one port serves every sandbox.
//! - [`auth`]: the control plane wants the state dir's API key; a sandbox's API wants that
//!   sandbox's access token, which create and connect return.
//!
//! Like every surface, this one parses, calls pyro's library, and renders.

pub mod auth;
pub mod connect;
pub mod control;
pub mod debug;
pub mod errors;
pub mod files;
pub mod ports;
pub mod process;
pub mod sandboxes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pyro_core::{fsutil, Dirs, Error, ErrorKind, Result};

use crate::connect::{Code, RpcError};
use crate::errors::ApiError;

/// The port `pyro api serve` listens on unless told otherwise (the in-sandbox API's own port).
pub const DEFAULT_PORT: u16 = 49983;
/// The in-sandbox API version reported to the SDKs, which gate features on it.
pub const ENVD_VERSION: &str = "0.6.7";
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest control-plane or RPC body.
const MAX_BODY_BYTES: usize = 4 << 20;

/// What every handler shares.
pub struct Api {
    pub dirs: Dirs,
    /// The port this server listens on.
    pub port: u16,
    key: String,
    hosts: Vec<String>,
    /// Whether SDKs in debug mode are served (see [`debug`]).
    debug: bool,
    /// The workspace that serves them, once known.
    debug_sandbox: tokio::sync::Mutex<Option<String>>,
    /// Bytes of process output waiting for slow clients, all streams together.
    output_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests carried to sandboxes' ports at once, at most (they cannot take every connection).
    port_slots: Arc<tokio::sync::Semaphore>,
}

impl Api {
    pub fn token(&self, sandbox: &str) -> String {
        auth::sandbox_token(&self.key, sandbox)
    }

    pub fn traffic_token(&self, sandbox: &str) -> String {
        auth::traffic_token(&self.key, sandbox)
    }
}

/// Runs `work` to its end even when the client goes away meanwhile (hyper drops the handler of a
/// client that hung up): a lifecycle step is never left half done.
pub async fn to_the_end<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    tokio::spawn(work).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the operation failed: {e}"),
        )
    })
}

/// The sandbox an in-sandbox request is for, checked by [`gate`].
#[derive(Debug, Clone)]
pub struct Sandbox(pub String);

/// The routes, behind the gate.
pub fn router(api: Arc<Api>) -> Router {
    let rpc = |path: &str| format!("/{path}");
    Router::new()
        .route("/v2/sandboxes", post(control::create).get(control::list))
        .route("/sandboxes", get(control::list))
        .route("/v2/sandboxes/{id}/connect", post(control::connect))
        .route("/sandboxes/{id}/connect", post(control::connect))
        .route("/sandboxes/{id}/resume", post(control::connect))
        .route("/sandboxes/{id}", get(control::get).delete(control::kill))
        .route("/sandboxes/{id}/timeout", post(control::set_timeout))
        .route("/sandboxes/{id}/pause", post(control::pause))
        .route("/sandboxes/{id}/metrics", get(control::metrics))
        .route("/health", get(health))
        .route(
            "/files",
            get(files::read)
                .post(files::write)
                .layer(DefaultBodyLimit::max(files::MAX_UPLOAD_BYTES + (1 << 20))),
        )
        .route(&rpc("process.Process/Start"), post(process::start))
        .route(&rpc("process.Process/Connect"), post(process::connect))
        .route(&rpc("process.Process/List"), post(process::list))
        .route(
            &rpc("process.Process/SendInput"),
            post(process::send_input_rpc),
        )
        .route(
            &rpc("process.Process/StreamInput"),
            post(process::stream_input),
        )
        .route(
            &rpc("process.Process/SendSignal"),
            post(process::send_signal),
        )
        .route(&rpc("process.Process/Update"), post(process::update))
        .route(
            &rpc("process.Process/CloseStdin"),
            post(process::close_stdin),
        )
        .route(&rpc("filesystem.Filesystem/Stat"), post(files::stat))
        .route(&rpc("filesystem.Filesystem/MakeDir"), post(files::make_dir))
        .route(&rpc("filesystem.Filesystem/Move"), post(files::rename))
        .route(&rpc("filesystem.Filesystem/ListDir"), post(files::list_dir))
        .route(&rpc("filesystem.Filesystem/Remove"), post(files::remove))
        .route(
            &rpc("filesystem.Filesystem/WatchDir"),
            post(files::watch_dir),
        )
        .route(
            &rpc("filesystem.Filesystem/CreateWatcher"),
            post(files::create_watcher),
        )
        .route(
            &rpc("filesystem.Filesystem/GetWatcherEvents"),
            post(files::watcher_events),
        )
        .route(
            &rpc("filesystem.Filesystem/RemoveWatcher"),
            post(files::remove_watcher),
        )
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(api.clone(), gate))
        .with_state(api)
}

/// Which API a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plane {
    Control,
    /// `/files`, `/health`.
    SandboxHttp,
    /// A Connect RPC: unary, or a stream (whose errors travel inside the stream).
    SandboxRpc {
        stream: bool,
    },
}

fn plane(path: &str, headers: &HeaderMap) -> Plane {
    if path == "/files" || path == "/health" {
        Plane::SandboxHttp
    } else if path.starts_with("/process.") || path.starts_with("/filesystem.") {
        Plane::SandboxRpc {
            stream: connect::is_stream(headers),
        }
    } else {
        Plane::Control
    }
}

/// An error as the plane it happened in reports errors.
fn refuse(plane: Plane, status: StatusCode, code: Code, message: String) -> Response {
    match plane {
        Plane::Control | Plane::SandboxHttp => ApiError::new(status, message).into_response(),
        Plane::SandboxRpc { stream: true } => connect::stream_error(RpcError::new(code, message)),
        Plane::SandboxRpc { stream: false } => RpcError::new(code, message).into_response(),
    }
}

/// Lets through only requests for this server (its `Host`, no foreign browser `Origin`) with the
/// right credential: the API key for the control plane, the sandbox's token for a sandbox (which
/// must exist, be one made here, and be running).
async fn gate(State(api): State<Arc<Api>>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let plane = plane(request.uri().path(), headers);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or_default();
    if let Some((guest_port, id)) = ports::target(host, api.port) {
        return ports::proxy(api.clone(), guest_port, id, request).await;
    }
    let ours = |value: &str| api.hosts.iter().any(|h| h == value);
    if !ours(host)
        || header("origin").is_some_and(|o| {
            !ours(
                o.trim_start_matches("http://")
                    .trim_start_matches("https://"),
            )
        })
    {
        return refuse(
            plane,
            StatusCode::FORBIDDEN,
            Code::Unauthenticated,
            format!("this server answers only requests for {}", api.hosts[0]),
        );
    }
    if plane == Plane::Control {
        let presented = auth::presented_key(headers).unwrap_or_default();
        if !fsutil::same_secret(presented, &api.key) {
            return refuse(
                plane,
                StatusCode::UNAUTHORIZED,
                Code::Unauthenticated,
                "missing or wrong API key: send the key `pyro api serve` printed as X-API-KEY (set E2B_API_KEY; `pyro api env` prints it)".into(),
            );
        }
        return next.run(request).await;
    }
    let Some(id) = header("e2b-sandbox-id").map(str::to_string) else {
        return refuse(
            plane,
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "the request names no sandbox: set the E2b-Sandbox-Id header (the SDKs do)".into(),
        );
    };
    let token = header("x-access-token");
    if api.debug && id == debug::SANDBOX_ID && token.is_none() {
        let found = {
            let api = api.clone();
            to_the_end(async move { debug::sandbox(&api).await }).await
        };
        return match found.and_then(|found| found) {
            Ok(id) => {
                request.extensions_mut().insert(Sandbox(id));
                next.run(request).await
            }
            Err(err) => refuse(plane, err.status, Code::Unavailable, err.message),
        };
    }
    if !fsutil::same_secret(token.unwrap_or_default(), &api.token(&id)) {
        return refuse(
            plane,
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            format!("missing or wrong access token for sandbox '{id}': use the sandbox object `Sandbox.create` or `Sandbox.connect` returned"),
        );
    }
    match sandboxes::is_running(&api.dirs, &id) {
        Ok(true) => {}
        Ok(false) => {
            // Worded so the SDKs raise their "sandbox not running" error.
            return refuse(
                plane,
                StatusCode::BAD_GATEWAY,
                Code::Unavailable,
                format!("sandbox '{id}' was not found running: it is paused (hint: `Sandbox.connect('{id}')` resumes it)"),
            );
        }
        Err(err) => return refuse(plane, err.status, Code::NotFound, err.message),
    }
    request.extensions_mut().insert(Sandbox(id));
    next.run(request).await
}

async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn unknown_route(request: Request) -> Response {
    let plane = plane(request.uri().path(), request.headers());
    refuse(
        plane,
        StatusCode::NOT_FOUND,
        Code::Unimplemented,
        format!(
            "no route {} {}: pyro serves the E2B sandbox API (see docs/e2b.md for what is supported)",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Where the server writes the address and key it serves with, for scripts.
pub fn env_path(dirs: &Dirs) -> PathBuf {
    dirs.state().join("api").join("env")
}

/// The environment variables that point the SDKs at a server on `port`.
pub fn sdk_env(dirs: &Dirs, port: u16) -> Result<Vec<(&'static str, String)>> {
    let key = auth::load_or_create_key(dirs.state())?;
    let url = format!("http://127.0.0.1:{port}");
    Ok(vec![
        ("E2B_API_URL", url.clone()),
        ("E2B_SANDBOX_URL", url),
        ("E2B_API_KEY", key),
    ])
}

/// Serves until interrupted; with `debug_sandbox`, SDKs in debug mode too (see [`debug`]).
pub async fn serve(dirs: Dirs, port: u16, debug_sandbox: bool) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot listen on 127.0.0.1:{port}: {e}"),
            )
            .with_hint("another server may hold the port: give another with --port")
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot read the listening port: {e}"),
            )
        })?
        .port();
    let key = auth::load_or_create_key(dirs.state())?;
    let env = sdk_env(&dirs, port)?;
    let exports: String = env
        .iter()
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect();
    fsutil::write_atomic_mode(&env_path(&dirs), exports.as_bytes(), 0o600)?;
    eprintln!("pyro api serve: the E2B API on http://127.0.0.1:{port}");
    eprintln!(
        "pyro api serve: point the e2b SDKs here with (also in {}):",
        env_path(&dirs).display()
    );
    eprint!("{exports}");
    if debug_sandbox {
        eprintln!("pyro api serve: or, for the SDKs' debug mode (one shared sandbox, no credentials: any local process can use it):");
        eprintln!("export E2B_DEBUG=true");
        if port != DEFAULT_PORT {
            eprintln!("export E2B_SANDBOX_URL=http://127.0.0.1:{port}");
        }
    }
    let api = Arc::new(Api {
        dirs,
        key,
        hosts: vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")],
        port,
        debug: debug_sandbox,
        debug_sandbox: tokio::sync::Mutex::new(None),
        output_pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        port_slots: Arc::new(tokio::sync::Semaphore::new(ports::MAX_AT_ONCE)),
    });
    let service = hyper_util::service::TowerToHyperService::new(router(api));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let accept = async {
        loop {
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| Error::internal(format!("connection limit: {e}")))?;
            let (stream, _) = listener.accept().await.map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot accept a connection: {e}"))
            })?;
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                drop(permit);
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), Error>(())
    };
    tokio::select! {
        result = accept => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("pyro api serve: stopped (sandboxes keep running; their idle timeout stops them)");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    #[test]
    fn paths_belong_to_their_plane() {
        let none = HeaderMap::new();
        assert_eq!(plane("/v2/sandboxes", &none), Plane::Control);
        assert_eq!(plane("/files", &none), Plane::SandboxHttp);
        assert_eq!(
            plane("/process.Process/List", &none),
            Plane::SandboxRpc { stream: false }
        );
        let mut stream = HeaderMap::new();
        stream.insert(
            header::CONTENT_TYPE,
            "application/connect+json".parse().unwrap(),
        );
        assert_eq!(
            plane("/process.Process/Start", &stream),
            Plane::SandboxRpc { stream: true }
        );
    }
}
