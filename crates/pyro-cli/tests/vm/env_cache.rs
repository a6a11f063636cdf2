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
    assert_eq!(tools, ["qemu-system-x86", "mmdebstrap", "e2fsprogs"]);
    assert_eq!(report["environments"].as_array().unwrap().len(), 3);
}
