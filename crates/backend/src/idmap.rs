//! Idmapped mounts: a directory whose files are owned by a sandbox's own ids (0–65535, as an
//! image's layers are stored) mounted so that they appear owned by the sandbox's host uid
//! range, whatever range that is — one stored layer serves every sandbox, with no copy and no
//! `chown`. Used by the backends that give each sandbox a user namespace over a host range of
//! its own (native; oci over `crun`/`runc`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The ids a sandbox has, mapped from its range's base.
pub const ID_RANGE: u32 = 65536;

/// Mounts `layer` read-only (no set-id, no devices) at `target`, its owners seen through the
/// mapping of the user namespace `userns`: on-disk id `n` appears as the id `n` maps to there.
pub fn mount_idmapped(layer: &Path, target: &Path, userns: &OwnedFd) -> std::io::Result<()> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let failed = |what: &str| {
        let e = std::io::Error::last_os_error();
        std::io::Error::new(e.kind(), format!("cannot {what} {}: {e}", layer.display()))
    };
    let c_layer = CString::new(layer.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other("a layer's path has a NUL byte"))?;
    // SAFETY: open_tree with a NUL-terminated path; returns a new descriptor or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_layer.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(failed("open the layer"));
    }
    // SAFETY: the descriptor was just returned to this process.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr on our descriptor with an empty path and a mount_attr of the size
    // given, which outlives the call.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set < 0 {
        return Err(failed("idmap the layer"));
    }
    let c_target = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other("a mount point has a NUL byte"))?;
    // SAFETY: move_mount from our descriptor (empty path) onto a NUL-terminated target.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        return Err(failed("mount the layer"));
    }
    Ok(())
}

/// A user namespace mapping ids 0–65535 to the host's from `base`, held by the descriptor
/// returned. Made by a short-lived process (`busybox sleep 30` when a busybox is given, else
/// the host's `sleep 30`, started into a new user namespace, then killed), so that a
/// multi-threaded daemon never forks by hand.
pub fn user_namespace(base: u32, busybox: Option<&Path>) -> std::io::Result<OwnedFd> {
    use std::os::unix::process::CommandExt;
    let mut command = match busybox {
        Some(busybox) => {
            let mut command = std::process::Command::new(busybox);
            command.arg("sleep");
            command
        }
        None => std::process::Command::new("sleep"),
    };
    command
        .arg("30")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: unshare is async-signal-safe and touches no memory of the parent's.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    // The program runs only once it is in the new namespace (spawn returns after its exec).
    let mut child = command.spawn()?;
    let pid = child.id();
    let map = format!("0 {base} {ID_RANGE}");
    let opened = std::fs::write(format!("/proc/{pid}/uid_map"), &map)
        .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), &map))
        .and_then(|()| std::fs::File::open(format!("/proc/{pid}/ns/user")));
    let _ = child.kill();
    let _ = child.wait();
    Ok(OwnedFd::from(opened?))
}
