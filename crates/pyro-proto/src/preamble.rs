//! The raw-line exchange that precedes the yamux session on a fresh channel.
//!
//! A guest is *ready* once it answers a probe; it starts its yamux session only when a host asks for
//! one. A memory snapshot is taken between the two, so a restored guest holds no session state and
//! any host can start a new session with it: cold boots and warm restores share this one path.

/// `PYRO-PROBE <nonce>`: are you ready? The answer is `PYRO-READY <nonce> <boot_id>`.
pub const PROBE: &str = "PYRO-PROBE";
pub const READY: &str = "PYRO-READY";
/// `PYRO-SESSION <nonce>`: start a yamux session after answering `PYRO-SESSION-OK <nonce>`.
pub const SESSION: &str = "PYRO-SESSION";
pub const SESSION_OK: &str = "PYRO-SESSION-OK";
/// Lines longer than this are not part of the exchange.
pub const MAX_LINE: usize = 256;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads one `\n`-terminated line, byte by byte so nothing after it is consumed. Longer lines are cut.
pub async fn read_line<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if reader.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        if line.len() < MAX_LINE {
            line.push(byte[0]);
        }
    }
}
