//! `workspace diff`: the live `/workspace` against the baseline (or a snapshot), as entries and a unified patch that
//! `git apply` and `workspace patch apply` both accept. Binary files and symlinks are summarised.
//!
//! The guest sends a manifest (type, mode, size, sha256 per entry); only files that changed are read
//! back, and only text files up to a size limit get a patch.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use pyro_proto::archive_rules::member_path;
use pyro_proto::{ArtifactType, Manifest, ManifestEntry, Reply, Request};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use similar::{ChangeTag, TextDiff};

use super::lifecycle::{now_ms, workspace_dir};
use super::ops::started;
use super::since::Base;
use super::store;
use super::validate::WORKSPACE_ROOT;
use crate::agent_client::{self, AgentCall, Purpose};
use crate::vocab::{ChangeStatus, ExecutionMode};
use crate::{fsutil, Dirs, Error, ErrorKind, Result};

/// Files larger than this are summarised, not patched.
pub const MAX_PATCH_FILE_BYTES: u64 = 1 << 20;
const MAX_MANIFEST_ENTRIES: u32 = 200_000;
/// The manifest of that many entries, with long names, fits in this.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// File contents one diff reads (baseline and live sides together); past it, files are only listed.
pub const CONTENT_BYTE_BUDGET: u64 = 64 << 20;
/// Patch text one diff produces; past it, files are only listed.
pub const PATCH_BYTE_BUDGET: u64 = 64 << 20;
/// Host CPU time one diff spends comparing texts, and one file at most: a pair of texts that share
/// nothing makes the line diff quadratic, so it stops early and falls back to a coarser patch.
pub const TIME_BUDGET: Duration = Duration::from_secs(20);
const FILE_TIME_BUDGET: Duration = Duration::from_secs(2);

/// Why a changed file has no text patch.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NotPatched {
    /// A binary file (NUL bytes or not UTF-8), or a symlink, directory or other non-file.
    NotText,
    /// Larger than [`MAX_PATCH_FILE_BYTES`], or past the diff's byte or time budget.
    TooLargeToDiff,
    /// A name `git apply` would refuse or a patch could not carry safely (control characters,
    /// quotes, a `.git` component).
    UnsafeName,
    /// The file changed between the manifest and its reading (or the guest sent something else).
    ChangedWhileReading,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiffEntry {
    /// Relative to `/workspace`.
    pub path: String,
    pub status: ChangeStatus,
    pub artifact_type: ArtifactType,
    /// Text changes are in the patch; binary, large and symlink changes are only listed.
    pub text: bool,
    pub lines_added: u64,
    pub lines_removed: u64,
    pub text_patch: Option<String>,
    /// Why the change is only listed (absent when it is in the patch).
    pub not_patched: Option<NotPatched>,
    /// Sizes and digests of both sides, so a change that is only listed can still be checked.
    pub size_bytes_before: Option<u64>,
    pub size_bytes_after: Option<u64>,
    pub sha256_before: Option<String>,
    pub sha256_after: Option<String>,
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

/// A diff. Its whole `patch` (a key of its JSON form) is the entries' text patches in order: held
/// once, in the entries, and joined only when asked for.
#[derive(Debug, Clone)]
pub struct DiffResult {
    pub workspace_id: String,
    /// What the diff is against: `baseline` (the seed) or the name of a snapshot.
    pub base: String,
    pub changed: bool,
    pub summary: DiffSummary,
    pub entries: Vec<DiffEntry>,
    /// Some changes are only listed because the diff reached its byte or time budget.
    pub budget_exceeded: bool,
    pub execution_mode: ExecutionMode,
}

impl DiffResult {
    /// The unified patch of every text change, as `git apply` takes it.
    pub fn patch(&self) -> String {
        PatchText(&self.entries).to_string()
    }
}

/// The entries' text patches written one after the other, never joined in memory (serde writes
/// it into the output as a string).
struct PatchText<'a>(&'a [DiffEntry]);

impl std::fmt::Display for PatchText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0
            .iter()
            .filter_map(|e| e.text_patch.as_deref())
            .try_for_each(|text| f.write_str(text))
    }
}

