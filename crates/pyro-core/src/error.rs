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

/// What the caller can do next: an operation and its arguments. The core names operations, never a
/// surface's syntax; each surface spells them its own way (the CLI as a command line, MCP as a tool
/// call, or in words where it has no such tool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Next {
    /// Start a stopped workspace.
    WorkspaceStart { workspace_id: String },
    /// Stop a started workspace.
    WorkspaceStop { workspace_id: String },
    /// Copy a path out of a workspace to the host.
    WorkspaceExport { workspace_id: String, path: String },
    /// Make a workspace.
    WorkspaceCreate,
    /// List the workspaces (to find the one meant).
    WorkspaceList,
    /// Rename or relabel a workspace.
    WorkspaceUpdate { workspace_id: String },
    /// Show the diff of a workspace against its baseline (a patch to apply).
    WorkspaceDiff { workspace_id: String },
    /// List a workspace's snapshots.
    SnapshotList { workspace_id: String },
    /// List the environments.
    EnvList,
    /// Check the host.
    Doctor,
    /// Start the MCP server with more host directories its tools may use.
    AllowHostPath,
    /// Install pyro and its guest agent again (they come from different builds, or one is missing).
    Reinstall,
    /// Make the warm templates of an environment (anew, with `force`).
    Prepare {
        environment: String,
        vcpu_count: u8,
        mem_mib: u32,
        force: bool,
    },
}

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// Advice in words that hold for every surface.
    hint: Option<String>,
    /// The operation that helps, for each surface to spell.
    next: Option<Next>,
    /// The failure this one happened because of, kept whole (its hint and next step included).
    source: Option<Box<Error>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            hint: None,
            next: None,
            source: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_next(mut self, next: Next) -> Error {
        self.next = Some(next);
        self
    }

    /// This error as the cause of a wider one: same kind, `message` on top, this kept as the source
    /// (its hint and next step still shown).
    pub fn context(self, message: impl Into<String>) -> Error {
        Error {
            kind: self.kind,
            message: message.into(),
            hint: None,
            next: None,
            source: Some(Box::new(self)),
        }
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

    /// The advice of this error, else of the nearest cause that has some.
    pub fn hint(&self) -> Option<&str> {
        self.chain().find_map(|e| e.hint.as_deref())
    }

    /// The next step of this error, else of the nearest cause that has one.
    pub fn next(&self) -> Option<&Next> {
        self.chain().find_map(|e| e.next.as_ref())
    }

    /// The messages of the causes, outermost first (this error's own message not included).
    pub fn causes(&self) -> Vec<&str> {
        self.chain().skip(1).map(|e| e.message.as_str()).collect()
    }

    fn chain(&self) -> impl Iterator<Item = &Error> {
        std::iter::successors(Some(self), |e| e.source.as_deref())
    }

    /// The JSON form, with the hint and the next step as a surface spelled them: `{"kind",
    /// "message" (with its causes), "hint", "next", "causes"}` (the last two only when there are
    /// some).
    pub fn to_json_with(
        &self,
        hint: Option<String>,
        next: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let mut json =
            serde_json::json!({ "kind": self.kind, "message": self.to_string(), "hint": hint });
        if let Some(next) = next {
            json["next"] = next;
        }
        let causes = self.causes();
        if !causes.is_empty() {
            json["causes"] = serde_json::json!(causes);
        }
        json
    }
}

/// The message with its causes: `outer: cause: deeper cause`.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for cause in self.causes() {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_error_keeps_its_cause_hint_and_next_step() {
        let inner = Error::new(ErrorKind::InvalidState, "workspace w is stopped")
            .with_hint("its disk is kept")
            .with_next(Next::WorkspaceStart {
                workspace_id: "w".into(),
            });
        let outer = inner.context("cannot read the file");
        assert_eq!(outer.kind(), ErrorKind::InvalidState);
        assert_eq!(outer.hint(), Some("its disk is kept"));
        assert_eq!(outer.causes(), ["workspace w is stopped"]);
        assert_eq!(
            outer.to_string(),
            "cannot read the file: workspace w is stopped"
        );
        let next = serde_json::to_value(outer.next()).unwrap();
        let json = outer.to_json_with(outer.hint().map(str::to_string), Some(next));
        assert_eq!(json["next"]["action"], "workspace_start");
        assert_eq!(json["next"]["workspace_id"], "w");
        assert_eq!(json["causes"][0], "workspace w is stopped");
    }
}
