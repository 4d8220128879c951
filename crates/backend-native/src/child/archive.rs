//! Directories in and out of a sandbox as tar streams, done by a file child (inside the
//! sandbox's namespaces, as the requested user; see `child::files`).
//!
//! Extracting treats the archive as hostile. Every entry's path is relative, made of plain
//! names (an absolute path or a `..` is refused, a `./` prefix is fine), and resolved from the
//! destination one directory at a time with `O_NOFOLLOW`: a symlink already there, planted by
//! the sandbox or made by an earlier entry of the same archive, is never followed (it is "in
//! the way"), so nothing lands outside the destination. A hard link must name an entry under
//! the destination, resolved the same way. Device nodes and FIFOs are refused; set-id and
//! sticky bits are dropped; owners are not taken from the archive (everything belongs to the
//! user the call acts as). An existing file is replaced by a new one (never written through),
//! an existing directory is kept. An archive refused half-way leaves what it extracted so far.
//!
//! Archiving never follows a symlink inside the directory (it is archived as a symlink), stays
//! on the directory's own file system (like `tar --one-file-system`: `/proc` and other mounts
//! are left out), archives regular files, directories, symlinks and hard links among them, and
//! passes over what it may not read, FIFOs, devices and sockets.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::files::{entry, error, failed, inside, ok_counted};
use crate::layers::names;
use crate::wire::FileOutcome;

/// Deepest directory an archive descends into (deeper ones are left out).
const MAX_DEPTH: usize = 256;
/// Longest path or link target an extracted entry may have (a name longer than the kernel's
/// `PATH_MAX` could not be used anyway).
const MAX_PATH: usize = 4096;
/// Most entries one extraction takes.
const MAX_ENTRIES: u64 = 1_000_000;
/// Most directories whose mode and time are set at the end of an extraction.
const MAX_DEFERRED: usize = 100_000;
/// Most hard-linked files remembered while archiving (further ones are archived as copies).
const MAX_LINKS: usize = 100_000;

fn errno_error(what: &str, e: Errno) -> FileOutcome {
    failed(Path::new(what), &std::io::Error::from(e))
}

fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dir,
        name,
        flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
}

fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<FileStat, Errno> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn kind_of(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

/// An entry's path for a message: at most 256 bytes of it.
fn shown(path: &[u8]) -> String {
    let text = String::from_utf8_lossy(&path[..path.len().min(256)]).into_owned();
    if path.len() > 256 {
        format!("{text}…")
    } else {
        text
    }
}

/// Opens (with `create`, makes) the directory `names` under `root`, never through a symlink.
fn directory(
    root: &OwnedFd,
    names: &[&OsStr],
    create: bool,
    entry_path: &str,
) -> Result<OwnedFd, FileOutcome> {
    let mut current = root
        .try_clone()
        .map_err(|e| failed(Path::new(entry_path), &e))?;
    for name in names {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let next = match open_at(current.as_fd(), name, flags) {
            Err(Errno::ENOENT) if create => {
                match nix::sys::stat::mkdirat(
                    current.as_fd(),
                    *name,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(errno_error(entry_path, e)),
                }
                open_at(current.as_fd(), name, flags)
            }
            other => other,
        };
        current = match next {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(error(
                    "conflict",
                    format!(
                        "{entry_path}: {} is a symlink or a file, not a directory (an archive never goes through a symlink)",
                        name.to_string_lossy()
                    ),
                ))
            }
            Err(e) => return Err(errno_error(entry_path, e)),
        };
    }
    Ok(current)
}

/// Makes room for a new non-directory `name` in `dir`: what is there goes, unless it is a
/// directory.
fn clear(dir: &OwnedFd, name: &OsStr, entry_path: &str) -> Result<(), FileOutcome> {
    match stat_at(dir.as_fd(), name) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno_error(entry_path, e)),
        Ok(stat) if kind_of(&stat) == SFlag::S_IFDIR => Err(error(
            "conflict",
            format!("{entry_path}: a directory is in the way"),
        )),
        Ok(_) => nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| errno_error(entry_path, e)),
    }
}

