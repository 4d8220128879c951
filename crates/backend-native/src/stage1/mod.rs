//! Stage 1: the short-lived helper (`sbx __native-stage1 <sandbox-id>`) that builds a sandbox.
//!
//! The daemon is multi-threaded and must not fork into namespace setup, so it spawns this
//! fresh, single-threaded process of its own binary. Stage 1, as host root:
//!
//! 1. joins the sandbox's cgroups (so its child's cgroup namespace is rooted there) when the
//!    first message ([`Join`]) comes, enters a private mount namespace, mounts the sandbox's
//!    disk there and lays out its writable layer, and says so; then waits for the build
//!    [`Request`] (a pooled helper waits here, so a create skips all of that),
//! 2. builds the root in that mount namespace: overlay (template lower, private upper),
//!    read-only binds of host system directories, tmpfs `/tmp`, a minimal `/dev` — none of it
//!    visible on the host,
//! 3. binds the control socket, then `clone`s the future init into new user, pid, mount, UTS,
//!    IPC, network and cgroup namespaces (the user namespace owned by the sandbox's own host
//!    root id), writes its uid/gid maps (0–65535 onto an unprivileged host range of its own),
//!    and waits until init reports ready or failed,
//! 4. prints its [`Outcome`] on stdout and exits. Init, orphaned, is re-parented to the
//!    daemon (a child subreaper), which watches it through a pidfd.
//!
//! Init then (in [`sandbox_setup`]) mounts `/proc` with the OCI masks and `/dev/pts`,
//! `pivot_root`s into the new root, detaches the host's, becomes root of its user namespace,
//! shrinks its capabilities, sets `no_new_privs`, installs the seccomp filter and serves.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::unistd::{Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

use crate::daemon::template::Bind;

pub(crate) mod seccomp;

/// argv[1] that selects stage 1 in the `sbx` binary.
pub const STAGE1_ARG: &str = "__native-stage1";
/// Size of each sandbox's uid/gid range.
pub const ID_RANGE: u32 = sbx_backend::slots::ID_RANGE;

/// What the daemon asks stage 1 to build (on stdin, as JSON): what depends on the create
/// request, the sandbox's name included. Its uid range and disk came with [`Join`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The sandbox's host name (its id), also in its `/etc/hostname` and `/etc/hosts`.
    pub hostname: String,
    pub rootfs: PathBuf,
    pub lower: PathBuf,
    pub binds: Vec<Bind>,
    pub socket: PathBuf,
    pub tmp_bytes: u64,
    pub shm_bytes: u64,
    /// Largest buffer of one TCP socket in the sandbox's network namespace (the maxima of
    /// `net.ipv4.tcp_rmem` and `tcp_wmem` there).
    pub socket_buffer_bytes: u64,
    /// A snapshot layer the sandbox starts from (above the template), and where to mount it.
    #[serde(default)]
    pub snapshot: Option<SnapshotLayer>,
    /// An image template's layers (bottom first, owners in the sandbox's own ids), under
    /// `lower` (then only the mount points every root needs), mounted idmapped at
    /// `<layer_mounts>/<index>`.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    #[serde(default)]
    pub layer_mounts: Option<PathBuf>,
}

/// A snapshot's layer (owners in the sandbox's own ids) and its mount point.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotLayer {
    pub layer: PathBuf,
    pub mount_point: PathBuf,
}

/// The first message on stdin: the cgroups to join (their `cgroup.procs` files), and the
/// sandbox's disk to mount and lay out, which need nothing of the create request.
///
/// Joining is its own step because on cgroup v1 the first move of a process into a cgroup after
/// a quiet spell waits for an RCU grace period (10–20 ms here), and mounting the disk costs a
/// few milliseconds more: the daemon keeps helpers that have done both ready (see `helper.rs`),
/// so a create waits for neither.
#[derive(Debug, Serialize, Deserialize)]
pub struct Join {
    pub cgroup_procs: Vec<PathBuf>,
    /// The sandbox's disk (a loop device) and where to mount it.
    pub disk_device: PathBuf,
    pub disk_mount: PathBuf,
    /// Host uid/gid that sandbox uid/gid 0 maps to (owner of the writable layer's directories).
    pub id_base: u32,
}

