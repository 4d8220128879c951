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
/// a quiet spell first waits for an RCU grace period (10–20 ms here); with it none does, at
/// the price the kernel documents: forks and exits pay a little more (docs/BENCHMARKS.md). The
/// semaphore is shared by every hierarchy, v1 ones too, so the cgroup v2 mount of a hybrid host
/// serves. The superblock's other options are passed back as they are (a cgroup v2 remount
/// drops what it is not given), and so are the mount's flags. Left alone, and logged: a host
/// without cgroup v2, a kernel without the option, a read-only mount or superblock, a mount
/// flag not known here, and a remount that changes nothing (a cgroup namespace of its own).
pub fn favor_moves() {
    let features = fs::read_to_string("/sys/kernel/cgroup/features").unwrap_or_default();
    if !features.split_whitespace().any(|f| f == "favordynmods") {
        tracing::info!("this kernel has no cgroup favordynmods: moves into cgroups keep their grace-period waits");
        return;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let plan = mountinfo
        .lines()
        .map(plan)
        .find(|p| !matches!(p, Plan::NotCgroup2))
        .unwrap_or(Plan::NotCgroup2);
    let remount = match plan {
        Plan::NotCgroup2 => {
            tracing::info!("no cgroup v2 mount: moves into cgroups keep their grace-period waits");
            return;
        }
        Plan::Already => {
            FAVORED.store(true, Ordering::Relaxed);
            return;
        }
        Plan::Skip(why) => {
            tracing::info!("cgroup v2 left without favordynmods ({why}): moves into cgroups keep their grace-period waits");
            return;
        }
        Plan::Remount(remount) => remount,
    };
    let done = nix::mount::mount(
        None::<&str>,
        remount.target.as_str(),
        None::<&str>,
        remount.flags | nix::mount::MsFlags::MS_REMOUNT,
        Some(remount.data.as_str()),
    );
    if let Err(e) = done {
        tracing::warn!(target = %remount.target, error = %e, "cannot remount cgroup v2 with favordynmods: a sandbox's first command may wait 10-20 ms for an RCU grace period");
        return;
    }
    let now = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let took = now
        .lines()
        .any(|line| matches!(plan_at(line, &remount.target), Some(Plan::Already)));
    if !took {
        tracing::warn!(target = %remount.target, "remounting cgroup v2 with favordynmods changed nothing (a cgroup namespace of its own?)");
        return;
    }
    FAVORED.store(true, Ordering::Relaxed);
    tracing::info!(
        target = %remount.target,
        options = %remount.data,
        "remounted the host's cgroup v2 with favordynmods: moving a command into its sandbox's cgroup no longer waits for an RCU grace period ([oci] favor_cgroup_moves = false leaves it)"
    );
}

/// What to do about one line of `/proc/self/mountinfo`.
#[derive(Debug, PartialEq)]
enum Plan {
    NotCgroup2,
    /// A cgroup v2 mount with `favordynmods` already.
    Already,
    /// A cgroup v2 mount left alone, and why.
    Skip(&'static str),
    Remount(Remount),
}

/// A remount of a cgroup v2 mount with `favordynmods`: its path, its mount's flags as they
/// are, and its superblock's options with `favordynmods` added.
#[derive(Debug, PartialEq)]
struct Remount {
    target: String,
    flags: nix::mount::MsFlags,
    data: String,
}

/// The plan for a mountinfo line (proc(5): id, parent, device, root, mount point, mount
/// options, optional fields, `-`, type, source, superblock options).
fn plan(line: &str) -> Plan {
    use nix::mount::MsFlags;
    let Some((mount, fs)) = line.split_once(" - ") else {
        return Plan::NotCgroup2;
    };
    let mut fs = fs.split(' ');
    if fs.next() != Some("cgroup2") {
        return Plan::NotCgroup2;
    }
    let Some(options) = fs.nth(1) else {
        return Plan::Skip("its mountinfo line is not understood");
    };
    let options: Vec<&str> = options.split(',').collect();
    if options.contains(&"favordynmods") {
        return Plan::Already;
    }
    let mut fields = mount.split(' ');
    let (Some(target), Some(mount_options)) = (fields.nth(4), fields.next()) else {
        return Plan::Skip("its mountinfo line is not understood");
    };
    if target.contains('\\') {
        return Plan::Skip("its path has escaped characters");
    }
    if options.contains(&"ro") {
        return Plan::Skip("it is read-only");
    }
    let mut flags = MsFlags::empty();
    for option in mount_options.split(',') {
        flags |= match option {
            "rw" => MsFlags::empty(),
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            // A read-only mount: a remount without MS_BIND would make the superblock so.
            "ro" => return Plan::Skip("it is mounted read-only"),
            _ => return Plan::Skip("its mount has a flag sbx does not know to keep"),
        };
    }
    let mut data: Vec<&str> = options.into_iter().filter(|o| *o != "rw").collect();
    data.push("favordynmods");
    Plan::Remount(Remount {
        target: target.to_owned(),
        flags,
        data: data.join(","),
    })
}

/// The plan for a mountinfo line when it is the mount at `target`.
fn plan_at(line: &str, target: &str) -> Option<Plan> {
    let mount = line.split_once(" - ")?.0;
    (mount.split(' ').nth(4)? == target).then(|| plan(line))
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
    use super::{plan, Plan, Remount};
    use nix::mount::MsFlags;

    #[test]
    fn a_cgroup2_mount_is_planned_from_mountinfo() {
        let v1 = "35 25 0:30 / /sys/fs/cgroup/pids rw,relatime shared:7 - cgroup cgroup rw,pids";
        assert_eq!(plan(v1), Plan::NotCgroup2);
        // Every option of the superblock and the mount kept, favordynmods added.
        let v2 = "36 25 0:31 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - \
                  cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";
        assert_eq!(
            plan(v2),
            Plan::Remount(Remount {
                target: "/sys/fs/cgroup".into(),
                flags: MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC
                    | MsFlags::MS_RELATIME,
                data: "nsdelegate,memory_recursiveprot,favordynmods".into(),
            })
        );
        let hybrid = "41 25 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert!(matches!(plan(hybrid), Plan::Remount(r) if r.data == "favordynmods"));
        let done =
            "41 25 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,favordynmods";
        assert_eq!(plan(done), Plan::Already);
        // Read-only (the mount, or the superblock), or a flag not known: left alone.
        let ro = "41 25 0:33 / /sys/fs/cgroup ro,nosuid,relatime - cgroup2 cgroup2 rw";
        assert!(matches!(plan(ro), Plan::Skip(_)));
        let ro_sb = "41 25 0:33 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 ro,nsdelegate";
        assert!(matches!(plan(ro_sb), Plan::Skip(_)));
        let odd = "41 25 0:33 / /sys/fs/cgroup rw,nosymfollow - cgroup2 cgroup2 rw";
        assert!(matches!(plan(odd), Plan::Skip(_)));
    }
}
