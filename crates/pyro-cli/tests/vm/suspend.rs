//! Suspend, resume and fork of a running workspace: a process keeps running through all three (a
//! service writing a counter), forks differ in identity and entropy and never see each other's
//! writes, a damaged saved state boots afresh from the disk, and nothing is left behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{one_vm_slot, wait_until_not_started, Sandbox};

/// A service that writes an ever-growing counter to /workspace/counter.
fn start_counter(sb: &Sandbox, id: &str) {
    let (service, code) = sb.json(&[
        "workspace",
        "service",
        "start",
        id,
        "counter",
        "--ready-file",
        "counter",
        "--json",
        "--",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /workspace/counter.new; mv /workspace/counter.new /workspace/counter; sleep 0.1; done",
    ]);
    assert_eq!(code, 0, "{service}");
    assert_eq!(service["state"], "running", "{service}");
}

fn counter(sb: &Sandbox, id: &str) -> u64 {
    sb.sh(id, "cat /workspace/counter").trim().parse().unwrap()
}

/// Asserts the counter still grows (the process runs), and returns its value.
fn counter_advances(sb: &Sandbox, id: &str) -> u64 {
    let first = counter(sb, id);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = counter(sb, id);
        if now > first {
            return now;
        }
        assert!(Instant::now() < deadline, "the counter stopped at {first}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn vm_dir(sb: &Sandbox, id: &str) -> PathBuf {
    sb.state.join("workspaces").join(id).join("vm")
}

#[test]
fn a_suspended_workspace_resumes_with_its_processes_and_its_clock_stepped() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&["--name", "sus"]);
    start_counter(&sb, &id);
    sb.sh(&id, "echo kept > /workspace/note");
    let before = counter_advances(&sb, &id);

    let suspended = sb.ok(&["workspace", "suspend", "sus"]);
    assert_eq!(suspended["state"], "suspended", "{suspended}");
    assert!(
        suspended["workspace_suspend"]["state_bytes"]
            .as_u64()
            .unwrap()
            > 1 << 20
    );
    assert!(vm_dir(&sb, &id).join("suspended.state").is_file());
    assert!(sb.wait_no_processes(Duration::from_secs(10)).is_empty());
    let status = sb.ok(&["workspace", "status", &id]);
    assert_eq!(status["state"], "suspended", "{status}");
    // Nothing runs meanwhile: operations that need the VM say how to bring it back.
    let err = sb.refused(&["workspace", "file", "read", &id, "note"], "is suspended");
    assert!(
        err["hint"].as_str().unwrap().contains("workspace start"),
        "{err}"
    );
    sb.refused(&["workspace", "suspend", &id], "is suspended");
    // Its disk reads as a stopped workspace's does.
    let read = sb.ok(&["workspace", "disk", "read", &id, "note"]);
    assert_eq!(read["content"], "kept\n", "{read}");
    sb.refused(&["workspace", "fork", &id], "is suspended");
    // Time passes while it is suspended; the guest's clock is stepped on resume.
    std::thread::sleep(Duration::from_secs(3));

    let resumed = sb.ok(&["workspace", "resume", &id]);
    assert_eq!(resumed["state"], "started", "{resumed}");
    assert_eq!(resumed["boot_mode"], "resumed", "{resumed}");
    assert!(!vm_dir(&sb, &id).join("suspended.state").exists());
    let after = counter_advances(&sb, &id);
    assert!(after > before, "{after} after {before}");
    assert_eq!(sb.sh(&id, "cat /workspace/note"), "kept\n");
    let services = sb.ok(&["workspace", "service", "list", &id]);
    assert_eq!(services["services"][0]["state"], "running", "{services}");
    let guest_time: i64 = sb.sh(&id, "date +%s").trim().parse().unwrap();
    let host_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest_time - host_time).abs() <= 5,
        "guest {guest_time}, host {host_time}"
    );

    // Again, through `start`; then a stop discards a suspended memory.
    sb.ok(&["workspace", "suspend", &id]);
    let started = sb.ok(&["workspace", "start", &id]);
    assert_eq!(started["boot_mode"], "resumed", "{started}");
    counter_advances(&sb, &id);
    sb.ok(&["workspace", "suspend", &id]);
    let stopped = sb.ok(&["workspace", "stop", &id]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(!vm_dir(&sb, &id).join("suspended.state").exists());
    sb.refused(&["workspace", "resume", &id], "not suspended");
    sb.refused(&["workspace", "suspend", &id], "is stopped");
    sb.ok(&["workspace", "delete", &id]);
    assert!(sb.wait_no_processes(Duration::from_secs(10)).is_empty());
}