/// What stage 1 prints on stdout: `joined` after the first message, then `ready` or `failed`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Joined,
    Ready { pid: i32, start_time: u64 },
    Failed { message: String },
}

/// Runs stage 1 and exits when the binary was started as stage 1; returns otherwise.
/// Call it first in `main`, before any thread exists.
pub fn run_if_requested() {
    let helper = std::env::args_os().nth(1);
    if helper.as_deref() == Some(OsStr::new(STAGE1_ARG)) {
        std::process::exit(main());
    }
    if helper.as_deref() == Some(OsStr::new(crate::capture::CAPTURE_ARG)) {
        std::process::exit(crate::capture::main());
    }
    if helper.as_deref() == Some(OsStr::new(sbx_backend::agent::AGENT_ARG)) {
        // The file agent, in a sandbox of another backend: its request is the next argument.
        let request = std::env::args().nth(2).unwrap_or_default();
        crate::child::files::run_agent(&request);
    }
}

fn main() -> i32 {
    // Nothing inherited past stdio may reach a sandbox.
    // SAFETY: close_range only closes descriptors; this process owns no Rust object over fd ≥ 3.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0) };
    let mut input = std::io::BufReader::new(std::io::stdin().lock());
    let outcome = match phases(&mut input) {
        Ok((pid, start_time)) => Outcome::Ready { pid, start_time },
        Err(message) => Outcome::Failed { message },
    };
    let code = i32::from(matches!(outcome, Outcome::Failed { .. }));
    say(&outcome);
    code
}

