//! `workspace diff`: the live `/workspace` against the baseline, as entries and a unified patch that
//! `git apply` and `workspace patch apply` both accept. Binary files and symlinks are summarised.
//!
//! The guest sends a manifest (type, mode, size, sha256 per entry); only files that changed are read
//! back, and only text files up to a size limit get a patch.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use pyro_proto::archive_rules::member_path;
use pyro_proto::{ArtifactType, Manifest, ManifestEntry, Reply, Request};
use serde::Serialize;
use sha2::{Digest, Sha256};
use similar::{ChangeTag, TextDiff};

use super::lifecycle::{now_ms, workspace_dir, BASELINE};
use super::ops::started;
use super::store;
use super::validate::WORKSPACE_ROOT;
use crate::agent_client::{self, AgentCall, Purpose};
use crate::{fsutil, Dirs, Error, ErrorKind, Result};

/// Files larger than this are summarised, not patched.
pub const MAX_PATCH_FILE_BYTES: u64 = 1 << 20;
const MAX_MANIFEST_ENTRIES: u32 = 200_000;
/// The manifest of that many entries, with long names, fits in this.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiffEntry {
    /// Relative to `/workspace`.
    pub path: String,
    /// `added`, `modified`, `deleted`, `type_changed` or `mode_changed`.
    pub status: String,
    pub artifact_type: ArtifactType,
    /// Text changes are in the patch; binary, large and symlink changes are only listed.
    pub text: bool,
    pub lines_added: u64,
    pub lines_removed: u64,
    pub text_patch: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffSummary {
    pub total: u64,
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub type_changed: u64,
    pub mode_changed: u64,
    pub text_patched: u64,
    pub non_text: u64,
    pub lines_added: u64,
    pub lines_removed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffResult {
    pub workspace_id: String,
    /// What the diff is against: the baseline the workspace was created (and last reset) from.
    pub base: String,
    pub changed: bool,
    pub summary: DiffSummary,
    pub entries: Vec<DiffEntry>,
    pub patch: String,
    pub execution_mode: &'static str,
}

pub async fn diff(dirs: &Dirs, reference: &str) -> Result<DiffResult> {
    diff_as(dirs, reference, Purpose::Activity).await
}

/// The diff; with `Purpose::Inspection` (for `summary`) it is not activity.
pub async fn diff_as(dirs: &Dirs, reference: &str, purpose: Purpose) -> Result<DiffResult> {
    let (db, record, dir) = started(dirs, reference, "diff")?;
    let wdir = workspace_dir(dirs, &record.id);
    let baseline_path = wdir.join(BASELINE);
    let base = tokio::task::block_in_place(|| baseline_manifest(&wdir))?;
    let request = Request::Manifest {
        path: WORKSPACE_ROOT.into(),
        max_entries: MAX_MANIFEST_ENTRIES,
    };
    let (reply, payload) = AgentCall::start_as(&dir, &request, purpose)
        .await?
        .collect(MAX_MANIFEST_BYTES)
        .await?;
    let live = match reply {
        Reply::Manifest(manifest) => manifest,
        other => return Err(agent_client::unexpected(other)),
    };
    let entries: Vec<ManifestEntry> = serde_json::from_slice(&payload).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!("malformed manifest from the VM: {e}"),
        )
    })?;
    if live.truncated {
        return Err(Error::new(
            ErrorKind::Guest,
            format!(
                "/workspace holds more than {MAX_MANIFEST_ENTRIES} entries; diff refuses to guess"
            ),
        ));
    }
    let live: BTreeMap<String, ManifestEntry> =
        entries.into_iter().map(|e| (e.path.clone(), e)).collect();
    let changes = compare(&base, &live);

    // Contents for text patches: baseline side from the tar, live side from the guest.
    let wanted_base: BTreeSet<String> = changes
        .iter()
        .filter(|c| c.old.as_ref().is_some_and(is_small_file))
        .map(|c| c.path.clone())
        .collect();
    let old_contents = tokio::task::block_in_place(|| read_from_tar(&baseline_path, &wanted_base))?;
    let mut entries = Vec::new();
    let mut patch = String::new();
    let mut summary = DiffSummary::default();
    for change in changes {
        let old_text = change
            .old
            .as_ref()
            .filter(|e| is_small_file(e))
            .and_then(|_| old_contents.get(&change.path))
            .and_then(|b| text(b));
        let new_bytes = match &change.new {
            Some(entry) if is_small_file(entry) => {
                Some(read_live(&dir, &change.path, purpose).await?)
            }
            _ => None,
        };
        let new_text = new_bytes.as_deref().and_then(text);
        let entry = render(&change, old_text, new_text, &mut patch);
        summary.total += 1;
        match entry.status.as_str() {
            "added" => summary.added += 1,
            "modified" => summary.modified += 1,
            "deleted" => summary.deleted += 1,
            "type_changed" => summary.type_changed += 1,
            _ => summary.mode_changed += 1,
        }
        if entry.text {
            summary.text_patched += 1;
        } else if entry.status != "mode_changed" {
            summary.non_text += 1;
        }
        summary.lines_added += entry.lines_added;
        summary.lines_removed += entry.lines_removed;
        entries.push(entry);
    }
    if purpose == Purpose::Activity {
        store::touch(db.conn(), &record.id, now_ms())?;
    }
    Ok(DiffResult {
        workspace_id: record.id,
        base: "baseline".into(),
        changed: !entries.is_empty(),
        summary,
        entries,
        patch,
        execution_mode: "guest",
    })
}

