//! The MCP server, driven by a real MCP client (rmcp), and the chat-host onramp.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, JsonObject};
use serde_json::{json, Value};

use crate::hostprogs;
use crate::mcp_client::{
    connect, git, http_get, ok, shell_screen, shell_screen_until, shell_type, tool_error,
};
use crate::support::{one_vm_slot, pyro_bin, stderr_of, Sandbox};

async fn tool_names(sb: &Sandbox, args: &[&str]) -> Vec<String> {
    let client = connect(sb, args, sb.root()).await;
    let names = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    client.cancel().await.unwrap();
    names
}

const CORE: &[&str] = &[
    "vm_run",
    "workspace_create",
    "workspace_list",
    "workspace_update",
    "workspace_status",
    "workspace_sync_push",
    "workspace_exec",
    "workspace_logs",
    "workspace_file_list",
    "workspace_file_read",
    "workspace_file_write",
    "workspace_patch_apply",
    "workspace_diff",
    "workspace_export",
    "workspace_reset",
    "workspace_delete",
    "workspace_summary",
];

#[tokio::test(flavor = "multi_thread")]
async fn profiles_and_modes_expose_exactly_their_tools() {
    let sb = Sandbox::new();
    assert_eq!(
        tool_names(&sb, &[]).await,
        CORE,
        "workspace-core is the default"
    );
    assert_eq!(
        tool_names(&sb, &["--profile", "workspace-core"]).await,
        CORE
    );
    assert_eq!(tool_names(&sb, &["--profile", "vm-run"]).await, ["vm_run"]);
    let mut full: Vec<&str> = CORE.to_vec();
    full.extend([
        "workspace_stop",
        "workspace_start",
        "workspace_suspend",
        "workspace_resume",
        "workspace_fork",
        "workspace_disk_export",
        "workspace_disk_list",
        "workspace_disk_read",
        "service_start",
        "service_list",
        "service_status",
        "service_logs",
        "service_stop",
        "shell_open",
        "shell_read",
        "shell_write",
        "shell_signal",
        "shell_close",
        "snapshot_create",
        "snapshot_list",
        "snapshot_delete",
        "vm_list_environments",
        "vm_create",
        "vm_start",
        "vm_stop",
        "vm_delete",
        "vm_status",
        "vm_network_info",
        "vm_exec",
        "vm_reap_expired",
    ]);
    assert_eq!(
        tool_names(&sb, &["--profile", "workspace-full"]).await,
        full
    );
    assert_eq!(
        tool_names(&sb, &["--mode", "repro-fix"]).await,
        CORE[1..].to_vec()
    );
    assert_eq!(
        tool_names(&sb, &["--mode", "inspect"]).await,
        [
            "workspace_create",
            "workspace_list",
            "workspace_status",
            "workspace_file_list",
            "workspace_file_read",
            "workspace_exec",
            "workspace_summary",
            "workspace_delete"
        ]
    );
    assert_eq!(
        tool_names(&sb, &["--mode", "cold-start"]).await,
        [
            "workspace_create",
            "workspace_list",
            "workspace_status",
            "workspace_exec",
            "workspace_logs",
            "workspace_file_list",
            "workspace_file_read",
            "workspace_file_write",
            "workspace_export",
            "workspace_summary",
            "workspace_delete",
            "service_start",
            "service_list",
            "service_status",
            "service_logs",
            "service_stop"
        ]
    );
    assert_eq!(
        tool_names(&sb, &["--mode", "review-eval"]).await,
        [
            "workspace_create",
            "workspace_list",
            "workspace_status",
            "workspace_exec",
            "workspace_logs",
            "workspace_file_list",
            "workspace_file_read",
            "workspace_diff",
            "workspace_export",
            "workspace_reset",
            "workspace_summary",
            "workspace_delete",
            "shell_open",
            "shell_read",
            "shell_write",
            "shell_signal",
            "shell_close",
            "snapshot_create",
            "snapshot_list",
            "snapshot_delete"
        ]
    );
    let client = connect(&sb, &["--mode", "inspect"], sb.root()).await;
    let instructions = client
        .peer_info()
        .and_then(|i| i.instructions.clone())
        .unwrap_or_default();
    assert!(instructions.starts_with("Inspect mode"), "{instructions}");
    client.cancel().await.unwrap();
}

