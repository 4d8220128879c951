//! Commands through the runtime's `exec`: one `exec` client process per command, run from a
//! `process.json` (owner-only, in the bundle, removed once the command runs: no environment
//! value on any command line), moved into the sandbox's own cgroup before it runs (its
//! memory and pids count against the sandbox's limits, however many a tenant leaves running);
//! its stdio piped to the session, or a terminal made on the host. Signals and kills go by the
//! command's pid inside the sandbox (the runtime writes it to a file as the command starts),
//! and for a kill or a group signal to its whole process group too, through the static
//! busybox bound in the sandbox.

use std::ffi::CString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sbx_backend::{
    BackendError, ExecEvent, ExecInput, ExecSession, ExitStatus, KillSwitch, Signal, SignalTarget,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::{Flavor, Runtime};

/// How long the runtime may take to start a command.
const START: Duration = Duration::from_secs(20);
/// After the command's exit, how long output still in its pipes is waited for (a background
/// child that keeps them open does not keep the command alive).
const DRAIN: Duration = Duration::from_millis(200);

pub struct Command {
    pub container: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub stdin: bool,
    /// Where the runtime writes the command's pid inside the sandbox; `process.json` goes
    /// beside it.
    pub pid_file: PathBuf,
    /// `cgroup.procs` files of the sandbox's cgroup, which the exec client joins.
    pub cgroup_procs: Vec<PathBuf>,
    /// The static busybox inside the sandbox, when bound: group kills go through it.
    pub busybox: Option<String>,
}

/// Writes `process.json` (0600) for `command`.
fn write_process(command: &Command, terminal: Option<(u16, u16)>) -> Result<PathBuf, BackendError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut env: Vec<String> = command
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if terminal.is_some() && !command.env.iter().any(|(k, _)| k == "TERM") {
        env.push("TERM=xterm-256color".into());
    }
    let mut process = serde_json::json!({
        "terminal": terminal.is_some(),
        "user": {"uid": command.uid, "gid": command.gid},
        "args": command.argv,
        "env": env,
        "cwd": command.cwd,
        "noNewPrivileges": true,
    });
    if let Some((rows, cols)) = terminal {
        process["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
    }
    let path = command.pid_file.with_extension("json");
    let _ = std::fs::remove_file(&command.pid_file);
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(&serde_json::to_vec(&process).unwrap_or_default())?;
            Ok(f)
        })
        .map_err(|e| BackendError::io("cannot write the command's process.json", e))?;
    let _ = file.flush();
    Ok(path)
}

