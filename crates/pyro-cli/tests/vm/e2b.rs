//! `pyro api serve` with the unmodified e2b SDKs: Python's from PyPI (in a venv under `target/`,
//! pinned), and JavaScript's from npm where Node.js is installed. The flows themselves are the
//! scripts in `tests/e2b/`, written as an E2B user writes them.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{one_vm_slot, pyro_bin, workspace_root, Sandbox, VmSlots};

const PYTHON_SDK: &str = "e2b==2.63.0";
const JS_SDK: &str = "e2b@2.51.0";

fn scripts() -> PathBuf {
    workspace_root().join("crates/pyro-cli/tests/e2b")
}

fn sdk_dir() -> PathBuf {
    let dir = workspace_root().join("target/pyro-test-e2b");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python with the e2b SDK installed, made once (one install at a time).
fn python() -> PathBuf {
    let dir = sdk_dir();
    let lock = File::create(dir.join("python.lock")).unwrap();
    lock.lock().unwrap();
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let marker = venv.join(format!("{PYTHON_SDK}.installed"));
    if marker.exists() {
        return python;
    }
    let _ = fs::remove_dir_all(&venv);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (scripts/setup.sh --deps-only installs python3-venv)",
    );
    run(
        Command::new(&python).args(["-m", "pip", "install", "--quiet", PYTHON_SDK]),
        "pip install e2b",
    );
    File::create(&marker).unwrap();
    python
}

/// A directory whose `node_modules` holds the e2b SDK, when Node.js and npm are installed.
fn node_sdk() -> Option<PathBuf> {
    let found = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found("node") || !found("npm") {
        return None;
    }
    let dir = sdk_dir().join("node");
    fs::create_dir_all(&dir).unwrap();
    let lock = File::create(sdk_dir().join("node.lock")).unwrap();
    lock.lock().unwrap();
    let marker = dir.join(format!("{JS_SDK}.installed"));
    if !marker.exists() {
        fs::write(
            dir.join("package.json"),
            r#"{"private": true, "type": "module"}"#,
        )
        .unwrap();
        run(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", JS_SDK])
                .current_dir(&dir),
            "npm install e2b",
        );
        File::create(&marker).unwrap();
    }
    Some(dir)
}

/// `pyro api serve` on a free port, and the variables it printed for the SDKs.
struct Server {
    child: Child,
    env: Vec<(String, String)>,
}

impl Server {
    fn start(sb: &Sandbox) -> Server {
        Server::start_with(sb, &[])
    }

    fn start_with(sb: &Sandbox, flags: &[&str]) -> Server {
        let mut child = sb
            .pyro()
            .args(["api", "serve", "--port", "0"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut env = Vec::new();
        while env.len() < 3 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("pyro api serve prints the SDK's variables");
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                env.push((k.to_string(), v.to_string()));
            }
        }
        Server { child, env }
    }

    /// Runs one of the flow scripts with `program`, the SDK pointed at this server.
    fn script(
        &self,
        sb: &Sandbox,
        program: &Path,
        script: &Path,
        extra: &[(&str, &str)],
    ) -> String {
        let mut command = Command::new(program);
        command
            .arg(script)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("E2B_DEBUG");
        finish(sb, command, script, extra)
    }

    /// Runs `debug_mode.py` with the SDK in debug mode: only E2B_DEBUG and E2B_SANDBOX_URL set.
    fn debug_script(&self, sb: &Sandbox, python: &Path, expect: &str) -> String {
        let url = &self
            .env
            .iter()
            .find(|(k, _)| k == "E2B_SANDBOX_URL")
            .unwrap()
            .1;
        let script = scripts().join("debug_mode.py");
        let mut command = Command::new(python);
        command
            .arg(&script)
            .arg(expect)
            .env("E2B_DEBUG", "true")
            .env("E2B_SANDBOX_URL", url)
            .env_remove("E2B_API_KEY")
            .env_remove("E2B_API_URL");
        finish(sb, command, &script, &[])
    }
}

/// Runs a script with the sandbox's environment; its stdout, once it succeeded.
fn finish(sb: &Sandbox, mut command: Command, script: &Path, extra: &[(&str, &str)]) -> String {
    command
        .envs(sb.envs())
        .env("PYRO_BIN", pyro_bin())
        .envs(extra.iter().copied())
        .env_remove("E2B_DOMAIN");
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// No sandbox is left: every workspace the flow made was killed, and no VM runs.
fn assert_nothing_left(sb: &Sandbox) {
    let listed = sb.ok(&["workspace", "list"]);
    assert_eq!(listed["count"], 0, "{listed}");
    assert!(sb.leftover_vms_after(Duration::from_secs(10)).is_empty());
}

#[test]
fn the_python_sdk_runs_its_sandbox_on_pyro() {
    let python = python();
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let server = Server::start(&sb);
    let out = server.script(&sb, &python, &scripts().join("flow.py"), &[]);
    for step in [
        "run: ok",
        "background:",
        "stdin: ok",
        "files: ok",
        "watch:",
        "pty: ok",
        "pause:",
        "killed:",
    ] {
        assert!(out.contains(step), "{step} missing from:\n{out}");
    }
    assert_nothing_left(&sb);
}

#[test]
fn bad_input_reaches_the_sdk_as_its_own_errors() {
    let python = python();
    let _slots = VmSlots::take(2);
    let sb = Sandbox::new();
    let other = sb.create_workspace(&[]);
    let server = Server::start(&sb);
    let out = server.script(
        &sb,
        &python,
        &scripts().join("bad_input.py"),
        &[("OTHER_WORKSPACE", &other)],
    );
    assert!(out.contains("paused: ok"), "{out}");
    // The workspace that is not a sandbox was left alone.
    assert_eq!(sb.ok(&["workspace", "status", &other])["state"], "started");
    sb.ok(&["workspace", "delete", &other]);
    assert_nothing_left(&sb);
}

#[test]
fn the_sdk_in_debug_mode_gets_one_shared_sandbox_only_when_allowed() {
    let python = python();
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    {
        let server = Server::start(&sb);
        let out = server.debug_script(&sb, &python, "refused");
        assert!(out.contains("refused: ok"), "{out}");
    }
    let server = Server::start_with(&sb, &["--debug-sandbox"]);
    let out = server.debug_script(&sb, &python, "served");
    assert!(out.contains("served: ok"), "{out}");
    let listed = sb.ok(&["workspace", "list"]);
    let workspaces = listed["workspaces"].as_array().unwrap();
    assert_eq!(workspaces.len(), 1, "{listed}");
    assert_eq!(workspaces[0]["labels"]["e2b.debug"], "true");
    let id = workspaces[0]["workspace_id"].as_str().unwrap();
    sb.ok(&["workspace", "delete", id]);
    assert_nothing_left(&sb);
}

#[test]
fn the_javascript_sdk_runs_its_sandbox_on_pyro() {
    let Some(sdk) = node_sdk() else {
        eprintln!("skipped: Node.js and npm are not installed (the Python SDK's tests still run)");
        return;
    };
    // Node resolves `e2b` from the script's directory up: run a copy beside the SDK.
    fs::copy(scripts().join("flow.mjs"), sdk.join("flow.mjs")).unwrap();
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let server = Server::start(&sb);
    let out = server.script(&sb, Path::new("node"), &sdk.join("flow.mjs"), &[]);
    assert!(out.contains("killed:"), "{out}");
    assert_nothing_left(&sb);
}
