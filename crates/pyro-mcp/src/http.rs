//! The streamable HTTP transport, on 127.0.0.1 only, behind a bearer token.
//!
//! Any local process (and, without pyro's gateway, any networked guest) could reach a loopback port,
//! and the tools read and write host paths: so every request must carry the token this server
//! generated at start (printed once, and written 0600 under the state dir for scripts), name this
//! server in `Host`, and come from no foreign browser `Origin`. Slow or numerous clients are bounded.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::{Request, Response, StatusCode};
use pyro_core::{fsutil, Error, ErrorKind, Result};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

use crate::server::PyroServer;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the token of the server on `port` is written.
pub fn token_path(state: &Path, port: u16) -> PathBuf {
    state.join("mcp").join(format!("http-{port}.token"))
}

pub async fn serve(server: PyroServer, port: u16, state: &Path) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot listen on 127.0.0.1:{port}: {e}"),
            )
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
    let token = fsutil::random_hex(32)?;
    let token_file = token_path(state, port);
    fsutil::create_dir_all(token_file.parent().unwrap_or(state))?;
    fsutil::write_atomic_mode(&token_file, format!("{token}\n").as_bytes(), 0o600)?;
    eprintln!("pyro mcp serve: listening on http://127.0.0.1:{port}/mcp");
    eprintln!(
        "pyro mcp serve: send `Authorization: Bearer {token}` (also in {})",
        token_file.display()
    );
    let hosts = [format!("127.0.0.1:{port}"), format!("localhost:{port}")];
    let config = StreamableHttpServerConfig::default().with_allowed_hosts(hosts.clone());
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let gate = Arc::new(Gate {
        token,
        hosts,
        origins: [
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
        ],
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let result = async {
        loop {
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| Error::internal(format!("connection limit: {e}")))?;
            let (stream, _) = listener.accept().await.map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot accept a connection: {e}"))
            })?;
            let service = service.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let handler =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        let gate = gate.clone();
                        async move {
                            Ok::<_, Infallible>(match gate.check(&request) {
                                Ok(()) => service.handle(request).await,
                                Err(status) => refuse(status),
                            })
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                    .await;
                drop(permit);
            });
        }
    }
    .await;
    let _ = std::fs::remove_file(&token_file);
    result
}

struct Gate {
    token: String,
    hosts: [String; 2],
    origins: [String; 2],
}

impl Gate {
    /// The status to refuse `request` with, if it is not for this server from a holder of its token.
    fn check<B>(&self, request: &Request<B>) -> std::result::Result<(), StatusCode> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let host = header("host").unwrap_or_default();
        if !self.hosts.contains(&host) {
            return Err(StatusCode::FORBIDDEN);
        }
        if let Some(origin) = header("origin") {
            if !self.origins.contains(&origin) {
                return Err(StatusCode::FORBIDDEN);
            }
        }
        let presented = header("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
            .unwrap_or_default();
        if !fsutil::same_secret(&presented, &self.token) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        Ok(())
    }
}

fn refuse(status: StatusCode) -> Response<BoxBody<Bytes, Infallible>> {
    let mut response = Response::new(Empty::<Bytes>::new().boxed());
    *response.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            "www-authenticate",
            hyper::header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/mcp");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_this_servers_token_host_and_origin_pass() {
        let gate = Gate {
            token: "t0k".into(),
            hosts: ["127.0.0.1:5".into(), "localhost:5".into()],
            origins: ["http://127.0.0.1:5".into(), "http://localhost:5".into()],
        };
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            std::result::Result<(), StatusCode>,
        );
        let cases: &[Case] = &[
            (
                &[("host", "127.0.0.1:5"), ("authorization", "Bearer t0k")],
                Ok(()),
            ),
            (&[("host", "127.0.0.1:5")], Err(StatusCode::UNAUTHORIZED)),
            (
                &[("host", "127.0.0.1:5"), ("authorization", "Bearer t0")],
                Err(StatusCode::UNAUTHORIZED),
            ),
            (
                &[("host", "10.0.2.2:5"), ("authorization", "Bearer t0k")],
                Err(StatusCode::FORBIDDEN),
            ),
            (
                &[
                    ("host", "localhost:5"),
                    ("authorization", "Bearer t0k"),
                    ("origin", "http://evil.example"),
                ],
                Err(StatusCode::FORBIDDEN),
            ),
            (
                &[
                    ("host", "localhost:5"),
                    ("authorization", "Bearer t0k"),
                    ("origin", "http://localhost:5"),
                ],
                Ok(()),
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(gate.check(&request(headers)), *expected, "{headers:?}");
        }
    }
}
