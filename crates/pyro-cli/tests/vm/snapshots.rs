//! Named snapshots: the whole disk at one moment, taken live or stopped, reset to in any order, kept
//! across resets, refused clearly when misnamed; and a snapshot of a disk that is full.

use serde_json::Value;

use crate::support::{one_vm_slot, Sandbox};

fn names(list: &Value) -> Vec<String> {
    list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_name"].as_str().unwrap().to_string())
        .collect()
}

/// What the checks below look at: the two files' digests (or "missing") and a file outside /workspace.
const STATE: &str = "for f in /workspace/one /workspace/big; do \
    if [ -e $f ]; then sha256sum < $f | cut -c1-16; else echo missing; fi; done; \
    cat /etc/pyro-marker 2>/dev/null || echo no-marker";

#[test]
fn snapshots_hold_the_whole_disk_and_reset_goes_back_to_any_of_them() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);

    // 1 MB changed, then 200 MB more: each snapshot holds the disk as it was.
    sb.sh(
        &id,
        "head -c 1048576 /dev/urandom > /workspace/one && echo marked > /etc/pyro-marker",
    );
    let one = sb.ok(&["workspace", "snapshot", "create", &id, "one"]);
    assert_eq!(
        (&one["snapshot"]["snapshot_name"], &one["snapshot"]["kind"]),
        (&Value::from("one"), &Value::from("named")),
        "{one}"
    );
    let at_one = sb.sh(&id, STATE);
    sb.sh(
        &id,
        "dd if=/dev/urandom of=/workspace/big bs=1M count=200 status=none",
    );
    sb.ok(&["workspace", "snapshot", "create", &id, "big"]);
    let at_big = sb.sh(&id, STATE);
    assert!(at_big.lines().all(|l| l != "missing"), "{at_big}");
    sb.sh(
        &id,
        "echo broken > /workspace/one; rm /workspace/big /etc/pyro-marker",
    );

    let reset = sb.ok(&["workspace", "reset", &id, "--snapshot", "one"]);
    assert_eq!(reset["workspace_reset"]["snapshot_name"], "one", "{reset}");
    assert_eq!(reset["state"], "started", "{reset}");
    assert_eq!(sb.sh(&id, STATE), at_one, "back to the first snapshot");
    sb.ok(&["workspace", "reset", &id, "--snapshot", "big"]);
    assert_eq!(sb.sh(&id, STATE), at_big, "forward to the second");
    let baseline = sb.ok(&["workspace", "reset", &id]);
    assert_eq!(
        baseline["workspace_reset"]["kind"], "baseline",
        "{baseline}"
    );
    assert_eq!(
        sb.sh(&id, STATE),
        "missing\nmissing\nno-marker\n",
        "the baseline has neither file nor the marker"
    );
    // Resets keep every snapshot.
    let list = sb.ok(&["workspace", "snapshot", "list", &id]);
    assert_eq!(names(&list), ["baseline", "big", "one"], "{list}");
    assert_eq!(list["snapshots"][0]["deletable"], false, "{list}");

    // Bad names and unknown snapshots: clear errors, and the workspace stays as it was.
    for (name, says) in [
        ("baseline", "reserved"),
        ("bad name", "invalid snapshot name"),
        ("x!", "invalid snapshot name"),
        ("one", "already exists"),
    ] {
        let err = sb.fails(&["workspace", "snapshot", "create", &id, name], 1);
        assert!(
            err["message"].as_str().unwrap().contains(says),
            "{name}: {err}"
        );
    }
    let err = sb.fails(&["workspace", "reset", &id, "--snapshot", "nope"], 1);
    assert_eq!(err["kind"], "not_found", "{err}");
    assert_eq!(
        err["next"]["command"],
        format!("pyro workspace snapshot list {id}"),
        "{err}"
    );
    assert_eq!(sb.ok(&["workspace", "status", &id])["state"], "started");
    let err = sb.fails(&["workspace", "snapshot", "delete", &id, "nope"], 1);
    assert_eq!(err["kind"], "not_found", "{err}");
    let err = sb.fails(&["workspace", "snapshot", "delete", &id, "baseline"], 1);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("cannot delete the baseline"),
        "{err}"
    );

    // A name of digits is a name, never a snapshot number.
    sb.ok(&["workspace", "snapshot", "create", &id, "1"]);
    sb.ok(&["workspace", "snapshot", "delete", &id, "1"]);
    let deleted = sb.ok(&["workspace", "snapshot", "delete", &id, "big"]);
    assert_eq!(deleted["deleted"], true, "{deleted}");

    // Stopped: snapshots are taken, listed and reset to all the same.
    sb.sh(&id, "echo stopped-state > /workspace/one");
    sb.ok(&["workspace", "stop", &id]);
    sb.ok(&["workspace", "snapshot", "create", &id, "parked"]);
    let list = sb.ok(&["workspace", "snapshot", "list", &id]);
    assert_eq!(names(&list), ["baseline", "parked", "one"], "{list}");
    let reset = sb.ok(&["workspace", "reset", &id, "--snapshot", "one"]);
    assert_eq!(reset["state"], "started", "{reset}");
    assert_eq!(sb.sh(&id, STATE), at_one);
    sb.ok(&["workspace", "reset", &id, "--snapshot", "parked"]);
    assert_eq!(sb.sh(&id, "cat /workspace/one"), "stopped-state\n");
    sb.ok(&["workspace", "delete", &id]);
}

