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