struct Change {
    path: String,
    status: &'static str,
    old: Option<ManifestEntry>,
    new: Option<ManifestEntry>,
}

fn is_small_file(entry: &ManifestEntry) -> bool {
    entry.artifact_type == ArtifactType::File && entry.size_bytes <= MAX_PATCH_FILE_BYTES
}

fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Files and symlinks that differ; directories only when they replace or are replaced by something.
fn compare(
    base: &BTreeMap<String, ManifestEntry>,
    live: &BTreeMap<String, ManifestEntry>,
) -> Vec<Change> {
    let paths: BTreeSet<&String> = base.keys().chain(live.keys()).collect();
    let mut changes = Vec::new();
    for path in paths {
        let (old, new) = (base.get(path), live.get(path));
        let status = match (old, new) {
            (None, Some(n)) if n.artifact_type != ArtifactType::Directory => "added",
            (Some(o), None) if o.artifact_type != ArtifactType::Directory => "deleted",
            (Some(o), Some(n)) if o.artifact_type != n.artifact_type => "type_changed",
            (Some(o), Some(n)) if o.artifact_type == ArtifactType::File => {
                if o.sha256 != n.sha256 {
                    "modified"
                } else if (o.mode & 0o111 != 0) != (n.mode & 0o111 != 0) {
                    "mode_changed"
                } else {
                    continue;
                }
            }
            (Some(o), Some(n))
                if o.artifact_type == ArtifactType::Symlink && o.link_target != n.link_target =>
            {
                "modified"
            }
            _ => continue,
        };
        changes.push(Change {
            path: path.clone(),
            status,
            old: old.cloned(),
            new: new.cloned(),
        });
    }
    changes
}

/// git's file modes: executable or not.
fn git_mode(entry: &ManifestEntry) -> &'static str {
    if entry.mode & 0o111 != 0 {
        "100755"
    } else {
        "100644"
    }
}

