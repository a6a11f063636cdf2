//! Control-plane errors as the SDKs parse them: the HTTP status, and a JSON body whose `code` repeats
//! it (one SDK reads the body's code, not the status) and whose `message` carries pyro's hint.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pyro_core::{Error as CoreError, ErrorKind};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

/// The message, then the hint and the causes, as one line of text.
pub fn with_hint(err: &CoreError) -> String {
    let mut text = err.message().to_string();
    for cause in err.causes() {
        text.push_str(": ");
        text.push_str(cause);
    }
    if let Some(hint) = err.hint() {
        text.push_str(" (hint: ");
        text.push_str(hint);
        text.push(')');
    }
    text
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> ApiError {
        let status = match err.kind() {
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            // The SDKs raise their "not found" only for a sandbox; an unknown template is a 400 there.
            ErrorKind::UnknownEnvironment => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::InvalidState => StatusCode::CONFLICT,
            ErrorKind::BootTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, with_hint(&err))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.status.as_u16(), "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        // Retrying would not change pyro's answer; one SDK retries some statuses unless told not to.
        response.headers_mut().insert(
            "should-retry",
            axum::http::HeaderValue::from_static("false"),
        );
        response
    }
}
