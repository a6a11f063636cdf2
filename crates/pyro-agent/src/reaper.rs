//! Child processes and PID 1's duty to reap orphans.
//!
//! One task reaps every exited child with `waitpid(-1)`. Children the agent spawned get their status
//! through a channel; orphans re-parented to PID 1 are simply reaped. The registry lock is held across
//! `spawn` and while reaping, so a child cannot be reaped before it is registered (std's own wait after a
//! failed exec relies on that too).

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::Mutex;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

static WAITING: Mutex<Option<HashMap<i32, oneshot::Sender<i32>>>> = Mutex::new(None);

/// Spawns `command` and returns the child with a receiver of its raw wait status.
pub fn spawn(command: &mut Command) -> io::Result<(Child, oneshot::Receiver<i32>)> {
    let mut waiting = WAITING.lock().unwrap_or_else(|poison| poison.into_inner());
    let child = command.spawn()?;
    let (tx, rx) = oneshot::channel();
    waiting
        .get_or_insert_with(HashMap::new)
        .insert(child.id() as i32, tx);
    Ok((child, rx))
}

/// Starts reaping children for ever. Call it inside the runtime before the first spawn.
pub fn start() -> io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap_exited();
            sigchld.recv().await;
        }
    });
    Ok(())
}

fn reap_exited() {
    loop {
        let mut waiting = WAITING.lock().unwrap_or_else(|poison| poison.into_inner());
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(tx) = waiting.get_or_insert_with(HashMap::new).remove(&pid) {
            let _ = tx.send(status);
        }
    }
}
