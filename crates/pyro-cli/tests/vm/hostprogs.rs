//! The chat hosts' own programs, to read back the configs pyro writes: the native binaries that the
//! hosts' npm packages carry, fetched once from the npm registry (pinned by version and digest) into
//! `target/pyro-test-hosts`.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::Command;

use crate::support::workspace_root;

pub struct HostProgram {
    pub name: &'static str,
    tarball: &'static str,
    sha512: &'static str,
    /// The executable inside the package.
    member: &'static str,
}

pub const CLAUDE: HostProgram = HostProgram {
    name: "claude-code-2.1.332",
    tarball: "https://registry.npmjs.org/@anthropic-ai/claude-code-linux-x64/-/claude-code-linux-x64-2.1.332.tgz",
    sha512: "7f8256873c18bad2481d2702eff75838f5fab36f2db7b6400e1b0e8bccf0387ab97c53c4b94782861d8d31f8a74a0d06ad472463169e79b0b88740ea88accb73",
    member: "package/claude",
};

pub const OPENCODE: HostProgram = HostProgram {
    name: "opencode-1.18.33",
    tarball: "https://registry.npmjs.org/opencode-linux-x64-baseline/-/opencode-linux-x64-baseline-1.18.33.tgz",
    sha512: "d4a4060628830de2ff5471db1e43afbc5a3c26bf7b593e7e0b5b5e6abfa9ec87034e75e05475ea2235383b88cce261d0cf29133f68bcf381429d6e4b0dafb308",
    member: "package/bin/opencode",
};

fn run(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The program's executable, fetched and checked on first use (one fetch at a time).
pub fn path(program: &HostProgram) -> PathBuf {
    let dir = workspace_root().join("target/pyro-test-hosts");
    fs::create_dir_all(&dir).unwrap();
    let lock = File::create(dir.join("fetch.lock")).unwrap();
    lock.lock().unwrap();
    let home = dir.join(program.name);
    let binary = home.join(program.member);
    if binary.exists() {
        return binary;
    }
    let tarball = dir.join(format!("{}.tgz", program.name));
    run(Command::new("curl")
        .args(["-fsSL", "--retry", "3", "-o"])
        .arg(&tarball)
        .arg(program.tarball));
    let digest = run(Command::new("sha512sum").arg(&tarball));
    assert!(
        digest.starts_with(program.sha512),
        "{} does not match its pinned digest: {digest}",
        program.tarball
    );
    let staging = dir.join(format!("{}.partial", program.name));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&staging)
        .arg(program.member));
    fs::remove_file(&tarball).unwrap();
    fs::rename(&staging, &home).unwrap();
    binary
}