/// Builds the entry and appends its part of the patch.
fn render(
    change: &Change,
    old_text: Option<&str>,
    new_text: Option<&str>,
    patch: &mut String,
) -> DiffEntry {
    let path = &change.path;
    let kind = change
        .new
        .as_ref()
        .or(change.old.as_ref())
        .map(|e| e.artifact_type)
        .unwrap_or(ArtifactType::Other);
    let mut entry = DiffEntry {
        path: path.clone(),
        status: change.status.to_string(),
        artifact_type: kind,
        text: false,
        lines_added: 0,
        lines_removed: 0,
        text_patch: None,
    };
    // A name git would have to quote (control characters, quotes, backslashes, spaces at the ends) is
    // listed but kept out of the patch, where it could pass for headers of another file.
    if path
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
        || path.trim() != path
    {
        return entry;
    }
    let both_files = |e: &Option<ManifestEntry>| {
        e.as_ref()
            .is_none_or(|e| e.artifact_type == ArtifactType::File)
    };
    if !both_files(&change.old) || !both_files(&change.new) || change.status == "type_changed" {
        return entry;
    }
    let mut header = format!("diff --git a/{path} b/{path}\n");
    let (old_label, new_label) = match (&change.old, &change.new) {
        (None, Some(new)) => {
            header.push_str(&format!("new file mode {}\n", git_mode(new)));
            ("/dev/null".to_string(), format!("b/{path}"))
        }
        (Some(old), None) => {
            header.push_str(&format!("deleted file mode {}\n", git_mode(old)));
            (format!("a/{path}"), "/dev/null".to_string())
        }
        (Some(old), Some(new)) => {
            if git_mode(old) != git_mode(new) {
                header.push_str(&format!(
                    "old mode {}\nnew mode {}\n",
                    git_mode(old),
                    git_mode(new)
                ));
            }
            (format!("a/{path}"), format!("b/{path}"))
        }
        (None, None) => return entry,
    };
    if change.status == "mode_changed" {
        entry.text = true;
        entry.text_patch = Some(header.clone());
        patch.push_str(&header);
        return entry;
    }
    let old = match (&change.old, old_text) {
        (None, _) => "",
        (Some(_), Some(text)) => text,
        (Some(_), None) => return entry,
    };
    let new = match (&change.new, new_text) {
        (None, _) => "",
        (Some(_), Some(text)) => text,
        (Some(_), None) => return entry,
    };
    let diff = TextDiff::from_lines(old, new);
    let mut body = String::new();
    let mut unified = diff.unified_diff();
    unified.context_radius(3).missing_newline_hint(true);
    for hunk in unified.iter_hunks() {
        for change in hunk.iter_changes() {
            match change.tag() {
                ChangeTag::Insert => entry.lines_added += 1,
                ChangeTag::Delete => entry.lines_removed += 1,
                ChangeTag::Equal => {}
            }
        }
        body.push_str(&hunk.to_string());
    }
    let text_patch = if body.is_empty() {
        header
    } else {
        format!("{header}--- {old_label}\n+++ {new_label}\n{body}")
    };
    entry.text = true;
    patch.push_str(&text_patch);
    entry.text_patch = Some(text_patch);
    entry
}

async fn read_live(dir: &Path, rel: &str, purpose: Purpose) -> Result<Vec<u8>> {
    let request = Request::ReadFile {
        path: format!("{WORKSPACE_ROOT}/{rel}"),
        offset: 0,
        max_bytes: MAX_PATCH_FILE_BYTES,
    };
    let (reply, bytes) = AgentCall::start_as(dir, &request, purpose)
        .await?
        .collect(MAX_PATCH_FILE_BYTES)
        .await?;
    match reply {
        Reply::FileRead(_) => Ok(bytes),
        other => Err(agent_client::unexpected(other)),
    }
}

