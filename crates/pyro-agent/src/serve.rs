//! The request loop: one yamux session over the port, one request per stream, served concurrently.

use std::io;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use pyro_proto::{GuestErrorKind, HelloReply, Reply, Request, PROTOCOL_VERSION};
use tokio::io::AsyncWriteExt;
use tokio_yamux::{Session, StreamHandle};

use crate::{
    activate, archive, exec, files, freeze, log, path_ops, payload, port, processes, reaper,
    services, shells, snapview, sys, watch,
};

pub async fn serve() -> io::Result<()> {
    reaper::start()?;
    let path = port::find(pyro_proto::AGENT_PORT_NAME, Duration::from_secs(20))?;
    let port = port::Port::open(&path)?;
    log(&format!("ready on {path} (protocol {PROTOCOL_VERSION})"));
    let mut io = port.session_stream()?;
    loop {
        wait_for_session(&mut io).await?;
        let mut session = Session::new_server(io, pyro_proto::mux_config());
        // This session's own: a `Detach` answered late, after its session ended for another
        // reason, must not end the next one.
        let detach = std::sync::Arc::new(tokio::sync::Notify::new());
        loop {
            tokio::select! {
                stream = session.next() => match stream {
                    Some(Ok(stream)) => {
                        tokio::spawn(handle(stream, detach.clone()));
                    }
                    Some(Err(err)) => log(&format!("session error: {err}")),
                    None => break,
                },
                _ = detach.notified() => break,
            }
        }
        // The host's next bytes belong to the next session; this one's streams end with it, once
        // what they wrote (the answer to `Detach`) is out.
        io = port.session_stream()?;
        let flush = async { while session.next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_millis(50), flush).await;
        drop(session);
        log("session ended; waiting for a new one");
    }
}

/// Answers probes until a host asks for a session. A memory snapshot of a ready guest is taken in this
/// state, so every restore starts its own session from here.
async fn wait_for_session(io: &mut tokio::io::DuplexStream) -> io::Result<()> {
    use pyro_proto::preamble::{read_line, PROBE, READY, SESSION, SESSION_OK};
    loop {
        let line = read_line(io).await?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some(PROBE), Some(nonce)) => {
                io.write_all(format!("{READY} {nonce} {}\n", sys::boot_id()).as_bytes())
                    .await?;
            }
            (Some(SESSION), Some(nonce)) => {
                io.write_all(format!("{SESSION_OK} {nonce}\n").as_bytes())
                    .await?;
                return Ok(());
            }
            _ => log(&format!(
                "ignored a stray line before the session ({} bytes)",
                line.len()
            )),
        }
    }
}

/// The most a single file write, or a batch of them, may carry.
const MAX_WRITE_BYTES: u64 = 64 << 20;
/// Reads are served in chunks of at most this much.
const MAX_READ_BYTES: u64 = 16 << 20;

/// Answers some requests in place of the agent, as a hostile guest would. Only a test build of the
/// agent (`pyro-test-agent`) sets one; the shipped agent has none.
pub trait Forger: Send + Sync {
    /// Handles `request` on `stream` itself (`None`), or hands it back to the agent.
    fn forge<'a>(
        &'a self,
        request: Request,
        stream: &'a mut StreamHandle,
    ) -> futures::future::BoxFuture<'a, Option<Request>>;
}

static FORGER: std::sync::OnceLock<&'static dyn Forger> = std::sync::OnceLock::new();

pub fn set_forger(forger: &'static dyn Forger) {
    let _ = FORGER.set(forger);
}

