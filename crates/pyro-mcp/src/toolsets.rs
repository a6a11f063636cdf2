//! Which tools a server exposes: profiles (by breadth) and use-case modes (by task), defined once here
//! and documented from the same table (`pyro mcp tools` prints it).

use pyro_core::{Error, Result};

use crate::registry::{self, ToolSpec};
use crate::tools::*;

pub struct Profile {
    pub name: &'static str,
    /// Groups of tools (see `tools`), in order.
    pub groups: &'static [&'static [&'static dyn ToolSpec]],
    /// Whether `workspace_create` offers a network (`network_policy`, `allow_hosts`).
    pub offers_network: bool,
    pub summary: &'static str,
}

pub const PROFILES: &[Profile] = &[
    Profile {
        name: "vm-run",
        groups: &[RUN],
        offers_network: false,
        summary: "one-shot commands in a fresh VM",
    },
    Profile {
        name: "workspace-core",
        groups: &[RUN, WORKSPACE],
        offers_network: false,
        summary: "persistent workspaces for a daily loop (the default)",
    },
    Profile {
        name: "workspace-full",
        groups: &[
            RUN, WORKSPACE, LIFECYCLE, DISK, SERVICES, SHELLS, SNAPSHOTS, VMS,
        ],
        offers_network: true,
        summary: "every tool pyro implements",
    },
];

pub const DEFAULT_PROFILE: &str = "workspace-core";

pub struct Mode {
    pub name: &'static str,
    pub tools: &'static [&'static dyn ToolSpec],
    /// Workspaces created in this mode never get a network device.
    pub network_off: bool,
    pub summary: &'static str,
    pub instructions: &'static str,
}

pub const MODES: &[Mode] = &[
    Mode {
        name: "repro-fix",
        // The core set without vm_run: everything happens in the workspace.
        tools: WORKSPACE,
        network_off: false,
        summary: "reproduce a failure, fix it, prove the fix",
        instructions: "Repro-fix mode: reproduce a failure in an isolated copy of the project, fix it, and prove the fix.\n\
            1. workspace_create (without seed_path it copies the current project) and note the workspace_id.\n\
            2. Reproduce: workspace_exec the failing check; read the code with workspace_file_read.\n\
            3. Fix with workspace_patch_apply (a unified diff, all or nothing) or workspace_file_write.\n\
            4. Prove it: workspace_exec the same check again; it must pass.\n\
            5. Review with workspace_diff and workspace_summary; hand the patch back (workspace_diff's `patch`).\n\
            6. To try another approach from scratch, workspace_reset. Delete the workspace when done.",
    },
    Mode {
        name: "inspect",
        tools: &[
            &WORKSPACE_CREATE,
            &WORKSPACE_LIST,
            &WORKSPACE_STATUS,
            &WORKSPACE_FILE_LIST,
            &WORKSPACE_FILE_READ,
            &WORKSPACE_EXEC,
            &WORKSPACE_SUMMARY,
            &WORKSPACE_DELETE,
        ],
        network_off: true,
        summary: "look at untrusted code without network and without changing the host",
        instructions: "Inspect mode: examine untrusted code safely. Workspaces have no network and nothing is written to the \
            host.\n\
            1. workspace_create with seed_path (or none, for the current project).\n\
            2. Survey with workspace_file_list (recursive) and workspace_file_read; search with workspace_exec (grep, find).\n\
            3. Do not run the code's own scripts unless asked; the VM is isolated, but keep the report factual.\n\
            4. Write findings with workspace_exec (e.g. a report file) and read it back with workspace_file_read to \
            give it to the user; then workspace_delete.",
    },
    Mode {
        name: "cold-start",
        tools: &[
            &WORKSPACE_CREATE,
            &WORKSPACE_LIST,
            &WORKSPACE_STATUS,
            &WORKSPACE_EXEC,
            &WORKSPACE_LOGS,
            &WORKSPACE_FILE_LIST,
            &WORKSPACE_FILE_READ,
            &WORKSPACE_FILE_WRITE,
            &WORKSPACE_EXPORT,
            &WORKSPACE_SUMMARY,
            &WORKSPACE_DELETE,
            &SERVICE_START,
            &SERVICE_LIST,
            &SERVICE_STATUS,
            &SERVICE_LOGS,
            &SERVICE_STOP,
        ],
        network_off: false,
        summary: "check that a project builds and runs from a clean machine",
        instructions: "Cold-start mode: prove a project builds and runs from nothing.\n\
            1. workspace_create from the project (environment debian:12-build has compilers and python3).\n\
            2. Follow the project's own setup instructions with workspace_exec, one step at a time; read files as needed.\n\
            3. Start what it serves with service_start and one readiness check (ready_http for a web server, ready_tcp, \
            ready_file or ready_command); a service that is not ready in time is reported failed: read service_logs.\n\
            4. Prove it answers: workspace_exec a request against it from inside the VM (e.g. curl).\n\
            5. Record what failed and why (workspace_logs keeps every command and its output).\n\
            6. Summarise with workspace_summary; export any notes; service_stop, then delete the workspace.",
    },
    Mode {
        name: "review-eval",
        tools: &[
            &WORKSPACE_CREATE,
            &WORKSPACE_LIST,
            &WORKSPACE_STATUS,
            &WORKSPACE_EXEC,
            &WORKSPACE_LOGS,
            &WORKSPACE_FILE_LIST,
            &WORKSPACE_FILE_READ,
            &WORKSPACE_DIFF,
            &WORKSPACE_EXPORT,
            &WORKSPACE_RESET,
            &WORKSPACE_SUMMARY,
            &WORKSPACE_DELETE,
            &SHELL_OPEN,
            &SHELL_READ,
            &SHELL_WRITE,
            &SHELL_SIGNAL,
            &SHELL_CLOSE,
            &SNAPSHOT_CREATE,
            &SNAPSHOT_LIST,
            &SNAPSHOT_DELETE,
        ],
        network_off: false,
        summary: "evaluate a change: checkpoint, poke at it in a shell, roll back, report",
        instructions: "Review-eval mode: evaluate a change reproducibly, with checkpoints to roll back to.\n\
            1. workspace_create from the project (or a seed_path with the change applied).\n\
            2. Checkpoint the state you evaluate from: snapshot_create (e.g. snapshot_name \"pre-review\").\n\
            3. Poke at it interactively: shell_open, shell_write a command, shell_read with plain=true and \
            wait_for_idle_ms (pass next_cursor back as cursor so nothing is read twice); shell_close when done.\n\
            4. Run the project's checks with workspace_exec; review workspace_diff against the baseline, or with \
            since=\"pre-review\" for only what changed after the checkpoint.\n\
            5. When an experiment breaks something, workspace_reset with snapshot=\"pre-review\": the whole sandbox \
            goes back to the checkpoint (shells and services end; open a new shell).\n\
            6. Report with workspace_summary (commands, exit codes, changed files); export artifacts with \
            workspace_export; snapshot_delete what you no longer need; workspace_delete when done.",
    },
];

