//! The smoke pack: the five documented use cases (`docs/use-cases/*.md`), each driven through
//! `pyro mcp serve` in the mode its doc names by a real MCP client (rmcp), step by step as the doc says,
//! asserting on structured results. A doc and its smoke change together.
//!
//! Run by `scripts/smoke-use-cases.sh` (and so by `scripts/test.sh` and CI), which prints each case's
//! wall time.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../vm/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../vm/mcp_client.rs"]
mod mcp_client;

mod cases;
