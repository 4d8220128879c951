//! The sandbox's pid 1: a small, single-threaded event loop.
//!
//! Owns: accepting control connections, starting processes for them (`spawn`), delivering
//! their signals, reaping every zombie of the pid namespace, reporting exits.
//! Must never: start a thread (it forks), block on a peer, or trust what a connection sends.
//!
//! Dropping a connection does not touch its process: a background process started by one exec
//! is still there for the next. The process (not init) is what a timeout kills, as a group.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{accept4, SockFlag};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use crate::wire::{self, FileOp, FileRequest, Received, Reply, Request, SpawnRequest};

struct Connection {
    socket: OwnedFd,
    /// The process this connection started, once it has.
    child: Option<Pid>,
}

/// Runs forever as pid 1. `listener` is the bound, listening control socket.
pub fn run(listener: OwnedFd, signals: SignalFd) -> ! {
    let mut buffer = vec![0u8; wire::MAX_PACKET];
    let mut connections: HashMap<u64, Connection> = HashMap::new();
    // Child pid → the connection to report its exit to (None: nobody is listening).
    let mut children: HashMap<Pid, Option<u64>> = HashMap::new();
    let mut next_token = 0u64;
    loop {
        let tokens: Vec<u64> = connections.keys().copied().collect();
        let (listener_ready, signals_ready, ready_tokens) = {
            let mut fds = Vec::with_capacity(tokens.len() + 2);
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            for token in &tokens {
                fds.push(PollFd::new(
                    connections[token].socket.as_fd(),
                    PollFlags::POLLIN,
                ));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => continue,
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let ready_tokens: Vec<u64> = tokens
                .iter()
                .zip(&fds[2..])
                .filter(|(_, fd)| ready(fd))
                .map(|(t, _)| *t)
                .collect();
            (ready(&fds[0]), ready(&fds[1]), ready_tokens)
        };

        if signals_ready {
            while let Ok(Some(_)) = signals.read_signal() {}
            reap(&mut children, &connections);
        }
        if listener_ready {
            while let Ok(fd) = accept4(
                listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                next_token += 1;
                connections.insert(
                    next_token,
                    Connection {
                        socket,
                        child: None,
                    },
                );
            }
        }
        for token in ready_tokens {
            let keep = serve(token, &mut connections, &mut children, &mut buffer);
            if !keep {
                if let Some(gone) = connections.remove(&token) {
                    if let Some(pid) = gone.child {
                        if let Some(slot) = children.get_mut(&pid) {
                            *slot = None;
                        }
                    }
                }
            }
        }
    }
}

/// Handles one readable connection; false when it should be closed.
fn serve(
    token: u64,
    connections: &mut HashMap<u64, Connection>,
    children: &mut HashMap<Pid, Option<u64>>,
    buffer: &mut [u8],
) -> bool {
    let connection = connections
        .get_mut(&token)
        .expect("token came from the map");
    let received = match wire::receive::<Request>(connection.socket.as_fd(), buffer) {
        Ok(received) => received,
        Err(Errno::EAGAIN | Errno::EINTR) => return true,
        Err(_) => return false,
    };
    let (request, fds) = match received {
        Received::Message(request, fds) => (request, fds),
        Received::Closed => return false,
        Received::Invalid(message) => {
            let _ = wire::send(connection.socket.as_fd(), &Reply::Failed { message }, &[]);
            return false;
        }
    };
    match request {
        Request::Ping => {
            let reply = Reply::Pong {
                version: wire::PROTOCOL_VERSION,
            };
            wire::send(connection.socket.as_fd(), &reply, &[]).is_ok()
        }
        Request::Signal { signal, target } => {
            let (Some(pid), Ok(signal)) = (connection.child, Signal::try_from(signal)) else {
                return true;
            };
            // The child is ours and unreaped (we only forget it after waitpid), so its pid and
            // process group id cannot have been reused.
            if children.contains_key(&pid) {
                deliver(pid, signal, target);
            }
            true
        }
        Request::File(request) => {
            if connection.child.is_some() {
                return false;
            }
            let reply = match file_child(&request, fds) {
                Ok(pid) => {
                    connection.child = Some(pid);
                    children.insert(pid, Some(token));
                    Reply::Started { pid: pid.as_raw() }
                }
                Err(message) => Reply::Failed { message },
            };
            let failed = matches!(reply, Reply::Failed { .. });
            wire::send(connection.socket.as_fd(), &reply, &[]).is_ok() && !failed
        }
        Request::Spawn(request) => {
            if connection.child.is_some() {
                let reply = Reply::Failed {
                    message: "this connection already started a process".into(),
                };
                let _ = wire::send(connection.socket.as_fd(), &reply, &[]);
                return false;
            }
            let (reply, master) = match spawn(&request, fds) {
                Ok((pid, master)) => {
                    connection.child = Some(pid);
                    children.insert(pid, Some(token));
                    (Reply::Started { pid: pid.as_raw() }, master)
                }
                Err(message) => (Reply::Failed { message }, None),
            };
            let failed = matches!(reply, Reply::Failed { .. });
            let attached: Vec<RawFd> = master.iter().map(|m| m.as_raw_fd()).collect();
            // The daemon owns the terminal's master side from here; init's copy closes.
            wire::send(connection.socket.as_fd(), &reply, &attached).is_ok() && !failed
        }
    }
}

/// Sends `signal` to the processes `target` names, relative to the command `pid` (which leads
/// its own session and process group: it called setsid).
fn deliver(pid: Pid, signal: Signal, target: wire::SignalTarget) {
    let group = Pid::from_raw(-pid.as_raw());
    match target {
        wire::SignalTarget::Process => {
            let _ = kill(pid, signal);
        }
        wire::SignalTarget::Group => {
            let _ = kill(group, signal);
        }
        wire::SignalTarget::Foreground => {
            // tpgid (/proc/PID/stat field 8): the foreground group of its terminal, -1 if none.
            let foreground = stat_field(pid.as_raw(), 8).filter(|tpgid| *tpgid > 0);
            let target = foreground.map_or(group, |tpgid| Pid::from_raw(-tpgid));
            let _ = kill(target, signal);
        }
        wire::SignalTarget::Session => {
            let _ = kill(group, signal);
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return;
            };
            for entry in entries.flatten() {
                let Ok(other) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                // Field 6 is the session id.
                if other != 1 && stat_field(other, 6) == Some(pid.as_raw()) {
                    let _ = kill(Pid::from_raw(other), signal);
                }
            }
        }
    }
}