pub const PROFILE_INSTRUCTIONS: &str = "pyro gives you isolated Linux microVMs. Use vm_run for one command in a fresh VM. \
    For multi-step work create a workspace (workspace_create; without seed_path it copies the current project), then \
    read and change files with workspace_file_read / workspace_file_write / workspace_patch_apply, run commands with \
    workspace_exec, review with workspace_diff and workspace_summary, start over with workspace_reset, and \
    workspace_delete when done. Paths are inside /workspace. Nothing runs on the host.";

/// The tool set and instructions a server runs with.
pub struct Selection {
    pub label: String,
    pub tools: Vec<&'static dyn ToolSpec>,
    /// Workspaces never get a network device.
    pub network_off: bool,
    /// `workspace_create` offers `network_policy` and `allow_hosts`.
    pub offers_network: bool,
    pub instructions: String,
}

impl Profile {
    pub fn tools(&self) -> Vec<&'static dyn ToolSpec> {
        self.groups.concat()
    }
}

impl Selection {
    /// The tool called `name`, when this selection offers it.
    pub fn tool(&self, name: &str) -> Option<&'static dyn ToolSpec> {
        self.tools.iter().copied().find(|t| t.name() == name)
    }

    pub fn tool_names(&self) -> Vec<&'static str> {
        self.tools.iter().map(|t| t.name()).collect()
    }
}

/// The item called `name`, or an error listing the valid names.
fn find<'a, T>(
    what: &str,
    name: &str,
    items: &'a [T],
    name_of: fn(&T) -> &'static str,
) -> Result<&'a T> {
    items
        .iter()
        .find(|item| name_of(item) == name)
        .ok_or_else(|| {
            let names: Vec<&str> = items.iter().map(name_of).collect();
            Error::invalid(format!(
                "unknown {what} '{name}'; expected one of: {}",
                names.join(", ")
            ))
        })
}

