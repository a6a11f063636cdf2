//! The daily loop: prepare, warm restores that are each VM's own, readiness, and damaged templates.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{agent_bin, all_vm_slots, one_vm_slot, shared_cache, Sandbox};

/// Prepares the shared cache (idempotent) and returns the network-off template's manifest.
fn prepared(sb: &Sandbox) -> Value {
    let result = sb.ok(&["prepare", "debian:12"]);
    let templates = result["templates"].as_array().unwrap();
    assert_eq!(templates.len(), 2, "network off and on: {result}");
    templates
        .iter()
        .find(|t| t["manifest"]["key"]["network"] == false)
        .unwrap()["manifest"]
        .clone()
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn prepare_is_idempotent_and_doctor_says_warm() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    prepared(&sb);
    let again = sb.ok(&["prepare", "debian:12"]);
    assert!(
        again["templates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["action"] == "unchanged"),
        "{again}"
    );
    let doctor = sb.ok(&["doctor", "--environment", "debian:12"]);
    assert_eq!(doctor["readiness"][0]["state"], "warm", "{doctor}");
    let err = sb.fails(&["prepare", "debian:13"], 1);
    assert_eq!(err["kind"], "unknown_environment");
}

#[test]
fn restored_guests_are_distinct_and_on_time() {
    let _slots = all_vm_slots();
    let sb = Sandbox::new();
    let manifest = prepared(&sb);
    // The clock check needs a template old enough for a stale clock to show.
    let age = now_seconds() - manifest["created_at_unix_ms"].as_f64().unwrap() / 1000.0;
    if age < 10.0 {
        std::thread::sleep(Duration::from_secs_f64(10.0 - age));
    }
    let script = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /proc/sys/kernel/random/uuid; \
                  hostname; cat /etc/machine-id; cat /proc/sys/kernel/random/boot_id; date +%s.%N";
    let children: Vec<_> = (0..2)
        .map(|_| sb.spawn(&["run", "debian:12", "--json", "--", "sh", "-c", script]))
        .collect();
    let mut seen: Vec<Vec<String>> = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let host_now = now_seconds();
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result["boot_mode"], "warm", "{result}");
        let lines: Vec<String> = result["stdout"]
            .as_str()
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(lines.len(), 6, "{result}");
        // Independent proof of the restore: the guest booted once, when the template was made.
        assert_eq!(lines[4], manifest["boot_id"].as_str().unwrap());
        let guest_now: f64 = lines[5].parse().unwrap();
        assert!(
            (host_now - guest_now).abs() < 2.0 + result["exec_ms"].as_f64().unwrap() / 1000.0,
            "guest clock {guest_now}, host {host_now}"
        );
        seen.push(lines);
    }
    for (field, (first, second)) in seen[0].iter().zip(&seen[1]).take(4).enumerate() {
        assert_ne!(first, second, "field {field} must differ between restores");
    }
}

#[test]
fn warm_workspaces_are_isolated_from_each_other_and_from_their_resets() {
    let _slots = all_vm_slots();
    let sb = Sandbox::new();
    prepared(&sb);
    let a = sb.ok(&["workspace", "create", "--name", "a"]);
    let b = sb.ok(&["workspace", "create", "--name", "b"]);
    assert_eq!(
        (a["boot_mode"].as_str(), b["boot_mode"].as_str()),
        (Some("warm"), Some("warm"))
    );
    sb.ok(&[
        "workspace",
        "file",
        "write",
        "a",
        "secret.txt",
        "--text",
        "only a",
    ]);
    let (listing, _) = sb.exec("b", &["sh", "-c", "ls /workspace; ls /tmp"]);
    assert_eq!(listing["stdout"], "", "{listing}");
    sb.exec("a", &["sh", "-c", "echo x > /root/outside"]);
    let reset = sb.ok(&["workspace", "reset", "a"]);
    assert_eq!(reset["boot_mode"], "warm", "{reset}");
    // Each boot says where its time went; a workspace's has no command or teardown.
    for result in [&a, &reset] {
        let phases = result["phases_ms"].as_object().unwrap();
        let keys: Vec<&str> = phases.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["activate", "disk", "prepare", "restore", "spawn"],
            "{result}"
        );
    }
    let (after, _) = sb.exec("a", &["sh", "-c", "ls /workspace; ls /root"]);
    assert_eq!(
        after["stdout"], "",
        "a reset leaves nothing behind: {after}"
    );
    let started = sb.ok(&["workspace", "stop", "b"]);
    assert_eq!(started["state"], "stopped");
    assert_eq!(sb.ok(&["workspace", "start", "b"])["boot_mode"], "warm");
    assert_eq!(sb.ok(&["workspace", "start", "b"])["state"], "started");
    let cold = sb.ok(&["workspace", "reset", "b", "--cold"]);
    assert_eq!(cold["boot_mode"], "cold");
    sb.ok(&["workspace", "delete", "a"]);
    sb.ok(&["workspace", "delete", "b"]);
}

