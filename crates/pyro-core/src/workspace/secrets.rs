//! Workspace secrets: named values given at create (inline or read from a host file), handed to the
//! guest only as environment variables of the one call that asks (`secret_env`), and replaced by
//! `[REDACTED:NAME]` in everything pyro returns or keeps.
//!
//! The values are kept on the host in one file private to the user (`secrets.json`, 0600, beside the
//! workspace's records): never in the database, the journal, a log, a template, the VM's disk or a
//! snapshot. The guest gets them over the agent channel, in the environment of the process that
//! asked, and nowhere else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{fsutil, Error, Result};

/// The most a secret may hold.
pub const MAX_SECRET_BYTES: usize = 64 << 10;
const FILE: &str = "secrets.json";
/// Values a fork did not inherit but whose processes may still hold them: redacted, never given.
const REDACT_ONLY_FILE: &str = "redacted-secrets.json";

/// Where a secret's value comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    Value(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct SecretSpec {
    pub name: String,
    pub source: SecretSource,
}

/// `^[A-Za-z_][A-Za-z0-9_]{0,63}$`: a secret's name, and the variable it is exposed as.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let valid = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} '{name}' is not a valid environment variable name"
        ))
        .with_hint("use up to 64 letters, digits and '_', not starting with a digit"))
    }
}

/// Reads and checks every secret (names, duplicates, files, sizes, text): the values by name.
pub fn read(specs: &[SecretSpec]) -> Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    for spec in specs {
        check_name("secret name", &spec.name)?;
        let value = match &spec.source {
            SecretSource::Value(value) => value.clone(),
            SecretSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::invalid(format!(
                        "secret file for '{}' cannot be read: {}: {e}",
                        spec.name,
                        path.display()
                    ))
                })?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    Error::invalid(format!("secret '{}' must be valid UTF-8 text", spec.name))
                })?;
                // A file's final line break is the file's, not the secret's.
                let trimmed = text.strip_suffix('\n').unwrap_or(&text);
                trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
            }
        };
        if value.is_empty() {
            return Err(Error::invalid(format!(
                "secret '{}' must not be empty",
                spec.name
            )));
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(Error::invalid(format!(
                "secret '{}' must be at most {MAX_SECRET_BYTES} bytes",
                spec.name
            )));
        }
        if values.insert(spec.name.clone(), value).is_some() {
            return Err(Error::invalid(format!(
                "duplicate secret name: {}",
                spec.name
            )));
        }
    }
    Ok(values)
}

/// Keeps a workspace's secrets (nothing is written when it has none).
pub fn store(wdir: &Path, values: &BTreeMap<String, String>) -> Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_vec(values).map_err(|e| Error::internal(e.to_string()))?;
    fsutil::write_atomic_mode(&wdir.join(FILE), &json, 0o600)
}

/// Hands a fork the source's secrets: to use (`inherit`), or only to redact (the fork's memory
/// may hold them in processes started before the fork).
pub fn fork(source: &Path, fork: &Path, inherit: bool) -> Result<()> {
    let mut values = values(source)?;
    values.extend(read_file(&source.join(REDACT_ONLY_FILE))?);
    if values.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_vec(&values).map_err(|e| Error::internal(e.to_string()))?;
    let file = if inherit { FILE } else { REDACT_ONLY_FILE };
    fsutil::write_atomic_mode(&fork.join(file), &json, 0o600)
}

