//! A sandbox's ports from the host: `get_host(port)` names `{port}-{sandbox id}.localhost:{api port}`
//! (the SDKs build it from the `domain` create returns), and a request to that host is carried to
//! the port on the guest's loopback over the agent channel. Sandbox ids are no secret on a shared
//! host (they are in process lists), so a request must carry the sandbox's traffic token
//! (`e2b-traffic-access-token`, as E2B's private sandboxes want) unless the sandbox was made with
//! `allow_public_traffic`. WebSocket upgrades are not carried.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use pyro_core::vocab::WorkspaceState;
use pyro_core::workspace::tunnel;

use crate::errors::ApiError;
use crate::{sandboxes, Api};

/// Requests carried to sandboxes' ports at once, at most.
pub const MAX_AT_ONCE: usize = 64;
/// A sandbox's port must answer a request's headers within this.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The header a request to a sandbox's port carries its traffic token in.
pub const TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// The domain create and connect report, so that `get_host(port)` names a host this server serves.
pub fn domain(api_port: u16) -> String {
    format!("localhost:{api_port}")
}

/// The guest port and sandbox a `Host` header names, if it is such a host of this server.
pub fn target(host: &str, api_port: u16) -> Option<(u16, String)> {
    let host = host.to_ascii_lowercase();
    let (name, port) = host.rsplit_once(':')?;
    if port != api_port.to_string() {
        return None;
    }
    let (guest_port, id) = name
        .trim_end_matches('.')
        .strip_suffix(".localhost")?
        .split_once('-')?;
    if !guest_port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
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
    let presented = request
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let token_ok = pyro_core::fsutil::same_secret(presented, &api.traffic_token(id));
    // Without the token nothing about the sandbox is told (not even whether it exists), unless its
    // traffic is public.
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "missing or wrong traffic token: send the sandbox's `traffic_access_token` as the \
                 {TOKEN_HEADER} header (or create the sandbox with allow_public_traffic)"
            ),
        )
    };
    let record = match sandboxes::record(&api.dirs, id) {
        Ok(record) => record,
        Err(_) if !token_ok => return Err(refused()),
        Err(err) => return Err(err),
    };
    if !token_ok && !record.labels.contains_key(sandboxes::PUBLIC_TRAFFIC_LABEL) {
        return Err(refused());
    }
    let Ok(slot) = api.port_slots.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_AT_ONCE} requests to sandboxes' ports are under way; try again"),
        ));
    };
    if record.state != WorkspaceState::Started {
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
    let response = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "port {guest_port} in sandbox '{id}' did not answer within {} s",
                    ANSWER_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|e| {
            unreachable(format!(
                "port {guest_port} in sandbox '{id}' gave no answer: {e}"
            ))
        })?;
    // The slot is held until the answer's body has been read.
    Ok(response.map(|body| Body::new(SlotBody { body, _slot: slot })))
}

/// A body that keeps its request's slot until it is dropped.
struct SlotBody<B> {
    body: B,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for SlotBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
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
        assert_eq!(target("+80-0123456789ab.localhost:49983", 49983), None);
        assert_eq!(
            target("8080-0123456789AB.LOCALHOST.:49983", 49983),
            Some((8080, "0123456789ab".to_string()))
        );
    }
}
