//! Services: named long-running commands with one readiness check, their logs, stop, and what
//! happens to them when the workspace stops, starts again, or its VM is killed.

use std::time::Duration;

use serde_json::Value;

use crate::support::{one_vm_slot, signal, wait_until_stopped, Sandbox};

/// `pyro workspace service start ID NAME OPTIONS --json -- COMMAND...`, parsed, with its exit code.
fn start(sb: &Sandbox, id: &str, name: &str, options: &[&str], command: &str) -> (Value, i32) {
    let mut args = vec!["workspace", "service", "start", id, name];
    args.extend_from_slice(options);
    args.extend(["--json", "--", "sh", "-c", command]);
    sb.json(&args)
}

fn list(sb: &Sandbox, id: &str) -> Value {
    sb.ok(&["workspace", "service", "list", id])
}

fn state_of<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service_name"] == name)
        .unwrap_or_else(|| panic!("no service {name}: {list}"))
}

#[test]
fn services_start_when_ready_fail_clearly_and_stop_with_their_workspace() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);

    // Ready once the file appears; its output is readable while it runs.
    let (worker, code) = start(
        &sb,
        &id,
        "worker",
        &["--ready-file", ".ready"],
        "echo started; sleep 1; touch .ready; echo ready; exec sleep 1000",
    );
    assert_eq!(code, 0, "{worker}");
    assert_eq!(worker["state"], "running", "{worker}");
    assert!(worker["ready_at"].is_f64(), "{worker}");
    let logs = sb.ok(&["workspace", "service", "logs", &id, "worker"]);
    assert_eq!(logs["stdout"], "started\nready\n", "{logs}");

    // The same name while it runs, and two checks at once, are refused before anything starts.
    let (again, code) = start(&sb, &id, "worker", &[], "true");
    assert_eq!(code, 1, "{again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already running"),
        "{again}"
    );
    let (two, code) = start(
        &sb,
        &id,
        "two",
        &["--ready-file", "a", "--ready-tcp", "127.0.0.1:1"],
        "true",
    );
    assert_eq!(code, 1, "{two}");
    assert!(
        two["error"]["message"]
            .as_str()
            .unwrap()
            .contains("one readiness check"),
        "{two}"
    );

    // Never ready: stopped at its timeout, reported failed, its output kept.
    let (slow, code) = start(
        &sb,
        &id,
        "slow",
        &["--ready-file", "never", "--ready-timeout-seconds", "2"],
        "echo waiting; exec sleep 1000",
    );
    assert_eq!(code, 1, "{slow}");
    assert_eq!(
        (slow["state"].as_str(), slow["stop_reason"].as_str()),
        (Some("failed"), Some("readiness_timeout")),
        "{slow}"
    );
    let logs = sb.ok(&["workspace", "service", "logs", &id, "slow"]);
    assert_eq!(logs["stdout"], "waiting\n", "{logs}");

    // A command that exits at once is no service.
    let (quick, code) = start(
        &sb,
        &id,
        "quick",
        &["--ready-file", "x"],
        "echo bye; exit 3",
    );
    assert_eq!(code, 1, "{quick}");
    assert_eq!(
        quick["stop_reason"], "process_exited_before_ready",
        "{quick}"
    );
    assert_eq!(quick["exit_code"], 3, "{quick}");

    // A command check, and a service that comes back when its workspace starts.
    let (checked, code) = start(
        &sb,
        &id,
        "checked",
        &["--ready-command", "test -f flag"],
        "touch flag; exec sleep 1000",
    );
    assert_eq!(
        (code, checked["state"].as_str()),
        (0, Some("running")),
        "{checked}"
    );
    let (keeper, code) = start(
        &sb,
        &id,
        "keeper",
        &["--restart-on-start"],
        "exec sleep 1000",
    );
    assert_eq!(
        (code, keeper["state"].as_str()),
        (0, Some("running")),
        "{keeper}"
    );

    let all = list(&sb, &id);
    assert_eq!(
        (all["count"].as_u64(), all["running_count"].as_u64()),
        (Some(5), Some(3)),
        "{all}"
    );
    let status = sb.ok(&["workspace", "status", &id]);
    assert_eq!(status["running_service_count"], 3, "{status}");

    let stopped = sb.ok(&["workspace", "service", "stop", &id, "worker"]);
    assert_eq!(
        (stopped["state"].as_str(), stopped["stop_reason"].as_str()),
        (Some("stopped"), Some("sigterm")),
        "{stopped}"
    );

    // Services stop with the workspace; only the one that asked comes back.
    sb.ok(&["workspace", "stop", &id]);
    let all = list(&sb, &id);
    assert_eq!(
        state_of(&all, "checked")["stop_reason"],
        "workspace_stopped",
        "{all}"
    );
    assert_eq!(all["running_count"], 0, "{all}");
    sb.ok(&["workspace", "start", &id]);
    let all = list(&sb, &id);
    assert_eq!(state_of(&all, "keeper")["state"], "running", "{all}");
    assert_eq!(state_of(&all, "checked")["state"], "stopped", "{all}");

    // A VM that dies takes its services with it.
    signal(sb.pid_of("qemu-system").expect("QEMU runs"), libc::SIGKILL);
    wait_until_stopped(&sb, &id, Duration::from_secs(30));
    let all = list(&sb, &id);
    assert_eq!(state_of(&all, "keeper")["state"], "stopped", "{all}");
    let err = sb.fails(&["workspace", "service", "logs", &id, "keeper"], 1);
    assert_eq!(err["kind"], "invalid_state", "{err}");
    sb.ok(&["workspace", "delete", &id]);
    assert_eq!(sb.wait_no_processes(Duration::from_secs(10)), vec![]);
}
