//! The words results and records use, as types: each serialises exactly as the string it replaces,
//! so JSON, the database and the journal read the same as before.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// Defines a string-like enum: serde, `Display`, `as_str`, parsing and SQLite TEXT, all from one list.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} '{text}'", stringify!($name)).into())
                })
            }
        }
    };
}

vocabulary! {
    /// Where a workspace is in its life.
    WorkspaceState {
        /// Being created: its VM is booting and `/workspace` being seeded.
        Creating = "creating",
        Started = "started",
        Stopped = "stopped",
        /// Not running, its memory saved beside its disk: `start` resumes it as it was.
        Suspended = "suspended",
    }
}

vocabulary! {
    /// What the idle TTL does to a workspace.
    TtlAction {
        /// Stop its VM (processes end; the disk stays).
        Stop = "stop",
        /// Suspend it (processes and memory kept; `start` resumes).
        Suspend = "suspend",
    }
}

vocabulary! {
    /// What a workspace was made as: a workspace (`workspace_create`), or a plain VM (`vm_create`, no
    /// seed), which the `vm_*` tools work on.
    WorkspaceKind {
        Workspace = "workspace",
        Vm = "vm",
    }
}

vocabulary! {
    /// How a VM booted: restored from a warm template, or from the kernel.
    BootMode {
        Warm = "warm",
        Cold = "cold",
        /// Resumed from its own suspended state, with every process as it was.
        Resumed = "resumed",
        /// Taken from the pool `pyro prepare --pool` keeps: restored, activated and warmed up ahead.
        Pooled = "pooled",
    }
}

vocabulary! {
    /// Whether the next start of an environment (or one shape of it) can be a warm restore.
    Readiness {
        /// Every template needed is prepared and intact.
        Warm = "warm",
        /// A template was never prepared.
        Cold = "cold",
        /// A template exists but no longer fits (pyro, the environment or QEMU changed since).
        Stale = "stale",
    }
}

vocabulary! {
    /// Where a workspace's `/workspace` came from.
    SeedMode {
        Empty = "empty",
        Directory = "directory",
        TarArchive = "tar_archive",
        Project = "project",
        RepoUrl = "repo_url",
    }
}

vocabulary! {
    /// How a path differs between two trees (a diff), or what a patch did to it.
    ChangeStatus {
        Added = "added",
        Modified = "modified",
        Deleted = "deleted",
        /// A file became a link or a directory, or the other way round.
        TypeChanged = "type_changed",
        /// Only the mode changed.
        ModeChanged = "mode_changed",
        /// Moved (patches only).
        Renamed = "renamed",
    }
}

vocabulary! {
    /// Where work runs: always in a guest (the reference product also knew host modes).
    ExecutionMode {
        Guest = "guest",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_serialise_as_the_strings_they_replace() {
        for state in WorkspaceState::ALL {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str());
            assert_eq!(WorkspaceState::parse(state.as_str()), Some(*state));
        }
        assert_eq!(
            serde_json::to_string(&SeedMode::TarArchive).unwrap(),
            "\"tar_archive\""
        );
        assert_eq!(ChangeStatus::TypeChanged.to_string(), "type_changed");
        assert_eq!(BootMode::parse("lukewarm"), None);
    }
}
