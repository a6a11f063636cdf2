//! `pyro workspace disk export|list|read`: a stopped workspace's disk, read without booting it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use pyro_core::workspace;
use pyro_core::Dirs;

use crate::workspace_cmd::{print_listing, print_read, say, show, Json, ListArgs, ReadArgs};

#[derive(Subcommand)]
pub enum DiskCommand {
    /// Copy a stopped workspace's whole disk to a new host file, as a raw ext4 image (sparse)
    #[command(
        after_help = "The image is the VM's own disk: /workspace is `workspace/` in it, and every change \
                      made outside /workspace is under `root/upper/`. Open it with e2fsprogs' `debugfs -R \
                      'ls -l /workspace' FILE`, or mount it read-only on a machine of your own."
    )]
    Export {
        /// Workspace id or name
        workspace: String,
        /// Host path to create (must not exist)
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        json: Json,
    },
    /// List a directory of a stopped workspace (default /workspace) from its disk
    List(ListArgs),
    /// Print a text file of a stopped workspace from its disk
    Read(ReadArgs),
}

impl DiskCommand {
    pub fn json(&self) -> bool {
        match self {
            DiskCommand::Export { json, .. }
            | DiskCommand::List(ListArgs { json, .. })
            | DiskCommand::Read(ReadArgs { json, .. }) => json.json,
        }
    }
}

pub async fn dispatch(
    dirs: &Dirs,
    command: DiskCommand,
    json: bool,
) -> pyro_core::Result<ExitCode> {
    match command {
        DiskCommand::Export {
            workspace, output, ..
        } => {
            let result = workspace::disk_export(dirs, &workspace, &output).await?;
            show(&result, json, |r| {
                say(format!(
                    "[workspace-disk-export] workspace_id={} output_path={} disk_format={} size_bytes={} bytes_written={}",
                    r.workspace_id, r.output_path, r.disk_format, r.size_bytes, r.bytes_written
                ));
            });
        }
        DiskCommand::List(ListArgs {
            workspace,
            path,
            recursive,
            ..
        }) => {
            let result = workspace::disk_list(dirs, &workspace, &path, recursive).await?;
            show(&result, json, |r| print_listing(&r.entries, r.truncated));
        }
        DiskCommand::Read(ReadArgs {
            workspace,
            path,
            max_bytes,
            offset,
            content_only,
            ..
        }) => {
            let result = workspace::disk_read(dirs, &workspace, &path, offset, max_bytes).await?;
            show(&result, json, |r| {
                print_read("workspace-disk-read", &r.read, content_only);
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