/// A numeric field of `/proc/PID/stat` (1-based, as proc(5) numbers them; fields 3 and up).
fn stat_field(pid: i32, field: usize) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(field - 3)?.parse().ok()
}

/// Reaps every exited process of the namespace and reports the ones a connection waits for.
fn reap(children: &mut HashMap<Pid, Option<u64>>, connections: &HashMap<u64, Connection>) {
    loop {
        let (pid, code, signal) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Some(code), None),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, None, Some(signal as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        if let Some(Some(token)) = children.remove(&pid) {
            if let Some(connection) = connections.get(&token) {
                let _ = wire::send(
                    connection.socket.as_fd(),
                    &Reply::Exited { code, signal },
                    &[],
                );
            }
        }
    }
}

/// Starts the requested process; returns its pid once it has exec'd (and, on a terminal, the
/// terminal's master side), or why it could not.
fn spawn(request: &SpawnRequest, fds: Vec<OwnedFd>) -> Result<(Pid, Option<OwnedFd>), String> {
    if request.version != wire::PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported",
            request.version
        ));
    }
    let expected = match (request.tty, request.stdin_pipe) {
        (Some(_), _) => 0,
        (None, true) => 3,
        (None, false) => 2,
    };
    if fds.len() != expected {
        return Err(format!(
            "expected {expected} descriptors, got {}",
            fds.len()
        ));
    }
    let argv = cstrings(&request.argv).ok_or("argv contains a NUL byte")?;
    let env = cstrings(&request.env).ok_or("environment contains a NUL byte")?;
    if argv.is_empty() {
        return Err("empty argv".into());
    }
    let path = request
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let candidates = candidates(&request.argv[0], path);
    let cwd = CString::new(request.cwd.as_str()).map_err(|_| "cwd contains a NUL byte")?;
    let (master, fds) = match request.tty {
        Some(size) => {
            let (master, slave) = open_terminal(size, request.uid)?;
            (Some(master), vec![slave])
        }
        None => (None, fds),
    };
    let (error_read, error_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;

    // SAFETY: init is single-threaded, so the child is a consistent copy of it and may run
    // ordinary Rust until it execs or exits.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(error_read);
            drop(master);
            let failure = crate::child::exec(&crate::child::Exec {
                argv: &argv,
                env: &env,
                candidates: &candidates,
                cwd: &cwd,
                uid: request.uid,
                gid: request.gid,
                fds: &fds,
                stdin_pipe: request.stdin_pipe,
                tty: request.tty.is_some(),
            });
            crate::child::report_and_exit(error_write, &failure)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(error_write);
            drop(fds);
            // Blocks only until the child execs (close-on-exec closes the pipe) or reports.
            let mut message = String::new();
            let _ = std::fs::File::from(error_read).read_to_string(&mut message);
            if message.is_empty() {
                Ok((child, master))
            } else {
                Err(message)
            }
        }
    }
}

