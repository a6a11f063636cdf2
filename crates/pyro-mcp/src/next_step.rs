//! The core's next steps, spelled for a model: the tool to call and its arguments, or advice in words
//! where no tool does it (a model cannot run command lines on the host).

use pyro_core::Next;
use serde_json::{json, Value};

/// A next step for a model.
pub struct Step {
    /// What to do, in words that name the tool.
    pub advice: String,
    /// `{"tool", "arguments", "also_needs"?}` when a tool this server offers takes the step;
    /// `also_needs` names the arguments the caller must still choose.
    pub call: Option<Value>,
}

/// The tool that takes `next`, the arguments known here, and those the caller must add.
fn tool(next: &Next) -> Option<(&'static str, Value, &'static [&'static str])> {
    Some(match next {
        Next::WorkspaceStart { workspace_id } => (
            "workspace_start",
            json!({ "workspace_id": workspace_id }),
            &[],
        ),
        Next::WorkspaceStop { workspace_id } => (
            "workspace_stop",
            json!({ "workspace_id": workspace_id }),
            &[],
        ),
        Next::WorkspaceExport { workspace_id, path } => (
            "workspace_export",
            json!({ "workspace_id": workspace_id, "path": path }),
            &["output_path"],
        ),
        Next::WorkspaceCreate => ("workspace_create", json!({}), &[]),
        Next::WorkspaceList => ("workspace_list", json!({}), &[]),
        Next::WorkspaceUpdate { workspace_id } => (
            "workspace_update",
            json!({ "workspace_id": workspace_id }),
            &["name"],
        ),
        Next::WorkspaceDiff { workspace_id } => (
            "workspace_diff",
            json!({ "workspace_id": workspace_id }),
            &[],
        ),
        Next::SnapshotList { workspace_id } => (
            "snapshot_list",
            json!({ "workspace_id": workspace_id }),
            &[],
        ),
        Next::EnvList
        | Next::Doctor
        | Next::Reinstall
        | Next::AllowHostPath
        | Next::Prepare { .. } => return None,
    })
}

/// Advice for the steps only the person at the host can take.
fn words(next: &Next) -> String {
    match next {
        Next::EnvList => "the environments are the ones the message lists".into(),
        Next::Doctor => "the host needs attention: ask the user to check it with pyro's doctor".into(),
        Next::Reinstall => {
            "pyro's parts come from different builds: ask the user to reinstall pyro".into()
        }
        Next::AllowHostPath => "the user can let tools use another directory by starting the server with --allow-host-path DIR (the project is allowed already)".into(),
        Next::Prepare { environment, .. } => format!(
            "starts stay slow until the user prepares {environment} on the host (nothing to do in this call)"
        ),
        _ => String::new(),
    }
}

/// `next` for a model, given which tools this server offers.
pub fn render(next: &Next, offered: &dyn Fn(&str) -> bool) -> Step {
    match tool(next) {
        Some((name, arguments, also_needs)) if offered(name) => {
            let mut call = json!({ "tool": name, "arguments": arguments });
            let mut advice = format!("call {name} with {arguments}");
            if !also_needs.is_empty() {
                call["also_needs"] = json!(also_needs);
                advice.push_str(&format!(" and {}", also_needs.join(", ")));
            }
            Step {
                advice,
                call: Some(call),
            }
        }
        Some((name, _, _)) => Step {
            advice: format!(
                "{name} would do it, but this server does not offer it (the workspace-full profile does)"
            ),
            call: None,
        },
        None => Step {
            advice: words(next),
            call: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_name_tools_never_command_lines() {
        let start = Next::WorkspaceStart {
            workspace_id: "w".into(),
        };
        let step = render(&start, &|_| true);
        assert_eq!(
            step.advice,
            r#"call workspace_start with {"workspace_id":"w"}"#
        );
        assert_eq!(step.call.unwrap()["tool"], "workspace_start");
        let step = render(&start, &|_| false);
        assert!(step.call.is_none() && step.advice.contains("workspace-full"));
        let prepare = Next::Prepare {
            environment: "debian:12".into(),
            vcpu_count: 1,
            mem_mib: 1024,
            force: false,
        };
        for next in [prepare, Next::Doctor, Next::EnvList, Next::Reinstall] {
            let step = render(&next, &|_| true);
            assert!(!step.advice.contains("pyro "), "{}", step.advice);
            assert!(!step.advice.is_empty());
        }
    }
}
