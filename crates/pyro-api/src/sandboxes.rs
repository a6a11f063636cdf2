//! How an E2B sandbox maps onto pyro: a sandbox is a workspace made through this API (its label
//! [`TEMPLATE_LABEL`] names the template it was asked for), a template is an environment, the
//! sandbox's metadata are labels under [`METADATA_PREFIX`], and its environment variables are kept
//! beside the workspace for the commands the API starts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyro_core::catalog;
use pyro_core::vocab::WorkspaceState;
use pyro_core::workspace::{self, lifecycle, validate, Workspace};
use pyro_core::{fsutil, Dirs};
use serde::{Deserialize, Serialize};

use crate::errors::ApiError;

/// Marks a workspace as a sandbox and names the template it was made from.
pub const TEMPLATE_LABEL: &str = "e2b.template";
/// A sandbox's metadata key `k` is the workspace label `e2b.meta.k`.
pub const METADATA_PREFIX: &str = "e2b.meta.";
/// Marks a sandbox whose ports take requests without its traffic token.
pub const PUBLIC_TRAFFIC_LABEL: &str = "e2b.public-traffic";
/// The template the SDKs ask for when none is given.
pub const DEFAULT_TEMPLATE: &str = "base";

/// The environment a template names: `base` is pyro's default, any other must be an environment.
pub fn environment_of(template: &str) -> Result<String, ApiError> {
    let name = if template == DEFAULT_TEMPLATE {
        catalog::DEFAULT_ENVIRONMENT
    } else {
        template
    };
    catalog::lookup(name).map_err(|_| {
        ApiError::bad_request(format!(
            "template '{template}' is not a pyro environment; the templates are '{DEFAULT_TEMPLATE}' ({}) and {} (hint: `pyro env list` describes them)",
            catalog::DEFAULT_ENVIRONMENT,
            catalog::CATALOG
                .iter()
                .map(|spec| format!("'{}'", spec.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok(name.to_string())
}

/// The labels holding `metadata`, each key and value checked as labels are.
pub fn metadata_labels(
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ApiError> {
    metadata
        .iter()
        .map(|(key, value)| {
            let label = format!("{METADATA_PREFIX}{key}");
            validate::label_key(&label)
                .and_then(|label| validate::label_value(&label, value).map(|v| (label, v)))
                .map_err(|err| {
                    ApiError::bad_request(format!(
                        "metadata '{key}' cannot be kept: {} (keys are letters, digits, '.', '_' or '-'; values up to 120 characters)",
                        err.message()
                    ))
                })
        })
        .collect()
}

/// A sandbox's metadata, from its labels.
pub fn metadata_of(workspace: &Workspace) -> BTreeMap<String, String> {
    workspace
        .labels
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(METADATA_PREFIX)?.to_string(), v.clone())))
        .collect()
}

pub fn template_of(workspace: &Workspace) -> Option<&str> {
    workspace.labels.get(TEMPLATE_LABEL).map(String::as_str)
}

/// Looks `id` up as `look` does, refusing ids of anything but a workspace made through this API.
fn lookup<T>(
    id: &str,
    look: impl FnOnce() -> pyro_core::Result<T>,
    labels: impl Fn(&T) -> &BTreeMap<String, String>,
) -> Result<T, ApiError> {
    if !validate::is_id(id) {
        return Err(ApiError::not_found(format!(
            "sandbox '{id}' not found: sandbox ids are 12 hex digits (hint: `Sandbox.list()` or `pyro workspace list` shows them)"
        )));
    }
    let found = look().map_err(|err| match err.kind() {
        pyro_core::ErrorKind::NotFound => ApiError::not_found(format!(
            "sandbox '{id}' not found: it was killed, or never existed (hint: `Sandbox.list()` shows the sandboxes)"
        )),
        _ => ApiError::from(err),
    })?;
    if !labels(&found).contains_key(TEMPLATE_LABEL) {
        return Err(ApiError::not_found(format!(
            "sandbox '{id}' not found: {id} is a pyro workspace that was not made through this API (hint: use it with `pyro workspace`, or create a sandbox with `Sandbox.create()`)"
        )));
    }
    Ok(found)
}

/// The sandbox `id`: a workspace made through this API. A pyro id of anything else is not one.
pub fn find(dirs: &Dirs, id: &str) -> Result<Workspace, ApiError> {
    lookup(id, || workspace::status(dirs, id), |w| &w.labels)
}

/// Whether the sandbox `id` runs (what each in-sandbox call checks; cheaper than [`find`]).
pub fn is_running(dirs: &Dirs, id: &str) -> Result<bool, ApiError> {
    Ok(record(dirs, id)?.state == WorkspaceState::Started)
}

/// The stored record of the sandbox `id`.
pub fn record(dirs: &Dirs, id: &str) -> Result<workspace::store::Record, ApiError> {
    lookup(id, || lifecycle::record(dirs, id), |r| &r.labels)
}

/// `running`, or `paused` for a workspace whose VM is not running (suspended, or stopped by its
/// idle TTL: connecting starts it again either way).
pub fn state_of(workspace: &Workspace) -> &'static str {
    match workspace.state {
        WorkspaceState::Started => "running",
        _ => "paused",
    }
}

/// What the API keeps of a sandbox beyond its workspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Settings {
    /// Set for every command the API starts in the sandbox.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
}

fn settings_path(dirs: &Dirs, id: &str) -> PathBuf {
    dirs.state()
        .join("api")
        .join("sandboxes")
        .join(format!("{id}.json"))
}

pub fn save_settings(dirs: &Dirs, id: &str, settings: &Settings) -> pyro_core::Result<()> {
    let path = settings_path(dirs, id);
    fsutil::create_dir_all(path.parent().unwrap_or(dirs.state()))?;
    let text = serde_json::to_vec(settings)
        .map_err(|e| pyro_core::Error::internal(format!("cannot encode settings: {e}")))?;
    // Environment variables may hold credentials.
    fsutil::write_atomic_mode(&path, &text, 0o600)
}

pub fn load_settings(dirs: &Dirs, id: &str) -> Settings {
    std::fs::read(settings_path(dirs, id))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

pub fn forget_settings(dirs: &Dirs, id: &str) {
    let _ = std::fs::remove_file(settings_path(dirs, id));
}

/// Milliseconds since the epoch as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
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
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_256_000_000), "2026-12-03T00:00:00.000Z");
    }

    #[test]
    fn templates_are_environments() {
        assert_eq!(
            environment_of("base").unwrap(),
            catalog::DEFAULT_ENVIRONMENT
        );
        assert_eq!(
            environment_of("debian:12-build").unwrap(),
            "debian:12-build"
        );
        let err = environment_of("code-interpreter-v1").unwrap_err();
        assert!(err.message.contains("'debian:12-base'"), "{}", err.message);
    }

    #[test]
    fn metadata_round_trips_through_labels() {
        let metadata = BTreeMap::from([("owner".to_string(), "ci".to_string())]);
        let labels = metadata_labels(&metadata).unwrap();
        assert_eq!(
            labels,
            vec![("e2b.meta.owner".to_string(), "ci".to_string())]
        );
        let bad = BTreeMap::from([("has space".to_string(), "x".to_string())]);
        assert!(metadata_labels(&bad).is_err());
    }
}
