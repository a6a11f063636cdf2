//! Which tools a server exposes: profiles (by breadth) and use-case modes (by task), defined once here
//! and documented from the same table (`pyro mcp tools` prints it).

use pyro_core::{Error, Result};

/// Every tool implemented: the core set plus the lifecycle tools.
pub const FULL: &[&str] = &[
    "vm_run",
    "workspace_create",
    "workspace_list",
    "workspace_update",
    "workspace_status",
    "workspace_sync_push",
    "workspace_exec",
    "workspace_logs",
    "workspace_file_list",
    "workspace_file_read",
    "workspace_file_write",
    "workspace_patch_apply",
    "workspace_diff",
    "workspace_export",
    "workspace_reset",
    "workspace_delete",
    "workspace_summary",
    "workspace_stop",
    "workspace_start",
];

/// The workspace-core tool set: what chat hosts get by default (every tool but the last two).
pub const CORE: &[&str] = FULL.split_at(FULL.len() - 2).0;

pub struct Profile {
    pub name: &'static str,
    pub tools: &'static [&'static str],
    pub summary: &'static str,
}

pub const PROFILES: &[Profile] = &[
    Profile {
        name: "vm-run",
        tools: &["vm_run"],
        summary: "one-shot commands in a fresh VM",
    },
    Profile {
        name: "workspace-core",
        tools: CORE,
        summary: "persistent workspaces for a daily loop (the default)",
    },
    Profile {
        name: "workspace-full",
        tools: FULL,
        summary: "every tool pyro implements",
    },
];

pub const DEFAULT_PROFILE: &str = "workspace-core";

pub struct Mode {
    pub name: &'static str,
    pub tools: &'static [&'static str],
    /// Workspaces created in this mode never get a network device.
    pub network_off: bool,
    pub summary: &'static str,
    pub instructions: &'static str,
}

pub const MODES: &[Mode] = &[
    Mode {
        name: "repro-fix",
        // The core set without vm_run: everything happens in the workspace.
        tools: CORE.split_at(1).1,
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
            "workspace_create",
            "workspace_list",
            "workspace_status",
            "workspace_file_list",
            "workspace_file_read",
            "workspace_exec",
            "workspace_summary",
            "workspace_delete",
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
            "workspace_create",
            "workspace_list",
            "workspace_status",
            "workspace_exec",
            "workspace_logs",
            "workspace_file_list",
            "workspace_file_read",
            "workspace_file_write",
            "workspace_export",
            "workspace_summary",
            "workspace_delete",
        ],
        network_off: false,
        summary: "check that a project builds and runs from a clean machine",
        instructions: "Cold-start mode: prove a project builds and runs from nothing.\n\
            1. workspace_create from the project (environment debian:12-build has compilers and python3).\n\
            2. Follow the project's own setup instructions with workspace_exec, one step at a time; read files as needed.\n\
            3. Record what failed and why (workspace_logs keeps every command and its output).\n\
            4. Summarise with workspace_summary; export any notes; delete the workspace.",
    },
    Mode {
        name: "review-eval",
        tools: &[
            "workspace_create",
            "workspace_list",
            "workspace_status",
            "workspace_exec",
            "workspace_logs",
            "workspace_file_list",
            "workspace_file_read",
            "workspace_diff",
            "workspace_export",
            "workspace_reset",
            "workspace_summary",
            "workspace_delete",
        ],
        network_off: false,
        summary: "evaluate a change: run the checks, review the diff, reset between attempts",
        instructions: "Review-eval mode: evaluate a change reproducibly.\n\
            1. workspace_create from the project (or a seed_path with the change applied).\n\
            2. Run the project's checks with workspace_exec; review workspace_diff against the baseline.\n\
            3. Between independent evaluations, workspace_reset to start from the same baseline.\n\
            4. Report with workspace_summary (commands, exit codes, changed files); export artifacts; delete.",
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
    pub tools: Vec<&'static str>,
    pub network_off: bool,
    pub instructions: String,
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
                instructions: mode.instructions.to_string(),
            })
        }
        (profile, None) => {
            let name = profile.unwrap_or(DEFAULT_PROFILE);
            let profile = find("profile", name, PROFILES, |p| p.name)?;
            Ok(Selection {
                label: format!("profile {}", profile.name),
                tools: profile.tools.to_vec(),
                network_off: false,
                instructions: PROFILE_INSTRUCTIONS.to_string(),
            })
        }
    }
}

/// The profile and mode tables as Markdown (for docs and `pyro mcp tools`).
pub fn markdown_tables() -> String {
    let mut text = String::from("| profile | tools | for |\n|---|---|---|\n");
    for p in PROFILES {
        text.push_str(&format!(
            "| `{}` | {} | {} |\n",
            p.name,
            p.tools
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", "),
            p.summary
        ));
    }
    text.push_str("\n| mode | tools | network | for |\n|---|---|---|---|\n");
    for m in MODES {
        text.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            m.name,
            m.tools
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", "),
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
