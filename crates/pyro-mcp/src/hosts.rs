//! The chat-host onramp: write, repair, inspect and print pyro's MCP entry in each host's config.
//!
//! A host's own CLI is used when it is installed (`claude mcp add -s user`, `codex mcp add`); otherwise
//! the config file is edited: parsed first (a file that does not parse is refused, and named), only the
//! `pyro` entry changed, every other key kept, the old file backed up, and the new one written atomically.

use std::path::{Path, PathBuf};
use std::process::Command;

use pyro_core::{fsutil, Error, ErrorKind, Result};
use serde::Serialize;
use serde_json::{json, Value};

/// The name pyro's entry has in every host.
pub const SERVER_NAME: &str = "pyro";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Host {
    ClaudeCode,
    Codex,
    Opencode,
    Cursor,
    ClaudeDesktop,
}

pub const HOSTS: &[Host] = &[
    Host::ClaudeCode,
    Host::Codex,
    Host::Opencode,
    Host::Cursor,
    Host::ClaudeDesktop,
];

impl Host {
    pub fn name(self) -> &'static str {
        match self {
            Host::ClaudeCode => "claude-code",
            Host::Codex => "codex",
            Host::Opencode => "opencode",
            Host::Cursor => "cursor",
            Host::ClaudeDesktop => "claude-desktop",
        }
    }

    pub fn parse(name: &str) -> Result<Host> {
        HOSTS
            .iter()
            .copied()
            .find(|h| h.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = HOSTS.iter().map(|h| h.name()).collect();
                Error::invalid(format!(
                    "unknown host '{name}'; expected one of: {}",
                    names.join(", ")
                ))
            })
    }

    /// The host's own CLI, if it has one that manages MCP servers.
    fn cli(self) -> Option<&'static str> {
        match self {
            Host::ClaudeCode => Some("claude"),
            Host::Codex => Some("codex"),
            _ => None,
        }
    }
}

/// The command a host runs to start pyro's MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerEntry {
    pub command: String,
    pub args: Vec<String>,
}

/// What `pyro mcp serve` should be started with.
#[derive(Debug, Clone, Default)]
pub struct ServeFlags {
    pub profile: Option<String>,
    pub mode: Option<String>,
    pub project_path: Option<PathBuf>,
}

impl ServerEntry {
    /// This pyro binary, with `mcp serve` and the flags.
    pub fn for_this_pyro(flags: &ServeFlags) -> Result<ServerEntry> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::internal(format!("cannot find the running executable: {e}")))?;
        let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
        let mut args = vec!["mcp".to_string(), "serve".to_string()];
        if let Some(profile) = &flags.profile {
            args.extend(["--profile".to_string(), profile.clone()]);
        }
        if let Some(mode) = &flags.mode {
            args.extend(["--mode".to_string(), mode.clone()]);
        }
        if let Some(path) = &flags.project_path {
            let project = pyro_core::project::from_path(path)?;
            args.extend([
                "--project-path".to_string(),
                project.root.display().to_string(),
            ]);
        }
        Ok(ServerEntry {
            command: exe.display().to_string(),
            args,
        })
    }
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| Error::invalid("HOME is not set; pyro cannot find the hosts' config files"))
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The host's user-scope config file.
pub fn config_path(host: Host) -> Result<PathBuf> {
    let home = home()?;
    let xdg = env_dir("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
    Ok(match host {
        Host::ClaudeCode => env_dir("CLAUDE_CONFIG_DIR")
            .unwrap_or(home)
            .join(".claude.json"),
        Host::Codex => env_dir("CODEX_HOME")
            .unwrap_or_else(|| home.join(".codex"))
            .join("config.toml"),
        Host::Opencode => {
            let dir = xdg.join("opencode");
            let jsonc = dir.join("opencode.jsonc");
            if jsonc.exists() && !dir.join("opencode.json").exists() {
                jsonc
            } else {
                dir.join("opencode.json")
            }
        }
        Host::Cursor => home.join(".cursor/mcp.json"),
        Host::ClaudeDesktop => xdg.join("Claude/claude_desktop_config.json"),
    })
}

/// What a command did to a host's config.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: Host,
    pub config_path: String,
    /// `added`, `updated` or `unchanged`.
    pub action: String,
    /// `file` (pyro edited it) or `cli` (the host's own command did).
    pub via: String,
    pub backup_path: Option<String>,
    pub entry: ServerEntry,
}

