//! Exec sessions: a process started in a sandbox, seen as a pair of bounded channels so that
//! back-pressure reaches whoever consumes the output.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::User;

/// A validated command to run.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// Extra environment, applied over the sandbox's.
    pub env: Vec<(String, String)>,
    /// Absolute working directory; `None` means the user's home.
    pub cwd: Option<String>,
    pub user: User,
    pub stdin: StdinMode,
}

/// A validated command to run on a new pseudo-terminal (see [`crate::Terminals`]): one output
/// stream (`Stdout`), input as typed.
#[derive(Debug, Clone)]
pub struct TerminalSpec {
    pub argv: Vec<String>,
    /// Extra environment, applied over the sandbox's (`TERM` is set unless given).
    pub env: Vec<(String, String)>,
    /// Absolute working directory; `None` means the user's home.
    pub cwd: Option<String>,
    pub user: User,
    pub size: TtySize,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// Where the process's standard input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinMode {
    /// `/dev/null`.
    Null,
    /// A pipe fed by [`ExecInput::Stdin`] until [`ExecInput::CloseStdin`].
    Pipe,
}

/// A signal a client may send, by meaning rather than by a host's numbering. Backends map it
/// to their own (every Linux-based one to the numbers [`Signal::number`] gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Hangup,
    Interrupt,
    Quit,
    Kill,
    User1,
    User2,
    Pipe,
    Alarm,
    Terminate,
    Continue,
    Stop,
    TerminalStop,
    WindowChange,
}

impl Signal {
    pub const ALL: [Signal; 13] = [
        Signal::Hangup,
        Signal::Interrupt,
        Signal::Quit,
        Signal::Kill,
        Signal::User1,
        Signal::User2,
        Signal::Pipe,
        Signal::Alarm,
        Signal::Terminate,
        Signal::Continue,
        Signal::Stop,
        Signal::TerminalStop,
        Signal::WindowChange,
    ];

    /// The POSIX name without `SIG`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hangup => "HUP",
            Signal::Interrupt => "INT",
            Signal::Quit => "QUIT",
            Signal::Kill => "KILL",
            Signal::User1 => "USR1",
            Signal::User2 => "USR2",
            Signal::Pipe => "PIPE",
            Signal::Alarm => "ALRM",
            Signal::Terminate => "TERM",
            Signal::Continue => "CONT",
            Signal::Stop => "STOP",
            Signal::TerminalStop => "TSTP",
            Signal::WindowChange => "WINCH",
        }
    }

    /// Its number on Linux (x86-64 and arm64 alike), which the API also accepts.
    pub fn number(self) -> i32 {
        match self {
            Signal::Hangup => 1,
            Signal::Interrupt => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::User1 => 10,
            Signal::User2 => 12,
            Signal::Pipe => 13,
            Signal::Alarm => 14,
            Signal::Terminate => 15,
            Signal::Continue => 18,
            Signal::Stop => 19,
            Signal::TerminalStop => 20,
            Signal::WindowChange => 28,
        }
    }

    /// `INT`, `SIGINT`, `int` or `2`.
    pub fn parse(text: &str) -> Option<Signal> {
        if let Ok(number) = text.parse::<i32>() {
            return Signal::ALL.into_iter().find(|s| s.number() == number);
        }
        let upper = text.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Which processes a signal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalTarget {
    /// The command's own process.
    Process,
    /// The command's process group (it leads one: a timeout kills it with everything it
    /// started that stayed in it).
    Group,
    /// The foreground process group of the command's terminal — what Ctrl-C reaches; the
    /// command's group when it has no terminal.
    Foreground,
    /// Every process of the command's session (a terminal's shell and all its jobs).
    Session,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(code) => code,
            ExitStatus::Signal(signal) => 128 + signal,
        }
    }
}

/// Output of a running process, in order per stream; `Exited` comes last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    Exited(ExitStatus),
}

/// What a client can send to a running process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Bytes),
    CloseStdin,
    /// Deliver `signal` to some of the command's processes.
    Signal {
        signal: Signal,
        target: SignalTarget,
    },
    /// End the command now, with everything it started that stayed with it (its process
    /// group; a terminal's whole session) — a timeout, a closed terminal, a revoked key.
    Kill,
    /// Change the terminal's size (terminal sessions only).
    Resize(TtySize),
}

/// A started process. Dropping the session detaches from the process; it keeps running.
/// When the sandbox dies, `events` ends without `Exited`.
#[derive(Debug)]
pub struct ExecSession {
    /// Pid inside the sandbox.
    pub pid: u32,
    pub events: mpsc::Receiver<ExecEvent>,
    pub input: mpsc::Sender<ExecInput>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(Signal::parse("INT"), Some(Signal::Interrupt));
        assert_eq!(Signal::parse("sigterm"), Some(Signal::Terminate));
        assert_eq!(Signal::parse("9"), Some(Signal::Kill));
        assert_eq!(Signal::parse("NOPE"), None);
        assert_eq!(Signal::parse("999"), None);
        assert_eq!(Signal::parse("SIG"), None);
        for signal in Signal::ALL {
            assert_eq!(Signal::parse(signal.name()), Some(signal));
            assert_eq!(Signal::parse(&signal.number().to_string()), Some(signal));
        }
    }
}
