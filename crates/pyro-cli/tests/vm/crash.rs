//! Crash consistency: the CLI, the supervisor or QEMU killed (SIGKILL) in the middle of a lifecycle
//! step. Afterwards `status` tells the truth, the workspace starts again, what pyro acknowledged is
//! there, the journal reads whole, nothing is left behind, and delete leaves no process.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

use crate::support::{one_vm_slot, signal, wait_exit, Sandbox};

const VICTIMS: [&str; 3] = ["cli", "__supervise", "qemu-system"];

/// Kills `victim` while `cli` runs (after `delay_ms`), and waits for the CLI to end; its exit code.
fn kill_during(sb: &Sandbox, mut cli: Child, victim: &str, delay_ms: u64) -> i32 {
    std::thread::sleep(Duration::from_millis(delay_ms));
    match victim {
        "cli" => {
            let _ = cli.kill();
        }
        process => {
            if let Some(pid) = sb.pid_of(process) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
    wait_exit(&mut cli, Duration::from_secs(120))
}

/// Files a half-done operation could leave behind.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.contains(".partial")
            || name.starts_with(".export-")
            || name.starts_with(".manifest-")
            || name == "view.sock"
        {
            found.push(path.display().to_string());
        }
        if path.is_dir() {
            found.extend(leftovers(&path));
        }
    }
    found
}

/// The workspace after a kill: its state is the truth, it starts again, and its journal reads whole.
fn recover(sb: &Sandbox, id: &str, victim: &str, step: &str) {
    // A dead VM shows as stopped once its supervisor has noticed (at once, or when it has cleaned
    // up); a started one must answer. A step that boots a new VM (reset, start) may have lost only
    // the old one, and then rightly reports started.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = sb.ok(&["workspace", "status", id]);
        let state = status["state"].as_str().unwrap().to_string();
        assert!(
            ["started", "stopped"].contains(&state.as_str()),
            "{step}/{victim}: {status}"
        );
        if state == "stopped" {
            assert!(status["stop_reason"].is_string(), "{status}");
            sb.ok(&["workspace", "start", id]);
            break status;
        }
        let (ran, code) = sb.exec(id, &["true"]);
        if code == 0 {
            break status;
        }
        assert!(
            victim != "cli" && std::time::Instant::now() < deadline,
            "{step}/{victim}: started, but its VM does not answer: {status} {ran}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let (ran, code) = sb.exec(id, &["true"]);
    assert_eq!(code, 0, "{step}/{victim} after {status}: {ran}");
    let logs = sb.ok(&["workspace", "logs", id]);
    assert!(logs["entries"].is_array(), "{step}/{victim}: {logs}");
    let left = leftovers(&sb.state);
    assert!(left.is_empty(), "{step}/{victim} left {left:?}");
}

#[test]
fn a_kill_in_any_step_leaves_a_truthful_recoverable_workspace() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let seed = sb.scratch("seed");
    std::fs::write(seed.join("a.txt"), "seeded\n").unwrap();
    let id = sb.create_workspace(&["--seed-path", seed.to_str().unwrap()]);
    let big = sb.scratch("big").join("big.txt");
    std::fs::write(&big, "x".repeat(4 << 20)).unwrap();
    let big = big.to_str().unwrap().to_string();
    let mut n = 0;
    for victim in VICTIMS {
        for step in [
            "exec", "write", "patch", "snapshot", "diff", "reset", "stop", "start",
        ] {
            n += 1;
            let name = format!("s{n}");
            let text = format!("{step}-{n}\n");
            let patch = format!("--- /dev/null\n+++ b/p{n}.txt\n@@ -0,0 +1 @@\n+{step}-{n}\n");
            let script = format!("sleep 0.2; echo {step}-{n} > /workspace/e{n}.txt");
            let args: Vec<&str> = match step {
                "exec" => vec!["workspace", "exec", &id, "--", "sh", "-c", &script],
                "write" => vec![
                    "workspace",
                    "file",
                    "write",
                    &id,
                    "w.txt",
                    "--text-file",
                    &big,
                ],
                "patch" => vec!["workspace", "patch", "apply", &id, "--patch", &patch],
                "snapshot" => vec!["workspace", "snapshot", "create", &id, &name],
                "diff" => vec!["workspace", "diff", &id, "--since", "s1"],
                "reset" => vec!["workspace", "reset", &id, "--snapshot", "s1"],
                "stop" => vec!["workspace", "stop", &id],
                _ => vec!["workspace", "start", &id],
            };
            if step == "start" {
                sb.ok(&["workspace", "stop", &id]);
            }
            if step == "diff"
                && !sb
                    .ok(&["workspace", "snapshot", "list", &id])
                    .to_string()
                    .contains("\"s1\"")
            {
                sb.ok(&["workspace", "snapshot", "create", &id, "s1"]);
            }
            eprintln!("crash: {step} with {victim} killed");
            let cli = sb.spawn(&args);
            let code = kill_during(&sb, cli, victim, 60 + (n as u64 * 37) % 200);
            // A step that stops the VM on purpose has no VM to kill: recover as from the CLI's death.
            let victim_seen = if step == "stop" && victim != "cli" {
                "cli"
            } else {
                victim
            };
            recover(&sb, &id, victim_seen, step);
            // Acknowledged means durable, whatever died after the answer.
            if code == 0 {
                let check = match step {
                    "exec" => Some((format!("/workspace/e{n}.txt"), text.clone())),
                    "patch" => Some((format!("/workspace/p{n}.txt"), text.clone())),
                    _ => None,
                };
                if let Some((path, want)) = check {
                    let (got, _) = sb.exec(&id, &["cat", &path]);
                    assert_eq!(got["stdout"], Value::from(want), "{step}/{victim}");
                }
                if step == "snapshot" {
                    let list = sb.ok(&["workspace", "snapshot", "list", &id]);
                    assert!(list.to_string().contains(&format!("\"{name}\"")), "{list}");
                }
            }
        }
    }
    sb.ok(&["workspace", "delete", &id]);
    assert_eq!(sb.wait_no_processes(Duration::from_secs(10)), vec![]);
    assert!(!sb.state.join("workspaces").join(&id).exists());
}

#[test]
fn a_kill_during_create_or_delete_leaves_no_half_workspace() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    for (n, victim) in VICTIMS.iter().enumerate() {
        let cli = sb.spawn(&["workspace", "create", "--json"]);
        kill_during(&sb, cli, victim, 300 + n as u64 * 150);
        // Whatever survived is either usable or deletable, and tells the truth.
        let list = sb.ok(&["workspace", "list"]);
        for ws in list["workspaces"].as_array().unwrap() {
            let id = ws["workspace_id"].as_str().unwrap();
            // `started` must mean a live supervisor; one that is just going (its QEMU killed) may
            // still be seen started, and is seen stopped soon after.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let status = sb.ok(&["workspace", "status", id]);
                if status["state"] != "started" || sb.pid_of("__supervise").is_some() {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "started without a supervisor: {status}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            let cli = sb.spawn(&["workspace", "delete", id]);
            kill_during(&sb, cli, victim, 20);
            // A delete cut short can be repeated; the workspace goes.
            let _ = sb.output(&["workspace", "delete", id]);
            let err = sb.fails(&["workspace", "status", id], 1);
            assert_eq!(err["kind"], "not_found", "{err}");
        }
        assert_eq!(
            sb.wait_no_processes(Duration::from_secs(20)),
            vec![],
            "after killing {victim}"
        );
        let left: Vec<_> = std::fs::read_dir(sb.state.join("workspaces"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "after killing {victim}: {left:?}");
    }
}
