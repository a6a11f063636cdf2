//! `workspace patch apply`: unified diffs (git's extended headers included), all or nothing.
//!
//! Every file the patch touches is read and every hunk applied in memory first; only when all of them
//! apply are the results written, in one request that stages every file before any is put in place.

use std::collections::BTreeMap;

use pyro_proto::{Reply, Request};
use serde::{Deserialize, Serialize};

use super::journal;
use super::ops::{started, write_files, MAX_WRITE_BYTES};
use super::validate;
use crate::agent_client::{self, AgentCall};
use crate::vocab::{ChangeStatus, ExecutionMode};
use crate::{Dirs, Error, ErrorKind, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hunk {
    old_start: usize,
    old_len: usize,
    new_start: usize,
    new_len: usize,
    /// (' ' | '-' | '+', line without its newline)
    lines: Vec<(char, String)>,
    old_missing_newline: bool,
    new_missing_newline: bool,
    header: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FilePatch {
    old_path: Option<String>,
    new_path: Option<String>,
    new_mode: Option<u32>,
    new_file: bool,
    deleted_file: bool,
    hunks: Vec<Hunk>,
}

fn parse_error(line_no: usize, message: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "the patch is malformed at line {line_no}: {message}"
    ))
}

/// `a/src/x.rs` → `/workspace/src/x.rs`; `/dev/null` → None.
fn label_path(label: &str, line_no: usize) -> Result<Option<String>> {
    let label = label.split('\t').next().unwrap_or("").trim_end();
    if label == "/dev/null" {
        return Ok(None);
    }
    if label.starts_with('"') {
        return Err(parse_error(line_no, "quoted file names are not supported"));
    }
    let stripped = label
        .strip_prefix("a/")
        .or_else(|| label.strip_prefix("b/"))
        .unwrap_or(label);
    validate::workspace_path(stripped)
        .map(Some)
        .map_err(|e| parse_error(line_no, e))
}

fn parse_mode(text: &str, line_no: usize) -> Result<u32> {
    u32::from_str_radix(text.trim(), 8)
        .map(|m| m & 0o777)
        .map_err(|_| parse_error(line_no, format!("bad file mode '{}'", text.trim())))
}

fn parse_range(text: &str, line_no: usize) -> Result<(usize, usize)> {
    let (start, len) = match text.split_once(',') {
        Some((s, l)) => (s, l),
        None => (text, "1"),
    };
    let parse = |v: &str| {
        v.parse::<usize>()
            .map_err(|_| parse_error(line_no, format!("bad hunk range '{text}'")))
    };
    Ok((parse(start)?, parse(len)?))
}

fn parse(text: &str) -> Result<Vec<FilePatch>> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut files: Vec<FilePatch> = Vec::new();
    let mut current: Option<FilePatch> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].strip_suffix('\r').unwrap_or(lines[i]);
        let line_no = i + 1;
        if let Some(rest) = line.strip_prefix("diff --git ") {
            if let Some(done) = current.take() {
                files.push(done);
            }
            let mut patch = FilePatch::default();
            if let Some((a, b)) = rest.split_once(" b/") {
                patch.old_path = label_path(a, line_no)?;
                patch.new_path = label_path(&format!("b/{b}"), line_no)?;
            }
            current = Some(patch);
        } else if line.starts_with("GIT binary patch") || line.starts_with("Binary files ") {
            return Err(parse_error(
                line_no,
                "binary patches are not supported; copy binary files with sync push",
            ));
        } else if line.starts_with("copy from ") || line.starts_with("copy to ") {
            return Err(parse_error(line_no, "copy patches are not supported"));
        } else if let Some(mode) = line.strip_prefix("new file mode ") {
            let patch = current.get_or_insert_with(FilePatch::default);
            patch.new_file = true;
            patch.new_mode = Some(parse_mode(mode, line_no)?);
        } else if line.starts_with("deleted file mode ") {
            current.get_or_insert_with(FilePatch::default).deleted_file = true;
        } else if let Some(mode) = line.strip_prefix("new mode ") {
            current.get_or_insert_with(FilePatch::default).new_mode =
                Some(parse_mode(mode, line_no)?);
        } else if let Some(path) = line.strip_prefix("rename from ") {
            current.get_or_insert_with(FilePatch::default).old_path = label_path(path, line_no)?;
        } else if let Some(path) = line.strip_prefix("rename to ") {
            current.get_or_insert_with(FilePatch::default).new_path = label_path(path, line_no)?;
        } else if line.starts_with("--- ")
            && lines
                .get(i + 1)
                .is_some_and(|next| next.starts_with("+++ "))
        {
            let has_hunks = current.as_ref().is_some_and(|p| !p.hunks.is_empty());
            if current.is_none() || has_hunks {
                if let Some(done) = current.take() {
                    files.push(done);
                }
                current = Some(FilePatch::default());
            }
            let patch = current.get_or_insert_with(FilePatch::default);
            patch.old_path = label_path(&line[4..], line_no)?;
            let next = lines[i + 1].strip_suffix('\r').unwrap_or(lines[i + 1]);
            patch.new_path = label_path(&next[4..], line_no + 1)?;
            if patch.old_path.is_none() {
                patch.new_file = true;
            }
            if patch.new_path.is_none() {
                patch.deleted_file = true;
            }
            i += 1;
        } else if line.starts_with("@@ ") {
            let patch = current
                .as_mut()
                .ok_or_else(|| parse_error(line_no, "a hunk before any file header"))?;
            let (hunk, consumed) = parse_hunk(&lines, i)?;
            patch.hunks.push(hunk);
            i += consumed;
            continue;
        }
        i += 1;
    }
    if let Some(done) = current.take() {
        files.push(done);
    }
    files.retain(|f| f.old_path.is_some() || f.new_path.is_some());
    if files.is_empty() {
        return Err(Error::invalid("the patch changes no file")
            .with_hint("pass a unified diff, as `git diff` or a workspace's diff prints"));
    }
    Ok(files)
}

