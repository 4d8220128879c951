//! The shim: what starts a runtime's long-lived processes when this daemon is a child
//! subreaper (the native backend makes it one, so that its sandbox inits come back to it).
//!
//! `runsc create` (and `restore`) fork the sandbox, the gofer and the platform's stub
//! processes, then exit: orphans, re-parented to the nearest subreaper. Were that the daemon,
//! which waits only for the children it knows, each would stay a zombie when it ends (host
//! pids, `kernel.pid_max` is shared), and a sandbox whose pid answers signal 0 as a zombie
//! would never be seen to end. So the runtime runs under a shim, itself a subreaper: it runs
//! the runtime call, reports how it ended on its stdout (one line: the exit code, or `-N` for
//! a signal), closes it, and reaps every orphan of that call until none is left, then exits.
//! It runs in its own process group (a terminal's signal to the daemon does not reach it) and
//! outlives a daemon's restart (then it is init's child).

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// argv[1] that selects the shim in the `sbx` binary.
pub const SHIM_ARG: &str = "__oci-shim";

/// Becomes the shim and exits when the binary was started as one; returns otherwise. Call it
/// first in `main`, before any thread exists.
pub fn run_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(SHIM_ARG)) {
        return;
    }
    let Some(program) = args.next() else {
        std::process::exit(2);
    };
    std::process::exit(main(&program, args.collect()));
}

/// The runtime call's pid, for the `SIGTERM` handler.
static CALL: AtomicI32 = AtomicI32::new(0);

/// `SIGTERM` (the daemon's deadline passed): the runtime call is killed; the shim goes on
/// reaping what it left.
extern "C" fn on_term(_: libc::c_int) {
    let pid = CALL.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// How a runtime call ended, as the shim reports it: the exit code, or `-N` for signal N.
pub fn report_of(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("-{signal}"),
        (None, None) => "-1".into(),
    }
}

fn main(program: &OsStr, args: Vec<std::ffi::OsString>) -> i32 {
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_term),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only reads an atomic and calls kill(2).
    let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGTERM, &action) };
    let status = std::process::Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            CALL.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
            child.wait()
        });
    let report = match status {
        Ok(status) => report_of(status),
        Err(e) => format!("cannot run: {e}"),
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{report}");
        let _ = out.flush();
    }
    // The daemon reads until the end of the pipe: close it now, not when the last orphan ends.
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    loop {
        match nix::sys::wait::waitpid(None, None) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return 0,
        }
    }
}