#[test]
fn a_damaged_suspended_state_boots_afresh_from_the_disk() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    start_counter(&sb, &id);
    sb.sh(&id, "echo kept > /workspace/note");
    sb.ok(&["workspace", "suspend", &id]);
    // One byte flipped in the middle of the saved memory.
    let state = vm_dir(&sb, &id).join("suspended.state");
    let mut bytes = std::fs::read(&state).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&state, &bytes).unwrap();

    let started = sb.ok(&["workspace", "start", &id]);
    assert_eq!(started["state"], "started", "{started}");
    assert_ne!(started["boot_mode"], "resumed", "{started}");
    let reason = started["boot_mode_reason"].as_str().unwrap();
    assert!(reason.contains("could not be resumed"), "{reason}");
    assert!(reason.contains("sha256"), "{reason}");
    // The disk is as it was; the processes are gone, and the record says so.
    assert_eq!(sb.sh(&id, "cat /workspace/note"), "kept\n");
    let services = sb.ok(&["workspace", "service", "list", &id]);
    assert_ne!(services["services"][0]["state"], "running", "{services}");
    assert!(!state.exists());

    // A reset of a suspended workspace discards its memory too.
    start_counter(&sb, &id);
    sb.ok(&["workspace", "suspend", &id]);
    let reset = sb.ok(&["workspace", "reset", &id]);
    assert_ne!(reset["boot_mode"], "resumed", "{reset}");
    assert!(!state.exists());
    let (result, code) = sb.exec(&id, &["cat", "/workspace/note"]);
    assert_ne!(code, 0, "{result}");
    sb.ok(&["workspace", "delete", &id]);
    assert!(sb.wait_no_processes(Duration::from_secs(10)).is_empty());
}

#[test]
fn the_idle_ttl_suspends_a_workspace_that_asked() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&["--ttl-seconds", "10", "--ttl-action", "suspend"]);
    start_counter(&sb, &id);
    let before = counter_advances(&sb, &id);
    let status = wait_until_not_started(&sb, &id, Duration::from_secs(60));
    assert_eq!(status["state"], "suspended", "{status}");
    assert_eq!(status["ttl_action"], "suspend", "{status}");
    assert!(
        status["stop_reason"]
            .as_str()
            .unwrap()
            .contains("without activity"),
        "{status}"
    );
    let resumed = sb.ok(&["workspace", "resume", &id]);
    assert_eq!(resumed["boot_mode"], "resumed", "{resumed}");
    assert!(counter_advances(&sb, &id) > before);
    sb.ok(&["workspace", "delete", &id]);
    assert!(sb.wait_no_processes(Duration::from_secs(10)).is_empty());
}

/// What tells two guests apart.
fn identity(sb: &Sandbox, id: &str) -> String {
    sb.sh(
        id,
        "hostname; cat /etc/machine-id; head -c 16 /dev/urandom | od -An -tx1; cat /proc/sys/kernel/random/uuid",
    )
}

