//! The Connect protocol, JSON codec only: what the e2b SDKs speak to a sandbox's in-VM API.
//!
//! Unary calls are a bare JSON body both ways; an error is a non-200 status with
//! `{"code": "<connect code>", "message": …}`. Streams are 5-byte envelopes (flags, u32 big-endian
//! length) of JSON messages, ended by an end-of-stream envelope (flag 0x02) holding `{}` or
//! `{"error": …}`; a stream's error travels there, under HTTP 200, because one SDK reads only that.
//! The codec is a page of code, so it is written here rather than taken from a crate built around
//! generated protobuf types the SDKs never send.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use pyro_core::{Error as CoreError, ErrorKind};
use serde::Serialize;

/// The content type of a stream; one SDK compares it exactly, parameters and all.
pub const STREAM_CONTENT_TYPE: &str = "application/connect+json";
/// Envelope flag of the end-of-stream message.
const END_STREAM: u8 = 0x02;
/// Envelope flag of a compressed message (never sent by the SDKs' JSON codec, refused here).
const COMPRESSED: u8 = 0x01;
/// The largest request message accepted.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// A Connect error code and what to tell the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    Unauthenticated,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    DeadlineExceeded,
    Unimplemented,
    Unavailable,
    Internal,
}

impl Code {
    pub fn name(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::Unauthenticated => "unauthenticated",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::FailedPrecondition => "failed_precondition",
            Code::ResourceExhausted => "resource_exhausted",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Unimplemented => "unimplemented",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }

    /// The HTTP status a unary error carries (the Connect protocol's mapping).
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> RpcError {
        RpcError::new(Code::InvalidArgument, message)
    }

    fn body(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code.name(), "message": self.message})
    }
}

/// pyro's error in Connect's terms, its hint appended so the SDK's exception carries it.
impl From<CoreError> for RpcError {
    fn from(err: CoreError) -> RpcError {
        let code = match err.kind() {
            ErrorKind::InvalidArgument | ErrorKind::UnknownEnvironment => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::InvalidState => Code::FailedPrecondition,
            ErrorKind::BootTimeout => Code::DeadlineExceeded,
            ErrorKind::Engine | ErrorKind::Interrupted => Code::Unavailable,
            _ => Code::Internal,
        };
        RpcError::new(code, crate::errors::with_hint(&err))
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        (self.code.status(), axum::Json(self.body())).into_response()
    }
}

/// A unary success: the message as a bare JSON body.
pub fn unary<T: Serialize>(message: &T) -> Response {
    axum::Json(message).into_response()
}

/// One envelope holding `message`.
pub fn envelope<T: Serialize>(message: &T) -> Bytes {
    frame(
        0,
        &serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// The end-of-stream envelope: success, or the error the stream ended with.
pub fn end_of_stream(error: Option<&RpcError>) -> Bytes {
    let body = match error {
        Some(error) => serde_json::json!({"error": error.body()}),
        None => serde_json::json!({}),
    };
    frame(END_STREAM, body.to_string().as_bytes())
}

fn frame(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// A stream response whose body is `body` (envelopes, then the end-of-stream one).
pub fn stream_response(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(STREAM_CONTENT_TYPE),
    );
    response
}

/// A stream that fails before its first message: HTTP 200 and the error at the end of the stream.
pub fn stream_error(error: RpcError) -> Response {
    stream_response(Body::from(end_of_stream(Some(&error))))
}

/// Splits a streaming request body into its messages. Refuses compressed, oversized or cut-off
/// envelopes; an end-of-stream envelope from the client ends the list.
pub fn messages(mut body: &[u8]) -> Result<Vec<&[u8]>, RpcError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 {
            return Err(RpcError::invalid("a stream envelope is cut short"));
        }
        let flags = body[0];
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if flags & COMPRESSED != 0 {
            return Err(RpcError::invalid(
                "compressed messages are not supported; send identity-encoded JSON",
            ));
        }
        if length > MAX_MESSAGE_BYTES {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("a message of {length} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"),
            ));
        }
        let rest = &body[5..];
        if rest.len() < length {
            return Err(RpcError::invalid("a stream envelope is cut short"));
        }
        if flags & END_STREAM != 0 {
            break;
        }
        out.push(&rest[..length]);
        body = &rest[length..];
    }
    Ok(out)
}

/// The request's message: the bare body of a unary call, or the first envelope of a stream.
pub fn request_message<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, RpcError> {
    let raw = if is_stream(headers) {
        *messages(body)?
            .first()
            .ok_or_else(|| RpcError::invalid("the stream carried no request message"))?
    } else {
        body
    };
    let raw = if raw.is_empty() { &b"{}"[..] } else { raw };
    serde_json::from_slice(raw).map_err(|e| RpcError::invalid(format!("malformed request: {e}")))
}

pub fn is_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/connect+"))
}

/// The call's deadline (`Connect-Timeout-Ms`), if the client set one.
pub fn timeout_ms(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_end_the_stream() {
        let mut body = envelope(&serde_json::json!({"a": 1})).to_vec();
        body.extend_from_slice(&end_of_stream(None));
        let messages = messages(&body).unwrap();
        assert_eq!(messages, vec![&br#"{"a":1}"#[..]]);
        let end = end_of_stream(Some(&RpcError::new(Code::NotFound, "gone")));
        assert_eq!(end[0], END_STREAM);
        let json: serde_json::Value = serde_json::from_slice(&end[5..]).unwrap();
        assert_eq!(json["error"]["code"], "not_found");
    }

    #[test]
    fn bad_envelopes_are_refused() {
        assert!(messages(&[0, 0, 0]).is_err());
        assert!(messages(&[0, 0, 0, 0, 9, b'{']).is_err());
        assert!(messages(&[COMPRESSED, 0, 0, 0, 0]).is_err());
        assert!(messages(&[0, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