fn times(seconds: u64) -> [libc::timespec; 2] {
    let time = libc::timespec {
        tv_sec: i64::try_from(seconds).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    [time, time]
}

/// Sets `name`'s modification time in `dir` without following it.
fn set_time(dir: &OwnedFd, name: &OsStr, seconds: u64) {
    let Ok(name) = CString::new(name.as_bytes()) else {
        return;
    };
    let times = times(seconds);
    // SAFETY: utimensat with a valid descriptor, a NUL-terminated name and two timespecs.
    unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

/// Extracts the tar stream on `data` under `dest` (made if missing); reports `dest` and how
/// many entries went in.
pub fn extract(dest: &Path, data: fs::File) -> Result<FileOutcome, FileOutcome> {
    fs::DirBuilder::new()
        .recursive(true)
        .create(dest)
        .map_err(|e| failed(dest, &e))?;
    let root: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .custom_flags_directory()
        .open(dest)
        .map_err(|e| failed(dest, &e))?
        .into();
    inside(
        dest,
        &fs::File::from(root.try_clone().map_err(|e| failed(dest, &e))?),
    )?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(256 * 1024, data));
    let entries = archive
        .entries()
        .map_err(|e| error("invalid", format!("not a tar archive: {e}")))?;
    let mut count = 0u64;
    // Directories this extraction made: their mode and time are set at the end, deepest
    // first, so that a read-only directory does not refuse its own entries.
    let mut made: Vec<(Vec<Vec<u8>>, u32, u64)> = Vec::new();
    // The last entry's parent directory, opened: an archive lists a directory's entries
    // together, and each would otherwise walk down from the root again. A directory the
    // archive reaches is never replaced by it (`clear` refuses), so the descriptor stays the
    // directory that path names.
    let mut last_parent: Option<(Vec<Vec<u8>>, OwnedFd)> = None;
    for item in entries {
        let mut item =
            item.map_err(|e| error("invalid", format!("the archive is malformed: {e}")))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(error(
                "invalid",
                format!("an archive of more than {MAX_ENTRIES} entries is refused"),
            ));
        }
        let raw = item.path_bytes().into_owned();
        let path = shown(&raw);
        let link_length = item.link_name_bytes().map_or(0, |l| l.len());
        if raw.len() > MAX_PATH || link_length > MAX_PATH {
            return Err(error(
                "invalid",
                format!("{path}: a path or link target longer than {MAX_PATH} bytes is refused"),
            ));
        }
        let Some(names) = names(&raw) else {
            return Err(error(
                "invalid",
                format!("{path}: an archive entry with an absolute path or '..' is refused"),
            ));
        };
        let header = item.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o777;
        let mtime = header.mtime().unwrap_or(0);
        let Some((name, parents)) = names.split_last() else {
            // `./` itself: the destination, which is there.
            continue;
        };
        let same = last_parent.as_ref().is_some_and(|(names, _)| {
            names.len() == parents.len()
                && names
                    .iter()
                    .zip(parents.iter())
                    .all(|(a, b)| a == b.as_bytes())
        });
        if !same {
            let opened = directory(&root, parents, true, &path)?;
            let names = parents.iter().map(|n| n.as_bytes().to_vec()).collect();
            last_parent = Some((names, opened));
        }
        let parent = &last_parent.as_ref().expect("set just above").1;
        match kind {
            tar::EntryType::Directory => {
                // Writable by its maker until the end; an existing directory is kept as it is.
                let working = Mode::from_bits_truncate(mode | 0o700);
                let created = match nix::sys::stat::mkdirat(parent.as_fd(), *name, working) {
                    Ok(()) => true,
                    Err(Errno::EEXIST) => {
                        // A directory stays; anything else there goes.
                        if stat_at(parent.as_fd(), name)
                            .is_ok_and(|s| kind_of(&s) == SFlag::S_IFDIR)
                        {
                            false
                        } else {
                            clear(parent, name, &path)?;
                            nix::sys::stat::mkdirat(parent.as_fd(), *name, working)
                                .map_err(|e| errno_error(&path, e))?;
                            true
                        }
                    }
                    Err(e) => return Err(errno_error(&path, e)),
                };
                if created && made.len() < MAX_DEFERRED {
                    let names = names.iter().map(|n| n.as_bytes().to_vec()).collect();
                    made.push((names, mode, mtime));
                }
            }
            tar::EntryType::GNUSparse => {
                return Err(error(
                    "invalid",
                    format!("{path}: sparse files are refused in an archive"),
                ));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(parent, name, &path)?;
                let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
                let file = nix::fcntl::openat(
                    parent.as_fd(),
                    *name,
                    flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
                    Mode::from_bits_truncate(mode),
                )
                .map_err(|e| errno_error(&path, e))?;
                let mut file = fs::File::from(file);
                copy(&mut item, &mut file, &path)?;
                let _ = nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode));
                let times = times(mtime);
                // SAFETY: futimens on a descriptor this process owns, with two timespecs.
                unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
            }
            tar::EntryType::Symlink => {
                let target = item
                    .link_name_bytes()
                    .ok_or_else(|| error("invalid", format!("{path}: a symlink without a target")))?
                    .into_owned();
                clear(parent, name, &path)?;
                nix::unistd::symlinkat(OsStr::from_bytes(&target), parent.as_fd(), *name)
                    .map_err(|e| errno_error(&path, e))?;
                set_time(parent, name, mtime);
            }
            tar::EntryType::Link => {
                let target = item
                    .link_name_bytes()
                    .ok_or_else(|| {
                        error("invalid", format!("{path}: a hard link without a target"))
                    })?
                    .into_owned();
                let Some(target_names) = names_of_link(&target) else {
                    return Err(error(
                        "invalid",
                        format!(
                            "{path}: a hard link to {} (outside the archive) is refused",
                            shown(&target)
                        ),
                    ));
                };
                let Some((target_name, target_parents)) = target_names.split_last() else {
                    return Err(error(
                        "invalid",
                        format!("{path}: a hard link to the destination"),
                    ));
                };
                let no_file = || {
                    error(
                        "invalid",
                        format!("{path}: a hard link to no file of the archive"),
                    )
                };
                let target_parent =
                    directory(&root, target_parents, false, &path).map_err(|_| no_file())?;
                // Only to a regular file already there; checked before anything is removed.
                if !stat_at(target_parent.as_fd(), target_name)
                    .is_ok_and(|s| kind_of(&s) == SFlag::S_IFREG)
                {
                    return Err(no_file());
                }
                clear(parent, name, &path)?;
                nix::unistd::linkat(
                    target_parent.as_fd(),
                    *target_name,
                    parent.as_fd(),
                    *name,
                    AtFlags::empty(),
                )
                .map_err(|e| match e {
                    Errno::EMLINK | Errno::EPERM | Errno::EXDEV => error(
                        "invalid",
                        format!("{path}: cannot hard link to {}", shown(&target)),
                    ),
                    e => errno_error(&path, e),
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(error(
                    "invalid",
                    format!("{path}: device nodes and FIFOs are refused in an archive"),
                ));
            }
            // Metadata the tar reader has already applied (long names, pax headers), and
            // kinds with nothing to make.
            _ => {
                count -= 1;
                continue;
            }
        }
    }
    // Deepest first: a directory's own mode may forbid what its children need.
    made.sort_by_key(|(names, _, _)| std::cmp::Reverse(names.len()));
    for (names, mode, mtime) in made {
        let names: Vec<&OsStr> = names.iter().map(|n| OsStr::from_bytes(n)).collect();
        if let Ok(dir) = directory(&root, &names, false, "") {
            let _ = nix::sys::stat::fchmod(dir.as_fd(), Mode::from_bits_truncate(mode));
            let times = times(mtime);
            // SAFETY: futimens on a descriptor this process owns, with two timespecs.
            unsafe { libc::futimens(dir.as_raw_fd(), times.as_ptr()) };
        }
    }
    let meta = fs::symlink_metadata(dest).map_err(|e| failed(dest, &e))?;
    Ok(ok_counted(vec![entry(dest, &meta)], count))
}

