//! Bundles: `<data>/oci/bundles/<id>/` holds `config.json` and `rootfs/`, the sandbox's root
//! as the runtime sees it, read-only (gVisor keeps the sandbox's writes in its memory):
//!
//! a read-only overlay, mounted on the host at `rootfs/` (the one host mount a sandbox of this
//! backend has, named by its id, removed by destroy), of the mount points' directory (with
//! `/home/user` owned by uid 1000) over either the shared `host` template's tree (the host's
//! `/usr`, and non-merged system directories, bound read-only by the runtime) or a template's
//! image layers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sbx_backend::{BackendError, ImageConfig, Limits, SandboxSpec};
use sbx_images::host::Bind;
use serde_json::{json, Value};

/// The sandbox's init keeps the container alive (commands come through the runtime's `exec`):
/// `sleep` from a static busybox of the host's, bound read-only at this path, so that any
/// image works; without one, the template's own `sleep`.
pub const INIT_PATH: &str = "/.sbx/busybox";
const SLEEP: [&str; 2] = ["sleep", "2147483647"];

/// A statically linked busybox on the host (Debian's `busybox-static`), if there is one.
pub fn static_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|path| fs::read(path).is_ok_and(|elf| is_static_elf(&elf)))
}

/// An x86-64/arm64 ELF64 executable without a program interpreter.
fn is_static_elf(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return false;
    }
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let offset = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap_or_default()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = offset + i * size;
        // PT_INTERP = 3.
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap_or_default()) != 3)
    })
}
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

/// Mounts the root at `rootfs`: a read-only overlay of the mount points' directory over the
/// template's tree or the image's layers.
pub fn mount_root(root: &Root, skeleton: &Path, rootfs: &Path) -> Result<(), BackendError> {
    let mut lower = vec![skeleton.display().to_string()];
    match root {
        Root::Directory { path, .. } => lower.push(path.display().to_string()),
        Root::Layers { layers, .. } => {
            lower.extend(layers.iter().rev().map(|l| l.display().to_string()))
        }
    }
    let options = format!("lowerdir={}", lower.join(":"));
    if options.len() > 4000 {
        return Err(BackendError::other(
            "the image has too many layers for this backend's mount options",
        ));
    }
    nix::mount::mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOSUID,
        Some(options.as_str()),
    )
    .map_err(|e| BackendError::io("cannot mount the image's layers", e.into()))
}

/// Unmounts `rootfs` if something is mounted there.
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

/// The OCI runtime configuration of the sandbox.
pub fn config(spec: &SandboxSpec, root: &Root, cgroup: &str, init: Option<&Path>) -> Value {
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
    let env: Vec<String> = base_env(image, &id)
        .into_iter()
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
    json!({
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
        "root": {"path": "rootfs", "readonly": false},
        "hostname": id,
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "cgroupsPath": cgroup,
            "resources": {
                "memory": {"limit": memory_bytes},
                "cpu": {"quota": (cpu_millis * 100) as i64, "period": 100_000u64},
                "pids": {"limit": pids.saturating_add(RUNTIME_TASKS) as i64}
            },
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                            "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                              "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}
