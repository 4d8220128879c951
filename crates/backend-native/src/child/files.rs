//! What a file child of init does: one operation on the sandbox's filesystem, inside the
//! sandbox's namespaces (its root is the sandbox's root: no path, `..` or symlink can name
//! anything outside it) and as the requested user (the sandbox's permissions apply).
//!
//! One thing is visible to this child that no sandbox process sees: its own `/proc/self/exe`
//! (and `map_files`), since it is a fork of init, which runs the daemon's binary. So every
//! file it opens is checked to live on a mount of the sandbox's own mount namespace (by the
//! opened descriptor's `mnt_id`), and symlink targets under `/proc` are not reported.
//!
//! Reads and writes refuse anything but regular files (a FIFO would block, a device could
//! stream forever); they open with `O_NONBLOCK | O_NOCTTY` and check the type on the open
//! descriptor, so nothing is swapped in between. A write goes to a new hidden file beside the
//! target (reported back); the daemon renames it into place only once the upload is whole.
//! The outcome goes to the result pipe as one JSON [`FileOutcome`] (then, for a read, the
//! bytes to the data pipe); the exit code is 0.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::wire::{FileEntry, FileOp, FileOutcome, FileRequest};

/// Most entries a listing reports, and most bytes of paths and targets in them.
pub const MAX_ENTRIES: usize = 10_000;
pub const MAX_LISTING_BYTES: usize = 2 << 20;
/// `statfs` type of procfs.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const CHUNK: usize = 256 * 1024;

/// Set in the file agent (`run_agent`): this process is a command of the sandbox, started by
/// its runtime from a binary bound into it, so nothing it can open lies outside the sandbox's
/// mounts, and it already runs as the requested user.
static AGENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn is_agent() -> bool {
    AGENT.load(std::sync::atomic::Ordering::Relaxed)
}

/// The file agent of a sandbox run by another backend (`sbx __file-agent REQUEST`, see
/// `sbx_backend::agent::exec`): the report, then any bytes, on stdout; an upload on stdin.
/// Exits 0 when the operation succeeded; never returns.
pub fn run_agent(request: &str) -> ! {
    use std::os::fd::AsFd;
    AGENT.store(true, std::sync::atomic::Ordering::Relaxed);
    let request: FileRequest = match serde_json::from_str(request) {
        Ok(request) => request,
        Err(e) => {
            let outcome = error("invalid", format!("malformed file request: {e}"));
            let _ = report(
                &mut fs::File::from(dup(std::io::stdout().as_fd())),
                &outcome,
            );
            // SAFETY: _exit ends this single-threaded process at once.
            unsafe { libc::_exit(1) }
        }
    };
    if request.version != sbx_backend::agent::VERSION {
        let outcome = error(
            "invalid",
            format!("file agent protocol {} is not supported", request.version),
        );
        let _ = report(
            &mut fs::File::from(dup(std::io::stdout().as_fd())),
            &outcome,
        );
        // SAFETY: _exit ends this single-threaded process at once.
        unsafe { libc::_exit(1) }
    }
    let result = dup(std::io::stdout().as_fd());
    let data = match request.action {
        FileOp::Write { .. } | FileOp::Extract { .. } => Some(dup(std::io::stdin().as_fd())),
        FileOp::Read { .. } | FileOp::Archive { .. } | FileOp::Watch { .. } => {
            Some(dup(std::io::stdout().as_fd()))
        }
        _ => None,
    };
    // Only the copies stay open: closing them is the end of those streams.
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let fds = [Some(result), data].into_iter().flatten().collect();
    run(&request, fds)
}

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> OwnedFd {
    match fd.try_clone_to_owned() {
        Ok(fd) => fd,
        // SAFETY: _exit ends this single-threaded process at once.
        Err(_) => unsafe { libc::_exit(1) },
    }
}

/// Does the operation and exits; never returns.
pub fn run(request: &FileRequest, fds: Vec<OwnedFd>) -> ! {
    let fds = keep_only(fds);
    let mut fds = fds.into_iter();
    let result = fds.next();
    let data = fds.next();
    let code = match result {
        Some(result) => {
            let outcome = perform(request, result, data);
            i32::from(!outcome)
        }
        None => 1,
    };
    // SAFETY: _exit skips atexit handlers and stdio flushing, which belong to init's image.
    unsafe { libc::_exit(code) }
}

