//! `exec` and `terminal`: start a command in a running sandbox and stream what it does.
//!
//! Lifecycle adds what every backend would otherwise repeat: the sandbox's environment under
//! the command's, stdin delivery, and the timeout — on expiry the command's whole process
//! group gets SIGKILL and the exit is reported `timed_out`. A terminal is the same on a
//! pseudo-terminal, with its input (keys, resizes, signals) coming from the caller.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{ExecRequest, TerminalRequest};
use bytes::Bytes;
use sbx_backend::{ExecEvent, ExecInput, ExecSession, ExitStatus, KillSwitch};
use sbx_store::SandboxRow;
use tokio::sync::mpsc;

use super::handle_of;
use crate::access::ExecPermit;
use crate::admission::OutputRate;
use crate::validate::{ExecParams, TerminalParams};
use crate::view::{self, StoredSpec};
use crate::{deadline, validate, Caller, Error, Service};

/// What a running command produces, in order; `Exit` or `Failed` comes last.
#[derive(Debug)]
pub enum ExecOutput {
    Stdout(Bytes),
    Stderr(Bytes),
    Exit {
        status: ExitStatus,
        timed_out: bool,
        duration: Duration,
    },
    /// The command's end could not be observed (the sandbox stopped).
    Failed(Error),
}

/// A started command. Dropping it detaches: the command keeps running.
#[derive(Debug)]
pub struct ExecStream {
    pub sandbox_id: String,
    /// Pid inside the sandbox.
    pub pid: u32,
    pub output: mpsc::Receiver<ExecOutput>,
    /// Keys, resizes and signals for the command (terminals).
    pub input: mpsc::Sender<ExecInput>,
    /// Ends the command (its process group; a terminal's session) at once, whatever input is
    /// still queued for it.
    pub kill: KillSwitch,
    /// The command's place among those its user and sandbox may run at once: keep it for as
    /// long as the command costs the daemon anything (a response still being sent included).
    pub permit: ExecPermit,
}

const OUTPUT_QUEUE: usize = 16;

/// What to start: a command, or a command on a terminal.
enum Command {
    Exec(ExecParams),
    Terminal(TerminalParams),
}

impl Service {
    pub async fn exec(
        &self,
        caller: &Caller,
        id_or_name: &str,
        request: ExecRequest,
    ) -> Result<ExecStream, Error> {
        let (row, spec) = self.runnable(caller, id_or_name)?;
        let max_command = self.inner.backends.bounds(&row.backend)?.max_command_bytes;
        let params = validate::exec(request, &spec, max_command)?;
        self.inner.access.admit_command(caller)?;
        self.start(caller, row, spec, Command::Exec(params)).await
    }

    /// Starts a command on a new pseudo-terminal (default: a login shell).
    pub async fn terminal(
        &self,
        caller: &Caller,
        id_or_name: &str,
        request: &TerminalRequest,
    ) -> Result<ExecStream, Error> {
        let (row, spec) = self.runnable(caller, id_or_name)?;
        let backend = self.backend_of(&row)?;
        if backend.terminals().is_none() {
            return Err(Error::Unsupported(format!(
                "the {} backend of sandbox {} has no terminals",
                backend.kind(),
                row.id
            )));
        }
        let max_command = self.inner.backends.bounds(&row.backend)?.max_command_bytes;
        let params = validate::terminal(request, &spec, max_command)?;
        self.inner.access.admit_command(caller)?;
        self.start(caller, row, spec, Command::Terminal(params))
            .await
    }

