//! What a file child of init does: one operation on the sandbox's filesystem, inside the
//! sandbox's namespaces (its root is the sandbox's root: no path, `..` or symlink can name
//! anything outside it) and as the requested user (the sandbox's permissions apply).
//!
//! Reads and writes refuse anything but regular files (a FIFO would block, a device could
//! stream forever); they open with `O_NONBLOCK | O_NOCTTY` and check the type on the open
//! descriptor, so nothing is swapped in between. The outcome goes to the result pipe as one
//! JSON [`FileOutcome`] (then, for a read, the bytes to the data pipe); the exit code is 0.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::wire::{FileEntry, FileOp, FileOutcome, FileRequest};

/// Most entries a listing reports.
pub const MAX_ENTRIES: usize = 10_000;
const CHUNK: usize = 256 * 1024;

/// Does the operation and exits; never returns.
pub fn run(request: &FileRequest, fds: Vec<OwnedFd>) -> ! {
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
fn perform(request: &FileRequest, result: OwnedFd, data: Option<OwnedFd>) -> bool {
    let mut result = fs::File::from(result);
    if let Err(message) = super::become_user(request.uid, request.gid) {
        return report(&mut result, &error("denied", message));
    }
    let home = Path::new(&request.cwd);
    if std::env::set_current_dir(home).is_err() {
        let _ = std::env::set_current_dir("/");
    }
    let absolute = |path: &str| absolute(home, path);
    let outcome = match &request.action {
        FileOp::Stat { path, follow } => valid(path).and_then(|()| stat(&absolute(path), *follow)),
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
                    let told = report(&mut result, &ok(vec![entry], false));
                    // The daemon reads the outcome to its end before the bytes.
                    drop(result);
                    told && send(file, fs::File::from(data), *length)
                }
            };
        }
        FileOp::Write { path, mode } => {
            let Some(data) = data else {
                return report(&mut result, &error("invalid", "no data pipe".into()));
            };
            valid(path).and_then(|()| write(&absolute(path), *mode, fs::File::from(data)))
        }
    };
    match outcome {
        Ok(outcome) | Err(outcome) => {
            let succeeded = matches!(outcome, FileOutcome::Ok { .. });
            report(&mut result, &outcome) && succeeded
        }
    }
}

fn report(result: &mut fs::File, outcome: &FileOutcome) -> bool {
    let text = serde_json::to_vec(outcome).unwrap_or_default();
    result.write_all(&text).is_ok()
}

fn ok(entries: Vec<FileEntry>, truncated: bool) -> FileOutcome {
    FileOutcome::Ok { entries, truncated }
}

fn error(kind: &str, message: String) -> FileOutcome {
    FileOutcome::Error {
        kind: kind.into(),
        message,
    }
}

/// An I/O error on `path`, as the caller should hear it.
fn failed(path: &Path, e: &std::io::Error) -> FileOutcome {
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

fn entry(path: &Path, meta: &fs::Metadata) -> FileEntry {
    let kind = if meta.file_type().is_symlink() {
        "symlink"
    } else if meta.is_dir() {
        "directory"
    } else if meta.is_file() {
        "file"
    } else {
        "other"
    };
    let symlink_target = meta
        .file_type()
        .is_symlink()
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
        modified_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
        symlink_target,
    }
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
    let mut entries = Vec::new();
    let mut truncated = false;
    walk(path, depth.max(1), &mut entries, &mut truncated).map_err(|e| failed(path, &e))?;
    Ok(ok(entries, truncated))
}

fn walk(
    dir: &Path,
    depth: u32,
    entries: &mut Vec<FileEntry>,
    truncated: &mut bool,
) -> std::io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        if entries.len() >= MAX_ENTRIES {
            *truncated = true;
            return Ok(());
        }
        let path = dir.join(&name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        entries.push(entry(&path, &meta));
        // Symlinks are listed, never followed.
        if depth > 1 && meta.is_dir() {
            // A directory the user may not read is listed, not entered.
            let _ = walk(&path, depth - 1, entries, truncated);
        }
    }
    Ok(())
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
fn send(mut file: fs::File, mut data: fs::File, length: Option<u64>) -> bool {
    let mut left = length.unwrap_or(u64::MAX);
    let mut buffer = vec![0u8; CHUNK];
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = match file.read(&mut buffer[..want]) {
            Ok(0) => return true,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        // The daemon stopped reading (its caller left): stop.
        if data.write_all(&buffer[..read]).is_err() {
            return false;
        }
        left -= read as u64;
    }
    true
}

/// Replaces the regular file at `path` (made, with missing parents, if absent) with what
/// comes on `data`, and gives it `mode`.
fn write(path: &Path, mode: u32, mut data: fs::File) -> Result<FileOutcome, FileOutcome> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| failed(parent, &e))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(mode & 0o7777)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| failed(path, &e))?;
    let meta = file.metadata().map_err(|e| failed(path, &e))?;
    regular(path, &meta)?;
    file.set_len(0).map_err(|e| failed(path, &e))?;
    // The mode asked for, whatever the umask or the file's mode before; never set-id bits.
    file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| failed(path, &e))?;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let read = match data.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(Path::new(OsStr::from_bytes(b"upload")), &e)),
        };
        file.write_all(&buffer[..read])
            .map_err(|e| failed(path, &e))?;
    }
    let meta = file.metadata().map_err(|e| failed(path, &e))?;
    Ok(ok(vec![entry(path, &meta)], false))
}