/// Serves one request. `detach` is notified, once the answer is out, when the request ends the
/// session.
async fn handle(mut stream: StreamHandle, detach: std::sync::Arc<tokio::sync::Notify>) {
    let request: Request = match pyro_proto::read_frame(&mut stream).await {
        Ok(Some(frame)) => match frame.into_message() {
            Ok(request) => request,
            Err(err) => {
                reply(&mut stream, error(err)).await;
                return;
            }
        },
        _ => return,
    };
    let request = match FORGER.get() {
        Some(forger) => match forger.forge(request, &mut stream).await {
            Some(request) => request,
            None => {
                let _ = stream.shutdown().await;
                return;
            }
        },
        None => request,
    };
    if let Request::OpenPort { port } = request {
        open_port(stream, port).await;
        return;
    }
    let power_off = matches!(request, Request::PowerOff);
    let ends_session = matches!(request, Request::Detach);
    // What changes the disk is on it before the answer: acknowledged means durable.
    let changes_disk = matches!(
        request,
        Request::Exec(_)
            | Request::WriteFiles { .. }
            | Request::ExtractArchive { .. }
            | Request::MakeDir { .. }
            | Request::RemovePath { .. }
            | Request::RenamePath { .. }
    );
    let mut answer = dispatch(request, &mut stream).await;
    if changes_disk {
        if let Err(err) = blocking(activate::flush_disk).await {
            answer = Err(io::Error::other(format!(
                "the change may not have reached the disk: {err}"
            )));
        }
    }
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => error(err),
    };
    // A host that gave up waiting for the answer keeps its session: only an answer it can read ends it.
    if reply(&mut stream, answer).await && ends_session {
        detach.notify_one();
    }
    if power_off {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if std::process::id() == 1 {
            crate::init::power_off();
        }
        std::process::exit(0);
    }
}

fn require_active() -> io::Result<()> {
    if activate::is_active() {
        Ok(())
    } else {
        Err(io::Error::other("the VM is not activated yet"))
    }
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
}