#[test]
fn a_fork_runs_on_beside_its_source_with_an_identity_of_its_own() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let source = sb.create_workspace(&["--name", "source"]);
    start_counter(&sb, &source);
    sb.sh(&source, "echo before > /workspace/shared");
    counter_advances(&sb, &source);

    let forked = sb.ok(&["workspace", "fork", "source", "--name", "copy"]);
    let fork = forked["workspace_id"].as_str().unwrap().to_string();
    assert_eq!(forked["state"], "started", "{forked}");
    assert_eq!(forked["name"], "copy", "{forked}");
    assert_eq!(forked["boot_mode"], "resumed", "{forked}");
    assert_eq!(
        forked["workspace_fork"]["source_workspace_id"],
        source.as_str()
    );
    // The process started before the fork runs in both.
    counter_advances(&sb, &source);
    counter_advances(&sb, &fork);
    let services = sb.ok(&["workspace", "service", "list", &fork]);
    assert_eq!(services["services"][0]["state"], "running", "{services}");
    // Both have the files from before; writes in one never reach the other.
    assert_eq!(sb.sh(&fork, "cat /workspace/shared"), "before\n");
    sb.sh(&source, "echo source > /workspace/only-source");
    sb.sh(&fork, "echo fork > /workspace/only-fork");
    assert_eq!(
        sb.sh(
            &source,
            "test -e /workspace/only-fork && echo there || echo absent"
        ),
        "absent\n"
    );
    assert_eq!(
        sb.sh(
            &fork,
            "test -e /workspace/only-source && echo there || echo absent"
        ),
        "absent\n"
    );
    // Each its own hostname, machine id and randomness.
    let (a, b) = (identity(&sb, &source), identity(&sb, &fork));
    for (line_a, line_b) in a.lines().zip(b.lines()) {
        assert_ne!(line_a, line_b, "source:\n{a}\nfork:\n{b}");
    }
    // The fork resets to the source's baseline.
    let reset = sb.ok(&["workspace", "reset", &fork]);
    assert_eq!(reset["state"], "started", "{reset}");
    assert_eq!(sb.sh(&fork, "ls /workspace"), "");

    // Bad input: a stopped source, a name taken, no room on the host. The source runs on.
    sb.refused(&["workspace", "fork", &source, "--name", "copy"], "copy");
    let mut tight = sb.pyro();
    tight.env("PYRO_MIN_FREE_MIB", "100000000");
    let out = tight
        .args(["workspace", "fork", &source, "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not enough free disk space"));
    assert_eq!(sb.ok(&["workspace", "list"])["count"], 2);
    counter_advances(&sb, &source);
    sb.ok(&["workspace", "stop", &source]);
    sb.refused(&["workspace", "fork", &source], "is stopped");

    sb.ok(&["workspace", "delete", &source]);
    sb.ok(&["workspace", "delete", &fork]);
    assert!(sb.wait_no_processes(Duration::from_secs(10)).is_empty());
    assert_eq!(
        std::fs::read_dir(sb.state.join("workspaces"))
            .unwrap()
            .count(),
        0
    );
}

/// A guest agent that will not end its session, or never answers, cannot get its guest saved
/// half-way: the suspend or fork fails with a reason, nothing of a saved state or a fork is left,
/// and the workspace either runs on or is stopped with why.
#[test]
fn a_guest_that_refuses_or_ignores_the_end_of_its_session_is_not_saved() {
    let _slot = one_vm_slot();
    let sb = Sandbox::hostile(4);
    let id = sb.create_workspace(&["--ttl-seconds", "3600"]);
    let vm = sb.state.join("workspaces").join(&id).join("vm");
    let set_mode = |mode: &str| {
        let (result, code) = sb.exec(&id, &["sh", "-c", &format!("echo {mode} > /hostile")]);
        assert_eq!(code, 0, "{result}");
    };
    set_mode("detach-refused");
    sb.refused(&["workspace", "suspend", &id], "did not end its session");
    sb.refused(&["workspace", "fork", &id], "did not end its session");
    // It runs on, as it was; no saved state and no fork is left.
    let status = sb.ok(&["workspace", "status", &id]);
    assert_eq!(status["state"], "started", "{status}");
    assert!(!vm.join("suspended.state").exists());
    let list = sb.ok(&["workspace", "list"]);
    assert_eq!(list["count"], 1, "{list}");
    // An agent that never answers: the host gives up on its own, in bounded time.
    set_mode("silent");
    let started = Instant::now();
    let (value, code) = sb.json(&["workspace", "suspend", &id, "--json"]);
    assert!(started.elapsed() < Duration::from_secs(120), "{value}");
    let status = sb.ok(&["workspace", "status", &id]);
    if code == 0 {
        // The session did end (the probe found the agent waiting): a regular suspension.
        assert_eq!(status["state"], "suspended", "{status}");
    } else {
        let state = status["state"].as_str().unwrap_or_default();
        assert!(state == "started" || state == "stopped", "{status}");
        if state == "stopped" {
            assert!(status["stop_reason"].as_str().is_some(), "{status}");
        }
        assert!(!vm.join("suspended.state").exists());
    }
    sb.ok(&["workspace", "delete", &id]);
    assert!(sb.wait_no_processes(Duration::from_secs(10)).is_empty());
}