fn phases(input: &mut impl std::io::BufRead) -> Result<(i32, u64), String> {
    let join: Join = next_message(input)?;
    let me = std::process::id().to_string();
    for procs in &join.cgroup_procs {
        fs::write(procs, &me)
            .map_err(|e| format!("cannot join cgroup {}: {e}", procs.display()))?;
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(mount): {e}"))?;
    mount_(None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    prepare_disk(&join)?;
    say(&Outcome::Joined);
    let request: Request = next_message(input)?;
    build(&join, &request)
}

/// Mounts the sandbox's disk in this process's private mount namespace (it dies with the
/// namespace if no sandbox is ever built) and lays out the writable layer on it.
fn prepare_disk(join: &Join) -> Result<(), String> {
    let disk = &join.disk_mount;
    mount_(
        Some(join.disk_device.as_path()),
        disk,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    )?;
    fs::create_dir(disk.join("work"))
        .map_err(|e| format!("cannot create the overlay workdir: {e}"))?;
    build_upper(&disk.join("upper"), join.id_base)
        .map_err(|e| format!("cannot build the writable layer: {e}"))
}

/// Reads one JSON line; end of input means the daemon no longer wants this sandbox.
fn next_message<T: for<'de> Deserialize<'de>>(
    input: &mut impl std::io::BufRead,
) -> Result<T, String> {
    let mut line = String::new();
    match input.read_line(&mut line) {
        Ok(0) => Err("the daemon closed the request stream".into()),
        Ok(_) => serde_json::from_str(&line).map_err(|e| format!("malformed request: {e}")),
        Err(e) => Err(format!("cannot read the request: {e}")),
    }
}

fn say(outcome: &Outcome) {
    let line = serde_json::to_string(outcome).unwrap_or_else(|_| "{}".into());
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn build(join: &Join, request: &Request) -> Result<(i32, u64), String> {
    lower_rlimits()?;
    write_identity(
        &join.disk_mount.join("upper"),
        join.id_base,
        &request.hostname,
    )
    .map_err(|e| format!("cannot write the sandbox's host name: {e}"))?;
    build_root(join, request)?;

    let listener = control_socket(&request.socket)?;
    let dev_null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let filters = seccomp::Filters::build()?;
    let (go_read, go_write) = pipe()?;
    let (ready_read, ready_write) = pipe()?;
    nix::unistd::chdir(&request.rootfs).map_err(|e| format!("chdir to the new root: {e}"))?;

    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    // The new user namespace belongs to whoever's effective ids clone it: make that the
    // sandbox's own root (`id_base`), not host root. The kernel charges per-user counters of
    // everything inside a user namespace to its owner in the parent namespace too (inotify
    // instances and watches, POSIX message queue bytes, pending signals: ucount(7) limits in
    // /proc/sys/user and the rlimits kept in ucounts): owned by host root, one sandbox could
    // take every inotify instance and message-queue byte host root may have (escape.rs,
    // `per_user_kernel_counters_are_charged_to_the_sandbox`). Effective ids only: real and
    // saved stay 0, so stage 1 gets root back right after.
    let owner = join.id_base;
    nix::unistd::setegid(Gid::from_raw(owner)).map_err(|e| format!("setegid: {e}"))?;
    nix::unistd::seteuid(Uid::from_raw(owner)).map_err(|e| format!("seteuid: {e}"))?;
    // SAFETY: stage 1 is single-threaded (a fresh process that started no thread), so the child
    // gets a consistent copy of the address space, exactly as with fork(2): a NULL stack makes
    // the kernel duplicate the current one copy-on-write, and SIGCHLD makes it a normal child.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    if pid < 0 {
        return Err(format!("clone: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(go_write);
        drop(ready_read);
        let context = SandboxContext {
            hostname: &request.hostname,
            rootfs: &request.rootfs,
            socket_buffer_bytes: request.socket_buffer_bytes,
            dev_null,
            go: go_read,
            filters,
        };
        become_init(context, listener, ready_write);
    }

    let pid = pid as i32;
    let root_again = nix::unistd::seteuid(Uid::from_raw(0))
        .and_then(|()| nix::unistd::setegid(Gid::from_raw(0)))
        .map_err(|e| format!("cannot become root again after clone: {e}"));
    if let Err(message) = root_again {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        return Err(message);
    }
    drop(go_read);
    drop(ready_write);
    drop(listener);
    let result = finish_parent(pid, join.id_base, go_write, ready_read);
    if result.is_err() {
        let child = Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
    }
    result.map(|start_time| (pid, start_time))
}

/// Lowers the limits every sandbox process inherits; raising them again needs
/// CAP_SYS_RESOURCE on the host. Lowered only: the daemon itself may run without it.
fn lower_rlimits() -> Result<(), String> {
    let (_, nofile_hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("getrlimit: {e}"))?;
    let nofile = nofile_hard.min(65536);
    setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile).map_err(|e| format!("setrlimit: {e}"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("setrlimit: {e}"))?;
    Ok(())
}

/// The clone's side: set the sandbox up, tell stage 1 how it went (`0`, or `1` and why), and
/// become its init. Never returns.
fn become_init(context: SandboxContext<'_>, listener: OwnedFd, ready: OwnedFd) -> ! {
    let mut ready = fs::File::from(ready);
    match sandbox_setup(context) {
        Ok(signals) => {
            if ready.write_all(&[0]).is_ok() {
                drop(ready);
                crate::init::run(listener, signals);
            }
        }
        Err(message) => {
            let _ = ready.write_all(&[1]);
            let _ = ready.write_all(message.as_bytes());
        }
    }
    // SAFETY: leaving without running stage 1's exit handlers in this copy.
    unsafe { libc::_exit(1) }
}

fn finish_parent(pid: i32, id_base: u32, go: OwnedFd, ready: OwnedFd) -> Result<u64, String> {
    let map = format!("0 {id_base} {ID_RANGE}\n");
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, &map).map_err(|e| format!("cannot write {file}: {e}"))?;
    }
    fs::File::from(go)
        .write_all(&[1])
        .map_err(|e| format!("cannot release init: {e}"))?;
    let mut report = Vec::new();
    let mut ready = fs::File::from(ready);
    let mut first = [0u8; 1];
    match ready.read(&mut first) {
        Ok(1) if first[0] == 0 => {}
        Ok(1) => {
            let _ = ready.read_to_end(&mut report);
            return Err(String::from_utf8_lossy(&report).into_owned());
        }
        _ => return Err("init exited during setup".into()),
    }
    start_time(pid).ok_or_else(|| "init vanished after setup".into())
}

pub use sbx_backend::process::start_time;

fn build_root(join: &Join, request: &Request) -> Result<(), String> {
    let root = &request.rootfs;
    let disk = &join.disk_mount;
    let upper = disk.join("upper");
    let work = disk.join("work");
    let userns = if request.snapshot.is_some() || !request.layers.is_empty() {
        Some(mapping_namespace(join.id_base)?)
    } else {
        None
    };
    // Top first. For an image: the mount points every root needs (so that no layer can put
    // a symlink where a file system is mounted), the snapshot, the image's layers. For a
    // directory template: the snapshot, the template.
    let image = !request.layers.is_empty();
    let mut lowers = Vec::new();
    if image {
        lowers.push(request.lower.display().to_string());
    }
    if let (Some(snapshot), Some(userns)) = (&request.snapshot, &userns) {
        mount_idmapped(&snapshot.layer, &snapshot.mount_point, userns)?;
        lowers.push(snapshot.mount_point.display().to_string());
    }
    if let (Some(mounts), Some(userns), true) = (&request.layer_mounts, &userns, image) {
        for (index, layer) in request.layers.iter().enumerate() {
            mount_idmapped(layer, &mounts.join(index.to_string()), userns)?;
        }
        // Relative to the mount points' directory: a long image still fits one page.
        std::env::set_current_dir(mounts)
            .map_err(|e| format!("cannot enter {}: {e}", mounts.display()))?;
        lowers.extend((0..request.layers.len()).rev().map(|i| i.to_string()));
    }
    if !image {
        lowers.push(request.lower.display().to_string());
    }
    let lower = lowers.join(":");
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={},volatile,redirect_dir=off,metacopy=off",
        upper.display(),
        work.display()
    );
    // `volatile`: the upper layer dies with the sandbox, so skip the syncs that would make
    // unmounting (hence destroy) wait for the disk.
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_(
        Some(Path::new("overlay")),
        root,
        Some("overlay"),
        nosuid_nodev,
        Some(&options),
    )?;
    let _ = std::env::set_current_dir("/");
    for bind in &request.binds {
        let target = root.join(&bind.target);
        mount_(
            Some(bind.source.as_path()),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
        // A bind ignores MS_RDONLY; it takes effect on remount. Inside the sandbox's user
        // namespace these flags are locked: nothing there can make the mount writable again.
        let readonly = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_nodev;
        mount_(None, &target, None, readonly, None)?;
    }
    // Owned by the sandbox's root (the first id of its range), not by unmapped host root.
    let owner = format!("uid={0},gid={0}", join.id_base);
    let tmp = format!("mode=1777,size={},{owner}", request.tmp_bytes);
    mount_(
        Some(Path::new("tmpfs")),
        &root.join("tmp"),
        Some("tmpfs"),
        nosuid_nodev,
        Some(&tmp),
    )?;
    build_dev(
        &root.join("dev"),
        &format!("size={},{owner}", request.shm_bytes),
    )
}

/// Mounts `layer` read-only at `target`, its owners (the sandbox's own ids, 0–65535) seen
/// as the sandbox's host range (see [`sbx_backend::idmap::mount_idmapped`]); the idmapping is
/// taken from `userns`, made for the purpose by a short-lived child ([`mapping_namespace`]).
fn mount_idmapped(layer: &Path, target: &Path, userns: &OwnedFd) -> Result<(), String> {
    sbx_backend::idmap::mount_idmapped(layer, target, userns).map_err(|e| e.to_string())
}

/// A user namespace mapping ids 0–65535 to the host's from `base`, held by the descriptor
/// returned (its only process is gone by then).
fn mapping_namespace(base: u32) -> Result<OwnedFd, String> {
    let (ready_read, ready_write) = pipe()?;
    let (go_read, go_write) = pipe()?;
    // SAFETY: stage 1 is single-threaded; the child only calls async-signal-safe functions
    // (unshare, write, read, _exit).
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            // Only the parent's end of "go" may stay open, so that its closing is EOF here.
            drop(go_write);
            drop(ready_read);
            let code = if nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok() {
                let _ = nix::unistd::write(&ready_write, &[0]);
                let mut byte = [0u8];
                let _ = nix::unistd::read(&go_read, &mut byte);
                0
            } else {
                1
            };
            // SAFETY: leaves the child without running anything of the parent's.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_write);
            drop(go_read);
            let mut byte = [0u8];
            let made = nix::unistd::read(&ready_read, &mut byte) == Ok(1);
            let opened = if made {
                let map = format!("0 {base} {ID_RANGE}");
                fs::write(format!("/proc/{child}/uid_map"), &map)
                    .and_then(|()| fs::write(format!("/proc/{child}/gid_map"), &map))
                    .and_then(|()| fs::File::open(format!("/proc/{child}/ns/user")))
                    .map_err(|e| format!("cannot map the snapshot's user namespace: {e}"))
            } else {
                Err("cannot make a user namespace for the snapshot".to_string())
            };
            drop(go_write);
            let _ = nix::sys::wait::waitpid(child, None);
            opened.map(OwnedFd::from)
        }
    }
}