/// True when the operation succeeded.
/// Closes every inherited descriptor but `fds` (init's sockets and signalfd are none of this
/// child's business), which it moves to 3, 4, ….
fn keep_only(fds: Vec<OwnedFd>) -> Vec<OwnedFd> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let raw: Vec<i32> = fds.into_iter().map(IntoRawFd::into_raw_fd).collect();
    // Out of the way first (above any target), then down to 3, 4, ….
    let high: Vec<i32> = raw
        .iter()
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on descriptors this process owns.
        .map(|fd| unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100) })
        .collect();
    let mut kept = Vec::new();
    for (i, fd) in high.iter().enumerate() {
        let target = 3 + i as i32;
        // SAFETY: dup3 onto a small number this child is about to own; whatever was there is
        // closed below anyway.
        if *fd >= 0 && unsafe { libc::dup3(*fd, target, libc::O_CLOEXEC) } == target {
            // SAFETY: dup3 just made `target` ours.
            kept.push(unsafe { OwnedFd::from_raw_fd(target) });
        }
    }
    // SAFETY: closes descriptors only; none of them is used by Rust code after this.
    unsafe { libc::syscall(libc::SYS_close_range, 3 + kept.len() as u32, u32::MAX, 0u32) };
    kept
}

fn perform(request: &FileRequest, result: OwnedFd, data: Option<OwnedFd>) -> bool {
    let mut result = fs::File::from(result);
    let already = is_agent()
        && nix::unistd::getuid().as_raw() == request.uid
        && nix::unistd::getgid().as_raw() == request.gid;
    if !already {
        if let Err(message) = super::become_user(request.uid, request.gid) {
            return report(&mut result, &error("denied", message));
        }
    }
    // No other process of the sandbox may ptrace this one or read its memory.
    let _ = nix::sys::prctl::set_dumpable(false);
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o022) };
    let home = Path::new(&request.cwd);
    if std::env::set_current_dir(home).is_err() {
        let _ = std::env::set_current_dir("/");
    }
    let absolute = |path: &str| absolute(home, path);
    let outcome = match &request.action {
        FileOp::Stat { path, follow } => {
            valid(path).and_then(|()| stat_checked(&absolute(path), *follow))
        }
        FileOp::List { path, depth } => valid(path).and_then(|()| list(&absolute(path), *depth)),
        FileOp::MakeDir { path } => valid(path).and_then(|()| make_dir(&absolute(path))),
        FileOp::Remove { path, recursive } => {
            valid(path).and_then(|()| remove(&absolute(path), *recursive))
        }
        FileOp::Rename { from, to } => valid(from)
            .and_then(|()| valid(to))
            .and_then(|()| rename(&absolute(from), &absolute(to))),
        FileOp::Read {
            path,
            offset,
            length,
        } => {
            let Some(data) = data else {
                return report(&mut result, &error("invalid", "no data pipe".into()));
            };
            return match valid(path).and_then(|()| open_for_read(&absolute(path), *offset)) {
                Err(outcome) => {
                    report(&mut result, &outcome);
                    false
                }
                Ok((file, entry)) => {
                    // Never more than the size reported (what a client was told to expect),
                    // whatever the file does meanwhile.
                    let size = entry.size.saturating_sub(*offset);
                    let length = length.map_or(size, |l| l.min(size));
                    let told = report(&mut result, &ok(vec![entry], false));
                    // The daemon reads the outcome to its end before the bytes.
                    drop(result);
                    told && send(file, fs::File::from(data), Some(length))
                }
            };
        }
        FileOp::Archive { path } => {
            let Some(data) = data else {
                return report(&mut result, &error("invalid", "no data pipe".into()));
            };
            let src = absolute(path);
            return match valid(path).and_then(|()| super::archive::open_source(&src)) {
                Err(outcome) => {
                    report(&mut result, &outcome);
                    false
                }
                Ok((opened, outcome)) => {
                    let told = report(&mut result, &outcome);
                    drop(result);
                    told && super::archive::archive(&src, opened, fs::File::from(data))
                }
            };
        }
        FileOp::Watch { path, recursive } => {
            let Some(data) = data else {
                return report(&mut result, &error("invalid", "no data pipe".into()));
            };
            let dir = absolute(path);
            return match valid(path).and_then(|()| watched(&dir)) {
                Err(outcome) => {
                    report(&mut result, &outcome);
                    false
                }
                Ok(outcome) => {
                    let told = report(&mut result, &outcome);
                    drop(result);
                    told && super::watch::watch(&dir, *recursive, fs::File::from(data))
                }
            };
        }
        FileOp::Extract { path } => {
            let Some(data) = data else {
                return report(&mut result, &error("invalid", "no data pipe".into()));
            };
            valid(path)
                .and_then(|()| super::archive::extract(&absolute(path), fs::File::from(data)))
        }
        FileOp::Write { path, mode } => {
            let Some(data) = data else {
                return report(&mut result, &error("invalid", "no data pipe".into()));
            };
            valid(path).and_then(|()| write_new(&absolute(path), *mode, fs::File::from(data)))
        }
    };
    match outcome {
        Ok(outcome) | Err(outcome) => {
            let succeeded = matches!(outcome, FileOutcome::Ok { .. });
            report(&mut result, &outcome) && succeeded
        }
    }
}

