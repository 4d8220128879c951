//! The daemon side of the control protocol: starting a process in a sandbox and pumping its
//! output into an [`ExecSession`].
//!
//! The output pipes go straight from the process to the daemon (init only passes them on), so
//! output never crosses init. The process's end is given by init's `Exited` message, not by the
//! pipes' EOF: a background process that inherited stdout must not hold an exec open. After
//! `Exited`, what the process wrote before exiting is already in the pipes and is drained.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use nix::errno::Errno;
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use sbx_backend::{
    BackendError, ExecEvent, ExecInput, ExecSession, ExitStatus, KillSwitch, Signal, SignalTarget,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::wire::{self, Received, Reply, Request, SpawnRequest};

const CHUNK: usize = 64 * 1024;
/// Events buffered between the pump and the consumer before back-pressure reaches the process.
const EVENT_QUEUE: usize = 16;

/// Connects to a sandbox's control socket.
pub(super) fn connect_control(path: &Path) -> Result<AsyncFd<OwnedFd>, BackendError> {
    // Non-blocking from the start: a connect to an init whose backlog is full (it is busy, or
    // frozen) must not block one of the runtime's few threads.
    let socket = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| BackendError::io("cannot create a control socket", e.into()))?;
    let address =
        UnixAddr::new(path).map_err(|e| BackendError::io("control socket path", e.into()))?;
    match connect(socket.as_raw_fd(), &address) {
        Ok(()) => {}
        Err(Errno::ENOENT | Errno::ECONNREFUSED) => return Err(BackendError::gone()),
        Err(Errno::EAGAIN) => {
            return Err(BackendError::Capacity {
                resource: sbx_backend::SharedResource::Engine,
                detail: "the sandbox's init has as many connections waiting as it takes".into(),
            })
        }
        Err(e) => {
            return Err(BackendError::io(
                "cannot connect to the sandbox's init",
                e.into(),
            ))
        }
    }
    set_nonblocking(&socket)?;
    // SAFETY: the OwnedFd stays open, and names the same socket, for the AsyncFd's lifetime.
    unsafe { AsyncFd::register(socket) }
        .map_err(|e| BackendError::io("cannot register the control socket", e.into()))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), BackendError> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| BackendError::io("fcntl", e.into()))?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| BackendError::io("fcntl", e.into()))?;
    Ok(())
}

pub(super) async fn next_reply(socket: &AsyncFd<OwnedFd>, buffer: &mut [u8]) -> Option<Reply> {
    next_reply_with_fds(socket, buffer)
        .await
        .map(|(reply, _)| reply)
}

async fn next_reply_with_fds(
    socket: &AsyncFd<OwnedFd>,
    buffer: &mut [u8],
) -> Option<(Reply, Vec<OwnedFd>)> {
    loop {
        let mut guard = socket.readable().await.ok()?;
        match guard.try_io(|fd| {
            wire::receive::<Reply>(fd.get_ref().as_fd(), buffer).map_err(std::io::Error::from)
        }) {
            Ok(Ok(Received::Message(reply, fds))) => return Some((reply, fds)),
            Ok(Ok(Received::Closed | Received::Invalid(_))) | Ok(Err(_)) => return None,
            Err(_would_block) => continue,
        }
    }
}

/// Asks init whether it is serving.
pub async fn ping(path: &Path) -> Result<(), BackendError> {
    let socket = connect_control(path)?;
    wire::send(socket.get_ref().as_fd(), &Request::Ping, &[])
        .map_err(|e| BackendError::io("cannot reach the sandbox's init", e.into()))?;
    let mut buffer = vec![0u8; 4096];
    match next_reply(&socket, &mut buffer).await {
        Some(Reply::Pong { .. }) => Ok(()),
        _ => Err(BackendError::gone()),
    }
}