    /// The sandbox, if a command may start in it: running, or paused with `auto_resume` (it
    /// is resumed in [`Service::start`], once the command was validated and admitted, so that
    /// a refused request never wakes it).
    fn runnable(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<(SandboxRow, StoredSpec), Error> {
        let row = self.resolve(caller, id_or_name)?;
        let state = view::effective_state(&row)?;
        let spec = StoredSpec::parse(&row)?;
        if !(state.can_exec() || state.is_suspended() && spec.auto_resume) {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "exec",
            });
        }
        Ok((row, spec))
    }

    async fn start(
        &self,
        caller: &Caller,
        row: SandboxRow,
        spec: StoredSpec,
        command: Command,
    ) -> Result<ExecStream, Error> {
        // The start happens under the sandbox's lock, with its state read again: a pause, a
        // destroy or a recreate cannot slip between the check and the start (a command sent
        // to a frozen init would start, unseen, whenever it is thawed).
        let lock = self.lock_for(&row.id);
        let guard = lock.lock().await;
        let mut row = self.reread(&row.id)?;
        let state = view::effective_state(&row)?;
        if state.is_suspended() && spec.auto_resume {
            row = self.resume_locked(&row, caller).await?;
        } else if !state.can_exec() {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "exec",
            });
        }
        let permit =
            self.inner
                .access
                .admit_running(caller, &row.id, &self.profile_limits(&row.profile))?;
        let rate = self.output_rate(&row.id, spec.cpus);
        self.touch(&row.id);
        let handle = handle_of(&row)?
            .ok_or_else(|| Error::internal(format!("running sandbox {} has no handle", row.id)))?;
        let backend = self.backend_of(&row)?;
        let started = Instant::now();
        let id = row.id.clone();
        let (terminal, argv, begin, stdin, timeout) = match command {
            Command::Exec(params) => {
                let argv = audited_argv(&params.command.argv);
                let (exec, stdin, stdin_open, timeout) = params.spec();
                let stdin = Stdin {
                    data: stdin,
                    close: !stdin_open,
                };
                (false, argv, backend.exec(&handle, exec), stdin, timeout)
            }
            Command::Terminal(params) => {
                let argv = audited_argv(&params.command.argv);
                let terminals = backend.terminals().ok_or_else(|| {
                    Error::Unsupported(format!("the {} backend has no terminals", backend.kind()))
                })?;
                let begin = terminals.open_terminal(&handle, params.spec());
                let stdin = Stdin {
                    data: None,
                    close: false,
                };
                (true, argv, begin, stdin, None)
            }
        };
        let session = deadline::run_on(&id, deadline::EXEC_START, "exec", begin).await?;
        drop(guard);
        let pid = session.pid;
        let input = session.input.clone();
        let kill = session.kill.clone();
        let audit = ExecAudit {
            caller: caller.clone(),
            sandbox_id: id.clone(),
            argv,
            terminal,
            pid,
        };
        if terminal {
            audit.opened(self);
        }
        let (output, receiver) = mpsc::channel(OUTPUT_QUEUE);
        let pump = Pump {
            service: self.clone(),
            id: id.clone(),
            session,
            output,
            audit,
            rate,
            ended: self.inner.access.credential_ended(caller),
            started,
            kill_at: timeout.map(|t| started + t),
        };
        tokio::spawn(pump.run(stdin));
        Ok(ExecStream {
            sandbox_id: row.id,
            pid,
            output: receiver,
            input,
            kill,
            permit,
        })
    }
}

/// What a command's standard input gets first: bytes, then (unless the caller keeps it open
/// to write more) its end.
struct Stdin {
    data: Option<Vec<u8>>,
    close: bool,
}

/// Carries one running command's events to its consumer, and applies what lifecycle adds: the
/// timeout (a kill), the end of the caller's credential (the stream closes), the sandbox's
/// output rate, the audit of its end. Runs in a task of its own; a consumer that leaves
/// detaches it, and the command keeps running.
struct Pump {
    service: Service,
    id: String,
    session: ExecSession,
    output: mpsc::Sender<ExecOutput>,
    audit: ExecAudit,
    rate: Arc<OutputRate>,
    ended: tokio::sync::watch::Receiver<bool>,
    started: Instant,
    kill_at: Option<Instant>,
}