/// Resolves `--profile` and `--mode` (mutually exclusive; the default profile when neither).
pub fn select(profile: Option<&str>, mode: Option<&str>) -> Result<Selection> {
    match (profile, mode) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "--profile and --mode cannot be used together: a mode picks its own tools",
        )),
        (_, Some(name)) => {
            let mode = find("mode", name, MODES, |m| m.name)?;
            Ok(Selection {
                label: format!("mode {}", mode.name),
                tools: mode.tools.to_vec(),
                network_off: mode.network_off,
                offers_network: !mode.network_off,
                instructions: mode.instructions.to_string(),
            })
        }
        (profile, None) => {
            let name = profile.unwrap_or(DEFAULT_PROFILE);
            let profile = find("profile", name, PROFILES, |p| p.name)?;
            Ok(Selection {
                label: format!("profile {}", profile.name),
                tools: profile.tools(),
                network_off: false,
                offers_network: profile.offers_network,
                instructions: PROFILE_INSTRUCTIONS.to_string(),
            })
        }
    }
}

/// The profiles, modes and tools as JSON (`pyro mcp tools --json`).
pub fn catalog_json() -> serde_json::Value {
    let names = |tools: &[&dyn ToolSpec]| -> Vec<&str> { tools.iter().map(|t| t.name()).collect() };
    let profiles: Vec<_> = PROFILES
        .iter()
        .map(|p| serde_json::json!({"name": p.name, "tools": names(&p.tools()), "summary": p.summary}))
        .collect();
    let modes: Vec<_> = MODES
        .iter()
        .map(|m| {
            serde_json::json!({"name": m.name, "tools": names(m.tools), "network_off": m.network_off,
                "summary": m.summary, "instructions": m.instructions})
        })
        .collect();
    let tools: Vec<_> = all()
        .iter()
        .map(|t| {
            let h = t.hints();
            serde_json::json!({"name": t.name(), "description": t.description(),
                "annotations": {"read_only": h.read_only, "destructive": h.destructive,
                    "idempotent": h.idempotent, "open_world": h.open_world},
                "input_schema": *t.input_schema(true)})
        })
        .collect();
    serde_json::json!({"default_profile": DEFAULT_PROFILE, "profiles": profiles, "modes": modes,
        "tools": tools})
}

fn names(tools: &[&dyn ToolSpec]) -> String {
    tools
        .iter()
        .map(|t| format!("`{}`", t.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The profile and mode tables as Markdown (for docs and `pyro mcp tools`).
pub fn markdown_tables() -> String {
    let mut text = String::from("| profile | tools | for |\n|---|---|---|\n");
    for p in PROFILES {
        text.push_str(&format!(
            "| `{}` | {} | {} |\n",
            p.name,
            names(&p.tools()),
            p.summary
        ));
    }
    text.push_str("\n| mode | tools | network | for |\n|---|---|---|---|\n");
    for m in MODES {
        text.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name,
            names(m.tools),
            if m.network_off {
                "always off"
            } else {
                "off unless asked"
            },
            m.summary
        ));
    }
    text
}

/// Every tool as a Markdown table: arguments (with defaults), annotations, what it does.
pub fn markdown_tools() -> String {
    let mut text = String::from(
        "| tool | arguments (defaults) | annotations | what it does |\n|---|---|---|---|\n",
    );
    for tool in all() {
        let arguments = registry::arguments(tool);
        text.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            tool.name(),
            if arguments.is_empty() {
                "none".to_string()
            } else {
                arguments.join(", ")
            },
            match tool.hints().words() {
                words if words.is_empty() => "none".to_string(),
                words => words.join(", "),
            },
            tool.description().replace('|', "\\|")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The docs hold the tables as this build prints them (`pyro mcp tools` prints them too).
    #[test]
    fn the_docs_show_the_registry() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/mcp.md"))
                .expect("docs/mcp.md");
        for (what, table) in [
            ("profile and mode", markdown_tables()),
            ("tool", markdown_tools()),
        ] {
            assert!(
                doc.contains(&table),
                "docs/mcp.md is missing the current {what} tables; paste in:\n{table}"
            );
        }
    }

    #[test]
    fn every_tool_is_named_once_and_in_workspace_full() {
        let mut seen = std::collections::BTreeSet::new();
        for tool in all() {
            assert!(seen.insert(tool.name()), "{} twice", tool.name());
        }
        for p in PROFILES {
            for t in p.tools() {
                assert!(seen.contains(t.name()));
            }
        }
        for m in MODES {
            assert!(m.tools.iter().all(|t| t.name() != "vm_run"), "{}", m.name);
        }
    }
}
