//! Commands through the runtime's `exec`: one `exec` client process per command, its stdio
//! piped to the session; signals and kills by the command's pid inside the sandbox (which the
//! runtime writes to a file as the command starts).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sbx_backend::{BackendError, ExecEvent, ExecInput, ExecSession, ExitStatus, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::Runtime;

/// How long the runtime may take to start a command.
const START: Duration = Duration::from_secs(20);

pub struct Command {
    pub container: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub stdin: bool,
    /// Where the runtime writes the command's pid inside the sandbox.
    pub pid_file: PathBuf,
}

pub async fn start(runtime: &Runtime, command: Command) -> Result<ExecSession, BackendError> {
    let mut process = runtime.command();
    process
        .arg("exec")
        .arg(format!("--user={}:{}", command.uid, command.gid))
        .arg(format!("--cwd={}", command.cwd))
        .arg(format!(
            "--internal-pid-file={}",
            command.pid_file.display()
        ));
    for (key, value) in &command.env {
        process.arg(format!("--env={key}={value}"));
    }
    process
        .arg(&command.container)
        .args(&command.argv)
        .stdin(if command.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A dropped session detaches: the command keeps running.
        .kill_on_drop(false);
    let mut child = process.spawn().map_err(|e| {
        BackendError::unavailable(format!("cannot run {}: {e}", runtime.binary.display()))
    })?;
    // The pid appears once the command runs; an exec that fails ends first.
    let started = Instant::now();
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&command.pid_file) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                break pid;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut said = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut said).await;
            }
            let said = said.trim();
            // The runtime's last line says why, after its log prefix.
            let message = said
                .lines()
                .last()
                .map(|l| l.rsplit("ERROR: ").next().unwrap_or(l).trim().to_owned())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("the command could not start ({status})"));
            return Err(BackendError::ExecFailed(message));
        }
        if started.elapsed() > START {
            let _ = child.start_kill();
            return Err(BackendError::Timeout {
                operation: "exec",
                after: START,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let _ = std::fs::remove_file(&command.pid_file);
    let (events_tx, events) = tokio::sync::mpsc::channel(64);
    let (input, mut inputs) = tokio::sync::mpsc::channel::<ExecInput>(16);
    let signalled: Arc<Mutex<Vec<i32>>> = Arc::default();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut stdin = child.stdin.take();
    // Input: stdin, and signals by the command's pid inside.
    {
        let runtime = runtime.clone();
        let container = command.container.clone();
        let signalled = signalled.clone();
        tokio::spawn(async move {
            while let Some(message) = inputs.recv().await {
                match message {
                    ExecInput::Stdin(bytes) => {
                        if let Some(pipe) = stdin.as_mut() {
                            if pipe.write_all(&bytes).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    ExecInput::CloseStdin => stdin = None,
                    ExecInput::Signal { signal, .. } => {
                        deliver(&runtime, &container, pid, signal, &signalled).await;
                    }
                    ExecInput::Kill => {
                        deliver(&runtime, &container, pid, Signal::Kill, &signalled).await;
                    }
                    ExecInput::Resize(_) => {}
                }
            }
        });
    }
    // Output, then the exit.
    tokio::spawn(async move {
        let out = pump(stdout, events_tx.clone(), ExecEvent::Stdout);
        let err = pump(stderr, events_tx.clone(), ExecEvent::Stderr);
        tokio::join!(out, err);
        let status = child.wait().await;
        let sent = signalled.lock().map(|s| s.clone()).unwrap_or_default();
        let exit = match status {
            Ok(status) => exit_of(status, &sent),
            Err(_) => return,
        };
        let _ = events_tx.send(ExecEvent::Exited(exit)).await;
    });
    Ok(ExecSession { pid, events, input })
}

async fn deliver(
    runtime: &Runtime,
    container: &str,
    pid: u32,
    signal: Signal,
    signalled: &Mutex<Vec<i32>>,
) {
    if let Ok(mut sent) = signalled.lock() {
        sent.push(signal.number());
    }
    let pid = format!("--pid={pid}");
    let _ = runtime
        .call(&["kill", &pid, container, signal.name()], None)
        .await;
}

/// The runtime's exit code is the shell's (128 + n for a signal): a signal this session sent
/// that matches is reported as the signal.
fn exit_of(status: std::process::ExitStatus, signalled: &[i32]) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        return ExitStatus::Signal(signal);
    }
    let code = status.code().unwrap_or(-1);
    if code > 128 && signalled.contains(&(code - 128)) {
        ExitStatus::Signal(code - 128)
    } else {
        ExitStatus::Code(code)
    }
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(
    source: Option<R>,
    events: tokio::sync::mpsc::Sender<ExecEvent>,
    wrap: fn(Bytes) -> ExecEvent,
) {
    let Some(mut source) = source else {
        return;
    };
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        match source.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if events
                    .send(wrap(Bytes::copy_from_slice(&buffer[..n])))
                    .await
                    .is_err()
                {
                    // Detached: keep draining so the command is not blocked on a full pipe.
                    continue;
                }
            }
        }
    }
}