/// How a host stores an entry, as JSON.
fn json_entry(host: Host, entry: &ServerEntry) -> Value {
    match host {
        Host::ClaudeCode => {
            json!({"type": "stdio", "command": entry.command, "args": entry.args, "env": {}})
        }
        Host::Opencode => {
            let mut command = vec![entry.command.clone()];
            command.extend(entry.args.iter().cloned());
            json!({"type": "local", "command": command, "enabled": true})
        }
        _ => json!({"command": entry.command, "args": entry.args, "env": {}}),
    }
}

/// How codex stores an entry: `[mcp_servers.pyro]` with `command` and `args`.
fn toml_entry(entry: &ServerEntry) -> toml_edit::Item {
    let mut table = toml_edit::Table::new();
    table.insert("command", toml_edit::value(entry.command.clone()));
    table.insert(
        "args",
        toml_edit::value(entry.args.iter().cloned().collect::<toml_edit::Array>()),
    );
    toml_edit::Item::Table(table)
}

/// The entry found in a host's JSON config.
fn entry_from_json(host: Host, value: &Value) -> Option<ServerEntry> {
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect()
    };
    match host {
        Host::Opencode => {
            let mut command = strings(&value["command"])?;
            if command.is_empty() {
                return None;
            }
            let first = command.remove(0);
            Some(ServerEntry {
                command: first,
                args: command,
            })
        }
        _ => Some(ServerEntry {
            command: value["command"].as_str()?.to_string(),
            args: strings(&value["args"]).unwrap_or_default(),
        }),
    }
}

fn servers_key(host: Host) -> &'static str {
    match host {
        Host::Opencode => "mcp",
        _ => "mcpServers",
    }
}

