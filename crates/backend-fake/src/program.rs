//! The programs a fake sandbox can run, enough for the conformance suite and lifecycle's tests:
//! `echo [-n]`, `cat`, `sleep SECONDS`, `true`, `false`, and `sh -c SCRIPT` where the script is
//! statements joined by `;` — `echo … [>&2]`, `sleep N`, `exit N`, `true`, `false`. On a
//! terminal, input is echoed as a terminal would (`\r\n` for a new line) and anything but
//! `cat` behaves as a line shell running those statements, with a `$ ` prompt.
//!
//! A signal ends `cat` and `sleep` as it would end the real ones (status: killed by it), except
//! `WINCH`, `CONT` and a shell's `INT`; `Kill` ends everything. When the sandbox dies, the
//! session's events end without `Exited`. While the sandbox is paused a program does nothing
//! (no statement starts, no output and no exit is reported) until it is resumed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sbx_backend::{BackendError, ExecEvent, ExecInput, ExecSession, ExitStatus, Signal};
use tokio::sync::{mpsc, watch};

const QUEUE: usize = 16;

/// A parsed command.
#[derive(Debug, Clone)]
pub enum Program {
    Script(Vec<Statement>),
    Cat,
    /// A terminal's line shell.
    Shell,
}

#[derive(Debug, Clone)]
pub enum Statement {
    Echo {
        text: String,
        newline: bool,
        stderr: bool,
    },
    Sleep(Duration),
    Exit(i32),
}

impl Program {
    pub fn parse(argv: &[String], terminal: bool) -> Result<Program, BackendError> {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["cat"] => Ok(Program::Cat),
            _ if terminal => Ok(Program::Shell),
            ["sh", "-c", script] => script
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(statement)
                .collect::<Result<Vec<_>, _>>()
                .map(Program::Script),
            _ => statement(&args.join(" ")).map(|s| Program::Script(vec![s])),
        }
    }
}

fn statement(text: &str) -> Result<Statement, BackendError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (stderr, words) = match words.split_last() {
        Some((&">&2", rest)) => (true, rest.to_vec()),
        _ => (false, words),
    };
    match words.as_slice() {
        ["echo", "-n", rest @ ..] => Ok(Statement::Echo {
            text: unquote(&rest.join(" ")),
            newline: false,
            stderr,
        }),
        ["echo", rest @ ..] => Ok(Statement::Echo {
            text: unquote(&rest.join(" ")),
            newline: true,
            stderr,
        }),
        ["sleep", seconds] => seconds
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(Statement::Sleep)
            .ok_or_else(|| BackendError::ExecFailed(format!("sleep: invalid time {seconds:?}"))),
        ["exit", code] => code
            .parse::<i32>()
            .map(|c| Statement::Exit(c & 0xff))
            .map_err(|_| BackendError::ExecFailed(format!("exit: {code}: numeric argument"))),
        ["exit"] | ["true"] => Ok(Statement::Exit(0)),
        ["false"] => Ok(Statement::Exit(1)),
        [program, ..] => Err(BackendError::ExecFailed(format!(
            "{program}: command not found (the fake backend runs echo, cat, sleep, true, false, exit and sh -c)"
        ))),
        [] => Err(BackendError::ExecFailed("empty command".into())),
    }
}

fn unquote(text: &str) -> String {
    let quoted = |q: char| text.len() >= 2 && text.starts_with(q) && text.ends_with(q);
    if quoted('\'') || quoted('"') {
        text[1..text.len() - 1].to_owned()
    } else {
        text.to_owned()
    }
}

/// Starts `program` as process `pid` of a sandbox whose life is `alive`.
pub fn spawn(
    program: Program,
    pid: u32,
    stdin: bool,
    alive: watch::Receiver<bool>,
    frozen: watch::Receiver<bool>,
    running: Arc<AtomicU64>,
) -> ExecSession {
    let (events, events_rx) = mpsc::channel(QUEUE);
    let (input_tx, input) = mpsc::channel(QUEUE);
    let kill = sbx_backend::KillSwitch::new();
    let killed = kill.clone();
    running.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let mut process = Process {
            events,
            input,
            stdin_open: stdin,
            frozen,
        };
        let mut alive = alive;
        let status = tokio::select! {
            status = process.run(&program) => status,
            _ = alive.wait_for(|alive| !*alive) => None,
            () = killed.fired() => Some(ExitStatus::Signal(Signal::Kill.number())),
        };
        running.fetch_sub(1, Ordering::SeqCst);
        if let Some(status) = status {
            process.thawed().await;
            let _ = process.events.send(ExecEvent::Exited(status)).await;
        }
    });
    ExecSession {
        pid,
        events: events_rx,
        input: input_tx,
        kill,
    }
}

struct Process {
    events: mpsc::Sender<ExecEvent>,
    input: mpsc::Receiver<ExecInput>,
    stdin_open: bool,
    /// `true` while the sandbox is paused.
    frozen: watch::Receiver<bool>,
}

/// What input did to a program.
enum Interrupt {
    /// Ended by this signal.
    Ended(i32),
    /// Nothing that ends it.
    Ignored,
}

