//! Validation of everything a caller names: ids, names, labels, limits, workspace paths.

use std::collections::BTreeMap;

use crate::{Error, Result};

pub const WORKSPACE_ROOT: &str = "/workspace";

/// A workspace id: 12 lowercase hex digits. Checked before an id touches any path.
pub fn is_id(text: &str) -> bool {
    text.len() == 12
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn is_token(text: &str) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && text.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Names are what people type in place of an id: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, and never id-shaped.
pub fn name(text: &str) -> Result<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid("name must not be empty"));
    }
    if !is_token(trimmed) {
        return Err(Error::invalid(format!(
            "invalid name '{trimmed}': use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    if is_id(trimmed) {
        return Err(Error::invalid(format!(
            "invalid name '{trimmed}': it looks like a workspace id"
        )));
    }
    Ok(trimmed.to_string())
}

pub fn label_key(key: &str) -> Result<String> {
    let key = key.trim();
    if !is_token(key) {
        return Err(Error::invalid(format!(
            "invalid label key '{key}': use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    Ok(key.to_string())
}

pub fn label_value(key: &str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(format!("label '{key}' must not be empty")));
    }
    if value.chars().count() > 120 {
        return Err(Error::invalid(format!(
            "label '{key}' must be at most 120 characters"
        )));
    }
    if value.contains(['\n', '\r']) {
        return Err(Error::invalid(format!(
            "label '{key}' must not contain newlines"
        )));
    }
    Ok(value.to_string())
}

pub fn labels(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|(k, v)| Ok((label_key(k)?, label_value(k, v)?)))
        .collect()
}

pub fn ttl_seconds(ttl: u64) -> Result<u64> {
    crate::limits::check("ttl_seconds", ttl, &crate::limits::TTL_SECONDS)
}

/// Normalises a workspace path (absolute under `/workspace`, or relative to it); `..` is refused.
pub fn workspace_path(path: &str) -> Result<String> {
    let trimmed = path.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid("workspace path must not be empty"));
    }
    let escape = || {
        Error::invalid(format!(
            "workspace path must stay inside /workspace: {path}"
        ))
    };
    let rest = match trimmed.strip_prefix(WORKSPACE_ROOT) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        Some(_) => return Err(escape()),
        None if trimmed.starts_with('/') => return Err(escape()),
        None => trimmed,
    };
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(escape()),
            part if part.len() > 255 => {
                return Err(Error::invalid(format!(
                    "a name in the path is longer than 255 bytes: {path}"
                )))
            }
            part if part.contains('\0') => {
                return Err(Error::invalid("workspace path must not contain NUL bytes"))
            }
            part => parts.push(part),
        }
    }
    Ok(if parts.is_empty() {
        WORKSPACE_ROOT.to_string()
    } else {
        format!("{WORKSPACE_ROOT}/{}", parts.join("/"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert!(is_id("0123456789ab"));
        assert!(!is_id("../../etc/x"));
        assert!(name("my-ws.1").is_ok());
        assert!(name("0123456789ab").is_err());
        assert!(name("has space").is_err());
        assert!(name("").is_err());
    }

    #[test]
    fn labels_are_checked() {
        assert!(labels(&[("team".into(), "infra".into())]).is_ok());
        assert!(labels(&[("-bad".into(), "x".into())]).is_err());
        assert!(labels(&[("k".into(), "a\nb".into())]).is_err());
    }

    #[test]
    fn workspace_paths_are_confined() {
        assert_eq!(workspace_path("src/a.rs").unwrap(), "/workspace/src/a.rs");
        assert_eq!(workspace_path("/workspace/").unwrap(), "/workspace");
        for bad in [
            "/etc/passwd",
            "../x",
            "/workspace/../etc",
            "/workspaces/x",
            "",
        ] {
            assert!(workspace_path(bad).is_err(), "{bad}");
        }
    }
}
