//! Terminal measurements: keystroke echo round trip, and output throughput, through the
//! terminal WebSocket of a running sandbox (a local client, as the web page or `sbx shell`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::{SinkExt as _, StreamExt as _};
use sbx_api_client::{Message, Terminal};
use sbx_protocol::{ExecRequest, TerminalEvent, TerminalRequest};

use crate::Api;

/// `(echo samples, throughput MB/s)`.
///
/// The sandbox gets every CPU of the host: what is measured is the terminal's path, not the
/// default profile's CPU quota (which `cat` and the terminal's line discipline are charged to).
pub async fn measure(api: &Api<'_>, n: usize, bytes: u64) -> Result<(Vec<Duration>, f64)> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let id = api.create_with_cpus(cpus).await?;
    let result = async {
        let echo = echo(api, &id, n).await?;
        let rate = throughput(api, &id, bytes).await?;
        Ok((echo, rate))
    }
    .await;
    api.delete(&id).await?;
    result
}

/// One key at a time into a shell's terminal, timed until the terminal echoes it back.
async fn echo(api: &Api<'_>, id: &str, n: usize) -> Result<Vec<Duration>> {
    let request = TerminalRequest {
        cmd: vec!["sh".into()],
        ..TerminalRequest::default()
    };
    let mut terminal = api
        .0
        .terminal(id, &request)
        .await
        .context("open a terminal")?;
    started(&mut terminal).await?;
    // Let the prompt arrive before timing anything.
    drain_for(&mut terminal, Duration::from_millis(300)).await;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 && i % 64 == 0 {
            // Ctrl-U empties the line before it grows long.
            terminal.send(Message::Binary(vec![0x15].into())).await?;
            drain_for(&mut terminal, Duration::from_millis(20)).await;
        }
        let start = Instant::now();
        terminal.send(Message::Binary(b"x".to_vec().into())).await?;
        loop {
            match next(&mut terminal).await? {
                Message::Binary(bytes) if bytes.contains(&b'x') => break,
                _ => {}
            }
        }
        samples.push(start.elapsed());
    }
    terminal.close(None).await?;
    Ok(samples)
}

/// `cat` of a large file in a raw-mode terminal; bytes received per second until exit.
async fn throughput(api: &Api<'_>, id: &str, bytes: u64) -> Result<f64> {
    let make = ExecRequest {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            format!("head -c {bytes} /dev/zero > $HOME/big"),
        ],
        ..ExecRequest::default()
    };
    let made = api.0.exec(id, &make).await?;
    if made.exit_code != 0 {
        bail!("cannot write the file to cat: {}", made.stderr);
    }
    let request = TerminalRequest {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "stty raw -echo; cat $HOME/big".into(),
        ],
        ..TerminalRequest::default()
    };
    let mut terminal = api
        .0
        .terminal(id, &request)
        .await
        .context("open a terminal")?;
    started(&mut terminal).await?;
    let mut received = 0u64;
    let mut first: Option<Instant> = None;
    loop {
        match next(&mut terminal).await? {
            Message::Binary(chunk) => {
                first.get_or_insert_with(Instant::now);
                received += chunk.len() as u64;
            }
            Message::Text(text) => {
                if let Ok(TerminalEvent::Exit(_)) = serde_json::from_str(&text) {
                    break;
                }
            }
            _ => {}
        }
    }
    let seconds = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let _ = terminal.close(None).await;
    if received != bytes {
        bail!("received {received} bytes of {bytes}");
    }
    Ok(received as f64 / 1e6 / seconds.max(1e-9))
}

async fn started(terminal: &mut Terminal) -> Result<()> {
    match next(terminal).await? {
        Message::Text(text) if text.contains("started") => Ok(()),
        other => bail!("expected the started event, got {other:?}"),
    }
}

async fn next(terminal: &mut Terminal) -> Result<Message> {
    match tokio::time::timeout(Duration::from_secs(30), terminal.next()).await {
        Ok(Some(Ok(message))) => Ok(message),
        Ok(Some(Err(e))) => bail!("terminal failed: {e}"),
        Ok(None) => bail!("terminal closed"),
        Err(_) => bail!("terminal silent for 30 s"),
    }
}

async fn drain_for(terminal: &mut Terminal, period: Duration) {
    let until = Instant::now() + period;
    while let Ok(Some(_)) = tokio::time::timeout(
        until.saturating_duration_since(Instant::now()),
        terminal.next(),
    )
    .await
    {}
}

/// The ceiling the host's pseudo-terminals allow: `cat` of a `bytes`-long file on a raw-mode
/// terminal, read by the simplest reader (on the host, no sandbox, no WebSocket). MB/s.
pub fn pty_ceiling(bytes: u64) -> Result<f64> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("big");
    std::fs::write(&file, vec![0u8; bytes as usize])?;
    let pty = nix::pty::openpty(None, None)?;
    let mut raw = nix::sys::termios::tcgetattr(&pty.slave)?;
    nix::sys::termios::cfmakeraw(&mut raw);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &raw)?;
    let mut command = std::process::Command::new("cat");
    command
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::from(pty.slave.try_clone()?))
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; it runs between fork and exec only.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    drop(command);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let start = Instant::now();
    // EIO once cat exits and the slave side is gone.
    while let Ok(n) = master.read(&mut buffer) {
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    child.wait()?;
    if received != bytes {
        bail!("the pty ceiling read {received} bytes of {bytes}");
    }
    Ok(received as f64 / 1e6 / seconds.max(1e-9))
}