/// Writes the report: one line of JSON (JSON text has no raw newline), which the daemon reads
/// to the newline (the agent's stdout carries bytes after it) or to the pipe's end.
fn report(result: &mut fs::File, outcome: &FileOutcome) -> bool {
    let mut text = serde_json::to_vec(outcome).unwrap_or_default();
    text.push(b'\n');
    result.write_all(&text).is_ok()
}

pub(super) fn ok(entries: Vec<FileEntry>, truncated: bool) -> FileOutcome {
    FileOutcome::Ok {
        entries,
        truncated,
        count: 0,
    }
}

pub(super) fn ok_counted(entries: Vec<FileEntry>, count: u64) -> FileOutcome {
    FileOutcome::Ok {
        entries,
        truncated: false,
        count,
    }
}

pub(super) fn error(kind: &str, message: String) -> FileOutcome {
    FileOutcome::Error {
        kind: kind.into(),
        message,
    }
}

/// An I/O error on `path`, as the caller should hear it.
pub(super) fn failed(path: &Path, e: &std::io::Error) -> FileOutcome {
    let kind = match e.raw_os_error() {
        Some(libc::ENOENT) => "not_found",
        Some(libc::ENOTDIR | libc::EISDIR | libc::EEXIST | libc::ENOTEMPTY | libc::ELOOP) => {
            "conflict"
        }
        Some(libc::EXDEV | libc::EBUSY | libc::ETXTBSY | libc::ENXIO) => "conflict",
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => "denied",
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => "no_space",
        Some(libc::ENAMETOOLONG | libc::EINVAL) => "invalid",
        _ => "io",
    };
    let reason = match e.raw_os_error() {
        Some(libc::EXDEV) => "it cannot be moved to another file system".to_owned(),
        Some(libc::ENOTEMPTY) => "the directory is not empty (remove it recursively)".to_owned(),
        _ => std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
            .to_string()
            .split(" (os error")
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    error(kind, format!("{}: {reason}", path.display()))
}

fn valid(path: &str) -> Result<(), FileOutcome> {
    if path.is_empty() || path.contains('\0') || path.len() > 4096 {
        return Err(error(
            "invalid",
            "a path must be 1-4096 bytes without NUL".into(),
        ));
    }
    Ok(())
}

/// The path from the root, `.` components dropped (`..` is left to the kernel: through a
/// symlink it means the symlink's target's parent).
fn absolute(home: &Path, path: &str) -> PathBuf {
    let joined = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        home.join(path)
    };
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

pub(super) fn entry(path: &Path, meta: &fs::Metadata) -> FileEntry {
    let kind = if meta.file_type().is_symlink() {
        "symlink"
    } else if meta.is_dir() {
        "directory"
    } else if meta.is_file() {
        "file"
    } else {
        "other"
    };
    // Under /proc a symlink may name what only this child sees (its own executable, on the
    // host): no target is reported there.
    let symlink_target = (meta.file_type().is_symlink() && !on_procfs(path))
        .then(|| fs::read_link(path).ok())
        .flatten()
        .map(|t| t.to_string_lossy().into_owned());
    FileEntry {
        path: path.to_string_lossy().into_owned(),
        kind: kind.into(),
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        modified_ms: meta
            .mtime()
            .saturating_mul(1000)
            .saturating_add(meta.mtime_nsec() / 1_000_000),
        symlink_target,
    }
}

/// Whether `path` (its parent directory, for a symlink) is on procfs.
fn on_procfs(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(Path::new("/"));
    nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type().0 == PROC_SUPER_MAGIC)
}

