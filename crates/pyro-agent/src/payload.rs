//! Payloads (file contents, archives) that follow a request or precede a reply as data frames, and the
//! bridges between them and blocking readers and writers.

use std::io::{self, Read, Write};

use pyro_proto::{read_frame, Frame};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

fn protocol(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// Reads one payload (data frames up to the empty end marker) of at most `limit` bytes.
pub async fn read_payload<R: AsyncRead + Unpin>(stream: &mut R, limit: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        match read_frame(stream).await? {
            Some(Frame::Data(chunk)) if chunk.is_empty() => return Ok(data),
            Some(Frame::Data(chunk)) => {
                if data.len() as u64 + chunk.len() as u64 > limit {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("payload exceeds {limit} bytes"),
                    ));
                }
                data.extend_from_slice(&chunk);
            }
            Some(_) => return Err(protocol("expected payload data")),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// Forwards one payload from `stream` into `tx` chunk by chunk (for a blocking consumer).
pub async fn forward_payload<R: AsyncRead + Unpin>(
    stream: &mut R,
    tx: mpsc::Sender<Vec<u8>>,
) -> io::Result<()> {
    loop {
        match read_frame(stream).await? {
            Some(Frame::Data(chunk)) if chunk.is_empty() => return Ok(()),
            Some(Frame::Data(chunk)) => {
                if tx.send(chunk).await.is_err() {
                    // The consumer stopped (an error it will report); drain the rest.
                    continue;
                }
            }
            Some(_) => return Err(protocol("expected payload data")),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// A blocking reader over chunks sent through a channel.
pub struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Vec<u8>>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A blocking writer that sends what it is given through a channel in chunks.
pub struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Vec<u8>,
}

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Vec<u8>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            pending: Vec::new(),
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= pyro_proto::MAX_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.pending);
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}
