//! MCP benchmark, side by side in one run (medians):
//!
//! - server start to ready (`pyro mcp serve` spawned until `initialize` is answered);
//! - `tools/list` latency on a connected client;
//! - `workspace_exec` of `true` through MCP against the same exec through the CLI, each minus the guest's
//!   own measured process time: what MCP adds over the CLI (target ≤ 5 ms).
//!
//! Run: `cargo build --release -p pyro-agent && cargo bench --bench mcp`

use std::process::Stdio;
use std::time::Instant;

use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::{json, Value};

const PYRO: &str = env!("CARGO_BIN_EXE_pyro");

mod support;
use support::{median, ms};

#[tokio::main]
async fn main() {
    let state = tempfile::tempdir().expect("temp dir");
    let envs = [("PYRO_STATE_DIR", state.path().to_path_buf())];
    let runs = 15;
    let spawn = || {
        let mut command = tokio::process::Command::new(PYRO);
        command
            .args(["mcp", "serve", "--profile", "workspace-core"])
            .envs(envs.clone());
        TokioChildProcess::builder(command)
            .stderr(Stdio::null())
            .spawn()
            .expect("pyro mcp serve")
            .0
    };

    let mut starts = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let client = ().serve(spawn()).await.expect("initialize");
        starts.push(ms(start));
        client.cancel().await.ok();
    }

    let client = ().serve(spawn()).await.expect("initialize");
    let mut lists = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        client.list_all_tools().await.expect("tools/list");
        lists.push(ms(start));
    }

    let create = std::process::Command::new(PYRO)
        .args(["workspace", "create", "--id-only"])
        .envs(envs.clone())
        .output()
        .expect("workspace create");
    assert!(
        create.status.success(),
        "{}",
        String::from_utf8_lossy(&create.stderr)
    );
    let id = String::from_utf8_lossy(&create.stdout).trim().to_string();

    let (mut mcp, mut cli) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let args: JsonObject = json!({"workspace_id": id, "command": "true"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let start = Instant::now();
        let result = client
            .call_tool(CallToolRequestParams::new("workspace_exec").with_arguments(args))
            .await
            .expect("exec");
        let wall = ms(start);
        let guest = result
            .structured_content
            .as_ref()
            .and_then(|v| v["duration_ms"].as_f64())
            .unwrap_or(0.0);
        mcp.push(wall - guest);

        let start = Instant::now();
        let out = std::process::Command::new(PYRO)
            .args([
                "workspace",
                "exec",
                &id,
                "--json",
                "--",
                "sh",
                "-lc",
                "true",
            ])
            .envs(envs.clone())
            .output()
            .expect("cli exec");
        let wall = ms(start);
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        cli.push(wall - result["duration_ms"].as_f64().unwrap_or(0.0));
    }
    client.cancel().await.ok();
    let _ = std::process::Command::new(PYRO)
        .args(["workspace", "delete", &id])
        .envs(envs.clone())
        .output();

    let (mcp, cli) = (median(mcp), median(cli));
    println!("runs: {runs} (medians)");
    println!(
        "server start to ready for initialize     {:7.1} ms",
        median(starts)
    );
    println!(
        "tools/list                               {:7.2} ms",
        median(lists)
    );
    println!("workspace_exec through MCP, overhead     {mcp:7.1} ms  (round trip minus the guest's process time)");
    println!("workspace exec through the CLI, overhead {cli:7.1} ms");
    println!(
        "MCP adds over the CLI                    {:7.1} ms  (target <= 5 ms)",
        mcp - cli
    );
}
