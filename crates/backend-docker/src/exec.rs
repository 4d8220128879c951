//! Commands in a container, through the engine's exec API, as [`ExecSession`]s.
//!
//! Every command starts under a one-line wrapper run by the static busybox bound into each
//! sandbox: it writes its own pid (ten digits) first on standard output and then becomes the
//! command (`exec`), so the session knows the command's pid inside the sandbox — the engine's
//! exec API tells only a host pid, and none at all under gVisor. The engine starts each exec
//! as the leader of a session of its own, so that pid is also its process group's and its
//! session's. The engine has no call to signal an exec: signals are sent by a second exec, as
//! the command's own user, with busybox's `kill` and `pkill`.
//!
//! The engine reports a command killed by signal N as exit code 128 + N, as shells do; codes
//! 129 to 159 are read back as signals.

use std::pin::Pin;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::ResizeExecOptions;
use bollard::Docker;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sbx_backend::{
    BackendError, ExecEvent, ExecInput, ExecSession, ExitStatus, KillSwitch, Signal, SignalTarget,
    TtySize,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::{engine_error, BUSYBOX, CALL};

/// Writes the shell's pid, then becomes the command — looked up in `PATH` here, as a path:
/// busybox's shell would run its own applet for a bare name it knows (`sh`, `date`, …) rather
/// than the sandbox's program.
const WRAPPER: &str = "printf '%010d' \"$$\"; n=$1; shift; c=$n; case $n in */*) ;; *) c=; \
    set -f; IFS=:; for d in $PATH; do [ -n \"$d\" ] && [ -f \"$d/$n\" ] && [ -x \"$d/$n\" ] && \
    { c=$d/$n; break; }; done; unset IFS; [ -n \"$c\" ] || { echo \"sbx: $n: command not found\" >&2; \
    exit 127; };; esac; exec -a \"$n\" -- \"$c\" \"$@\"";
const PID_DIGITS: usize = 10;

/// A command as the engine runs it.
pub struct Command {
    /// The container's full id.
    pub container: String,
    pub argv: Vec<String>,
    /// `KEY=value` entries: the whole environment.
    pub env: Vec<String>,
    pub cwd: String,
    /// `uid:gid`.
    pub user: String,
    pub stdin: bool,
    /// On a pseudo-terminal of this size.
    pub tty: Option<TtySize>,
}

type Output = Pin<
    Box<dyn Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>> + Send>,
>;

/// Starts the command; returns once it runs, with its pid inside the sandbox.
pub async fn start(docker: &Docker, command: Command) -> Result<ExecSession, BackendError> {
    let mut argv = vec![
        BUSYBOX.to_owned(),
        "sh".to_owned(),
        "-c".to_owned(),
        WRAPPER.to_owned(),
        "sbx".to_owned(),
    ];
    argv.extend(command.argv.iter().cloned());
    let tty = command.tty.is_some();
    let options = CreateExecOptions {
        attach_stdin: Some(command.stdin || tty),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(tty),
        env: Some(command.env.clone()),
        cmd: Some(argv),
        user: Some(command.user.clone()),
        working_dir: Some(command.cwd.clone()),
        ..Default::default()
    };
    let created = deadline(
        "exec create",
        docker.create_exec(&command.container, options),
    )
    .await?
    .map_err(|e| engine_error("the engine could not make the command", e))?;
    let started = deadline(
        "exec start",
        docker.start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty,
                output_capacity: None,
            }),
        ),
    )
    .await?
    .map_err(|e| engine_error("the engine could not start the command", e))?;
    let StartExecResults::Attached { mut output, input } = started else {
        return Err(BackendError::other(
            "the engine started the command detached",
        ));
    };
    // The wrapper's pid first; what the engine or the shell says instead is why it failed.
    let mut header = Vec::new();
    let mut early_stderr = Vec::new();
    while header.len() < PID_DIGITS {
        match deadline("the command's start", output.next()).await? {
            Some(Ok(bollard::container::LogOutput::StdOut { message }))
            | Some(Ok(bollard::container::LogOutput::Console { message })) => {
                header.extend_from_slice(&message)
            }
            Some(Ok(bollard::container::LogOutput::StdErr { message })) => {
                if early_stderr.len() < 64 << 10 {
                    early_stderr.extend_from_slice(&message)
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(engine_error("the command's output broke", e)),
            None => {
                let text = String::from_utf8_lossy(&[early_stderr, header].concat())
                    .trim()
                    .to_owned();
                return Err(BackendError::ExecFailed(if text.is_empty() {
                    "the command could not be started".into()
                } else {
                    text
                }));
            }
        }
    }
    // Not digits: the engine's own report that the command could not start (a working
    // directory that is missing or not the user's, …), on the output stream.
    let Some(pid) = std::str::from_utf8(&header[..PID_DIGITS])
        .ok()
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u32>().ok())
    else {
        let text = String::from_utf8_lossy(&[early_stderr, header].concat())
            .trim()
            .chars()
            .take(1000)
            .collect::<String>();
        return Err(BackendError::ExecFailed(text));
    };
    let rest = Bytes::copy_from_slice(&header[PID_DIGITS..]);

    let (events_tx, events_rx) = mpsc::channel(64);
    let (input_tx, input_rx) = mpsc::channel(64);
    let target = Target {
        docker: docker.clone(),
        container: command.container.clone(),
        exec: created.id.clone(),
        user: command.user.clone(),
        pid,
        tty,
    };
    if let Some(size) = command.tty {
        target.resize(size).await;
    }
    if !early_stderr.is_empty() {
        let _ = events_tx.send(ExecEvent::Stderr(early_stderr.into())).await;
    }
    if !rest.is_empty() {
        let _ = events_tx.send(ExecEvent::Stdout(rest)).await;
    }
    let kill = KillSwitch::new();
    // Fired once the command has ended: kills stop then (its pid may be another's).
    let exited = KillSwitch::new();
    tokio::spawn(pump(
        target.clone(),
        output,
        events_tx,
        exited.clone(),
        kill.clone(),
    ));
    tokio::spawn(feed(target, input, input_rx, kill.clone(), exited));
    Ok(ExecSession {
        pid,
        events: events_rx,
        input: input_tx,
        kill,
    })
}

