//! Calls to a VM's agent through its supervisor: one connection (one yamux stream) per request.
//!
//! Replies come from a hostile guest: payloads are bounded by the caller's limit, and a reply that does
//! not fit the request is a protocol error.

use std::path::Path;

use pyro_proto::{
    read_frame, write_data, write_message, Frame, GuestErrorKind, OutputStream, Reply, Request,
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::supervisor::protocol::{ClientReply, ClientRequest};
use crate::{supervisor, Error, ErrorKind, Result};

/// How long a request without a timeout of its own (anything but exec) may wait for its reply.
pub const REPLY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// One request in flight.
pub struct AgentCall {
    stream: UnixStream,
}

fn lost(err: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Engine,
        format!("lost the connection to the VM: {err}"),
    )
}

impl AgentCall {
    /// Opens a stream to the agent of the VM in `vm_dir` and sends `request`.
    pub async fn start(vm_dir: &Path, request: &Request) -> Result<AgentCall> {
        Self::start_as(vm_dir, request, Purpose::Activity).await
    }

    /// Like [`AgentCall::start`], saying whether the call counts as activity.
    pub async fn start_as(vm_dir: &Path, request: &Request, purpose: Purpose) -> Result<AgentCall> {
        let mut stream = connect(vm_dir, purpose).await?;
        write_message(&mut stream, request).await.map_err(lost)?;
        Ok(AgentCall { stream })
    }

    /// Sends one payload (data frames and the end marker).
    pub async fn send_payload(&mut self, data: &[u8]) -> Result<()> {
        pyro_proto::write_payload(&mut self.stream, data)
            .await
            .map_err(lost)
    }

    /// Sends a file's contents as one payload.
    pub async fn send_file(&mut self, path: &Path) -> Result<u64> {
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
            write_data(&mut self.stream, &buf[..n])
                .await
                .map_err(lost)?;
            total += n as u64;
        }
        write_data(&mut self.stream, &[]).await.map_err(lost)?;
        Ok(total)
    }

    /// Reads until the reply. Output chunks go to `on_output`; payload bytes go to `sink`, at most
    /// `limit` of them.
    pub async fn finish(
        mut self,
        on_output: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
        sink: &mut (dyn AsyncWrite + Unpin + Send),
        limit: u64,
    ) -> Result<Reply> {
        let mut received = 0u64;
        loop {
            match read_frame(&mut self.stream).await.map_err(lost)? {
                Some(Frame::Output(stream, data)) => on_output(stream, &data),
                Some(Frame::Data(data)) => {
                    received += data.len() as u64;
                    if received > limit {
                        return Err(Error::new(
                            ErrorKind::Guest,
                            format!("the VM sent more than the {limit}-byte limit"),
                        ));
                    }
                    sink.write_all(&data)
                        .await
                        .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
                }
                Some(Frame::Message(bytes)) => {
                    // A file sink (tokio) may still hold the last chunk: it must be on disk first.
                    sink.flush()
                        .await
                        .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
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

    /// The reply, ignoring output and collecting at most `limit` payload bytes.
    /// A guest that never answers must not hang the caller: file operations get [`REPLY_DEADLINE`].
    pub async fn collect(self, limit: u64) -> Result<(Reply, Vec<u8>)> {
        let mut data = Vec::new();
        let reply = tokio::time::timeout(
            REPLY_DEADLINE,
            self.finish(&mut |_, _| {}, &mut data, limit),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Guest,
                format!(
                    "the VM did not answer within {} s",
                    REPLY_DEADLINE.as_secs()
                ),
            )
        })??;
        Ok((reply, data))
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

/// Opens a new agent stream through the supervisor of the VM in `vm_dir`.
pub async fn connect(vm_dir: &Path, purpose: Purpose) -> Result<UnixStream> {
    let request = match purpose {
        Purpose::Activity => ClientRequest::Agent,
        Purpose::Inspection => ClientRequest::Inspect,
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
