//! Persistent workspaces: a VM that stays alive across many steps, with `/workspace` seeded from an
//! immutable baseline, file operations confined to it, a diff against the baseline, reset, and an
//! activity journal that `logs` and `summary` read.

pub mod archive;
pub mod diff;
pub mod disk_tools;
pub mod entries;
pub mod extract;
pub mod fork;
pub mod journal;
pub mod lifecycle;
pub mod model;
pub mod ops;
pub mod patch;
pub mod processes;
pub mod secrets;
pub mod services;
pub mod shells;
pub mod since;
pub mod snapshots;
pub mod store;
pub mod summary;
pub mod tunnel;
pub mod validate;
pub mod vms;
pub mod watchers;

pub use diff::diff;
pub use disk_tools::{disk_export, disk_list, disk_read};
pub use fork::{fork, ForkOptions, ForkResult};
pub use lifecycle::{
    create, delete, list, reset, resume, set_ttl, start, status, stop, suspend, update,
    CreateOptions, SuspendInfo, SuspendResult, UpdateOptions,
};
pub use model::{JournalEntry, Workspace, WorkspaceSeed};
pub use ops::{
    exec, export, file_list, file_read, file_read_bytes, file_write, file_write_bytes, logs,
    sync_push, ExecCommand, ExecOptions,
};
pub use patch::apply as patch_apply;
pub use summary::summary;