fn parse_hunk(lines: &[&str], start: usize) -> Result<(Hunk, usize)> {
    let header = lines[start].strip_suffix('\r').unwrap_or(lines[start]);
    let line_no = start + 1;
    let inner = header
        .strip_prefix("@@ -")
        .and_then(|rest| rest.split_once(" @@").map(|(ranges, _)| ranges))
        .ok_or_else(|| parse_error(line_no, format!("bad hunk header '{header}'")))?;
    let (old, new) = inner
        .split_once(" +")
        .ok_or_else(|| parse_error(line_no, format!("bad hunk header '{header}'")))?;
    let (old_start, old_len) = parse_range(old, line_no)?;
    let (new_start, new_len) = parse_range(new, line_no)?;
    let mut hunk = Hunk {
        old_start,
        old_len,
        new_start,
        new_len,
        lines: Vec::new(),
        old_missing_newline: false,
        new_missing_newline: false,
        header: header.to_string(),
    };
    let (mut old_seen, mut new_seen) = (0, 0);
    let mut i = start + 1;
    while old_seen < old_len
        || new_seen < new_len
        || lines.get(i).is_some_and(|l| l.starts_with('\\'))
    {
        let Some(raw) = lines.get(i) else {
            return Err(parse_error(i, format!("hunk '{header}' ends early")));
        };
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with('\\') {
            match hunk.lines.last() {
                Some(('-', _)) => hunk.old_missing_newline = true,
                Some(('+', _)) => hunk.new_missing_newline = true,
                Some(_) => {
                    hunk.old_missing_newline = true;
                    hunk.new_missing_newline = true;
                }
                None => return Err(parse_error(i + 1, "a no-newline marker before any line")),
            }
            i += 1;
            continue;
        }
        let (tag, text) = match line.chars().next() {
            Some(tag @ (' ' | '-' | '+')) => (tag, line[1..].to_string()),
            // Some tools strip the space of an empty context line.
            None => (' ', String::new()),
            Some(other) => {
                return Err(parse_error(
                    i + 1,
                    format!("unexpected '{other}' in hunk '{header}'"),
                ))
            }
        };
        match tag {
            ' ' => {
                old_seen += 1;
                new_seen += 1;
            }
            '-' => old_seen += 1,
            _ => new_seen += 1,
        }
        hunk.lines.push((tag, text));
        i += 1;
    }
    if old_seen != old_len || new_seen != new_len {
        return Err(parse_error(
            line_no,
            format!("hunk '{header}' has the wrong number of lines"),
        ));
    }
    Ok((hunk, i - start))
}

/// A file's text as lines, and whether it ends with a newline.
fn split_lines(text: &str) -> (Vec<String>, bool) {
    if text.is_empty() {
        return (Vec::new(), true);
    }
    let ends_with_newline = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    (
        body.split('\n').map(str::to_string).collect(),
        ends_with_newline,
    )
}