/// A sandbox with its own cache: the shared environment hard-linked, the templates copied.
fn private_cache_copy(sb: &Sandbox) -> PathBuf {
    let cache = sb.root().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let shared = shared_cache();
    let link = std::process::Command::new("cp")
        .args(["-al"])
        .arg(shared.join("environments"))
        .arg(&cache)
        .status()
        .unwrap();
    assert!(link.success());
    let copy = std::process::Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(shared.join("templates"))
        .arg(&cache)
        .status()
        .unwrap();
    assert!(copy.success());
    cache
}

fn run_reason(sb: &Sandbox, cache: &Path, agent: &Path) -> Value {
    let out = sb
        .pyro()
        .env("PYRO_CACHE_DIR", cache)
        .env("PYRO_AGENT", agent)
        .args(["run", "debian:12", "--json", "--", "true"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn readiness(sb: &Sandbox, cache: &Path, agent: &Path) -> Value {
    let out = sb
        .pyro()
        .env("PYRO_CACHE_DIR", cache)
        .env("PYRO_AGENT", agent)
        .args(["doctor", "--environment", "debian:12", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["readiness"][0].clone()
}

#[test]
fn stale_damaged_or_missing_templates_are_never_restored() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    prepared(&sb);
    let cache = private_cache_copy(&sb);
    let agent = agent_bin();
    assert_eq!(readiness(&sb, &cache, &agent)["state"], "warm");

    // A new guest agent makes every template stale.
    let new_agent = sb.root().join("pyro-agent");
    let mut bytes = fs::read(&agent).unwrap();
    bytes.push(0);
    fs::write(&new_agent, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&new_agent, fs::Permissions::from_mode(0o755)).unwrap();
    let stale = readiness(&sb, &cache, &new_agent);
    assert_eq!(stale["state"], "stale", "{stale}");
    assert!(
        stale["reason"]
            .as_str()
            .unwrap()
            .contains("guest agent changed"),
        "{stale}"
    );
    let run = run_reason(&sb, &cache, &new_agent);
    assert_eq!(
        (run["boot_mode"].as_str(), run["exit_code"].as_i64()),
        (Some("cold"), Some(0)),
        "{run}"
    );
    assert!(
        run["boot_mode_reason"]
            .as_str()
            .unwrap()
            .contains("guest agent changed"),
        "{run}"
    );

    // One flipped byte in the middle of the RAM image is caught by its digest.
    // The template this agent would restore (the cache may hold others, for other agents).
    let in_use = readiness(&sb, &cache, &agent)["templates"][0]["template_id"]
        .as_str()
        .unwrap()
        .to_string();
    let template = cache.join("templates").join(in_use);
    let ram = template.join("ram");
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ram)
        .unwrap();
    let middle = file.metadata().unwrap().len() / 2;
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(middle)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(middle)).unwrap();
    file.write_all(&[byte[0] ^ 0xff]).unwrap();
    drop(file);
    let damaged = readiness(&sb, &cache, &agent);
    assert_eq!(damaged["state"], "stale", "{damaged}");
    assert!(
        damaged["reason"].as_str().unwrap().contains("damaged"),
        "{damaged}"
    );
    let run = run_reason(&sb, &cache, &agent);
    assert_eq!(
        (run["boot_mode"].as_str(), run["exit_code"].as_i64()),
        (Some("cold"), Some(0)),
        "{run}"
    );

    // Templates deleted by hand: cold, and everything still works.
    fs::remove_dir_all(cache.join("templates")).unwrap();
    assert_eq!(readiness(&sb, &cache, &agent)["state"], "cold");
    let run = run_reason(&sb, &cache, &agent);
    assert_eq!(
        (run["boot_mode"].as_str(), run["exit_code"].as_i64()),
        (Some("cold"), Some(0)),
        "{run}"
    );
}

#[test]
fn two_prepares_at_once_make_one_set_of_templates() {
    let _slots = all_vm_slots();
    let sb = Sandbox::new();
    prepared(&sb);
    let cache = private_cache_copy(&sb);
    fs::remove_dir_all(cache.join("templates")).unwrap();
    let spawn = || {
        sb.pyro()
            .env("PYRO_CACHE_DIR", &cache)
            .args(["prepare", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let mut actions = Vec::new();
    for out in &outputs {
        assert!(out.status.success());
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        actions.extend(
            result["templates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["action"].as_str().unwrap().to_string()),
        );
    }
    actions.sort();
    assert_eq!(actions, ["created", "created", "unchanged", "unchanged"]);
    let templates: Vec<_> = fs::read_dir(cache.join("templates"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(templates.len(), 2, "no torn or duplicate template");
}

#[test]
fn not_enough_disk_is_a_clear_error_that_leaves_nothing() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    prepared(&sb);
    let env_bytes: u64 = fs::read_dir(shared_cache().join("environments/debian-12"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
        + (64 << 20);
    let cache = sb.root().join("small-cache");
    fs::create_dir_all(&cache).unwrap();
    let size = format!("size={}k", (env_bytes + (200 << 20)) / 1024);
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &size, "pyro-test"])
        .arg(&cache)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs and needs root"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(cache.clone());
    // Only the environment being prepared: other tests may have built more into the shared cache.
    fs::create_dir_all(cache.join("environments")).unwrap();
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(shared_cache().join("environments/debian-12"))
        .arg(cache.join("environments"))
        .status()
        .unwrap();
    assert!(copy.success());
    let out = sb
        .pyro()
        .env("PYRO_CACHE_DIR", &cache)
        .args(["prepare", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not enough free disk space"),
        "{err}"
    );
    let leftovers: Vec<_> = fs::read_dir(cache.join("templates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "nothing half-written: {leftovers:?}");
}

#[test]
fn the_daily_loop_smoke() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/smoke-daily-loop.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("PYRO", crate::support::pyro_bin())
        .env("PYRO_AGENT", agent_bin())
        .env("PYRO_CACHE_DIR", shared_cache())
        .env("SMOKE_DIR", sb.root().join("smoke"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "smoke failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("daily loop: ok"), "{stdout}");
}

/// The template id a warm boot names in its reason.
fn restored_from(result: &serde_json::Value) -> Option<String> {
    let reason = result["boot_mode_reason"].as_str()?;
    let id = reason.strip_prefix("restored from template ")?;
    Some(id.split_whitespace().next()?.to_string())
}

#[test]
fn a_cold_boot_makes_its_missing_template_in_the_background() {
    let _slots = all_vm_slots();
    let mut sb = Sandbox::new();
    sb.auto_prepare = true;
    // A shape no other test uses, in the shared cache: its template is removed at the end (and
    // first, should an earlier run have left it).
    let run = |sb: &Sandbox| {
        let (result, code) = sb.json(&[
            "run",
            "debian:12",
            "--mem-mib",
            "704",
            "--json",
            "--",
            "true",
        ]);
        assert_eq!(code, 0, "{result}");
        result
    };
    let templates = sb.cache.join("templates");
    let mut first = run(&sb);
    if let Some(id) = restored_from(&first) {
        std::fs::remove_dir_all(templates.join(id)).unwrap();
        first = run(&sb);
    }
    assert_eq!(first["boot_mode"], "cold", "{first}");
    assert!(
        first["boot_mode_reason"]
            .as_str()
            .unwrap()
            .contains("being made in the background"),
        "{first}"
    );
    // The job runs detached; doctor lists it until it is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let doctor = sb.json(&["doctor", "--json"]).0;
        assert_eq!(doctor["auto_prepare"]["enabled"], true, "{doctor}");
        if doctor["auto_prepare"]["in_progress"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{doctor}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let second = run(&sb);
    assert_eq!(second["boot_mode"], "warm", "{second}");
    let id = restored_from(&second).unwrap();
    std::fs::remove_dir_all(templates.join(&id)).unwrap();
    // With auto-prepare off, a cold boot says nothing of a job and starts none.
    sb.auto_prepare = false;
    let off = run(&sb);
    assert_eq!(off["boot_mode"], "cold", "{off}");
    assert!(
        !off["boot_mode_reason"]
            .as_str()
            .unwrap()
            .contains("background"),
        "{off}"
    );
    let doctor = sb.json(&["doctor", "--json"]).0;
    assert_eq!(doctor["auto_prepare"]["enabled"], false, "{doctor}");
    assert!(!templates.join(&id).exists());
}

/// Waits until every pool has its VMs ready (a claim refills it in the background); returns the
/// pools as `doctor` reports them.
fn pools_ready(sb: &Sandbox) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let doctor = sb.json(&["doctor", "--json"]).0;
        let pools = doctor["pools"].clone();
        let ready = pools
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["ready"].as_u64() >= p["size"].as_u64());
        if ready {
            return pools;
        }
        assert!(std::time::Instant::now() < deadline, "{doctor}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_pooled_run_takes_a_warm_vm_of_its_own_and_the_pool_refills() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    prepared(&sb);
    let result = sb.ok(&["prepare", "debian:12", "--pool", "1"]);
    assert_eq!(result["pools"][0]["size"], 1, "{result}");
    assert_eq!(result["pools"][0]["ready"], 1, "{result}");
    let script = "hostname; cat /etc/machine-id; head -c 16 /dev/urandom | od -An -tx1";
    let mut seen = Vec::new();
    for _ in 0..2 {
        pools_ready(&sb);
        let (run, code) = sb.json(&["run", "debian:12", "--json", "--", "sh", "-c", script]);
        assert_eq!(code, 0, "{run}");
        assert_eq!(run["boot_mode"], "pooled", "{run}");
        assert_eq!(run["exit_code"], 0, "{run}");
        let stdout = run["stdout"].as_str().unwrap().to_string();
        let vm_id = run["vm_id"].as_str().unwrap();
        assert_eq!(
            stdout.lines().next(),
            Some(format!("pyro-{vm_id}").as_str())
        );
        // Nothing of the run is left once the CLI has exited; the pool keeps its own VM.
        assert!(sb.leftover_vms_after(Duration::from_secs(20)).is_empty());
        seen.push(stdout);
    }
    for (a, b) in seen[0].lines().zip(seen[1].lines()) {
        assert_ne!(
            a, b,
            "two pooled runs share an identity or randomness:\n{seen:?}"
        );
    }
    // A new workspace takes one too, and lives on as any workspace does.
    pools_ready(&sb);
    let seed = sb.scratch("seed");
    fs::write(seed.join("a.txt"), "seeded\n").unwrap();
    let ws = sb.ok(&["workspace", "create", "--seed-path", seed.to_str().unwrap()]);
    assert_eq!(ws["boot_mode"], "pooled", "{ws}");
    let id = ws["workspace_id"].as_str().unwrap();
    assert_eq!(
        sb.sh(id, "hostname; cat a.txt"),
        format!("pyro-{id}\nseeded\n")
    );
    sb.sh(id, "echo changed > a.txt");
    assert_eq!(sb.ok(&["workspace", "suspend", id])["state"], "suspended");
    assert_eq!(sb.ok(&["workspace", "resume", id])["boot_mode"], "resumed");
    sb.ok(&["workspace", "stop", id]);
    assert_eq!(sb.ok(&["workspace", "start", id])["state"], "started");
    assert_eq!(sb.sh(id, "cat a.txt"), "changed\n");
    // A reset takes a pooled VM too, which takes the workspace's reverted disk over.
    pools_ready(&sb);
    let reset = sb.ok(&["workspace", "reset", id]);
    assert_eq!(reset["boot_mode"], "pooled", "{reset}");
    assert_eq!(
        sb.sh(id, "hostname; cat a.txt"),
        format!("pyro-{id}\nseeded\n")
    );
    // Snapshots, a reset to one, and a suspension all work on the disk taken over.
    sb.sh(id, "echo kept > a.txt");
    sb.ok(&["workspace", "snapshot", "create", id, "kept"]);
    sb.sh(id, "echo lost > a.txt");
    pools_ready(&sb);
    let back = sb.ok(&["workspace", "reset", id, "--snapshot", "kept"]);
    assert_eq!(back["boot_mode"], "pooled", "{back}");
    assert_eq!(sb.sh(id, "cat a.txt"), "kept\n");
    assert_eq!(sb.ok(&["workspace", "suspend", id])["state"], "suspended");
    assert_eq!(sb.ok(&["workspace", "resume", id])["boot_mode"], "resumed");
    assert_eq!(sb.sh(id, "cat a.txt"), "kept\n");
    let ws_dir = sb.state.join("workspaces").join(id);
    assert!(!ws_dir.join("vm.aside").exists());
    sb.ok(&["workspace", "delete", id]);
    // Out of bounds, then empty.
    let out = sb.output(&["prepare", "debian:12", "--pool", "9"]);
    assert_eq!(out.status.code(), Some(2));
    pools_ready(&sb);
    let emptied = sb.ok(&["prepare", "debian:12", "--pool", "0"]);
    assert_eq!(emptied["pools"][0]["size"], 0, "{emptied}");
    assert!(sb.wait_no_processes(Duration::from_secs(20)).is_empty());
    let doctor = sb.json(&["doctor", "--json"]).0;
    assert_eq!(doctor["pools"], serde_json::json!([]), "{doctor}");
    // Without a pool, runs are warm as before.
    let (run, _) = sb.json(&["run", "debian:12", "--json", "--", "true"]);
    assert_eq!(run["boot_mode"], "warm", "{run}");
}
