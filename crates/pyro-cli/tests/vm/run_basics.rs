//! `pyro run`: output, exit codes, environment, limits, networking, parallel runs.

use crate::support::{all_vm_slots, one_vm_slot, Sandbox};

#[test]
fn stdout_and_stderr_are_separate_and_the_exit_code_propagates() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let (result, code) = sb.run_sh(&[], "echo to-out; echo to-err >&2; exit 7");
    assert_eq!(code, 7);
    assert_eq!(result["exit_code"], 7);
    assert_eq!(result["stdout"], "to-out\n");
    assert_eq!(result["stderr"], "to-err\n");
    assert_eq!(result["execution_mode"], "guest");
    assert!(
        ["warm", "cold"].contains(&result["boot_mode"].as_str().unwrap()),
        "{result}"
    );
    assert!(["kvm", "tcg"].contains(&result["accelerator"].as_str().unwrap()));
    assert_eq!(
        result["command"],
        "sh -c 'echo to-out; echo to-err >&2; exit 7'"
    );
    assert_eq!(result["cleanup"]["deleted"], true);
    let phases = &result["phases_ms"];
    for phase in [
        "prepare", "disk", "spawn", "restore", "activate", "exec", "teardown",
    ] {
        assert!(phases[phase].is_u64(), "{phase}: {result}");
    }
    // The VM goes after the result was delivered (the CLI has exited): nothing of it stays.
    let limit = std::time::Duration::from_secs(20);
    assert_eq!(sb.wait_no_processes(limit), vec![]);
    assert!(sb.leftover_vms_after(limit).is_empty());
}

#[test]
fn human_mode_streams_output_and_exits_zero() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let out = sb.output(&["run", "debian:12", "--", "git", "--version"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr_of(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("git version "));
    let stderr = crate::support::stderr_of(&out);
    let summary = stderr.lines().last().unwrap_or_default();
    for key in [
        "environment=debian:12",
        "accelerator=",
        "exit_code=0",
        "boot_ms=",
        "exec_ms=",
        "total_ms=",
    ] {
        assert!(summary.contains(key), "summary line lacks {key}: {summary}");
    }
}

#[test]
fn a_missing_command_is_127_from_the_guest() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let (result, code) = sb.json(&["run", "debian:12", "--json", "--", "no-such-command", "x"]);
    assert_eq!(code, 127);
    assert_eq!(result["exit_code"], 127);
    assert!(result["stderr"]
        .as_str()
        .unwrap()
        .contains("command not found"));
}

#[test]
fn env_and_cwd_reach_the_command() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let (result, code) = sb.run_sh(
        &["--env", "GREETING=hello world", "--cwd", "/etc"],
        "echo \"$GREETING\"; pwd; echo $HOME; echo $LANG",
    );
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["stdout"], "hello world\n/etc\n/root\nC.UTF-8\n");
}

#[test]
fn a_timeout_kills_the_process_tree_and_keeps_partial_output() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let (result, code) = sb.run_sh(
        &["--timeout-seconds", "2"],
        "echo partial; sleep 1000 & sleep 1000; echo never",
    );
    assert_eq!(code, 124);
    assert_eq!(result["exit_code"], 124);
    assert_eq!(result["timed_out"], true);
    assert_eq!(result["stdout"], "partial\n");
}

#[test]
fn ten_megabytes_of_output_are_capped_and_flagged() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let (result, code) = sb.run_sh(
        &[],
        "head -c 10000000 /dev/zero | tr '\\0' x; echo; echo end",
    );
    assert_eq!(code, 0);
    assert_eq!(result["stdout_truncated"], true);
    let stdout = result["stdout"].as_str().unwrap();
    assert!(
        stdout.len() <= (1 << 20) + 128,
        "kept {} bytes",
        stdout.len()
    );
    assert!(stdout.starts_with("xxxx"));
    assert!(stdout.ends_with("\nend\n"), "the tail is kept");
    assert!(stdout.contains("bytes omitted by pyro"));
}

#[test]
fn without_network_the_guest_has_no_network_device() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let (result, _) = sb.json(&["run", "debian:12", "--json", "--", "ls", "/sys/class/net"]);
    assert_eq!(result["stdout"], "lo\n");
}

#[test]
fn four_runs_in_parallel_all_succeed() {
    let _slots = all_vm_slots();
    let sb = Sandbox::new();
    let children: Vec<_> = (0..4)
        .map(|i| {
            sb.spawn(&[
                "run",
                "debian:12",
                "--json",
                "--",
                "sh",
                "-c",
                &format!("echo run-{i}"),
            ])
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result["stdout"], format!("run-{i}\n"));
    }
    assert!(sb
        .leftover_vms_after(std::time::Duration::from_secs(20))
        .is_empty());
}

#[test]
fn a_state_dir_longer_than_a_socket_path_works() {
    let _slot = one_vm_slot();
    let sb = Sandbox::with_long_state_dir(150);
    let (result, code) = sb.json(&["run", "debian:12", "--json", "--", "true"]);
    assert_eq!(code, 0, "{result}");
}
