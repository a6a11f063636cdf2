//! Calls to a VM's agent through its supervisor: one connection (one yamux stream) per request.
//!
//! Replies come from a hostile guest: payloads are bounded by the caller's limit, and a reply that does
//! not fit the request is a protocol error.

use std::path::Path;
use std::time::Duration;

use pyro_proto::{
    read_frame, write_data, write_message, Frame, GuestErrorKind, OutputStream, Reply, Request,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

use crate::supervisor::protocol::{ClientReply, ClientRequest};
use crate::{supervisor, Error, ErrorKind, Result};

/// How long one guest operation (request, payloads both ways, reply) may take in all, unless it is a
/// command with a timeout of its own. `PYRO_GUEST_DEADLINE_SECONDS` changes it.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);
/// Operations that move many bytes get extra time at this (slow) rate on top of the deadline.
const SLOW_BYTES_PER_SECOND: u64 = 8 << 20;

/// The deadline of a guest operation that may move up to `bytes` bytes.
pub fn deadline_for(bytes: u64) -> Duration {
    let base = std::env::var("PYRO_GUEST_DEADLINE_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_DEADLINE);
    base + Duration::from_secs(bytes / SLOW_BYTES_PER_SECOND)
}

/// One request in flight, with the deadline of the whole operation: every payload write and every
/// read of the reply must finish before it, whatever the guest does.
pub struct AgentCall {
    stream: UnixStream,
    /// No part of the operation goes on past this.
    deadline: Instant,
    limit: Duration,
    /// While receiving, the time allowed before the bytes that have come in earn more: a guest that
    /// sends nothing fails after this, however large the allowed payload.
    patience: Duration,
    started: Instant,
}

fn lost(err: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Engine,
        format!("lost the connection to the VM: {err}"),
    )
}

impl AgentCall {
    /// Opens a stream to the agent of the VM in `vm_dir` and sends `request`, with the default
    /// deadline ([`deadline_for`] of no bytes).
    pub async fn start(vm_dir: &Path, request: &Request) -> Result<AgentCall> {
        Self::start_with(vm_dir, request, Purpose::Activity, deadline_for(0)).await
    }

    /// Like [`AgentCall::start`], saying whether the call counts as activity.
    pub async fn start_as(vm_dir: &Path, request: &Request, purpose: Purpose) -> Result<AgentCall> {
        Self::start_with(vm_dir, request, purpose, deadline_for(0)).await
    }

    /// Opens a call that moves up to `bytes` bytes either way: its deadline grows with them.
    pub async fn start_moving(vm_dir: &Path, request: &Request, bytes: u64) -> Result<AgentCall> {
        let mut call =
            Self::start_with(vm_dir, request, Purpose::Activity, deadline_for(bytes)).await?;
        call.be_patient_for(deadline_for(0));
        Ok(call)
    }

    /// While receiving, fail once `patience` passes without the payload earning more time (see
    /// [`deadline_for`]); the overall deadline stays.
    pub fn be_patient_for(&mut self, patience: Duration) {
        self.patience = patience.min(self.limit);
    }

    /// Opens the call with a deadline of `limit` for the whole operation. The supervisor is told too:
    /// past it, the connection no longer keeps the VM from its idle TTL, and it is closed.
    pub async fn start_with(
        vm_dir: &Path,
        request: &Request,
        purpose: Purpose,
        limit: Duration,
    ) -> Result<AgentCall> {
        let started = Instant::now();
        let deadline = started + limit;
        let open = async {
            let mut stream = connect(vm_dir, purpose, limit).await?;
            write_message(&mut stream, request).await.map_err(lost)?;
            Ok(stream)
        };
        let stream = tokio::time::timeout_at(deadline, open)
            .await
            .unwrap_or_else(|_| Err(late(limit)))?;
        Ok(AgentCall {
            stream,
            deadline,
            limit,
            patience: limit,
            started,
        })
    }

    fn late(&self) -> Error {
        late(self.limit)
    }

    /// Sends one payload (data frames and the end marker).
    pub async fn send_payload(&mut self, data: &[u8]) -> Result<()> {
        let deadline = self.deadline;
        let stream = &mut self.stream;
        let write = async { pyro_proto::write_payload(stream, data).await.map_err(lost) };
        match tokio::time::timeout_at(deadline, write).await {
            Ok(result) => result,
            Err(_) => Err(self.late()),
        }
    }

    /// Sends a file's contents as one payload.
    pub async fn send_file(&mut self, path: &Path) -> Result<u64> {
        let deadline = self.deadline;
        let stream = &mut self.stream;
        let send = async {
            let mut file = tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::io("open", path, e))?;
            let mut buf = vec![0u8; pyro_proto::MAX_CHUNK_BYTES];
            let mut total = 0u64;
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::io("read", path, e))?;
                if n == 0 {
                    break;
                }
                write_data(stream, &buf[..n]).await.map_err(lost)?;
                total += n as u64;
            }
            write_data(stream, &[]).await.map_err(lost)?;
            Ok(total)
        };
        match tokio::time::timeout_at(deadline, send).await {
            Ok(result) => result,
            Err(_) => Err(self.late()),
        }
    }

    /// Reads until the reply: a command's output chunks go to `on_output`; payload bytes go to `sink`,
    /// at most `limit` of them.
    pub async fn finish(
        mut self,
        on_output: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
        sink: &mut (dyn AsyncWrite + Unpin + Send),
        limit: u64,
    ) -> Result<Reply> {
        let clock = self.clock();
        read_reply(&mut self.stream, Some(on_output), sink, limit, clock).await
    }

    fn clock(&self) -> Clock {
        Clock {
            started: self.started,
            patience: self.patience,
            deadline: self.deadline,
        }
    }

    /// Reads until the reply, payload bytes going to `sink` (at most `limit`). Command output has no
    /// place in such a reply: a guest that sends some is refused.
    pub async fn receive(
        mut self,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
        limit: u64,
    ) -> Result<Reply> {
        let clock = self.clock();
        read_reply(&mut self.stream, None, sink, limit, clock).await
    }

    /// The reply, with at most `limit` payload bytes collected in memory.
    pub async fn collect(self, limit: u64) -> Result<(Reply, Vec<u8>)> {
        let mut data = Vec::new();
        let reply = self.receive(&mut data, limit).await?;
        Ok((reply, data))
    }
}

