//! Host cgroup facts the runtimes care about.
//!
//! `crun` refuses a hybrid host (cgroup v1 controllers, with cgroup v2 mounted at
//! `/sys/fs/cgroup/unified`) as soon as any controller is attached to v2 ("cgroups in hybrid
//! mode not supported, drop all controllers from cgroupv2") — seen here with `hugetlb`, which
//! no v1 hierarchy had taken. A controller that no v2 cgroup enables can move to a v1
//! hierarchy of its own: mounting one moves it, which is what [`prepare_hybrid`] does (and
//! logs), once, when a `crun` backend starts. Nothing else on the host uses v2 controllers
//! on such a host (none is enabled in any `cgroup.subtree_control`, which is checked).

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sbx_backend::BackendError;

const ROOT: &str = "/sys/fs/cgroup";

/// Makes a hybrid host acceptable to `crun`: every controller attached to its cgroup v2 moves
/// to a v1 hierarchy of its own. Nothing to do on a pure v1 or v2 host.
pub fn prepare_hybrid() -> Result<(), BackendError> {
    let unified = Path::new(ROOT).join("unified");
    let Ok(controllers) = fs::read_to_string(unified.join("cgroup.controllers")) else {
        return Ok(());
    };
    let enabled = fs::read_to_string(unified.join("cgroup.subtree_control")).unwrap_or_default();
    for controller in controllers.split_whitespace() {
        let refuse = |why: String| {
            BackendError::unavailable(format!(
                "crun refuses this hybrid cgroup host while cgroup v2 has the {controller} \
                 controller, and sbx could not move it to a v1 hierarchy ({why}); mount one: \
                 mkdir {ROOT}/{controller} && mount -t cgroup -o {controller} cgroup \
                 {ROOT}/{controller}"
            ))
        };
        if !controller
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(refuse("an unexpected controller name".into()));
        }
        if enabled.split_whitespace().any(|c| c == controller) {
            return Err(refuse("cgroup v2 has it enabled".into()));
        }
        let target = Path::new(ROOT).join(controller);
        fs::create_dir_all(&target).map_err(|e| refuse(e.to_string()))?;
        nix::mount::mount(
            Some("cgroup"),
            &target,
            Some("cgroup"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some(controller),
        )
        .map_err(|e| refuse(e.to_string()))?;
        tracing::info!(
            controller,
            "moved a cgroup controller from cgroup v2 to a v1 hierarchy of its own at {} \
             (crun refuses hybrid hosts otherwise)",
            target.display()
        );
    }
    Ok(())
}

/// Whether moves into cgroups no longer wait for a grace period (see [`favor_moves`]).
static FAVORED: AtomicBool = AtomicBool::new(false);

/// Remounts the host's cgroup v2 with `favordynmods`, once, when a `crun` or `runc` backend
/// starts (`[oci] favor_cgroup_moves`, on by default), and logs it. A process moving into a
/// cgroup (every command a sandbox runs: the runtime's `exec` joins the sandbox's cgroup)
/// takes the kernel's threadgroup rw-semaphore for writing; without the option a write after
/// a quiet spell first waits for an RCU grace period (10–20 ms here), with it none does, at
/// the price the kernel documents: forks and exits pay a little more (docs/BENCHMARKS.md has
/// both). The semaphore is shared by every hierarchy, v1 ones too, so the cgroup v2 mount of
/// a hybrid host serves (its other options are kept). Nothing happens on a host without
/// cgroup v2, or one where it is already so; a refusal (a kernel before 6.0, a read-only
/// `/sys/fs/cgroup`) is logged and changes nothing.
pub fn favor_moves() {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Some((target, flags, options)) = mountinfo.lines().find_map(cgroup2_mount) else {
        tracing::info!("no cgroup v2 mount: moves into cgroups keep their grace-period waits");
        return;
    };
    if options.iter().any(|o| o == "favordynmods") {
        FAVORED.store(true, Ordering::Relaxed);
        return;
    }
    let mut data: Vec<&str> = options
        .iter()
        .map(String::as_str)
        .filter(|o| !matches!(*o, "rw" | "ro"))
        .collect();
    data.push("favordynmods");
    let data = data.join(",");
    match nix::mount::mount(
        None::<&str>,
        target.as_str(),
        None::<&str>,
        flags | nix::mount::MsFlags::MS_REMOUNT,
        Some(data.as_str()),
    ) {
        Ok(()) => {
            FAVORED.store(true, Ordering::Relaxed);
            tracing::info!(
                target = %target,
                options = %data,
                "remounted the host's cgroup v2 with favordynmods: moving a command into its \
                 sandbox's cgroup no longer waits for an RCU grace period \
                 ([oci] favor_cgroup_moves = false leaves it)"
            );
        }
        Err(e) => tracing::warn!(
            target = %target,
            error = %e,
            "cannot remount cgroup v2 with favordynmods: a sandbox's first command may \
             wait 10-20 ms for an RCU grace period"
        ),
    }
}