/// The baseline's manifest, computed once from `baseline.tar` and cached beside it.
pub fn baseline_manifest(wdir: &Path) -> Result<BTreeMap<String, ManifestEntry>> {
    let cache = wdir.join("baseline.manifest.json");
    if let Ok(bytes) = std::fs::read(&cache) {
        if let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) {
            return Ok(manifest
                .entries
                .into_iter()
                .map(|e| (e.path.clone(), e))
                .collect());
        }
    }
    let tar_path = wdir.join(BASELINE);
    let mut archive = tar::Archive::new(BufReader::new(
        File::open(&tar_path).map_err(|e| Error::io("open", &tar_path, e))?,
    ));
    let bad = |e: std::io::Error| {
        Error::new(
            ErrorKind::Io,
            format!("the baseline archive is unreadable: {e}"),
        )
    };
    let mut entries = BTreeMap::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let Ok(path) = member_path(&entry.path().map_err(bad)?) else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let (artifact_type, sha256, link_target, size) = match entry.header().entry_type() {
            tar::EntryType::Directory => (ArtifactType::Directory, None, None, 0),
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|l| l.to_string_lossy().into_owned());
                (ArtifactType::Symlink, None, target, 0)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 256 << 10];
                let mut size = 0u64;
                loop {
                    let n = entry.read(&mut buf).map_err(bad)?;
                    if n == 0 {
                        break;
                    }
                    size += n as u64;
                    hasher.update(&buf[..n]);
                }
                (
                    ArtifactType::File,
                    Some(hex::encode(hasher.finalize())),
                    None,
                    size,
                )
            }
            _ => continue,
        };
        // Parents an archive leaves implicit are directories too.
        let mut parent = path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            entries
                .entry(dir.to_string())
                .or_insert_with(|| ManifestEntry {
                    path: dir.to_string(),
                    artifact_type: ArtifactType::Directory,
                    mode: 0o755,
                    size_bytes: 0,
                    sha256: None,
                    link_target: None,
                });
            parent = dir;
        }
        entries.insert(
            path.clone(),
            ManifestEntry {
                path,
                artifact_type,
                mode,
                size_bytes: size,
                sha256,
                link_target,
            },
        );
    }
    let manifest = Manifest {
        entries: entries.values().cloned().collect(),
        truncated: false,
    };
    if let Ok(json) = serde_json::to_vec(&manifest) {
        let _ = fsutil::write_atomic(&cache, &json);
    }
    Ok(entries)
}

/// The contents of `wanted` paths in the baseline tar.
pub fn read_from_tar(
    tar_path: &Path,
    wanted: &BTreeSet<String>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut found = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    let mut archive = tar::Archive::new(BufReader::new(
        File::open(tar_path).map_err(|e| Error::io("open", tar_path, e))?,
    ));
    let bad = |e: std::io::Error| {
        Error::new(
            ErrorKind::Io,
            format!("the baseline archive is unreadable: {e}"),
        )
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let Ok(path) = member_path(&entry.path().map_err(bad)?) else {
            continue;
        };
        if wanted.contains(&path) && entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry
                .by_ref()
                .take(MAX_PATCH_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(bad)?;
            found.insert(path, bytes);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str, mode: u32) -> ManifestEntry {
        let sha = hex::encode(Sha256::digest(content.as_bytes()));
        ManifestEntry {
            path: path.into(),
            artifact_type: ArtifactType::File,
            mode,
            size_bytes: content.len() as u64,
            sha256: Some(sha),
            link_target: None,
        }
    }

    #[test]
    fn a_modified_text_file_gets_a_git_style_patch() {
        let change = Change {
            path: "a.txt".into(),
            status: "modified",
            old: Some(file("a.txt", "one\ntwo\n", 0o644)),
            new: Some(file("a.txt", "one\n2\n", 0o644)),
        };
        let mut patch = String::new();
        let entry = render(&change, Some("one\ntwo\n"), Some("one\n2\n"), &mut patch);
        assert_eq!(patch, "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n one\n-two\n+2\n");
        assert_eq!((entry.lines_added, entry.lines_removed), (1, 1));
    }

    #[test]
    fn a_missing_final_newline_is_marked() {
        let change = Change {
            path: "n".into(),
            status: "added",
            old: None,
            new: Some(file("n", "x", 0o755)),
        };
        let mut patch = String::new();
        render(&change, None, Some("x"), &mut patch);
        assert_eq!(patch, "diff --git a/n b/n\nnew file mode 100755\n--- /dev/null\n+++ b/n\n@@ -0,0 +1 @@\n+x\n\\ No newline at end of file\n");
    }

    #[test]
    fn binary_files_are_listed_not_patched() {
        let change = Change {
            path: "b".into(),
            status: "modified",
            old: Some(file("b", "\0", 0o644)),
            new: Some(file("b", "\0\0", 0o644)),
        };
        let mut patch = String::new();
        let entry = render(&change, None, None, &mut patch);
        assert!(!entry.text);
        assert!(patch.is_empty());
    }
}
