//! Removing a sandbox from the host, and finding its processes: by pidfd, so that a recycled
//! pid is never signalled.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::process::{Pid as RPid, PidfdFlags, Signal as RSignal, WaitIdOptions};
use sbx_backend::{BackendError, SandboxId};

use super::keys::NativeHandle;
use super::{layout, Inner};
use crate::stage1;

/// How long destroy waits for processes to die and cgroups to empty.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

impl Inner {
    /// Removes every trace of the sandbox whose host key is `key`; works without a handle
    /// (then init is found in the cgroup).
    pub(super) fn destroy_key(
        &self,
        key: &SandboxId,
        handle: Option<&NativeHandle>,
    ) -> Result<(), BackendError> {
        let cgroup = self.cgroup(key);
        let mut inits: Vec<OwnedFd> = Vec::new();
        if let Some(handle) = handle {
            inits.extend(open_pidfd(handle.pid, handle.start_time));
        }
        // Any other pid-namespace init in the cgroup (a create that crashed before recording
        // its handle) is also ours to reap once killed.
        for pid in cgroup.pids() {
            if is_namespace_init(pid) {
                inits.extend(pidfd(pid));
            }
        }
        for pidfd in &inits {
            // SIGKILL to a pid-namespace init kills every process of the namespace.
            let _ = rustix::process::pidfd_send_signal(pidfd, RSignal::KILL);
        }
        // A paused sandbox's processes take their SIGKILL once thawed (never before).
        let _ = cgroup.thaw();
        for pidfd in &inits {
            wait_readable(pidfd, KILL_DEADLINE);
            reap(pidfd);
        }

        cgroup
            .kill_all(KILL_DEADLINE)
            .map_err(|e| BackendError::io(format!("cannot empty the cgroup of {key}"), e))?;
        cgroup
            .remove(KILL_DEADLINE)
            .map_err(|e| BackendError::io(format!("cannot remove the cgroup of {key}"), e))?;
        let dir = self.layout.sandbox(key);
        let slot = handle
            .map(|h| h.slot)
            .or_else(|| read_slot(&self.layout.slot_file(key)));
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::io(
                    format!("cannot remove {}", dir.display()),
                    e,
                ))
            }
        }
        if let Some(slot) = slot {
            self.free_slot(slot, key);
        }
        Ok(())
    }
}

/// Which id range a sandbox was given (`<sandbox>/slot`).
fn read_slot(file: &Path) -> Option<u32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The uid ranges of the sandboxes this data directory has on the host, by host key.
pub(super) fn used_slots(layout: &layout::Layout) -> std::collections::BTreeMap<u32, SandboxId> {
    let Ok(entries) = fs::read_dir(layout.sandboxes()) else {
        return Default::default();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let key = SandboxId::parse(&entry.file_name().to_string_lossy()).ok()?;
            Some((read_slot(&entry.path().join("slot"))?, key))
        })
        .collect()
}

/// A pidfd for `pid` if it still is the process that started at `start_time`.
pub(super) fn open_pidfd(pid: i32, start_time: u64) -> Option<OwnedFd> {
    let pidfd = pidfd(pid)?;
    // Checked after opening: from here on the pidfd pins the process, whatever the pid does.
    (stage1::start_time(pid) == Some(start_time)).then_some(pidfd)
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    let pid = RPid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()
}

pub(super) use sbx_backend::process::is_alive;

/// Whether `pid` is pid 1 of a pid namespace below ours (`NSpid: <host pid> 1`).
fn is_namespace_init(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|ids| {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                ids.len() >= 2 && ids.last() == Some(&"1")
            })
    })
}

fn wait_readable(pidfd: &OwnedFd, deadline: Duration) {
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let timeout = nix::poll::PollTimeout::try_from(deadline).unwrap_or(nix::poll::PollTimeout::MAX);
    let _ = nix::poll::poll(&mut fds, timeout);
}

/// Collects the exit status if the process is our child (init is, through the subreaper);
/// otherwise its real parent does.
pub(super) fn reap(pidfd: &OwnedFd) {
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    );
}
