//! pyro's MCP surface: the server chat hosts start (`pyro mcp serve`), its tool sets (profiles and
//! use-case modes), and the onramp that connects a chat host to it (`pyro host ...`).

pub mod hosts;
pub mod http;
mod next_step;
mod params;
pub mod probe;
pub mod registry;
pub mod serve;
pub mod server;
pub mod tools;
pub mod toolsets;
