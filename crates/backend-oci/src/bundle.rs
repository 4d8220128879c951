//! Bundles: `<data>/oci/bundles/<id>/` holds `config.json` and `rootfs/`, the sandbox's root
//! as the runtime sees it, read-only (gVisor keeps the sandbox's writes in its memory):
//!
//! a read-only overlay, mounted on the host at `rootfs/` (the one host mount a sandbox of this
//! backend has, named by its id, removed by destroy), of the mount points' directory (with
//! `/home/user` owned by uid 1000) over either the shared `host` template's tree (the host's
//! `/usr`, and non-merged system directories, bound read-only by the runtime) or a template's
//! image layers.

use sbx_backend::agent::exec as agent;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sbx_backend::slots::ID_RANGE;
use sbx_backend::{BackendError, ImageConfig, Limits, SandboxSpec};
use sbx_images::host::Bind;
use serde_json::{json, Value};

/// The sandbox's init keeps the container alive (commands come through the runtime's `exec`):
/// `sleep` from a static busybox of the host's, bound read-only at this path, so that any
/// image works; without one, the template's own `sleep`.
pub const INIT_PATH: &str = "/.sbx/busybox";
const SLEEP: [&str; 2] = ["sleep", "2147483647"];

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a root is made of.
pub enum Root {
    /// A directory used as it is, with host directories bound over it.
    Directory { path: PathBuf, binds: Vec<Bind> },
    /// An image's layers, bottom first.
    Layers {
        layers: Vec<PathBuf>,
        config: ImageConfig,
    },
}

/// The writable layer of a namespaces runtime's sandbox: a tmpfs of its own (`size` bytes,
/// its pages charged to the sandbox's memory cgroup as it writes them), mounted at `dir`,
/// holding the overlay's upper and work directories. The upper's root, `/root` and
/// `/home/user` are made owned by the sandbox's root and user (host ids from `id_base`):
/// the lower layers' owners are host ids outside the sandbox's range, which it sees as
/// `nobody`.
pub struct Writable<'a> {
    pub dir: &'a Path,
    pub id_base: u32,
    pub size: u64,
    /// Where an image's layers are mounted idmapped (`lowers/<n>`), so that their files are
    /// the sandbox's own ids (root's files its root's), not host ids outside its range.
    pub lowers: &'a Path,
    /// The host's static busybox, whose `sleep` holds the user namespace the idmapping is
    /// taken from while it is made (the host's `sleep` without one).
    pub busybox: Option<&'a Path>,
}

/// Mounts the root at `rootfs`: an overlay of the mount points' directory over the template's
/// tree or the image's layers — read-only (gVisor keeps the writes in its memory), or over
/// the writable layer when there is one.
pub fn mount_root(
    root: &Root,
    skeleton: &Path,
    rootfs: &Path,
    writable: Option<Writable<'_>>,
) -> Result<(), BackendError> {
    let mut lower = vec![skeleton.display().to_string()];
    match (root, &writable) {
        (Root::Directory { path, .. }, _) => lower.push(path.display().to_string()),
        // Under gVisor the layers' ids are the sandbox's own already.
        (Root::Layers { layers, .. }, None) => {
            lower.extend(layers.iter().rev().map(|l| l.display().to_string()))
        }
        (Root::Layers { layers, .. }, Some(writable)) => {
            let userns = sbx_backend::idmap::user_namespace(writable.id_base, writable.busybox)
                .map_err(|e| BackendError::io("cannot make the layers' id mapping", e))?;
            for (index, layer) in layers.iter().enumerate().rev() {
                let target = writable.lowers.join(index.to_string());
                fs::create_dir_all(&target)
                    .map_err(|e| BackendError::io("cannot make a layer's mount point", e))?;
                sbx_backend::idmap::mount_idmapped(layer, &target, &userns)
                    .map_err(|e| BackendError::io("cannot mount an image layer", e))?;
                lower.push(target.display().to_string());
            }
        }
    }
    let mut options = format!("lowerdir={}", lower.join(":"));
    let mut flags = nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOSUID;
    match writable {
        Some(writable) => {
            let (upper, work) = mount_writable(&writable)?;
            options.push_str(&format!(
                ",upperdir={},workdir={},volatile,redirect_dir=off,metacopy=off",
                upper.display(),
                work.display()
            ));
        }
        None => flags |= nix::mount::MsFlags::MS_RDONLY,
    }
    if options.len() > 4000 {
        return Err(BackendError::other(
            "the image has too many layers for this backend's mount options",
        ));
    }
    nix::mount::mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        flags,
        Some(options.as_str()),
    )
    .map_err(|e| BackendError::io("cannot mount the image's layers", e.into()))
}

