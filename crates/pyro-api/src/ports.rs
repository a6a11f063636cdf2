//! A sandbox's ports from the host: `get_host(port)` names `{port}-{sandbox id}.localhost:{api port}`
//! (the SDKs build it from the `domain` create returns), and a request to that host is carried to
//! the port on the guest's loopback over the agent channel. As with E2B's own hosts, no credential
//! is asked for; the server listens on 127.0.0.1 only. WebSocket upgrades are not carried.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use pyro_core::workspace::tunnel;

use crate::errors::ApiError;
use crate::{sandboxes, Api};

/// The domain create and connect report, so that `get_host(port)` names a host this server serves.
pub fn domain(api_port: u16) -> String {
    format!("localhost:{api_port}")
}

/// The guest port and sandbox a `Host` header names, if it is such a host of this server.
pub fn target(host: &str, api_port: u16) -> Option<(u16, String)> {
    let (name, port) = host.rsplit_once(':')?;
    if port.parse::<u16>().ok()? != api_port {
        return None;
    }
    let (guest_port, id) = name.strip_suffix(".localhost")?.split_once('-')?;
    Some((guest_port.parse().ok()?, id.to_string()))
}

/// Carries `request` to the sandbox's port and its answer back.
pub async fn proxy(api: Arc<Api>, guest_port: u16, id: String, request: Request) -> Response {
    match carry(&api, guest_port, &id, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn carry(
    api: &Api,
    guest_port: u16,
    id: &str,
    request: Request,
) -> Result<Response, ApiError> {
    if !sandboxes::is_running(&api.dirs, id)? {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("sandbox '{id}' is paused (hint: `Sandbox.connect('{id}')` resumes it)"),
        ));
    }
    let unreachable = |message: String| ApiError::new(StatusCode::BAD_GATEWAY, message);
    let stream = tunnel::connect(&api.dirs, id, guest_port)
        .await
        .map_err(|e| unreachable(crate::errors::with_hint(&e)))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(format!("cannot speak HTTP to port {guest_port}: {e}")))?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| {
        unreachable(format!(
            "port {guest_port} in sandbox '{id}' gave no answer: {e}"
        ))
    })?;
    Ok(response.map(Body::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_servers_port_hosts_are_targets() {
        assert_eq!(
            target("8080-0123456789ab.localhost:49983", 49983),
            Some((8080, "0123456789ab".to_string()))
        );
        assert_eq!(target("8080-0123456789ab.localhost:49984", 49983), None);
        assert_eq!(target("8080-0123456789ab.example:49983", 49983), None);
        assert_eq!(target("127.0.0.1:49983", 49983), None);
        assert_eq!(target("x-0123456789ab.localhost:49983", 49983), None);
    }
}
