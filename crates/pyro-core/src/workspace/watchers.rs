//! Directory watchers in a workspace: the guest agent collects the changes under a directory of
//! `/workspace` until they are taken. Taking them is not activity: a watched workspace still idles.

use std::time::Duration;

use pyro_proto::{Reply, Request};
pub use pyro_proto::{WatchEvent, WatchEventKind};

use super::ops::started;
use super::validate;
use crate::agent_client::{self, AgentCall, Purpose};
use crate::{Dirs, Result};

/// The longest one take waits for a first event.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Starts watching `path`; returns the watcher's id.
pub async fn start(dirs: &Dirs, reference: &str, path: &str, recursive: bool) -> Result<String> {
    let path = validate::workspace_path(path)?;
    let (_db, _record, dir) = started(dirs, reference, "watch")?;
    match agent_client::call_as(
        &dir,
        &Request::WatchStart { path, recursive },
        Purpose::Inspection,
    )
    .await?
    {
        Reply::Watching { watcher_id } => Ok(watcher_id),
        other => Err(agent_client::unexpected(other)),
    }
}

/// Takes the watcher's events, waiting up to `wait` for a first one; and whether some were lost.
pub async fn events(
    dirs: &Dirs,
    reference: &str,
    watcher_id: &str,
    wait: Duration,
) -> Result<(Vec<WatchEvent>, bool)> {
    let wait = wait.min(MAX_WAIT);
    let (_db, _record, dir) = started(dirs, reference, "watch")?;
    let request = Request::WatchEvents {
        watcher_id: watcher_id.to_string(),
        wait_ms: wait.as_millis() as u64,
    };
    let limit = wait + agent_client::deadline_for(0);
    let call = AgentCall::start_with(&dir, &request, Purpose::Inspection, limit).await?;
    match call.collect(0).await?.0 {
        Reply::WatchEvents { events, dropped } => Ok((events, dropped)),
        other => Err(agent_client::unexpected(other)),
    }
}

pub async fn stop(dirs: &Dirs, reference: &str, watcher_id: &str) -> Result<()> {
    let (_db, _record, dir) = started(dirs, reference, "watch")?;
    let request = Request::WatchStop {
        watcher_id: watcher_id.to_string(),
    };
    match agent_client::call_as(&dir, &request, Purpose::Inspection).await? {
        Reply::WatchStopped => Ok(()),
        other => Err(agent_client::unexpected(other)),
    }
}