async fn dispatch(request: Request, stream: &mut StreamHandle) -> io::Result<Reply> {
    match request {
        Request::Hello {
            protocol_version, ..
        } => Ok(hello(protocol_version)),
        Request::Activate(activation) => activate::activate(&activation).map(Reply::Activated),
        Request::PowerOff => Ok(Reply::PoweringOff),
        Request::Detach => Ok(Reply::Detached),
        Request::ReleaseDisk => blocking(activate::release_disk)
            .await
            .map(|()| Reply::DiskReleased),
        Request::FreezeDisk { thaw_after_ms } => {
            blocking(move || freeze::freeze(Duration::from_millis(thaw_after_ms))).await?;
            Ok(Reply::Frozen)
        }
        Request::ThawDisk => {
            let was_frozen = blocking(freeze::thaw).await?;
            Ok(Reply::Thawed { was_frozen })
        }
        Request::Sync => {
            blocking(|| {
                // SAFETY: sync takes no arguments.
                unsafe { libc::sync() };
                Ok(())
            })
            .await?;
            Ok(Reply::Synced)
        }
        Request::Exec(exec) => {
            require_active()?;
            exec::run(&exec, Path::new(activate::ROOT), stream)
                .await
                .map(Reply::Exited)
        }
        Request::ListFiles {
            path,
            recursive,
            max_entries,
        } => {
            require_active()?;
            blocking(move || files::list(&path, recursive, max_entries))
                .await
                .map(Reply::Files)
        }
        Request::ReadFile {
            path,
            offset,
            max_bytes,
        } => {
            require_active()?;
            let max_bytes = max_bytes.min(MAX_READ_BYTES);
            let (info, data) = blocking(move || files::read(&path, offset, max_bytes)).await?;
            pyro_proto::write_payload(stream, &data).await?;
            Ok(Reply::FileRead(info))
        }
        Request::WriteFiles {
            files: specs,
            deletes,
        } => {
            require_active()?;
            let mut contents = Vec::with_capacity(specs.len());
            let mut total = 0u64;
            for spec in specs {
                let data = payload::read_payload(stream, MAX_WRITE_BYTES - total).await?;
                total += data.len() as u64;
                contents.push((spec, data));
            }
            blocking(move || files::write_files(&contents, &deletes))
                .await
                .map(Reply::Written)
        }
        Request::Manifest { path, max_entries } => {
            require_active()?;
            let manifest = blocking(move || files::manifest(&path, max_entries)).await?;
            // The entries go as a payload: a large tree does not fit in one message frame.
            pyro_proto::write_payload(stream, &serde_json::to_vec(&manifest.entries)?).await?;
            Ok(Reply::Manifest(pyro_proto::Manifest {
                entries: Vec::new(),
                truncated: manifest.truncated,
            }))
        }
        Request::ExtractArchive { destination } => {
            require_active()?;
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let extraction = tokio::task::spawn_blocking(move || {
                archive::extract(&destination, payload::ChannelReader::new(rx))
            });
            let forwarded = payload::forward_payload(stream, tx).await;
            let summary = extraction
                .await
                .map_err(|e| io::Error::other(e.to_string()))??;
            forwarded?;
            Ok(Reply::Extracted(summary))
        }
        Request::ServiceStart(spec) => {
            require_active()?;
            services::start(spec, Path::new(activate::ROOT))
                .await
                .map(Reply::Service)
        }
        Request::ServiceStop { name, grace_ms } => {
            require_active()?;
            services::stop(&name, Duration::from_millis(grace_ms))
                .await
                .map(Reply::Service)
        }
        Request::ServiceList => Ok(Reply::Services {
            services: services::list(),
        }),
        Request::ServiceOutput { name } => services::output(&name).map(Reply::ServiceOutput),
        Request::ShellOpen(spec) => {
            require_active()?;
            shells::open(spec, Path::new(activate::ROOT)).map(Reply::Shell)
        }
        Request::ShellRead {
            shell_id,
            cursor,
            max_bytes,
        } => {
            let (chunk, data) = shells::read(&shell_id, cursor, max_bytes.min(MAX_READ_BYTES))?;
            pyro_proto::write_payload(stream, &data).await?;
            Ok(Reply::ShellOutput(chunk))
        }
        Request::ShellWrite { shell_id, input } => {
            shells::write(&shell_id, &input).map(Reply::Shell)
        }
        Request::ShellResize {
            shell_id,
            cols,
            rows,
        } => shells::resize(&shell_id, cols, rows).map(Reply::Shell),
        Request::ShellSignal { shell_id, signal } => {
            shells::signal(&shell_id, signal).map(Reply::Shell)
        }
        Request::ShellClose { shell_id, grace_ms } => {
            shells::close(&shell_id, Duration::from_millis(grace_ms))
                .await
                .map(Reply::Shell)
        }
        Request::ShellList => Ok(Reply::Shells {
            shells: shells::list(),
        }),
        Request::StatPath { path } => {
            require_active()?;
            blocking(move || path_ops::stat(&path))
                .await
                .map(Reply::Entry)
        }
        Request::MakeDir { path } => {
            require_active()?;
            let (entry, created) = blocking(move || path_ops::make_dir(&path)).await?;
            Ok(Reply::MadeDir { entry, created })
        }
        Request::RemovePath { path } => {
            require_active()?;
            blocking(move || path_ops::remove(&path))
                .await
                .map(|()| Reply::Removed)
        }
        Request::RenamePath { from, to } => {
            require_active()?;
            blocking(move || path_ops::rename(&from, &to))
                .await
                .map(Reply::Entry)
        }
        Request::OpenPort { .. } => Err(io::Error::other("a port is opened before dispatch")),
        Request::WatchStart { path, recursive } => {
            require_active()?;
            watch::start(&path, recursive).map(|watcher_id| Reply::Watching { watcher_id })
        }
        Request::WatchEvents {
            watcher_id,
            wait_ms,
        } => {
            let wait = Duration::from_millis(wait_ms.min(30_000));
            let (events, dropped) = watch::events(&watcher_id, wait).await?;
            Ok(Reply::WatchEvents { events, dropped })
        }
        Request::WatchStop { watcher_id } => watch::stop(&watcher_id).map(|()| Reply::WatchStopped),
        Request::ProcessStart(spec) => {
            require_active()?;
            processes::start(spec, Path::new(activate::ROOT)).map(Reply::Process)
        }
        Request::ProcessFollow { pid, from } => processes::follow(pid, from, stream)
            .await
            .map(Reply::Process),
        Request::ProcessInput { pid } => {
            let data = payload::read_payload(stream, pyro_proto::MAX_PROCESS_INPUT_BYTES).await?;
            processes::input(pid, &data).await.map(Reply::Process)
        }
        Request::ProcessCloseStdin { pid } => processes::close_stdin(pid).await.map(Reply::Process),
        Request::ProcessSignal { pid, signal } => {
            processes::signal(pid, signal).map(Reply::Process)
        }
        Request::ProcessResize { pid, size } => processes::resize(pid, size).map(Reply::Process),
        Request::ProcessList => Ok(Reply::Processes {
            processes: processes::list(),
        }),
        Request::ExportArchive { path, max_bytes } => {
            require_active()?;
            stream_export(stream, move |w| archive::export(&path, w, max_bytes)).await
        }
        Request::ExportSnapshotView { path, max_bytes } => {
            require_active()?;
            stream_export(stream, move |w| snapview::export(&path, w, max_bytes)).await
        }
    }
}

