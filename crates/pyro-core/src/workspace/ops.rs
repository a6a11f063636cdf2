//! Operations inside a started workspace: exec, file list/read/write, sync push, export, logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pyro_proto::{
    ArtifactType, Command, ExecRequest, ExecResult, FileEntry, FileWrite, Reply, Request,
};
use serde::{Deserialize, Serialize};

use super::archive::{self, Source};
use super::extract::{self, Shape, SkippedLink};
use super::journal::{
    self, ExecParams, ExecRecord, ExportParams, FileWriteParams, FileWriteRecord, Operation,
    SyncParams,
};
use super::lifecycle::{self, now_ms, vm_dir, workspace_dir};
use super::model::JournalEntry;
use super::store::{self, Record};
use super::validate;
use crate::agent_client::{self, AgentCall};
use crate::db::Db;
use crate::vm::{self, OutputSink};
use crate::vocab::{ExecutionMode, SeedMode};
use crate::{Dirs, Error, Result};

/// Bytes of each output stream kept in a result and in the journal.
pub const OUTPUT_CAP_BYTES: u64 = 1 << 20;
/// The default and the largest read.
pub const DEFAULT_READ_BYTES: u64 = 64 << 10;
pub const MAX_READ_BYTES: u64 = 16 << 20;
/// The largest single write or patched file.
pub const MAX_WRITE_BYTES: u64 = 16 << 20;
/// Entries a listing returns at most.
pub const MAX_LIST_ENTRIES: u32 = 10_000;

/// Opens the database and finds a started workspace, or says why it cannot be used.
pub(crate) fn started(
    dirs: &Dirs,
    reference: &str,
    operation: &str,
) -> Result<(Db, Record, PathBuf)> {
    let db = Db::open(dirs)?;
    let record = lifecycle::find(dirs, &db, reference)?;
    lifecycle::require_started(&record, operation)?;
    let dir = vm_dir(dirs, &record.id);
    Ok((db, record, dir))
}

/// What to run: an argv (no shell) or a string for `/bin/sh -lc`.
#[derive(Debug, Clone)]
pub enum ExecCommand {
    Argv(Vec<String>),
    Shell(String),
}

impl ExecCommand {
    /// The command as one string (an argv shell-quoted), the argv when it is one, and the request form.
    pub(crate) fn to_wire(&self) -> Result<(String, Option<Vec<String>>, Command)> {
        Ok(match self {
            ExecCommand::Argv(argv) if argv.is_empty() => {
                return Err(Error::invalid("a command is required"))
            }
            ExecCommand::Argv(argv) => (
                shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" ")),
                Some(argv.clone()),
                Command::Argv(argv.clone()),
            ),
            ExecCommand::Shell(script) if script.trim().is_empty() => {
                return Err(Error::invalid("command must not be empty"))
            }
            ExecCommand::Shell(script) => (script.clone(), None, Command::Shell(script.clone())),
        })
    }
}

#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub command: ExecCommand,
    /// Default `/workspace`; a relative path is taken under it.
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Secrets to expose to this command: secret name → variable name.
    pub secret_env: BTreeMap<String, String>,
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceExecResult {
    pub workspace_id: String,
    pub sequence: u64,
    pub cwd: String,
    pub command: String,
    pub argv: Option<Vec<String>>,
    #[serde(flatten)]
    pub result: ExecResult,
    pub execution_mode: ExecutionMode,
}

/// `env` plus the secrets `secret_env` asks for; a variable set both ways is an error.
pub(crate) fn with_secrets(
    wdir: &std::path::Path,
    workspace_id: &str,
    env: &BTreeMap<String, String>,
    secret_env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let secrets = super::secrets::environment(wdir, workspace_id, secret_env)?;
    let mut all = env.clone();
    for (variable, value) in secrets {
        if all.insert(variable.clone(), value).is_some() {
            return Err(Error::invalid(format!(
                "{variable} is set both by env and by secret_env"
            )));
        }
    }
    Ok(all)
}

