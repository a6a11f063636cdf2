//! The chat-host onramp: write, repair, inspect and print pyro's MCP entry in each host's config.
//!
//! A host's own CLI is used when it is installed (`claude mcp add -s user`, `codex mcp add`); otherwise
//! the config file is edited as its owner wrote it: parsed first (a file that does not parse is
//! refused, and named), only the `pyro` entry changed, every other key kept in its place with its
//! comments and formatting (a JSONC syntax tree, `toml_edit` for TOML), the old file backed up once
//! (one backup, replaced by the next edit), and the new one written atomically, again if the host
//! changed the file meanwhile.

use std::path::{Path, PathBuf};
use std::process::Command;

use jsonc_parser::cst::{CstInputValue, CstRootNode};
use jsonc_parser::ParseOptions;
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

/// How a host stores an entry, as JSON, with its keys in the order the host's own command writes them.
fn json_entry(host: Host, entry: &ServerEntry) -> CstInputValue {
    let text = |t: &str| CstInputValue::String(t.to_string());
    let list = |items: &[String]| CstInputValue::Array(items.iter().map(|i| text(i)).collect());
    let field = |name: &str, value: CstInputValue| (name.to_string(), value);
    let empty = || CstInputValue::Object(Vec::new());
    CstInputValue::Object(match host {
        Host::ClaudeCode => vec![
            field("type", text("stdio")),
            field("command", text(&entry.command)),
            field("args", list(&entry.args)),
            field("env", empty()),
        ],
        Host::Opencode => {
            let mut command = vec![entry.command.clone()];
            command.extend(entry.args.iter().cloned());
            vec![
                field("type", text("local")),
                field("command", list(&command)),
                field("enabled", CstInputValue::Bool(true)),
            ]
        }
        _ => vec![
            field("command", text(&entry.command)),
            field("args", list(&entry.args)),
            field("env", empty()),
        ],
    })
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

/// A config file's text ("" when it does not exist yet).
fn read_text(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn not_json(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "{} is not valid JSON ({why}); pyro will not overwrite it",
        path.display()
    ))
    .with_hint("fix the file by hand (or move it away), then run the command again")
}

/// A JSON (or JSONC: comments, trailing commas) config as a syntax tree that keeps all of it.
fn parse_jsonc(path: &Path, text: &str) -> Result<CstRootNode> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    CstRootNode::parse(body, &ParseOptions::default()).map_err(|e| not_json(path, e))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = read_text(path)?;
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    match parse_jsonc(path, &text)?.to_serde_value() {
        Some(value) if value.is_object() => Ok(value),
        _ => Err(not_json(path, "the top level is not an object")),
    }
}

