//! The SDKs' debug mode (`E2B_DEBUG=true`), when `pyro api serve --debug-sandbox` allows it. In that
//! mode the SDKs make no control-plane call and send no credential: `Sandbox.create()` is local, and
//! every in-sandbox call names the sandbox `debug_sandbox_id`. Those calls go to one workspace the
//! server makes on first use (and starts again, or resumes, when its idle TTL stopped it). Since
//! they carry no credential, any local process can use that one sandbox, and nothing else: every
//! other sandbox still wants its token, the control plane its key.

use pyro_core::workspace::{self, lifecycle, CreateOptions};
use pyro_core::{progress, vocab::WorkspaceState};

use crate::errors::ApiError;
use crate::sandboxes::{DEFAULT_TEMPLATE, TEMPLATE_LABEL};
use crate::Api;

/// The sandbox id the SDKs send in debug mode.
pub const SANDBOX_ID: &str = "debug_sandbox_id";
/// Marks the workspace that serves debug mode.
pub const LABEL: &str = "e2b.debug";
/// Its idle TTL: the SDKs' default sandbox timeout.
const TTL_SECONDS: u64 = 300;

/// The workspace serving debug mode, running: found, started or resumed, or made.
pub async fn sandbox(api: &Api) -> Result<String, ApiError> {
    let mut known = api.debug_sandbox.lock().await;
    let id = match known.clone() {
        Some(id) => Some(id),
        None => workspace::list(&api.dirs)?
            .workspaces
            .into_iter()
            .find(|w| w.labels.contains_key(LABEL))
            .map(|w| w.workspace_id),
    };
    if let Some(id) = id {
        match lifecycle::record(&api.dirs, &id) {
            Ok(record) if record.state == WorkspaceState::Started => {
                *known = Some(id.clone());
                return Ok(id);
            }
            Ok(_) => {
                workspace::start(&api.dirs, &id, false, None, &progress::Silent).await?;
                *known = Some(id.clone());
                return Ok(id);
            }
            // Deleted meanwhile: make another.
            Err(err) if err.kind() == pyro_core::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    let mut options = CreateOptions::new(pyro_core::catalog::DEFAULT_ENVIRONMENT);
    options.labels = vec![
        (TEMPLATE_LABEL.to_string(), DEFAULT_TEMPLATE.to_string()),
        (LABEL.to_string(), "true".to_string()),
    ];
    options.ttl_seconds = TTL_SECONDS;
    let created = workspace::create(&api.dirs, &options, &progress::Silent).await?;
    *known = Some(created.workspace_id.clone());
    Ok(created.workspace_id)
}