impl Serialize for PatchText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Serialize for DiffResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            workspace_id: &'a str,
            base: &'a str,
            changed: bool,
            summary: &'a DiffSummary,
            entries: &'a [DiffEntry],
            patch: PatchText<'a>,
            budget_exceeded: bool,
            execution_mode: ExecutionMode,
        }
        Wire {
            workspace_id: &self.workspace_id,
            base: &self.base,
            changed: self.changed,
            summary: &self.summary,
            entries: &self.entries,
            patch: PatchText(&self.entries),
            budget_exceeded: self.budget_exceeded,
            execution_mode: self.execution_mode,
        }
        .serialize(serializer)
    }
}

/// The diff against the baseline, or against the snapshot `since` names.
pub async fn diff(dirs: &Dirs, reference: &str, since: Option<&str>) -> Result<DiffResult> {
    let (_, record, dir) = started(dirs, reference, "diff")?;
    let base = super::since::resolve(dirs, &record.id, &dir, since).await?;
    diff_as(dirs, reference, &base, Purpose::Activity).await
}

/// The diff against `base`; with `Purpose::Inspection` (for `summary`) it is not activity.
pub async fn diff_as(
    dirs: &Dirs,
    reference: &str,
    base_tree: &Base,
    purpose: Purpose,
) -> Result<DiffResult> {
    let (db, record, dir) = started(dirs, reference, "diff")?;
    let wdir = workspace_dir(dirs, &record.id);
    let baseline_path = base_tree.archive.clone();
    let base = {
        let (archive, cache) = (base_tree.archive.clone(), base_tree.manifest_cache.clone());
        crate::blocking(move || archive_manifest(&archive, &cache)).await?
    };
    let request = Request::Manifest {
        path: WORKSPACE_ROOT.into(),
        max_entries: MAX_MANIFEST_ENTRIES,
    };
    // The manifest goes to a file, not memory: only what parses into entries is held.
    let spool = wdir.join(format!(".manifest-{}.json", fsutil::random_hex(4)?));
    let received = async {
        let mut file = tokio::fs::File::create(&spool)
            .await
            .map_err(|e| Error::io("create", &spool, e))?;
        let mut call = AgentCall::start_with(
            &dir,
            &request,
            purpose,
            agent_client::deadline_for(MAX_MANIFEST_BYTES),
        )
        .await?;
        call.be_patient_for(agent_client::deadline_for(0));
        call.receive(&mut file, MAX_MANIFEST_BYTES).await
    }
    .await;
    let reply = match received {
        Ok(reply) => reply,
        Err(err) => {
            let _ = std::fs::remove_file(&spool);
            return Err(err);
        }
    };
    let live = match reply {
        Reply::Manifest(manifest) => manifest,
        other => return Err(agent_client::unexpected(other)),
    };
    if live.truncated {
        return Err(Error::new(
            ErrorKind::Guest,
            format!(
                "/workspace holds more than {MAX_MANIFEST_ENTRIES} entries; diff refuses to guess"
            ),
        ));
    }
    let parsed = {
        let spool = spool.clone();
        crate::blocking(move || parse_manifest_file(&spool)).await
    };
    let _ = std::fs::remove_file(&spool);
    let live = parsed?;
    let changes = compare(&base, &live);
    drop(live);

    // Which changes get a text patch: small files on both sides with safe names, in path order,
    // until the content budget is spent.
    let mut content_budget = CONTENT_BYTE_BUDGET;
    let mut budget_exceeded = false;
    let mut planned: Vec<Option<NotPatched>> = Vec::with_capacity(changes.len());
    for change in &changes {
        let verdict = patchability(change);
        let verdict = match verdict {
            None => {
                let cost = side_size(&change.old) + side_size(&change.new);
                if cost <= content_budget {
                    content_budget -= cost;
                    None
                } else {
                    budget_exceeded = true;
                    Some(NotPatched::TooLargeToDiff)
                }
            }
            other => other,
        };
        planned.push(verdict);
    }
    let wanted_base: BTreeSet<String> = changes
        .iter()
        .zip(&planned)
        .filter(|(c, verdict)| {
            verdict.is_none() && c.old.is_some() && c.status != ChangeStatus::ModeChanged
        })
        .map(|(c, _)| c.path.clone())
        .collect();
    let mut old_contents =
        crate::blocking(move || read_from_tar(&baseline_path, &wanted_base)).await?;
    let mut entries = Vec::new();
    let mut patch_bytes: u64 = 0;
    let mut summary = DiffSummary::default();
    let started_rendering = Instant::now();
    // One deadline for every read of the live side, not one each.
    let op_deadline = Instant::now() + agent_client::deadline_for(CONTENT_BYTE_BUDGET);
    for (change, verdict) in changes.into_iter().zip(planned) {
        let mut verdict = verdict;
        let spent = started_rendering.elapsed();
        if verdict.is_none() && (spent >= TIME_BUDGET || patch_bytes >= PATCH_BYTE_BUDGET) {
            verdict = Some(NotPatched::TooLargeToDiff);
            budget_exceeded = true;
        }
        let entry = match verdict {
            Some(reason) => listed(&change, reason),
            None => {
                let new_bytes = match &change.new {
                    Some(new) if change.status != ChangeStatus::ModeChanged => {
                        match read_live(&dir, new, purpose, op_deadline).await? {
                            Some(bytes) => Some(bytes),
                            None => {
                                push_entry(
                                    &mut entries,
                                    &mut summary,
                                    listed(&change, NotPatched::ChangedWhileReading),
                                );
                                continue;
                            }
                        }
                    }
                    _ => None,
                };
                let old_bytes = old_contents.remove(&change.path);
                let file_budget = FILE_TIME_BUDGET.min(TIME_BUDGET.saturating_sub(spent));
                let entry = crate::blocking(move || {
                    let old = old_bytes.as_deref().map(text);
                    let new = new_bytes.as_deref().map(text);
                    Ok(render(&change, old, new, file_budget))
                })
                .await?;
                let size = entry.text_patch.as_ref().map_or(0, |t| t.len() as u64);
                if patch_bytes + size > PATCH_BYTE_BUDGET {
                    budget_exceeded = true;
                    let mut entry = entry;
                    entry.text = false;
                    entry.text_patch = None;
                    entry.lines_added = 0;
                    entry.lines_removed = 0;
                    entry.not_patched = Some(NotPatched::TooLargeToDiff);
                    entry
                } else {
                    patch_bytes += size;
                    entry
                }
            }
        };
        push_entry(&mut entries, &mut summary, entry);
    }
    if purpose == Purpose::Activity {
        store::touch(db.conn(), &record.id, now_ms())?;
    }
    Ok(DiffResult {
        workspace_id: record.id,
        base: base_tree.label.clone(),
        changed: !entries.is_empty(),
        summary,
        entries,
        budget_exceeded,
        execution_mode: ExecutionMode::Guest,
    })
}

