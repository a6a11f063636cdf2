//! Test sandboxes: a private state dir, the shared cache, and cleanup of every process a test started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// The suite boots at most two VMs at once, whatever the number of test threads: each test takes
/// as many slots as it boots VMs (the four-parallel test takes both and runs alone).
const VM_SLOTS: usize = 2;
static SLOTS_IN_USE: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

pub struct VmSlots(usize);

impl VmSlots {
    pub fn take(n: usize) -> VmSlots {
        let n = n.min(VM_SLOTS);
        let mut used = SLOTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
        while *used + n > VM_SLOTS {
            used = SLOT_FREED.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += n;
        VmSlots(n)
    }
}

impl Drop for VmSlots {
    fn drop(&mut self) {
        let mut used = SLOTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.0;
        SLOT_FREED.notify_all();
    }
}

pub fn one_vm_slot() -> VmSlots {
    VmSlots::take(1)
}

pub fn all_vm_slots() -> VmSlots {
    VmSlots::take(VM_SLOTS)
}

pub fn pyro_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pyro"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The freshly built guest agent beside the pyro binary. `cargo test` does not build other packages'
/// binaries, so the test command (scripts/test.sh) runs `cargo build` first; a stale agent is an error.
pub fn agent_bin() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            fresh_binary(
                "pyro-agent",
                &["crates/pyro-agent/src", "crates/pyro-proto/src"],
            )
        })
        .clone()
}

/// The test-only hostile agent (crates/pyro-test-agent), built by the same `cargo build`.
pub fn hostile_agent_bin() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            fresh_binary(
                "pyro-hostile-agent",
                &[
                    "crates/pyro-test-agent/src",
                    "crates/pyro-agent/src",
                    "crates/pyro-proto/src",
                ],
            )
        })
        .clone()
}

