//! A TCP connection to a port on a workspace guest's loopback, carried over the agent channel: no
//! network device, no listener on the host. What comes back is the guest's: bound it as any guest
//! data. It is not activity: traffic to a sandbox's ports does not keep it from its idle TTL.

use std::time::Duration;

use pyro_proto::{Reply, Request};
use tokio::net::UnixStream;

use super::ops::started;
use crate::agent_client::{self, Purpose};
use crate::{Dirs, Error, ErrorKind, Result};

/// How long one connection may last (the supervisor closes it then).
pub const LIMIT: Duration = Duration::from_secs(600);

/// A stream connected to `127.0.0.1:port` in the workspace's guest.
pub async fn connect(dirs: &Dirs, reference: &str, port: u16) -> Result<UnixStream> {
    if port == 0 {
        return Err(Error::invalid("port 0 is not a port to connect to"));
    }
    let (_db, _record, dir) = started(dirs, reference, "connect to a port")?;
    let mut stream = agent_client::connect(&dir, Purpose::Inspection, LIMIT).await?;
    let lost =
        |e: std::io::Error| Error::new(ErrorKind::Guest, format!("the agent channel broke: {e}"));
    pyro_proto::write_message(&mut stream, &Request::OpenPort { port })
        .await
        .map_err(lost)?;
    let frame = tokio::time::timeout(Duration::from_secs(10), pyro_proto::read_frame(&mut stream))
        .await
        .map_err(|_| Error::new(ErrorKind::Guest, "the guest did not answer within 10 s"))?
        .map_err(lost)?
        .ok_or_else(|| Error::new(ErrorKind::Guest, "the guest closed the connection"))?;
    match frame.into_message::<Reply>().map_err(lost)? {
        Reply::PortOpened => Ok(stream),
        Reply::Error { message, kind } => Err(Error::new(
            match kind {
                pyro_proto::GuestErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Guest,
            },
            message,
        )),
        other => Err(agent_client::unexpected(other)),
    }
}
