//! What an MCP tool is: one typed value ([`ToolDef`]) holding its name, description, annotations,
//! parameter type and the core call it makes. `tools/list`, dispatch, `pyro mcp tools` and the docs
//! all read these values, so adding a tool is one value plus its core function.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use pyro_core::Error;
use rmcp::handler::server::tool::schema_for_type;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::server::PyroServer;

/// A tool call under way: its result as JSON (the library's serde result), or the error.
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<Value, Error>> + Send>>;

/// What a tool call may use: the server (its directories, project, roots) and the request (for
/// cancellation).
#[derive(Clone)]
pub struct Call {
    pub server: PyroServer,
    pub context: RequestContext<RoleServer>,
}

/// The MCP tool annotations hosts use to decide what to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    /// Changes nothing (in the VM or on the host).
    pub read_only: bool,
    /// May throw work away (a reset, a delete).
    pub destructive: bool,
    /// Calling it again with the same arguments changes nothing more.
    pub idempotent: bool,
    /// May reach the world outside (commands in a VM that has a network).
    pub open_world: bool,
}

impl Hints {
    pub const READ: Hints = Hints {
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
    pub const CHANGE: Hints = Hints {
        read_only: false,
        destructive: false,
        idempotent: false,
        open_world: false,
    };
    /// A change that has the same effect however often it is made.
    pub const SET: Hints = Hints {
        idempotent: true,
        ..Hints::CHANGE
    };
    pub const DESTRUCTIVE: Hints = Hints {
        destructive: true,
        ..Hints::CHANGE
    };
    /// Runs commands, which may use a network when the VM has one.
    pub const COMMAND: Hints = Hints {
        open_world: true,
        ..Hints::CHANGE
    };

    /// The annotations' names that hold, for tables.
    pub fn words(self) -> Vec<&'static str> {
        [
            (self.read_only, "read-only"),
            (self.destructive, "destructive"),
            (self.idempotent, "idempotent"),
            (self.open_world, "open-world"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect()
    }
}

/// One tool, typed by its parameters `P` (which give both its input schema and its parsing).
pub struct ToolDef<P> {
    pub name: &'static str,
    pub description: &'static str,
    pub hints: Hints,
    /// Arguments left out of the schema where the server gives VMs no network.
    pub network_args: &'static [&'static str],
    pub run: fn(P, Call) -> ToolFuture,
    pub params: PhantomData<fn() -> P>,
}

/// A tool whatever its parameter type: what tables, `tools/list` and dispatch use.
pub trait ToolSpec: Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn hints(&self) -> Hints;
    /// The input schema; without the network arguments unless `network` is offered.
    fn input_schema(&self, network: bool) -> Arc<JsonObject>;
    /// Parses the arguments (unknown ones refused, naming the valid ones) and makes the call.
    fn call(&self, args: Option<JsonObject>, call: Call) -> ToolFuture;

    /// The MCP tool as `tools/list` gives it.
    fn tool(&self, network: bool) -> Tool {
        let hints = self.hints();
        Tool::new(self.name(), self.description(), self.input_schema(network)).with_annotations(
            ToolAnnotations::new()
                .read_only(hints.read_only)
                .destructive(hints.destructive)
                .idempotent(hints.idempotent)
                .open_world(hints.open_world),
        )
    }
}

impl<P: DeserializeOwned + JsonSchema + 'static> ToolSpec for ToolDef<P> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn description(&self) -> &'static str {
        self.description
    }

    fn hints(&self) -> Hints {
        self.hints
    }

    fn input_schema(&self, network: bool) -> Arc<JsonObject> {
        let mut schema = (*schema_for_type::<P>()).clone();
        schema.remove("$schema");
        schema.remove("title");
        if !network {
            if let Some(Value::Object(props)) = schema.get_mut("properties") {
                for arg in self.network_args {
                    props.remove(*arg);
                }
            }
        }
        Arc::new(schema)
    }

    fn call(&self, args: Option<JsonObject>, call: Call) -> ToolFuture {
        let name = self.name;
        match serde_json::from_value::<P>(Value::Object(args.unwrap_or_default())) {
            Ok(params) => (self.run)(params, call),
            Err(e) => {
                let valid: Vec<String> = self
                    .input_schema(true)
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                let err = Error::invalid(format!("invalid arguments for {name}: {e}"))
                    .with_hint(format!("valid arguments: {}", valid.join(", ")));
                Box::pin(async move { Err(err) })
            }
        }
    }
}

/// A library result as the JSON a tool returns.
pub fn json<T: Serialize>(value: &T) -> Result<Value, Error> {
    serde_json::to_value(value)
        .map_err(|e| Error::internal(format!("cannot render the result as JSON: {e}")))
}

/// The arguments of a tool's schema with their defaults, for the docs: `name (default)`.
pub fn arguments(tool: &dyn ToolSpec) -> Vec<String> {
    let schema = tool.input_schema(true);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut names: Vec<(&String, &Value)> = props.iter().collect();
    // Required arguments first, then the rest, each group in the schema's order.
    names.sort_by_key(|(name, _)| !required.contains(&name.as_str()));
    names
        .into_iter()
        .map(|(name, prop)| match prop.get("default") {
            Some(Value::Null) | None => format!("`{name}`"),
            Some(default) => format!("`{name}` ({default})"),
        })
        .collect()
}