/// A binary beside `pyro`, refused when older than any of its sources.
fn fresh_binary(name: &str, sources: &[&str]) -> PathBuf {
    let binary = pyro_bin().with_file_name(name);
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build` first (scripts/test.sh does)",
                binary.display()
            )
        });
    let root = workspace_root();
    let dirs: Vec<PathBuf> = sources.iter().map(|s| root.join(s)).collect();
    assert!(
        built >= newest_mtime(&dirs),
        "{} is older than its sources: run `cargo build` first (scripts/test.sh does)",
        binary.display()
    );
    binary
}

fn newest_mtime(dirs: &[PathBuf]) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(modified);
            }
        }
    }
    newest
}

/// The environment cache shared by every test (and by `scripts/test.sh`).
pub fn shared_cache() -> PathBuf {
    std::env::var_os("PYRO_TEST_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/pyro-test-cache"))
}

pub struct Sandbox {
    root: tempfile::TempDir,
    pub state: PathBuf,
    pub cache: PathBuf,
    /// The guest agent VMs boot with (the real one unless a test asks for the hostile one).
    pub agent: PathBuf,
    /// More environment for every pyro this sandbox starts.
    pub extra_env: Vec<(&'static str, String)>,
    /// Whether cold boots start background template jobs (off unless a test asks).
    pub auto_prepare: bool,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("pyro-test-")
            .tempdir()
            .expect("temp dir");
        let state = root.path().join("state");
        Sandbox {
            state,
            cache: shared_cache(),
            root,
            agent: agent_bin(),
            extra_env: Vec::new(),
            auto_prepare: false,
        }
    }

    /// A sandbox whose state dir path is longer than `len` bytes.
    pub fn with_long_state_dir(len: usize) -> Sandbox {
        let mut sandbox = Sandbox::new();
        let mut state = sandbox.root.path().to_path_buf();
        while state.as_os_str().len() <= len {
            state = state.join("a-rather-long-directory-name");
        }
        sandbox.state = state;
        sandbox
    }

    /// A sandbox with its own, empty environment cache.
    pub fn with_private_cache() -> Sandbox {
        let mut sandbox = Sandbox::new();
        sandbox.cache = sandbox.root.path().join("cache");
        sandbox
    }

    /// A sandbox whose VMs boot the hostile test agent, and whose guest operations give up after
    /// `deadline_seconds` without progress.
    pub fn hostile(deadline_seconds: u64) -> Sandbox {
        let mut sandbox = Sandbox::new();
        sandbox.agent = hostile_agent_bin();
        sandbox
            .extra_env
            .push(("PYRO_GUEST_DEADLINE_SECONDS", deadline_seconds.to_string()));
        sandbox
    }

    /// The environment every pyro this sandbox starts gets.
    pub fn envs(&self) -> Vec<(&'static str, PathBuf)> {
        let mut envs = vec![
            ("PYRO_STATE_DIR", self.state.clone()),
            ("PYRO_CACHE_DIR", self.cache.clone()),
            ("PYRO_AGENT", self.agent.clone()),
        ];
        // Background template jobs would compete with the tests for the machine's two cores; the
        // test of auto-prepare turns them on.
        if !self.auto_prepare {
            envs.push(("PYRO_NO_AUTO_PREPARE", PathBuf::from("1")));
        }
        envs.extend(self.extra_env.iter().map(|(k, v)| (*k, PathBuf::from(v))));
        envs
    }

    pub fn pyro(&self) -> Command {
        let mut command = Command::new(pyro_bin());
        command
            .envs(self.envs())
            .env_remove("PYRO_ACCEL")
            .stdin(Stdio::null());
        command
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.pyro().args(args).output().expect("pyro runs")
    }

    /// Runs pyro with `args` (which should include `--json`) and parses stdout.
    pub fn json(&self, args: &[&str]) -> (Value, i32) {
        let out = self.output(args);
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "pyro {args:?} printed no JSON ({e})\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (value, out.status.code().unwrap_or(-1))
    }

    /// `pyro run debian:12 --json OPTIONS -- sh -c SCRIPT`, parsed.
    pub fn run_sh(&self, options: &[&str], script: &str) -> (Value, i32) {
        let mut args = vec!["run", "debian:12", "--json"];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        self.json(&args)
    }

    /// Runs pyro with `args` plus `--json`, asserts success, and returns the document.
    pub fn ok(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let (value, code) = self.json(&with_json);
        assert_eq!(code, 0, "pyro {args:?} failed: {value}");
        value
    }

    /// Runs pyro with `args` plus `--json`, asserts it failed with `code`, and returns the error.
    pub fn fails(&self, args: &[&str], code: i32) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let (value, got) = self.json(&with_json);
        assert_eq!(got, code, "pyro {args:?}: expected exit {code}: {value}");
        value["error"].clone()
    }

    /// Runs pyro with `args`, asserts it failed (exit 1) with a message containing `words`, and
    /// returns the error.
    pub fn refused(&self, args: &[&str], words: &str) -> Value {
        let err = self.fails(args, 1);
        assert!(
            err["message"].as_str().unwrap().contains(words),
            "{args:?}: {err}"
        );
        err
    }

    /// `pyro workspace exec ID --json -- ARGV...`: the result and the exit code.
    pub fn exec(&self, workspace: &str, argv: &[&str]) -> (Value, i32) {
        let mut args = vec!["workspace", "exec", workspace, "--json", "--"];
        args.extend_from_slice(argv);
        self.json(&args)
    }

    /// The VM disk image of workspace `id`.
    pub fn disk_of(&self, id: &str) -> PathBuf {
        self.state
            .join("workspaces")
            .join(id)
            .join("vm")
            .join("disk.qcow2")
    }

    /// Runs a shell script in the workspace and returns its stdout, asserting it succeeded.
    pub fn sh(&self, workspace: &str, script: &str) -> String {
        let (result, code) = self.exec(workspace, &["sh", "-c", script]);
        assert_eq!(code, 0, "{script}: {result}");
        result["stdout"].as_str().unwrap().to_string()
    }

    /// Creates a workspace with `extra` options and returns its id.
    pub fn create_workspace(&self, extra: &[&str]) -> String {
        let mut args = vec!["workspace", "create"];
        args.extend_from_slice(extra);
        let ws = self.ok(&args);
        assert_eq!(ws["state"], "started", "{ws}");
        ws["workspace_id"].as_str().unwrap().to_string()
    }

    /// A scratch directory inside the sandbox (removed with it).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.pyro()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pyro starts")
    }

    /// Processes of this sandbox: those whose command line mentions it (supervisors, build steps)
    /// or that work in it (QEMU, which gets its files as descriptors and runs in its VM directory).
    pub fn processes(&self) -> Vec<(i32, String)> {
        let needle = self.root.path().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            let zombie = std::fs::read_to_string(entry.path().join("stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false);
            let works_here = std::fs::read_link(entry.path().join("cwd"))
                .map(|cwd| cwd.starts_with(self.root.path()))
                .unwrap_or(false);
            if (cmdline.contains(&needle) || works_here) && !zombie {
                found.push((pid, cmdline));
            }
        }
        found
    }

    pub fn pid_of(&self, needle: &str) -> Option<i32> {
        self.processes()
            .into_iter()
            .find(|(_, cmd)| cmd.contains(needle))
            .map(|(pid, _)| pid)
    }

    /// VM directories left in the state dir.
    pub fn leftover_vms(&self) -> Vec<String> {
        std::fs::read_dir(self.state.join("vms"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// VM directories still there after `limit`: a `run`'s supervisor removes its VM right after
    /// the result was delivered.
    pub fn leftover_vms_after(&self, limit: Duration) -> Vec<String> {
        until_empty(limit, || self.leftover_vms())
    }

    /// Waits until nothing of this sandbox runs any more; returns what still runs after `limit`.
    pub fn wait_no_processes(&self, limit: Duration) -> Vec<(i32, String)> {
        until_empty(limit, || self.processes())
    }
}

/// Looks again until `look` finds nothing or `limit` has passed; returns what it found last.
fn until_empty<T>(limit: Duration, look: impl Fn() -> Vec<T>) -> Vec<T> {
    let start = Instant::now();
    loop {
        let left = look();
        if left.is_empty() || start.elapsed() > limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Sandbox {
    /// What the VMs of this sandbox left behind, for a failed test: each VM directory's supervisor
    /// log, QEMU's log, the guest console and the stop record (their last lines).
    fn failure_dump(&self) -> String {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for pattern in ["vms", "workspaces"] {
            for entry in std::fs::read_dir(self.state.join(pattern))
                .into_iter()
                .flatten()
                .flatten()
            {
                let dir = entry.path();
                dirs.push(if pattern == "workspaces" {
                    dir.join("vm")
                } else {
                    dir
                });
            }
        }
        let mut text = String::new();
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            for name in ["supervisor.log", "engine.log", "serial.log", "stopped.json"] {
                let Ok(content) = std::fs::read_to_string(dir.join(name)) else {
                    continue;
                };
                let lines: Vec<&str> = content.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                text.push_str(&format!("--- {} ---\n{tail}\n", dir.join(name).display()));
            }
        }
        text
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dump = self.failure_dump();
            if !dump.is_empty() {
                eprintln!("=== what the sandbox's VMs left ===\n{dump}");
            }
        }
        for (pid, _) in self.processes() {
            // SAFETY: kill takes no pointers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.wait_no_processes(Duration::from_secs(10));
    }
}

/// Reads the child's stdout until a line equal to `line` appears.
pub fn wait_for_line(child: &mut Child, line: &str, limit: Duration) {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for text in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(text).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(text) if text == line => return,
            Ok(_) => continue,
            Err(_) => panic!("`{line}` did not appear on stdout within {limit:?}"),
        }
    }
}

/// Waits for the child to exit, killing it after `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            use std::os::unix::process::ExitStatusExt;
            return status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pyro did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn signal(pid: i32, signal: i32) {
    // SAFETY: kill takes no pointers.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `workspace status` until the workspace is stopped (or `limit` passes); returns the status.
pub fn wait_until_stopped(sb: &Sandbox, id: &str, limit: Duration) -> Value {
    wait_until_not_started(sb, id, limit)
}

/// Polls `workspace status` until the workspace is no longer started (stopped or suspended), or
/// `limit` passes; returns the status.
pub fn wait_until_not_started(sb: &Sandbox, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let status = sb.ok(&["workspace", "status", id]);
        if status["state"] != "started" || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
