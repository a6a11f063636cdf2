//! `pyro workspace shell open|read|write|signal|resize|close|list|attach`: PTY shells in a workspace.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use pyro_core::workspace::shells::{self, ReadOptions, Shell, ShellState};
use pyro_core::{limits, Dirs};

use crate::workspace_cmd::{print, print_product, say, show};

#[derive(Subcommand)]
pub enum ShellCommand {
    /// Open a shell (bash) on a new terminal in the workspace; it lives until closed or the VM stops
    Open(OpenArgs),
    /// Read a shell's output from a cursor (print `next_cursor` from --json to read on)
    Read(ReadArgs),
    /// Type input into a shell (a newline is added unless --no-newline)
    Write(WriteArgs),
    /// Send a signal to a shell's process group: HUP, INT, TERM or KILL
    Signal(SignalArgs),
    /// Change a shell's terminal size
    Resize(ResizeArgs),
    /// End a shell (SIGHUP, SIGKILL 5 s later)
    Close(ShellTarget),
    /// List a workspace's open shells
    List(ListArgs),
    /// Use a shell from this terminal (opens one unless a shell id is given); Ctrl-] detaches
    Attach(AttachArgs),
}

impl ShellCommand {
    pub fn json(&self) -> bool {
        match self {
            ShellCommand::Open(a) => a.json,
            ShellCommand::Read(a) => a.target.json,
            ShellCommand::Write(a) => a.target.json,
            ShellCommand::Signal(a) => a.target.json,
            ShellCommand::Resize(a) => a.target.json,
            ShellCommand::Close(a) => a.json,
            ShellCommand::List(a) => a.json,
            ShellCommand::Attach(_) => false,
        }
    }
}

