//! The agent's end of the virtio-serial channel, bridged into an async byte stream.
//!
//! The port is a character device. While no host is connected a read returns 0 (EOF); that means "host
//! away", never "done", so the bridge waits and reads again.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

/// Finds `/dev/vportNpM` whose name is `name`, waiting for the driver to announce it.
pub fn find(name: &str, limit: Duration) -> io::Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let port_name =
                    std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if port_name.trim() == name {
                    return Ok(format!("/dev/{}", entry.file_name().to_string_lossy()));
                }
            }
        }
        if start.elapsed() > limit {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "virtio-serial port {name} did not appear within {}s",
                    limit.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The port, bridged into one in-process stream per host session: the host may end a session
/// (`Detach`) and start another on the same channel, as a restored guest's new host does.
pub struct Port {
    inbound: tokio::sync::mpsc::UnboundedSender<WriteHalf<DuplexStream>>,
    outbound: std::sync::mpsc::Sender<ReadHalf<DuplexStream>>,
}

impl Port {
    /// Opens the port and starts the threads that copy bytes to and from the current session's stream.
    pub fn open(path: &str) -> io::Result<Port> {
        let port = OpenOptions::new().read(true).write(true).open(path)?;
        let reader = port.try_clone()?;
        let handle = tokio::runtime::Handle::current();
        let (chunks_tx, chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let (inbound, writers) = tokio::sync::mpsc::unbounded_channel();
        let (outbound, readers) = std::sync::mpsc::channel::<ReadHalf<DuplexStream>>();
        std::thread::Builder::new()
            .name("port-read".into())
            .spawn(move || port_to_chunks(reader, &chunks_tx))?;
        handle.spawn(chunks_to_session(chunks, writers));
        std::thread::Builder::new()
            .name("port-write".into())
            .spawn(move || {
                let mut port = port;
                let mut buf = vec![0u8; 64 << 10];
                // Each session's bytes until it ends, then the next session's.
                for mut from_session in readers {
                    loop {
                        let n = match handle.block_on(from_session.read(&mut buf)) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let Err(err) = port.write_all(&buf[..n]) {
                            crate::log(&format!("write to the host failed: {err}"));
                        }
                    }
                }
            })?;
        Ok(Port { inbound, outbound })
    }

    /// A stream for the next session: from now on the host's bytes go to it. The previous
    /// session's stream must be dropped first (its outgoing bytes are sent until then).
    pub fn session_stream(&self) -> io::Result<DuplexStream> {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (from_session, to_session) = tokio::io::split(theirs);
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the port's threads are gone");
        self.inbound.send(to_session).map_err(|_| gone())?;
        self.outbound.send(from_session).map_err(|_| gone())?;
        Ok(ours)
    }
}

fn port_to_chunks(mut port: File, chunks: &tokio::sync::mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match port.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(10)),
            Ok(n) => {
                if chunks.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                crate::log(&format!("read from the host failed: {err}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Hands the host's bytes to the current session. A session that ends (or stops reading) loses
/// what was meant for it; the next one starts with the next bytes.
async fn chunks_to_session(
    mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    mut writers: tokio::sync::mpsc::UnboundedReceiver<WriteHalf<DuplexStream>>,
) {
    let Some(mut current) = writers.recv().await else {
        return;
    };
    loop {
        tokio::select! {
            biased;
            next = writers.recv() => match next {
                Some(next) => current = next,
                None => return,
            },
            chunk = chunks.recv() => {
                let Some(chunk) = chunk else { return };
                tokio::select! {
                    biased;
                    next = writers.recv() => match next {
                        Some(next) => current = next,
                        None => return,
                    },
                    _ = current.write_all(&chunk) => {}
                }
            }
        }
    }
}