#[test]
fn a_full_disk_can_be_snapshotted_and_reset_to() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    // Every free block taken, root's reserve included (fallocate writes no data, and keeps what it
    // got when it runs out), then a write that fails for want of space.
    let out = sb.sh(
        &id,
        "fallocate -l $(( $(stat -f -c '%f*%S' /workspace) )) /workspace/fill 2>/dev/null; \
         head -c 1048576 /dev/zero > /workspace/more 2>/dev/null && echo wrote || echo full",
    );
    assert_eq!(out, "full\n", "the disk is full");
    let snap = sb.ok(&["workspace", "snapshot", "create", &id, "full"]);
    assert_eq!(snap["snapshot"]["snapshot_name"], "full", "{snap}");
    sb.sh(&id, "rm /workspace/fill");
    sb.ok(&["workspace", "reset", &id, "--snapshot", "full"]);
    assert_eq!(sb.sh(&id, "test -e /workspace/fill && echo back"), "back\n");
    sb.ok(&["workspace", "delete", &id]);
}

fn statuses(diff: &Value) -> Vec<(String, String)> {
    diff["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn diff_and_summary_compare_with_a_snapshot() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let seed = sb.scratch("seed");
    std::fs::write(seed.join("a.txt"), "hello\n").unwrap();
    let id = sb.create_workspace(&["--seed-path", seed.to_str().unwrap()]);
    sb.sh(&id, "echo v2 > a.txt; echo new > b.txt");
    sb.ok(&["workspace", "snapshot", "create", &id, "pre"]);
    sb.sh(&id, "echo v3 > a.txt; rm b.txt; echo c > c.txt");

    let since = sb.ok(&["workspace", "diff", &id, "--since", "pre"]);
    assert_eq!(since["base"], "pre", "{since}");
    assert_eq!(
        statuses(&since),
        [
            ("a.txt".into(), "modified".into()),
            ("b.txt".into(), "deleted".into()),
            ("c.txt".into(), "added".into())
        ],
        "{since}"
    );
    let patch = since["patch"].as_str().unwrap();
    assert!(
        patch.contains("-v2\n+v3\n") && patch.contains("-new\n"),
        "{patch}"
    );
    let baseline = sb.ok(&["workspace", "diff", &id]);
    assert_eq!(baseline["base"], "baseline", "{baseline}");
    assert_eq!(
        statuses(&baseline),
        [
            ("a.txt".into(), "modified".into()),
            ("c.txt".into(), "added".into())
        ],
        "{baseline}"
    );
    assert!(baseline["patch"]
        .as_str()
        .unwrap()
        .contains("-hello\n+v3\n"));

    let summary = sb.ok(&["workspace", "summary", &id, "--since", "pre"]);
    assert_eq!(summary["since_snapshot"], "pre", "{summary}");
    assert_eq!(summary["changes"]["files"].as_array().unwrap().len(), 3);
    assert_eq!(
        summary["counts"]["commands"], 1,
        "only what ran after: {summary}"
    );

    for (name, kind) in [("nope", "not_found"), ("bad name", "invalid_argument")] {
        let err = sb.fails(&["workspace", "diff", &id, "--since", name], 1);
        assert_eq!(err["kind"], kind, "{name}: {err}");
    }
    assert!(
        sb.pid_of("qemu-nbd").is_none(),
        "the snapshot server is gone once the diff is done"
    );

    // A snapshot deleted and taken again under the same name is read afresh.
    sb.ok(&["workspace", "snapshot", "delete", &id, "pre"]);
    let err = sb.fails(&["workspace", "diff", &id, "--since", "pre"], 1);
    assert_eq!(err["kind"], "not_found", "{err}");
    sb.ok(&["workspace", "snapshot", "create", &id, "pre"]);
    let same = sb.ok(&["workspace", "diff", &id, "--since", "pre"]);
    assert_eq!(same["changed"], false, "{same}");

    // The tree the guest read is kept only until the VM boots again.
    let trees = sb.state.join("workspaces").join(&id).join("snapshot-trees");
    assert_eq!(
        std::fs::read_dir(&trees).unwrap().count(),
        2,
        "a tree and its manifest"
    );
    sb.ok(&["workspace", "reset", &id, "--snapshot", "pre"]);
    assert!(!trees.exists(), "dropped at the next boot");
    let after = sb.ok(&["workspace", "diff", &id, "--since", "pre"]);
    assert_eq!(after["changed"], false, "{after}");
    sb.ok(&["workspace", "delete", &id]);
}

/// A workspace made before disks were qcow2 (a raw `disk.img`) keeps its data: its disk is converted
/// on start, and its first reset rebuilds the disk from the seed, with a baseline snapshot from then on.
#[test]
fn a_raw_disk_from_an_earlier_pyro_is_converted_and_keeps_its_data() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let seed = sb.scratch("seed");
    std::fs::write(seed.join("a.txt"), "seeded\n").unwrap();
    let id = sb.create_workspace(&["--seed-path", seed.to_str().unwrap()]);
    sb.sh(&id, "echo kept > /workspace/a.txt");
    sb.ok(&["workspace", "stop", &id]);
    let vm = sb.state.join("workspaces").join(&id).join("vm");
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(vm.join("disk.qcow2"))
        .arg(vm.join("disk.img"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(vm.join("disk.qcow2")).unwrap();

    sb.ok(&["workspace", "start", &id]);
    assert_eq!(sb.sh(&id, "cat /workspace/a.txt"), "kept\n");
    assert!(!vm.join("disk.img").exists(), "converted in place");
    let list = sb.ok(&["workspace", "snapshot", "list", &id]);
    assert_eq!(names(&list), ["baseline"], "{list}");
    sb.ok(&["workspace", "reset", &id]);
    assert_eq!(sb.sh(&id, "cat /workspace/a.txt"), "seeded\n");
    sb.ok(&["workspace", "snapshot", "create", &id, "after"]);
    sb.sh(&id, "echo changed > /workspace/a.txt");
    sb.ok(&["workspace", "reset", &id]);
    assert_eq!(sb.sh(&id, "cat /workspace/a.txt"), "seeded\n");
    sb.ok(&["workspace", "delete", &id]);
}

/// Runs pyro with a free-space floor no file system meets; returns the error it printed.
fn refused_for_space(sb: &Sandbox, args: &[&str]) -> Value {
    let out = sb
        .pyro()
        .args(args)
        .arg("--json")
        .env("PYRO_MIN_FREE_MIB", "1000000000000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = value["error"].clone();
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("not enough free disk space"),
        "{err}"
    );
    assert!(
        err["hint"].as_str().unwrap().contains("PYRO_MIN_FREE_MIB"),
        "{err}"
    );
    err
}

#[test]
fn the_disk_size_is_chosen_and_host_space_is_kept_free() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&["--disk-gib", "2"]);
    assert_eq!(sb.ok(&["workspace", "status", &id])["disk_gib"], 2);
    let size: u64 = sb
        .sh(&id, "df --output=size -B1G /workspace | tail -1")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(size, 2, "the guest sees a 2 GiB disk");
    let out = sb.output(&["workspace", "create", "--disk-gib", "0"]);
    assert_eq!(out.status.code(), Some(2), "out of bounds is a usage error");

    // Below the floor: refused, and nothing is left behind.
    refused_for_space(&sb, &["workspace", "snapshot", "create", &id, "s"]);
    let list = sb.ok(&["workspace", "snapshot", "list", &id]);
    assert_eq!(names(&list), ["baseline"], "{list}");
    refused_for_space(&sb, &["workspace", "create"]);
    assert_eq!(sb.ok(&["workspace", "list"])["count"], 1);
    assert_eq!(
        std::fs::read_dir(sb.state.join("workspaces"))
            .unwrap()
            .count(),
        1,
        "no directory left by the refused create"
    );
    sb.ok(&["workspace", "stop", &id]);
    refused_for_space(&sb, &["workspace", "start", &id]);
    assert_eq!(sb.ok(&["workspace", "status", &id])["state"], "stopped");
    sb.ok(&["workspace", "delete", &id]);
}
