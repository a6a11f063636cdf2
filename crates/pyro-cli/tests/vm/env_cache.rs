//! Environments in the cache: listing, inspecting, interrupted builds, pruning, doctor.

use std::time::{Duration, Instant};

use crate::support::{signal, wait_exit, Sandbox};

#[test]
fn env_list_names_the_catalog() {
    let sb = Sandbox::with_private_cache();
    let (json, code) = sb.json(&["env", "list", "--json"]);
    assert_eq!(code, 0);
    let names: Vec<&str> = json["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["debian:12", "debian:12-base", "debian:12-build"]);
    assert!(json["environments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["installed"] == false));
    let out = sb.output(&["env", "inspect", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_pull_killed_midway_never_looks_installed() {
    let sb = Sandbox::with_private_cache();
    let mut child = sb.spawn(&["env", "pull", "debian:12-base"]);
    let staging_seen = Instant::now();
    let environments = sb.cache.join("environments");
    loop {
        let staging = std::fs::read_dir(&environments)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".staging-"));
        if staging {
            break;
        }
        assert!(
            staging_seen.elapsed() < Duration::from_secs(60),
            "the pull never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    signal(child.id() as i32, libc::SIGKILL);
    wait_exit(&mut child, Duration::from_secs(10));
    // The build steps are told to stop when pyro dies.
    assert_eq!(sb.wait_no_processes(Duration::from_secs(60)), vec![]);

    let (json, _) = sb.json(&["env", "inspect", "debian:12-base", "--json"]);
    assert_eq!(json["installed"], false, "{json}");
    let (json, _) = sb.json(&["env", "list", "--json"]);
    assert!(json["environments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["installed"] == false));

    let (report, code) = sb.json(&["env", "prune", "--json"]);
    assert_eq!(code, 0);
    assert!(report["count"].as_u64().unwrap() >= 1, "{report}");
    let left: Vec<_> = std::fs::read_dir(&environments)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "prune left {left:?}");
}

#[test]
fn doctor_reports_the_host() {
    let sb = Sandbox::new();
    let (report, code) = sb.json(&["doctor", "--json"]);
    assert_eq!(code, 0, "{report}");
    assert!(report["qemu"]["version"].is_string());
    assert!(["usable", "pvm_only", "no_access", "absent"]
        .contains(&report["kvm"]["state"].as_str().unwrap()));
    assert!(["kvm", "tcg"].contains(&report["accelerator"]["accelerator"].as_str().unwrap()));
    let tools: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["package"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "qemu-system-x86",
            "qemu-utils",
            "qemu-utils",
            "mmdebstrap",
            "e2fsprogs"
        ]
    );
    assert_eq!(report["environments"].as_array().unwrap().len(), 3);
}

#[test]
fn prune_keeps_a_stale_base_image_that_a_workspace_uses() {
    let sb = Sandbox::with_private_cache();
    // Make sure the shared cache holds debian:12 (builds it if this test runs first).
    let pulled = Sandbox::new().output(&["env", "pull", "debian:12"]);
    assert!(
        pulled.status.success(),
        "{}",
        crate::support::stderr_of(&pulled)
    );
    // A build of debian:12 from an older recipe (stale), hard-linked from the shared cache.
    let shared = crate::support::shared_cache().join("environments/debian-12");
    let env_dir = sb.cache.join("environments/debian-12");
    std::fs::create_dir_all(sb.cache.join("environments")).unwrap();
    let linked = std::process::Command::new("cp")
        .arg("-al")
        .arg(&shared)
        .arg(&env_dir)
        .status()
        .unwrap();
    assert!(
        linked.success(),
        "the shared cache holds debian:12 (other tests build it)"
    );
    let manifest_path = env_dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["recipe_digest"] = serde_json::json!("an-older-recipe");
    std::fs::remove_file(&manifest_path).unwrap(); // a new file: never write through the hard link
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    assert_eq!(
        sb.json(&["env", "inspect", "debian:12", "--json"]).0["state"],
        "stale"
    );

    // A workspace whose VM boots from it.
    let vm = sb.state.join("workspaces/0123456789ab/vm");
    std::fs::create_dir_all(&vm).unwrap();
    let record = serde_json::json!({
        "id": "0123456789ab", "environment": "debian:12", "ephemeral": false, "created_at_unix_ms": 0,
        "config": {"vcpu_count": 1, "mem_mib": 1024, "network": false, "accelerator": "tcg", "tsc_khz": null,
                   "kernel": env_dir.join("vmlinuz"), "initramfs": "/nonexistent", "base_image": env_dir.join("rootfs.ext4"),
                   "data_disk": vm.join("disk.img")}
    });
    std::fs::write(vm.join("vm.json"), record.to_string()).unwrap();
    let (report, code) = sb.json(&["env", "prune", "--json"]);
    assert_eq!(code, 0);
    assert!(
        env_dir.join("rootfs.ext4").exists(),
        "in use, so kept: {report}"
    );

    std::fs::remove_dir_all(sb.state.join("workspaces")).unwrap();
    let (report, _) = sb.json(&["env", "prune", "--json"]);
    assert!(!env_dir.exists(), "no longer in use, so pruned: {report}");
}