impl Pump {
    async fn run(mut self, stdin: Stdin) {
        if let Some(data) = stdin.data {
            let _ = self
                .session
                .input
                .send(ExecInput::Stdin(Bytes::from(data)))
                .await;
            if stdin.close {
                let _ = self.session.input.send(ExecInput::CloseStdin).await;
            }
        }
        // The timeout fires on its own, even while this task waits for a slow consumer (its
        // output queue full, the sandbox's output rate spent); it goes with this task.
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _timer = self.kill_at.map(|at| {
            let kill = self.session.kill.clone();
            let fired = fired.clone();
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                fired.store(true, std::sync::atomic::Ordering::Release);
                kill.kill();
            }))
        });
        let timed_out = || fired.load(std::sync::atomic::Ordering::Acquire);
        let mut watching_credential = true;
        loop {
            let event = tokio::select! {
                event = self.session.events.recv() => event,
                // The consumer went away: detach, the command keeps running.
                _ = self.output.closed() => {
                    self.audit.ended(&self.service, None, timed_out(), self.started.elapsed());
                    return;
                }
                // Its key was revoked or its session ended: the stream closes now.
                ended_now = async { self.ended.wait_for(|ended| *ended).await.map(|_| ()) },
                    if watching_credential =>
                {
                    if ended_now.is_err() {
                        watching_credential = false;
                        continue;
                    }
                    self.audit.ended(&self.service, None, timed_out(), self.started.elapsed());
                    // A terminal's processes end with it, here: once this task returns,
                    // nothing would carry the bridge's kill to them.
                    if self.audit.terminal {
                        self.session.kill.kill();
                    }
                    let _ = self.output.send(ExecOutput::Failed(Error::CredentialEnded)).await;
                    return;
                }
            };
            let message = match event {
                Some(ExecEvent::Stdout(bytes)) | Some(ExecEvent::Stderr(bytes))
                    if !rate_allows(&self.rate, bytes.len(), &self.output).await =>
                {
                    self.audit
                        .ended(&self.service, None, timed_out(), self.started.elapsed());
                    return;
                }
                Some(ExecEvent::Stdout(bytes)) => ExecOutput::Stdout(bytes),
                Some(ExecEvent::Stderr(bytes)) => ExecOutput::Stderr(bytes),
                Some(ExecEvent::Exited(status)) => {
                    self.service.touch(&self.id);
                    self.audit.ended(
                        &self.service,
                        Some(status),
                        timed_out(),
                        self.started.elapsed(),
                    );
                    let _ = self
                        .output
                        .send(ExecOutput::Exit {
                            status,
                            timed_out: timed_out(),
                            duration: self.started.elapsed(),
                        })
                        .await;
                    return;
                }
                None => {
                    self.audit
                        .ended(&self.service, None, timed_out(), self.started.elapsed());
                    let gone = Error::SandboxGone(self.id.clone());
                    let _ = self.output.send(ExecOutput::Failed(gone)).await;
                    return;
                }
            };
            if self.output.send(message).await.is_err() {
                self.audit
                    .ended(&self.service, None, timed_out(), self.started.elapsed());
                return;
            }
        }
    }
}

/// Waits for `bytes` of the sandbox's output allowance (the sandbox's commands are slowed
/// down meanwhile: their pipes fill); false when the consumer went away instead.
async fn rate_allows(rate: &OutputRate, bytes: usize, output: &mpsc::Sender<ExecOutput>) -> bool {
    // Each chunk costs the daemon a message, an encoding and a write whatever its size: a
    // chunk counts as at least `MIN_CHARGE` bytes, so that many tiny writes are bounded too.
    tokio::select! {
        () = rate.take(bytes.max(MIN_CHARGE)) => true,
        () = output.closed() => false,
    }
}

/// The audit lines of one command: `exec` when it ends (argv, exit, duration), or
/// `terminal.opened` and `terminal.closed`.
struct ExecAudit {
    caller: Caller,
    sandbox_id: String,
    argv: Vec<String>,
    terminal: bool,
    pid: u32,
}

impl ExecAudit {
    fn opened(&self, service: &Service) {
        service.inner.access.audit(
            &self.caller,
            "terminal.opened",
            serde_json::json!({ "sandbox_id": self.sandbox_id, "argv": self.argv, "pid": self.pid }),
        );
    }

    /// `status` is `None` when the end was not seen (the caller detached, the sandbox died).
    fn ended(
        &self,
        service: &Service,
        status: Option<ExitStatus>,
        timed_out: bool,
        duration: Duration,
    ) {
        let (exit_code, signal) = match status {
            Some(ExitStatus::Code(code)) => (Some(code), None),
            Some(ExitStatus::Signal(signal)) => (None, Some(signal)),
            None => (None, None),
        };
        let event = if self.terminal {
            "terminal.closed"
        } else {
            "exec"
        };
        service.inner.access.audit(
            &self.caller,
            event,
            serde_json::json!({
                "sandbox_id": self.sandbox_id,
                "argv": self.argv,
                "pid": self.pid,
                "exit_code": exit_code,
                "signal": signal,
                "timed_out": timed_out,
                "detached": status.is_none(),
                "duration_ms": duration.as_millis() as u64,
            }),
        );
    }
}

/// An argv as the audit trail keeps it: at most [`AUDITED_ARGS`] arguments of at most
/// [`AUDITED_ARG_BYTES`] each (marked when cut), so that one entry stays small whatever the
/// command line (up to 128 KiB): a key's execs must not rotate the trail away by their size.
fn audited_argv(argv: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = argv
        .iter()
        .take(AUDITED_ARGS)
        .map(|arg| {
            if arg.len() <= AUDITED_ARG_BYTES {
                return arg.clone();
            }
            let mut end = AUDITED_ARG_BYTES;
            while !arg.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes)", &arg[..end], arg.len())
        })
        .collect();
    if argv.len() > AUDITED_ARGS {
        kept.push(format!("… ({} arguments in all)", argv.len()));
    }
    kept
}

/// The least a chunk of output counts against its sandbox's output rate.
const MIN_CHARGE: usize = 4096;
const AUDITED_ARGS: usize = 32;
const AUDITED_ARG_BYTES: usize = 256;
