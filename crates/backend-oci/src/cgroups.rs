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

/// Starts, off the request path, the wait the kernel makes the first cgroup move after a quiet
/// spell pay. On cgroup v1, a write to `cgroup.procs` or `tasks` takes the threadgroup
/// rw-semaphore for writing, and after a quiet spell that waits for an RCU grace period
/// (10–20 ms here; measured in docs/BENCHMARKS.md); writers soon after do not wait. A
/// sandbox's first command moves two processes into its cgroups (`crun exec` and the command),
/// so a create that hands out a warm container starts that wait now: a thread writes its own
/// id to the `tasks` file of the cgroup it is already in (moving nothing) and ends. Nothing on
/// cgroup v2 (where the daemon is never in a v1 hierarchy) or when the daemon is in none.
pub fn warm_attach() {
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