/// Applies the hunks to `text`; hunks must match exactly, at their line or nearby.
fn apply_hunks(path: &str, text: &str, hunks: &[Hunk]) -> Result<String> {
    let (mut lines, mut ends_with_newline) = split_lines(text);
    let mut offset: isize = 0;
    for (index, hunk) in hunks.iter().enumerate() {
        let old: Vec<&str> = hunk
            .lines
            .iter()
            .filter(|(t, _)| *t != '+')
            .map(|(_, l)| l.as_str())
            .collect();
        let new: Vec<String> = hunk
            .lines
            .iter()
            .filter(|(t, _)| *t != '-')
            .map(|(_, l)| l.clone())
            .collect();
        let expected = if hunk.old_len == 0 {
            hunk.old_start
        } else {
            hunk.old_start.saturating_sub(1)
        };
        let expected = (expected as isize + offset).max(0) as usize;
        let fits = |at: usize| {
            at + old.len() <= lines.len()
                && lines[at..at + old.len()]
                    .iter()
                    .zip(&old)
                    .all(|(a, b)| a == b)
        };
        let position = (0..=lines.len())
            .flat_map(|d| [expected.checked_add(d), expected.checked_sub(d)])
            .flatten()
            .take(2 * (lines.len() + 1))
            .find(|&at| fits(at))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "patch does not apply to {path}: hunk {} ({}) does not match the file",
                        index + 1,
                        hunk.header
                    ),
                )
                .with_hint("nothing was changed; read the file again and regenerate the patch")
            })?;
        let touches_end = position + old.len() == lines.len();
        lines.splice(position..position + old.len(), new.iter().cloned());
        offset += new.len() as isize - old.len() as isize;
        if touches_end {
            ends_with_newline = !hunk.new_missing_newline;
        }
    }
    let mut out = lines.join("\n");
    if !lines.is_empty() && ends_with_newline {
        out.push('\n');
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchEntry {
    pub path: String,
    /// Added, modified, deleted or renamed.
    pub status: ChangeStatus,
    pub lines_added: u64,
    pub lines_removed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PatchSummary {
    pub total: u64,
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub renamed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchResult {
    pub workspace_id: String,
    pub changed: bool,
    pub summary: PatchSummary,
    pub entries: Vec<PatchEntry>,
    pub execution_mode: ExecutionMode,
}

/// Reads a workspace file as text, or `None` if it does not exist.
async fn read_text(dir: &std::path::Path, path: &str) -> Result<Option<(String, u32)>> {
    let list = match agent_client::call(
        dir,
        &Request::ListFiles {
            path: path.to_string(),
            recursive: false,
            max_entries: 1,
        },
    )
    .await
    {
        Ok(Reply::Files(list)) => list,
        Ok(other) => return Err(agent_client::unexpected(other)),
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let Some(entry) = list.entries.first() else {
        return Ok(None);
    };
    if entry.artifact_type != pyro_proto::ArtifactType::File {
        return Err(Error::invalid(format!(
            "{path} is not a regular file; patches only change text files"
        )));
    }
    if entry.size_bytes > MAX_WRITE_BYTES {
        return Err(Error::invalid(format!(
            "{path} is larger than {MAX_WRITE_BYTES} bytes; patches are limited to that"
        )));
    }
    let request = Request::ReadFile {
        path: path.to_string(),
        offset: 0,
        max_bytes: MAX_WRITE_BYTES,
    };
    let (reply, bytes) = AgentCall::start(dir, &request)
        .await?
        .collect(MAX_WRITE_BYTES)
        .await?;
    if !matches!(reply, Reply::FileRead(_)) {
        return Err(agent_client::unexpected(reply));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::invalid(format!(
            "{path} is not UTF-8 text; patches only change text files"
        ))
    })?;
    Ok(Some((text, entry.mode)))
}

pub async fn apply(dirs: &Dirs, reference: &str, patch_text: &str) -> Result<PatchResult> {
    if patch_text.len() as u64 > MAX_WRITE_BYTES {
        return Err(Error::invalid(format!(
            "the patch is larger than {MAX_WRITE_BYTES} bytes"
        )));
    }
    let files = parse(patch_text)?;
    let mut seen = BTreeMap::new();
    for file in &files {
        let mut paths: Vec<&String> = [&file.old_path, &file.new_path]
            .into_iter()
            .flatten()
            .collect();
        paths.dedup();
        for path in paths {
            if seen.insert(path.clone(), ()).is_some() {
                return Err(Error::invalid(format!(
                    "the patch touches {path} more than once"
                )));
            }
        }
    }
    let (mut db, record, dir) = started(dirs, reference, "patch apply")?;
    let timer = journal::Timer::start();
    let mut writes: Vec<(String, Vec<u8>, Option<u32>)> = Vec::new();
    let mut deletes = Vec::new();
    let mut entries = Vec::new();
    let mut summary = PatchSummary::default();
    for file in &files {
        let source = if file.new_file {
            None
        } else {
            file.old_path.clone()
        };
        let current = match &source {
            Some(path) => Some(read_text(&dir, path).await?.ok_or_else(|| {
                Error::invalid(format!("patch does not apply: {path} does not exist"))
                    .with_hint("nothing was changed")
            })?),
            None => None,
        };
        if file.new_file {
            if let Some(path) = &file.new_path {
                if read_text(&dir, path).await?.is_some() {
                    return Err(Error::invalid(format!(
                        "patch does not apply: {path} already exists"
                    ))
                    .with_hint("nothing was changed"));
                }
            }
        }
        let (text, mode) = current.clone().unwrap_or_default();
        let path_for_errors = file
            .new_path
            .clone()
            .or(file.old_path.clone())
            .unwrap_or_default();
        let result = apply_hunks(&path_for_errors, &text, &file.hunks)?;
        let lines_added = file
            .hunks
            .iter()
            .flat_map(|h| &h.lines)
            .filter(|(t, _)| *t == '+')
            .count() as u64;
        let lines_removed = file
            .hunks
            .iter()
            .flat_map(|h| &h.lines)
            .filter(|(t, _)| *t == '-')
            .count() as u64;
        let status = if file.deleted_file || file.new_path.is_none() {
            if !result.is_empty() {
                return Err(Error::invalid(format!(
                    "patch does not apply: deleting {path_for_errors} would leave content behind"
                )));
            }
            deletes.push(file.old_path.clone().unwrap_or_default());
            summary.deleted += 1;
            ChangeStatus::Deleted
        } else {
            let new_path = file.new_path.clone().unwrap_or_default();
            if result.len() as u64 > MAX_WRITE_BYTES {
                return Err(Error::invalid(format!(
                    "the patched {new_path} would exceed {MAX_WRITE_BYTES} bytes"
                )));
            }
            let mode = file.new_mode.or(current.as_ref().map(|_| mode));
            writes.push((new_path.clone(), result.into_bytes(), mode));
            match (&file.old_path, file.new_file) {
                (_, true) | (None, _) => {
                    summary.added += 1;
                    ChangeStatus::Added
                }
                (Some(old), false) if *old != new_path => {
                    deletes.push(old.clone());
                    summary.renamed += 1;
                    ChangeStatus::Renamed
                }
                _ => {
                    summary.modified += 1;
                    ChangeStatus::Modified
                }
            }
        };
        summary.total += 1;
        entries.push(PatchEntry {
            path: path_for_errors,
            status,
            lines_added,
            lines_removed,
        });
    }
    write_files(&dir, &writes, &deletes).await?;
    let result = PatchResult {
        workspace_id: record.id.clone(),
        changed: summary.total > 0,
        summary,
        entries,
        execution_mode: ExecutionMode::Guest,
    };
    let operation = journal::Operation::PatchApply {
        params: journal::PatchParams {
            files: result.entries.iter().map(|e| e.path.clone()).collect(),
            bytes: patch_text.len() as u64,
        },
        result: result.clone(),
    };
    timer.record(&mut db, &record.id, true, &operation)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_headers_for_new_deleted_and_renamed_files() {
        let patch = "diff --git a/new.txt b/new.txt\nnew file mode 100755\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hi\n\
                     diff --git a/old.txt b/old.txt\ndeleted file mode 100644\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n\
                     diff --git a/a.txt b/b.txt\nsimilarity index 100%\nrename from a.txt\nrename to b.txt\n";
        let files = parse(patch).unwrap();
        assert_eq!(files.len(), 3);
        assert!(files[0].new_file && files[0].new_mode == Some(0o755));
        assert!(files[1].deleted_file);
        assert_eq!(files[2].old_path.as_deref(), Some("/workspace/a.txt"));
        assert_eq!(files[2].new_path.as_deref(), Some("/workspace/b.txt"));
    }

    #[test]
    fn hunks_apply_exactly_and_keep_the_final_newline_state() {
        let patch =
            "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n\\ No newline at end of file\n";
        let files = parse(patch).unwrap();
        assert_eq!(
            apply_hunks("f", "a\nb\nc", &files[0].hunks).unwrap(),
            "a\nB\nc"
        );
        let err = apply_hunks("f", "a\nx\nc", &files[0].hunks).unwrap_err();
        assert!(err.message().contains("hunk 1"), "{}", err.message());
    }

    #[test]
    fn hunks_find_their_place_when_lines_moved() {
        let patch = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n x\n-y\n+Y\n";
        let files = parse(patch).unwrap();
        assert_eq!(
            apply_hunks("f", "new\nx\ny\n", &files[0].hunks).unwrap(),
            "new\nx\nY\n"
        );
    }

    #[test]
    fn adding_a_final_newline() {
        let patch = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+a\n";
        let files = parse(patch).unwrap();
        assert_eq!(apply_hunks("f", "a", &files[0].hunks).unwrap(), "a\n");
    }

    #[test]
    fn paths_must_stay_in_the_workspace() {
        assert!(parse("--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n").is_err());
        assert!(parse("no patch here\n").is_err());
    }
}
