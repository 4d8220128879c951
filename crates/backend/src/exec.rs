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
    /// Run on a pseudo-terminal of this size: one output stream (`Stdout`), input as typed.
    pub tty: Option<TtySize>,
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
        signal: i32,
        target: SignalTarget,
    },
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
