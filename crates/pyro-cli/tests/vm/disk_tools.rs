//! The disk tools: a stopped workspace read from its disk without booting it, with the live file
//! tools' paths, refusals and results; refused while it runs; a damaged or forged disk gives an
//! error (never a wild read), and the workspace recovers with `reset`.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{one_vm_slot, Sandbox};

/// Runs a host program and returns its stdout, asserting it succeeded.
fn host(program: &str, args: &[&str], image: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `debugfs -R REQUEST IMAGE`'s stdout (e2fsprogs, which the host has for `mke2fs`).
fn debugfs(image: &Path, request: &str) -> String {
    host("debugfs", &["-R", request], image)
}

/// Overwrites `len` bytes at `offset` of a qcow2 image's *disk* (as a guest's own kernel could).
fn scribble(image: &Path, offset: u64, len: u64) {
    let write = format!("write -P 0xff {offset} {len}");
    host("qemu-io", &["-f", "qcow2", "-c", &write], image);
}

#[test]
fn a_stopped_workspace_reads_from_its_disk_as_it_did_live() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    sb.sh(
        &id,
        "mkdir -p d/e && echo hello > d/e/a.txt && head -c 100000 /dev/zero | tr '\\0' x > big.txt \
         && printf 'a\\000b' > bin && ln -s e/a.txt d/rel && ln -s ../../etc/passwd d/out \
         && ln -s /etc/passwd abs && ln -s loop1 loop2 && ln -s loop2 loop1 && mkfifo fifo \
         && ln -s d linkdir && ln -s big.txt/ slash \
         && echo marked > /etc/pyro-marker",
    );
    let live = sb.ok(&["workspace", "file", "list", &id, "--recursive"]);
    let live_read = sb.ok(&["workspace", "file", "read", &id, "d/rel"]);
    let live_through = sb.ok(&["workspace", "file", "list", &id, "linkdir/e"]);
    sb.ok(&["workspace", "stop", &id]);

    let listed = sb.ok(&["workspace", "disk", "list", &id, "--recursive"]);
    assert_eq!(listed["entries"], live["entries"], "{listed}\n{live}");
    assert_eq!(listed["truncated"], false);
    // Through a symlinked directory, paths are shown as asked, as live.
    let through = sb.ok(&["workspace", "disk", "list", &id, "linkdir/e"]);
    assert_eq!(through["entries"], live_through["entries"], "{through}");
    assert_eq!(through["path"], "/workspace/linkdir/e", "{through}");
    let one = sb.ok(&["workspace", "disk", "list", &id, "d/rel"]);
    assert_eq!(one["entries"][0]["link_target"], "e/a.txt", "{one}");
    let read = sb.ok(&["workspace", "disk", "read", &id, "d/rel"]);
    assert_eq!(read["content"], live_read["content"], "{read}");
    assert_eq!(read["content"], "hello\n");
    // A read that was cut goes on from its offset, as a live one does.
    let cut = sb.ok(&[
        "workspace",
        "disk",
        "read",
        &id,
        "/workspace/big.txt",
        "--max-bytes",
        "10",
    ]);
    assert_eq!(
        (&cut["content"], &cut["truncated"]),
        (&"x".repeat(10).into(), &true.into())
    );
    assert_eq!(cut["size_bytes"], 100_000);
    let tail = sb.ok(&[
        "workspace",
        "disk",
        "read",
        &id,
        "big.txt",
        "--offset",
        "96000",
        "--max-bytes",
        "8192",
    ]);
    assert_eq!(tail["content"].as_str().unwrap().len(), 4000, "{tail}");
    assert_eq!(tail["truncated"], false);

    // The live tools' refusals, with their words.
    for (path, kind, words) in [
        ("abs", "invalid_argument", "resolves outside /workspace"),
        ("d/out", "invalid_argument", "resolves outside /workspace"),
        (
            "../etc/passwd",
            "invalid_argument",
            "must stay inside /workspace",
        ),
        (
            "/etc/pyro-marker",
            "invalid_argument",
            "must stay inside /workspace",
        ),
        ("loop1", "invalid_argument", "cannot be followed"),
        ("bin", "invalid_argument", "binary file"),
        ("d", "invalid_argument", "not a regular file"),
        ("fifo", "invalid_argument", "not a regular file"),
        ("big.txt/x", "invalid_argument", "not a directory"),
        ("slash", "invalid_argument", "not a directory"),
        ("missing", "not_found", "does not exist"),
    ] {
        let err = sb.refused(&["workspace", "disk", "read", &id, path], words);
        assert_eq!(err["kind"], kind, "{path}: {err}");
    }
    let zero = [
        "workspace",
        "disk",
        "read",
        &id,
        "big.txt",
        "--max-bytes",
        "0",
    ];
    sb.refused(&zero, "max_bytes");

    // Nothing booted for any of it.
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());
    assert_eq!(sb.ok(&["workspace", "status", &id])["state"], "stopped");

    // An export is the disk as a raw ext4 image, which e2fsprogs reads.
    let image = sb.root().join("disk.img");
    let image_arg = image.to_str().unwrap();
    let exported = sb.ok(&["workspace", "disk", "export", &id, "--output", image_arg]);
    assert_eq!(exported["disk_format"], "ext4", "{exported}");
    assert_eq!(exported["size_bytes"], 8u64 << 30, "{exported}");
    let meta = fs::metadata(&image).unwrap();
    assert_eq!(meta.len(), 8u64 << 30);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o077, 0, "the image is private");
    assert!(
        exported["bytes_written"].as_u64().unwrap() > 100_000,
        "{exported}"
    );
    assert_eq!(debugfs(&image, "cat /workspace/d/e/a.txt"), "hello\n");
    assert_eq!(
        debugfs(&image, "cat /root/upper/etc/pyro-marker"),
        "marked\n"
    );
    let again = ["workspace", "disk", "export", &id, "--output", image_arg];
    sb.refused(&again, "already exists");
    let nowhere = sb.root().join("no/such/dir/disk.img");
    sb.fails(
        &[
            "workspace",
            "disk",
            "export",
            &id,
            "--output",
            nowhere.to_str().unwrap(),
        ],
        1,
    );
    assert!(!sb.root().join("no").exists());

    // Started again, it is as it was; while it runs, the tools refuse and say to stop it.
    sb.ok(&["workspace", "start", &id]);
    assert_eq!(
        sb.sh(&id, "cat d/e/a.txt /etc/pyro-marker"),
        "hello\nmarked\n"
    );
    for args in [
        vec!["workspace", "disk", "list", &id],
        vec!["workspace", "disk", "read", &id, "d/e/a.txt"],
        vec!["workspace", "disk", "export", &id, "--output", "never.img"],
    ] {
        let err = sb.fails(&args, 1);
        assert_eq!(err["kind"], "invalid_state", "{err}");
        assert_eq!(err["next"]["action"], "workspace_stop", "{err}");
    }
    assert!(!Path::new("never.img").exists());
    let err = sb.fails(&["workspace", "disk", "list", "nope"], 1);
    assert_eq!(err["kind"], "not_found", "{err}");
    sb.ok(&["workspace", "delete", &id]);
}