/// Removes `//` and `/* */` comments and trailing commas (opencode's `.jsonc`), outside strings.
fn strip_jsonc(text: &str) -> String {
    let bytes: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            out.push(c);
            if c == '\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1]);
                i += 1;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == '/' && bytes.get(i + 1) == Some(&'/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
            continue;
        } else if c == '/' && bytes.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == '*' && bytes[i + 1] == '/') {
                i += 1;
            }
            i += 2;
            continue;
        } else if c == ',' {
            let next = bytes[i + 1..].iter().find(|c| !c.is_whitespace());
            if !matches!(next, Some('}') | Some(']')) {
                out.push(c);
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

fn read_json(path: &Path) -> Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(json!({})),
        Ok(text) => {
            let parsed = serde_json::from_str::<Value>(&text)
                .or_else(|_| serde_json::from_str::<Value>(&strip_jsonc(&text)));
            match parsed {
                Ok(value) if value.is_object() => Ok(value),
                _ => Err(Error::invalid(format!(
                    "{} is not valid JSON; pyro will not overwrite it",
                    path.display()
                ))
                .with_hint("fix the file by hand (or move it away), then run the command again")),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn read_toml(path: &Path) -> Result<toml_edit::DocumentMut> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.parse::<toml_edit::DocumentMut>().map_err(|e| {
            Error::invalid(format!(
                "{} is not valid TOML ({}); pyro will not overwrite it",
                path.display(),
                e.message()
            ))
            .with_hint("fix the file by hand (or move it away), then run the command again")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml_edit::DocumentMut::new()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// pyro's entry as configured for `host`, if any.
pub fn configured_entry(host: Host) -> Result<Option<ServerEntry>> {
    let path = config_path(host)?;
    if host == Host::Codex {
        let doc = read_toml(&path)?;
        let Some(table) = doc.get("mcp_servers").and_then(|t| t.get(SERVER_NAME)) else {
            return Ok(None);
        };
        let command = table
            .get("command")
            .and_then(|c| c.as_str())
            .map(str::to_string);
        let args = table
            .get("args")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        return Ok(command.map(|command| ServerEntry { command, args }));
    }
    let doc = read_json(&path)?;
    Ok(doc
        .get(servers_key(host))
        .and_then(|s| s.get(SERVER_NAME))
        .and_then(|e| entry_from_json(host, e)))
}

fn backup(path: &Path) -> Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let stamp = pyro_core::vm::now_unix_ms();
    let backup = path.with_file_name(format!(
        "{}.pyro-backup-{stamp}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::copy(path, &backup).map_err(|e| Error::io("back up", path, e))?;
    Ok(Some(backup.display().to_string()))
}

/// Writes `entry` into the host's file, keeping everything else.
fn write_entry(host: Host, entry: &ServerEntry) -> Result<Option<String>> {
    let path = config_path(host)?;
    let text = if host == Host::Codex {
        let mut doc = read_toml(&path)?;
        let servers = doc.entry("mcp_servers").or_insert_with(|| {
            let mut table = toml_edit::Table::new();
            table.set_implicit(true);
            toml_edit::Item::Table(table)
        });
        let Some(servers) = servers.as_table_like_mut() else {
            return Err(Error::invalid(format!(
                "{}: `mcp_servers` is not a table; pyro will not overwrite it",
                path.display()
            )));
        };
        servers.insert(SERVER_NAME, toml_entry(entry));
        doc.to_string()
    } else {
        let mut doc = read_json(&path)?;
        let key = servers_key(host);
        if !doc.get(key).is_some_and(Value::is_object) {
            if doc.get(key).is_some() {
                return Err(Error::invalid(format!(
                    "{}: `{key}` is not an object; pyro will not overwrite it",
                    path.display()
                )));
            }
            doc[key] = json!({});
        }
        doc[key][SERVER_NAME] = json_entry(host, entry);
        format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        )
    };
    let backup = backup(&path)?;
    // A symlinked dotfile keeps its link: write where it points. Keep the file's permissions (configs
    // may hold other servers' tokens); a new file is private.
    let target = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let mode = std::fs::metadata(&target)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o600);
    if let Some(parent) = target.parent() {
        fsutil::create_dir_all(parent)?;
    }
    fsutil::write_atomic_mode(&target, text.as_bytes(), mode)?;
    Ok(backup)
}

/// Registers the entry with the host's own CLI: remove (if present), then add at user scope.
fn write_with_cli(host: Host, cli: &Path, entry: &ServerEntry, present: bool) -> Result<()> {
    let run = |args: Vec<String>| -> Result<()> {
        let out = Command::new(cli)
            .args(&args)
            .output()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot run {}: {e}", cli.display())))?;
        if !out.status.success() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "`{} {}` failed: {}",
                    cli.display(),
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    };
    let scope: Vec<String> = if host == Host::ClaudeCode {
        vec!["-s".into(), "user".into()]
    } else {
        vec![]
    };
    if present {
        let mut remove = vec!["mcp".to_string(), "remove".to_string()];
        remove.extend(scope.clone());
        remove.push(SERVER_NAME.into());
        run(remove)?;
    }
    let mut add = vec!["mcp".to_string(), "add".to_string()];
    add.extend(scope);
    add.push(SERVER_NAME.into());
    add.push("--".into());
    add.push(entry.command.clone());
    add.extend(entry.args.iter().cloned());
    run(add)
}

fn find_cli(host: Host) -> Option<PathBuf> {
    let name = host.cli()?;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn apply(host: Host, entry: &ServerEntry, overwrite: bool) -> Result<HostReport> {
    let path = config_path(host)?;
    let current = configured_entry(host)?;
    let mut report = HostReport {
        host,
        config_path: path.display().to_string(),
        action: "unchanged".into(),
        via: "file".into(),
        backup_path: None,
        entry: entry.clone(),
    };
    match &current {
        Some(existing) if existing == entry => return Ok(report),
        Some(existing) if !overwrite => {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "{} already has a `pyro` entry that differs ({} {}); connect leaves it alone",
                    host.name(),
                    existing.command,
                    existing.args.join(" ")
                ),
            )
            .with_hint(format!(
                "run `pyro host repair {}` to replace it",
                host.name()
            )))
        }
        _ => {}
    }
    report.action = if current.is_some() {
        "updated"
    } else {
        "added"
    }
    .into();
    match find_cli(host) {
        Some(cli) => {
            write_with_cli(host, &cli, entry, current.is_some())?;
            report.via = "cli".into();
        }
        None => report.backup_path = write_entry(host, entry)?,
    }
    Ok(report)
}

/// Adds pyro's entry; idempotent, and refuses to replace a different entry (that is `repair`).
pub fn connect(host: Host, entry: &ServerEntry) -> Result<HostReport> {
    apply(host, entry, false)
}

/// Makes pyro's entry exactly `entry`: fixes a stale binary path, profile, mode or project path.
pub fn repair(host: Host, entry: &ServerEntry) -> Result<HostReport> {
    apply(host, entry, true)
}

/// What `pyro host status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub host: Host,
    pub config_path: String,
    pub configured: bool,
    pub entry: Option<ServerEntry>,
    /// The entry starts this pyro with the same command line `connect` would write.
    pub matches_this_pyro: bool,
    /// What is wrong, each with what to do.
    pub problems: Vec<String>,
    /// The entry started as a server, and the tools it listed.
    pub probe: Option<crate::probe::Probe>,
}

/// Reads the host's entry, checks it against this pyro (and against `wanted`'s arguments when
/// `compare_args`), and proves it by starting it and listing its tools.
pub async fn status(host: Host, wanted: &ServerEntry, compare_args: bool) -> Result<HostStatus> {
    let path = config_path(host)?;
    let entry = configured_entry(host)?;
    let mut problems = Vec::new();
    let probe = match &entry {
        None => {
            problems.push(format!(
                "pyro is not configured for {}: run `pyro host connect {}`",
                host.name(),
                host.name()
            ));
            None
        }
        Some(entry) => {
            if !Path::new(&entry.command).exists() {
                problems.push(format!(
                    "{} does not exist (a stale path): run `pyro host repair {}`",
                    entry.command,
                    host.name()
                ));
            } else if entry.command != wanted.command {
                problems.push(format!("the entry starts another pyro ({}): `pyro host repair {}` points it at this one", entry.command, host.name()));
            }
            if compare_args && entry.args != wanted.args {
                problems.push(format!(
                    "the entry runs `{}`, not `{}`: `pyro host repair {}` with the same options rewrites it",
                    entry.args.join(" "),
                    wanted.args.join(" "),
                    host.name()
                ));
            }
            let probe = crate::probe::probe(entry).await;
            if let Some(error) = &probe.error {
                problems.push(format!("the server did not start: {error}"));
            }
            Some(probe)
        }
    };
    Ok(HostStatus {
        host,
        config_path: path.display().to_string(),
        configured: entry.is_some(),
        matches_this_pyro: entry.as_ref() == Some(wanted),
        entry,
        problems,
        probe,
    })
}

/// The snippet to paste into the host's config by hand.
pub fn print_config(host: Host, entry: &ServerEntry) -> String {
    match host {
        Host::Codex => {
            let mut doc = toml_edit::DocumentMut::new();
            let mut servers = toml_edit::Table::new();
            servers.set_implicit(true);
            servers.insert(SERVER_NAME, toml_entry(entry));
            doc.insert("mcp_servers", toml_edit::Item::Table(servers));
            doc.to_string()
        }
        _ => {
            let doc = json!({ servers_key(host): { SERVER_NAME: json_entry(host, entry) } });
            format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonc_comments_and_trailing_commas() {
        let text = "{\n  // a comment\n  \"a\": \"http://x\", /* b */\n  \"list\": [1, 2,],\n}\n";
        let value: Value = serde_json::from_str(&strip_jsonc(text)).unwrap();
        assert_eq!(value, json!({"a": "http://x", "list": [1, 2]}));
    }

    #[test]
    fn unknown_hosts_list_the_valid_ones() {
        let err = Host::parse("vim").unwrap_err();
        assert!(err
            .message()
            .contains("claude-code, codex, opencode, cursor, claude-desktop"));
    }
}
