//! One path under `/workspace` at a time: its entry, a directory made, a path removed or renamed.
//! The guest agent does each without leaving `/workspace` or following a symlink; changes are
//! journalled.

use pyro_proto::{Reply, Request};

use super::journal::{self, Nothing, Operation, PathChangeParams};
use super::lifecycle::now_ms;
use super::ops::{started, ListedEntry};
use super::{store, validate};
use crate::agent_client;
use crate::{Dirs, Result};

/// The entry of `path` itself (a symlink's own).
pub async fn stat(dirs: &Dirs, reference: &str, path: &str) -> Result<ListedEntry> {
    let path = validate::workspace_path(path)?;
    let (_db, _record, dir) = started(dirs, reference, "stat")?;
    let request = Request::StatPath { path };
    match agent_client::call_as(&dir, &request, agent_client::Purpose::Inspection).await? {
        Reply::Entry(entry) => Ok(entry.into()),
        other => Err(agent_client::unexpected(other)),
    }
}

/// Runs a change and journals it.
async fn change(
    dirs: &Dirs,
    reference: &str,
    request: Request,
    params: PathChangeParams,
) -> Result<Reply> {
    let (mut db, record, dir) = started(dirs, reference, &params.action.replace('_', " "))?;
    let timer = journal::Timer::start();
    let reply = agent_client::call(&dir, &request).await?;
    let operation = Operation::PathChange {
        params,
        result: Nothing {},
    };
    timer.record(&mut db, &record.id, true, &operation)?;
    store::touch(db.conn(), &record.id, now_ms())?;
    Ok(reply)
}

/// Makes `path` and its missing parents: its entry, and whether it was made (`false`: a directory
/// was there already).
pub async fn make_dir(dirs: &Dirs, reference: &str, path: &str) -> Result<(ListedEntry, bool)> {
    let path = validate::workspace_path(path)?;
    let params = PathChangeParams {
        action: "make_dir".into(),
        path: path.clone(),
        to: None,
    };
    match change(dirs, reference, Request::MakeDir { path }, params).await? {
        Reply::MadeDir { entry, created } => Ok((entry.into(), created)),
        other => Err(agent_client::unexpected(other)),
    }
}

/// Removes `path`: a file or link, or a directory with everything in it.
pub async fn remove(dirs: &Dirs, reference: &str, path: &str) -> Result<()> {
    let path = validate::workspace_path(path)?;
    let params = PathChangeParams {
        action: "remove".into(),
        path: path.clone(),
        to: None,
    };
    match change(dirs, reference, Request::RemovePath { path }, params).await? {
        Reply::Removed => Ok(()),
        other => Err(agent_client::unexpected(other)),
    }
}

/// Renames `from` to `to` (a file there is replaced): the entry at `to`.
pub async fn rename(dirs: &Dirs, reference: &str, from: &str, to: &str) -> Result<ListedEntry> {
    let from = validate::workspace_path(from)?;
    let to = validate::workspace_path(to)?;
    let params = PathChangeParams {
        action: "rename".into(),
        path: from.clone(),
        to: Some(to.clone()),
    };
    match change(dirs, reference, Request::RenamePath { from, to }, params).await? {
        Reply::Entry(entry) => Ok(entry.into()),
        other => Err(agent_client::unexpected(other)),
    }
}