fn values(wdir: &Path) -> Result<BTreeMap<String, String>> {
    read_file(&wdir.join(FILE))
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("unreadable {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The names of a workspace's secrets (never their values).
pub fn names(wdir: &Path) -> Vec<String> {
    values(wdir)
        .map(|v| v.into_keys().collect())
        .unwrap_or_default()
}

/// The variables `secret_env` (secret name → variable name) asks for, with their values.
pub fn environment(
    wdir: &Path,
    workspace_id: &str,
    secret_env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    if secret_env.is_empty() {
        return Ok(BTreeMap::new());
    }
    let values = values(wdir)?;
    let mut env = BTreeMap::new();
    for (secret, variable) in secret_env {
        check_name("secret_env variable", variable)?;
        let value = values.get(secret).ok_or_else(|| {
            Error::invalid(format!(
                "secret_env references unknown workspace secret '{secret}'"
            ))
            .with_hint(format!(
                "workspace {workspace_id} has the secrets: {}",
                if values.is_empty() {
                    "none".to_string()
                } else {
                    values.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        })?;
        env.insert(variable.clone(), value.clone());
    }
    Ok(env)
}

/// Replaces a workspace's secret values by `[REDACTED:NAME]`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, marker), longest value first, so a secret inside another is never half-replaced.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Redactor {
    pub fn for_workspace(wdir: &Path) -> Result<Redactor> {
        let mut values = values(wdir)?;
        values.extend(read_file(&wdir.join(REDACT_ONLY_FILE))?);
        Ok(Redactor::new(values))
    }

    /// A redactor of `values` (secret name → value).
    pub fn new(values: BTreeMap<String, String>) -> Redactor {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (name, value) in values {
            let marker = format!("[REDACTED:{name}]").into_bytes();
            // A terminal shows a line break as CR LF: a value of several lines is looked for so too.
            if value.contains('\n') {
                pairs.push((value.replace('\n', "\r\n").into_bytes(), marker.clone()));
            }
            pairs.push((value.into_bytes(), marker));
        }
        pairs.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        Redactor { pairs }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The secret at `at` in `bytes`, if one starts there: (its length, its marker).
    fn match_at(&self, bytes: &[u8], at: usize) -> Option<(usize, &[u8])> {
        self.pairs
            .iter()
            .find(|(value, _)| bytes[at..].starts_with(value))
            .map(|(value, marker)| (value.len(), marker.as_slice()))
    }

    pub fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        self.window(bytes, true).0
    }

    pub fn text(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }

    /// Redacts `bytes`, output that may go on. Unless `done`, a tail that could be the start of a
    /// secret is held back (a later read shows it whole, or redacted): returns the redacted part and
    /// how many input bytes it covers. One pass, so a secret's own end is never taken for the start
    /// of another.
    pub fn window(&self, bytes: &[u8], done: bool) -> (Vec<u8>, usize) {
        self.window_after(bytes, 0, done)
    }

    /// [`Redactor::window`] of `bytes[from..]`, with `bytes[..from]` (already shown) looked at only
    /// for a secret that began there and goes on past `from`: that one is redacted too.
    pub fn window_after(&self, bytes: &[u8], from: usize, done: bool) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            // What is left could still grow into a (longer) secret: wait for the rest.
            if at >= from && !done && self.starts_a_secret(&bytes[at..]) {
                break;
            }
            if let Some((len, marker)) = self.match_at(bytes, at) {
                if at + len > from {
                    out.extend_from_slice(marker);
                }
                at += len;
                continue;
            }
            if at >= from {
                out.push(bytes[at]);
            }
            at += 1;
        }
        (out, at.saturating_sub(from))
    }

    /// The length of the longest secret.
    pub fn longest(&self) -> usize {
        self.pairs.first().map_or(0, |(value, _)| value.len())
    }

    /// Whether `tail` (the end of what has come) is the beginning of a secret.
    fn starts_a_secret(&self, tail: &[u8]) -> bool {
        self.pairs
            .iter()
            .any(|(value, _)| tail.len() < value.len() && value.starts_with(tail))
    }

    /// Redacts output the agent capped to its head and tail (`[... N bytes omitted by pyro ...]`
    /// between them): a secret cut by the omission would show its pieces on either side, so the head's
    /// end and the tail's start are masked where they could be such a piece (of 4 bytes or more).
    pub fn capped(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        let Some((head, tail)) = split_at_omission(text) else {
            return self.text(text);
        };
        let (mut head_out, used) = self.window(head.as_bytes(), false);
        if head.len() - used >= FRAGMENT {
            head_out.extend_from_slice(b"[REDACTED]");
        } else {
            head_out.extend_from_slice(&head.as_bytes()[used..]);
        }
        let cut = self.ending_of_a_secret(tail.as_bytes());
        let mut tail_out = Vec::new();
        if cut >= FRAGMENT {
            tail_out.extend_from_slice(b"[REDACTED]");
        } else {
            tail_out.extend_from_slice(&tail.as_bytes()[..cut]);
        }
        tail_out.extend(self.bytes(&tail.as_bytes()[cut..]));
        let marker = &text[head.len()..text.len() - tail.len()];
        format!(
            "{}{marker}{}",
            String::from_utf8_lossy(&head_out),
            String::from_utf8_lossy(&tail_out)
        )
    }

    /// The length of the longest start of `bytes` that is the end of a secret (0: none).
    fn ending_of_a_secret(&self, bytes: &[u8]) -> usize {
        self.pairs
            .iter()
            .flat_map(|(value, _)| {
                (1..value.len())
                    .rev()
                    .find(|&n| bytes.starts_with(&value[value.len() - n..]))
            })
            .max()
            .unwrap_or(0)
    }
}

/// Pieces of a secret shorter than this at an omission are shown: masking them would garble
/// ordinary output as often as it hid anything.
const FRAGMENT: usize = 4;

/// `head` and `tail` around the agent's omission marker, when there is one.
fn split_at_omission(text: &str) -> Option<(&str, &str)> {
    let start = text.find("\n[... ")?;
    let rest = &text[start..];
    let end = rest.find(" bytes omitted by pyro ...]\n")? + " bytes omitted by pyro ...]\n".len();
    Some((&text[..start], &text[start + end..]))
}

/// Redacts output that arrives in chunks, per stream: a secret split across chunks is still found.
pub struct Stream<'r> {
    redactor: &'r Redactor,
    pending: Vec<u8>,
}

impl<'r> Stream<'r> {
    pub fn new(redactor: &'r Redactor) -> Stream<'r> {
        Stream {
            redactor,
            pending: Vec::new(),
        }
    }

    /// What can be shown of the output so far.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let (out, used) = self.redactor.window(&self.pending, false);
        self.pending.drain(..used);
        out
    }

    /// The rest, at the end of the output.
    pub fn finish(&mut self) -> Vec<u8> {
        let out = self.redactor.bytes(&self.pending);
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(pairs: &[(&str, &str)]) -> Redactor {
        Redactor::new(
            pairs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        )
    }

    #[test]
    fn values_are_replaced_longest_first() {
        let r = redactor(&[("A", "abc"), ("B", "abcdef")]);
        assert_eq!(r.text("x abcdef y abc"), "x [REDACTED:B] y [REDACTED:A]");
    }

    #[test]
    fn a_secret_split_across_chunks_is_still_redacted() {
        let r = redactor(&[("TOKEN", "s3cr3t-value")]);
        let mut stream = Stream::new(&r);
        let mut shown = Vec::new();
        for chunk in ["token=s3c", "r3t-va", "lue and s", "3cr3t-valu", "e\n"] {
            shown.extend(stream.push(chunk.as_bytes()));
        }
        shown.extend(stream.finish());
        assert_eq!(
            String::from_utf8(shown).unwrap(),
            "token=[REDACTED:TOKEN] and [REDACTED:TOKEN]\n"
        );
    }

    #[test]
    fn a_tail_that_is_only_a_prefix_is_shown_at_the_end() {
        let r = redactor(&[("TOKEN", "s3cr3t")]);
        let (out, used) = r.window(b"ends with s3c", false);
        assert_eq!((out.as_slice(), used), (&b"ends with "[..], 10));
        assert_eq!(r.window(b"ends with s3c", true).0, b"ends with s3c");
    }

    #[test]
    fn a_secret_that_ends_as_it_starts_is_not_shown_at_a_chunk_end() {
        let r = redactor(&[("T", "s3cr3ts")]);
        let mut stream = Stream::new(&r);
        let mut shown = stream.push(b"x s3cr3ts");
        shown.extend(stream.push(b" y"));
        shown.extend(stream.finish());
        assert_eq!(String::from_utf8(shown).unwrap(), "x [REDACTED:T] y");
        let r = redactor(&[("A", "abc"), ("B", "abcdef")]);
        let mut stream = Stream::new(&r);
        let mut shown = stream.push(b"abc");
        shown.extend(stream.push(b"def."));
        shown.extend(stream.finish());
        assert_eq!(String::from_utf8(shown).unwrap(), "[REDACTED:B].");
    }

    #[test]
    fn pieces_of_a_secret_around_an_omission_are_masked() {
        let r = redactor(&[("T", "0123456789abcdef")]);
        let text = "out 012345\n[... 10 bytes omitted by pyro ...]\n9abcdef end";
        assert_eq!(
            r.capped(text),
            "out [REDACTED]\n[... 10 bytes omitted by pyro ...]\n[REDACTED] end"
        );
        assert_eq!(r.capped("plain 0123456789abcdef"), "plain [REDACTED:T]");
    }

    #[test]
    fn multi_line_values_are_found_as_a_terminal_shows_them() {
        let r = redactor(&[("KEY", "line1\nline2")]);
        assert_eq!(r.text("a line1\r\nline2 b"), "a [REDACTED:KEY] b");
        assert_eq!(r.text("a line1\nline2 b"), "a [REDACTED:KEY] b");
    }

    #[test]
    fn a_read_that_starts_inside_a_secret_shows_none_of_it() {
        let r = redactor(&[("T", "s3cr3t-value")]);
        // The cursor (7) is inside the secret that began at 2.
        let (out, used) = r.window_after(b"a s3cr3t-value b", 7, false);
        assert_eq!((out.as_slice(), used), (&b"[REDACTED:T] b"[..], 9));
    }

    #[test]
    fn a_secret_file_loses_its_final_line_break() {
        let path = std::env::temp_dir().join(format!("pyro-secret-test-{}", std::process::id()));
        std::fs::write(&path, "token-value\n").unwrap();
        let spec = SecretSpec {
            name: "T".into(),
            source: SecretSource::File(path.clone()),
        };
        let read = read(&[spec]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(read.unwrap()["T"], "token-value");
    }

    #[test]
    fn names_must_be_variable_names() {
        assert!(check_name("secret name", "API_TOKEN").is_ok());
        assert!(check_name("secret name", "_x1").is_ok());
        for bad in ["1X", "A-B", "", "A B", &"A".repeat(65)] {
            assert!(check_name("secret name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_secrets_are_refused() {
        let spec = |name: &str, value: &str| SecretSpec {
            name: name.into(),
            source: SecretSource::Value(value.into()),
        };
        assert!(read(&[spec("A", "x"), spec("A", "y")]).is_err());
        assert!(read(&[spec("A", "")]).is_err());
        assert!(read(&[spec("A", &"x".repeat(MAX_SECRET_BYTES + 1))]).is_err());
        let missing = SecretSpec {
            name: "F".into(),
            source: SecretSource::File("/nonexistent/secret".into()),
        };
        let err = read(&[missing]).unwrap_err();
        assert!(err.message().contains("cannot be read"), "{err}");
    }
}