fn late(limit: Duration) -> Error {
    Error::new(
        ErrorKind::Guest,
        format!(
            "the VM did not complete the operation within {} s",
            limit.as_secs()
        ),
    )
    .with_hint("the guest may be stuck or overloaded; stop and start the workspace if it stays so")
}

/// Where a command's output chunks go as they arrive.
pub type OnOutput<'a> = dyn FnMut(OutputStream, &[u8]) + Send + 'a;

/// The deadlines of a reply being read.
struct Clock {
    started: Instant,
    patience: Duration,
    deadline: Instant,
}

impl Clock {
    /// When the next frame must have arrived, given the payload bytes received so far.
    fn next(&self, received: u64) -> Instant {
        let earned = Duration::from_secs(received / SLOW_BYTES_PER_SECOND);
        (self.started + self.patience + earned).min(self.deadline)
    }
}

async fn read_reply(
    stream: &mut UnixStream,
    mut on_output: Option<&mut OnOutput<'_>>,
    sink: &mut (dyn AsyncWrite + Unpin + Send),
    limit: u64,
    clock: Clock,
) -> Result<Reply> {
    let mut received = 0u64;
    loop {
        let frame = tokio::time::timeout_at(clock.next(received), read_frame(stream))
            .await
            .map_err(|_| late(clock.started.elapsed()))?;
        match frame.map_err(lost)? {
            Some(Frame::Output(which, data)) => match on_output.as_mut() {
                Some(on_output) => on_output(which, &data),
                None => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        "the VM sent command output in reply to a file operation",
                    ))
                }
            },
            Some(Frame::Data(data)) => {
                received += data.len() as u64;
                if received > limit {
                    return Err(Error::new(
                        ErrorKind::Guest,
                        format!("the VM sent more than the {limit}-byte limit"),
                    ));
                }
                sink.write_all(&data).await.map_err(|e| {
                    Error::new(ErrorKind::Io, format!("cannot store what the VM sent: {e}"))
                })?;
            }
            Some(Frame::Message(bytes)) => {
                // A file sink (tokio) may still hold the last chunk: it must be on disk first.
                sink.flush().await.map_err(|e| {
                    Error::new(ErrorKind::Io, format!("cannot store what the VM sent: {e}"))
                })?;
                let reply: Reply = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::new(ErrorKind::Protocol, format!("malformed agent reply: {e}"))
                })?;
                return match reply {
                    Reply::Error { message, kind } => Err(Error::new(
                        match kind {
                            GuestErrorKind::Invalid => ErrorKind::InvalidArgument,
                            GuestErrorKind::NotFound => ErrorKind::NotFound,
                            GuestErrorKind::Failed => ErrorKind::Guest,
                        },
                        message,
                    )),
                    reply => Ok(reply),
                };
            }
            None => return Err(lost(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }
}

/// Sends `request` and returns the reply (no payloads either way).
pub async fn call(vm_dir: &Path, request: &Request) -> Result<Reply> {
    call_as(vm_dir, request, Purpose::Activity).await
}

pub async fn call_as(vm_dir: &Path, request: &Request, purpose: Purpose) -> Result<Reply> {
    AgentCall::start_as(vm_dir, request, purpose)
        .await?
        .collect(0)
        .await
        .map(|(reply, _)| reply)
}

/// Whether a call is work in the VM (it keeps the VM from idling out) or only reads for pyro's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Activity,
    Inspection,
}

/// An unexpected reply kind, as an error.
pub fn unexpected(reply: Reply) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("unexpected agent reply: {reply:?}"),
    )
}

/// Opens a new agent stream through the supervisor of the VM in `vm_dir`, for an operation that ends
/// within `limit`.
pub async fn connect(vm_dir: &Path, purpose: Purpose, limit: Duration) -> Result<UnixStream> {
    let deadline_ms = Some(limit.as_millis().min(u64::MAX as u128) as u64);
    let request = match purpose {
        Purpose::Activity => ClientRequest::Agent { deadline_ms },
        Purpose::Inspection => ClientRequest::Inspect { deadline_ms },
    };
    match supervisor::open(vm_dir, &request).await? {
        (stream, ClientReply::Attached) => Ok(stream),
        (_, ClientReply::Error { message }) => Err(Error::new(ErrorKind::Engine, message)),
        (_, other) => Err(Error::new(
            ErrorKind::Protocol,
            format!("unexpected supervisor reply {other:?}"),
        )),
    }
}
