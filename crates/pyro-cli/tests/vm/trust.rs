//! The trust boundary: what a guest (a plain command, or a guest that replaced the agent) can reach
//! on the host. Network destinations, links planted by exports, diffs that would spin, commands that
//! reach for the agent, forged replies, calls that never end, and the modes of what pyro keeps.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::nethost::{serve_on_host, TestHost};
use crate::support::{one_vm_slot, Sandbox};

/// A guest-side probe: prints `TARGET open`, `TARGET refused` (the connection was refused) or
/// `TARGET hung` (no answer within 10 s) for each `host:port`, over TCP. For UDP (`udp/host:port`)
/// it sends one datagram and waits for an answer: a refusal comes back as ICMP, which fails the
/// read at once.
fn probe_script(targets: &[String]) -> String {
    let list = targets.join(" ");
    format!(
        "for t in {list}; do case $t in udp/*) a=${{t#udp/}}; h=${{a%:*}}; p=${{a##*:}}; \
           timeout 10 bash -c \"exec 3<>/dev/udp/$h/$p && echo probe >&3 && read -t 5 -u 3\" 2>/dev/null;; \
         *) h=${{t%:*}}; p=${{t##*:}}; timeout 10 bash -c \"exec 3<>/dev/tcp/$h/$p\" 2>/dev/null;; esac; \
         rc=$?; if [ $rc = 0 ]; then echo \"$t open\"; elif [ $rc = 124 ] || [ $rc -gt 128 ]; then echo \"$t hung\"; \
         else echo \"$t refused\"; fi; done"
    )
}

fn verdicts(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, v)| matches!(*v, "open" | "refused" | "hung"))
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect()
}

/// A guest-side DNS query for `name` (type A) over TCP to the gateway's resolver address: prints
/// `dns-tcp RCODE ANSWERS`.
fn dns_over_tcp_script(name: &str) -> String {
    let mut query = String::from("\\022\\064\\001\\000\\000\\001\\000\\000\\000\\000\\000\\000");
    let mut len = 12 + 1 + 4;
    for label in name.split('.') {
        query.push_str(&format!("\\{:03o}{label}", label.len()));
        len += 1 + label.len();
    }
    query.push_str("\\000\\000\\001\\000\\001");
    format!(
        "exec 3<>/dev/tcp/10.0.2.3/53 && printf '\\{:03o}\\{:03o}{query}' >&3 && \
         head -c 14 <&3 | od -An -tu1 | xargs | (read -r _ _ _ _ _ flags _ _ _ answers _; echo \"dns-tcp $((flags & 15)) $answers\")",
        len >> 8,
        len & 0xff
    )
}

/// The host's own IPv4 addresses, from `ip`.
fn host_addresses() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn a_networked_guest_reaches_the_mirror_but_no_host_address() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let (_loopback, loopback_port) = serve_on_host("127.0.0.1:0", b"host secret".to_vec());
    let (_any, any_port) = serve_on_host("0.0.0.0:0", b"host secret".to_vec());
    let mut targets = vec![
        format!("10.0.2.2:{loopback_port}"),
        format!("10.0.2.2:{any_port}"),
        format!("10.0.2.3:{any_port}"),
        "169.254.169.254:80".to_string(),
        "10.0.2.99:80".to_string(),
    ];
    targets.extend(
        host_addresses()
            .into_iter()
            .map(|a| format!("{a}:{any_port}")),
    );
    // UDP anywhere but the resolver is refused too (DNS goes through the gateway's resolver).
    targets.extend([
        "udp/1.1.1.1:53".to_string(),
        format!("udp/10.0.2.2:{any_port}"),
        "udp/10.0.2.3:9".to_string(),
    ]);
    // Refusals come at once; then DNS over TCP, answered by the gateway; then the Debian mirror (by
    // name, through pyro's DNS) and a package installed with the capabilities commands keep.
    let script = format!(
        "{}; {}; apt-get update -qq >/dev/null 2>&1 && echo update-ok; \
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tree >/dev/null 2>&1 && tree --version >/dev/null && echo install-ok",
        probe_script(&targets),
        dns_over_tcp_script("deb.debian.org")
    );
    let (result, code) = sb.json(&[
        "run",
        "debian:12",
        "--json",
        "--network",
        "--timeout-seconds",
        "900",
        "--",
        "bash",
        "-c",
        &script,
    ]);
    assert_eq!(code, 0, "{result}");
    let stdout = result["stdout"].as_str().unwrap();
    let got = verdicts(stdout);
    assert_eq!(got.len(), targets.len(), "{stdout}");
    for (target, verdict) in got {
        assert_eq!(
            verdict, "refused",
            "{target} must not be reachable: {stdout}"
        );
    }
    let dns = stdout
        .lines()
        .find(|l| l.starts_with("dns-tcp "))
        .unwrap_or("");
    let answers: u32 = dns.rsplit(' ').next().unwrap_or("").parse().unwrap_or(0);
    assert!(
        dns.starts_with("dns-tcp 0 ") && answers > 0,
        "DNS over TCP: {stdout}"
    );
    assert!(stdout.contains("update-ok"), "apt-get update: {result}");
    assert!(stdout.contains("install-ok"), "apt-get install: {result}");
    // The policy with published ports reaches no more of the host.
    let (result, _) = sb.json(&[
        "run",
        "debian:12",
        "--json",
        "--network-policy",
        "egress+published-ports",
        "--",
        "bash",
        "-c",
        &probe_script(&[format!("10.0.2.2:{loopback_port}")]),
    ]);
    assert_eq!(
        verdicts(result["stdout"].as_str().unwrap()),
        [(format!("10.0.2.2:{loopback_port}"), "refused".to_string())],
        "{result}"
    );
}