fn push_entry(entries: &mut Vec<DiffEntry>, summary: &mut DiffSummary, entry: DiffEntry) {
    summary.total += 1;
    match entry.status {
        ChangeStatus::Added => summary.added += 1,
        ChangeStatus::Modified => summary.modified += 1,
        ChangeStatus::Deleted => summary.deleted += 1,
        ChangeStatus::TypeChanged => summary.type_changed += 1,
        ChangeStatus::ModeChanged | ChangeStatus::Renamed => summary.mode_changed += 1,
    }
    if entry.text {
        summary.text_patched += 1;
    } else if entry.status != ChangeStatus::ModeChanged {
        summary.non_text += 1;
    }
    summary.lines_added += entry.lines_added;
    summary.lines_removed += entry.lines_removed;
    entries.push(entry);
}

fn parse_manifest_file(path: &Path) -> Result<BTreeMap<String, ManifestEntry>> {
    let file = File::open(path).map_err(|e| Error::io("read", path, e))?;
    parse_manifest(BufReader::new(file))
}

/// The guest's manifest, checked: every path a plain relative name, none twice, no more entries than
/// asked for. The guest is hostile; a manifest that breaks these rules is refused whole.
fn parse_manifest(payload: impl Read) -> Result<BTreeMap<String, ManifestEntry>> {
    let mut reader = serde_json::Deserializer::from_reader(payload);
    let entries = reader
        .deserialize_seq(AtMost(MAX_MANIFEST_ENTRIES as usize))
        .and_then(|entries| reader.end().map(|()| entries))
        .map_err(|e| {
            let why = e.to_string();
            let kind = if why.starts_with(TOO_MANY_ENTRIES) {
                ErrorKind::Guest
            } else {
                ErrorKind::Protocol
            };
            Error::new(kind, format!("malformed manifest from the VM: {why}"))
        })?;
    let mut live = BTreeMap::new();
    for entry in entries {
        let plain = !entry.path.is_empty()
            && !entry.path.contains('\0')
            && member_path(Path::new(&entry.path)).is_ok_and(|p| p == entry.path);
        if !plain {
            return Err(Error::new(
                ErrorKind::Guest,
                format!(
                    "refused the VM's manifest: {:?} is not a plain relative path",
                    entry.path
                ),
            ));
        }
        if let Some(previous) = live.insert(entry.path.clone(), entry) {
            return Err(Error::new(
                ErrorKind::Guest,
                format!(
                    "refused the VM's manifest: {:?} appears twice",
                    previous.path
                ),
            ));
        }
    }
    Ok(live)
}