/// Forks a child that does one file operation (see `child::files`); its pid.
fn file_child(request: &FileRequest, fds: Vec<OwnedFd>) -> Result<Pid, String> {
    if request.version != sbx_backend::agent::VERSION {
        return Err(format!(
            "protocol version {} is not supported",
            request.version
        ));
    }
    let expected = match request.action {
        FileOp::Read { .. }
        | FileOp::Write { .. }
        | FileOp::Archive { .. }
        | FileOp::Extract { .. }
        | FileOp::Watch { .. } => 2,
        _ => 1,
    };
    if fds.len() != expected {
        return Err(format!(
            "expected {expected} descriptors, got {}",
            fds.len()
        ));
    }
    // SAFETY: init is single-threaded, so the child is a consistent copy of it and may run
    // ordinary Rust until it exits.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot fork: {e}")),
        Ok(ForkResult::Child) => crate::child::files::run(request, fds),
        Ok(ForkResult::Parent { child }) => Ok(child),
    }
}

/// A new pseudo-terminal of the sandbox's devpts: the master for the daemon, the slave for the
/// command, owned by the command's user (group tty, 0620) as a login terminal would be.
fn open_terminal(size: wire::TtySize, uid: u32) -> Result<(OwnedFd, OwnedFd), String> {
    let winsize = nix::pty::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&winsize), None)
        .map_err(|e| format!("cannot open a terminal: {e}"))?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| format!("fcntl: {e}"))?;
    }
    let owner = Some(nix::unistd::Uid::from_raw(uid));
    nix::unistd::fchown(&pty.slave, owner, Some(nix::unistd::Gid::from_raw(5)))
        .map_err(|e| format!("cannot give the terminal to uid {uid}: {e}"))?;
    Ok((pty.master, pty.slave))
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The paths `execve` should try for `program`, as `execvp` would.
fn candidates(program: &str, path: &str) -> Vec<CString> {
    if program.contains('/') {
        return CString::new(program).into_iter().collect();
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .filter_map(|dir| CString::new(format!("{dir}/{program}")).ok())
        .collect()
}

fn cstrings(items: &[String]) -> Option<Vec<CString>> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_search_candidates() {
        assert_eq!(
            candidates("/bin/sh", "/x"),
            vec![CString::new("/bin/sh").unwrap()]
        );
        assert_eq!(
            candidates("ls", "/a::/b"),
            vec![
                CString::new("/a/ls").unwrap(),
                CString::new("/b/ls").unwrap()
            ]
        );
    }
}
