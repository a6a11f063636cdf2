//! A small asynchronous QMP client: commands and their replies; events are skipped.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::{unix_socket, Error, ErrorKind, Result};

/// Sends `bytes` (whole, in one message) with one descriptor attached.
fn send_with_fd(socket: i32, bytes: &[u8], fd: i32) -> std::io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer in it points at live buffers above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer has room for one header carrying one int (CMSG_SPACE above).
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<i32>(), fd);
    }
    // SAFETY: a valid socket and a fully initialised msghdr.
    let sent = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if sent as usize != bytes.len() {
        return Err(std::io::Error::other("short write to the QEMU monitor"));
    }
    Ok(())
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

fn failed(what: &str, err: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Engine, format!("QMP {what}: {err}"))
}

impl Qmp {
    /// Connects (retrying while QEMU creates the socket, up to `limit`) and negotiates capabilities.
    pub async fn connect(path: &Path, limit: Duration) -> Result<Qmp> {
        let deadline = tokio::time::Instant::now() + limit;
        let stream = loop {
            match unix_socket::connect(path) {
                Ok(stream) => break stream,
                Err(err) if tokio::time::Instant::now() > deadline => {
                    return Err(failed("connect", err))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        stream
            .set_nonblocking(true)
            .map_err(|e| failed("connect", e))?;
        let (read, writer) = UnixStream::from_std(stream)
            .map_err(|e| failed("connect", e))?
            .into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(read),
            writer,
        };
        qmp.read_message().await?; // the greeting
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|e| failed("read", e))?
            == 0
        {
            return Err(failed("read", "QEMU closed the monitor"));
        }
        serde_json::from_str(&line).map_err(|e| failed("parse", e))
    }

    /// Runs a command and returns its `return` value, or its error as an engine error.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let request = if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            json!({"execute": command, "arguments": arguments})
        } else {
            json!({"execute": command})
        };
        let mut text = request.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .await
            .map_err(|e| failed(command, e))?;
        self.answer(command).await
    }

    /// The answer to `command`, just sent (events in between are skipped).
    async fn answer(&mut self, command: &str) -> Result<Value> {
        loop {
            let message = self.read_message().await?;
            if message.get("event").is_some() {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(failed(command, error["desc"].as_str().unwrap_or("failed")));
            }
            return Ok(message.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Hands QEMU an open descriptor under `name` (QMP `getfd`, the descriptor passed with
    /// SCM_RIGHTS), for commands that take `fd:NAME`.
    pub async fn send_fd(&mut self, name: &str, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        self.execute_with_fd("getfd", json!({"fdname": name}), fd)
            .await
            .map(drop)
    }

    /// Adds an open descriptor to a new fd set (QMP `add-fd`) and returns the set's id: a node
    /// opens it as the file `/dev/fdset/ID`.
    pub async fn add_fd(&mut self, fd: std::os::fd::BorrowedFd<'_>) -> Result<u64> {
        let added = self.execute_with_fd("add-fd", json!({}), fd).await?;
        added["fdset-id"]
            .as_u64()
            .ok_or_else(|| failed("add-fd", "no fd set id in the answer"))
    }

    /// Runs `command` with `fd` passed alongside (SCM_RIGHTS).
    async fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Value,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Value> {
        use std::os::fd::AsRawFd;
        let mut text = json!({"execute": command, "arguments": arguments}).to_string();
        text.push('\n');
        let stream: &UnixStream = self.writer.as_ref();
        loop {
            stream.writable().await.map_err(|e| failed(command, e))?;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                send_with_fd(stream.as_raw_fd(), text.as_bytes(), fd.as_raw_fd())
            });
            match sent {
                Ok(()) => break,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(failed(command, err)),
            }
        }
        self.answer(command).await
    }

    /// Polls `query-status` until the VM's status is one of `wanted`, for at most `limit`.
    pub async fn wait_for_status(&mut self, wanted: &[&str], limit: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let status = self.execute("query-status", json!({})).await?;
            let status = status["status"].as_str().unwrap_or_default().to_string();
            if wanted.contains(&status.as_str()) {
                return Ok(status);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(failed("wait", format!("the VM stayed '{status}'")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls `query-migrate` until the migration completed (or failed), for at most `limit`.
    pub async fn wait_for_migration(&mut self, limit: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let info = self.execute("query-migrate", json!({})).await?;
            match info["status"].as_str().unwrap_or_default() {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(failed(
                        "migrate",
                        info["error-desc"]
                            .as_str()
                            .unwrap_or("the migration failed"),
                    ));
                }
                _ if tokio::time::Instant::now() > deadline => {
                    return Err(failed("migrate", "timed out"))
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}