/// The mount ids of the sandbox's own mount namespace.
fn sandbox_mounts() -> Vec<u64> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

/// Refuses an opened file that lives outside the sandbox's mounts (what `/proc/self/exe` of
/// this child names: the daemon's binary, on the host).
pub(super) fn inside(path: &Path, file: &fs::File) -> Result<(), FileOutcome> {
    use std::os::fd::AsRawFd;
    if is_agent() {
        return Ok(());
    }
    let info =
        fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).unwrap_or_default();
    let mount: Option<u64> = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok());
    match mount {
        Some(id) if sandbox_mounts().contains(&id) => Ok(()),
        _ => Err(error(
            "not_found",
            format!("{}: No such file or directory", path.display()),
        )),
    }
}

/// `stat`, refusing (with `follow`) what resolves outside the sandbox's mounts.
fn stat_checked(path: &Path, follow: bool) -> Result<FileOutcome, FileOutcome> {
    if follow {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .map_err(|e| failed(path, &e))?;
        inside(path, &file)?;
    }
    stat(path, follow)
}

fn stat(path: &Path, follow: bool) -> Result<FileOutcome, FileOutcome> {
    let meta = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    }
    .map_err(|e| failed(path, &e))?;
    Ok(ok(vec![entry(path, &meta)], false))
}

fn list(path: &Path, depth: u32) -> Result<FileOutcome, FileOutcome> {
    let meta = fs::metadata(path).map_err(|e| failed(path, &e))?;
    if !meta.is_dir() {
        return Err(error(
            "conflict",
            format!("{}: not a directory", path.display()),
        ));
    }
    // The directory itself must be the sandbox's (not one only this child can reach).
    let opened = fs::File::open(path).map_err(|e| failed(path, &e))?;
    inside(path, &opened)?;
    let mut listing = Walk::default();
    listing
        .walk(path, depth.max(1))
        .map_err(|e| failed(path, &e))?;
    Ok(ok(listing.entries, listing.truncated))
}

#[derive(Default)]
struct Walk {
    entries: Vec<FileEntry>,
    bytes: usize,
    truncated: bool,
}

impl Walk {
    fn walk(&mut self, dir: &Path, depth: u32) -> std::io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            if self.entries.len() >= MAX_ENTRIES || self.bytes >= MAX_LISTING_BYTES {
                self.truncated = true;
                return Ok(());
            }
            let path = dir.join(&name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let entry = entry(&path, &meta);
            self.bytes += entry.path.len() + entry.symlink_target.as_ref().map_or(0, String::len);
            self.entries.push(entry);
            // Symlinks are listed, never followed.
            if depth > 1 && meta.is_dir() {
                // A directory the user may not read is listed, not entered.
                let _ = self.walk(&path, depth - 1);
            }
        }
        Ok(())
    }
}

/// A directory of the sandbox's own mounts, to watch.
fn watched(path: &Path) -> Result<FileOutcome, FileOutcome> {
    let opened = fs::File::open(path).map_err(|e| failed(path, &e))?;
    inside(path, &opened)?;
    let meta = opened.metadata().map_err(|e| failed(path, &e))?;
    if !meta.is_dir() {
        return Err(error(
            "conflict",
            format!("{}: not a directory", path.display()),
        ));
    }
    if on_procfs(&path.join("x")) {
        return Err(error(
            "conflict",
            format!("{}: /proc cannot be watched", path.display()),
        ));
    }
    Ok(ok(vec![entry(path, &meta)], false))
}

fn make_dir(path: &Path) -> Result<FileOutcome, FileOutcome> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| failed(path, &e))?;
    stat(path, false)
}

fn remove(path: &Path, recursive: bool) -> Result<FileOutcome, FileOutcome> {
    let meta = fs::symlink_metadata(path).map_err(|e| failed(path, &e))?;
    let removed = if meta.is_dir() {
        if recursive {
            // Does not follow symlinks inside (it opens each directory with O_NOFOLLOW).
            fs::remove_dir_all(path)
        } else {
            fs::remove_dir(path)
        }
    } else {
        fs::remove_file(path)
    };
    removed.map_err(|e| failed(path, &e))?;
    Ok(ok(Vec::new(), false))
}

fn rename(from: &Path, to: &Path) -> Result<FileOutcome, FileOutcome> {
    fs::rename(from, to).map_err(|e| failed(from, &e))?;
    stat(to, false)
}

