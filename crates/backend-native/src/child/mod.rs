//! What a freshly forked child of init does before it becomes the requested program:
//! session, descriptors, identity, capabilities, working directory, `execve`.
//!
//! Runs in the child of a single-threaded init, so ordinary Rust is allowed; on any failure it
//! writes one line to the error pipe and exits 127 (shells' "cannot run").

pub mod archive;
pub mod files;
pub mod watch;

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{Gid, Uid};

pub struct Exec<'a> {
    pub argv: &'a [CString],
    pub env: &'a [CString],
    /// Paths to try for argv[0], in order.
    pub candidates: &'a [CString],
    pub cwd: &'a CStr,
    pub uid: u32,
    pub gid: u32,
    /// `[stdin,] stdout, stderr`, or the terminal's slave side alone.
    pub fds: &'a [OwnedFd],
    pub stdin_pipe: bool,
    /// `fds[0]` is a terminal to make the controlling one and use for all three streams.
    pub tty: bool,
}

/// Becomes the program; returns only with the reason it could not.
pub fn exec(request: &Exec<'_>) -> String {
    if let Err(e) = reset_signals() {
        return format!("cannot reset signals: {e}");
    }
    if let Err(e) = nix::unistd::setsid() {
        return format!("cannot start a session: {e}");
    }
    if let Err(e) = wire_stdio(request) {
        return format!("cannot set up standard streams: {e}");
    }
    // Everything but 0, 1, 2 (and the error pipe, already close-on-exec) is closed at exec.
    // SAFETY: close_range only changes descriptor flags; no memory is involved.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if let Err(e) = become_user(request.uid, request.gid) {
        return e;
    }
    if let Err(e) = nix::unistd::chdir(request.cwd) {
        return format!(
            "cannot use working directory {:?}: {}",
            request.cwd.to_string_lossy(),
            e.desc()
        );
    }
    let mut denied = false;
    for candidate in request.candidates {
        let Err(e) = nix::unistd::execve(candidate, request.argv, request.env);
        match e {
            Errno::ENOENT | Errno::ENOTDIR => {}
            Errno::EACCES => denied = true,
            other => {
                return format!(
                    "cannot run {:?}: {}",
                    candidate.to_string_lossy(),
                    other.desc()
                )
            }
        }
    }
    let program = request.argv[0].to_string_lossy();
    if denied {
        format!("cannot run {program:?}: permission denied")
    } else {
        format!("cannot run {program:?}: command not found")
    }
}

/// Reports `message` to init through the close-on-exec error pipe and exits.
pub fn report_and_exit(pipe: OwnedFd, message: &str) -> ! {
    let mut file = std::fs::File::from(pipe);
    let _ = file.write_all(message.as_bytes());
    // SAFETY: _exit skips atexit handlers and stdio flushing, which belong to init's image.
    unsafe { libc::_exit(127) }
}

fn reset_signals() -> nix::Result<()> {
    // Init blocks SIGCHLD (for its signalfd) and ignores SIGPIPE; a program must start with
    // neither, since ignored dispositions and the mask survive execve.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in [Signal::SIGPIPE, Signal::SIGCHLD] {
        // SAFETY: installing SIG_DFL runs no code of ours in signal context.
        unsafe { sigaction(signal, &default) }?;
    }
    Ok(())
}

fn wire_stdio(request: &Exec<'_>) -> nix::Result<()> {
    if request.tty {
        let terminal = &request.fds[0];
        // SAFETY: TIOCSCTTY takes an int argument and touches no memory of ours; the caller is
        // a session leader without a controlling terminal (setsid just ran).
        if unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
            return Err(nix::errno::Errno::last());
        }
        nix::unistd::dup2_stdin(terminal)?;
        nix::unistd::dup2_stdout(terminal)?;
        return nix::unistd::dup2_stderr(terminal);
    }
    let (stdin, rest) = if request.stdin_pipe {
        (Some(&request.fds[0]), &request.fds[1..])
    } else {
        (None, request.fds)
    };
    // Without a pipe, stdin stays init's own fd 0: the sandbox's /dev/null.
    if let Some(fd) = stdin {
        nix::unistd::dup2_stdin(fd)?;
    }
    nix::unistd::dup2_stdout(&rest[0])?;
    nix::unistd::dup2_stderr(&rest[1])?;
    Ok(())
}

/// Switches to `uid`/`gid`. Root keeps init's limited capability set; anyone else ends with
/// no capability in any set.
pub(crate) fn become_user(uid: u32, gid: u32) -> Result<(), String> {
    if uid != 0 {
        crate::caps::drop_all_for_user()?;
    }
    nix::unistd::setgroups(&[]).map_err(|e| format!("cannot clear groups: {e}"))?;
    let gid = Gid::from_raw(gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("cannot set gid {gid}: {e}"))?;
    let uid = Uid::from_raw(uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("cannot set uid {uid}: {e}"))?;
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| format!("cannot clear ambient: {e}"))?;
    Ok(())
}
