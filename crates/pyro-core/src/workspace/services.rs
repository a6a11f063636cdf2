//! Services in a workspace: named long-running commands the guest agent supervises, each with at most
//! one readiness check. The agent holds what runs; pyro records each service's definition and last
//! known state, so `list` answers for a stopped workspace too and `start` can bring back the services
//! that asked to be (`restart_on_start`).

use std::collections::BTreeMap;

pub use pyro_proto::{Readiness, ServiceState};
use pyro_proto::{Reply, Request, ServiceInfo, ServiceSpec};
use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::journal::{self, Operation};
use super::lifecycle;
use super::model::seconds;
use super::ops::{resolve_cwd, started, ExecCommand};
use super::validate;
use crate::agent_client::{self, AgentCall, Purpose};
use crate::db::{sql_error, Db};
use crate::network::NetworkPolicy;
use crate::supervisor::{self, protocol::ClientReply, protocol::ClientRequest};
use crate::vocab::{ExecutionMode, WorkspaceState};
use crate::{limits, Dirs, Error, ErrorKind, Result};

/// Output kept per stream of a service (head and tail).
const OUTPUT_CAP_BYTES: u64 = 1 << 20;
/// How long a stopped service gets between SIGTERM and SIGKILL.
const STOP_GRACE_MS: u64 = 5000;

/// The readiness check, as callers give it: at most one of these.
#[derive(Debug, Clone, Default)]
pub struct ReadinessOptions {
    pub file: Option<String>,
    pub tcp: Option<String>,
    pub http: Option<String>,
    pub command: Option<String>,
}

impl ReadinessOptions {
    /// The one check given (checked and normalised), or none. Two or more is an error: which one
    /// was meant is not pyro's to guess.
    pub fn check(&self) -> Result<Option<Readiness>> {
        let given: Vec<&str> = [
            ("file", &self.file),
            ("tcp", &self.tcp),
            ("http", &self.http),
            ("command", &self.command),
        ]
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| *k)
        .collect();
        if given.len() > 1 {
            return Err(Error::invalid(format!(
                "a service has one readiness check, but {} were given ({})",
                given.len(),
                given.join(", ")
            ))
            .with_hint("choose one of the file, tcp, http or command checks"));
        }
        let readiness = if let Some(path) = &self.file {
            Readiness::File {
                path: validate::workspace_path(path)?,
            }
        } else if let Some(address) = &self.tcp {
            Readiness::Tcp {
                address: tcp_address(address)?,
            }
        } else if let Some(url) = &self.http {
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                return Err(Error::invalid(format!(
                    "the http readiness check takes an http:// URL, got '{url}'"
                ))
                .with_hint("the check runs inside the VM, e.g. http://127.0.0.1:8000/health"));
            }
            Readiness::Http { url: url.clone() }
        } else if let Some(command) = &self.command {
            if command.trim().is_empty() {
                return Err(Error::invalid(
                    "the command readiness check must not be empty",
                ));
            }
            Readiness::Command {
                command: command.clone(),
            }
        } else {
            return Ok(None);
        };
        Ok(Some(readiness))
    }
}

/// `HOST:PORT` with a port in 1..65535.
fn tcp_address(address: &str) -> Result<String> {
    let bad = || {
        Error::invalid(format!(
            "the tcp readiness check takes HOST:PORT (port 1 to 65535), got '{address}'"
        ))
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|&p| p > 0).ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok(format!("{host}:{port}"))
}

/// A guest port to publish on the host's 127.0.0.1, at `host_port` or a free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub guest_port: u16,
    pub host_port: Option<u16>,
}

impl std::str::FromStr for PortSpec {
    type Err = String;

