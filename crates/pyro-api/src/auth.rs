//! Who may call: the control plane wants the API key (per state dir, made once, 0600), a sandbox's
//! in-VM API wants that sandbox's access token (derived from the key, so a token opens one sandbox
//! and nothing else). Any local process, or a networked guest, can reach a loopback port: nothing
//! is served without one of them.

use std::path::{Path, PathBuf};

use axum::http::HeaderMap;
use pyro_core::{fsutil, Result};
use sha2::{Digest, Sha256};

/// Where the API key of a state dir is kept.
pub fn key_path(state: &Path) -> PathBuf {
    state.join("api").join("key")
}

/// The state dir's API key, made on first use.
pub fn load_or_create_key(state: &Path) -> Result<String> {
    let path = key_path(state);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim();
        if key.len() >= 32 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Ok(key.to_string());
        }
    }
    let key = format!("pyro_{}", fsutil::random_hex(24)?);
    fsutil::create_dir_all(path.parent().unwrap_or(state))?;
    fsutil::write_atomic_mode(&path, format!("{key}\n").as_bytes(), 0o600)?;
    Ok(key)
}

/// The access token of sandbox `id` under `key`.
pub fn sandbox_token(key: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("pyro-e2b-envd:{key}:{id}").as_bytes());
    hex::encode(&digest[..20])
}

/// The token that opens sandbox `id`'s ports (`get_host`) when its traffic is not public.
pub fn traffic_token(key: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("pyro-e2b-traffic:{key}:{id}").as_bytes());
    hex::encode(&digest[..20])
}

/// The API key a control-plane request carries: `X-API-KEY`, or `Authorization: Bearer`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim());
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_per_sandbox_and_key() {
        let a = sandbox_token("k1", "0123456789ab");
        assert_eq!(a.len(), 40);
        assert_ne!(a, sandbox_token("k1", "0123456789ac"));
        assert_ne!(a, sandbox_token("k2", "0123456789ab"));
        assert!(fsutil::same_secret(&a, &a.clone()));
        assert!(!fsutil::same_secret(&a, &a[..39]));
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("pyro-api-key-{}", std::process::id()));
        let first = load_or_create_key(&dir).unwrap();
        assert_eq!(first, load_or_create_key(&dir).unwrap());
        let mode = std::fs::metadata(key_path(&dir)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
