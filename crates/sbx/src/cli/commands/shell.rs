//! `sbx shell ID [-- CMD…]`: an interactive terminal in a sandbox. The local terminal goes raw
//! (every key, Ctrl-C included, reaches the sandbox), window-size changes follow, the terminal
//! is restored on the way out, and the exit code is the shell's.

use std::io::Write;
use std::os::fd::AsFd;

use clap::Args;
use futures::{SinkExt, StreamExt};
use nix::sys::termios::{self, SetArg, Termios};
use sbx_api_client::Message;
use sbx_protocol::{TerminalControl, TerminalEvent, TerminalRequest};
use tokio::io::AsyncReadExt;

use super::exec::SBX_FAILED;
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Sandbox id or name.
    id: String,
    /// `user` (default), `root`, or a uid.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// The command to run instead of a login shell.
    #[arg(last = true)]
    cmd: Vec<String>,
}

pub async fn run(context: &Context, args: ShellArgs) -> anyhow::Result<u8> {
    let interactive = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
    let (rows, cols) = window_size().unwrap_or((24, 80));
    let request = TerminalRequest {
        cmd: args.cmd,
        user: args.user,
        cwd: args.workdir,
        rows: Some(rows),
        cols: Some(cols),
    };
    let socket = match context.client.terminal(&args.id, &request).await {
        Ok(socket) => socket,
        Err(error) => {
            crate::cli::output::say_err!("sbx: {error}");
            return Ok(SBX_FAILED);
        }
    };
    let raw = if interactive { RawMode::enable() } else { None };
    let code = session(socket).await;
    drop(raw);
    match code {
        Ok(code) => Ok(code),
        Err(message) => {
            crate::cli::output::say_err!("sbx: {message}");
            Ok(SBX_FAILED)
        }
    }
}

async fn session(socket: sbx_api_client::Terminal) -> Result<u8, String> {
    let (mut sink, mut stream) = socket.split();
    let mut stdin = tokio::io::stdin();
    let mut keys = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| e.to_string())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| e.to_string())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let _ = stdout.write_all(&bytes);
                    let _ = stdout.flush();
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<TerminalEvent>(&text) {
                    Ok(TerminalEvent::Exit(exit)) => return Ok(u8::try_from(exit.exit_code).unwrap_or(255)),
                    Ok(TerminalEvent::Error { error }) => return Err(error.message),
                    _ => {}
                },
                Some(Ok(Message::Close(frame))) => {
                    let reason = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                    return Err(format!("the terminal closed without an exit status {reason}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("terminal connection failed: {e}")),
                None => return Err("the terminal closed without an exit status".into()),
            },
            read = stdin.read(&mut keys), if stdin_open => match read {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let bytes = bytes::Bytes::copy_from_slice(&keys[..n]);
                    if sink.send(Message::Binary(bytes)).await.is_err() {
                        return Err("the terminal connection broke".into());
                    }
                }
            },
            _ = resized.recv() => {
                if let Some((rows, cols)) = window_size() {
                    let resize = TerminalControl::Resize { rows, cols };
                    let _ = sink.send(control(&resize)).await;
                }
            }
            _ = hangup.recv() => return Ok(129),
            _ = terminate.recv() => return Ok(143),
        }
    }
}

fn control(message: &TerminalControl) -> Message {
    Message::Text(
        serde_json::to_string(message)
            .expect("controls serialise")
            .into(),
    )
}

/// The size of the terminal this process writes to, if it writes to one.
fn window_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: TIOCGWINSZ writes into the winsize we pass, which outlives the call.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0
            && size.ws_row > 0
            && size.ws_col > 0
        {
            return Some((size.ws_row, size.ws_col));
        }
    }
    None
}

/// The local terminal in raw mode; the previous settings come back when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}