    /// `GUEST` or `HOST:GUEST`.
    fn from_str(text: &str) -> std::result::Result<PortSpec, String> {
        let number = |t: &str| t.trim().parse::<u16>().ok();
        let spec = match text.split_once(':') {
            Some((host, guest)) => PortSpec {
                guest_port: number(guest).ok_or_else(|| format!("'{text}' is not [HOST:]GUEST"))?,
                host_port: Some(
                    number(host).ok_or_else(|| format!("'{text}' is not [HOST:]GUEST"))?,
                ),
            },
            None => PortSpec {
                guest_port: number(text).ok_or_else(|| format!("'{text}' is not [HOST:]GUEST"))?,
                host_port: None,
            },
        };
        spec.check()?;
        Ok(spec)
    }
}

impl PortSpec {
    fn check(&self) -> std::result::Result<(), String> {
        if self.guest_port == 0 {
            return Err("a published guest_port must be between 1 and 65535".into());
        }
        if let Some(host) = self.host_port {
            if host < 1025 {
                return Err(format!(
                    "a published host_port must be between 1025 and 65535, got {host}"
                ));
            }
        }
        Ok(())
    }
}

/// A guest port as published: where on the host it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub host: String,
    pub host_port: u16,
    pub guest_port: u16,
    pub protocol: String,
}

/// The ports asked for, checked: valid numbers, no port twice.
fn checked_ports(ports: &[PortSpec]) -> Result<Vec<PortSpec>> {
    let mut seen_guest = std::collections::BTreeSet::new();
    let mut seen_host = std::collections::BTreeSet::new();
    for port in ports {
        port.check().map_err(Error::invalid)?;
        if !seen_guest.insert(port.guest_port)
            || port.host_port.is_some_and(|h| !seen_host.insert(h))
        {
            return Err(Error::invalid(format!(
                "port {} is published twice",
                port.host_port.unwrap_or(port.guest_port)
            )));
        }
    }
    Ok(ports.to_vec())
}