/// `text` with the host's `pyro` entry set to `entry`; everything else (order, comments, commas,
/// indentation) as it was.
fn json_with_entry(host: Host, path: &Path, text: &str, entry: &ServerEntry) -> Result<String> {
    let root = parse_jsonc(path, text)?;
    let doc = root
        .object_value_or_create()
        .ok_or_else(|| not_json(path, "the top level is not an object"))?;
    let key = servers_key(host);
    let servers = doc.object_value_or_create(key).ok_or_else(|| {
        Error::invalid(format!(
            "{}: `{key}` is not an object; pyro will not overwrite it",
            path.display()
        ))
    })?;
    match servers.get(SERVER_NAME) {
        Some(existing) => existing.set_value(json_entry(host, entry)),
        None => {
            servers.append(SERVER_NAME, json_entry(host, entry));
        }
    }
    let bom = if text.starts_with('\u{feff}') {
        "\u{feff}"
    } else {
        ""
    };
    let mut out = format!("{bom}{root}");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

fn parse_toml(path: &Path, text: &str) -> Result<toml_edit::DocumentMut> {
    text.parse::<toml_edit::DocumentMut>().map_err(|e| {
        Error::invalid(format!(
            "{} is not valid TOML ({}); pyro will not overwrite it",
            path.display(),
            e.message()
        ))
        .with_hint("fix the file by hand (or move it away), then run the command again")
    })
}

fn read_toml(path: &Path) -> Result<toml_edit::DocumentMut> {
    parse_toml(path, &read_text(path)?)
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

/// Keeps the file as it was before this edit, beside it (one backup: the next edit replaces it).
fn backup(path: &Path) -> Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let backup = path.with_file_name(format!(
        "{}.pyro-backup",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::copy(path, &backup).map_err(|e| Error::io("back up", path, e))?;
    Ok(Some(backup.display().to_string()))
}

/// What identifies a version of a file: its size and modification time (`None`: no file).
fn version(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Writes `entry` into the host's file, keeping everything else. A host may rewrite its file at any
/// time (Claude Code does): when the file changed between the read and the write, the edit starts
/// over from the new text, so the host's change is not lost.
fn write_entry(host: Host, entry: &ServerEntry) -> Result<Option<String>> {
    let path = config_path(host)?;
    // A symlinked dotfile keeps its link: write where it points.
    let target = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    for _ in 0..5 {
        let before = version(&target);
        let old = read_text(&target)?;
        let text = if host == Host::Codex {
            toml_with_entry(&path, &old, entry)?
        } else {
            json_with_entry(host, &path, &old, entry)?
        };
        // The host may have written since: compare what is there now with what was edited.
        if version(&target) != before || read_text(&target)? != old {
            continue;
        }
        let backup = backup(&target)?;
        // Keep the file's permissions (configs may hold other servers' tokens); a new file is private.
        let mode = std::fs::metadata(&target)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o600);
        if let Some(parent) = target.parent() {
            fsutil::create_dir_all(parent)?;
        }
        fsutil::write_atomic_mode(&target, text.as_bytes(), mode)?;
        return Ok(backup);
    }
    Err(Error::new(
        ErrorKind::InvalidState,
        format!("{} keeps changing while pyro edits it", path.display()),
    )
    .with_hint("close the host (or wait until it is idle), then run the command again"))
}

/// `text` (a codex config) with `[mcp_servers.pyro]` set to `entry`; comments and layout kept.
fn toml_with_entry(path: &Path, text: &str, entry: &ServerEntry) -> Result<String> {
    let mut doc = parse_toml(path, text)?;
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
    Ok(doc.to_string())
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
        _ => json_with_entry(host, Path::new("snippet"), "", entry).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ServerEntry {
        ServerEntry {
            command: "/usr/local/bin/pyro".into(),
            args: vec!["mcp".into(), "serve".into()],
        }
    }

    #[test]
    fn jsonc_keeps_its_comments_commas_and_order() {
        let text = "{\n  // my servers\n  \"zeta\": 1,\n  \"mcp\": {\n    \"other\": {\"type\": \"local\"}, /* keep */\n  },\n  \"alpha\": [1, 2,],\n}\n";
        let path = Path::new("opencode.jsonc");
        let out = json_with_entry(Host::Opencode, path, text, &entry()).unwrap();
        for kept in ["// my servers", "/* keep */", "\"alpha\": [1, 2,],"] {
            assert!(out.contains(kept), "{kept} lost:\n{out}");
        }
        assert!(
            out.find("\"zeta\"").unwrap() < out.find("\"alpha\"").unwrap(),
            "{out}"
        );
        assert!(
            out.find("\"other\"").unwrap() < out.find("\"pyro\"").unwrap(),
            "{out}"
        );
        let value = parse_jsonc(path, &out).unwrap().to_serde_value().unwrap();
        assert_eq!(
            value["mcp"]["pyro"],
            json!({"type": "local", "command": ["/usr/local/bin/pyro", "mcp", "serve"], "enabled": true})
        );
        // Writing it again changes nothing.
        assert_eq!(
            json_with_entry(Host::Opencode, path, &out, &entry()).unwrap(),
            out
        );
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        let path = Path::new("x.json");
        assert!(json_with_entry(Host::Cursor, path, "[1]", &entry()).is_err());
        assert!(json_with_entry(Host::Cursor, path, "{\"mcpServers\": 3}", &entry()).is_err());
        assert!(json_with_entry(Host::Cursor, path, "{\"a\": ", &entry()).is_err());
        let fresh = json_with_entry(Host::Cursor, path, "", &entry()).unwrap();
        assert!(fresh.contains("\"mcpServers\""), "{fresh}");
    }

    #[test]
    fn unknown_hosts_list_the_valid_ones() {
        let err = Host::parse("vim").unwrap_err();
        assert!(err
            .message()
            .contains("claude-code, codex, opencode, cursor, claude-desktop"));
    }
}
