//! PTY shells: cursor reads that neither lose nor repeat output, plain rendering, resize, signals,
//! close, and shells that outlive the client that opened them but not their VM.

use serde_json::Value;

use crate::support::{one_vm_slot, Sandbox};

/// `shell read` from `cursor`, waiting until the shell is quiet; returns (output, next_cursor).
fn read(sb: &Sandbox, id: &str, shell: &str, cursor: u64, plain: bool) -> (String, u64) {
    let cursor = cursor.to_string();
    let mut args = vec![
        "workspace",
        "shell",
        "read",
        id,
        shell,
        "--cursor",
        &cursor,
        "--wait-for-idle-ms",
        "700",
    ];
    if plain {
        args.push("--plain");
    }
    let read = sb.ok(&args);
    (
        read["output"].as_str().unwrap().to_string(),
        read["next_cursor"].as_u64().unwrap(),
    )
}

/// [`read`] from the same cursor until the output shows `needle`, or 30 s have passed: a busy host
/// may take longer than one idle wait to get a command's output through.
fn read_until(
    sb: &Sandbox,
    id: &str,
    shell: &str,
    cursor: u64,
    plain: bool,
    needle: &str,
) -> (String, u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (output, next) = read(sb, id, shell, cursor, plain);
        if output.contains(needle) || std::time::Instant::now() > deadline {
            return (output, next);
        }
    }
}

fn write(sb: &Sandbox, id: &str, shell: &str, input: &str) -> Value {
    sb.ok(&["workspace", "shell", "write", id, shell, input])
}

#[test]
fn shells_read_by_cursor_render_plain_and_live_until_closed() {
    let _slot = one_vm_slot();
    let sb = Sandbox::new();
    let id = sb.create_workspace(&[]);
    let opened = sb.ok(&[
        "workspace",
        "shell",
        "open",
        &id,
        "--cols",
        "80",
        "--rows",
        "24",
    ]);
    assert_eq!(opened["state"], "running", "{opened}");
    let shell = opened["shell_id"].as_str().unwrap().to_string();

    // A command and what a person would see; then only what came after, never twice.
    let (_, cursor) = read(&sb, &id, &shell, 0, false);
    write(&sb, &id, &shell, "echo hello-$((1+2))");
    let (plain, after) = read_until(&sb, &id, &shell, cursor, true, "hello-3\npyro$");
    assert!(
        plain.contains("echo hello-$((1+2))\nhello-3\npyro$"),
        "{plain:?}"
    );
    let (nothing, same) = read(&sb, &id, &shell, after, false);
    assert_eq!((nothing.as_str(), same), ("", after));
    write(&sb, &id, &shell, "printf '\\033[31mred\\033[0m\\n'");
    let (raw, _) = read_until(&sb, &id, &shell, after, false, "\u{1b}[31mred");
    assert!(
        raw.contains("\u{1b}[31mred"),
        "raw output keeps escapes: {raw:?}"
    );
    assert!(!raw.contains("hello-3"), "nothing repeated: {raw:?}");
    let (plain, _) = read(&sb, &id, &shell, after, true);
    assert!(
        plain.contains("\nred\n") && !plain.contains('\u{1b}'),
        "{plain:?}"
    );

    // The terminal's size follows resize; Ctrl-C typed reaches the foreground job.
    sb.ok(&[
        "workspace",
        "shell",
        "resize",
        &id,
        &shell,
        "--cols",
        "100",
        "--rows",
        "40",
    ]);
    let (_, cursor) = read(&sb, &id, &shell, 0, false);
    write(&sb, &id, &shell, "stty size");
    let (size, cursor) = read_until(&sb, &id, &shell, cursor, true, "40 100");
    assert!(size.contains("40 100"), "{size:?}");
    write(&sb, &id, &shell, "sleep 100");
    // Ctrl-C reaches the foreground command only once it runs: before that, bash would take it.
    sb.sh(
        &id,
        "for i in $(seq 100); do grep -qsx sleep /proc/[0-9]*/comm && exit 0; sleep 0.1; done; exit 1",
    );
    sb.ok(&[
        "workspace",
        "shell",
        "write",
        &id,
        &shell,
        "\u{3}",
        "--no-newline",
    ]);
    write(&sb, &id, &shell, "echo after-interrupt");
    let (interrupted, _) = read_until(&sb, &id, &shell, cursor, true, "\nafter-interrupt");
    assert!(interrupted.contains("\nafter-interrupt"), "{interrupted:?}");

    // Each CLI call was its own client: the shell outlived all of them.
    let list = sb.ok(&["workspace", "shell", "list", &id]);
    assert_eq!(list["count"], 1, "{list}");

    // A shell that exits keeps its exit code; writing to it is refused.
    let second = sb.ok(&["workspace", "shell", "open", &id])["shell_id"]
        .as_str()
        .unwrap()
        .to_string();
    write(&sb, &id, &second, "exit 7");
    let (_, _) = read(&sb, &id, &second, 0, false);
    let status = sb.ok(&["workspace", "shell", "list", &id]);
    let ended = status["shells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shell_id"] == second.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (ended["state"].as_str(), ended["exit_code"].as_i64()),
        (Some("stopped"), Some(7)),
        "{ended}"
    );
    let err = sb.fails(&["workspace", "shell", "write", &id, &second, "echo"], 1);
    assert!(
        err["message"].as_str().unwrap().contains("not running"),
        "{err}"
    );

    // Close, bad input, and shells end with their VM.
    let closed = sb.ok(&["workspace", "shell", "close", &id, &shell]);
    assert_eq!(closed["closed"], true, "{closed}");
    let err = sb.fails(&["workspace", "shell", "read", &id, &shell], 1);
    assert_eq!(err["kind"], "not_found", "{err}");
    let err = sb.fails(
        &[
            "workspace",
            "shell",
            "signal",
            &id,
            &second,
            "--signal",
            "USR1",
        ],
        1,
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("HUP, INT, TERM, KILL"),
        "{err}"
    );
    let err = sb.fails(&["workspace", "shell", "open", &id, "--cols", "0"], 1);
    assert!(err["message"].as_str().unwrap().contains("cols"), "{err}");
    sb.ok(&["workspace", "shell", "open", &id]);
    sb.ok(&["workspace", "stop", &id]);
    sb.ok(&["workspace", "start", &id]);
    assert_eq!(sb.ok(&["workspace", "shell", "list", &id])["count"], 0);
    sb.ok(&["workspace", "delete", &id]);
}