/// A service name: like a workspace name.
fn service_name(name: &str) -> Result<String> {
    let name = name.trim();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(Error::invalid(format!(
            "invalid service name '{name}': use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    Ok(name.to_string())
}

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub name: String,
    pub command: ExecCommand,
    /// Default `/workspace`; a relative path is taken under it.
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    pub readiness: ReadinessOptions,
    pub ready_timeout_seconds: u64,
    pub ready_interval_ms: u64,
    /// Start it again whenever the workspace starts.
    pub restart_on_start: bool,
    /// Guest ports to publish on the host's 127.0.0.1 once it is ready.
    pub published_ports: Vec<PortSpec>,
    /// Secrets to expose in its environment: secret name → variable name.
    pub secret_env: BTreeMap<String, String>,
}

impl ServiceOptions {
    pub fn new(name: &str, command: ExecCommand) -> ServiceOptions {
        ServiceOptions {
            name: name.to_string(),
            command,
            cwd: None,
            env: BTreeMap::new(),
            readiness: ReadinessOptions::default(),
            ready_timeout_seconds: limits::DEFAULT_READY_TIMEOUT_SECONDS,
            ready_interval_ms: limits::DEFAULT_READY_INTERVAL_MS,
            restart_on_start: false,
            published_ports: Vec::new(),
            secret_env: BTreeMap::new(),
        }
    }
}

/// A service as results show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    pub workspace_id: String,
    pub service_name: String,
    pub state: ServiceState,
    pub command: String,
    pub cwd: String,
    pub readiness: Option<Readiness>,
    pub pid: Option<i32>,
    pub started_at: f64,
    pub ready_at: Option<f64>,
    pub ended_at: Option<f64>,
    pub exit_code: Option<i32>,
    /// Why it is not running: `process_exited_before_ready`, `readiness_timeout`, `sigterm`,
    /// `sigkill`, `workspace_stopped`.
    pub stop_reason: Option<String>,
    pub restart_on_start: bool,
    /// Where its published ports answer on the host, while it runs.
    pub published_ports: Vec<PublishedPort>,
    pub execution_mode: ExecutionMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceList {
    pub workspace_id: String,
    pub count: usize,
    pub running_count: usize,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceLogs {
    #[serde(flatten)]
    pub service: Service,
    pub stdout: String,
    pub stderr: String,
    /// How many lines of each stream the result keeps at most (`null`: all that was kept).
    pub tail_lines: Option<usize>,
    /// Output was cut: the VM keeps the head and tail of each stream, or `tail_lines` cut it.
    pub truncated: bool,
}

/// What pyro remembers of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    spec: ServiceSpec,
    restart_on_start: bool,
    last: ServiceInfo,
    /// The ports asked for.
    #[serde(default)]
    ports: Vec<PortSpec>,
    /// The ports bound on the host, while it runs.
    #[serde(default)]
    published: Vec<PublishedPort>,
    /// Secrets in its environment: secret name → variable (the values are read at each start).
    #[serde(default)]
    secret_env: BTreeMap<String, String>,
}

fn view(workspace_id: &str, stored: &Stored) -> Service {
    let info = &stored.last;
    let ms = |t: u64| seconds(t as i64);
    Service {
        workspace_id: workspace_id.to_string(),
        service_name: info.name.clone(),
        state: info.state,
        command: info.command.clone(),
        cwd: info.cwd.clone(),
        readiness: info.readiness.clone(),
        pid: info.pid,
        started_at: ms(info.started_at_ms),
        ready_at: info.ready_at_ms.map(ms),
        ended_at: info.ended_at_ms.map(ms),
        exit_code: info.exit_code,
        stop_reason: info.stop_reason.clone(),
        restart_on_start: stored.restart_on_start,
        published_ports: stored.published.clone(),
        execution_mode: ExecutionMode::Guest,
    }
}

fn load_all(db: &Db, workspace_id: &str) -> Result<Vec<Stored>> {
    let mut stmt = db
        .conn()
        .prepare("SELECT record FROM services WHERE workspace_id = ?1 ORDER BY name")
        .map_err(sql_error)?;
    let rows = stmt
        .query_map(params![workspace_id], |row| row.get::<_, String>(0))
        .map_err(sql_error)?;
    let mut stored = Vec::new();
    for row in rows {
        // A record this build cannot read (another version's) is left out, not fatal.
        if let Ok(record) = serde_json::from_str::<Stored>(&row.map_err(sql_error)?) {
            stored.push(record);
        }
    }
    Ok(stored)
}

fn save(db: &mut Db, workspace_id: &str, stored: &Stored) -> Result<()> {
    let text = serde_json::to_string(stored)
        .map_err(|e| Error::internal(format!("cannot record the service: {e}")))?;
    db.write(|tx| {
        tx.execute(
            "INSERT INTO services (workspace_id, name, record) VALUES (?1, ?2, ?3)
             ON CONFLICT (workspace_id, name) DO UPDATE SET record = excluded.record",
            params![workspace_id, stored.spec.name, text],
        )
        .map_err(sql_error)?;
        Ok(())
    })
}

/// Brings the records up to date with what the agent says runs (when the workspace is started), or
/// marks running ones stopped with their workspace (when it is not).
async fn refreshed(db: &mut Db, dirs: &Dirs, record: &super::store::Record) -> Result<Vec<Stored>> {
    let mut stored = load_all(db, &record.id)?;
    if record.state == WorkspaceState::Started {
        let dir = lifecycle::vm_dir(dirs, &record.id);
        let live =
            match agent_client::call_as(&dir, &Request::ServiceList, Purpose::Inspection).await? {
                Reply::Services { services } => services,
                other => return Err(agent_client::unexpected(other)),
            };
        for entry in &mut stored {
            match live.iter().find(|l| l.name == entry.spec.name) {
                // pyro's own verdict on this run (e.g. its ports could not be published) stands.
                Some(now)
                    if entry.last.state == ServiceState::Failed
                        && now.started_at_ms == entry.last.started_at_ms => {}
                Some(now) => entry.last = now.clone(),
                None => mark_gone(&mut entry.last, "workspace_stopped"),
            }
            if entry.last.state != ServiceState::Running {
                entry.published.clear();
            }
        }
    } else {
        for entry in &mut stored {
            // A suspended workspace's services are kept in its memory; their listeners on the
            // host went with its supervisor.
            if record.state != WorkspaceState::Suspended {
                mark_gone(&mut entry.last, "workspace_stopped");
            }
            entry.published.clear();
        }
    }
    Ok(stored)
}

/// A fork's services are its source's: they run on in its memory (ports are published again once
/// it runs, see [`republish`]).
pub(super) fn copy_records(db: &mut Db, from: &str, to: &str) -> Result<()> {
    for mut stored in load_all(db, from)? {
        stored.published.clear();
        save(db, to, &stored)?;
    }
    Ok(())
}

/// After a resume: the services that ran on get their published ports again (the supervisor that
/// listened for them is a new one).
pub async fn republish(dirs: &Dirs, workspace_id: &str) -> Result<()> {
    let mut db = Db::open(dirs)?;
    // Only services with ports need anything: their listeners went with the old supervisor.
    if load_all(&db, workspace_id)?
        .iter()
        .all(|s| s.ports.is_empty())
    {
        return Ok(());
    }
    let record = super::store::resolve(db.conn(), workspace_id)?;
    let dir = lifecycle::vm_dir(dirs, workspace_id);
    for mut stored in refreshed(&mut db, dirs, &record).await? {
        if stored.last.state == ServiceState::Running && !stored.ports.is_empty() {
            stored.published.clear();
            let _ = publish(&dir, &mut stored).await;
        }
        save(&mut db, workspace_id, &stored)?;
    }
    Ok(())
}

/// A service whose VM no longer runs it.
fn mark_gone(info: &mut ServiceInfo, reason: &str) {
    if info.state == ServiceState::Running {
        info.state = ServiceState::Stopped;
        info.stop_reason = Some(reason.to_string());
        info.pid = None;
    }
}

fn not_found(workspace_id: &str, name: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("service '{name}' does not exist in workspace {workspace_id}"),
    )
}

/// Starts a service and answers once it is ready (or failed: its state and logs say why).
pub async fn start(dirs: &Dirs, reference: &str, options: &ServiceOptions) -> Result<Service> {
    let name = service_name(&options.name)?;
    let readiness = options.readiness.check()?;
    limits::check(
        "ready_timeout_seconds",
        options.ready_timeout_seconds,
        &limits::READY_TIMEOUT_SECONDS,
    )?;
    limits::check(
        "ready_interval_ms",
        options.ready_interval_ms,
        &limits::READY_INTERVAL_MS,
    )?;
    crate::run::validate_env(&options.env)?;
    let (_, _, command) = options.command.to_wire()?;
    let cwd = resolve_cwd(options.cwd.as_deref())?;
    let ports = checked_ports(&options.published_ports)?;
    let (mut db, record, dir) = started(dirs, reference, "service start")?;
    if !ports.is_empty() && record.network.policy != NetworkPolicy::EgressPublishedPorts {
        return Err(Error::invalid(format!(
            "published ports need the egress+published-ports network policy; workspace {} has {}",
            record.id, record.network.policy
        ))
        .with_hint("create the workspace with that network policy to publish ports"));
    }
    let spec = ServiceSpec {
        name,
        command,
        cwd,
        env: options.env.clone(),
        readiness,
        ready_timeout_ms: options.ready_timeout_seconds * 1000,
        ready_interval_ms: options.ready_interval_ms,
        output_cap_bytes: OUTPUT_CAP_BYTES,
    };
    // Checked before anything starts: an unknown secret is the caller's error.
    let wdir = lifecycle::workspace_dir(dirs, &record.id);
    super::ops::with_secrets(&wdir, &record.id, &options.env, &options.secret_env)?;
    let timer = journal::Timer::start();
    let info = run_start(dirs, &record.id, &spec, &options.secret_env).await?;
    let mut stored = Stored {
        spec,
        restart_on_start: options.restart_on_start,
        last: info,
        ports,
        published: Vec::new(),
        secret_env: options.secret_env.clone(),
    };
    let publishing = publish(&dir, &mut stored).await;
    save(&mut db, &record.id, &stored)?;
    publishing?;
    let operation = Operation::ServiceStart {
        params: journal::ServiceParams {
            name: stored.spec.name.clone(),
        },
        result: stored.last.clone(),
    };
    let ok = stored.last.state == ServiceState::Running;
    timer.record(&mut db, &record.id, ok, &operation)?;
    Ok(view(&record.id, &stored))
}

/// Publishes a running service's ports. When one cannot be bound, the service is stopped (and the
/// ports bound so far freed) and recorded failed: a service is up with all its ports or not at all.
async fn publish(dir: &std::path::Path, stored: &mut Stored) -> Result<()> {
    if stored.last.state != ServiceState::Running {
        return Ok(());
    }
    for port in stored.ports.clone() {
        let request = ClientRequest::Publish {
            guest_port: port.guest_port,
            host_port: port.host_port,
        };
        let failure = match supervisor::request(dir, &request).await {
            Ok(ClientReply::Published { host_port }) => {
                stored.published.push(PublishedPort {
                    host: "127.0.0.1".into(),
                    host_port,
                    guest_port: port.guest_port,
                    protocol: "tcp".into(),
                });
                continue;
            }
            Ok(ClientReply::Error { message }) => message,
            Ok(other) => format!("unexpected supervisor reply: {other:?}"),
            Err(err) => err.to_string(),
        };
        unpublish(dir, stored).await;
        let stop = Request::ServiceStop {
            name: stored.spec.name.clone(),
            grace_ms: STOP_GRACE_MS,
        };
        if let Ok(Reply::Service(info)) = agent_client::call(dir, &stop).await {
            stored.last = info;
        }
        stored.last.state = ServiceState::Failed;
        stored.last.stop_reason = Some("published_port_failed".into());
        return Err(Error::invalid(format!(
            "cannot publish guest port {} of service '{}': {failure}",
            port.guest_port, stored.spec.name
        ))
        .with_hint("choose another host port, or leave it out to get a free one"));
    }
    Ok(())
}

/// Frees the host ports a service holds.
async fn unpublish(dir: &std::path::Path, stored: &mut Stored) {
    for port in stored.published.drain(..) {
        let request = ClientRequest::Unpublish {
            host_port: port.host_port,
        };
        let _ = supervisor::request(dir, &request).await;
    }
}

/// The agent's start call, with a deadline that covers the readiness timeout.
/// Starts `spec` in the workspace's VM, with the secrets `secret_env` names (read now, never stored
/// with the service) in its environment.
async fn run_start(
    dirs: &Dirs,
    workspace_id: &str,
    spec: &ServiceSpec,
    secret_env: &BTreeMap<String, String>,
) -> Result<ServiceInfo> {
    let wdir = lifecycle::workspace_dir(dirs, workspace_id);
    let dir = lifecycle::vm_dir(dirs, workspace_id);
    let dir = dir.as_path();
    let spec = ServiceSpec {
        env: super::ops::with_secrets(&wdir, workspace_id, &spec.env, secret_env)?,
        ..spec.clone()
    };
    let limit =
        agent_client::deadline_for(0) + std::time::Duration::from_millis(spec.ready_timeout_ms);
    let call =
        AgentCall::start_with(dir, &Request::ServiceStart(spec), Purpose::Activity, limit).await?;
    match call.collect(0).await?.0 {
        Reply::Service(info) => Ok(info),
        other => Err(agent_client::unexpected(other)),
    }
}

/// Starts again, after a workspace start, the services that asked for it. Each outcome is recorded;
/// a service that fails does not fail the start.
pub async fn restart_marked(dirs: &Dirs, workspace_id: &str) -> Result<()> {
    let mut db = Db::open(dirs)?;
    let dir = lifecycle::vm_dir(dirs, workspace_id);
    for mut stored in load_all(&db, workspace_id)? {
        if !stored.restart_on_start {
            continue;
        }
        stored.published.clear();
        match run_start(dirs, workspace_id, &stored.spec, &stored.secret_env).await {
            Ok(info) => {
                stored.last = info;
                let _ = publish(&dir, &mut stored).await;
            }
            Err(err) => {
                stored.last.state = ServiceState::Failed;
                stored.last.stop_reason = Some(format!("restart failed: {err}"));
            }
        }
        save(&mut db, workspace_id, &stored)?;
    }
    Ok(())
}

pub async fn stop(dirs: &Dirs, reference: &str, name: &str) -> Result<Service> {
    let (mut db, record, dir) = started(dirs, reference, "service stop")?;
    let mut stored = load_all(&db, &record.id)?
        .into_iter()
        .find(|s| s.spec.name == name)
        .ok_or_else(|| not_found(&record.id, name))?;
    let timer = journal::Timer::start();
    let request = Request::ServiceStop {
        name: name.to_string(),
        grace_ms: STOP_GRACE_MS,
    };
    let info = match agent_client::call(&dir, &request).await {
        Ok(Reply::Service(info)) => info,
        Ok(other) => return Err(agent_client::unexpected(other)),
        // The VM restarted since: nothing of it runs.
        Err(err) if err.kind() == ErrorKind::NotFound => {
            let mut info = stored.last.clone();
            mark_gone(&mut info, "workspace_stopped");
            info
        }
        Err(err) => return Err(err),
    };
    stored.last = info;
    unpublish(&dir, &mut stored).await;
    save(&mut db, &record.id, &stored)?;
    let operation = Operation::ServiceStop {
        params: journal::ServiceParams {
            name: name.to_string(),
        },
        result: stored.last.clone(),
    };
    timer.record(&mut db, &record.id, true, &operation)?;
    Ok(view(&record.id, &stored))
}

pub async fn list(dirs: &Dirs, reference: &str) -> Result<ServiceList> {
    let mut db = Db::open(dirs)?;
    let record = lifecycle::find(dirs, &db, reference)?;
    let stored = refreshed(&mut db, dirs, &record).await?;
    for entry in &stored {
        save(&mut db, &record.id, entry)?;
    }
    let services: Vec<Service> = stored.iter().map(|s| view(&record.id, s)).collect();
    Ok(ServiceList {
        workspace_id: record.id,
        count: services.len(),
        running_count: services
            .iter()
            .filter(|s| s.state == ServiceState::Running)
            .count(),
        services,
    })
}

pub async fn status(dirs: &Dirs, reference: &str, name: &str) -> Result<Service> {
    let list = list(dirs, reference).await?;
    let workspace_id = list.workspace_id.clone();
    list.services
        .into_iter()
        .find(|s| s.service_name == name)
        .ok_or_else(|| not_found(&workspace_id, name))
}

/// A service with its output: the last `tail_lines` lines of each stream (all that was kept with
/// `None`). Reading it is not activity.
pub async fn logs(
    dirs: &Dirs,
    reference: &str,
    name: &str,
    tail_lines: Option<usize>,
) -> Result<ServiceLogs> {
    if tail_lines == Some(0) {
        return Err(Error::invalid("tail_lines must be positive"));
    }
    let (mut db, record, dir) = started(dirs, reference, "service logs")?;
    let mut stored = load_all(&db, &record.id)?
        .into_iter()
        .find(|s| s.spec.name == name)
        .ok_or_else(|| not_found(&record.id, name))?;
    let request = Request::ServiceOutput {
        name: name.to_string(),
    };
    let output = match agent_client::call_as(&dir, &request, Purpose::Inspection).await? {
        Reply::ServiceOutput(output) => output,
        other => return Err(agent_client::unexpected(other)),
    };
    stored.last = output.service.clone();
    save(&mut db, &record.id, &stored)?;
    let redactor =
        super::secrets::Redactor::for_workspace(&lifecycle::workspace_dir(dirs, &record.id))?;
    let (stdout, cut_out) = tail(&redactor.capped(&output.stdout), tail_lines);
    let (stderr, cut_err) = tail(&redactor.capped(&output.stderr), tail_lines);
    Ok(ServiceLogs {
        service: view(&record.id, &stored),
        stdout,
        stderr,
        tail_lines,
        truncated: output.stdout_truncated || output.stderr_truncated || cut_out || cut_err,
    })
}

/// The last `lines` lines of `text`, and whether any were cut.
fn tail(text: &str, lines: Option<usize>) -> (String, bool) {
    let Some(lines) = lines else {
        return (text.to_string(), false);
    };
    let body = text.strip_suffix('\n').unwrap_or(text);
    let all: Vec<&str> = body.split('\n').collect();
    if body.is_empty() || all.len() <= lines {
        return (text.to_string(), false);
    }
    let mut kept = all[all.len() - lines..].join("\n");
    if text.ends_with('\n') {
        kept.push('\n');
    }
    (kept, true)
}

/// The number of services recorded for a workspace, and of those last seen running.
pub fn counts(
    conn: &rusqlite::Connection,
    workspace_id: &str,
    started: bool,
) -> Result<(u64, u64)> {
    let mut stmt = conn
        .prepare("SELECT record FROM services WHERE workspace_id = ?1")
        .map_err(sql_error)?;
    let rows = stmt
        .query_map(params![workspace_id], |row| row.get::<_, String>(0))
        .map_err(sql_error)?;
    let (mut total, mut running) = (0, 0);
    for row in rows {
        total += 1;
        let record = row.map_err(sql_error)?;
        let is_running = serde_json::from_str::<Stored>(&record)
            .is_ok_and(|s| s.last.state == ServiceState::Running);
        if started && is_running {
            running += 1;
        }
    }
    Ok((total, running))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_readiness_check_at_most() {
        let mut options = ReadinessOptions {
            file: Some(".ready".into()),
            ..Default::default()
        };
        assert_eq!(
            options.check().unwrap(),
            Some(Readiness::File {
                path: "/workspace/.ready".into()
            })
        );
        options.tcp = Some("127.0.0.1:8000".into());
        let err = options.check().unwrap_err();
        assert!(
            err.message().contains("2 were given (file, tcp)"),
            "{}",
            err.message()
        );
        for bad in ["8000", ":80", "h:0", "h:70000"] {
            let options = ReadinessOptions {
                tcp: Some(bad.into()),
                ..Default::default()
            };
            assert!(options.check().is_err(), "{bad}");
        }
        let https = ReadinessOptions {
            http: Some("https://x".into()),
            ..Default::default()
        };
        assert!(https.check().is_err());
        assert_eq!(ReadinessOptions::default().check().unwrap(), None);
    }

    #[test]
    fn logs_keep_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", Some(2)), ("b\nc\n".to_string(), true));
        assert_eq!(tail("a\nb\n", Some(5)), ("a\nb\n".to_string(), false));
        assert_eq!(tail("a\nb", None), ("a\nb".to_string(), false));
        assert!(service_name("web").is_ok());
        assert!(service_name("-x").is_err());
        assert!(service_name("a b").is_err());
    }

    #[test]
    fn ports_are_guest_or_host_colon_guest() {
        let parse = |t: &str| t.parse::<PortSpec>();
        assert_eq!(
            parse("8000"),
            Ok(PortSpec {
                guest_port: 8000,
                host_port: None
            })
        );
        assert_eq!(
            parse("18000:8000"),
            Ok(PortSpec {
                guest_port: 8000,
                host_port: Some(18000)
            })
        );
        for bad in ["0", "80:8000", "x", "1:2:3", "70000"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let twice = [parse("8000").unwrap(), parse("9000:8000").unwrap()];
        assert!(checked_ports(&twice).is_err());
    }
}