/// Starts a process through init and returns its session.
pub async fn spawn(path: &Path, request: SpawnRequest) -> Result<ExecSession, BackendError> {
    if request.tty.is_some() {
        return spawn_terminal(path, request).await;
    }
    let pipe_pair = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| BackendError::io("cannot create a pipe", e.into()))
    };
    let (stdout_read, stdout_write) = pipe_pair()?;
    let (stderr_read, stderr_write) = pipe_pair()?;
    let stdin = if request.stdin_pipe {
        Some(pipe_pair()?)
    } else {
        None
    };
    let socket = connect_control(path)?;
    let mut fds = Vec::with_capacity(3);
    if let Some((read, _)) = &stdin {
        fds.push(read.as_raw_fd());
    }
    fds.push(stdout_write.as_raw_fd());
    fds.push(stderr_write.as_raw_fd());
    wire::send(socket.get_ref().as_fd(), &Request::Spawn(request), &fds).map_err(|e| match e {
        Errno::EMSGSIZE => BackendError::ExecFailed("command and environment are too large".into()),
        Errno::EPIPE | Errno::ECONNRESET => BackendError::gone(),
        e => BackendError::io("cannot send to the sandbox's init", e.into()),
    })?;
    // The process holds its ends now; ours must close so EOF can come.
    drop(stdout_write);
    drop(stderr_write);
    let stdin_write = stdin.map(|(read, write)| {
        drop(read);
        write
    });

    let mut buffer = vec![0u8; 64 * 1024];
    let pid = match next_reply(&socket, &mut buffer).await {
        Some(Reply::Started { pid }) => pid,
        Some(Reply::Failed { message }) => return Err(BackendError::ExecFailed(message)),
        _ => return Err(BackendError::gone()),
    };

    let stdout = pipe::Receiver::from_owned_fd(stdout_read)
        .map_err(|e| BackendError::io("cannot register stdout", e))?;
    let stderr = pipe::Receiver::from_owned_fd(stderr_read)
        .map_err(|e| BackendError::io("cannot register stderr", e))?;
    let stdin = match stdin_write {
        Some(fd) => Some(
            pipe::Sender::from_owned_fd(fd)
                .map_err(|e| BackendError::io("cannot register stdin", e))?,
        ),
        None => None,
    };
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (input_tx, input_rx) = mpsc::channel(EVENT_QUEUE);
    let kill = KillSwitch::new();
    tokio::spawn(pump(Pump {
        socket,
        buffer,
        stdout,
        stderr,
        stdin,
        events: events_tx,
        input: input_rx,
        kill: kill.clone(),
    }));
    Ok(ExecSession {
        pid: pid as u32,
        events: events_rx,
        input: input_tx,
        kill,
    })
}

struct Pump {
    socket: AsyncFd<OwnedFd>,
    buffer: Vec<u8>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    stdin: Option<pipe::Sender>,
    events: mpsc::Sender<ExecEvent>,
    input: mpsc::Receiver<ExecInput>,
    kill: KillSwitch,
}

