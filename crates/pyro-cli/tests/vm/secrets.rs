//! Secrets: given at create, reaching a command, a service or a shell only through `--secret-env`,
//! redacted from every output (split across chunks too), and never written anywhere pyro keeps but
//! their own private file.

use std::path::Path;

use crate::support::{one_vm_slot, Sandbox};

const CANARY: &str = "pyro-canary-7f3a9c2e51d04b";
const FILE_CANARY: &str = "file-canary-88d1e0c4a7";

/// Every file under `dir` holding `needle` (the secrets file itself left out).
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if path.file_name().is_some_and(|n| n != "secrets.json") {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn secrets_reach_only_the_calls_that_ask_and_never_show() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let secret_file = sb.scratch("keys").join("other.txt");
    std::fs::write(&secret_file, FILE_CANARY).unwrap();
    let token = format!("API_TOKEN={CANARY}");
    let other = format!("OTHER={}", secret_file.display());

    // Bad secrets: clear errors, and nothing is made.
    for (args, says) in [
        (
            vec!["--secret", "1BAD=x"],
            "not a valid environment variable name",
        ),
        (
            vec!["--secret", "A=x", "--secret", "A=y"],
            "duplicate secret name",
        ),
        (vec!["--secret", "A="], "must not be empty"),
        (
            vec!["--secret-file", "A=/nonexistent/file"],
            "cannot be read",
        ),
    ] {
        let mut create = vec!["workspace", "create"];
        create.extend(args);
        let err = sb.fails(&create, 1);
        assert!(err["message"].as_str().unwrap().contains(says), "{err}");
    }
    assert_eq!(sb.ok(&["workspace", "list"])["count"], 0);

    let id = sb.create_workspace(&["--secret", &token, "--secret-file", &other]);
    let status = sb.ok(&["workspace", "status", &id]);
    assert_eq!(
        status["secrets"],
        serde_json::json!(["API_TOKEN", "OTHER"]),
        "{status}"
    );

    // Only a call that asks gets it.
    let (plain, _) = sb.exec(&id, &["sh", "-c", "echo \"[${API_TOKEN:-}][${TOKEN:-}]\""]);
    assert_eq!(plain["stdout"], "[][]\n", "{plain}");
    // It reaches the command, and is redacted from what comes back, even split across writes.
    let script = "echo \"$TOKEN\"; echo \"$TOKEN\" >&2; echo ${#TOKEN}; \
                  printf %s \"$(printf %s \"$TOKEN\" | cut -c1-10)\"; sleep 0.3; \
                  printf '%s\\n' \"$(printf %s \"$TOKEN\" | cut -c11-)\"; echo \"$F\"";
    let args = [
        "workspace",
        "exec",
        &id,
        "--secret-env",
        "API_TOKEN=TOKEN",
        "--secret-env",
        "OTHER=F",
        "--",
        "sh",
        "-c",
        script,
    ];
    let mut with_json = args.to_vec();
    with_json.insert(3, "--json");
    let (ran, code) = sb.json(&with_json);
    assert_eq!(code, 0, "{ran}");
    let len = CANARY.len();
    assert_eq!(
        ran["stdout"],
        format!("[REDACTED:API_TOKEN]\n{len}\n[REDACTED:API_TOKEN]\n[REDACTED:OTHER]\n"),
        "{ran}"
    );
    assert_eq!(ran["stderr"], "[REDACTED:API_TOKEN]\n", "{ran}");
    let streamed = sb.output(&args);
    let shown = String::from_utf8_lossy(&streamed.stdout);
    assert!(
        !shown.contains(CANARY) && shown.contains("[REDACTED:API_TOKEN]"),
        "{shown}"
    );
    let (refused, code) = sb.json(&[
        "workspace",
        "exec",
        &id,
        "--json",
        "--secret-env",
        "NOPE=X",
        "--",
        "true",
    ]);
    assert_eq!(code, 125, "{refused}");
    let err = &refused["error"];
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("unknown workspace secret 'NOPE'"),
        "{err}"
    );

    // A service and a shell get it the same way, and their output is redacted too.
    let (service, _) = sb.json(&[
        "workspace",
        "service",
        "start",
        &id,
        "svc",
        "--json",
        "--secret-env",
        "API_TOKEN=TOKEN",
        "--",
        "sh",
        "-c",
        "echo \"svc $TOKEN\"; sleep 600",
    ]);
    assert_eq!(service["state"], "running", "{service}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let logs = sb.ok(&["workspace", "service", "logs", &id, "svc"]);
    assert_eq!(logs["stdout"], "svc [REDACTED:API_TOKEN]\n", "{logs}");
    let shell = sb.ok(&[
        "workspace",
        "shell",
        "open",
        &id,
        "--secret-env",
        "API_TOKEN=TOKEN",
    ]);
    let shell_id = shell["shell_id"].as_str().unwrap().to_string();
    sb.ok(&[
        "workspace",
        "shell",
        "write",
        &id,
        &shell_id,
        "echo \"shell $TOKEN\"",
    ]);
    let read = sb.ok(&[
        "workspace",
        "shell",
        "read",
        &id,
        &shell_id,
        "--plain",
        "--wait-for-idle-ms",
        "700",
    ]);
    let screen = read["output"].as_str().unwrap();
    assert!(screen.contains("shell [REDACTED:API_TOKEN]"), "{read}");

    // Nothing pyro keeps or shows has it: results, journal, summary, database, disk, snapshot.
    let summary = sb.ok(&["workspace", "summary", &id]);
    let journal = sb.ok(&["workspace", "logs", &id]);
    for shown in [&summary, &journal] {
        let text = shown.to_string();
        assert!(
            !text.contains(CANARY) && !text.contains(FILE_CANARY),
            "{text}"
        );
    }
    sb.ok(&["workspace", "snapshot", "create", &id, "with-secrets"]);
    sb.ok(&["workspace", "stop", &id]);
    for canary in [CANARY, FILE_CANARY] {
        let found = files_holding(&sb.state, canary.as_bytes());
        assert!(found.is_empty(), "{canary} found in {found:?}");
    }
    sb.ok(&["workspace", "delete", &id]);
}