/// Mounts the writable layer's tmpfs; its upper and work directories.
fn mount_writable(writable: &Writable<'_>) -> Result<(PathBuf, PathBuf), BackendError> {
    let io = |what: &str, e: std::io::Error| BackendError::io(format!("cannot {what}"), e);
    fs::create_dir_all(writable.dir).map_err(|e| io("make the writable layer", e))?;
    let options = format!("size={},mode=0700", writable.size.max(1 << 20));
    nix::mount::mount(
        Some("tmpfs"),
        writable.dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOSUID,
        Some(options.as_str()),
    )
    .map_err(|e| io("mount the writable layer", e.into()))?;
    let upper = writable.dir.join("upper");
    let work = writable.dir.join("work");
    let (root, user) = (writable.id_base, writable.id_base + 1000);
    let owned = |path: &Path, mode: u32, owner: u32| -> std::io::Result<()> {
        fs::create_dir_all(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::chown(path, Some(owner), Some(owner))
    };
    owned(&work, 0o700, 0)
        .and_then(|()| owned(&upper, 0o755, root))
        .and_then(|()| owned(&upper.join("home"), 0o755, root))
        .and_then(|()| owned(&upper.join("home/user"), 0o700, user))
        .and_then(|()| owned(&upper.join("root"), 0o700, root))
        .map_err(|e| io("prepare the writable layer", e))?;
    Ok((upper, work))
}

/// Unmounts `rootfs` if something is mounted there.
/// Unmounts the idmapped layers under `lowers` (see [`Writable::lowers`]).
pub fn unmount_lowers(lowers: &Path) {
    for entry in fs::read_dir(lowers).into_iter().flatten().flatten() {
        let _ = nix::mount::umount2(&entry.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

pub fn unmount_root(rootfs: &Path) {
    let _ = nix::mount::umount2(rootfs, nix::mount::MntFlags::MNT_DETACH);
}

/// The mount points a root needs, for images that lack them.
pub fn ensure_skeleton(dir: &Path) -> std::io::Result<()> {
    for sub in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "home/user",
        "root",
        "run",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o700))?;
    fs::set_permissions(dir.join("home/user"), fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(dir.join("home/user"), Some(1000), Some(1000))?;
    fs::write(dir.join("etc/resolv.conf"), sbx_images::host::RESOLV)?;
    // The init's mount point (a read-only root cannot get one made).
    fs::create_dir_all(dir.join(".sbx"))?;
    fs::write(dir.join(INIT_PATH.trim_start_matches('/')), b"")?;
    // The file agent's.
    fs::create_dir_all(dir.join(agent::LIB_DIR.trim_start_matches('/')))?;
    fs::write(dir.join(agent::PROGRAM.trim_start_matches('/')), b"")?;
    Ok(())
}

/// Sets `key` in `env`, in place when it is there.
pub fn set_env(env: &mut Vec<(String, String)>, key: String, value: String) {
    match env.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key, value)),
    }
}

/// The environment of the init and the base of every command's: sbx's, then the image's.
pub fn base_env(image: Option<&ImageConfig>, id: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("HOSTNAME".into(), id.into()),
        ("TMPDIR".into(), "/tmp".into()),
    ];
    for entry in image.map_or(&[][..], |i| &i.env) {
        if let Some((key, value)) = entry.split_once('=') {
            set_env(&mut env, key.to_owned(), value.to_owned());
        }
    }
    env
}

/// Host tasks the runtime itself takes in the sandbox's cgroup, over what the sandbox's
/// `pids` limit gives its own processes: gVisor's sentry and gofer threads (about 60 at rest
/// with the ptrace platform), a `runsc exec` client's threads per command.
pub const RUNTIME_TASKS: u64 = 128;

/// Host tasks `crun`/`runc` take in the sandbox's cgroup: a command's `exec` client.
pub const NAMESPACE_RUNTIME_TASKS: u64 = 16;

/// How the runtime isolates the sandbox.
#[derive(Debug, Clone, Copy)]
pub enum Isolation {
    /// gVisor: its own flags say the rest.
    Gvisor,
    /// The host's kernel: a user namespace mapping the sandbox's ids 0–65535 to the host
    /// range from `id_base` (from the host-wide registry), and the seccomp filter.
    Namespaces { id_base: u32 },
}

/// System calls a sandbox of a namespaces runtime may make without argument checks: the
/// native backend's allow-list (see its `stage1/seccomp.rs` for what is left out, and why).
pub const SECCOMP_ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_waitv",
    "futimesat",
    "get_mempolicy",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "mbind",
    "membarrier",
    "memfd_create",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_mempolicy",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// Answered `ENOSYS`, as the native backend does: `clone3` (its flags are out of a filter's
/// reach; libc falls back to `clone`) and native AIO (a host-wide pool no cgroup bounds).
const SECCOMP_ENOSYS: &[&str] = &[
    "clone3",
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
];