/// The writable layer starts with the directories the sandbox's users own: `/` and the
/// writable system directories for root, `/home/user` (0700) for uid 1000. Overlay shows an
/// upper directory's owner and mode for the merged directory.
fn build_upper(upper: &Path, base: u32) -> std::io::Result<()> {
    use std::os::unix::fs::chown;
    let root = Some(base);
    let user = Some(base + 1000);
    let dirs: [(&str, u32, Option<u32>); 11] = [
        ("", 0o755, root),
        ("etc", 0o755, root),
        ("home", 0o755, root),
        ("home/user", 0o700, user),
        ("root", 0o700, root),
        ("run", 0o755, root),
        ("opt", 0o755, root),
        ("srv", 0o755, root),
        ("mnt", 0o755, root),
        ("var", 0o755, root),
        ("var/lib", 0o755, root),
    ];
    for (path, mode, owner) in dirs {
        let dir = upper.join(path);
        fs::create_dir(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
        chown(&dir, owner, owner)?;
    }
    Ok(())
}

/// The sandbox's own `/etc/hosts` and `/etc/hostname`, written when its name is known (a
/// pooled helper lays out the layer before).
fn write_identity(upper: &Path, base: u32, hostname: &str) -> std::io::Result<()> {
    use std::os::unix::fs::chown;
    let root = Some(base);
    let hosts = format!(
        "127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback {hostname}\n"
    );
    for (name, content) in [
        ("etc/hosts", hosts),
        ("etc/hostname", format!("{hostname}\n")),
    ] {
        let file = upper.join(name);
        fs::write(&file, content)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644))?;
        chown(&file, root, root)?;
    }
    Ok(())
}

