//! pyro's MCP surface: the server chat hosts start (`pyro mcp serve`), its tool sets (profiles and
//! use-case modes), and the onramp that connects a chat host to it (`pyro host ...`).

pub mod hosts;
pub mod http;
mod params;
pub mod probe;
pub mod serve;
pub mod server;
pub mod toolsets;
