//! Host processes named for good: a pid with its start time.

/// Start time of a process in clock ticks since boot (`/proc/PID/stat` field 22): with the pid,
/// it names one process for good, even after the pid is reused.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; count after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start_time` is still alive (and not a zombie).
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(after) = stat.rfind(')').and_then(|end| stat.get(end + 2..)) else {
        return false;
    };
    let mut fields = after.split(' ');
    let state = fields.next();
    state != Some("Z") && fields.nth(18).and_then(|t| t.parse().ok()) == Some(start_time)
}

/// Runs `work` on a thread of its own that first joins namespace `kind` (`"net"`, `"uts"`:
/// `flag` is its `CLONE_NEW*`) of process `pid`, started at `start_time` — a pid reused
/// meanwhile is refused (`NotFound`). The thread ends after `work` (a thread's namespaces are
/// its own; this one is never reused).
pub fn in_namespace_of<T: Send + 'static>(
    pid: i32,
    start_time: u64,
    kind: &'static str,
    flag: libc::c_int,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    let join = move || -> std::io::Result<T> {
        let gone = || {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the sandbox's process is gone",
            )
        };
        if !is_alive(pid, start_time) {
            return Err(gone());
        }
        let namespace = std::fs::File::open(format!("/proc/{pid}/ns/{kind}"))?;
        // Opened while that process was alive: still its namespace.
        if !is_alive(pid, start_time) {
            return Err(gone());
        }
        // SAFETY: setns(2) with a descriptor this thread holds open; it moves this thread
        // alone, which ends after `work`.
        if unsafe { libc::setns(namespace.as_raw_fd(), flag) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        work()
    };
    std::thread::Builder::new()
        .name("sbx-setns".into())
        .spawn(join)?
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_under_its_start_time_only() {
        let pid = std::process::id() as i32;
        let start = start_time(pid).unwrap();
        assert!(is_alive(pid, start));
        assert!(!is_alive(pid, start + 1));
        assert!(!is_alive(i32::MAX, start));
    }
}