impl Process {
    /// Runs to the program's exit status; `None` if nobody listens any more.
    async fn run(&mut self, program: &Program) -> Option<ExitStatus> {
        match program {
            Program::Script(statements) => {
                let mut status = 0;
                for statement in statements {
                    match self.statement(statement, false).await? {
                        Flow::Next(code) => status = code,
                        Flow::Exit(status) => return Some(status),
                    }
                }
                Some(ExitStatus::Code(status))
            }
            Program::Cat => self.cat().await,
            Program::Shell => self.shell().await,
        }
    }

    /// Waits while the sandbox is paused.
    async fn thawed(&mut self) {
        let _ = self.frozen.wait_for(|frozen| !*frozen).await;
    }

    async fn statement(&mut self, statement: &Statement, terminal: bool) -> Option<Flow> {
        self.thawed().await;
        match statement {
            Statement::Echo {
                text,
                newline,
                stderr,
            } => {
                let mut bytes = text.clone().into_bytes();
                if *newline {
                    bytes.extend_from_slice(if terminal { b"\r\n" } else { b"\n" });
                }
                let bytes = Bytes::from(bytes);
                let event = if *stderr && !terminal {
                    ExecEvent::Stderr(bytes)
                } else {
                    ExecEvent::Stdout(bytes)
                };
                self.events.send(event).await.ok()?;
                Some(Flow::Next(0))
            }
            Statement::Exit(code) => Some(Flow::Exit(ExitStatus::Code(*code))),
            Statement::Sleep(duration) => {
                let sleep = tokio::time::sleep(*duration);
                tokio::pin!(sleep);
                // Once the session is dropped nothing more can come: just sleep.
                let mut input_open = true;
                loop {
                    tokio::select! {
                        () = &mut sleep => return Some(Flow::Next(0)),
                        message = self.input.recv(), if input_open => {
                            input_open = message.is_some();
                            if let Interrupt::Ended(signal) = self.interrupt(message, false) {
                                return Some(Flow::Exit(ExitStatus::Signal(signal)));
                            }
                        }
                    }
                }
            }
        }
    }

    /// What `message` does to a program (`shell`: a shell ignores `INT`).
    fn interrupt(&mut self, message: Option<ExecInput>, shell: bool) -> Interrupt {
        match message {
            Some(ExecInput::Kill) => Interrupt::Ended(Signal::Kill.number()),
            Some(ExecInput::Signal { signal, .. }) => match signal {
                Signal::WindowChange | Signal::Continue => Interrupt::Ignored,
                Signal::Interrupt if shell => Interrupt::Ignored,
                other => Interrupt::Ended(other.number()),
            },
            Some(ExecInput::CloseStdin) => {
                self.stdin_open = false;
                Interrupt::Ignored
            }
            Some(ExecInput::Stdin(_)) | Some(ExecInput::Resize(_)) => Interrupt::Ignored,
            // The session was dropped: the program runs on, unobserved, until it ends.
            None => Interrupt::Ignored,
        }
    }

    /// Copies input to output until input closes.
    async fn cat(&mut self) -> Option<ExitStatus> {
        if !self.stdin_open {
            return Some(ExitStatus::Code(0));
        }
        loop {
            let message = self.input.recv().await;
            match message {
                Some(ExecInput::Stdin(bytes)) => {
                    self.events.send(ExecEvent::Stdout(bytes)).await.ok()?;
                }
                Some(ExecInput::CloseStdin) => return Some(ExitStatus::Code(0)),
                None => std::future::pending::<()>().await,
                other => {
                    if let Interrupt::Ended(signal) = self.interrupt(other, false) {
                        return Some(ExitStatus::Signal(signal));
                    }
                }
            }
        }
    }

    /// A terminal's line shell: echoes what is typed, runs each line, prompts again.
    async fn shell(&mut self) -> Option<ExitStatus> {
        self.events
            .send(ExecEvent::Stdout(Bytes::from_static(b"$ ")))
            .await
            .ok()?;
        let mut line = Vec::new();
        loop {
            let message = self.input.recv().await;
            let bytes = match message {
                Some(ExecInput::Stdin(bytes)) => bytes,
                None => std::future::pending::<Bytes>().await,
                other => {
                    if let Interrupt::Ended(signal) = self.interrupt(other, true) {
                        return Some(ExitStatus::Signal(signal));
                    }
                    continue;
                }
            };
            for &byte in bytes.iter() {
                if byte == b'\r' || byte == b'\n' {
                    self.echo(b"\r\n").await?;
                    let text = String::from_utf8_lossy(&line).trim().to_owned();
                    line.clear();
                    if !text.is_empty() {
                        match statement(&text) {
                            Ok(statement) => {
                                if let Flow::Exit(status) = self.statement(&statement, true).await?
                                {
                                    return Some(status);
                                }
                            }
                            Err(e) => self.echo(format!("{e}\r\n").as_bytes()).await?,
                        }
                    }
                    self.echo(b"$ ").await?;
                } else {
                    line.push(byte);
                    self.echo(&[byte]).await?;
                }
            }
        }
    }

    async fn echo(&self, bytes: &[u8]) -> Option<()> {
        self.events
            .send(ExecEvent::Stdout(Bytes::copy_from_slice(bytes)))
            .await
            .ok()
    }
}

enum Flow {
    Next(i32),
    Exit(ExitStatus),
}
