//! Unpacking a hostile tar stream into a layer in overlayfs's own form: the one place sbx
//! turns archive entries into files on the host (image layers, archives of images, and the
//! native backend's snapshot files all come through here).
//!
//! The stream is treated as hostile: plain relative names only (no `..`, no absolute path),
//! resolved one directory at a time from the layer's root without following symlinks (so a
//! symlink an earlier entry made, absolute or not, can never be written through), hard links
//! only to regular files already in the layer, no device nodes (refused), no set-id bits
//! (cleared and counted), owners clamped to 0–65535 (the ids a sandbox has), and bounds on
//! the bytes, entries and depth it unpacks to. Whiteouts in the OCI convention (`.wh.NAME`,
//! `.wh..wh..opq`) become overlayfs's own (a `0:0` character device, the
//! `trusted.overlay.opaque` attribute), written by this code, never taken from the stream.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use sbx_backend::tarmeta;

/// The ids a sandbox has: 0..65536; an owner outside becomes nobody.
pub const RANGE: u32 = 65536;
pub const NOBODY: u32 = 65534;
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Most entries one layer may have (directories made for them included).
pub const MAX_ENTRIES: u64 = 1_000_000;
/// Deepest a layer's tree may go.
pub const MAX_DEPTH: usize = 256;
const MAX_PATH: usize = 4096;
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Why an archive was refused.
#[derive(Debug)]
pub enum UnpackError {
    /// Malformed or hostile content (the message says which entry).
    Invalid(String),
    /// Unpacks to more than allowed.
    TooLarge(String),
    /// The host could not store it.
    Io(io::Error),
}

impl From<io::Error> for UnpackError {
    fn from(e: io::Error) -> Self {
        UnpackError::Io(e)
    }
}

impl std::fmt::Display for UnpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnpackError::Invalid(m) | UnpackError::TooLarge(m) => f.write_str(m),
            UnpackError::Io(e) => write!(f, "{e}"),
        }
    }
}

pub fn invalid(message: impl Into<String>) -> UnpackError {
    UnpackError::Invalid(message.into())
}

/// What an unpacking has written so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub bytes: u64,
    pub entries: u64,
    /// Directories made for entries' parents (they count among the entries).
    pub made: u64,
    pub setid_cleared: u64,
}

/// The plain names of an archive entry's path; `None` for `..` or an absolute path.
pub fn names(path: &[u8]) -> Option<Vec<&OsStr>> {
    if path.first() == Some(&b'/') {
        return None;
    }
    let mut names = Vec::new();
    for name in path.split(|b| *b == b'/') {
        match name {
            b"" | b"." => {}
            b".." => return None,
            name => names.push(OsStr::from_bytes(name)),
        }
    }
    Some(names)
}

fn open_at(dir: &OwnedFd, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dir.as_fd(),
        name,
        flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
}

/// The directory `names` under `root`, made as needed, never through a symlink.
fn directory(
    root: &OwnedFd,
    names: &[&OsStr],
    shown: &str,
    made: &mut u64,
) -> Result<OwnedFd, UnpackError> {
    let mut current = root.try_clone()?;
    for name in names {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let next = match open_at(&current, name, flags) {
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(
                    current.as_fd(),
                    *name,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) => *made += 1,
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io::Error::from(e).into()),
                }
                open_at(&current, name, flags)
            }
            other => other,
        };
        current = match next {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(invalid(format!(
                    "{shown}: goes through a symlink or a file"
                )))
            }
            Err(e) => return Err(io::Error::from(e).into()),
        };
    }
    Ok(current)
}

fn stat_at(dir: &OwnedFd, name: &OsStr) -> Result<FileStat, Errno> {
    nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
}

/// Unlinks what is at `name` in `dir`; a directory in the way is removed with its contents
/// when `replace_dirs` (a later layer of an image replaces it) and refused otherwise.
fn make_room(
    dir: &OwnedFd,
    name: &OsStr,
    shown: &str,
    replace_dirs: bool,
) -> Result<(), UnpackError> {
    if name.as_bytes() == b"." || name.as_bytes() == b".." {
        return Err(invalid(format!("{shown}: not a name")));
    }
    match stat_at(dir, name) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from(e).into()),
        Ok(stat) if is_dir(&stat) => {
            if !replace_dirs {
                return Err(invalid(format!("{shown}: a directory is in the way")));
            }
            remove_tree_at(dir, name)?;
            Ok(())
        }
        Ok(_) => nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io::Error::from(e).into()),
    }
}