/// A minimal `/dev`: host device nodes bound onto a small tmpfs, a mount point for a private
/// devpts, a size-limited `/dev/shm`. The tmpfs ends read-only.
fn build_dev(dev: &Path, shm_options: &str) -> Result<(), String> {
    let dev_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let dev_options = "mode=755,size=64k";
    mount_(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        dev_flags,
        Some(dev_options),
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        fs::File::create(&target)
            .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        mount_(
            Some(Path::new("/dev").join(node).as_path()),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    for dir in ["pts", "shm"] {
        fs::create_dir(dev.join(dir)).map_err(|e| format!("cannot create /dev/{dir}: {e}"))?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).map_err(|e| format!("cannot link /dev/{link}: {e}"))?;
    }
    let shm = format!("mode=1777,{shm_options}");
    let shm_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_(
        Some(Path::new("tmpfs")),
        &dev.join("shm"),
        Some("tmpfs"),
        shm_flags,
        Some(&shm),
    )?;
    let readonly = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | dev_flags;
    mount_(None, dev, None, readonly, Some(dev_options))
}

fn control_socket(path: &Path) -> Result<OwnedFd, String> {
    let _ = fs::remove_file(path);
    let socket = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let address = UnixAddr::new(path).map_err(|e| format!("socket path: {e}"))?;
    bind(socket.as_raw_fd(), &address).map_err(|e| format!("cannot bind control socket: {e}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod control socket: {e}"))?;
    listen(&socket, Backlog::new(128).map_err(|e| e.to_string())?)
        .map_err(|e| format!("listen: {e}"))?;
    Ok(socket)
}

struct SandboxContext<'a> {
    hostname: &'a str,
    rootfs: &'a Path,
    socket_buffer_bytes: u64,
    dev_null: OwnedFd,
    go: OwnedFd,
    filters: seccomp::Filters,
}

