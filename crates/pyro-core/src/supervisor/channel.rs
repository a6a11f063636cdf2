//! The host end of the agent channel: the raw socket QEMU bridges to the guest's virtio-serial port,
//! carried into a yamux session by a pump the supervisor can stop to take the socket back. Sessions
//! start with the preamble's line exchange; `detach` ends one so the guest can be saved with no
//! session open (suspend), and the same raw exchange starts the next.

use std::time::Duration;

use futures::StreamExt;
use pyro_proto::{read_frame, write_message, HelloReply, Reply, Request, PROTOCOL_VERSION};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_yamux::{Control, Session};

use crate::engine::AGENT_SOCKET;
use crate::{fsutil, Error, ErrorKind, Result};

/// How long a detach may take: the agent's answer, then its answer to a probe on the raw channel.
const DETACH_LIMIT: Duration = Duration::from_secs(10);

pub struct AgentChannel {
    pub control: Control,
    stop: Option<oneshot::Sender<()>>,
    pump: JoinHandle<UnixStream>,
    session: JoinHandle<()>,
}

/// Connects to the engine's end of the channel (it listens from the moment it starts).
pub async fn connect() -> Result<UnixStream> {
    loop {
        match UnixStream::connect(AGENT_SOCKET).await {
            Ok(stream) => return Ok(stream),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

fn protocol(e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("the agent channel failed: {e}"),
    )
}

impl AgentChannel {
    /// Asks the (ready) agent for a session on `raw`, starts it and checks the agent's version.
    pub async fn open(mut raw: UnixStream) -> Result<(AgentChannel, HelloReply)> {
        start_session(&mut raw).await?;
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let (stop, stopped) = oneshot::channel::<()>();
        let pump = tokio::spawn(async move {
            // Stopping drops the copy mid-way: nothing half-closes the socket, which the engine
            // would take for the host going away.
            tokio::select! {
                biased;
                _ = stopped => {}
                _ = tokio::io::copy_bidirectional(&mut raw, &mut theirs) => {}
            }
            raw
        });
        let mut session = Session::new_client(ours, pyro_proto::mux_config());
        let control = session.control();
        let session = tokio::spawn(async move { while session.next().await.is_some() {} });
        let channel = AgentChannel {
            control,
            stop: Some(stop),
            pump,
            session,
        };
        let hello = handshake(&channel.control).await?;
        Ok((channel, hello))
    }

    /// Ends the session and gives the raw channel back, with the agent waiting for a new session
    /// (checked with a probe): a guest saved now holds no session state. When the agent answers
    /// the request with something else the session goes on ([`Detach::Refused`]); otherwise the
    /// host's side of the session ends, and a channel the agent does not answer a probe on is
    /// [`Detach::Lost`].
    pub async fn detach(&mut self) -> std::result::Result<UnixStream, Detach> {
        if self.stop.is_none() {
            return Err(Detach::Lost(Error::internal(
                "the session was already ended",
            )));
        }
        let ask = async {
            let mut stream = self.control.clone().open_stream().await.ok()?;
            write_message(&mut stream, &Request::Detach).await.ok()?;
            read_frame(&mut stream)
                .await
                .ok()
                .flatten()?
                .into_message::<Reply>()
                .ok()
        };
        match tokio::time::timeout(DETACH_LIMIT, ask).await {
            Ok(Some(Reply::Detached)) => {}
            // An answer that is not the one asked for: the agent keeps its session.
            Ok(Some(_)) => {
                return Err(Detach::Refused(Error::new(
                    ErrorKind::Protocol,
                    "the guest agent did not end its session when asked",
                )))
            }
            // No answer (in time): whether it ended its session is settled by the probe below.
            Ok(None) | Err(_) => {}
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let mut raw = (&mut self.pump)
            .await
            .map_err(|e| Detach::Lost(Error::internal(format!("the channel pump failed: {e}"))))?;
        self.session.abort();
        match tokio::time::timeout(DETACH_LIMIT, probe_until_ready(&mut raw)).await {
            Ok(Ok(())) => Ok(raw),
            Ok(Err(err)) => Err(Detach::Lost(err)),
            Err(_) => Err(Detach::Lost(Error::new(
                ErrorKind::Protocol,
                "the guest agent did not come back to wait for a new session",
            ))),
        }
    }
}

/// Why a detach failed.
pub enum Detach {
    /// The agent refused: its session goes on.
    Refused(Error),
    /// The session ended but the agent does not answer on the channel.
    Lost(Error),
}

impl Drop for AgentChannel {
    fn drop(&mut self) {
        self.session.abort();
        self.pump.abort();
    }
}

/// Probes until the agent answers from outside any session. A probe that reached the old session
/// (which ends on such bytes) is lost, so probes repeat; a leading newline ends any stray bytes
/// before it.
async fn probe_until_ready(raw: &mut UnixStream) -> Result<()> {
    use pyro_proto::preamble::{read_line, PROBE, READY};
    let nonce = fsutil::random_hex(8)?;
    loop {
        raw.write_all(format!("\n{PROBE} {nonce}\n").as_bytes())
            .await
            .map_err(protocol)?;
        let answered = async {
            loop {
                let line = read_line(raw).await?;
                let mut words = line.split_whitespace();
                if words.next() == Some(READY) && words.next() == Some(nonce.as_str()) {
                    return Ok::<_, std::io::Error>(());
                }
            }
        };
        match tokio::time::timeout(Duration::from_millis(50), answered).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => return Err(protocol(e)),
            Err(_) => continue,
        }
    }
}

/// Asks the (ready) agent to start a yamux session on the channel.
async fn start_session(stream: &mut UnixStream) -> Result<()> {
    use pyro_proto::preamble::{read_line, SESSION, SESSION_OK};
    let nonce = fsutil::random_hex(8)?;
    stream
        .write_all(format!("\n{SESSION} {nonce}\n").as_bytes())
        .await
        .map_err(protocol)?;
    loop {
        let line = read_line(stream).await.map_err(protocol)?;
        let mut words = line.split_whitespace();
        if words.next() == Some(SESSION_OK) && words.next() == Some(nonce.as_str()) {
            return Ok(());
        }
    }
}

async fn handshake(control: &Control) -> Result<HelloReply> {
    let protocol =
        |e: std::io::Error| Error::new(ErrorKind::Protocol, format!("agent handshake failed: {e}"));
    let mut stream = control
        .clone()
        .open_stream()
        .await
        .map_err(|e| Error::new(ErrorKind::Protocol, e.to_string()))?;
    let hello = Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        host_version: crate::VERSION.to_string(),
    };
    write_message(&mut stream, &hello).await.map_err(protocol)?;
    let frame = read_frame(&mut stream)
        .await
        .map_err(protocol)?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "the agent closed the handshake without answering",
            )
        })?;
    match frame.into_message::<Reply>().map_err(protocol)? {
        Reply::Hello(hello) if hello.protocol_version == PROTOCOL_VERSION => Ok(hello),
        Reply::Hello(hello) => Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "the guest agent speaks protocol {}, this pyro speaks {PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        )),
        Reply::Error { message, .. } => Err(Error::new(ErrorKind::Protocol, message)
            .with_hint("the guest agent and pyro come from different builds: reinstall pyro")),
        other => Err(Error::new(
            ErrorKind::Protocol,
            format!("unexpected handshake reply: {other:?}"),
        )),
    }
}