/// The client command for `command`: `exec --process`, joining the sandbox's cgroup first.
/// gVisor writes the command's pid inside the sandbox; `crun` and `runc` its host pid.
fn client(
    runtime: &Runtime,
    command: &Command,
    process: &std::path::Path,
    console_socket: Option<&std::path::Path>,
) -> tokio::process::Command {
    let mut client = runtime.command();
    let pid_flag = match runtime.flavor {
        Flavor::Gvisor => "--internal-pid-file",
        Flavor::Native => "--pid-file",
    };
    client
        .arg("exec")
        .arg(format!("--process={}", process.display()))
        .arg(format!("{pid_flag}={}", command.pid_file.display()))
        .args(console_socket.into_iter().flat_map(|socket| {
            [
                "--tty".to_owned(),
                format!("--console-socket={}", socket.display()),
            ]
        }))
        .arg(&command.container)
        // A dropped session detaches: the command keeps running.
        .kill_on_drop(false);
    let procs: Vec<CString> = command
        .cgroup_procs
        .iter()
        .filter_map(|p| CString::new(p.as_os_str().as_encoded_bytes()).ok())
        .collect();
    // SAFETY: between fork and exec only async-signal-safe calls: getpid, open, write, close
    // on buffers made before the fork.
    unsafe {
        client.pre_exec(move || {
            let mut digits = [0u8; 12];
            let mut at = digits.len();
            let mut pid = libc::getpid() as u32;
            loop {
                at -= 1;
                digits[at] = b'0' + (pid % 10) as u8;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            for path in &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
    client
}

/// Starts the client; its `process.json` goes when it cannot start.
fn spawn(
    runtime: &Runtime,
    client: &mut tokio::process::Command,
    process: &std::path::Path,
) -> Result<tokio::process::Child, BackendError> {
    runtime.spawn(client).inspect_err(|_| {
        let _ = std::fs::remove_file(process);
    })
}

/// The pid the runtime wrote, once it has.
fn read_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

/// Waits for the pid file; `Err` with what the client said when it ends first.
async fn wait_pid(
    child: &mut tokio::process::Child,
    command: &Command,
    process: &std::path::Path,
    operation: &'static str,
) -> Result<u32, BackendError> {
    let started = Instant::now();
    let outcome = loop {
        if let Some(pid) = read_pid(&command.pid_file) {
            break Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // A command quick enough to end before this loop looked again ran all the same.
            if let Some(pid) = read_pid(&command.pid_file) {
                break Ok(pid);
            }
            let mut said = String::new();
            if let Some(stderr) = child.stderr.take() {
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    stderr.take(64 << 10).read_to_string(&mut said),
                )
                .await;
            }
            // The runtime's last line says why, after its log prefix.
            let message = said
                .lines()
                .last()
                .map(|l| l.rsplit("ERROR: ").next().unwrap_or(l).trim().to_owned())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("the command could not start ({status})"));
            break Err(BackendError::ExecFailed(message));
        }
        if started.elapsed() > START {
            let _ = child.start_kill();
            break Err(BackendError::Timeout {
                operation,
                after: START,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let _ = std::fs::remove_file(&command.pid_file);
    let _ = std::fs::remove_file(process);
    outcome
}

/// What a session's input task needs to signal the command.
#[derive(Clone)]
struct Signaller {
    runtime: Runtime,
    container: String,
    /// The command's pid: inside the sandbox (gVisor), or on the host (`crun`, `runc`).
    pid: u32,
    busybox: Option<String>,
    sent: Arc<Mutex<Vec<i32>>>,
    /// On the host's kernel: the command's process group, the exec client (in that group
    /// when the command has no terminal), and the sandbox's `cgroup.procs` files — only a
    /// process listed there is ever signalled, so a pid the host reused is never hit.
    host: Option<HostProcess>,
}

#[derive(Clone)]
struct HostProcess {
    group: i32,
    client: i32,
    cgroup_procs: Vec<PathBuf>,
}

impl HostProcess {
    fn new(pid: u32, client: Option<u32>, cgroup_procs: &[PathBuf]) -> HostProcess {
        let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
            .map_or(0, |g| g.as_raw());
        HostProcess {
            group,
            client: client.map_or(0, |c| c as i32),
            cgroup_procs: cgroup_procs.to_vec(),
        }
    }

    /// The sandbox's processes now.
    fn members(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .cgroup_procs
            .iter()
            .flat_map(|procs| {
                std::fs::read_to_string(procs)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn deliver(&self, pid: u32, signal: Signal, target: SignalTarget) {
        use nix::unistd::Pid;
        let Ok(number) = nix::sys::signal::Signal::try_from(signal.number()) else {
            return;
        };
        let members = self.members();
        if target != SignalTarget::Process && self.group > 1 {
            for &member in &members {
                let group = nix::unistd::getpgid(Some(Pid::from_raw(member)));
                if member != self.client && group.is_ok_and(|g| g.as_raw() == self.group) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(member), number);
                }
            }
        }
        if members.contains(&(pid as i32)) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), number);
        }
    }
}

/// A host pid's pid in the innermost pid namespace it is in (`NSpid`'s last field).
fn pid_inside(host_pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{host_pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|p| p.parse().ok())
        })
        .unwrap_or(host_pid)
}

impl Signaller {
    /// The command's pid as the sandbox sees it.
    fn pid_inside(&self) -> u32 {
        match self.host {
            Some(_) => pid_inside(self.pid),
            None => self.pid,
        }
    }

    async fn deliver(&self, signal: Signal, target: SignalTarget) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(signal.number());
        }
        if let Some(host) = &self.host {
            host.deliver(self.pid, signal, target);
            return;
        }
        // The group first (what the command started and kept in it), then the command.
        if let (Some(busybox), true) = (&self.busybox, target != SignalTarget::Process) {
            let group = format!("-{}", self.pid);
            let _ = self
                .runtime
                .call(&[
                    "exec",
                    "--user=0:0",
                    &self.container,
                    busybox,
                    "kill",
                    "-s",
                    signal.name(),
                    "--",
                    &group,
                ])
                .await;
        }
        let pid = format!("--pid={}", self.pid);
        let _ = self
            .runtime
            .call(&["kill", &pid, &self.container, signal.name()])
            .await;
    }

    fn exit(&self, status: std::process::ExitStatus) -> ExitStatus {
        let sent = self.sent.lock().map(|s| s.clone()).unwrap_or_default();
        exit_of(status, &sent)
    }
}