/// OCI default masked paths: hidden behind /dev/null (files) or an empty read-only tmpfs (dirs).
const PROC_MASKED: [&str; 9] = [
    "acpi",
    "asound",
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "scsi",
];
/// OCI default read-only paths.
const PROC_READONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];
/// Pseudo-terminals one sandbox may have open at once (devpts `max`).
const PTY_MAX: u32 = 64;

/// Runs in the cloned child, in the host's tree until `pivot_root`.
/// Returns the signalfd init will serve with.
fn sandbox_setup(context: SandboxContext<'_>) -> Result<SignalFd, String> {
    // Stage 1's stdout must reach EOF when stage 1 exits: init keeps none of its stdio.
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(context.dev_null.as_raw_fd(), target) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    drop(context.dev_null);
    let mut go = [0u8; 1];
    match fs::File::from(context.go).read(&mut go) {
        Ok(1) => {}
        _ => return Err("stage 1 ended before releasing init".into()),
    }

    enter_unlocked_root(context.rootfs)?;
    nix::unistd::sethostname(context.hostname).map_err(|e| format!("sethostname: {e}"))?;
    loopback_up()?;
    mount_proc(context.socket_buffer_bytes)?;
    mount_devpts()?;
    switch_root()?;
    become_root_of_the_sandbox()?;
    let signals = child_signals()?;
    context.filters.install()?;
    Ok(signals)
}

