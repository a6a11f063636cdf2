//! Tests with real microVMs (TCG where KVM is not usable). One module per topic.
//!
//! Every test gets its own state dir; they share one environment cache (built once, by whichever test
//! gets the pull lock first). At most two VMs boot at once, except in the test that proves four
//! parallel runs work, which runs alone.

// Test helpers, not only `#[test]` functions, fail the test at the first surprise.
#![allow(clippy::unwrap_used)]

mod crash;
mod daily;
mod disk_tools;
mod e2b;
mod env_cache;
mod exhaustion;
mod hostprogs;
mod mcp;
mod mcp_client;
mod nethost;
mod run_basics;
mod run_failures;
mod secrets;
mod services;
mod shells;
mod snapshots;
mod support;
mod suspend;
mod trust;
mod workspaces;
