//! The core's next steps, spelled as the commands a person types.

use pyro_core::{Error, Next};
use serde_json::Value;

/// The command line that takes `next`, when one does.
pub fn command(next: &Next) -> Option<String> {
    Some(match next {
        Next::WorkspaceStart { workspace_id } => format!("pyro workspace start {workspace_id}"),
        Next::WorkspaceStop { workspace_id } => format!("pyro workspace stop {workspace_id}"),
        Next::WorkspaceExport { workspace_id, path } => {
            format!(
                "pyro workspace export {workspace_id} {} --output FILE",
                quote(path)
            )
        }
        Next::WorkspaceCreate => "pyro workspace create".into(),
        Next::WorkspaceList => "pyro workspace list".into(),
        Next::WorkspaceUpdate { workspace_id } => {
            format!("pyro workspace update {workspace_id} --name NEW-NAME")
        }
        Next::WorkspaceDiff { workspace_id } => format!("pyro workspace diff {workspace_id}"),
        Next::SnapshotList { workspace_id } => {
            format!("pyro workspace snapshot list {workspace_id}")
        }
        Next::EnvList => "pyro env list".into(),
        Next::Doctor => "pyro doctor".into(),
        Next::AllowHostPath => return None,
        Next::Prepare {
            environment,
            vcpu_count,
            mem_mib,
            force,
        } => {
            let mut command = format!("pyro prepare {environment}");
            if *vcpu_count != pyro_core::limits::DEFAULT_VCPU_COUNT {
                command.push_str(&format!(" --vcpu-count {vcpu_count}"));
            }
            if *mem_mib != pyro_core::limits::DEFAULT_MEM_MIB {
                command.push_str(&format!(" --mem-mib {mem_mib}"));
            }
            if *force {
                command.push_str(" --force");
            }
            command
        }
        Next::Reinstall => return None,
    })
}

/// `next` as advice: the command to run, or what to do where no command does it.
pub fn advice(next: &Next) -> String {
    match (command(next), next) {
        (Some(command), _) => format!("run `{command}`"),
        (None, Next::AllowHostPath) => {
            "start the server with --allow-host-path DIR to let tools use DIR (the project is allowed already)".into()
        }
        (None, _) => {
            "reinstall pyro with scripts/setup.sh (it installs pyro-agent beside pyro)".into()
        }
    }
}

/// The help line of an error: its advice in words, then the command that helps.
pub fn hint(err: &Error) -> Option<String> {
    match (err.hint(), err.next()) {
        (Some(hint), Some(next)) => Some(format!("{hint}; {}", advice(next))),
        (Some(hint), None) => Some(hint.to_string()),
        (None, Some(next)) => Some(advice(next)),
        (None, None) => None,
    }
}

/// `next` in `--json` output: the step as the core names it, plus the command.
pub fn json(next: &Next) -> Value {
    let mut value = serde_json::to_value(next).unwrap_or(Value::Null);
    if let (Some(command), Value::Object(map)) = (command(next), &mut value) {
        map.insert("command".into(), Value::String(command));
    }
    value
}

/// A word as a shell reads it back: bare when it is plain, else single-quoted.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyro_core::ErrorKind;

    #[test]
    fn next_steps_are_commands() {
        let start = Next::WorkspaceStart {
            workspace_id: "0123456789ab".into(),
        };
        assert_eq!(
            command(&start).unwrap(),
            "pyro workspace start 0123456789ab"
        );
        let prepare = Next::Prepare {
            environment: "debian:12".into(),
            vcpu_count: 2,
            mem_mib: 1024,
            force: true,
        };
        assert_eq!(
            command(&prepare).unwrap(),
            "pyro prepare debian:12 --vcpu-count 2 --force"
        );
        let export = Next::WorkspaceExport {
            workspace_id: "w".into(),
            path: "my file".into(),
        };
        assert_eq!(
            command(&export).unwrap(),
            "pyro workspace export w 'my file' --output FILE"
        );
        let err = Error::new(ErrorKind::InvalidState, "stopped")
            .with_hint("its disk is kept")
            .with_next(start);
        assert_eq!(
            hint(&err).unwrap(),
            "its disk is kept; run `pyro workspace start 0123456789ab`"
        );
        assert_eq!(
            json(err.next().unwrap())["command"],
            "pyro workspace start 0123456789ab"
        );
    }
}
