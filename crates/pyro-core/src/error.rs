//! One error type for every operation: a kind (stable, machine-readable), a message that says what went
//! wrong, and a hint that says what to do next.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure; serialized as the `kind` of a JSON error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The caller asked for something invalid.
    InvalidArgument,
    /// An environment name that is not in the catalog.
    UnknownEnvironment,
    /// A workspace (or another named object) that does not exist.
    NotFound,
    /// The object is in the wrong state for the operation (e.g. a stopped workspace).
    InvalidState,
    /// A host program pyro needs is not installed.
    MissingTool,
    /// Building an environment failed.
    EnvironmentBuild,
    /// The engine (QEMU) failed to start or died.
    Engine,
    /// The guest did not become ready in time.
    BootTimeout,
    /// The guest agent refused or failed a request.
    Guest,
    /// The peer broke the protocol or speaks another version.
    Protocol,
    /// A file-system or other I/O failure on the host.
    Io,
    /// The operation was interrupted (Ctrl-C).
    Interrupted,
    /// A bug in pyro.
    Internal,
}

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// An I/O failure on `path`, naming the path.
    pub fn io(what: &str, path: &Path, err: std::io::Error) -> Error {
        Error::new(
            ErrorKind::Io,
            format!("cannot {what} {}: {err}", path.display()),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The JSON form: `{"kind": ..., "message": ..., "hint": ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "kind": self.kind, "message": self.message, "hint": self.hint })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
