//! `pyro workspace snapshot create|list|delete`: named snapshots of a workspace's whole disk.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use pyro_core::workspace::snapshots::{self, Snapshot, SnapshotKind};
use pyro_core::Dirs;

use crate::workspace_cmd::{print, say, show, Target};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot the workspace's whole disk under a name (it keeps running)
    #[command(after_help = "Go back to it with `pyro workspace reset WS --snapshot NAME`.")]
    Create(SnapshotTarget),
    /// List a workspace's snapshots: the baseline, then named ones, newest first
    List(Target),
    /// Delete a named snapshot (the baseline stays)
    Delete(SnapshotTarget),
}

impl SnapshotCommand {
    pub fn json(&self) -> bool {
        match self {
            SnapshotCommand::Create(a) | SnapshotCommand::Delete(a) => a.json,
            SnapshotCommand::List(a) => a.json.json,
        }
    }
}

#[derive(Args)]
pub struct SnapshotTarget {
    /// Workspace id or name
    workspace: String,
    /// The snapshot's name (letters, digits, '.', '_', '-'; not `baseline`)
    name: String,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
}

fn line(s: &Snapshot) -> String {
    let kind = match s.kind {
        SnapshotKind::Baseline => "baseline",
        SnapshotKind::Named => "named",
    };
    let when = utc_time(s.created_at);
    let deletable = if s.deletable { "yes" } else { "no" };
    format!(
        "{:<24} [{kind}] created={when} deletable={deletable}\n",
        s.snapshot_name
    )
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_time(seconds: f64) -> String {
    let secs = seconds.max(0.0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

pub async fn dispatch(
    dirs: &Dirs,
    command: SnapshotCommand,
    json: bool,
) -> pyro_core::Result<ExitCode> {
    match command {
        SnapshotCommand::Create(args) => {
            let created = snapshots::create(dirs, &args.workspace, &args.name).await?;
            show(&created, json, |c| {
                print(line(&c.snapshot));
                say(format!(
                    "go back to it with: pyro workspace reset {} --snapshot {}",
                    c.workspace_id, c.snapshot.snapshot_name
                ));
            });
        }
        SnapshotCommand::List(args) => {
            let list = snapshots::list(dirs, &args.workspace)?;
            show(&list, json, |l| {
                print(l.snapshots.iter().map(line).collect());
            });
        }
        SnapshotCommand::Delete(args) => {
            let deleted = snapshots::delete(dirs, &args.workspace, &args.name).await?;
            show(&deleted, json, |d| {
                say(format!("Deleted snapshot {}", d.snapshot_name));
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(super::utc_time(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc_time(1_796_212_800.0), "2026-12-02 12:00:00 UTC");
        assert_eq!(super::utc_time(951_825_600.0), "2000-02-29 12:00:00 UTC");
    }
}