#[test]
fn a_damaged_or_forged_disk_is_an_error_and_reset_recovers() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    // A tree deeper than any path pyro resolves: listed up to that depth, then cut.
    sb.sh(
        &id,
        "echo kept > kept.txt; n=$(printf 'n%.0s' $(seq 120)); \
         mkdir -p $(for i in $(seq 40); do printf \"$n/\"; done)",
    );
    sb.ok(&["workspace", "stop", &id]);
    let deep = sb.ok(&["workspace", "disk", "list", &id, "--recursive"]);
    assert_eq!(deep["truncated"], true, "{deep}");
    let entries = deep["entries"].as_array().unwrap();
    assert!(
        entries.len() > 30 && entries.len() < 41,
        "{}",
        entries.len()
    );

    // The file system's superblock overwritten: a clear error, with what to do.
    let disk = sb.disk_of(&id);
    let pristine = fs::read(&disk).unwrap();
    scribble(&disk, 1024, 1024);
    let kept = ["workspace", "disk", "read", &id, "kept.txt"];
    let err = sb.refused(&kept, "disk cannot be read");
    assert!(err["hint"].as_str().unwrap().contains("start"), "{err}");
    // The image itself is sound, so it still exports.
    let image = sb.root().join("damaged.img");
    sb.ok(&[
        "workspace",
        "disk",
        "export",
        &id,
        "--output",
        image.to_str().unwrap(),
    ]);

    // The image's own header forged to point past its end: refused before any read goes there.
    let mut forged = pristine.clone();
    forged[40..48].copy_from_slice(&0x00ff_ffff_ffff_0000u64.to_be_bytes());
    fs::write(&disk, &forged).unwrap();
    sb.refused(&["workspace", "disk", "list", &id], "past its end");
    let partial = sb.root().join("forged.img");
    let export = [
        "workspace",
        "disk",
        "export",
        &id,
        "--output",
        partial.to_str().unwrap(),
    ];
    sb.refused(&export, "past its end");
    assert!(!partial.exists(), "a failed export leaves no file");
    assert!(sb.processes().is_empty(), "{:?}", sb.processes());

    // Back to the image as the VM left it: reset brings the workspace back.
    fs::write(&disk, &pristine).unwrap();
    sb.ok(&["workspace", "reset", &id]);
    assert_eq!(sb.sh(&id, "ls /workspace"), "");
    sb.ok(&["workspace", "delete", &id]);
}