#[test]
fn an_allow_list_opens_only_its_destinations() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let test_host = TestHost::new();
    let _allowed = test_host.serve(8000, b"allowed destination".to_vec());
    let _other = test_host.serve(8001, b"other port".to_vec());
    let addr = test_host.addr;
    let fetch = format!(
        "exec 3<>/dev/tcp/{addr}/8000 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && tail -c 19 <&3; echo; \
         {}; getent hosts deb.debian.org >/dev/null && echo dns-answered || echo dns-refused; {}",
        probe_script(&[format!("{addr}:8001"), "151.101.2.132:80".into()]),
        dns_over_tcp_script("deb.debian.org")
    );
    let allow = format!("{addr}:8000");
    let (result, code) = sb.json(&[
        "run",
        "debian:12",
        "--json",
        "--allow-host",
        &allow,
        "--",
        "bash",
        "-c",
        &fetch,
    ]);
    assert_eq!(code, 0, "{result}");
    let stdout = result["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("allowed destination\n"), "{stdout}");
    assert_eq!(
        verdicts(stdout),
        [
            (format!("{addr}:8001"), "refused".to_string()),
            ("151.101.2.132:80".to_string(), "refused".to_string())
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("dns-refused") && stdout.contains("dns-tcp 5 0"),
        "only allowed names resolve, over UDP and TCP: {stdout}"
    );
    // Without the allow list the test host is a private address: refused.
    let (result, _) = sb.json(&[
        "run",
        "debian:12",
        "--json",
        "--network",
        "--",
        "bash",
        "-c",
        &probe_script(std::slice::from_ref(&allow)),
    ]);
    assert_eq!(
        verdicts(result["stdout"].as_str().unwrap()),
        [(allow, "refused".to_string())]
    );
    // An allowed host that does not parse is refused before anything boots.
    let out = sb.output(&["run", "debian:12", "--allow-host", "a:b", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST[:PORT]"));
    // So is one that names the host itself, which no guest reaches.
    let out = sb.output(&[
        "run",
        "debian:12",
        "--allow-host",
        "127.0.0.1:8000",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the host itself"));
    assert!(sb
        .leftover_vms_after(std::time::Duration::from_secs(20))
        .is_empty());
}

#[test]
fn compilers_and_test_runners_work_with_the_capabilities_commands_keep() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let script = r#"
        cd /tmp && printf '#include <stdio.h>\nint main(void) { puts("compiled"); return 0; }\n' > t.c
        gcc -O2 -fsanitize=address t.c -o t && ./t
        printf 'import unittest\nclass T(unittest.TestCase):\n    def test(self): self.assertTrue(True)\nunittest.main()\n' > t.py
        python3 t.py 2>&1 | tail -1
        grep CapBnd /proc/self/status
    "#;
    let (result, code) = sb.json(&[
        "run",
        "debian:12-build",
        "--json",
        "--timeout-seconds",
        "600",
        "--",
        "bash",
        "-c",
        script,
    ]);
    assert_eq!(code, 0, "{result}");
    assert_eq!(
        result["stdout"].as_str().unwrap().trim(),
        "compiled\nOK\nCapBnd:\t00000000a00025fb",
        "{result}"
    );
}

#[test]
fn exports_never_plant_links_on_the_host() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    let setup =
        "cd /workspace && ln -s .ssh keys && mkdir d && echo ok > d/ok.txt && ln -s ok.txt d/fine \
                 && ln -s ../.. d/up && ln -s /etc/passwd d/abs";
    assert_eq!(sb.exec(&id, &["sh", "-c", setup]).1, 0);
    let out = sb.scratch("out");
    // A single-path export of a link writes nothing.
    let err = sb.fails(
        &[
            "workspace",
            "export",
            &id,
            "keys",
            "--output",
            out.join("keys").to_str().unwrap(),
        ],
        1,
    );
    assert!(
        err["message"].as_str().unwrap().contains("symlink"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&out).unwrap().count(),
        0,
        "nothing left behind"
    );
    // A tree keeps the links that stay inside and reports the others.
    let result = sb.ok(&[
        "workspace",
        "export",
        &id,
        "d",
        "--output",
        out.join("d").to_str().unwrap(),
    ]);
    let mut skipped: Vec<&str> = result["skipped_links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    skipped.sort();
    assert_eq!(skipped, ["abs", "up"], "{result}");
    assert_eq!(fs::read_to_string(out.join("d/fine")).unwrap(), "ok\n");
    assert!(fs::symlink_metadata(out.join("d/up")).is_err());
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1, "only the export");
    sb.ok(&["workspace", "delete", &id]);
}

/// Runs pyro, giving up (and failing) after `limit`: a guard against hangs, not a speed target.
fn output_within(sb: &Sandbox, args: &[&str], limit: Duration) -> (Value, i32, u64) {
    let mut child = sb
        .pyro()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut text);
        text
    });
    let started = Instant::now();
    let (code, max_rss_kib) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child.
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if done == pid {
            break (libc::WEXITSTATUS(status), usage.ru_maxrss as u64);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("pyro {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Reaped by wait4 already; this only tells std so.
    let _ = child.wait();
    let text = reader.join().unwrap();
    let value = serde_json::from_slice(&text).unwrap_or(Value::Null);
    (value, code, max_rss_kib)
}

#[test]
fn a_worst_case_diff_finishes_within_its_budget() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let seed = sb.scratch("seed");
    fs::write(seed.join("lock.txt"), "a\n".repeat(1 << 19)).unwrap();
    let id = sb.create_workspace(&["--seed-path", seed.to_str().unwrap()]);
    let rewrite = "yes b | head -c 1048576 > /workspace/lock.txt";
    assert_eq!(sb.exec(&id, &["sh", "-c", rewrite]).1, 0);
    let (diff, code, _) = output_within(
        &sb,
        &["workspace", "diff", &id, "--json"],
        Duration::from_secs(300),
    );
    assert_eq!(code, 0, "{diff}");
    let entry = &diff["entries"][0];
    assert_eq!(entry["path"], "lock.txt");
    assert_eq!(entry["text"], true, "{entry}");
    assert_eq!(entry["lines_added"], 1 << 19);
    assert_eq!(entry["lines_removed"], 1 << 19);
    sb.ok(&["workspace", "delete", &id]);
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn commands_cannot_reach_the_agent_and_pyro_keeps_its_files_private() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    let checks = r#"
        ls /proc/1/root >/dev/null 2>&1 && echo reach-proc1-root
        head -c1 /proc/1/mem >/dev/null 2>&1 && echo reach-proc1-mem
        ls /dev | grep -qE '^(vport|vd|sd|mem|kmsg)' && echo reach-devices
        mknod /tmp/port c 1 3 2>/dev/null && echo mknod
        echo x > /proc/sys/kernel/core_pattern 2>/dev/null && echo core-pattern
        chroot / true 2>/dev/null && echo chroot
        unshare -m true 2>/dev/null && echo unshare
        grep CapBnd /proc/self/status
        cd /workspace && git init -q r && cd r && echo hi > f && git add f && git -c user.email=a@b -c user.name=a commit -qm c && echo git-ok
        touch "/workspace/$(printf 'x\033]0;PWNED\007y')"
    "#;
    let (result, code) = sb.exec(&id, &["bash", "-c", checks]);
    assert_eq!(code, 0, "{result}");
    let stdout = result["stdout"].as_str().unwrap();
    assert_eq!(
        stdout.trim(),
        "CapBnd:\t00000000a00025fb\ngit-ok",
        "commands keep only the documented capabilities: {result}"
    );
    // A name with escape sequences reaches the terminal escaped; --json keeps it exact.
    let out = sb.output(&["workspace", "file", "list", &id]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains('\u{1b}'), "{listing:?}");
    assert!(listing.contains("x\\x1b]0;PWNED\\x07y"), "{listing:?}");
    let json = sb.ok(&["workspace", "file", "list", &id]);
    assert!(
        json.to_string().contains("x\\u001b]0;PWNED\\u0007y"),
        "{json}"
    );
    // Run by root, QEMU is an unprivileged user of its own that owns only the VM's disk.
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let qemu: Vec<i32> = sb
            .processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains("qemu-system"))
            .map(|(pid, _)| pid)
            .collect();
        assert_eq!(qemu.len(), 1, "{:?}", sb.processes());
        let status = fs::read_to_string(format!("/proc/{}/status", qemu[0])).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid_line.split_whitespace().skip(1).all(|uid| uid != "0"),
            "{uid_line}"
        );
    }
    // Everything pyro keeps is the user's alone.
    let ws = sb.state.join("workspaces").join(&id);
    let vm = ws.join("vm");
    for dir in [
        sb.state.clone(),
        sb.state.join("workspaces"),
        ws.clone(),
        vm.clone(),
    ] {
        assert_eq!(mode_of(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        sb.state.join("pyro.db"),
        ws.join("baseline.tar"),
        vm.join("disk.qcow2"),
        vm.join("vm.json"),
        vm.join("supervisor.sock"),
        vm.join("qmp.sock"),
        vm.join("agent.sock"),
    ] {
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
    sb.ok(&["workspace", "delete", &id]);
}

/// Puts the hostile agent of workspace `id` in `mode` (any guest command could).
fn hostile_mode(sb: &Sandbox, id: &str, mode: &str) {
    let (result, code) = sb.exec(id, &["sh", "-c", &format!("echo {mode} > /hostile")]);
    assert_eq!(code, 0, "{result}");
}

fn message(error: &Value) -> String {
    error["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_hostile_agent_gets_nothing_past_the_host() {
    let _slot = one_vm_slot();
    let sb = Sandbox::hostile(4);
    let id = sb.create_workspace(&["--ttl-seconds", "3600"]);
    let limit = Duration::from_secs(120);
    let fails = |args: &[&str], expect: &str| {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let (value, code, max_rss_kib) = output_within(&sb, &with_json, limit);
        assert_ne!(code, 0, "pyro {args:?} must fail: {value}");
        let text = message(&value["error"]);
        assert!(
            expect.split('|').any(|e| text.contains(e)),
            "pyro {args:?}: {text}"
        );
        max_rss_kib
    };
    // Manifests: unsafe, absolute and duplicate paths, and one that never ends.
    for (mode, expect) in [
        ("manifest-unsafe", "not a plain relative path"),
        ("manifest-absolute", "not a plain relative path"),
        ("manifest-duplicate", "appears twice"),
        // Endless: it hits the byte limit, or runs out of time first (the payload earns time only
        // at a minimum rate).
        ("manifest-endless", "more than the|did not complete"),
        ("size-lies", "more than the 4-byte limit"),
    ] {
        hostile_mode(&sb, &id, mode);
        let rss = fails(&["workspace", "diff", &id], expect);
        assert!(rss < 600 << 10, "{mode}: the CLI grew to {rss} KiB");
    }
    // A snapshot's tree, read for `diff --since`, is held to the export rules, and none is kept.
    hostile_mode(&sb, &id, "none");
    sb.ok(&["workspace", "snapshot", "create", &id, "s"]);
    for (mode, expect) in [
        ("export-longname", "header record"),
        ("export-pax-hidden", "PAX header record"),
    ] {
        hostile_mode(&sb, &id, mode);
        let rss = fails(&["workspace", "diff", &id, "--since", "s"], expect);
        assert!(rss < 600 << 10, "{mode}: the CLI grew to {rss} KiB");
        let trees = sb.state.join("workspaces").join(&id).join("snapshot-trees");
        let kept = fs::read_dir(&trees).map(|d| d.count()).unwrap_or(0);
        assert_eq!(kept, 0, "{mode}: a forged tree was kept");
    }
    // Archives: a header record claiming a gigabyte, links where files were asked for.
    let out = sb.scratch("out");
    for (mode, expect) in [
        ("export-longname", "header record"),
        ("export-pax-hidden", "PAX header record"),
        ("export-file-is-link", "symlink"),
        ("export-deep-link", "asked for"),
    ] {
        hostile_mode(&sb, &id, mode);
        // Parents the export makes go again when it fails.
        let target = out.join("made/by/export").join(mode);
        let rss = fails(
            &[
                "workspace",
                "export",
                &id,
                "report.txt",
                "--output",
                target.to_str().unwrap(),
            ],
            expect,
        );
        assert!(rss < 600 << 10, "{mode}: the CLI grew to {rss} KiB");
        assert_eq!(
            fs::read_dir(&out).unwrap().count(),
            0,
            "{mode} left files behind"
        );
    }
    hostile_mode(&sb, &id, "export-tree-escape");
    let tree = sb.ok(&[
        "workspace",
        "export",
        &id,
        "dir",
        "--output",
        out.join("tree").to_str().unwrap(),
    ]);
    assert_eq!(tree["skipped_links"].as_array().unwrap().len(), 2, "{tree}");
    assert_eq!(
        fs::read_dir(out.join("tree")).unwrap().count(),
        1,
        "only ok.txt"
    );
    // Command output where none belongs, a reply of the wrong kind, replies that never come.
    hostile_mode(&sb, &id, "output-flood");
    fails(
        &["workspace", "file", "list", &id],
        "command output in reply",
    );
    hostile_mode(&sb, &id, "wrong-reply");
    fails(
        &["workspace", "file", "list", &id],
        "unexpected agent reply",
    );
    hostile_mode(&sb, &id, "silent");
    fails(&["workspace", "file", "read", &id, "x"], "did not complete");
    let silent_export = out.join("silent");
    fails(
        &[
            "workspace",
            "export",
            &id,
            "dir",
            "--output",
            silent_export.to_str().unwrap(),
        ],
        "did not complete",
    );
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["tree"], "a stalled export leaves nothing behind");
    // A guest's error text reaches the terminal escaped.
    let (_, code) = sb.exec(&id, &["sh", "-c", "echo error-escape > /hostile"]);
    assert_eq!(code, 0);
    let out = sb.output(&["workspace", "file", "list", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    assert!(stderr.contains("boom \\x1b]0;PWNED\\x07"), "{stderr:?}");
    // Last: a guest that stops reading also stops its own session, so nothing after this works.
    hostile_mode(&sb, &id, "stall-writes");
    let big = sb.scratch("big").join("big.txt");
    fs::write(&big, "x".repeat(2 << 20)).unwrap();
    fails(
        &[
            "workspace",
            "file",
            "write",
            &id,
            "big.txt",
            "--text-file",
            big.to_str().unwrap(),
        ],
        "did not complete",
    );
    sb.ok(&["workspace", "delete", &id]);
    assert_eq!(sb.processes(), vec![]);
}

#[test]
fn a_call_the_guest_never_answers_does_not_keep_the_vm_from_its_ttl() {
    let _slot = one_vm_slot();
    let sb = Sandbox::hostile(3);
    let id = sb.create_workspace(&["--ttl-seconds", "10"]);
    hostile_mode(&sb, &id, "silent");
    // A client that hangs on too (stopped, it never closes its connection): the supervisor ends the
    // call at its deadline, and the idle clock runs from there.
    let mut stuck = sb.spawn(&["workspace", "file", "read", &id, "x", "--json"]);
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill takes no pointers; the child is ours.
    unsafe { libc::kill(stuck.id() as i32, libc::SIGSTOP) };
    let started = Instant::now();
    let state = loop {
        let status = sb.ok(&["workspace", "status", &id]);
        if status["state"] == "stopped" || started.elapsed() > Duration::from_secs(120) {
            break status;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let _ = stuck.kill();
    let _ = stuck.wait();
    assert_eq!(state["state"], "stopped", "{state}");
    assert!(
        state["stop_reason"]
            .as_str()
            .unwrap()
            .contains("ttl_seconds"),
        "{state}"
    );
    sb.ok(&["workspace", "delete", &id]);
}