/// Runs a blocking archive export and streams what it writes as data frames, then an empty frame.
async fn stream_export(
    stream: &mut StreamHandle,
    export: impl FnOnce(payload::ChannelWriter) -> io::Result<pyro_proto::ArchiveSummary>
        + Send
        + 'static,
) -> io::Result<Reply> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let work = tokio::task::spawn_blocking(move || export(payload::ChannelWriter::new(tx)));
    while let Some(chunk) = rx.recv().await {
        pyro_proto::write_data(stream, &chunk).await?;
    }
    let summary = work.await.map_err(|e| io::Error::other(e.to_string()))??;
    pyro_proto::write_data(stream, &[]).await?;
    Ok(Reply::Exported(summary))
}

fn hello(host_version: u32) -> Reply {
    if host_version != PROTOCOL_VERSION {
        return Reply::Error {
            kind: GuestErrorKind::Invalid,
            message: format!(
                "protocol mismatch: the host speaks version {host_version}, this agent ({}) speaks {PROTOCOL_VERSION}",
                env!("CARGO_PKG_VERSION")
            ),
        };
    }
    Reply::Hello(HelloReply {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: sys::uname_release(),
        boot_id: sys::boot_id(),
        uptime_ms: sys::uptime_ms(),
    })
}

fn error(err: io::Error) -> Reply {
    let kind = match err.kind() {
        io::ErrorKind::InvalidInput => GuestErrorKind::Invalid,
        io::ErrorKind::NotFound => GuestErrorKind::NotFound,
        _ => GuestErrorKind::Failed,
    };
    Reply::Error {
        message: err.to_string(),
        kind,
    }
}

/// Carries the stream to a TCP connection to `port` on the guest's loopback, both ways.
async fn open_port(mut stream: StreamHandle, port: u16) {
    if let Err(err) = require_active() {
        reply(&mut stream, error(err)).await;
        return;
    }
    // IPv4 first; a server listening on `localhost` may be on IPv6 only.
    let connect = async {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                tokio::net::TcpStream::connect(("::1", port))
                    .await
                    .map_err(|_| err)
            }
            other => other,
        }
    };
    let mut tcp = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(err)) => {
            let message = format!("nothing in the sandbox answers on port {port} ({err})");
            reply(
                &mut stream,
                error(io::Error::new(io::ErrorKind::NotFound, message)),
            )
            .await;
            return;
        }
        Err(_) => {
            let message = format!("port {port} in the sandbox did not answer within 5 s");
            reply(&mut stream, error(io::Error::other(message))).await;
            return;
        }
    };
    if pyro_proto::write_message(&mut stream, &Reply::PortOpened)
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
    let _ = stream.shutdown().await;
}

/// Writes the answer and ends the stream; whether the answer was written.
async fn reply(stream: &mut StreamHandle, answer: Reply) -> bool {
    let written = match pyro_proto::write_message(stream, &answer).await {
        Ok(()) => true,
        Err(err) => {
            log(&format!("reply failed: {err}"));
            false
        }
    };
    let _ = stream.shutdown().await;
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_refuses_another_protocol_version() {
        match hello(PROTOCOL_VERSION + 1) {
            Reply::Error { message, .. } => {
                assert!(message.contains("protocol mismatch"), "{message}");
            }
            other => panic!("accepted a mismatched version: {other:?}"),
        }
        assert!(matches!(hello(PROTOCOL_VERSION), Reply::Hello(_)));
    }
}