#[test]
fn bad_serve_options_are_refused() {
    let sb = Sandbox::new();
    let out = sb.output(&["mcp", "serve", "--profile", "everything"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("vm-run, workspace-core, workspace-full"),
        "{}",
        stderr_of(&out)
    );
    let out = sb.output(&["mcp", "serve", "--mode", "yolo"]);
    assert!(
        stderr_of(&out).contains("repro-fix, inspect, cold-start, review-eval"),
        "{}",
        stderr_of(&out)
    );
    let out = sb.output(&["mcp", "serve", "--profile", "vm-run", "--mode", "inspect"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sb.output(&["mcp", "serve", "--project-path", "/nonexistent/project"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("is not a directory"),
        "{}",
        stderr_of(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tool_arguments_are_tool_errors_and_the_server_survives() {
    let sb = Sandbox::new();
    let client = connect(&sb, &["--profile", "workspace-full"], sb.root()).await;
    let err = tool_error(&client, "workspace_status", json!({})).await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("missing field `workspace_id`"),
        "{err}"
    );
    let err = tool_error(&client, "workspace_status", json!({"workspace_id": 5})).await;
    assert!(
        err["message"].as_str().unwrap().contains("invalid type"),
        "{err}"
    );
    let err = tool_error(
        &client,
        "workspace_file_read",
        json!({"workspace_id": "x", "path": "a", "colour": "red"}),
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{err}"
    );
    assert!(
        err["hint"].as_str().unwrap().contains("max_bytes"),
        "the hint names the valid arguments: {err}"
    );
    let err = tool_error(
        &client,
        "vm_run",
        json!({"command": "true", "allow_host_compat": true}),
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("never runs guest work on the host"),
        "{err}"
    );
    // Limits are the core's, so MCP has the CLI's: a timeout past a day is refused, before any VM.
    for (tool, args) in [
        (
            "vm_run",
            json!({"command": "true", "timeout_seconds": 86_401}),
        ),
        (
            "workspace_exec",
            json!({"workspace_id": "nope", "command": "true", "timeout_seconds": 86_401}),
        ),
    ] {
        let err = tool_error(&client, tool, args).await;
        assert_eq!(err["kind"], "invalid_argument", "{tool}: {err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("timeout_seconds must be between 1 and 86400"),
            "{tool}: {err}"
        );
    }
    let err = tool_error(&client, "workspace_create", json!({"disk_gib": 2000})).await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("disk_gib must be between 1 and 1024"),
        "{err}"
    );
    let err = tool_error(&client, "workspace_status", json!({"workspace_id": "nope"})).await;
    assert_eq!(err["kind"], "not_found");
    assert_eq!(
        ok(&client, "workspace_list", json!({})).await["count"],
        0,
        "the server still answers"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn repro_fix_through_mcp_seeded_from_the_project() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let repo = sb.scratch("repo");
    fs::create_dir_all(repo.join("src")).unwrap();
    fs::write(
        repo.join("src/calc.py"),
        "def add(a, b):\n    return a - b\n",
    )
    .unwrap();
    fs::write(
        repo.join("check.sh"),
        "grep -q 'a + b' src/calc.py && echo PASS || { echo FAIL; exit 1; }\n",
    )
    .unwrap();
    fs::write(repo.join(".gitignore"), "build/\n").unwrap();
    fs::create_dir_all(repo.join("build")).unwrap();
    fs::write(repo.join("build/artifact"), "ignored").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "init"]);
    fs::write(repo.join("notes.txt"), "untracked but not ignored\n").unwrap();

    // Started in a subdirectory of the checkout, as a chat host would.
    let client = connect(&sb, &[], &repo.join("src")).await;
    let ws = ok(&client, "workspace_create", json!({"name": "mcp-fix"})).await;
    assert_eq!(ws["workspace_seed"]["mode"], "project");
    assert_eq!(
        ws["workspace_seed"]["source"],
        fs::canonicalize(&repo).unwrap().display().to_string()
    );
    let id = ws["workspace_id"].as_str().unwrap().to_string();
    let listing = ok(
        &client,
        "workspace_file_list",
        json!({"workspace_id": id, "recursive": true}),
    )
    .await;
    let paths: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/workspace/.gitignore",
            "/workspace/check.sh",
            "/workspace/notes.txt",
            "/workspace/src",
            "/workspace/src/calc.py"
        ]
    );

    let read = ok(
        &client,
        "workspace_file_read",
        json!({"workspace_id": id, "path": "src/calc.py"}),
    )
    .await;
    assert_eq!(read["content"], "def add(a, b):\n    return a - b\n");
    let failing = ok(
        &client,
        "workspace_exec",
        json!({"workspace_id": id, "command": "sh check.sh"}),
    )
    .await;
    assert_eq!(
        (failing["exit_code"].as_i64(), failing["stdout"].as_str()),
        (Some(1), Some("FAIL\n"))
    );
    let patch = "--- a/src/calc.py\n+++ b/src/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n";
    ok(
        &client,
        "workspace_patch_apply",
        json!({"workspace_id": id, "patch": patch}),
    )
    .await;
    let passing = ok(
        &client,
        "workspace_exec",
        json!({"workspace_id": "mcp-fix", "command": "sh check.sh"}),
    )
    .await;
    assert_eq!(passing["exit_code"], 0);
    let diff = ok(&client, "workspace_diff", json!({"workspace_id": id})).await;
    assert_eq!(diff["summary"]["modified"], 1);
    let summary = ok(&client, "workspace_summary", json!({"workspace_id": id})).await;
    assert_eq!(summary["counts"]["commands"], 2);
    assert_eq!(summary["counts"]["patches"], 1);
    let reset = ok(&client, "workspace_reset", json!({"workspace_id": id})).await;
    assert_eq!(reset["reset_count"], 1);
    assert_eq!(
        ok(&client, "workspace_diff", json!({"workspace_id": id})).await["changed"],
        false
    );
    let deleted = ok(&client, "workspace_delete", json!({"workspace_id": id})).await;
    assert_eq!(deleted["deleted"], true);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_the_tool_to_call_never_a_command_line() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let client = connect(&sb, &["--profile", "workspace-full"], sb.root()).await;
    let no_command_line = |err: &Value| {
        let text = err.to_string();
        assert!(!text.contains("pyro "), "{text}");
    };
    let err = tool_error(&client, "workspace_status", json!({"workspace_id": "nope"})).await;
    assert_eq!(err["next"]["tool"], "workspace_create", "{err}");
    no_command_line(&err);
    let ws = ok(&client, "workspace_create", json!({})).await;
    let id = ws["workspace_id"].as_str().unwrap().to_string();
    ok(
        &client,
        "workspace_exec",
        json!({"workspace_id": id, "command": "printf 'a\\000b' > bin"}),
    )
    .await;
    let err = tool_error(
        &client,
        "workspace_file_read",
        json!({"workspace_id": id, "path": "bin"}),
    )
    .await;
    assert_eq!(err["next"]["tool"], "workspace_export", "{err}");
    assert_eq!(err["next"]["arguments"]["path"], "/workspace/bin", "{err}");
    no_command_line(&err);
    ok(&client, "workspace_stop", json!({"workspace_id": id})).await;
    let err = tool_error(
        &client,
        "workspace_exec",
        json!({"workspace_id": id, "command": "true"}),
    )
    .await;
    assert_eq!(err["kind"], "invalid_state");
    assert_eq!(
        err["next"],
        json!({"tool": "workspace_start", "arguments": {"workspace_id": id}})
    );
    assert!(
        err["hint"]
            .as_str()
            .unwrap()
            .contains("call workspace_start"),
        "{err}"
    );
    no_command_line(&err);
    // The stopped workspace's disk, read without a boot.
    let listed = ok(&client, "workspace_disk_list", json!({"workspace_id": id})).await;
    assert_eq!(listed["entries"][0]["path"], "/workspace/bin", "{listed}");
    let err = tool_error(
        &client,
        "workspace_disk_read",
        json!({"workspace_id": id, "path": "bin"}),
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("binary"), "{err}");
    // Exports follow the server's host path rules (this one may write nowhere).
    let image = sb.root().join("disk.img");
    let err = tool_error(
        &client,
        "workspace_disk_export",
        json!({"workspace_id": id, "output_path": image}),
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("outside the host paths"),
        "{err}"
    );
    assert!(!image.exists());
    ok(&client, "workspace_start", json!({"workspace_id": id})).await;
    let err = tool_error(&client, "workspace_disk_list", json!({"workspace_id": id})).await;
    assert_eq!(
        err["next"],
        json!({"tool": "workspace_stop", "arguments": {"workspace_id": id}})
    );
    no_command_line(&err);
    ok(&client, "workspace_delete", json!({"workspace_id": id})).await;
    client.cancel().await.unwrap();
}

/// A plain HTTP GET from the host: the body, or `None` when the connection is refused.
#[tokio::test(flavor = "multi_thread")]
async fn cold_start_serves_through_mcp_with_readiness_and_published_ports() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let repo = sb.scratch("app");
    fs::write(repo.join("index.html"), "hello from the app\n").unwrap();
    let client = connect(
        &sb,
        &[
            "--mode",
            "cold-start",
            "--project-path",
            repo.to_str().unwrap(),
        ],
        sb.root(),
    )
    .await;
    let ws = ok(
        &client,
        "workspace_create",
        json!({"environment": "debian:12-build", "network_policy": "egress+published-ports"}),
    )
    .await;
    let id = ws["workspace_id"].as_str().unwrap().to_string();
    let web = ok(
        &client,
        "service_start",
        json!({"workspace_id": id, "service_name": "web", "command": "exec python3 -m http.server 8000",
               "ready_http": "http://127.0.0.1:8000/index.html", "published_ports": [{"guest_port": 8000}]}),
    )
    .await;
    assert_eq!(web["state"], "running", "{web}");
    let published = &web["published_ports"][0];
    assert_eq!(
        (published["host"].as_str(), published["guest_port"].as_u64()),
        (Some("127.0.0.1"), Some(8000)),
        "{web}"
    );
    let host_port = published["host_port"].as_u64().unwrap() as u16;
    // Fetched from the host, through the published port.
    assert_eq!(
        http_get(host_port, "/index.html").as_deref(),
        Some("hello from the app\n")
    );
    let echo = ok(
        &client,
        "service_start",
        json!({"workspace_id": id, "service_name": "echo", "command": "exec python3 -m http.server 8001",
               "ready_tcp": "127.0.0.1:8001", "restart_on_start": true}),
    )
    .await;
    assert_eq!(echo["state"], "running", "{echo}");
    let fetched = ok(
        &client,
        "workspace_exec",
        json!({"workspace_id": id, "command": "curl -s http://127.0.0.1:8001/index.html"}),
    )
    .await;
    assert_eq!(fetched["stdout"], "hello from the app\n", "{fetched}");
    let logs = ok(
        &client,
        "service_logs",
        json!({"workspace_id": id, "service_name": "web", "tail_lines": 50}),
    )
    .await;
    assert!(
        logs["stderr"].as_str().unwrap().contains("GET /index.html"),
        "{logs}"
    );
    // A host port that is taken is a clear error, and the service does not stay half up.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let err = tool_error(
        &client,
        "service_start",
        json!({"workspace_id": id, "service_name": "busy", "command": "exec python3 -m http.server 8002",
               "ready_tcp": "127.0.0.1:8002", "published_ports": [{"guest_port": 8002, "host_port": busy}]}),
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("already in use"),
        "{err}"
    );
    let failed = ok(
        &client,
        "service_status",
        json!({"workspace_id": id, "service_name": "busy"}),
    )
    .await;
    assert_eq!(failed["stop_reason"], "published_port_failed", "{failed}");
    let err = tool_error(
        &client,
        "service_start",
        json!({"workspace_id": id, "service_name": "x", "command": "true",
               "ready_file": "a", "ready_command": "true"}),
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("one readiness check"),
        "{err}"
    );
    let listed = ok(&client, "service_list", json!({"workspace_id": id})).await;
    assert_eq!(listed["running_count"], 2, "{listed}");
    // Stopping the service frees its port.
    let stopped = ok(
        &client,
        "service_stop",
        json!({"workspace_id": id, "service_name": "web"}),
    )
    .await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert_eq!(stopped["published_ports"], json!([]), "{stopped}");
    assert_eq!(http_get(host_port, "/index.html"), None, "freed on stop");
    // So does a VM that dies.
    let again = ok(
        &client,
        "service_start",
        json!({"workspace_id": id, "service_name": "web", "command": "exec python3 -m http.server 8000",
               "ready_tcp": "127.0.0.1:8000", "published_ports": [{"guest_port": 8000}]}),
    )
    .await;
    let port = again["published_ports"][0]["host_port"].as_u64().unwrap() as u16;
    assert!(http_get(port, "/index.html").is_some());
    crate::support::signal(sb.pid_of("qemu-system").expect("QEMU runs"), libc::SIGKILL);
    crate::support::wait_until_stopped(&sb, &id, Duration::from_secs(30));
    assert_eq!(
        http_get(port, "/index.html"),
        None,
        "freed when the VM died"
    );
    ok(&client, "workspace_delete", json!({"workspace_id": id})).await;
    client.cancel().await.unwrap();
}

