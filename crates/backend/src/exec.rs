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

/// A signal a client may send, by meaning rather than by a host's numbering: the 31 standard
/// signals of Linux. Backends map it to their own (every Linux-based one to the numbers
/// [`Signal::number`] gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Hangup,
    Interrupt,
    Quit,
    IllegalInstruction,
    Trap,
    Abort,
    Bus,
    FloatingPoint,
    Kill,
    User1,
    Segfault,
    User2,
    Pipe,
    Alarm,
    Terminate,
    StackFault,
    Child,
    Continue,
    Stop,
    TerminalStop,
    TerminalInput,
    TerminalOutput,
    Urgent,
    CpuLimit,
    FileSizeLimit,
    VirtualAlarm,
    Profiling,
    WindowChange,
    Io,
    Power,
    BadSystemCall,
}

/// Each signal, its POSIX name without `SIG`, and its number on Linux (x86-64 and arm64).
const SIGNALS: [(Signal, &str, i32); 31] = [
    (Signal::Hangup, "HUP", 1),
    (Signal::Interrupt, "INT", 2),
    (Signal::Quit, "QUIT", 3),
    (Signal::IllegalInstruction, "ILL", 4),
    (Signal::Trap, "TRAP", 5),
    (Signal::Abort, "ABRT", 6),
    (Signal::Bus, "BUS", 7),
    (Signal::FloatingPoint, "FPE", 8),
    (Signal::Kill, "KILL", 9),
    (Signal::User1, "USR1", 10),
    (Signal::Segfault, "SEGV", 11),
    (Signal::User2, "USR2", 12),
    (Signal::Pipe, "PIPE", 13),
    (Signal::Alarm, "ALRM", 14),
    (Signal::Terminate, "TERM", 15),
    (Signal::StackFault, "STKFLT", 16),
    (Signal::Child, "CHLD", 17),
    (Signal::Continue, "CONT", 18),
    (Signal::Stop, "STOP", 19),
    (Signal::TerminalStop, "TSTP", 20),
    (Signal::TerminalInput, "TTIN", 21),
    (Signal::TerminalOutput, "TTOU", 22),
    (Signal::Urgent, "URG", 23),
    (Signal::CpuLimit, "XCPU", 24),
    (Signal::FileSizeLimit, "XFSZ", 25),
    (Signal::VirtualAlarm, "VTALRM", 26),
    (Signal::Profiling, "PROF", 27),
    (Signal::WindowChange, "WINCH", 28),
    (Signal::Io, "IO", 29),
    (Signal::Power, "PWR", 30),
    (Signal::BadSystemCall, "SYS", 31),
];

impl Signal {
    pub const ALL: [Signal; 31] = {
        let mut all = [Signal::Hangup; 31];
        let mut i = 0;
        while i < SIGNALS.len() {
            all[i] = SIGNALS[i].0;
            i += 1;
        }
        all
    };

    fn entry(self) -> &'static (Signal, &'static str, i32) {
        SIGNALS
            .iter()
            .find(|(signal, _, _)| *signal == self)
            .expect("every signal is in the table")
    }

    /// The POSIX name without `SIG`.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Its number on Linux (x86-64 and arm64 alike), which the API also accepts.
    pub fn number(self) -> i32 {
        self.entry().2
    }

    /// `INT`, `SIGINT`, `int` or `2`.
    pub fn parse(text: &str) -> Option<Signal> {
        if let Ok(number) = text.parse::<i32>() {
            return SIGNALS.iter().find(|e| e.2 == number).map(|e| e.0);
        }
        let upper = text.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNALS.iter().find(|e| e.1 == name).map(|e| e.0)
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
    /// Ends the command as [`ExecInput::Kill`] does, but never waits behind its input: a
    /// command that does not read its stdin fills `input`, and a kill (its timeout, say) must
    /// still reach it.
    pub kill: KillSwitch,
}

/// A kill that does not queue: fired once, seen by whoever waits on it (the backend's side of
/// a session), at once.
#[derive(Debug, Clone, Default)]
pub struct KillSwitch {
    inner: std::sync::Arc<KillInner>,
}

#[derive(Debug, Default)]
struct KillInner {
    fired: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl KillSwitch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires (again is nothing).
    pub fn kill(&self) {
        if !self
            .inner
            .fired
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.inner.notify.notify_waiters();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.inner.fired.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once fired.
    pub async fn fired(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_fired() {
                return;
            }
            notified.await;
        }
    }
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
        assert_eq!(Signal::parse("0"), None);
        assert_eq!(Signal::parse("32"), None);
        assert_eq!(Signal::parse("ABRT"), Some(Signal::Abort));
        assert_eq!(Signal::parse("21"), Some(Signal::TerminalInput));
        // Every standard Linux signal, once each.
        let mut numbers: Vec<i32> = Signal::ALL.iter().map(|s| s.number()).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=31).collect::<Vec<_>>());
        for signal in Signal::ALL {
            assert_eq!(Signal::parse(signal.name()), Some(signal));
            assert_eq!(Signal::parse(&signal.number().to_string()), Some(signal));
        }
    }
}