/// The seccomp filter of a namespaces runtime's sandbox: everything not allowed fails with
/// `EPERM`. Argument checks: `clone` may not make namespaces; `socket` only families below
/// `AF_PACKET` (no packet, vsock, …); `personality` only the values Docker allows. Unlike the
/// native backend's filter, `ioctl` is not checked (OCI filters cannot refuse two values of
/// one argument): `TIOCSTI` can only reach the sandbox's own terminals.
fn seccomp() -> Value {
    const ERRNO_EPERM: u32 = 1;
    const ERRNO_ENOSYS: u32 = 38;
    let namespaces = sbx_backend::seccomp::CLONE_NAMESPACE_FLAGS;
    let mut syscalls = vec![
        json!({"names": SECCOMP_ALLOWED, "action": "SCMP_ACT_ALLOW"}),
        json!({"names": SECCOMP_ENOSYS, "action": "SCMP_ACT_ERRNO", "errnoRet": ERRNO_ENOSYS}),
        json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": namespaces, "valueTwo": 0,
                         "op": "SCMP_CMP_MASKED_EQ"}]}),
        json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": libc::AF_PACKET, "op": "SCMP_CMP_LT"}]}),
    ];
    for personality in sbx_backend::seccomp::PERSONALITIES {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                             "args": [{"index": 0, "value": personality, "op": "SCMP_CMP_EQ"}]}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": ERRNO_EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    })
}

/// The OCI runtime configuration of the sandbox.
pub fn config(
    spec: &SandboxSpec,
    root: &Root,
    cgroup: &str,
    init: Option<&Path>,
    agent: Option<&agent::HostAgent>,
    isolation: Isolation,
    root_path: &Path,
) -> Value {
    let Limits {
        memory_bytes,
        cpu_millis,
        pids,
        ..
    } = spec.limits;
    let id = spec.id.to_string();
    let image = match root {
        Root::Layers { config, .. } => Some(config),
        Root::Directory { .. } => None,
    };
    // The host name is the sandbox's (set once a warm container is taken): not in the init's
    // environment, which a warm container keeps.
    let env: Vec<String> = base_env(image, &id)
        .into_iter()
        .filter(|(k, _)| k != "HOSTNAME")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let tmp_bytes = memory_bytes * 2 / 5;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", format!("size={tmp_bytes}")]}),
    ];
    let args: Vec<String> = match init {
        Some(busybox) => {
            mounts.push(json!({
                "destination": INIT_PATH,
                "type": "bind",
                "source": busybox,
                "options": ["bind", "ro", "nosuid", "nodev"],
            }));
            std::iter::once(INIT_PATH)
                .chain(SLEEP)
                .map(str::to_owned)
                .collect()
        }
        None => SLEEP.iter().map(|a| (*a).to_owned()).collect(),
    };
    for (source, destination) in agent.into_iter().flat_map(agent::HostAgent::binds) {
        mounts.push(json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": ["bind", "ro", "nosuid", "nodev"],
        }));
    }
    if let Root::Directory { binds, .. } = root {
        for bind in binds {
            mounts.push(json!({
                "destination": format!("/{}", bind.target),
                "type": "bind",
                "source": bind.source,
                "options": ["rbind", "ro", "nosuid", "nodev"],
            }));
        }
    }
    let capabilities = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_AUDIT_WRITE",
    ];
    let runtime_tasks = match isolation {
        Isolation::Gvisor => RUNTIME_TASKS,
        Isolation::Namespaces { .. } => NAMESPACE_RUNTIME_TASKS,
    };
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": capabilities, "effective": capabilities,
                "permitted": capabilities, "inheritable": [], "ambient": []
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 65536u64, "soft": 65536u64}],
            "noNewPrivileges": true
        },
        "root": {"path": root_path, "readonly": false},
        "hostname": id,
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "cgroupsPath": cgroup,
            "resources": {
                "memory": {"limit": memory_bytes},
                "cpu": {"quota": (cpu_millis * 100) as i64, "period": 100_000u64},
                "pids": {"limit": pids.saturating_add(runtime_tasks) as i64}
            },
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                            "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                              "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if let Isolation::Namespaces { id_base } = isolation {
        // The host's kernel applies it, inside a user namespace that cannot raise a hard
        // limit over the daemon's own.
        let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(_, hard)| hard)
            .min(65536);
        config["process"]["rlimits"] =
            json!([{"type": "RLIMIT_NOFILE", "hard": hard, "soft": hard}]);
        let map = json!([{"containerID": 0, "hostID": id_base, "size": ID_RANGE}]);
        let linux = &mut config["linux"];
        if let Some(namespaces) = linux["namespaces"].as_array_mut() {
            namespaces.push(json!({"type": "user"}));
            namespaces.push(json!({"type": "cgroup"}));
        }
        linux["uidMappings"] = map.clone();
        linux["gidMappings"] = map;
        linux["seccomp"] = seccomp();
    }
    config
}