pub async fn start(runtime: &Runtime, command: Command) -> Result<ExecSession, BackendError> {
    let process = write_process(&command, None)?;
    let mut client = client(runtime, &command, &process, None);
    client
        .stdin(if command.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if runtime.flavor == Flavor::Native {
        // The command's group (it stays in its client's): what a group signal reaches.
        client.process_group(0);
    }
    let mut child = spawn(runtime, &mut client, &process)?;
    let pid = wait_pid(&mut child, &command, &process, "exec").await?;
    let (events_tx, events) = tokio::sync::mpsc::channel(64);
    let (input, inputs) = tokio::sync::mpsc::channel::<ExecInput>(16);
    let host = (runtime.flavor == Flavor::Native)
        .then(|| HostProcess::new(pid, child.id(), &command.cgroup_procs));
    let signaller = Signaller {
        runtime: runtime.clone(),
        container: command.container.clone(),
        pid,
        busybox: command.busybox.clone(),
        sent: Arc::default(),
        host,
    };
    let pid = signaller.pid_inside();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Stdin has a writer of its own, fed from a backlog: a command that does not read its
    // stdin cannot hold up a signal or a kill behind it.
    let (stdin_tx, mut stdin_rx) = tokio::sync::mpsc::channel::<Option<Bytes>>(4);
    if let Some(mut pipe) = child.stdin.take() {
        tokio::spawn(async move {
            while let Some(Some(bytes)) = stdin_rx.recv().await {
                if pipe.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
    }
    let kill = KillSwitch::new();
    // Fired once the command's client has exited: kills stop then (its pid is no longer its).
    let exited = KillSwitch::new();
    tokio::spawn(serve_input(
        inputs,
        kill.clone(),
        exited.clone(),
        signaller.clone(),
        stdin_tx,
        None,
    ));
    tokio::spawn(async move {
        let out_waiting = Arc::new(PipeWait::of(
            stdout.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        ));
        let err_waiting = Arc::new(PipeWait::of(
            stderr.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        ));
        let mut out = tokio::spawn(pump(
            stdout,
            events_tx.clone(),
            ExecEvent::Stdout,
            out_waiting.clone(),
        ));
        let mut err = tokio::spawn(pump(
            stderr,
            events_tx.clone(),
            ExecEvent::Stderr,
            err_waiting.clone(),
        ));
        let status = child.wait().await;
        exited.kill();
        // What was in the pipes when the command ended is read, however slowly its reader
        // takes it; then the pipes have a moment to end. One a background child holds open
        // is left after that, whatever it still writes.
        let target = |pump: &tokio::task::JoinHandle<()>, wait: &PipeWait| {
            if pump.is_finished() {
                wait.read()
            } else {
                wait.target_at_exit()
            }
        };
        let targets = [target(&out, &out_waiting), target(&err, &err_waiting)];
        let (mut out_done, mut err_done) = (false, false);
        let mut caught_up_at: Option<Instant> = None;
        while !(out_done && err_done) {
            tokio::select! {
                _ = &mut out, if !out_done => out_done = true,
                _ = &mut err, if !err_done => err_done = true,
                () = tokio::time::sleep(DRAIN / 4) => {
                    let caught_up = (out_done || out_waiting.read() >= targets[0])
                        && (err_done || err_waiting.read() >= targets[1]);
                    if !caught_up {
                        continue;
                    }
                    let since = *caught_up_at.get_or_insert_with(Instant::now);
                    if since.elapsed() >= DRAIN {
                        out.abort();
                        err.abort();
                        break;
                    }
                }
            }
        }
        if let Ok(status) = status {
            let _ = events_tx
                .send(ExecEvent::Exited(signaller.exit(status)))
                .await;
        }
    });
    Ok(ExecSession {
        pid,
        events,
        input,
        kill,
    })
}

/// A command on a new pseudo-terminal: a terminal pair made on the host, its slave side the
/// runtime's controlling terminal and stdio, the command run with `terminal: true` — gVisor
/// gives the command that terminal, and the runtime forwards the `SIGWINCH` of a resize
/// (`TIOCSWINSZ` on the master) to it.
pub async fn start_terminal(
    runtime: &Runtime,
    command: Command,
    rows: u16,
    cols: u16,
) -> Result<ExecSession, BackendError> {
    let process = write_process(&command, Some((rows, cols)))?;
    let (mut child, master, pid) = if runtime.console_socket {
        console_socket_terminal(runtime, &command, &process).await?
    } else {
        host_terminal(runtime, &command, &process, rows, cols).await?
    };
    let host = (runtime.flavor == Flavor::Native)
        .then(|| HostProcess::new(pid, child.id(), &command.cgroup_procs));
    let reader = master
        .try_clone()
        .map_err(|e| BackendError::io("cannot use the terminal", e))?;
    let (events_tx, events) = tokio::sync::mpsc::channel(64);
    let (input, inputs) = tokio::sync::mpsc::channel::<ExecInput>(16);
    let signaller = Signaller {
        runtime: runtime.clone(),
        container: command.container.clone(),
        pid,
        busybox: command.busybox.clone(),
        sent: Arc::default(),
        host,
    };
    let pid = signaller.pid_inside();
    // Output: a thread reads the master until no one holds the slave side; a detached
    // session's reader stops (the terminal then blocks the command's writes).
    let output = {
        let events = events_tx.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut reader = reader;
            let mut buffer = vec![0u8; 64 << 10];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let chunk = ExecEvent::Stdout(Bytes::copy_from_slice(&buffer[..n]));
                        if events.blocking_send(chunk).is_err() {
                            return;
                        }
                    }
                }
            }
        })
    };
    // Input: typed bytes through a writer thread of their own, fed from a backlog (see
    // `serve_input`).
    let master = Arc::new(master);
    let (keys_tx, mut keys_rx) = tokio::sync::mpsc::channel::<Option<Bytes>>(4);
    {
        let master = master.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            while let Some(Some(bytes)) = keys_rx.blocking_recv() {
                if (&*master).write_all(&bytes).is_err() {
                    return;
                }
            }
        });
    }
    let kill = KillSwitch::new();
    let exited = KillSwitch::new();
    tokio::spawn(serve_input(
        inputs,
        kill.clone(),
        exited.clone(),
        signaller.clone(),
        keys_tx,
        Some(master.clone()),
    ));
    tokio::spawn(async move {
        let status = child.wait().await;
        exited.kill();
        drop(master);
        // The client is gone, so is the slave side: the reader ends after the last output.
        let _ =
            tokio::time::timeout(DRAIN, tokio::task::spawn_blocking(move || output.join())).await;
        if let Ok(status) = status {
            let _ = events_tx
                .send(ExecEvent::Exited(signaller.exit(status)))
                .await;
        }
    });
    Ok(ExecSession {
        pid,
        events,
        input,
        kill,
    })
}