/// What signals and resizes reach.
#[derive(Clone)]
struct Target {
    docker: Docker,
    container: String,
    exec: String,
    user: String,
    pid: u32,
    tty: bool,
}

impl Target {
    async fn resize(&self, size: TtySize) {
        let options = ResizeExecOptions {
            h: i32::from(size.rows),
            w: i32::from(size.cols),
        };
        if let Ok(Err(e)) =
            tokio::time::timeout(CALL, self.docker.resize_exec(&self.exec, options)).await
        {
            tracing::debug!(error = %e, "terminal resize failed");
        }
    }

    /// Sends `signal` to the processes `target` names, from a second exec as the command's
    /// user (who may signal its own processes and no one else's).
    async fn signal(&self, signal: Signal, target: SignalTarget) {
        let target = match (target, self.tty) {
            (SignalTarget::Foreground, false) => SignalTarget::Group,
            (target, _) => target,
        };
        let script = match target {
            SignalTarget::Process => "kill -s \"$1\" \"$2\"",
            SignalTarget::Group => "kill -s \"$1\" -- \"-$2\"",
            SignalTarget::Foreground => {
                "sig=$1 pid=$2; read -r s < /proc/$pid/stat || exit 1; s=${s##*) }; set -- $s; \
                 fg=$6; [ \"$fg\" -gt 0 ] 2>/dev/null || fg=$pid; kill -s \"$sig\" -- \"-$fg\""
            }
            // Every process whose session (the fourth field after the command's name) is it.
            SignalTarget::Session => {
                "sig=$1 sid=$2; for f in /proc/[0-9]*/stat; do read -r s < $f || continue; \
                 s=${s##*) }; set -- $s; [ \"$4\" = \"$sid\" ] || continue; p=${f#/proc/}; \
                 kill -s \"$sig\" ${p%/stat}; done"
            }
        };
        let argv = vec![
            BUSYBOX.to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
            format!("B={BUSYBOX}; {script}"),
            "sbx-signal".to_owned(),
            signal.name().to_owned(),
            self.pid.to_string(),
        ];
        let options = CreateExecOptions {
            cmd: Some(argv),
            user: Some(self.user.clone()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let sent = async {
            let created = self.docker.create_exec(&self.container, options).await?;
            // Attached, so that the signal has gone when this returns.
            if let StartExecResults::Attached { mut output, .. } =
                self.docker.start_exec(&created.id, None).await?
            {
                while output.next().await.is_some() {}
            }
            Ok::<(), bollard::errors::Error>(())
        };
        match tokio::time::timeout(CALL, sent).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "signal not sent"),
            Err(_) => tracing::warn!("the engine did not send a signal within {CALL:?}"),
        }
    }

    /// The command's exit status once the engine has it; `None` when the container is gone.
    async fn status(&self) -> Option<ExitStatus> {
        // A command may close its output and run on: asked until it ends (or its container
        // goes), less and less often.
        let mut pause = Duration::from_millis(5);
        loop {
            match tokio::time::timeout(CALL, self.docker.inspect_exec(&self.exec)).await {
                Ok(Ok(inspect)) if inspect.running != Some(true) => {
                    let code = inspect.exit_code.unwrap_or(-1);
                    return Some(match code {
                        129..=159 => ExitStatus::Signal((code - 128) as i32),
                        code => ExitStatus::Code(code as i32),
                    });
                }
                Ok(Ok(_)) | Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Ok(Err(_)) => return None,
            }
        }
    }
}

