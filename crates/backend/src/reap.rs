//! Orphans of sandboxes, reaped. A daemon that is a child subreaper (the native backend makes
//! it one, so that its sandbox inits come back to it) also inherits every orphan of a process
//! it started outside a sandbox: a command that an OCI runtime's `exec` client started, whose
//! client ended first, and anything such a command left behind. Nothing waits for those, so
//! each would stay a zombie — a host pid, a task counted against its sandbox's pids, and, in
//! a pid namespace, what keeps that namespace's init from ever finishing its exit (so the
//! sandbox could not be destroyed). [`orphans`] reaps them.
//!
//! Only zombies in another pid namespace than the daemon's are taken: a process the daemon
//! spawned itself (whose exit a `tokio::process::Child` awaits) lives in the daemon's own.

use std::path::Path;

/// Reaps this process's zombie children that live in another pid namespace; how many.
pub fn orphans() -> usize {
    let Ok(own) = std::fs::read_link("/proc/self/ns/pid") else {
        return 0;
    };
    let mut reaped = 0;
    for child in children() {
        let proc = Path::new("/proc").join(child.to_string());
        let zombie = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|stat| {
                // `pid (comm) S ...`: the state follows the last ')'.
                let rest = &stat[stat.rfind(')')? + 1..];
                rest.split_whitespace().next().map(|s| s == "Z")
            })
            .unwrap_or(false);
        if !zombie {
            continue;
        }
        let foreign = std::fs::read_link(proc.join("ns/pid")).is_ok_and(|ns| ns != own);
        if !foreign {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on one pid, writing one int of ours.
        if unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } == child {
            reaped += 1;
        }
    }
    reaped
}

/// This process's children (of every thread: an orphan goes to any of them).
fn children() -> Vec<i32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}
