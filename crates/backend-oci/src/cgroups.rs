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