fn names_of_link(target: &[u8]) -> Option<Vec<&OsStr>> {
    names(target)
}

fn copy(from: &mut impl Read, to: &mut fs::File, path: &str) -> Result<(), FileOutcome> {
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(error(
                    "invalid",
                    format!("the archive is malformed at {path}: {e}"),
                ))
            }
        };
        to.write_all(&buffer[..read])
            .map_err(|e| failed(Path::new(path), &e))?;
    }
}

trait DirectoryOpen {
    fn custom_flags_directory(&mut self) -> &mut Self;
}

impl DirectoryOpen for fs::OpenOptions {
    fn custom_flags_directory(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY | libc::O_NOCTTY)
    }
}

/// Opens what an archive will hold: `src` (followed, since the caller named it) on the
/// sandbox's own mounts. Reported before any bytes.
pub fn open_source(src: &Path) -> Result<(OwnedFd, FileOutcome), FileOutcome> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(src)
        .map_err(|e| failed(src, &e))?;
    inside(src, &file)?;
    // /proc holds what only this child sees (its own executable, on the host).
    if nix::sys::statfs::fstatfs(&file).is_ok_and(|s| s.filesystem_type().0 == 0x9fa0) {
        return Err(error(
            "conflict",
            format!("{}: /proc cannot be archived", src.display()),
        ));
    }
    let meta = file.metadata().map_err(|e| failed(src, &e))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(error(
            "conflict",
            format!(
                "{}: only a directory or a regular file can be archived",
                src.display()
            ),
        ));
    }
    Ok((
        file.into(),
        super::files::ok(vec![entry(src, &meta)], false),
    ))
}

