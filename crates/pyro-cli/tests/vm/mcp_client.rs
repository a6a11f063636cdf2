//! A real MCP client (rmcp) for the tests: start `pyro mcp serve` in a sandbox, call tools, and take
//! their structured results or errors.

use std::path::Path;
use std::process::Stdio;

use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use crate::support::{pyro_bin, Sandbox};

pub type Client = RunningService<RoleClient, ()>;

pub async fn connect(sb: &Sandbox, args: &[&str], cwd: &Path) -> Client {
    let mut command = tokio::process::Command::new(pyro_bin());
    command
        .args(["mcp", "serve"])
        .args(args)
        .envs(sb.envs())
        .current_dir(cwd);
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(Stdio::null())
        .spawn()
        .expect("pyro mcp serve starts");
    ().serve(transport).await.expect("the server initializes")
}

pub async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let args: JsonObject = args.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .expect("the call completes")
}

/// Calls a tool that must succeed and returns its structured result.
pub async fn ok(client: &Client, tool: &str, args: Value) -> Value {
    let result = call(client, tool, args).await;
    assert_eq!(
        result.is_error,
        Some(false),
        "{tool} failed: {:?}",
        result.structured_content
    );
    result.structured_content.expect("structured content")
}

/// Calls a tool that must fail and returns its error object.
pub async fn tool_error(client: &Client, tool: &str, args: Value) -> Value {
    let result = call(client, tool, args).await;
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool} should have failed: {:?}",
        result.structured_content
    );
    result.structured_content.expect("structured content")["error"].clone()
}

pub fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain HTTP GET from the host; the body, or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// `shell_read` from `cursor`, plain, once the shell has been quiet for `idle_ms`.
pub async fn shell_screen(
    client: &Client,
    id: &str,
    shell_id: &str,
    cursor: &Value,
    idle_ms: u64,
) -> Value {
    ok(
        client,
        "shell_read",
        serde_json::json!({"workspace_id": id, "shell_id": shell_id, "cursor": cursor,
               "plain": true, "wait_for_idle_ms": idle_ms}),
    )
    .await
}

/// Types `input` (and Enter) into a shell.
pub async fn shell_type(client: &Client, id: &str, shell_id: &str, input: &str) {
    ok(
        client,
        "shell_write",
        serde_json::json!({"workspace_id": id, "shell_id": shell_id, "input": input}),
    )
    .await;
}

/// [`shell_screen`] again and again (from the same cursor) until the screen shows `needle`, or 30 s
/// have passed: a busy host may take longer than one idle wait to get a command's output through.
pub async fn shell_screen_until(
    client: &Client,
    id: &str,
    shell_id: &str,
    cursor: &Value,
    idle_ms: u64,
    needle: &str,
) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let read = shell_screen(client, id, shell_id, cursor, idle_ms).await;
        let shown = read["output"].as_str().unwrap_or("").contains(needle);
        if shown || std::time::Instant::now() > deadline {
            return read;
        }
    }
}