/// The review-eval flow: checkpoint, poke at the change in a shell, break it, roll back to the
/// checkpoint, see in a new shell that the break is gone.
#[tokio::test(flavor = "multi_thread")]
async fn review_eval_checkpoints_pokes_in_a_shell_and_rolls_back_through_mcp() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let project = sb.scratch("review");
    std::fs::write(
        project.join("CHECKLIST.md"),
        "# Review checklist\n- artifact passes\n",
    )
    .unwrap();
    std::fs::write(project.join("artifact.txt"), "PASS\n").unwrap();
    git(&project, &["init", "-q"]);
    git(&project, &["add", "."]);
    git(&project, &["commit", "-qm", "change under review"]);
    // Started in the project, as a chat host would: the workspace is a copy of it.
    let client = connect(&sb, &["--mode", "review-eval"], &project).await;
    let ws = ok(&client, "workspace_create", json!({})).await;
    let id = ws["workspace_id"].as_str().unwrap().to_string();
    let snap = ok(
        &client,
        "snapshot_create",
        json!({"workspace_id": id, "snapshot_name": "pre-review"}),
    )
    .await;
    assert_eq!(snap["snapshot"]["snapshot_name"], "pre-review", "{snap}");
    assert_eq!(snap["snapshot"]["kind"], "named", "{snap}");

    let shell = ok(&client, "shell_open", json!({"workspace_id": id})).await;
    let shell_id = shell["shell_id"].as_str().unwrap().to_string();
    let first = shell_screen(&client, &id, &shell_id, &json!(0), 700).await;
    shell_type(
        &client,
        &id,
        &shell_id,
        "cat CHECKLIST.md; echo answer=$((6*7))",
    )
    .await;
    let read = shell_screen_until(
        &client,
        &id,
        &shell_id,
        &first["next_cursor"],
        700,
        "answer=42\npyro$",
    )
    .await;
    let screen = read["output"].as_str().unwrap();
    assert!(
        screen.contains("Review checklist") && screen.contains("\nanswer=42\npyro$"),
        "{read}"
    );
    let again = ok(
        &client,
        "shell_read",
        json!({"workspace_id": id, "shell_id": shell_id, "cursor": read["next_cursor"]}),
    )
    .await;
    assert_eq!(again["output"], "", "nothing is read twice: {again}");
    let err = tool_error(
        &client,
        "shell_read",
        json!({"workspace_id": id, "shell_id": "000000000000"}),
    )
    .await;
    assert_eq!(err["kind"], "not_found", "{err}");

    // Break it from the shell, then roll back to the checkpoint.
    shell_type(
        &client,
        &id,
        &shell_id,
        "echo FAIL > artifact.txt; rm CHECKLIST.md",
    )
    .await;
    shell_screen(&client, &id, &shell_id, &read["next_cursor"], 700).await;
    let reset = ok(
        &client,
        "workspace_reset",
        json!({"workspace_id": id, "snapshot": "pre-review"}),
    )
    .await;
    assert_eq!(
        reset["workspace_reset"]["snapshot_name"], "pre-review",
        "{reset}"
    );
    assert_eq!(reset["workspace_reset"]["kind"], "named", "{reset}");
    let gone = tool_error(
        &client,
        "shell_read",
        json!({"workspace_id": id, "shell_id": shell_id}),
    )
    .await;
    assert_eq!(gone["kind"], "not_found", "shells end with a reset: {gone}");
    let shell = ok(&client, "shell_open", json!({"workspace_id": id})).await;
    let shell_id = shell["shell_id"].as_str().unwrap().to_string();
    let first = shell_screen(&client, &id, &shell_id, &json!(0), 700).await;
    shell_type(&client, &id, &shell_id, "cat artifact.txt; ls").await;
    let read = shell_screen_until(
        &client,
        &id,
        &shell_id,
        &first["next_cursor"],
        700,
        "CHECKLIST.md",
    )
    .await;
    let screen = read["output"].as_str().unwrap();
    assert!(
        screen.contains("cat artifact.txt; ls\nPASS\n") && screen.contains("CHECKLIST.md"),
        "the break is gone: {read}"
    );
    let closed = ok(
        &client,
        "shell_close",
        json!({"workspace_id": id, "shell_id": shell_id}),
    )
    .await;
    assert_eq!(closed["closed"], true, "{closed}");
    let listed = ok(&client, "snapshot_list", json!({"workspace_id": id})).await;
    let names: Vec<&str> = listed["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["baseline", "pre-review"], "{listed}");
    ok(
        &client,
        "snapshot_delete",
        json!({"workspace_id": id, "snapshot_name": "pre-review"}),
    )
    .await;
    ok(&client, "workspace_delete", json!({"workspace_id": id})).await;
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn vm_run_through_mcp_and_a_client_that_leaves_mid_call() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let client = connect(&sb, &["--profile", "vm-run"], sb.root()).await;
    let result = ok(
        &client,
        "vm_run",
        json!({"command": "echo $((6 * 7)); echo oops >&2; exit 3"}),
    )
    .await;
    assert_eq!(
        (
            result["exit_code"].as_i64(),
            result["stdout"].as_str(),
            result["stderr"].as_str()
        ),
        (Some(3), Some("42\n"), Some("oops\n"))
    );
    assert_eq!(result["command"], "echo $((6 * 7)); echo oops >&2; exit 3");

    // A call in flight when the client goes away: its VM must not outlive it.
    let pending = {
        let args: JsonObject = json!({"command": "sleep 600"})
            .as_object()
            .cloned()
            .unwrap();
        let peer = client.peer().clone();
        tokio::spawn(async move {
            peer.call_tool(CallToolRequestParams::new("vm_run").with_arguments(args))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while sb.pid_of("qemu-system").is_none() {
        assert!(Instant::now() < deadline, "the VM never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    client.cancel().await.unwrap();
    let _ = pending.await;
    assert_eq!(
        sb.wait_no_processes(Duration::from_secs(30)),
        vec![],
        "no VM, supervisor or server may survive"
    );
    assert_eq!(
        sb.leftover_vms_after(std::time::Duration::from_secs(20)),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repo_url_that_cannot_be_cloned_is_a_tool_error() {
    let sb = Sandbox::new();
    let client = connect(
        &sb,
        &["--repo-url", "file:///nonexistent/repo.git"],
        sb.root(),
    )
    .await;
    let err = tool_error(&client, "workspace_create", json!({})).await;
    assert!(
        err["message"].as_str().unwrap().contains("cannot clone"),
        "{err}"
    );
    assert_eq!(ok(&client, "workspace_list", json!({})).await["count"], 0);
    client.cancel().await.unwrap();
}

#[test]
fn host_connect_and_repair_keep_everything_else() {
    let sb = Sandbox::new();
    let home = sb.scratch("home");
    let host = |args: &[&str]| {
        sb.pyro()
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CODEX_HOME")
            .env_remove("CLAUDE_CONFIG_DIR")
            .env("PATH", "/usr/bin:/bin")
            .args(args)
            .output()
            .unwrap()
    };
    // Keys out of alphabetical order, and an OpenCode config with comments and trailing commas: they
    // come back as their owners wrote them, with only pyro's entry added.
    fs::write(home.join(".claude.json"), r#"{"theme":"dark","mcpServers":{"other":{"type":"stdio","command":"other-server","args":[]}},"autoUpdates":false}"#).unwrap();
    fs::create_dir_all(home.join(".codex")).unwrap();
    fs::write(
        home.join(".codex/config.toml"),
        "# my settings\nmodel = \"x\"\n\n[mcp_servers.other]\ncommand = \"other-server\"\n",
    )
    .unwrap();
    fs::create_dir_all(home.join(".config/opencode")).unwrap();
    let opencode_jsonc = "{\n  // my setup\n  \"theme\": \"tokyonight\",\n  \"mcp\": {\n    \"other\": {\"type\": \"local\", \"command\": [\"other-server\"]}, /* keep */\n  },\n  \"autoupdate\": false,\n}\n";
    fs::write(home.join(".config/opencode/opencode.jsonc"), opencode_jsonc).unwrap();
    fs::create_dir_all(home.join(".cursor")).unwrap();
    fs::write(
        home.join(".cursor/mcp.json"),
        r#"{"mcpServers":{"other":{"command":"other-server"}}}"#,
    )
    .unwrap();

    for name in [
        "claude-code",
        "codex",
        "opencode",
        "cursor",
        "claude-desktop",
    ] {
        let out = host(&["host", "connect", name, "--json"]);
        assert!(out.status.success(), "{name}: {}", stderr_of(&out));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["action"], "added", "{name}");
        let again: Value =
            serde_json::from_slice(&host(&["host", "connect", name, "--json"]).stdout).unwrap();
        assert_eq!(again["action"], "unchanged", "{name} is idempotent");
    }
    let claude_text = fs::read_to_string(home.join(".claude.json")).unwrap();
    let order: Vec<usize> = ["\"theme\"", "\"mcpServers\"", "\"autoUpdates\""]
        .iter()
        .map(|k| claude_text.find(k).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{claude_text}");
    let claude: Value = serde_json::from_str(&claude_text).unwrap();
    assert_eq!(claude["theme"], "dark");
    assert_eq!(claude["mcpServers"]["other"]["command"], "other-server");
    assert_eq!(
        claude["mcpServers"]["pyro"]["args"],
        json!(["mcp", "serve"])
    );
    let codex = fs::read_to_string(home.join(".codex/config.toml")).unwrap();
    assert!(
        codex.starts_with("# my settings\nmodel = \"x\""),
        "comments are kept: {codex}"
    );
    assert!(
        codex.contains("[mcp_servers.other]") && codex.contains("[mcp_servers.pyro]"),
        "{codex}"
    );
    let opencode_text = fs::read_to_string(home.join(".config/opencode/opencode.jsonc")).unwrap();
    for kept in ["// my setup", "/* keep */", "\"autoupdate\": false,\n}"] {
        assert!(opencode_text.contains(kept), "{kept}: {opencode_text}");
    }
    assert!(
        opencode_text.find("\"theme\"").unwrap() < opencode_text.find("\"mcp\"").unwrap(),
        "{opencode_text}"
    );
    // Read back by the hosts' own programs.
    let opencode_config = String::from_utf8(
        Command::new(hostprogs::path(&hostprogs::OPENCODE))
            .args(["debug", "config"])
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let opencode: Value =
        serde_json::from_str(&opencode_config).unwrap_or_else(|e| panic!("{e}: {opencode_config}"));
    assert_eq!(opencode["mcp"]["other"]["command"], json!(["other-server"]));
    assert_eq!(
        opencode["mcp"]["pyro"]["command"],
        json!([pyro_bin().to_str().unwrap(), "mcp", "serve"]),
        "{opencode}"
    );
    let claude_says = Command::new(hostprogs::path(&hostprogs::CLAUDE))
        .args(["mcp", "get", "pyro"])
        .env("HOME", &home)
        .env_remove("CLAUDE_CONFIG_DIR")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .output()
        .unwrap();
    let claude_says = String::from_utf8_lossy(&claude_says.stdout);
    assert!(
        claude_says.contains(&format!("Command: {}", pyro_bin().display()))
            && claude_says.contains("Args: mcp serve")
            && claude_says.contains("Connected"),
        "{claude_says}"
    );
    assert!(home
        .join(".config/Claude/claude_desktop_config.json")
        .exists());

    // A stale entry: connect leaves it alone and says so; repair fixes it; status proves it works.
    let stale = fs::read_to_string(home.join(".cursor/mcp.json"))
        .unwrap()
        .replace(pyro_bin().to_str().unwrap(), "/old/pyro");
    fs::write(home.join(".cursor/mcp.json"), stale).unwrap();
    let out = host(&["host", "status", "cursor", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let out = host(&["host", "connect", "cursor"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("pyro host repair cursor"),
        "{}",
        stderr_of(&out)
    );
    let out = host(&["host", "repair", "cursor", "--mode", "inspect", "--json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let status: Value = serde_json::from_slice(
        &host(&["host", "status", "cursor", "--mode", "inspect", "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(status["problems"], json!([]), "{status}");
    assert_eq!(
        status["probe"]["tools"].as_array().unwrap().len(),
        8,
        "{status}"
    );
    let cursor: Value =
        serde_json::from_str(&fs::read_to_string(home.join(".cursor/mcp.json")).unwrap()).unwrap();
    assert_eq!(cursor["mcpServers"]["other"]["command"], "other-server");
    // One backup, the file as it was before the last edit; never a pile.
    let backups: Vec<_> = fs::read_dir(home.join(".cursor"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("pyro-backup"))
        .collect();
    assert_eq!(backups, ["mcp.json.pyro-backup"]);

    // A file that does not parse is refused and left as it was.
    fs::write(home.join(".claude.json"), "{ not json").unwrap();
    let out = host(&["host", "repair", "claude-code"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains(".claude.json is not valid JSON"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        fs::read_to_string(home.join(".claude.json")).unwrap(),
        "{ not json"
    );
    let out = host(&["host", "connect", "vim"]);
    assert!(stderr_of(&out).contains("claude-code, codex, opencode, cursor, claude-desktop"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repo_url_is_cloned_on_first_use_and_seeds_the_workspace() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let origin = sb.scratch("origin");
    fs::write(origin.join("README.md"), "from the repository\n").unwrap();
    git(&origin, &["init", "-q"]);
    git(&origin, &["add", "."]);
    git(&origin, &["commit", "-qm", "init"]);
    let url = format!("file://{}", origin.display());
    let scratch = sb.scratch("allowed");
    let client = connect(
        &sb,
        &[
            "--repo-url",
            &url,
            "--allow-host-path",
            scratch.to_str().unwrap(),
        ],
        sb.root(),
    )
    .await;
    let ws = ok(&client, "workspace_create", json!({})).await;
    assert_eq!(
        (
            ws["workspace_seed"]["mode"].as_str(),
            ws["workspace_seed"]["source"].as_str()
        ),
        (Some("repo_url"), Some(url.as_str()))
    );
    let id = ws["workspace_id"].as_str().unwrap().to_string();
    let read = ok(
        &client,
        "workspace_file_read",
        json!({"workspace_id": id, "path": "README.md"}),
    )
    .await;
    assert_eq!(read["content"], "from the repository\n");
    // An explicit seed_path wins over the project.
    let seed = scratch.join("explicit");
    fs::create_dir(&seed).unwrap();
    fs::write(seed.join("only-here.txt"), "x").unwrap();
    let explicit = ok(
        &client,
        "workspace_create",
        json!({"seed_path": seed.display().to_string()}),
    )
    .await;
    assert_eq!(explicit["workspace_seed"]["mode"], "directory");
    for workspace in [id, explicit["workspace_id"].as_str().unwrap().to_string()] {
        ok(
            &client,
            "workspace_delete",
            json!({"workspace_id": workspace}),
        )
        .await;
    }
    client.cancel().await.unwrap();
}

/// One HTTP request on a fresh connection; returns the status line, headers and body.
fn http_post(port: u16, token: &str, session: Option<&str>, body: &Value) -> (String, String) {
    http_request(
        port,
        &format!("127.0.0.1:{port}"),
        Some(token),
        session,
        body,
    )
}

fn http_request(
    port: u16,
    host: &str,
    token: Option<&str>,
    session: Option<&str>,
    body: &Value,
) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.to_string();
    let session = session
        .map(|s| format!("Mcp-Session-Id: {s}\r\n"))
        .unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{auth}{session}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, rest) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_string(), rest.to_string())
}

#[test]
fn the_http_transport_listens_on_loopback_only_behind_a_token() {
    let sb = Sandbox::new();
    let mut server = sb
        .pyro()
        .args(["mcp", "serve", "--transport", "http"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let url = loop {
        let line = lines
            .next()
            .expect("the server prints its address")
            .unwrap();
        if let Some(url) = line.split("listening on ").nth(1) {
            break url.to_string();
        }
    };
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/mcp")
        .parse()
        .unwrap();
    let token_line = lines.next().expect("the token line").unwrap();
    let token = token_line
        .split("Bearer ")
        .nth(1)
        .and_then(|t| t.split('`').next())
        .expect("the server prints its token")
        .to_string();
    let token_file = sb.state.join(format!("mcp/http-{port}.token"));
    assert_eq!(fs::read_to_string(&token_file).unwrap().trim(), token);
    assert_eq!(
        fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    // A client that goes away mid-request does not take the server down.
    {
        use std::io::Write;
        let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        half.write_all(
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n\r\n{\"jsonrpc\"",
        )
        .unwrap();
    }
    // Without the token (or with a wrong one) nothing but 401; another Host (a guest would send its
    // gateway's address) or a foreign Origin: 403.
    for token in [None, Some("0000")] {
        let (head, body) =
            http_request(port, &format!("127.0.0.1:{port}"), token, None, &initialize);
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        assert!(body.is_empty(), "{body}");
    }
    let (head, _) = http_request(
        port,
        &format!("10.0.2.2:{port}"),
        Some(&token),
        None,
        &initialize,
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (head, body) = http_post(port, &token, None, &initialize);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    assert!(body.contains("\"name\":\"pyro\""), "{body}");
    let session = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("mcp-session-id:")
                .then(|| l.split_once(':').unwrap().1.trim().to_string())
        })
        .expect("a session id");
    http_post(
        port,
        &token,
        Some(&session),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    let (_, tools) = http_post(
        port,
        &token,
        Some(&session),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    assert!(tools.contains("workspace_summary"), "{tools}");
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn host_paths_outside_the_allowed_roots_are_refused() {
    let sb = Sandbox::new();
    let project = sb.scratch("project");
    let allowed = sb.scratch("allowed");
    let elsewhere = sb.scratch("elsewhere");
    let client = connect(
        &sb,
        &[
            "--profile",
            "workspace-full",
            "--project-path",
            project.to_str().unwrap(),
            "--allow-host-path",
            allowed.to_str().unwrap(),
        ],
        sb.root(),
    )
    .await;
    let outside = elsewhere.display().to_string();
    for (tool, args) in [
        ("workspace_create", json!({"seed_path": outside})),
        ("workspace_create", json!({"seed_path": "/etc"})),
        (
            "workspace_sync_push",
            json!({"workspace_id": "nothere", "source_path": outside}),
        ),
        (
            "workspace_export",
            json!({"workspace_id": "nothere", "path": "a", "output_path": format!("{outside}/a")}),
        ),
        (
            "workspace_export",
            json!({"workspace_id": "nothere", "path": "a", "output_path": "../elsewhere/a"}),
        ),
    ] {
        let err = tool_error(&client, tool, args.clone()).await;
        let text = format!("{} {}", err["message"], err["hint"]);
        assert!(
            text.contains("--allow-host-path") || text.contains(".."),
            "{tool} {args}: {err}"
        );
        if text.contains("outside") {
            assert!(
                text.contains(&*allowed.to_string_lossy()),
                "names the roots: {err}"
            );
        }
    }
    // Inside a root the path passes the check (and the call fails further on, on the workspace).
    let err = tool_error(
        &client,
        "workspace_sync_push",
        json!({"workspace_id": "nothere", "source_path": allowed.display().to_string()}),
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("nothere"),
        "{err}"
    );
    client.cancel().await.unwrap();
}

/// The `vm_*` tools: plain VMs with their own lifecycle, ids checked, an idle TTL that stops them,
/// and `vm_reap_expired` deleting only those (never a workspace).
#[tokio::test(flavor = "multi_thread")]
async fn vm_tools_manage_plain_vms_and_refuse_workspaces() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let client = connect(&sb, &["--profile", "workspace-full"], sb.root()).await;
    let envs = ok(&client, "vm_list_environments", json!({})).await;
    assert_eq!(envs["count"], 3, "{envs}");
    let vm = ok(&client, "vm_create", json!({"ttl_seconds": 10})).await;
    assert_eq!(vm["state"], "started", "{vm}");
    let vm_id = vm["vm_id"].as_str().unwrap().to_string();
    let ran = ok(
        &client,
        "vm_exec",
        json!({"vm_id": vm_id, "command": "pwd; echo hi"}),
    )
    .await;
    assert_eq!(
        (ran["exit_code"].as_i64(), ran["stdout"].as_str()),
        (Some(0), Some("/\nhi\n")),
        "{ran}"
    );
    let net = ok(&client, "vm_network_info", json!({"vm_id": vm_id})).await;
    assert_eq!(net["network_enabled"], false, "{net}");
    assert!(net["guest_ip"].is_null(), "{net}");
    let stopped = ok(&client, "vm_stop", json!({"vm_id": vm_id})).await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let err = tool_error(
        &client,
        "vm_exec",
        json!({"vm_id": vm_id, "command": "true"}),
    )
    .await;
    assert_eq!(err["kind"], "invalid_state", "{err}");
    let started = ok(&client, "vm_start", json!({"vm_id": vm_id})).await;
    assert_eq!(started["state"], "started", "{started}");

    // Ids are checked: nothing, or a workspace, is not a VM.
    let err = tool_error(&client, "vm_status", json!({"vm_id": "000000000000"})).await;
    assert_eq!(err["kind"], "not_found", "{err}");
    let ws = ok(&client, "workspace_create", json!({"ttl_seconds": 10})).await;
    let ws_id = ws["workspace_id"].as_str().unwrap().to_string();
    let err = tool_error(&client, "vm_delete", json!({"vm_id": ws_id})).await;
    assert_eq!(err["kind"], "not_found", "{err}");
    assert!(
        err["hint"].as_str().unwrap().contains("is a workspace"),
        "{err}"
    );

    // Both idle out; only the VM is reaped.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let vm = ok(&client, "vm_status", json!({"vm_id": vm_id})).await;
        let ws = ok(&client, "workspace_status", json!({"workspace_id": ws_id})).await;
        if vm["state"] == "stopped" && ws["state"] == "stopped" {
            assert!(
                vm["stop_reason"]
                    .as_str()
                    .unwrap()
                    .contains("without activity"),
                "{vm}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the TTL never stopped them: {vm} {ws}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let reaped = ok(&client, "vm_reap_expired", json!({})).await;
    assert_eq!(reaped["deleted_vm_ids"], json!([vm_id]), "{reaped}");
    let err = tool_error(&client, "vm_status", json!({"vm_id": vm_id})).await;
    assert_eq!(err["kind"], "not_found", "{err}");
    let list = ok(&client, "workspace_list", json!({})).await;
    assert_eq!(list["count"], 1, "the workspace stays: {list}");
    ok(&client, "workspace_delete", json!({"workspace_id": ws_id})).await;
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_through_mcp_are_exposed_per_call_and_redacted() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let client = connect(&sb, &["--profile", "workspace-full"], sb.root()).await;
    let err = tool_error(
        &client,
        "workspace_create",
        json!({"secrets": [{"name": "A"}]}),
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("exactly one of 'value' or 'file_path'"),
        "{err}"
    );
    let ws = ok(
        &client,
        "workspace_create",
        json!({"secrets": [{"name": "API_TOKEN", "value": "mcp-canary-5150"}]}),
    )
    .await;
    assert_eq!(ws["secrets"], json!(["API_TOKEN"]), "{ws}");
    let id = ws["workspace_id"].as_str().unwrap().to_string();
    let ran = ok(
        &client,
        "workspace_exec",
        json!({"workspace_id": id, "command": "echo \"$T\"", "secret_env": {"API_TOKEN": "T"}}),
    )
    .await;
    assert_eq!(ran["stdout"], "[REDACTED:API_TOKEN]\n", "{ran}");
    let err = tool_error(
        &client,
        "workspace_exec",
        json!({"workspace_id": id, "command": "true", "secret_env": {"API_TOKEN": "1X"}}),
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("not a valid environment variable name"),
        "{err}"
    );
    ok(&client, "workspace_delete", json!({"workspace_id": id})).await;
    client.cancel().await.unwrap();
}
