//! Length-prefixed frames: `[tag: u8][len: u32 BE][payload]`.

use std::io;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::MAX_FRAME_BYTES;

const TAG_MESSAGE: u8 = 0;
const TAG_STDOUT: u8 = 1;
const TAG_STDERR: u8 = 2;
const TAG_DATA: u8 = 3;

/// Which output stream of a command a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One decoded frame.
#[derive(Debug)]
pub enum Frame {
    /// A JSON message (a request or a reply).
    Message(Vec<u8>),
    /// Raw output bytes of a running command.
    Output(OutputStream, Vec<u8>),
    /// Raw payload bytes of a file or an archive; an empty one ends the payload.
    Data(Vec<u8>),
}

impl Frame {
    /// Decodes a JSON message frame into `T`; an output frame is a protocol error.
    pub fn into_message<T: serde::de::DeserializeOwned>(self) -> io::Result<T> {
        match self {
            Frame::Message(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("malformed message: {err}"),
                )
            }),
            Frame::Output(..) | Frame::Data(..) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected a message frame, got raw bytes",
            )),
        }
    }
}

/// Writes one JSON message frame.
pub async fn write_message<W, T>(writer: &mut W, message: &T) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let payload = serde_json::to_vec(message)?;
    write_frame(writer, TAG_MESSAGE, &payload).await
}

/// Writes one output chunk frame.
pub async fn write_chunk<W>(writer: &mut W, stream: OutputStream, data: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let tag = match stream {
        OutputStream::Stdout => TAG_STDOUT,
        OutputStream::Stderr => TAG_STDERR,
    };
    write_frame(writer, tag, data).await
}

/// Writes one payload frame; an empty `data` marks the end of the payload.
pub async fn write_data<W>(writer: &mut W, data: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    write_frame(writer, TAG_DATA, data).await
}

/// Writes `data` as payload frames of at most [`crate::MAX_CHUNK_BYTES`], then the end marker.
pub async fn write_payload<W>(writer: &mut W, data: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    for chunk in data.chunks(crate::MAX_CHUNK_BYTES) {
        write_data(writer, chunk).await?;
    }
    write_data(writer, &[]).await
}

async fn write_frame<W>(writer: &mut W, tag: u8, payload: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    if payload.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
                payload.len()
            ),
        ));
    }
    let mut header = [0u8; 5];
    header[0] = tag;
    header[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    writer.write_all(&header).await?;
    writer.write_all(payload).await?;
    writer.flush().await
}

/// Reads one frame. `Ok(None)` is a clean end of stream before a new frame began.
pub async fn read_frame<R>(reader: &mut R) -> io::Result<Option<Frame>>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; 5];
    let mut filled = 0;
    while filled < header.len() {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer sent a frame of {len} bytes, over the {MAX_FRAME_BYTES}-byte limit"),
        ));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    match header[0] {
        TAG_MESSAGE => Ok(Some(Frame::Message(payload))),
        TAG_STDOUT => Ok(Some(Frame::Output(OutputStream::Stdout, payload))),
        TAG_STDERR => Ok(Some(Frame::Output(OutputStream::Stderr, payload))),
        TAG_DATA => Ok(Some(Frame::Data(payload))),
        tag => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame tag {tag}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_message(&mut a, &serde_json::json!({"x": 1}))
            .await
            .unwrap();
        write_chunk(&mut a, OutputStream::Stderr, b"err")
            .await
            .unwrap();
        drop(a);
        let first: serde_json::Value = read_frame(&mut b)
            .await
            .unwrap()
            .unwrap()
            .into_message()
            .unwrap();
        assert_eq!(first["x"], 1);
        match read_frame(&mut b).await.unwrap().unwrap() {
            Frame::Output(OutputStream::Stderr, data) => assert_eq!(data, b"err"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocation() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut header = vec![TAG_MESSAGE];
        header.extend_from_slice(&u32::MAX.to_be_bytes());
        a.write_all(&header).await.unwrap();
        let err = read_frame(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