/// Writes the tar stream of `src` (opened by [`open_source`]) to `data`: its entries are
/// named from `src`'s own name down. False when the reader went away.
pub fn archive(src: &Path, opened: OwnedFd, data: fs::File) -> bool {
    let top = match src.file_name() {
        Some(name) => name.as_bytes().to_vec(),
        None => b".".to_vec(),
    };
    let builder = tar::Builder::new(std::io::BufWriter::with_capacity(256 * 1024, data));
    let Ok(stat) = nix::sys::stat::fstat(opened.as_fd()) else {
        return false;
    };
    let mut walk = Walk {
        builder,
        device: stat.st_dev,
        links: HashMap::new(),
    };
    let written = if kind_of(&stat) == SFlag::S_IFDIR {
        walk.directory(&top, opened, &stat, 0)
    } else {
        walk.file(&top, fs::File::from(opened), &stat)
    };
    if written.is_err() {
        // No end-of-archive marker after a failure (dropping the builder would write one):
        // the reader sees a cut archive, and the daemon a failed child.
        std::mem::forget(walk.builder);
        return false;
    }
    walk.builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .is_ok()
}

struct Walk<W: Write> {
    builder: tar::Builder<W>,
    device: u64,
    /// Hard-linked files archived so far: (device, inode) → their path in the archive.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn header_for(stat: &FileStat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(u64::from(stat.st_uid));
    header.set_gid(u64::from(stat.st_gid));
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header.set_size(0);
    header
}

impl<W: Write> Walk<W> {
    /// Only a failure to write (the reader left) stops the walk.
    fn directory(
        &mut self,
        path: &[u8],
        dir: OwnedFd,
        stat: &FileStat,
        depth: usize,
    ) -> std::io::Result<()> {
        let mut header = header_for(stat, tar::EntryType::Directory);
        let mut name = path.to_vec();
        name.push(b'/');
        self.builder
            .append_data(&mut header, OsStr::from_bytes(&name), std::io::empty())?;
        if depth >= MAX_DEPTH {
            return Ok(());
        }
        let Ok(listing) = nix::dir::Dir::from_fd(dir) else {
            return Ok(());
        };
        let mut listing = listing;
        let mut names: Vec<Vec<u8>> = listing
            .iter()
            .flatten()
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect();
        names.sort();
        let dir_fd = listing.as_fd();
        for child in names {
            let child_name = OsStr::from_bytes(&child);
            let mut child_path = path.to_vec();
            child_path.push(b'/');
            child_path.extend_from_slice(&child);
            let Ok(stat) = stat_at(dir_fd, child_name) else {
                continue;
            };
            match kind_of(&stat) {
                SFlag::S_IFDIR if stat.st_dev == self.device => {
                    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
                    if let Ok(fd) = open_at(dir_fd, child_name, flags) {
                        self.directory(&child_path, fd, &stat, depth + 1)?;
                    }
                }
                SFlag::S_IFREG => {
                    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
                    if let Ok(fd) = open_at(dir_fd, child_name, flags) {
                        let file = fs::File::from(fd);
                        match nix::sys::stat::fstat(file.as_fd()) {
                            Ok(now) if kind_of(&now) == SFlag::S_IFREG => {
                                self.file(&child_path, file, &now)?;
                            }
                            _ => {}
                        }
                    }
                }
                SFlag::S_IFLNK => {
                    if let Ok(target) = nix::fcntl::readlinkat(dir_fd, child_name) {
                        let mut header = header_for(&stat, tar::EntryType::Symlink);
                        self.builder.append_link(
                            &mut header,
                            OsStr::from_bytes(&child_path),
                            Path::new(&target),
                        )?;
                    }
                }
                // Other file systems, FIFOs, devices, sockets.
                _ => {}
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &[u8], file: fs::File, stat: &FileStat) -> std::io::Result<()> {
        let key = (stat.st_dev, stat.st_ino);
        if stat.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                let mut header = header_for(stat, tar::EntryType::Link);
                let first = first.clone();
                return self.builder.append_link(
                    &mut header,
                    OsStr::from_bytes(path),
                    OsStr::from_bytes(&first),
                );
            }
            if self.links.len() < MAX_LINKS {
                self.links.insert(key, path.to_vec());
            }
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let mut header = header_for(stat, tar::EntryType::Regular);
        header.set_size(size);
        // Exactly `size` bytes, whatever the file does meanwhile (grows: cut; shrinks: zeros).
        let exact = file.take(size).chain(std::io::repeat(0)).take(size);
        self.builder
            .append_data(&mut header, OsStr::from_bytes(path), exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert_eq!(
            names(b"a/b").unwrap(),
            vec![OsStr::new("a"), OsStr::new("b")]
        );
        assert_eq!(
            names(b"./a//b/").unwrap(),
            vec![OsStr::new("a"), OsStr::new("b")]
        );
        assert!(names(b"./").unwrap().is_empty());
        for refused in [&b"/etc/passwd"[..], b"../x", b"a/../../x", b"a/.."] {
            assert!(names(refused).is_none(), "{}", shown(refused));
        }
    }
}