/// A cgroup v2 mount of `/proc/self/mountinfo`: its path, its mount's flags, and its
/// superblock's options.
fn cgroup2_mount(line: &str) -> Option<(String, nix::mount::MsFlags, Vec<String>)> {
    use nix::mount::MsFlags;
    let (mount, fs) = line.split_once(" - ")?;
    let mut fs = fs.split(' ');
    if fs.next()? != "cgroup2" || line.contains('\\') {
        return None;
    }
    let options = fs.nth(1)?.split(',').map(str::to_owned).collect();
    let mut fields = mount.split(' ');
    let target = fields.nth(4)?.to_owned();
    let mut flags = MsFlags::empty();
    for option in fields.next()?.split(',') {
        flags |= match option {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    Some((target, flags, options))
}

/// Starts, off the request path, the wait the kernel makes the first cgroup move after a quiet
/// spell pay. On cgroup v1, a write to `cgroup.procs` or `tasks` takes the threadgroup
/// rw-semaphore for writing, and after a quiet spell that waits for an RCU grace period
/// (10–20 ms here; measured in docs/BENCHMARKS.md); writers soon after do not wait. A
/// sandbox's first command moves two processes into its cgroups (`crun exec` and the command),
/// so a create that hands out a warm container starts that wait now: a thread writes its own
/// id to the `tasks` file of the cgroup it is already in (moving nothing) and ends. Nothing on
/// cgroup v2 (where the daemon is never in a v1 hierarchy) or when the daemon is in none.
pub fn warm_attach() {
    if FAVORED.load(Ordering::Relaxed) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sbx-cgroup-warm".into())
        .spawn(|| {
            let Ok(own) = fs::read_to_string("/proc/thread-self/cgroup") else {
                return;
            };
            // `<id>:<controllers>:<path>`, the pids hierarchy's (any v1 one would do).
            let Some(path) = own.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers.split(',').any(|c| c == "pids").then_some(path)
            }) else {
                return;
            };
            let tasks = Path::new("/sys/fs/cgroup/pids")
                .join(path.trim_start_matches('/'))
                .join("tasks");
            let _ = fs::write(tasks, nix::unistd::gettid().to_string());
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cannot start the cgroup warm-up thread");
    }
}

#[cfg(test)]
mod tests {
    use nix::mount::MsFlags;

    #[test]
    fn a_cgroup2_mount_is_read_from_mountinfo() {
        let v1 = "35 25 0:30 / /sys/fs/cgroup/pids rw,relatime shared:7 - cgroup cgroup rw,pids";
        assert!(super::cgroup2_mount(v1).is_none());
        let v2 = "36 25 0:31 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - \
                  cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        let (target, flags, options) = super::cgroup2_mount(v2).unwrap();
        assert_eq!(target, "/sys/fs/cgroup");
        assert_eq!(
            flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME
        );
        assert_eq!(options, ["rw", "nsdelegate", "memory_recursiveprot"]);
    }
}
