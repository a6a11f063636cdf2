//! A small asynchronous QMP client: commands and their replies; events are skipped.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::{unix_socket, Error, ErrorKind, Result};

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