/// Removes the directory `name` in `dir` and everything in it, never following a symlink.
fn remove_tree_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let sub = open_at(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
    )
    .map_err(io::Error::from)?;
    let mut children = Vec::new();
    {
        let mut listing = nix::dir::Dir::from_fd(sub.try_clone()?).map_err(io::Error::from)?;
        for entry in listing.iter() {
            let entry = entry.map_err(io::Error::from)?;
            let child = entry.file_name().to_bytes();
            if child != b"." && child != b".." {
                children.push(OsStr::from_bytes(child).to_owned());
            }
        }
    }
    for child in children {
        match stat_at(&sub, &child) {
            Ok(stat) if is_dir(&stat) => remove_tree_at(&sub, &child)?,
            Ok(_) => nix::unistd::unlinkat(
                sub.as_fd(),
                child.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .map_err(io::Error::from)?,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::RemoveDir)
        .map_err(io::Error::from)
}

fn owner(id: u64) -> u32 {
    u32::try_from(id)
        .ok()
        .filter(|id| *id < RANGE)
        .unwrap_or(NOBODY)
}

/// Applies owner, mode (no set-id bits) and time to `name` in `dir`, not following it.
/// Returns whether set-id bits were cleared.
fn finish(dir: &OwnedFd, name: &OsStr, header: &tar::Header, symlink: bool) -> bool {
    let uid = owner(header.uid().unwrap_or(u64::from(NOBODY)));
    let gid = owner(header.gid().unwrap_or(u64::from(NOBODY)));
    let _ = nix::unistd::fchownat(
        dir.as_fd(),
        name,
        Some(uid.into()),
        Some(gid.into()),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    let mut cleared = false;
    if !symlink {
        let asked = header.mode().unwrap_or(0o644);
        cleared = asked & 0o6000 != 0;
        let _ = nix::sys::stat::fchmodat(
            dir.as_fd(),
            name,
            Mode::from_bits_truncate(asked & 0o1777),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        );
    }
    let seconds = i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0);
    let time = libc::timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    };
    let times = [time, time];
    if let Ok(c_name) = CString::new(name.as_bytes()) {
        // SAFETY: utimensat with a valid descriptor, a NUL-terminated name, two timespecs.
        unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                c_name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
    }
    cleared
}