pub(crate) fn resolve_cwd(cwd: Option<&str>) -> Result<String> {
    match cwd {
        None => Ok(validate::WORKSPACE_ROOT.to_string()),
        Some(cwd) if cwd.starts_with('/') => Ok(cwd.to_string()),
        Some(cwd) => validate::workspace_path(cwd),
    }
}

pub async fn exec(
    dirs: &Dirs,
    reference: &str,
    options: &ExecOptions,
    on_output: OutputSink<'_>,
) -> Result<WorkspaceExecResult> {
    let (command, argv, wire) = options.command.to_wire()?;
    crate::limits::check(
        "timeout_seconds",
        options.timeout_seconds,
        &crate::limits::TIMEOUT_SECONDS,
    )?;
    crate::run::validate_env(&options.env)?;
    let cwd = resolve_cwd(options.cwd.as_deref())?;
    let (mut db, record, dir) = started(dirs, reference, "exec")?;
    let wdir = workspace_dir(dirs, &record.id);
    let env = with_secrets(&wdir, &record.id, &options.env, &options.secret_env)?;
    let redactor = super::secrets::Redactor::for_workspace(&wdir)?;
    let command = redactor.text(&command);
    let argv = argv.map(|argv| argv.iter().map(|a| redactor.text(a)).collect());
    let request = ExecRequest {
        command: wire,
        cwd: cwd.clone(),
        env: env.clone(),
        timeout_ms: options.timeout_seconds.saturating_mul(1000),
        output_cap_bytes: OUTPUT_CAP_BYTES,
        stream_output: true,
    };
    let timer = journal::Timer::start();
    let mut result = if redactor.is_empty() {
        vm::exec(&dir, request, on_output).await?
    } else {
        // What streams out is redacted as it comes, a secret split across chunks included.
        let mut out = super::secrets::Stream::new(&redactor);
        let mut err = super::secrets::Stream::new(&redactor);
        let mut sink = |stream: pyro_proto::OutputStream, chunk: &[u8]| {
            let shown = match stream {
                pyro_proto::OutputStream::Stdout => out.push(chunk),
                pyro_proto::OutputStream::Stderr => err.push(chunk),
            };
            on_output(stream, &shown);
        };
        let result = vm::exec(&dir, request, &mut sink).await?;
        on_output(pyro_proto::OutputStream::Stdout, &out.finish());
        on_output(pyro_proto::OutputStream::Stderr, &err.finish());
        result
    };
    result.stdout = redactor.capped(&result.stdout);
    result.stderr = redactor.capped(&result.stderr);
    let operation = Operation::Exec {
        params: ExecParams {
            command: command.clone(),
            argv: argv.clone(),
            cwd: cwd.clone(),
            timeout_seconds: options.timeout_seconds,
            env_keys: env.keys().cloned().collect(),
        },
        result: ExecRecord {
            exit_code: result.exit_code.into(),
            signal: result.signal,
            timed_out: result.timed_out,
            stdout_bytes: result.stdout_bytes,
            stderr_bytes: result.stderr_bytes,
            stdout_truncated: result.stdout_truncated,
            stderr_truncated: result.stderr_truncated,
            guest_duration_ms: result.duration_ms,
        },
    };
    let sequence = timer.record(&mut db, &record.id, result.exit_code == 0, &operation)?;
    journal::save_output(
        &workspace_dir(dirs, &record.id),
        sequence,
        &result.stdout,
        &result.stderr,
    )?;
    Ok(WorkspaceExecResult {
        workspace_id: record.id,
        sequence,
        cwd,
        command,
        argv,
        result,
        execution_mode: ExecutionMode::Guest,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ListedEntry {
    pub path: String,
    pub artifact_type: ArtifactType,
    pub size_bytes: u64,
    pub mode: String,
    pub link_target: Option<String>,
}

impl From<FileEntry> for ListedEntry {
    fn from(entry: FileEntry) -> ListedEntry {
        ListedEntry {
            path: entry.path,
            artifact_type: entry.artifact_type,
            size_bytes: entry.size_bytes,
            mode: format!("{:04o}", entry.mode),
            link_target: entry.link_target,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FileListResult {
    pub workspace_id: String,
    pub path: String,
    pub recursive: bool,
    pub entries: Vec<ListedEntry>,
    pub truncated: bool,
    pub execution_mode: ExecutionMode,
}

pub async fn file_list(
    dirs: &Dirs,
    reference: &str,
    path: &str,
    recursive: bool,
) -> Result<FileListResult> {
    let path = validate::workspace_path(path)?;
    let (db, record, dir) = started(dirs, reference, "file list")?;
    let request = Request::ListFiles {
        path: path.clone(),
        recursive,
        max_entries: MAX_LIST_ENTRIES,
    };
    let list = match agent_client::call(&dir, &request).await? {
        Reply::Files(list) => list,
        other => return Err(agent_client::unexpected(other)),
    };
    store::touch(db.conn(), &record.id, now_ms())?;
    let entries: Vec<ListedEntry> = list
        .entries
        .into_iter()
        .take(MAX_LIST_ENTRIES as usize)
        .map(ListedEntry::from)
        .collect();
    Ok(FileListResult {
        workspace_id: record.id,
        path,
        recursive,
        entries,
        truncated: list.truncated,
        execution_mode: ExecutionMode::Guest,
    })
}

/// What a text read returned (`file read`, `disk read`).
#[derive(Debug, Clone, Serialize)]
pub struct TextRead {
    pub path: String,
    pub size_bytes: u64,
    pub offset: u64,
    pub max_bytes: u64,
    pub content: String,
    /// The file continues past what was returned.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReadResult {
    pub workspace_id: String,
    #[serde(flatten)]
    pub read: TextRead,
    pub execution_mode: ExecutionMode,
}

pub async fn file_read(
    dirs: &Dirs,
    reference: &str,
    path: &str,
    offset: u64,
    max_bytes: Option<u64>,
) -> Result<FileReadResult> {
    let path = validate::workspace_path(path)?;
    let validated = path.clone();
    let max_bytes = read_limit(max_bytes)?;
    let (db, record, dir) = started(dirs, reference, "file read")?;
    let request = Request::ReadFile {
        path: path.clone(),
        offset,
        max_bytes,
    };
    let (reply, bytes) = AgentCall::start(&dir, &request)
        .await?
        .collect(max_bytes)
        .await?;
    let info = match reply {
        Reply::FileRead(info) => info,
        other => return Err(agent_client::unexpected(other)),
    };
    store::touch(db.conn(), &record.id, now_ms())?;
    let read = TextRead::of(bytes, path, info.size_bytes, offset, max_bytes).map_err(|e| {
        e.with_hint("copy it to the host instead")
            .with_next(crate::Next::WorkspaceExport {
                workspace_id: record.id.clone(),
                path: validated.clone(),
            })
    })?;
    Ok(FileReadResult {
        workspace_id: record.id,
        read,
        execution_mode: ExecutionMode::Guest,
    })
}

/// `max_bytes` of a read, checked: [`DEFAULT_READ_BYTES`] when not given.
pub(crate) fn read_limit(max_bytes: Option<u64>) -> Result<u64> {
    let max_bytes = max_bytes.unwrap_or(DEFAULT_READ_BYTES);
    if max_bytes == 0 || max_bytes > MAX_READ_BYTES {
        return Err(Error::invalid(format!(
            "max_bytes must be between 1 and {MAX_READ_BYTES}"
        )));
    }
    Ok(max_bytes)
}

impl TextRead {
    /// The text of `bytes` read from `path` (of `size` bytes) at `offset`. A cut that splits a
    /// character leaves its bytes for the next read; bytes that are not text are an error.
    pub(crate) fn of(
        mut bytes: Vec<u8>,
        path: String,
        size: u64,
        offset: u64,
        max_bytes: u64,
    ) -> Result<TextRead> {
        let truncated = offset + (bytes.len() as u64) < size;
        if truncated {
            let cut = match std::str::from_utf8(&bytes) {
                Err(err) if err.error_len().is_none() => err.valid_up_to(),
                _ => bytes.len(),
            };
            bytes.truncate(cut);
        }
        if bytes.contains(&0) {
            return Err(binary(&path, size));
        }
        let content = String::from_utf8(bytes).map_err(|_| binary(&path, size))?;
        Ok(TextRead {
            path,
            size_bytes: size,
            offset,
            max_bytes,
            content,
            truncated,
        })
    }
}

fn binary(path: &str, size: u64) -> Error {
    Error::invalid(format!("{path} is a binary file ({size} bytes), not text"))
}

#[derive(Debug, Clone, Serialize)]
pub struct FileWriteResult {
    pub workspace_id: String,
    pub path: String,
    pub size_bytes: u64,
    pub bytes_written: u64,
    pub execution_mode: ExecutionMode,
}

/// Writes files and deletes paths in one agent request (all staged before any is put in place).
pub(crate) async fn write_files(
    dir: &Path,
    files: &[(String, Vec<u8>, Option<u32>)],
    deletes: &[String],
) -> Result<pyro_proto::Written> {
    let specs = files
        .iter()
        .map(|(path, content, mode)| FileWrite {
            path: path.clone(),
            size: content.len() as u64,
            mode: *mode,
        })
        .collect();
    let bytes = files
        .iter()
        .map(|(_, content, _)| content.len() as u64)
        .sum();
    let mut call = AgentCall::start_moving(
        dir,
        &Request::WriteFiles {
            files: specs,
            deletes: deletes.to_vec(),
        },
        bytes,
    )
    .await?;
    for (_, content, _) in files {
        call.send_payload(content).await?;
    }
    match call.collect(0).await?.0 {
        Reply::Written(written) => Ok(written),
        other => Err(agent_client::unexpected(other)),
    }
}

pub async fn file_write(
    dirs: &Dirs,
    reference: &str,
    path: &str,
    text: &str,
) -> Result<FileWriteResult> {
    file_write_bytes(dirs, reference, path, text.as_bytes()).await
}

/// Writes `content` (any bytes) to one file under `/workspace`, its parents made as needed.
pub async fn file_write_bytes(
    dirs: &Dirs,
    reference: &str,
    path: &str,
    content: &[u8],
) -> Result<FileWriteResult> {
    let path = validate::workspace_path(path)?;
    if path == validate::WORKSPACE_ROOT {
        return Err(Error::invalid(
            "cannot write to /workspace itself; give a file path under it",
        ));
    }
    if content.len() as u64 > MAX_WRITE_BYTES {
        return Err(Error::invalid(format!(
            "the content is {} bytes; writes are limited to {MAX_WRITE_BYTES}",
            content.len()
        )));
    }
    let (mut db, record, dir) = started(dirs, reference, "file write")?;
    let timer = journal::Timer::start();
    write_files(&dir, &[(path.clone(), content.to_vec(), None)], &[]).await?;
    let bytes = content.len() as u64;
    let operation = Operation::FileWrite {
        params: FileWriteParams { path: path.clone() },
        result: FileWriteRecord {
            bytes_written: bytes,
            lines: line_count(content),
        },
    };
    timer.record(&mut db, &record.id, true, &operation)?;
    Ok(FileWriteResult {
        workspace_id: record.id,
        path,
        size_bytes: bytes,
        bytes_written: bytes,
        execution_mode: ExecutionMode::Guest,
    })
}

/// Lines as `str::lines` counts them (a last line without its newline counts too).
fn line_count(content: &[u8]) -> u64 {
    if content.is_empty() {
        return 0;
    }
    let pieces = content.split(|b| *b == b'\n').count();
    (pieces - usize::from(content.ends_with(b"\n"))) as u64
}

/// Reads a whole file under `/workspace` as bytes, refusing one over `max_bytes`.
pub async fn file_read_bytes(
    dirs: &Dirs,
    reference: &str,
    path: &str,
    max_bytes: u64,
) -> Result<(String, Vec<u8>)> {
    let path = validate::workspace_path(path)?;
    let max_bytes = read_limit(Some(max_bytes))?;
    let (db, record, dir) = started(dirs, reference, "file read")?;
    let request = Request::ReadFile {
        path: path.clone(),
        offset: 0,
        max_bytes,
    };
    let (reply, bytes) = AgentCall::start(&dir, &request)
        .await?
        .collect(max_bytes)
        .await?;
    let info = match reply {
        Reply::FileRead(info) => info,
        other => return Err(agent_client::unexpected(other)),
    };
    if info.size_bytes > bytes.len() as u64 {
        return Err(Error::invalid(format!(
            "{path} is {} bytes; reads are limited to {max_bytes}",
            info.size_bytes
        ))
        .with_hint("copy it to the host instead")
        .with_next(crate::Next::WorkspaceExport {
            workspace_id: record.id.clone(),
            path: path.clone(),
        }));
    }
    store::touch(db.conn(), &record.id, now_ms())?;
    Ok((path, bytes))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncInfo {
    pub mode: SeedMode,
    pub source_path: String,
    pub destination: String,
    pub entry_count: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncResult {
    pub workspace_id: String,
    pub workspace_sync: SyncInfo,
    pub execution_mode: ExecutionMode,
}

/// Copies a host directory or archive into the workspace. The baseline does not change.
pub async fn sync_push(
    dirs: &Dirs,
    reference: &str,
    source: &Path,
    destination: Option<&str>,
) -> Result<SyncResult> {
    let destination = validate::workspace_path(destination.unwrap_or(validate::WORKSPACE_ROOT))?;
    // A sync is an explicit copy of what the user names: `.git` included.
    let kind = Source::classify(source, true)?;
    let (mut db, record, dir) = started(dirs, reference, "sync push")?;
    let timer = journal::Timer::start();
    let tmp = workspace_dir(dirs, &record.id)
        .join(format!(".sync-{}.tar", crate::fsutil::random_hex(4)?));
    let outcome = async {
        let counts = tokio::task::block_in_place(|| archive::build_tar(&kind, &tmp))?;
        let size = std::fs::metadata(&tmp)
            .map_err(|e| Error::io("inspect", &tmp, e))?
            .len();
        let mut call = AgentCall::start_moving(
            &dir,
            &Request::ExtractArchive {
                destination: destination.clone(),
            },
            size,
        )
        .await?;
        call.send_file(&tmp).await?;
        match call.collect(0).await?.0 {
            Reply::Extracted(_) => Ok(counts),
            other => Err(agent_client::unexpected(other)),
        }
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    let counts = outcome?;
    let info = SyncInfo {
        mode: kind.mode(),
        source_path: source.display().to_string(),
        destination,
        entry_count: counts.entry_count,
        bytes_written: counts.bytes_written,
    };
    let operation = Operation::SyncPush {
        params: SyncParams {
            source_path: info.source_path.clone(),
            destination: info.destination.clone(),
        },
        result: info.clone(),
    };
    timer.record(&mut db, &record.id, true, &operation)?;
    Ok(SyncResult {
        workspace_id: record.id,
        workspace_sync: info,
        execution_mode: ExecutionMode::Guest,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportResult {
    pub workspace_id: String,
    pub workspace_path: String,
    pub output_path: String,
    pub artifact_type: ArtifactType,
    pub entry_count: u64,
    pub bytes_written: u64,
    /// Symlinks that were not written because they would lead outside the export on the host.
    #[serde(default)]
    pub skipped_links: Vec<SkippedLink>,
    pub execution_mode: ExecutionMode,
}

/// Copies a file or directory out of the workspace to a host path that must not exist yet.
pub async fn export(
    dirs: &Dirs,
    reference: &str,
    path: &str,
    output: &Path,
) -> Result<ExportResult> {
    let path = validate::workspace_path(path)?;
    if output.as_os_str().is_empty() {
        return Err(Error::invalid("the output path must not be empty"));
    }
    let output = &std::path::absolute(output).map_err(|e| Error::io("resolve", output, e))?;
    if std::fs::symlink_metadata(output).is_ok() {
        return Err(Error::invalid(format!(
            "{} already exists; export never overwrites",
            output.display()
        ))
        .with_hint("choose a new output path"));
    }
    let (mut db, record, dir) = started(dirs, reference, "export")?;
    let timer = journal::Timer::start();
    let tmp = workspace_dir(dirs, &record.id)
        .join(format!(".export-{}.tar", crate::fsutil::random_hex(4)?));
    let outcome = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::io("create", &tmp, e))?;
        let request = Request::ExportArchive {
            path: path.clone(),
            max_bytes: archive::MAX_ARCHIVE_BYTES,
        };
        let reply = AgentCall::start_moving(&dir, &request, archive::MAX_ARCHIVE_BYTES)
            .await?
            .receive(&mut file, archive::MAX_ARCHIVE_BYTES)
            .await?;
        drop(file);
        let summary = match reply {
            Reply::Exported(summary) => summary,
            other => return Err(agent_client::unexpected(other)),
        };
        let created = match output.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => create_user_dirs(parent)?,
            None => Vec::new(),
        };
        // The guest's reply says what it sent; the host decides what it accepts: a file export must
        // carry exactly the one regular file that was asked for.
        let name = path.rsplit('/').next().unwrap_or_default();
        let shape = match summary.artifact_type {
            ArtifactType::Directory => Shape::Tree,
            _ => Shape::File {
                name: name.to_string(),
            },
        };
        let (tar, to) = (tmp.clone(), output.clone());
        let extracted = crate::blocking(move || extract::extract(&tar, &to, &shape)).await;
        if extracted.is_err() {
            // Only directories this export made, and only while empty: never anything else.
            for dir in created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        Ok((summary.artifact_type, extracted?))
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    let (artifact_type, extracted) = outcome?;
    let result = ExportResult {
        workspace_id: record.id.clone(),
        workspace_path: path,
        output_path: output.display().to_string(),
        artifact_type,
        entry_count: extracted.counts.entry_count,
        bytes_written: extracted.counts.bytes_written,
        skipped_links: extracted.skipped_links,
        execution_mode: ExecutionMode::Guest,
    };
    let operation = Operation::Export {
        params: ExportParams {
            path: result.workspace_path.clone(),
            output_path: result.output_path.clone(),
        },
        result: result.clone(),
    };
    timer.record(&mut db, &record.id, true, &operation)?;
    Ok(result)
}

/// Creates missing parents of an export with the modes the user's own tools would give them;
/// returns those it created, outermost first.
fn create_user_dirs(path: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_err())
        .collect();
    let mut created = Vec::new();
    for dir in missing.into_iter().rev() {
        std::fs::create_dir(dir).map_err(|e| Error::io("create directory", dir, e))?;
        created.push(dir.to_path_buf());
        let mode = 0o777 & !crate::fsutil::user_umask();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("set the mode of", dir, e))?;
    }
    Ok(created)
}

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    #[serde(flatten)]
    pub entry: JournalEntry,
    /// For commands: the kept output.
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogsResult {
    pub workspace_id: String,
    pub count: usize,
    pub entries: Vec<LogEntry>,
}

/// The whole journal, command output included. Reading pyro's records is not activity.
pub fn logs(dirs: &Dirs, reference: &str) -> Result<LogsResult> {
    let db = Db::open(dirs)?;
    let record = store::resolve(db.conn(), reference)?;
    let wdir = workspace_dir(dirs, &record.id);
    let entries: Vec<LogEntry> = journal::entries(&db, &record.id, None)?
        .into_iter()
        .map(|entry| {
            let is_exec = entry.recorded.kind() == journal::EXEC;
            LogEntry {
                stdout: is_exec.then(|| {
                    journal::load_output(&wdir, entry.sequence, "stdout").unwrap_or_default()
                }),
                stderr: is_exec.then(|| {
                    journal::load_output(&wdir, entry.sequence, "stderr").unwrap_or_default()
                }),
                entry,
            }
        })
        .collect();
    Ok(LogsResult {
        workspace_id: record.id,
        count: entries.len(),
        entries,
    })
}
