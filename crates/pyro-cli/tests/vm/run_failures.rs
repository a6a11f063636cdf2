//! Bad input and failures: clear errors, the right exit codes, and nothing left behind.

use std::time::Duration;

use crate::support::{one_vm_slot, signal, stderr_of, wait_exit, wait_for_line, Sandbox};

#[test]
fn invalid_arguments_exit_2() {
    let sb = Sandbox::new();
    for args in [
        &["run", "debian:12", "--vcpu-count", "9", "--", "true"][..],
        &["run", "debian:12", "--vcpu-count", "0", "--", "true"],
        &["run", "debian:12", "--mem-mib", "128", "--", "true"],
        &["run", "debian:12", "--mem-mib", "40000", "--", "true"],
        &["run", "debian:12", "--timeout-seconds", "0", "--", "true"],
        &["run", "debian:12"],
    ] {
        let out = sb.output(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
    }
    assert!(sb
        .leftover_vms_after(std::time::Duration::from_secs(20))
        .is_empty());
}

#[test]
fn an_unknown_environment_lists_the_known_ones() {
    let sb = Sandbox::new();
    let out = sb.output(&["run", "ubuntu:24.04", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("unknown environment 'ubuntu:24.04'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("debian:12, debian:12-base, debian:12-build"),
        "{stderr}"
    );
    let (json, code) = sb.json(&["run", "ubuntu:24.04", "--json", "--", "true"]);
    assert_eq!(code, 125);
    assert_eq!(json["error"]["kind"], "unknown_environment");
}

#[test]
fn a_missing_qemu_names_its_package() {
    let sb = Sandbox::new();
    let out = sb
        .pyro()
        .env("PATH", "/nonexistent")
        .args(["run", "debian:12", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("qemu-system-x86_64"), "{stderr}");
    assert!(
        stderr.contains("apt-get install qemu-system-x86"),
        "{stderr}"
    );
    assert!(sb
        .leftover_vms_after(std::time::Duration::from_secs(20))
        .is_empty());
}

#[test]
fn ctrl_c_tears_everything_down() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let mut child = start_long_run(&sb);
    signal(child.id() as i32, libc::SIGINT);
    let code = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(code, 130);
    assert_eq!(
        sb.processes(),
        vec![],
        "no supervisor and no QEMU may survive"
    );
    assert_eq!(
        sb.leftover_vms_after(std::time::Duration::from_secs(20)),
        Vec::<String>::new()
    );
}

/// Starts `pyro run` with a long command and returns once the command runs in the VM.
fn start_long_run(sb: &Sandbox) -> std::process::Child {
    let mut child = sb.spawn(&[
        "run",
        "debian:12",
        "--",
        "sh",
        "-c",
        "echo started; sleep 600",
    ]);
    wait_for_line(&mut child, "started", Duration::from_secs(120));
    child
}

/// Starts a long command, kills the process named by `victim` with SIGKILL, and checks that `pyro run`
/// fails clearly (125, stderr mentioning `expected`) and that nothing is left behind.
fn kill_mid_run(victim: &str, expected: &str) {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let mut child = start_long_run(&sb);
    let pid = sb
        .pid_of(victim)
        .unwrap_or_else(|| panic!("no process matching {victim}"));
    signal(pid, libc::SIGKILL);
    let code = wait_exit(&mut child, Duration::from_secs(60));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(code, 125, "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert_eq!(sb.wait_no_processes(Duration::from_secs(10)), vec![]);
    assert_eq!(
        sb.leftover_vms_after(std::time::Duration::from_secs(20)),
        Vec::<String>::new()
    );
}

#[test]
fn qemu_killed_mid_run_is_a_clear_error_and_leaves_nothing() {
    kill_mid_run("qemu-system", "stopped unexpectedly");
}

#[test]
fn supervisor_killed_mid_run_takes_qemu_with_it() {
    kill_mid_run("__supervise", "supervisor");
}
