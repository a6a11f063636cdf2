//! Interactive benchmark, through a real MCP client (medians):
//!
//! - shell round trip: `shell_write` of a line, then `shell_read` until its output has come back,
//!   measured from the host (target: ≤ 30 ms over the guest's own time, which for an `echo` in an
//!   interactive bash is a few milliseconds);
//! - service start to ready: `service_start` of a trivial HTTP server (`python3 -m http.server`) with an
//!   `http` readiness check, on `debian:12-build`, reported.
//!
//! Run: `cargo build --release -p pyro-agent && cargo bench --bench interactive`

use std::process::Stdio;
use std::time::Instant;

use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

const PYRO: &str = env!("CARGO_BIN_EXE_pyro");

mod support;
use support::{median, ms};

async fn call(client: &RunningService<RoleClient, ()>, tool: &'static str, args: Value) -> Value {
    let args: JsonObject = args.as_object().cloned().unwrap_or_default();
    let result = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let value = result.structured_content.unwrap_or(Value::Null);
    assert_ne!(result.is_error, Some(true), "{tool}: {value}");
    value
}

#[tokio::main]
async fn main() {
    let state = tempfile::tempdir().expect("temp dir");
    let mut command = tokio::process::Command::new(PYRO);
    command
        .args(["mcp", "serve", "--profile", "workspace-full"])
        .env("PYRO_STATE_DIR", state.path())
        .current_dir(state.path());
    let transport = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .expect("pyro mcp serve")
        .0;
    let client = ().serve(transport).await.expect("initialize");
    let runs = 15;

    let ws = call(
        &client,
        "workspace_create",
        json!({"environment": "debian:12-build"}),
    )
    .await;
    let id = ws["workspace_id"].as_str().expect("id").to_string();

    let shell = call(&client, "shell_open", json!({"workspace_id": id})).await;
    let shell_id = shell["shell_id"].as_str().expect("shell id").to_string();
    let first = call(
        &client,
        "shell_read",
        json!({"workspace_id": id, "shell_id": shell_id, "wait_for_idle_ms": 1000}),
    )
    .await;
    let mut cursor = first["next_cursor"].as_u64().unwrap_or(0);
    let mut round_trips = Vec::new();
    for i in 0..runs {
        let marker = format!("mark{i}x");
        let start = Instant::now();
        call(
            &client,
            "shell_write",
            json!({"workspace_id": id, "shell_id": shell_id, "input": format!("echo {marker}")}),
        )
        .await;
        let mut seen = String::new();
        for attempt in 0.. {
            assert!(attempt < 500, "no echo of {marker} in: {seen:?}");
            let read = call(
                &client,
                "shell_read",
                json!({"workspace_id": id, "shell_id": shell_id, "cursor": cursor}),
            )
            .await;
            cursor = read["next_cursor"].as_u64().unwrap_or(cursor);
            seen.push_str(read["output"].as_str().unwrap_or(""));
            // The typed line is echoed, then the output: the marker ends a line twice.
            if seen.matches(&format!("{marker}\r\n")).count() >= 2 {
                break;
            }
        }
        round_trips.push(ms(start));
    }

    eprintln!("shell round trips done");
    let mut ready = Vec::new();
    for i in 0..5 {
        eprintln!("service {i}");
        let start = Instant::now();
        let service = call(
            &client,
            "service_start",
            json!({"workspace_id": id, "service_name": format!("web{i}"),
                   "command": format!("exec python3 -m http.server {}", 8000 + i),
                   "ready_http": format!("http://127.0.0.1:{}/", 8000 + i), "ready_interval_ms": 50}),
        )
        .await;
        ready.push(ms(start));
        assert_eq!(service["state"], "running", "{service}");
        call(
            &client,
            "service_stop",
            json!({"workspace_id": id, "service_name": format!("web{i}")}),
        )
        .await;
    }
    call(&client, "workspace_delete", json!({"workspace_id": id})).await;
    client.cancel().await.ok();

    println!("runs: shell {runs}, service 5 (medians)");
    println!(
        "shell round trip (write a line, read its output) {:7.1} ms  (target <= 30 ms over the guest's own time)",
        median(round_trips)
    );
    println!(
        "service start to ready (python3 -m http.server)  {:7.0} ms",
        median(ready)
    );
}
