//! The agent's end of the virtio-serial channel, bridged into an async byte stream.
//!
//! The port is a character device. While no host is connected a read returns 0 (EOF); that means "host
//! away", never "done", so the bridge waits and reads again.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

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

/// Opens the port and returns an in-process stream whose bytes are copied to and from it by two threads.
pub fn bridge(path: &str) -> io::Result<DuplexStream> {
    let port = OpenOptions::new().read(true).write(true).open(path)?;
    let reader = port.try_clone()?;
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (mut from_port, mut to_port) = tokio::io::split(theirs);
    let handle = tokio::runtime::Handle::current();
    let read_handle = handle.clone();
    std::thread::Builder::new()
        .name("port-read".into())
        .spawn(move || port_to_stream(reader, &read_handle, &mut to_port))?;
    std::thread::Builder::new()
        .name("port-write".into())
        .spawn(move || {
            let mut port = port;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match handle.block_on(from_port.read(&mut buf)) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if let Err(err) = port.write_all(&buf[..n]) {
                    crate::log(&format!("write to the host failed: {err}"));
                }
            }
        })?;
    Ok(ours)
}

fn port_to_stream(
    mut port: File,
    handle: &tokio::runtime::Handle,
    stream: &mut tokio::io::WriteHalf<DuplexStream>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match port.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(10)),
            Ok(n) => {
                if handle.block_on(stream.write_all(&buf[..n])).is_err() {
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