#[derive(Args)]
pub struct ShellTarget {
    /// Workspace id or name
    workspace: String,
    /// The shell's id (from `shell open`)
    shell: String,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Workspace id or name
    workspace: String,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct OpenArgs {
    /// Workspace id or name
    workspace: String,
    /// Working directory (default /workspace)
    #[arg(long)]
    cwd: Option<String>,
    #[arg(long, default_value_t = limits::DEFAULT_SHELL_COLS)]
    cols: u16,
    #[arg(long, default_value_t = limits::DEFAULT_SHELL_ROWS)]
    rows: u16,
    /// Expose the workspace secret SECRET as the variable VAR in the shell (repeatable)
    #[arg(long = "secret-env", value_name = "SECRET=VAR", value_parser = crate::workspace_cmd::parse_label)]
    secret_env: Vec<(String, String)>,
    /// Print only the shell id
    #[arg(long, conflicts_with = "json")]
    id_only: bool,
    /// Print JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReadArgs {
    #[command(flatten)]
    target: ShellTarget,
    /// Read from this byte offset of the shell's output
    #[arg(long, default_value_t = 0)]
    cursor: u64,
    /// At most this many bytes
    #[arg(long, default_value_t = limits::DEFAULT_SHELL_READ_BYTES)]
    max_chars: u64,
    /// The text a terminal would show, escape sequences applied
    #[arg(long)]
    plain: bool,
    /// Wait until the shell has printed nothing for this long
    #[arg(long, value_name = "MS")]
    wait_for_idle_ms: Option<u64>,
}

#[derive(Args)]
pub struct WriteArgs {
    #[command(flatten)]
    target: ShellTarget,
    /// What to type
    input: String,
    /// Do not press Enter after it
    #[arg(long)]
    no_newline: bool,
}

#[derive(Args)]
pub struct SignalArgs {
    #[command(flatten)]
    target: ShellTarget,
    /// HUP, INT, TERM or KILL
    #[arg(long, default_value = "INT")]
    signal: String,
}

#[derive(Args)]
pub struct ResizeArgs {
    #[command(flatten)]
    target: ShellTarget,
    #[arg(long)]
    cols: u16,
    #[arg(long)]
    rows: u16,
}

#[derive(Args)]
pub struct AttachArgs {
    /// Workspace id or name
    workspace: String,
    /// An open shell's id (default: open a new one)
    shell: Option<String>,
}

fn describe(s: &Shell) -> String {
    let state = match s.state {
        ShellState::Running => "running",
        ShellState::Stopped => "stopped",
    };
    let mut text = format!(
        "Shell {} ({}): {state} {}x{} in {}",
        s.shell_id, s.workspace_id, s.cols, s.rows, s.cwd
    );
    if let Some(code) = s.exit_code {
        text.push_str(&format!(" exit_code={code}"));
    }
    text.push('\n');
    text
}

pub async fn dispatch(
    dirs: &Dirs,
    command: ShellCommand,
    json: bool,
) -> pyro_core::Result<ExitCode> {
    match command {
        ShellCommand::Open(a) => {
            let shell = shells::open(
                dirs,
                &a.workspace,
                a.cwd.as_deref(),
                (a.cols, a.rows),
                &a.secret_env.into_iter().collect(),
            )
            .await?;
            if a.id_only {
                print(format!("{}\n", shell.shell_id));
            } else {
                show(&shell, json, |s| print(describe(s)));
            }
        }
        ShellCommand::Read(a) => {
            let options = ReadOptions {
                cursor: a.cursor,
                max_chars: a.max_chars,
                plain: a.plain,
                wait_for_idle_ms: a.wait_for_idle_ms,
            };
            let read = shells::read(dirs, &a.target.workspace, &a.target.shell, &options).await?;
            show(&read, json, |r| {
                print_product(&r.output);
                say(format!("[shell-read] next_cursor={}", r.next_cursor));
            });
        }
        ShellCommand::Write(a) => {
            let t = &a.target;
            let shell =
                shells::write(dirs, &t.workspace, &t.shell, &a.input, !a.no_newline).await?;
            show(&shell, json, |s| print(describe(s)));
        }
        ShellCommand::Signal(a) => {
            let t = &a.target;
            let shell = shells::signal(dirs, &t.workspace, &t.shell, &a.signal).await?;
            show(&shell, json, |s| print(describe(s)));
        }
        ShellCommand::Resize(a) => {
            let t = &a.target;
            let shell = shells::resize(dirs, &t.workspace, &t.shell, a.cols, a.rows).await?;
            show(&shell, json, |s| print(describe(s)));
        }
        ShellCommand::Close(t) => {
            let closed = shells::close(dirs, &t.workspace, &t.shell).await?;
            show(&closed, json, |c| print(describe(&c.shell)));
        }
        ShellCommand::List(a) => {
            let list = shells::list(dirs, &a.workspace).await?;
            show(&list, json, |list| {
                if list.shells.is_empty() {
                    return say("No shells.".into());
                }
                print(list.shells.iter().map(describe).collect());
            });
        }
        ShellCommand::Attach(a) => return attach(dirs, &a.workspace, a.shell).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// The terminal in raw mode for as long as this lives.
struct RawTerminal(Option<libc::termios>);

impl RawTerminal {
    fn enter() -> RawTerminal {
        // SAFETY: termios is plain data; tcgetattr fills it for stdin, which is a terminal.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return RawTerminal(None);
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw and tcsetattr only touch the struct and stdin's settings.
        unsafe {
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
        }
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read at entry.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

/// This terminal's size, or the defaults.
fn terminal_size() -> (u16, u16) {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on stdout.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut size) } == 0 && size.ws_col > 0 {
        (size.ws_col, size.ws_row)
    } else {
        (limits::DEFAULT_SHELL_COLS, limits::DEFAULT_SHELL_ROWS)
    }
}

const DETACH: u8 = 0x1d; // Ctrl-]

async fn attach(
    dirs: &Dirs,
    workspace: &str,
    shell: Option<String>,
) -> pyro_core::Result<ExitCode> {
    if !std::io::stdin().is_terminal() {
        return Err(pyro_core::Error::invalid(
            "attach needs a terminal; use `shell write` and `shell read` from scripts",
        ));
    }
    let (cols, rows) = terminal_size();
    let shell_id = match shell {
        Some(id) => {
            shells::resize(dirs, workspace, &id, cols, rows).await?;
            id
        }
        None => {
            shells::open(dirs, workspace, None, (cols, rows), &Default::default())
                .await?
                .shell_id
        }
    };
    say(format!(
        "[shell-attach] shell {shell_id}; Ctrl-] detaches (the shell keeps running)"
    ));
    let _raw = RawTerminal::enter();
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || keys_tx.blocking_send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut cursor = 0;
    loop {
        let options = ReadOptions {
            cursor,
            ..ReadOptions::default()
        };
        let read = shells::read(dirs, workspace, &shell_id, &options).await?;
        if !read.output.is_empty() {
            crate::output::write_stdout(read.output.as_bytes());
        }
        cursor = read.next_cursor;
        if read.shell.state != ShellState::Running && !read.truncated {
            break;
        }
        tokio::select! {
            key = keys.recv() => match key {
                Some(bytes) if bytes.contains(&DETACH) => break,
                Some(bytes) => {
                    let input = String::from_utf8_lossy(&bytes).into_owned();
                    shells::write(dirs, workspace, &shell_id, &input, false).await?;
                }
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(30)) => {}
        }
    }
    drop(_raw);
    say(format!("\r\n[shell-attach] detached from {shell_id}"));
    Ok(ExitCode::SUCCESS)
}