const TOO_MANY_ENTRIES: &str = "more manifest entries than the";

/// Reads a JSON array of manifest entries, failing at the first one past the limit: a guest that
/// sends more than it was asked for does not get them all held first.
struct AtMost(usize);

impl<'de> Visitor<'de> for AtMost {
    type Value = Vec<ManifestEntry>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of at most {} manifest entries", self.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element::<ManifestEntry>()? {
            if entries.len() == self.0 {
                return Err(serde::de::Error::custom(format!(
                    "{TOO_MANY_ENTRIES} {} asked for",
                    self.0
                )));
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

fn side_size(side: &Option<ManifestEntry>) -> u64 {
    side.as_ref().map(|e| e.size_bytes).unwrap_or(0)
}

/// Whether a change can get a text patch at all (before budgets): `None` if it can.
fn patchability(change: &Change) -> Option<NotPatched> {
    if !safe_in_patch(&change.path) {
        return Some(NotPatched::UnsafeName);
    }
    let is_file = |e: &Option<ManifestEntry>| {
        e.as_ref()
            .is_none_or(|e| e.artifact_type == ArtifactType::File)
    };
    if !is_file(&change.old) || !is_file(&change.new) || change.status == ChangeStatus::TypeChanged
    {
        return Some(NotPatched::NotText);
    }
    let small = |e: &Option<ManifestEntry>| {
        e.as_ref()
            .is_none_or(|e| e.size_bytes <= MAX_PATCH_FILE_BYTES)
    };
    if !small(&change.old) || !small(&change.new) {
        return Some(NotPatched::TooLargeToDiff);
    }
    None
}

/// A name git would have to quote (control characters, quotes, backslashes, spaces at the ends) could
/// pass for headers of another file, and a `.git` component would let a patch rewrite repository
/// metadata (hooks, config) wherever it is applied: such changes are listed, never patched.
fn safe_in_patch(path: &str) -> bool {
    !path
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
        && path.trim() == path
        && !path
            .split('/')
            .any(|part| part.eq_ignore_ascii_case(".git"))
}

/// An entry that is only listed, with sizes and digests of both sides.
fn listed(change: &Change, reason: NotPatched) -> DiffEntry {
    let mut entry = base_entry(change);
    entry.not_patched = Some(reason);
    entry
}

fn base_entry(change: &Change) -> DiffEntry {
    let kind = change
        .new
        .as_ref()
        .or(change.old.as_ref())
        .map(|e| e.artifact_type)
        .unwrap_or(ArtifactType::Other);
    let file = |e: &Option<ManifestEntry>| {
        e.as_ref()
            .filter(|e| e.artifact_type == ArtifactType::File)
            .cloned()
    };
    let (before, after) = (file(&change.old), file(&change.new));
    DiffEntry {
        path: change.path.clone(),
        status: change.status,
        artifact_type: kind,
        text: false,
        lines_added: 0,
        lines_removed: 0,
        text_patch: None,
        not_patched: None,
        size_bytes_before: before.as_ref().map(|e| e.size_bytes),
        size_bytes_after: after.as_ref().map(|e| e.size_bytes),
        sha256_before: before.and_then(|e| e.sha256),
        sha256_after: after.and_then(|e| e.sha256),
    }
}

struct Change {
    path: String,
    status: ChangeStatus,
    old: Option<ManifestEntry>,
    new: Option<ManifestEntry>,
}

/// The bytes as text, or `None` for a binary file.
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
            (None, Some(n)) if n.artifact_type != ArtifactType::Directory => ChangeStatus::Added,
            (Some(o), None) if o.artifact_type != ArtifactType::Directory => ChangeStatus::Deleted,
            (Some(o), Some(n)) if o.artifact_type != n.artifact_type => ChangeStatus::TypeChanged,
            (Some(o), Some(n)) if o.artifact_type == ArtifactType::File => {
                if o.sha256 != n.sha256 {
                    ChangeStatus::Modified
                } else if (o.mode & 0o111 != 0) != (n.mode & 0o111 != 0) {
                    ChangeStatus::ModeChanged
                } else {
                    continue;
                }
            }
            (Some(o), Some(n))
                if o.artifact_type == ArtifactType::Symlink && o.link_target != n.link_target =>
            {
                ChangeStatus::Modified
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

/// Builds the entry and its part of the patch. `old`/`new` are the sides' contents: `None` for a side
/// that does not exist, `Some(None)` for one that is not text. The line diff stops refining after
/// `time_budget`.
fn render<'a>(
    change: &Change,
    old: Option<Option<&'a str>>,
    new: Option<Option<&'a str>>,
    time_budget: Duration,
) -> DiffEntry {
    let path = &change.path;
    let mut entry = base_entry(change);
    if let Some(reason) = patchability(change) {
        entry.not_patched = Some(reason);
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
    if change.status == ChangeStatus::ModeChanged {
        entry.text = true;
        entry.text_patch = Some(header);
        return entry;
    }
    let side = |exists: bool, content: Option<Option<&'a str>>| -> Option<&'a str> {
        match (exists, content) {
            (false, _) => Some(""),
            (true, Some(Some(text))) => Some(text),
            _ => None,
        }
    };
    let (Some(old_text), Some(new_text)) = (
        side(change.old.is_some(), old),
        side(change.new.is_some(), new),
    ) else {
        entry.not_patched = Some(NotPatched::NotText);
        return entry;
    };
    let diff = TextDiff::configure()
        .timeout(time_budget)
        .diff_lines(old_text, new_text);
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
    entry.text_patch = Some(text_patch);
    entry
}

/// The live side of a changed file: exactly the size the manifest claimed, and that content (a file
/// that changed since, or a guest that lies, gets `None`: the change is listed without a patch).
async fn read_live(
    dir: &Path,
    entry: &ManifestEntry,
    purpose: Purpose,
    deadline: Instant,
) -> Result<Option<Vec<u8>>> {
    let size = entry.size_bytes.min(MAX_PATCH_FILE_BYTES);
    let request = Request::ReadFile {
        path: format!("{WORKSPACE_ROOT}/{}", entry.path),
        offset: 0,
        max_bytes: size.max(1),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let (reply, bytes) = AgentCall::start_with(dir, &request, purpose, left)
        .await?
        .collect(size)
        .await?;
    match reply {
        Reply::FileRead(_) => {}
        other => return Err(agent_client::unexpected(other)),
    }
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok((entry.sha256.as_deref() == Some(digest.as_str())).then_some(bytes))
}

/// The manifest of a base archive (the baseline, or a snapshot's tree), computed once and cached at
/// `cache`.
pub fn archive_manifest(tar_path: &Path, cache: &Path) -> Result<BTreeMap<String, ManifestEntry>> {
    if let Ok(bytes) = std::fs::read(cache) {
        if let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) {
            return Ok(manifest
                .entries
                .into_iter()
                .map(|e| (e.path.clone(), e))
                .collect());
        }
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
        let _ = fsutil::write_atomic(cache, &json);
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

    const T: Duration = FILE_TIME_BUDGET;

    fn patch_of(entry: &DiffEntry) -> &str {
        entry.text_patch.as_deref().unwrap_or("")
    }

    #[test]
    fn a_modified_text_file_gets_a_git_style_patch() {
        let change = Change {
            path: "a.txt".into(),
            status: ChangeStatus::Modified,
            old: Some(file("a.txt", "one\ntwo\n", 0o644)),
            new: Some(file("a.txt", "one\n2\n", 0o644)),
        };
        let entry = render(&change, Some(Some("one\ntwo\n")), Some(Some("one\n2\n")), T);
        assert_eq!(patch_of(&entry), "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n one\n-two\n+2\n");
        assert_eq!((entry.lines_added, entry.lines_removed), (1, 1));
    }

    #[test]
    fn a_missing_final_newline_is_marked() {
        let change = Change {
            path: "n".into(),
            status: ChangeStatus::Added,
            old: None,
            new: Some(file("n", "x", 0o755)),
        };
        let entry = render(&change, None, Some(Some("x")), T);
        assert_eq!(patch_of(&entry), "diff --git a/n b/n\nnew file mode 100755\n--- /dev/null\n+++ b/n\n@@ -0,0 +1 @@\n+x\n\\ No newline at end of file\n");
    }

    #[test]
    fn binary_files_are_listed_not_patched() {
        let change = Change {
            path: "b".into(),
            status: ChangeStatus::Modified,
            old: Some(file("b", "\0", 0o644)),
            new: Some(file("b", "\0\0", 0o644)),
        };
        let entry = render(&change, Some(None), Some(None), T);
        assert!(!entry.text);
        assert_eq!(entry.not_patched, Some(NotPatched::NotText));
        assert!(patch_of(&entry).is_empty());
    }

    #[test]
    fn git_metadata_and_odd_names_stay_out_of_the_patch() {
        for path in [
            ".git/config",
            "sub/.GIT/hooks/pre-commit",
            "a\x1b[2Kb",
            " lead",
            "q\"uote",
        ] {
            let change = Change {
                path: path.into(),
                status: ChangeStatus::Added,
                old: None,
                new: Some(file(path, "x\n", 0o755)),
            };
            let entry = render(&change, None, Some(Some("x\n")), T);
            assert_eq!(entry.not_patched, Some(NotPatched::UnsafeName), "{path:?}");
            assert!(patch_of(&entry).is_empty());
        }
    }

    #[test]
    fn texts_that_share_nothing_finish_within_the_budget() {
        let old = "a\n".repeat(1 << 19);
        let new = "b\n".repeat(1 << 19);
        let change = Change {
            path: "lock".into(),
            status: ChangeStatus::Modified,
            old: Some(file("lock", &old, 0o644)),
            new: Some(file("lock", &new, 0o644)),
        };
        let entry = render(
            &change,
            Some(Some(&old)),
            Some(Some(&new)),
            Duration::from_millis(200),
        );
        assert!(entry.text);
        assert_eq!((entry.lines_added, entry.lines_removed), (1 << 19, 1 << 19));
        assert!(patch_of(&entry).len() > 2 * old.len());
    }

    #[test]
    fn manifests_with_unsafe_or_duplicate_paths_are_refused() {
        let bad = |paths: &[&str]| {
            let entries: Vec<ManifestEntry> = paths.iter().map(|p| file(p, "x", 0o644)).collect();
            parse_manifest(&serde_json::to_vec(&entries).unwrap()[..]).is_err()
        };
        assert!(bad(&["../etc/passwd"]));
        assert!(bad(&["/etc/passwd"]));
        assert!(bad(&["a//b"]));
        assert!(bad(&["./a"]));
        assert!(bad(&[""]));
        assert!(bad(&["a", "a"]));
        assert!(!bad(&["a", "b/c"]));
    }

    #[test]
    fn a_manifest_longer_than_asked_is_refused_as_it_is_read() {
        let entries: Vec<ManifestEntry> = (0..=MAX_MANIFEST_ENTRIES)
            .map(|i| file(&format!("f{i}"), "", 0o644))
            .collect();
        let err = parse_manifest(&serde_json::to_vec(&entries).unwrap()[..]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Guest);
        assert!(err.message().contains("asked for"), "{}", err.message());
        assert!(parse_manifest(&b"[] trailing"[..]).is_err());
    }

    #[test]
    fn the_patch_is_the_entries_patches_in_order() {
        let entry = |path: &str, patch: Option<&str>| DiffEntry {
            text_patch: patch.map(str::to_string),
            ..base_entry(&Change {
                path: path.into(),
                status: ChangeStatus::Added,
                old: None,
                new: Some(file(path, "", 0o644)),
            })
        };
        let result = DiffResult {
            workspace_id: "0123456789ab".into(),
            base: "baseline".into(),
            changed: true,
            summary: DiffSummary::default(),
            entries: vec![
                entry("a", Some("A\n")),
                entry("b", None),
                entry("c", Some("C\n")),
            ],
            budget_exceeded: false,
            execution_mode: ExecutionMode::Guest,
        };
        assert_eq!(result.patch(), "A\nC\n");
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["patch"], "A\nC\n");
        assert_eq!(json["entries"][2]["text_patch"], "C\n");
    }
}