/// A permit to send on `sender`, when there is one; never resolves without.
async fn room<T>(sender: &Option<mpsc::Sender<T>>) -> Option<mpsc::Permit<'_, T>> {
    match sender {
        Some(sender) => sender.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

async fn pump(mut pump: Pump) {
    // Stdin is written by its own task so that a process that does not read cannot stall output.
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(EVENT_QUEUE);
    let stdin_task = pump
        .stdin
        .take()
        .map(|sender| tokio::spawn(feed_stdin(sender, stdin_rx)));
    let mut stdin_tx = stdin_task.as_ref().map(|_| stdin_tx);
    // A chunk taken from the input while the writer's queue is full: no more input is taken
    // until it has gone, and nothing else waits meanwhile (output, exits, kills).
    let mut pending: Option<Bytes> = None;
    let mut killed = false;
    let mut stdout_open = true;
    let mut stderr_open = true;
    let mut input_open = true;
    let mut out = BytesMut::with_capacity(CHUNK);
    let mut err = BytesMut::with_capacity(CHUNK);
    let status = loop {
        // A copy for this turn's wait on the writer's queue (the branches below may drop the
        // session's own).
        let writer = stdin_tx.clone();
        tokio::select! {
            read = pump.stdout.read_buf(&mut out), if stdout_open => match read {
                Ok(0) | Err(_) => stdout_open = false,
                Ok(_) => {
                    let chunk = take_chunk(&mut out, ExecEvent::Stdout);
                    let killer = Killer { kill: &pump.kill, killed: &mut killed, socket: &pump.socket, target: SignalTarget::Group };
                    if !send_or_kill(&pump.events, chunk, killer).await { break None }
                }
            },
            read = pump.stderr.read_buf(&mut err), if stderr_open => match read {
                Ok(0) | Err(_) => stderr_open = false,
                Ok(_) => {
                    let chunk = take_chunk(&mut err, ExecEvent::Stderr);
                    let killer = Killer { kill: &pump.kill, killed: &mut killed, socket: &pump.socket, target: SignalTarget::Group };
                    if !send_or_kill(&pump.events, chunk, killer).await { break None }
                }
            },
            reply = next_reply(&pump.socket, &mut pump.buffer) => match reply {
                Some(Reply::Exited { code, signal }) => break Some(match (code, signal) {
                    (_, Some(signal)) => ExitStatus::Signal(signal),
                    (code, None) => ExitStatus::Code(code.unwrap_or(0)),
                }),
                Some(_) => {}
                // Init is gone: the sandbox died or was destroyed.
                None => break None,
            },
            permit = room(&writer), if pending.is_some() => match permit {
                Some(permit) => permit.send(pending.take().unwrap_or_default()),
                // The writer ended (the process closed its stdin): nothing more goes in.
                None => {
                    pending = None;
                    stdin_tx = None;
                }
            },
            () = pump.kill.fired(), if !killed => {
                killed = true;
                pending = None;
                send_signal(&pump.socket, &ExecInput::Kill, SignalTarget::Group);
            },
            input = pump.input.recv(), if input_open && pending.is_none() => match input {
                Some(ExecInput::Stdin(bytes)) => {
                    if stdin_tx.is_some() && !killed {
                        pending = Some(bytes);
                    }
                }
                Some(ExecInput::CloseStdin) => stdin_tx = None,
                // Pipes have no window size.
                Some(ExecInput::Resize(_)) => {}
                Some(message @ (ExecInput::Signal { .. } | ExecInput::Kill)) => {
                    send_signal(&pump.socket, &message, SignalTarget::Group);
                }
                None => input_open = false,
            },
            // Nobody listens any more: detach now, not at the next output (which may never
            // come), so that stdin still queued for a process that does not read it is freed.
            // Signals sent before are delivered first (a kill on the way out, say).
            () = pump.events.closed() => {
                if pump.kill.is_fired() && !killed {
                    send_signal(&pump.socket, &ExecInput::Kill, SignalTarget::Group);
                }
                deliver_signals(&pump.socket, &mut pump.input, SignalTarget::Group);
                break None;
            }
        }
    };
    drop(stdin_tx);
    // A kill fired while the loop was busy elsewhere (a send to a reader that then left).
    if status.is_none() && pump.kill.is_fired() && !killed {
        send_signal(&pump.socket, &ExecInput::Kill, SignalTarget::Group);
    }
    if let Some(status) = status {
        // Everything the process wrote before it exited is in the pipes already.
        if stdout_open {
            drain(&pump.stdout, &pump.events, ExecEvent::Stdout).await;
        }
        if stderr_open {
            drain(&pump.stderr, &pump.events, ExecEvent::Stderr).await;
        }
        let _ = pump.events.send(ExecEvent::Exited(status)).await;
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
}

/// Delivers the signals (and kills) already queued for the command (what else is queued no
/// longer matters: nobody listens).
fn deliver_signals(
    socket: &AsyncFd<OwnedFd>,
    input: &mut mpsc::Receiver<ExecInput>,
    kill_target: SignalTarget,
) {
    while let Ok(message) = input.try_recv() {
        send_signal(socket, &message, kill_target);
    }
}

/// Passes a signal, or a kill (SIGKILL to `kill_target`: the command's process group, or a
/// terminal's whole session), on to init; anything else is ignored.
fn send_signal(socket: &AsyncFd<OwnedFd>, message: &ExecInput, kill_target: SignalTarget) {
    let request = match message {
        ExecInput::Signal { signal, target } => Request::Signal {
            signal: native_signal(*signal),
            target: (*target).into(),
        },
        ExecInput::Kill => Request::Signal {
            signal: libc::SIGKILL,
            target: kill_target.into(),
        },
        _ => return,
    };
    let _ = wire::send(socket.get_ref().as_fd(), &request, &[]);
}

/// The host's number for a signal (the portable numbering is Linux's: see the test).
fn native_signal(signal: Signal) -> i32 {
    signal.number()
}

/// The buffered output as an event (the buffer keeps room for the next read).
fn take_chunk(buffer: &mut BytesMut, wrap: fn(Bytes) -> ExecEvent) -> ExecEvent {
    let chunk = buffer.split().freeze();
    if buffer.capacity() < CHUNK / 4 {
        buffer.reserve(CHUNK);
    }
    wrap(chunk)
}

/// What delivers a command's kill: its switch, whether it was delivered, where to.
struct Killer<'a> {
    kill: &'a KillSwitch,
    killed: &'a mut bool,
    socket: &'a AsyncFd<OwnedFd>,
    target: SignalTarget,
}

/// Sends an event; false when nobody listens any more. A kill fired while the reader is slow
/// to take it (a timeout) is delivered at once, not after the send.
async fn send_or_kill(
    events: &mpsc::Sender<ExecEvent>,
    event: ExecEvent,
    killer: Killer<'_>,
) -> bool {
    let send = events.send(event);
    tokio::pin!(send);
    loop {
        tokio::select! {
            sent = &mut send => return sent.is_ok(),
            () = killer.kill.fired(), if !*killer.killed => {
                *killer.killed = true;
                send_signal(killer.socket, &ExecInput::Kill, killer.target);
            }
        }
    }
}

async fn drain(
    pipe: &pipe::Receiver,
    events: &mpsc::Sender<ExecEvent>,
    wrap: fn(Bytes) -> ExecEvent,
) {
    // Read the descriptor directly: tokio's readiness cache may not have seen the last write yet.
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match nix::unistd::read(pipe.as_fd(), &mut buffer) {
            Ok(0) => return,
            Ok(n) => {
                if events
                    .send(wrap(Bytes::copy_from_slice(&buffer[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

async fn feed_stdin(mut sender: pipe::Sender, mut chunks: mpsc::Receiver<Bytes>) {
    while let Some(chunk) = chunks.recv().await {
        if sender.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

/// Starts a process on a new terminal; init hands over the terminal's master side.
async fn spawn_terminal(path: &Path, request: SpawnRequest) -> Result<ExecSession, BackendError> {
    let socket = connect_control(path)?;
    wire::send(socket.get_ref().as_fd(), &Request::Spawn(request), &[]).map_err(|e| match e {
        Errno::EMSGSIZE => BackendError::ExecFailed("command and environment are too large".into()),
        Errno::EPIPE | Errno::ECONNRESET => BackendError::gone(),
        e => BackendError::io("cannot send to the sandbox's init", e.into()),
    })?;
    let mut buffer = vec![0u8; 64 * 1024];
    let (pid, master) = match next_reply_with_fds(&socket, &mut buffer).await {
        Some((Reply::Started { pid }, mut fds)) if fds.len() == 1 => (pid, fds.remove(0)),
        Some((Reply::Started { .. }, _)) => {
            return Err(BackendError::other("init sent no terminal"))
        }
        Some((Reply::Failed { message }, _)) => return Err(BackendError::ExecFailed(message)),
        _ => return Err(BackendError::gone()),
    };
    set_nonblocking(&master)?;
    // SAFETY: the OwnedFd stays open, and names the same terminal, for the AsyncFd's lifetime.
    let master = std::sync::Arc::new(
        unsafe { AsyncFd::register(master) }
            .map_err(|e| BackendError::io("cannot register the terminal", e.into()))?,
    );
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (input_tx, input_rx) = mpsc::channel(EVENT_QUEUE);
    let kill = KillSwitch::new();
    tokio::spawn(pump_terminal(
        socket,
        buffer,
        master,
        events_tx,
        input_rx,
        kill.clone(),
    ));
    Ok(ExecSession {
        pid: pid as u32,
        events: events_rx,
        input: input_tx,
        kill,
    })
}

type Terminal = std::sync::Arc<AsyncFd<OwnedFd>>;

async fn pump_terminal(
    socket: AsyncFd<OwnedFd>,
    mut buffer: Vec<u8>,
    master: Terminal,
    events: mpsc::Sender<ExecEvent>,
    mut input: mpsc::Receiver<ExecInput>,
    kill: KillSwitch,
) {
    // Keystrokes are written by their own task, so a command that does not read its terminal
    // cannot stall its output (nor the other way round).
    let (keys_tx, keys_rx) = mpsc::channel::<Bytes>(EVENT_QUEUE);
    let writer = tokio::spawn(type_keys(master.clone(), keys_rx));
    let keys_tx = Some(keys_tx);
    let mut pending: Option<Bytes> = None;
    let mut killed = false;
    let mut output = vec![0u8; CHUNK];
    let mut open = true;
    let mut input_open = true;
    let status = loop {
        tokio::select! {
            read = read_terminal(&master, &mut output), if open => match read {
                Some(n) => {
                    let chunk = ExecEvent::Stdout(Bytes::copy_from_slice(&output[..n]));
                    let killer = Killer { kill: &kill, killed: &mut killed, socket: &socket, target: SignalTarget::Session };
                    if !send_or_kill(&events, chunk, killer).await {
                        break None;
                    }
                }
                None => open = false,
            },
            reply = next_reply(&socket, &mut buffer) => match reply {
                Some(Reply::Exited { code, signal }) => break Some(match (code, signal) {
                    (_, Some(signal)) => ExitStatus::Signal(signal),
                    (code, None) => ExitStatus::Code(code.unwrap_or(0)),
                }),
                Some(_) => {}
                None => break None,
            },
            permit = room(&keys_tx), if pending.is_some() => {
                if let Some(permit) = permit {
                    permit.send(pending.take().unwrap_or_default());
                } else {
                    pending = None;
                }
            },
            () = kill.fired(), if !killed => {
                killed = true;
                pending = None;
                send_signal(&socket, &ExecInput::Kill, SignalTarget::Session);
            },
            message = input.recv(), if input_open && pending.is_none() => match message {
                Some(ExecInput::Stdin(bytes)) => {
                    if !killed {
                        pending = Some(bytes);
                    }
                }
                Some(ExecInput::CloseStdin) => {}
                Some(ExecInput::Resize(size)) => resize(&master, size),
                Some(message @ (ExecInput::Signal { .. } | ExecInput::Kill)) => {
                    send_signal(&socket, &message, SignalTarget::Session);
                }
                None => input_open = false,
            },
            () = events.closed() => {
                if kill.is_fired() && !killed {
                    send_signal(&socket, &ExecInput::Kill, SignalTarget::Session);
                }
                deliver_signals(&socket, &mut input, SignalTarget::Session);
                break None;
            }
        }
    };
    writer.abort();
    if status.is_none() && kill.is_fired() && !killed {
        send_signal(&socket, &ExecInput::Kill, SignalTarget::Session);
    }
    if let Some(status) = status {
        // What the command wrote before it exited is in the terminal's buffer already.
        if open {
            loop {
                match nix::unistd::read(master.get_ref().as_fd(), &mut output) {
                    Ok(0) => break,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&output[..n]);
                        if events.send(ExecEvent::Stdout(chunk)).await.is_err() {
                            break;
                        }
                    }
                    Err(Errno::EINTR) => {}
                    // EAGAIN: drained; EIO: every slave side is closed.
                    Err(_) => break,
                }
            }
        }
        let _ = events.send(ExecEvent::Exited(status)).await;
    }
}

/// Reads some output; `None` once the terminal has no writer left (EIO) or fails.
///
/// A terminal hands out at most a few KiB per read; what is already there is gathered into
/// one chunk (up to the buffer's size), so a fast producer costs one message per 64 KiB, not
/// one per 4 KiB.
async fn read_terminal(master: &Terminal, buffer: &mut [u8]) -> Option<usize> {
    loop {
        let mut guard = master.readable().await.ok()?;
        let read = guard.try_io(|fd| {
            let mut filled = 0;
            while filled < buffer.len() {
                match nix::unistd::read(fd.get_ref().as_fd(), &mut buffer[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(Errno::EAGAIN | Errno::EIO) if filled > 0 => break,
                    Err(e) => return Err(std::io::Error::from(e)),
                }
            }
            Ok(filled)
        });
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => return Some(n),
            Err(_would_block) => continue,
        }
    }
}

async fn type_keys(master: Terminal, mut keys: mpsc::Receiver<Bytes>) {
    while let Some(chunk) = keys.recv().await {
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let Ok(mut guard) = master.writable().await else {
                return;
            };
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), rest).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(_)) => return,
                Err(_would_block) => continue,
            }
        }
    }
}

fn resize(master: &Terminal, size: sbx_backend::TtySize) {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the winsize we pass, which outlives the call. The kernel sends
    // SIGWINCH to the terminal's foreground process group.
    unsafe { libc::ioctl(master.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_signal_numbers_are_this_hosts() {
        let expected = [
            (Signal::Hangup, libc::SIGHUP),
            (Signal::Interrupt, libc::SIGINT),
            (Signal::Quit, libc::SIGQUIT),
            (Signal::IllegalInstruction, libc::SIGILL),
            (Signal::Trap, libc::SIGTRAP),
            (Signal::Abort, libc::SIGABRT),
            (Signal::Bus, libc::SIGBUS),
            (Signal::FloatingPoint, libc::SIGFPE),
            (Signal::Kill, libc::SIGKILL),
            (Signal::User1, libc::SIGUSR1),
            (Signal::Segfault, libc::SIGSEGV),
            (Signal::User2, libc::SIGUSR2),
            (Signal::Pipe, libc::SIGPIPE),
            (Signal::Alarm, libc::SIGALRM),
            (Signal::Terminate, libc::SIGTERM),
            (Signal::StackFault, libc::SIGSTKFLT),
            (Signal::Child, libc::SIGCHLD),
            (Signal::Continue, libc::SIGCONT),
            (Signal::Stop, libc::SIGSTOP),
            (Signal::TerminalStop, libc::SIGTSTP),
            (Signal::TerminalInput, libc::SIGTTIN),
            (Signal::TerminalOutput, libc::SIGTTOU),
            (Signal::Urgent, libc::SIGURG),
            (Signal::CpuLimit, libc::SIGXCPU),
            (Signal::FileSizeLimit, libc::SIGXFSZ),
            (Signal::VirtualAlarm, libc::SIGVTALRM),
            (Signal::Profiling, libc::SIGPROF),
            (Signal::WindowChange, libc::SIGWINCH),
            (Signal::Io, libc::SIGIO),
            (Signal::Power, libc::SIGPWR),
            (Signal::BadSystemCall, libc::SIGSYS),
        ];
        assert_eq!(expected.len(), Signal::ALL.len());
        for (signal, number) in expected {
            assert_eq!(native_signal(signal), number, "{signal:?}");
        }
    }
}