/// Enters an unlocked bind of the sandbox's root (stage 1 left the process in `root`).
fn enter_unlocked_root(root: &Path) -> Result<(), String> {
    // Copies of mounts in a namespace of a less privileged user namespace are locked, and
    // pivot_root refuses a locked new root (EINVAL): stack an unlocked bind of the root on
    // itself and enter it. The mounts under it stay locked, which is what keeps them in place.
    // This process's host ids are the sandbox's (see `build`), which may not search the data
    // directory: it works from its working directory (the root, entered by stage 1) and the
    // root's parent (`<data>/sandboxes/<id>`, which only others' search bit opens to it).
    let root_name = root
        .file_name()
        .ok_or("the root's path has no last component")?;
    mount_(
        Some(Path::new(".")),
        ".",
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    // `.` stays on the mount it names; a lookup of the root's name from its parent ends on top
    // of the stack, on the new bind.
    nix::unistd::chdir("..").map_err(|e| format!("chdir to the root's parent: {e}"))?;
    nix::unistd::chdir(root_name).map_err(|e| format!("chdir to the new root: {e}"))?;

    Ok(())
}

/// `/proc` of the sandbox's pid namespace, with the host's secrets masked and its knobs
/// read-only; this network namespace's socket buffers capped first.
fn mount_proc(socket_buffer_bytes: u64) -> Result<(), String> {
    let proc_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_(
        Some(Path::new("proc")),
        "proc",
        Some("proc"),
        proc_flags,
        None,
    )?;
    for name in PROC_MASKED {
        let path = Path::new("proc").join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let ro = MsFlags::MS_RDONLY | proc_flags;
                mount_(
                    Some(Path::new("tmpfs")),
                    &path,
                    Some("tmpfs"),
                    ro,
                    Some("size=4k"),
                )?;
            }
            Ok(_) => mount_(
                Some(Path::new("dev/null")),
                &path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
            Err(_) => {}
        }
    }
    // Per network namespace, before /proc/sys turns read-only: what one socket may buffer.
    // The host's maxima (32 MiB here) let a sandbox park far more in loopback connections
    // than its memory limit; the cgroup's socket accounting bounds the total (cgroup.rs).
    let max = socket_buffer_bytes.max(256 * 1024);
    for (sysctl, default) in [("tcp_rmem", 131072), ("tcp_wmem", 16384)] {
        let path = Path::new("proc/sys/net/ipv4").join(sysctl);
        fs::write(&path, format!("4096 {default} {max}"))
            .map_err(|e| format!("cannot set net.ipv4.{sysctl}: {e}"))?;
    }
    for name in PROC_READONLY {
        let path = Path::new("proc").join(name);
        if path.exists() {
            mount_(
                Some(path.as_path()),
                &path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | proc_flags;
            mount_(None, &path, None, ro, None)?;
        }
    }
    Ok(())
}

/// A private devpts instance with a cap of its own.
fn mount_devpts() -> Result<(), String> {
    // `max`: the kernel has one pool of pseudo-terminals for every devpts instance but the
    // host's (`kernel.pty.max` less `kernel.pty.reserve`: 3072 by default); without a cap per
    // instance one sandbox could open them all and leave every other sandbox without a
    // terminal (escape.rs, `one_sandbox_cannot_take_every_pseudo_terminal`).
    let pts_options = format!("newinstance,ptmxmode=0666,mode=0620,gid=5,max={PTY_MAX}");
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_(
        Some(Path::new("devpts")),
        "dev/pts",
        Some("devpts"),
        pts_flags,
        Some(&pts_options),
    )?;

    Ok(())
}

/// `pivot_root` into the prepared root, the host's root detached, and the standard
/// descriptors on the sandbox's own `/dev/null`.
fn switch_root() -> Result<(), String> {
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    // The old root is now stacked on the new one; detach it and everything under it.
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("cannot detach the host root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;

    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("cannot open the sandbox's /dev/null: {e}"))?;
    for target in 0..=2 {
        // SAFETY: as above.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    drop(null);

    Ok(())
}

/// Root of the sandbox's user namespace, with root's capabilities only, non-dumpable and
/// without new privileges.
fn become_root_of_the_sandbox() -> Result<(), String> {
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(|e| format!("setresuid: {e}"))?;

    let name = CString::new("sbx-init").expect("no NUL in a literal");
    nix::sys::prctl::set_name(&name).map_err(|e| format!("prctl(name): {e}"))?;
    // Non-dumpable: no process of the sandbox may ptrace init or open its /proc/1/{mem,exe,…}
    // (runc CVE-2019-5736 overwrote the host binary through /proc/self/exe).
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(dumpable): {e}"))?;
    crate::caps::limit_to_root_set()?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("prctl(no_new_privs): {e}"))?;

    Ok(())
}

/// SIGCHLD through a signalfd (init's poll loop reaps), SIGPIPE ignored.
fn child_signals() -> Result<SignalFd, String> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN runs no code of ours in signal context.
    unsafe { sigaction(Signal::SIGPIPE, &ignore) }.map_err(|e| format!("sigaction: {e}"))?;

    Ok(signals)
}

/// Brings up `lo` in the new network namespace (the only interface it has).
fn loopback_up() -> Result<(), String> {
    let socket = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass, which outlives the
    // calls; the flags member of the union is the one these requests use.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(format!(
                "SIOCGIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(format!(
                "SIOCSIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn mount_<T: AsRef<Path> + ?Sized>(
    source: Option<&Path>,
    target: &T,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    let target = target.as_ref();
    mount(source, target, fstype, flags, data).map_err(|e| {
        format!(
            "cannot mount {} on {}: {e}",
            fstype.unwrap_or("bind"),
            target.display()
        )
    })
}
