//! The request loop: one yamux session over the port, one request per stream, served concurrently.

use std::io;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use pyro_proto::{HelloReply, Reply, Request, PROTOCOL_VERSION};
use tokio::io::AsyncWriteExt;
use tokio_yamux::{Session, StreamHandle};

use crate::{activate, exec, log, port, reaper, sys};

pub async fn serve() -> io::Result<()> {
    reaper::start()?;
    let path = port::find(pyro_proto::AGENT_PORT_NAME, Duration::from_secs(20))?;
    let io = port::bridge(&path)?;
    log(&format!("ready on {path} (protocol {PROTOCOL_VERSION})"));
    let mut session = Session::new_server(io, pyro_proto::mux_config());
    while let Some(stream) = session.next().await {
        match stream {
            Ok(stream) => {
                tokio::spawn(handle(stream));
            }
            Err(err) => log(&format!("session error: {err}")),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the host session ended",
    ))
}

async fn handle(mut stream: StreamHandle) {
    let request: Request = match pyro_proto::read_frame(&mut stream).await {
        Ok(Some(frame)) => match frame.into_message() {
            Ok(request) => request,
            Err(err) => return reply(&mut stream, error(err)).await,
        },
        _ => return,
    };
    let power_off = matches!(request, Request::PowerOff);
    let answer = match request {
        Request::Hello {
            protocol_version, ..
        } => hello(protocol_version),
        Request::Activate(activation) => match activate::activate(&activation) {
            Ok(done) => Reply::Activated(done),
            Err(err) => error(err),
        },
        Request::Exec(exec) => {
            if !activate::is_active() {
                error(io::Error::other("the VM is not activated yet"))
            } else {
                match exec::run(&exec, Path::new(activate::ROOT), &mut stream).await {
                    Ok(result) => Reply::Exited(result),
                    Err(err) => error(err),
                }
            }
        }
        Request::PowerOff => Reply::PoweringOff,
    };
    reply(&mut stream, answer).await;
    if power_off {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if std::process::id() == 1 {
            crate::init::power_off();
        }
        std::process::exit(0);
    }
}

fn hello(host_version: u32) -> Reply {
    if host_version != PROTOCOL_VERSION {
        return Reply::Error {
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
    Reply::Error {
        message: err.to_string(),
    }
}

async fn reply(stream: &mut StreamHandle, answer: Reply) {
    if let Err(err) = pyro_proto::write_message(stream, &answer).await {
        log(&format!("reply failed: {err}"));
    }
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_refuses_another_protocol_version() {
        match hello(PROTOCOL_VERSION + 1) {
            Reply::Error { message } => assert!(message.contains("protocol mismatch"), "{message}"),
            other => panic!("accepted a mismatched version: {other:?}"),
        }
        assert!(matches!(hello(PROTOCOL_VERSION), Reply::Hello(_)));
    }
}