fn set_opaque_fd(dir: &OwnedFd) -> io::Result<()> {
    let name = CString::new(OPAQUE_XATTR)?;
    // SAFETY: fsetxattr on a descriptor this process owns, a NUL-terminated name, one byte.
    let done =
        unsafe { libc::fsetxattr(dir.as_raw_fd(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes a tar stream's entries into a layer directory, one entry at a time.
pub struct Unpacker {
    root: OwnedFd,
    /// Only entries under this first name are the layer's (snapshot files keep theirs under
    /// `layer/`); `None`: every entry.
    prefix: Option<Vec<u8>>,
    max_bytes: u64,
    /// What the archive is called in messages ("the snapshot", "layer sha256:…").
    what: String,
    pub stats: Stats,
}

impl Unpacker {
    /// Unpacks into `dest`, an existing empty directory.
    pub fn new(
        dest: &Path,
        prefix: Option<&[u8]>,
        max_bytes: u64,
        what: impl Into<String>,
    ) -> io::Result<Unpacker> {
        Ok(Unpacker {
            root: fs::File::open(dest)?.into(),
            prefix: prefix.map(<[u8]>::to_vec),
            max_bytes,
            what: what.into(),
            stats: Stats::default(),
        })
    }

    /// Every entry of `entries`. The stream is read raw: GNU long names and links and PAX
    /// headers are entries of their own here, read with a bound (the `tar` crate would read
    /// them whole into memory, whatever their size) and applied to the entry after them.
    pub fn all<R: Read>(&mut self, entries: tar::Entries<'_, R>) -> Result<(), UnpackError> {
        let mut name: Option<Vec<u8>> = None;
        let mut link: Option<Vec<u8>> = None;
        for item in entries.raw(true) {
            let mut item = item.map_err(|e| invalid(format!("{} is malformed: {e}", self.what)))?;
            match item.header().entry_type() {
                tar::EntryType::GNULongName => name = Some(self.metadata(&mut item)?),
                tar::EntryType::GNULongLink => link = Some(self.metadata(&mut item)?),
                tar::EntryType::XHeader => {
                    let records = self.metadata(&mut item)?;
                    for (key, value) in tarmeta::pax_records(&records) {
                        match key {
                            b"path" => name = Some(value.to_vec()),
                            b"linkpath" => link = Some(value.to_vec()),
                            _ => {}
                        }
                    }
                }
                tar::EntryType::XGlobalHeader => {
                    self.metadata(&mut item)?;
                }
                _ => self.entry_named(&mut item, name.take(), link.take())?,
            }
        }
        Ok(())
    }

    /// The data of a metadata entry (a long name, a PAX header), with a bound
    /// (`sbx_backend::tarmeta`).
    fn metadata<R: Read>(&mut self, item: &mut tar::Entry<'_, R>) -> Result<Vec<u8>, UnpackError> {
        self.stats.entries += 1;
        if self.stats.entries > MAX_ENTRIES {
            return Err(self.too_many());
        }
        let size = item.size();
        tarmeta::read_metadata(item, size).map_err(|e| match e {
            tarmeta::MetadataError::TooLarge(_) => invalid(format!("{}: {e}", self.what)),
            tarmeta::MetadataError::Io(_) => invalid(format!("{} is malformed: {e}", self.what)),
        })
    }

    fn too_many(&self) -> UnpackError {
        UnpackError::TooLarge(format!("{} has more than {MAX_ENTRIES} entries", self.what))
    }

    /// The layer's names of an archive path (the prefix taken off); `None` when the entry
    /// is the layer's root.
    fn strip<'a>(&self, all: &'a [&'a OsStr], shown: &str) -> Result<&'a [&'a OsStr], UnpackError> {
        match &self.prefix {
            None => Ok(all),
            Some(prefix) => match all.split_first() {
                None => Ok(all),
                Some((first, within)) if first.as_bytes() == prefix.as_slice() => Ok(within),
                Some(_) => Err(invalid(format!(
                    "{shown}: not under {}/",
                    String::from_utf8_lossy(prefix)
                ))),
            },
        }
    }

    /// One entry (its path and link target as the header says, or as a long name or PAX
    /// header before it said).
    fn entry_named<R: Read>(
        &mut self,
        item: &mut tar::Entry<'_, R>,
        name: Option<Vec<u8>>,
        link: Option<Vec<u8>>,
    ) -> Result<(), UnpackError> {
        let replace_dirs = self.prefix.is_none();
        self.stats.entries += 1;
        if self.stats.entries > MAX_ENTRIES {
            return Err(self.too_many());
        }
        let raw = name.unwrap_or_else(|| item.path_bytes().into_owned());
        let link = link.or_else(|| item.link_name_bytes().map(|l| l.into_owned()));
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(256)]).into_owned();
        let link_length = link.as_ref().map_or(0, Vec::len);
        if raw.len() > MAX_PATH || link_length > MAX_PATH {
            return Err(invalid(format!(
                "{shown}: a path or link target longer than {MAX_PATH} bytes"
            )));
        }
        let Some(all) = names(&raw) else {
            return Err(invalid(format!(
                "{shown}: an absolute path or '..' is refused"
            )));
        };
        if all.len() > MAX_DEPTH + 1 || all.iter().any(|n| n.len() > 255) {
            return Err(invalid(format!(
                "{shown}: deeper than {MAX_DEPTH} directories, or a name longer than 255 bytes"
            )));
        }
        if self.stats.entries + self.stats.made > MAX_ENTRIES {
            return Err(self.too_many());
        }
        let within = self.strip(&all, &shown)?;
        let header = item.header().clone();
        let Some((name, parents)) = within.split_last() else {
            // The root of the layer.
            if header.entry_type() == tar::EntryType::Directory {
                finish(&self.root, OsStr::new("."), &header, false);
            }
            return Ok(());
        };
        let root = &self.root;
        let parent = directory(root, parents, &shown, &mut self.stats.made)?;
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER {
            set_opaque_fd(&parent)?;
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty()
                || hidden == b"."
                || hidden == b".."
                || hidden.starts_with(WHITEOUT_PREFIX)
            {
                return Err(invalid(format!("{shown}: a malformed whiteout")));
            }
            let hidden = OsStr::from_bytes(hidden);
            make_room(&parent, hidden, &shown, replace_dirs)?;
            nix::sys::stat::mknodat(
                parent.as_fd(),
                hidden,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o600),
                0,
            )
            .map_err(io::Error::from)?;
            return Ok(());
        }
        match header.entry_type() {
            tar::EntryType::Directory => {
                if let Ok(stat) = stat_at(&parent, name) {
                    if !is_dir(&stat) {
                        make_room(&parent, name, &shown, replace_dirs)?;
                    }
                }
                match nix::sys::stat::mkdirat(
                    parent.as_fd(),
                    *name,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io::Error::from(e).into()),
                }
                // Never a symlink made by an earlier entry.
                directory(&parent, &[name], &shown, &mut self.stats.made)?;
                self.cleared(finish(&parent, name, &header, false));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                make_room(&parent, name, &shown, replace_dirs)?;
                let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
                let file = nix::fcntl::openat(
                    parent.as_fd(),
                    *name,
                    flags | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(io::Error::from)?;
                let mut file = fs::File::from(file);
                let left = self.max_bytes.saturating_sub(self.stats.bytes);
                let copied = io::copy(&mut (&mut *item).take(left.saturating_add(1)), &mut file)
                    .map_err(|e| invalid(format!("{shown}: {e}")))?;
                self.stats.bytes += copied;
                if self.stats.bytes > self.max_bytes {
                    return Err(UnpackError::TooLarge(format!(
                        "{} unpacks to more than {} bytes",
                        self.what, self.max_bytes
                    )));
                }
                self.cleared(finish(&parent, name, &header, false));
            }
            tar::EntryType::Symlink => {
                let target = link
                    .clone()
                    .ok_or_else(|| invalid(format!("{shown}: a symlink without a target")))?;
                make_room(&parent, name, &shown, replace_dirs)?;
                nix::unistd::symlinkat(OsStr::from_bytes(&target), parent.as_fd(), *name)
                    .map_err(io::Error::from)?;
                finish(&parent, name, &header, true);
            }
            tar::EntryType::Link => {
                let target = link
                    .clone()
                    .ok_or_else(|| invalid(format!("{shown}: a hard link without a target")))?;
                let target_all = names(&target)
                    .ok_or_else(|| invalid(format!("{shown}: a hard link out of the layer")))?;
                let target_names = self
                    .strip(&target_all, &shown)
                    .map_err(|_| invalid(format!("{shown}: a hard link out of the layer")))?;
                let Some((target_name, target_parents)) = target_names.split_last() else {
                    return Err(invalid(format!("{shown}: a hard link out of the layer")));
                };
                if target == raw {
                    return Err(invalid(format!("{shown}: a hard link to itself")));
                }
                let target_dir = directory(root, target_parents, &shown, &mut self.stats.made)?;
                match stat_at(&target_dir, target_name) {
                    Ok(stat)
                        if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
                            == SFlag::S_IFREG => {}
                    _ => {
                        return Err(invalid(format!(
                            "{shown}: a hard link to no file of the layer"
                        )))
                    }
                }
                make_room(&parent, name, &shown, replace_dirs)?;
                nix::unistd::linkat(
                    target_dir.as_fd(),
                    *target_name,
                    parent.as_fd(),
                    *name,
                    AtFlags::empty(),
                )
                .map_err(io::Error::from)?;
            }
            tar::EntryType::Fifo => {
                make_room(&parent, name, &shown, replace_dirs)?;
                nix::sys::stat::mknodat(
                    parent.as_fd(),
                    *name,
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(0o600),
                    0,
                )
                .map_err(io::Error::from)?;
                finish(&parent, name, &header, false);
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(invalid(format!("{shown}: device nodes are refused")));
            }
            _ => {}
        }
        Ok(())
    }

    fn cleared(&mut self, cleared: bool) {
        if cleared {
            self.stats.setid_cleared += 1;
        }
    }
}