/// Most chunks of input held while the command does not read (then input waits; signals and
/// kills are still taken until then).
const BACKLOG: usize = 64;

/// A session's input: stdin to its writer through a backlog, signals and kills at once (a
/// kill drops what the command never read), resizes to the terminal when there is one.
async fn serve_input(
    mut inputs: tokio::sync::mpsc::Receiver<ExecInput>,
    kill: KillSwitch,
    exited: KillSwitch,
    signaller: Signaller,
    keys: tokio::sync::mpsc::Sender<Option<Bytes>>,
    terminal: Option<Arc<std::fs::File>>,
) {
    let mut backlog: std::collections::VecDeque<Option<Bytes>> = Default::default();
    let kill_target = if terminal.is_some() {
        SignalTarget::Session
    } else {
        SignalTarget::Group
    };
    let mut killed = false;
    loop {
        tokio::select! {
            // The command ended: nothing more is for it (its pid may be another's soon).
            () = exited.fired() => return,
            // Out of band: a full backlog (a command that does not read) holds up no kill.
            () = kill.fired(), if !killed => {
                killed = true;
                backlog.clear();
                signaller.deliver(Signal::Kill, kill_target).await;
            },
            permit = keys.reserve(), if !backlog.is_empty() => match permit {
                Ok(permit) => permit.send(backlog.pop_front().flatten()),
                Err(_) => backlog.clear(),
            },
            message = inputs.recv(), if backlog.len() < BACKLOG => {
                let Some(message) = message else {
                    // The session went: what it sent still goes in, in order, and a kill is
                    // still taken, until the command ends.
                    for chunk in backlog.drain(..) {
                        tokio::select! {
                            sent = keys.send(chunk) => if sent.is_err() { break },
                            () = kill.fired(), if !killed => {
                                signaller.deliver(Signal::Kill, kill_target).await;
                                return;
                            }
                            () = exited.fired() => return,
                        }
                    }
                    if !killed {
                        tokio::select! {
                            () = kill.fired() => signaller.deliver(Signal::Kill, kill_target).await,
                            () = exited.fired() => {}
                        }
                    }
                    return;
                };
                match message {
                    ExecInput::Stdin(bytes) => backlog.push_back(Some(bytes)),
                    ExecInput::CloseStdin => backlog.push_back(None),
                    ExecInput::Signal { signal, target } => {
                        signaller.deliver(signal, target).await;
                    }
                    ExecInput::Kill => {
                        backlog.clear();
                        let target = if terminal.is_some() {
                            SignalTarget::Session
                        } else {
                            SignalTarget::Group
                        };
                        signaller.deliver(Signal::Kill, target).await;
                    }
                    ExecInput::Resize(size) => {
                        if let Some(master) = &terminal {
                            let winsize = libc::winsize {
                                ws_row: size.rows,
                                ws_col: size.cols,
                                ws_xpixel: 0,
                                ws_ypixel: 0,
                            };
                            // SAFETY: TIOCSWINSZ on a terminal descriptor held here, with a
                            // winsize that outlives the call.
                            unsafe {
                                libc::ioctl(
                                    std::os::fd::AsRawFd::as_raw_fd(&**master),
                                    libc::TIOCSWINSZ,
                                    &winsize,
                                )
                            };
                        }
                    }
                }
            },
        }
    }
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

/// Output to the session; a detached session's pipe is left unread (the command then gets
/// `EPIPE` or blocks, as natively), never drained for nothing.
/// A pump's pipe and what it has read of it.
struct PipeWait {
    /// The pipe, only to ask how much it holds (`FIONREAD`) while its pump holds it open.
    fd: Option<i32>,
    /// Bytes read from the pipe so far.
    read: std::sync::atomic::AtomicU64,
}

impl PipeWait {
    fn of(fd: Option<i32>) -> PipeWait {
        PipeWait {
            fd,
            read: Default::default(),
        }
    }

    fn read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What its pump will have read once it has read what the pipe holds now. Asked only
    /// while the pump runs (and so holds the pipe open).
    fn target_at_exit(&self) -> u64 {
        let mut pending: libc::c_int = 0;
        if let Some(fd) = self.fd {
            // SAFETY: FIONREAD writes one int; the pump still holds the pipe open.
            if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut pending) } < 0 {
                pending = 0;
            }
        }
        self.read() + u64::try_from(pending).unwrap_or(0)
    }
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(
    source: Option<R>,
    events: tokio::sync::mpsc::Sender<ExecEvent>,
    wrap: fn(Bytes) -> ExecEvent,
    wait: Arc<PipeWait>,
) {
    let Some(mut source) = source else {
        return;
    };
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = source.read(&mut buffer).await;
        if let Ok(n) = read {
            wait.read
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if events
                    .send(wrap(Bytes::copy_from_slice(&buffer[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// gVisor's and `runc`'s terminal: a pair made on the host, its slave side the client's controlling
/// terminal and stdio; the client, the terminal's master, the command's pid.
async fn host_terminal(
    runtime: &Runtime,
    command: &Command,
    process: &std::path::Path,
    rows: u16,
    cols: u16,
) -> Result<(tokio::process::Child, std::fs::File, u32), BackendError> {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pair = nix::pty::openpty(Some(&size), None)
        .map_err(|e| BackendError::io("cannot open a terminal", e.into()))?;
    // Neither end may reach another process the daemon starts (the client gets the slave as
    // its stdio, which dup2 leaves open).
    for fd in [&pair.master, &pair.slave] {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    let slave = std::fs::File::from(pair.slave);
    let stdio = |f: &std::fs::File| -> Result<Stdio, BackendError> {
        f.try_clone()
            .map(Stdio::from)
            .map_err(|e| BackendError::io("cannot open a terminal", e))
    };
    let mut client = client(runtime, command, process, None);
    client
        .stdin(stdio(&slave)?)
        .stdout(stdio(&slave)?)
        .stderr(stdio(&slave)?);
    // SAFETY: between fork and exec, only async-signal-safe calls (setsid, ioctl).
    unsafe {
        client.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = spawn(runtime, &mut client, process);
    drop(slave);
    let mut child = spawned?;
    let pid = wait_pid(&mut child, command, process, "open_terminal").await?;
    Ok((child, std::fs::File::from(pair.master), pid))
}

/// `crun`'s terminal: made by the runtime inside the sandbox, its master sent
/// back over a console socket (in the command's exec directory, removed once used); the
/// client, the master, the command's pid. A resize (`TIOCSWINSZ` on that master) reaches
/// the command as `SIGWINCH` from the sandbox's own kernel side.
async fn console_socket_terminal(
    runtime: &Runtime,
    command: &Command,
    process: &std::path::Path,
) -> Result<(tokio::process::Child, std::fs::File, u32), BackendError> {
    let socket = command.pid_file.with_extension("sock");
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| BackendError::io("cannot make the terminal's console socket", e))?;
    let mut client = client(runtime, command, process, Some(&socket));
    client
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let spawned = spawn(runtime, &mut client, process);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return Err(e);
        }
    };
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(START, listener.accept()) => Some(accepted),
        _ = child.wait() => None,
    };
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    let master = match accepted {
        Some(Ok(Ok((stream, _)))) => receive_master(stream).await,
        Some(Err(_)) => {
            let _ = child.start_kill();
            Err(BackendError::Timeout {
                operation: "open_terminal",
                after: START,
            })
        }
        Some(Ok(Err(e))) => Err(BackendError::io("the console socket failed", e)),
        // The client ended first: what it said is the error (below).
        None => Err(BackendError::ExecFailed(String::new())),
    };
    let pid = wait_pid(&mut child, command, process, "open_terminal").await;
    // The client's own words first, when it ended before sending a terminal.
    let pid = pid?;
    let master = master?;
    Ok((child, master, pid))
}

/// The terminal master the runtime sends (one descriptor in `SCM_RIGHTS`), close-on-exec.
async fn receive_master(stream: tokio::net::UnixStream) -> Result<std::fs::File, BackendError> {
    let stream = stream
        .into_std()
        .map_err(|e| BackendError::io("the console socket failed", e))?;
    let received = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(START))?;
        let mut buffer = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let message = nix::sys::socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in message.cmsgs()? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        let mut fds = fds.into_iter();
        let master = fds.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no terminal was sent")
        })?;
        for extra in fds {
            // SAFETY: a descriptor just received, owned by no one else.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(extra) });
        }
        // SAFETY: as above.
        Ok(unsafe { std::fs::File::from_raw_fd(master) })
    })
    .await
    .map_err(|e| BackendError::other_from("the console socket failed", e))?;
    received.map_err(|e| BackendError::io("cannot receive the sandbox's terminal", e))
}