/// Output to the session until the command's streams close, then its status.
///
/// Once the command is killed, output the session has no room for is dropped: the engine's
/// stream must be drained for the engine to finish the command, and an engine waiting to hand
/// out a killed command's output holds up the container's next commands.
async fn pump(
    target: Target,
    mut output: Output,
    events: mpsc::Sender<ExecEvent>,
    exited: KillSwitch,
    kill: KillSwitch,
) {
    let mut attached = true;
    while let Some(frame) = output.next().await {
        let event = match frame {
            Ok(bollard::container::LogOutput::StdOut { message })
            | Ok(bollard::container::LogOutput::Console { message }) => ExecEvent::Stdout(message),
            Ok(bollard::container::LogOutput::StdErr { message }) => ExecEvent::Stderr(message),
            Ok(bollard::container::LogOutput::StdIn { .. }) => continue,
            Err(_) => break,
        };
        if !attached {
            continue;
        }
        if kill.is_fired() {
            if let Err(mpsc::error::TrySendError::Closed(_)) = events.try_send(event) {
                attached = false;
            }
            continue;
        }
        // A dropped session detaches: the command keeps running, its output is drained.
        tokio::select! {
            sent = events.send(event) => attached = sent.is_ok(),
            // Killed while the session is slow to take the output: this chunk goes.
            () = kill.fired() => {}
        }
    }
    let status = target.status().await;
    exited.kill();
    if let Some(status) = status {
        let _ = events.send(ExecEvent::Exited(status)).await;
    }
}

/// Stdin queued for the writer at most, beyond which the session's input waits: while it is
/// not full, signals and `Kill` are taken even when the command does not read its stdin.
const STDIN_QUEUE: usize = 1 << 20;
/// And at most this many chunks of it (tiny chunks cost more than their bytes).
const STDIN_CHUNKS: usize = 64;

/// Input from the session to the command, until the session is dropped. Stdin is written by
/// a task of its own, so that a command that does not read it holds up no signal.
async fn feed(
    target: Target,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    mut inputs: mpsc::Receiver<ExecInput>,
    kill: KillSwitch,
    exited: KillSwitch,
) {
    // `None`: close stdin.
    let (chunks, mut to_write) = mpsc::channel::<Option<Bytes>>(4);
    tokio::spawn(async move {
        let mut writer = input;
        while let Some(chunk) = to_write.recv().await {
            match chunk {
                Some(bytes) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = writer.shutdown().await;
                    break;
                }
            }
        }
    });
    let mut queue: std::collections::VecDeque<Option<Bytes>> = Default::default();
    let mut queued = 0usize;
    let mut open = true;
    let mut killed = false;
    let kill_target = if target.tty {
        SignalTarget::Session
    } else {
        SignalTarget::Group
    };
    loop {
        tokio::select! {
            // The command ended: nothing more is for it.
            () = exited.fired() => return,
            // Out of band: a full queue (a command that does not read) holds up no kill.
            () = kill.fired(), if !killed => {
                killed = true;
                queue.clear();
                queued = 0;
                target.signal(Signal::Kill, kill_target).await;
            },
            permit = chunks.reserve(), if !queue.is_empty() => match permit {
                Ok(permit) => {
                    let chunk = queue.pop_front().flatten();
                    queued -= chunk.as_ref().map_or(0, Bytes::len);
                    permit.send(chunk);
                }
                // The writer ended (stdin closed, or the command gone).
                Err(_) => {
                    queue.clear();
                    queued = 0;
                    open = false;
                }
            },
            message = inputs.recv(), if queued < STDIN_QUEUE && queue.len() < STDIN_CHUNKS => {
                let Some(message) = message else {
                    // The session went: what it sent still goes in, in order, and a kill is
                    // still taken, until the command ends.
                    for chunk in queue {
                        tokio::select! {
                            sent = chunks.send(chunk) => if sent.is_err() { break },
                            () = kill.fired(), if !killed => {
                                target.signal(Signal::Kill, kill_target).await;
                                return;
                            }
                            () = exited.fired() => return,
                        }
                    }
                    if !killed {
                        tokio::select! {
                            () = kill.fired() => target.signal(Signal::Kill, kill_target).await,
                            () = exited.fired() => {}
                        }
                    }
                    return;
                };
                match message {
                    ExecInput::Stdin(bytes) => {
                        if open {
                            queued += bytes.len();
                            queue.push_back(Some(bytes));
                        }
                    }
                    ExecInput::CloseStdin => {
                        if open {
                            queue.push_back(None);
                            open = false;
                        }
                    }
                    ExecInput::Signal { signal, target: to } => target.signal(signal, to).await,
                    ExecInput::Kill => {
                        let to = if target.tty {
                            SignalTarget::Session
                        } else {
                            SignalTarget::Group
                        };
                        target.signal(Signal::Kill, to).await;
                    }
                    ExecInput::Resize(size) => {
                        if target.tty {
                            target.resize(size).await;
                        }
                    }
                }
            }
        }
    }
}

/// `call` under the engine's deadline.
pub async fn deadline<T>(
    operation: &'static str,
    call: impl std::future::Future<Output = T>,
) -> Result<T, BackendError> {
    tokio::time::timeout(CALL, call)
        .await
        .map_err(|_| BackendError::Timeout {
            operation,
            after: CALL,
        })
}
