//! A guest that exhausts what it has (processes, memory, its disk) hurts only itself: the host and
//! another workspace keep answering, and `reset` brings it back.

use std::time::{Duration, Instant};

use crate::support::{all_vm_slots, Sandbox};

/// `exec -- true` in `id` until it answers (within `limit`).
fn answers_within(sb: &Sandbox, id: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if sb.exec(id, &["true"]).1 == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

#[test]
fn a_guest_exhausting_itself_leaves_the_host_and_other_workspaces_alone() {
    let _slots = all_vm_slots();
    let sb = Sandbox::new();
    let victim = sb.create_workspace(&[]);
    let bystander = sb.create_workspace(&[]);
    for (what, script) in [
        ("fork bomb", "f() { f | f & }; f; sleep 20"),
        (
            "memory",
            "x=$(head -c 3000000000 /dev/zero | tr '\\0' x); echo ${#x}",
        ),
        (
            "disk",
            "fallocate -l $(( $(stat -f -c '%f*%S' /workspace) )) /workspace/fill; \
             dd if=/dev/zero of=/workspace/more bs=1M count=64 2>/dev/null; true",
        ),
    ] {
        // The victim may answer, fail or time out: what matters is everything around it.
        let _ = sb.json(&[
            "workspace",
            "exec",
            &victim,
            "--json",
            "--timeout-seconds",
            "15",
            "--",
            "sh",
            "-c",
            script,
        ]);
        assert!(
            answers_within(&sb, &bystander, Duration::from_secs(60)),
            "{what}: the other workspace stopped answering"
        );
        let listed = sb.ok(&["workspace", "list"]);
        assert_eq!(listed["count"], 2, "{what}: {listed}");
        let reset = sb.ok(&["workspace", "reset", &victim]);
        assert_eq!(reset["state"], "started", "{what}: {reset}");
        assert!(
            answers_within(&sb, &victim, Duration::from_secs(60)),
            "{what}: reset did not bring the workspace back"
        );
    }
    sb.ok(&["workspace", "delete", &victim]);
    sb.ok(&["workspace", "delete", &bystander]);
    assert_eq!(sb.wait_no_processes(Duration::from_secs(20)), vec![]);
}

#[test]
fn a_workspace_never_takes_more_host_disk_than_its_budget() {
    let _slot = crate::support::one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&["--disk-gib", "1"]);
    let disk = sb.disk_of(&id);
    // 700 MB kept by a snapshot, then 700 MB more written: together more than the 1 GiB disk.
    sb.sh(
        &id,
        "dd if=/dev/urandom of=/workspace/a bs=1M count=700 status=none",
    );
    sb.ok(&["workspace", "snapshot", "create", &id, "keep"]);
    // The write fails in the guest once the file is full; the supervisor then stops the VM.
    let _ = sb.json(&[
        "workspace",
        "exec",
        &id,
        "--json",
        "--timeout-seconds",
        "120",
        "--",
        "sh",
        "-c",
        "rm /workspace/a; dd if=/dev/urandom of=/workspace/b bs=1M count=700 status=none; sync",
    ]);
    let status = crate::support::wait_until_stopped(&sb, &id, Duration::from_secs(60));
    assert_eq!(status["state"], "stopped", "{status}");
    assert!(
        status["stop_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("host budget"),
        "{status}"
    );
    // 1 GiB, plus 1/128 of it and 128 MiB for qcow2's own tables.
    let budget = (1u64 << 30) + (1 << 30) / 128 + (128 << 20);
    let meta = std::fs::metadata(&disk).unwrap();
    assert!(meta.len() <= budget, "{} > {budget}", meta.len());
    // Starting it again would only fill it: refused, with where to make room.
    let err = sb.fails(&["workspace", "start", &id], 1);
    assert_eq!(err["kind"], "invalid_state", "{err}");
    assert_eq!(err["next"]["action"], "snapshot_list", "{err}");
    // Deleting the snapshot frees what only it kept; the workspace starts and works.
    sb.ok(&["workspace", "snapshot", "delete", &id, "keep"]);
    sb.ok(&["workspace", "start", &id]);
    assert!(answers_within(&sb, &id, Duration::from_secs(60)));
    sb.ok(&["workspace", "reset", &id]);
    assert_eq!(sb.sh(&id, "ls /workspace"), "");
    sb.ok(&["workspace", "delete", &id]);
}