/// Opens a regular file for reading at `offset`.
fn open_for_read(path: &Path, offset: u64) -> Result<(fs::File, FileEntry), FileOutcome> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| failed(path, &e))?;
    inside(path, &file)?;
    let meta = file.metadata().map_err(|e| failed(path, &e))?;
    regular(path, &meta)?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| failed(path, &e))?;
    Ok((file, entry(path, &meta)))
}

fn regular(path: &Path, meta: &fs::Metadata) -> Result<(), FileOutcome> {
    let what = if meta.is_dir() {
        "is a directory"
    } else if meta.file_type().is_fifo() {
        "is a FIFO"
    } else if meta.file_type().is_char_device() || meta.file_type().is_block_device() {
        "is a device"
    } else if meta.file_type().is_socket() {
        "is a socket"
    } else {
        return Ok(());
    };
    Err(error(
        "conflict",
        format!("{}: {what}, not a regular file", path.display()),
    ))
}

/// Copies `length` bytes (or to the end) of `file` into `data`.
fn send(file: fs::File, data: fs::File, length: Option<u64>) -> bool {
    // Either failure ends the read: the file's (the daemon sees the bytes cut short) or the
    // pipe's (the daemon stopped reading: its caller left).
    pass(&file, &data, length.unwrap_or(u64::MAX)).is_ok()
}

/// Which side of a [`pass`] failed.
enum Broken {
    From(std::io::Error),
    To(std::io::Error),
}

/// Moves up to `left` bytes from `from` to `to`, one of which is a pipe, until `from` ends:
/// inside the kernel with `splice` (no copy through this process), or through a buffer where
/// the file system cannot splice.
fn pass(from: &fs::File, to: &fs::File, mut left: u64) -> Result<(), Broken> {
    use nix::fcntl::{splice, SpliceFFlags};
    const MOST: u64 = 1 << 20;
    while left > 0 {
        let want = left.min(MOST) as usize;
        match splice(from, None, to, None, want, SpliceFFlags::SPLICE_F_MOVE) {
            Ok(0) => return Ok(()),
            Ok(moved) => left -= moved as u64,
            Err(nix::errno::Errno::EINTR) => {}
            // Not a file system splice works on: copy instead, from where this left off.
            Err(nix::errno::Errno::EINVAL) => return copy(from, to, left),
            // splice says not which side failed: a pipe end that is gone is the writer's
            // (nothing reads it), anything else is asked of the file.
            Err(e @ nix::errno::Errno::EPIPE) => return Err(Broken::To(e.into())),
            Err(e) => {
                let e = std::io::Error::from(e);
                return Err(if is_pipe(from) {
                    Broken::To(e)
                } else {
                    Broken::From(e)
                });
            }
        }
    }
    Ok(())
}

fn is_pipe(file: &fs::File) -> bool {
    file.metadata().is_ok_and(|m| m.file_type().is_fifo())
}

/// [`pass`] through a buffer.
fn copy(mut from: &fs::File, mut to: &fs::File, mut left: u64) -> Result<(), Broken> {
    let mut buffer = vec![0u8; CHUNK];
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = match from.read(&mut buffer[..want]) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Broken::From(e)),
        };
        to.write_all(&buffer[..read]).map_err(Broken::To)?;
        left -= read as u64;
    }
    Ok(())
}

/// Writes what comes on `data` to a new hidden file beside `path` (its parents made as
/// needed), with `mode`; reports that file, which the daemon renames into place once the
/// upload is whole (or removes).
fn write_new(path: &Path, mode: u32, data: fs::File) -> Result<FileOutcome, FileOutcome> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| error("invalid", format!("{}: not a file name", path.display())))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(|e| failed(parent, &e))?;
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".sbx-upload-{suffix}"));
    let temporary = parent.join(temporary);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o777)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&temporary)
        .map_err(|e| failed(path, &e))?;
    let written = (|| {
        inside(path, &file)?;
        // The mode asked for, whatever the umask; never set-id bits.
        file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| failed(path, &e))?;
        pass(&data, &file, u64::MAX).map_err(|broken| match broken {
            Broken::From(e) => failed(Path::new(OsStr::from_bytes(b"upload")), &e),
            Broken::To(e) => failed(path, &e),
        })?;
        let meta = file.metadata().map_err(|e| failed(path, &e))?;
        Ok(ok(vec![entry(&temporary, &meta)], false))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}
