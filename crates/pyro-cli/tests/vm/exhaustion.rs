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
