//! Helper processes run to their end within a time and an output bound.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a bounded child ended.
pub(crate) struct Finished {
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// At most the bound plus one byte: longer means it said too much.
    pub stdout: Vec<u8>,
    /// At most 64 KiB.
    pub stderr: Vec<u8>,
}

const STDERR_BYTES: u64 = 64 << 10;

/// Runs `command` with `input` on its stdin, keeping at most `max_stdout + 1` bytes of its stdout,
/// and kills it when it outlasts `limit`.
pub(crate) fn run(
    command: &mut Command,
    input: &[u8],
    limit: Duration,
    max_stdout: usize,
) -> std::io::Result<Finished> {
    command
        .stdin(if input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A group of its own, so that the deadline ends whatever it started too.
    std::os::unix::process::CommandExt::process_group(command, 0);
    let mut child = command.spawn()?;
    let (stdin, mut stdout, mut stderr) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(mut s) = stdin {
            // A child that exits without reading it all is not an error here.
            let _ = s.write_all(&input);
        }
    });
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(max_stdout as u64 + 1).read_to_end(&mut out);
        }
        out
    });
    let err_reader = std::thread::spawn(move || {
        let mut err = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(STDERR_BYTES).read_to_end(&mut err);
        }
        err
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                // SAFETY: kill takes no pointers; the group is the child's own.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let _ = writer.join();
    Ok(Finished {
        status,
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}
