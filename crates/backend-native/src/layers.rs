//! Snapshot layers: directory trees in overlayfs's own form (whiteouts are `0:0` character
//! devices, opaque directories carry `trusted.overlay.opaque=y`), with owners in the sandbox's
//! own ids (0–65535), so that a layer can be the lower layer of any sandbox through an
//! idmapped mount (`stage1`), whatever uid range that sandbox maps to.
//!
//! - [`capture`] makes a layer from a sandbox's writable layer (its overlay upper directory):
//!   the parent layer first (hard links: shared, no copy), then the upper's changes merged on
//!   top (a file replaced is unlinked first, never written through, so the parent is never
//!   changed). Runs in the snapshot helper, which mounts the sandbox's disk privately.
//! - [`export`] writes a layer as a tar stream in the OCI layer convention (`.wh.NAME` for a
//!   whiteout, `.wh..wh..opq` in an opaque directory) under `layer/`, after a manifest.
//! - [`import`] reads such a stream back into a new layer, treating it as hostile: plain
//!   relative names only, resolved one directory at a time without following symlinks, hard
//!   links only to entries already in the layer, no devices or FIFOs (whiteouts are written
//!   by this code, never taken from the stream), no set-id bits, owners clamped into the
//!   sandbox's range, a bound on the bytes and entries it unpacks to.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};

/// The ids a sandbox has: 0..65536. An owner outside (a host file copied up) becomes nobody.
const RANGE: u32 = 65536;
const NOBODY: u32 = 65534;
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The name of the manifest entry of an exported snapshot.
pub const MANIFEST: &str = "sbx-snapshot.json";
const MAX_MANIFEST: u64 = 64 << 10;
/// Deepest a snapshot's tree may go (captured or imported), and longest an imported path.
pub const MAX_DEPTH: usize = 256;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

fn canonical(id: u32, base: u32) -> u32 {
    if id >= base && id - base < RANGE {
        id - base
    } else {
        NOBODY
    }
}

fn kind(meta: &fs::Metadata) -> SFlag {
    SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits())
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    kind(meta) == SFlag::S_IFCHR && meta.rdev() == 0
}

fn opaque(path: &Path) -> bool {
    xattr_get(path, OPAQUE_XATTR).is_some_and(|v| v == b"y")
}

fn xattr_get(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = CString::new(name).ok()?;
    let mut value = [0u8; 16];
    // SAFETY: lgetxattr with NUL-terminated strings and a buffer of the length given.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    (n >= 0).then(|| value[..n as usize].to_vec())
}

fn set_opaque(path: &Path) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let name = CString::new(OPAQUE_XATTR)?;
    // SAFETY: lsetxattr with NUL-terminated strings and a one-byte value.
    let done =
        unsafe { libc::lsetxattr(c_path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn whiteout(path: &Path) -> io::Result<()> {
    nix::sys::stat::mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o600), 0)
        .map_err(io::Error::from)
}

/// Removes whatever is at `path` (a directory with everything in it), if anything.
fn clear(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

fn set_owner_mode_time(path: &Path, meta: &fs::Metadata, base: u32) -> io::Result<()> {
    let uid = canonical(meta.uid(), base);
    let gid = canonical(meta.gid(), base);
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if !meta.file_type().is_symlink() {
        // No set-id bits in a snapshot (it is mounted nosuid anyway).
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o1777))?;
    }
    set_time(path, meta.mtime(), meta.mtime_nsec());
    Ok(())
}

fn set_time(path: &Path, seconds: i64, nanos: i64) {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let time = libc::timespec {
        tv_sec: seconds,
        tv_nsec: nanos,
    };
    let times = [time, time];
    // SAFETY: utimensat with a NUL-terminated path and two timespecs.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

/// A capture refused for what the sandbox holds (not a fault of the host).
pub fn refused(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Makes the layer `dest` (which must not exist): `parent`'s tree, then `upper`'s changes
/// (owners shifted from the sandbox's host range at `base`) on top. Returns the bytes of file
/// data it copied (what the parent shares is not counted), at most `max_bytes` (holes of
/// sparse files are kept as holes). Refuses (`InvalidData`) a tree deeper than [`MAX_DEPTH`]
/// or more data than `max_bytes`.
pub fn capture(
    upper: &Path,
    base: u32,
    parent: Option<&Path>,
    dest: &Path,
    max_bytes: u64,
) -> io::Result<u64> {
    fs::create_dir(dest)?;
    if let Some(parent) = parent {
        link_tree(parent, dest)?;
        let meta = fs::symlink_metadata(parent)?;
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))?;
    }
    let mut merge = Merge {
        base,
        copied: 0,
        apparent: 0,
        max_bytes,
        links: HashMap::new(),
    };
    merge.directory(upper, dest, 0)?;
    let meta = fs::symlink_metadata(upper)?;
    set_owner_mode_time(dest, &meta, base)?;
    Ok(merge.copied)
}

/// `from`'s tree into `to` (an existing directory): directories made, everything else hard
/// linked (copied when a file has all the links it may have).
fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&source)?;
        if meta.is_dir() {
            fs::create_dir(&target)?;
            link_tree(&source, &target)?;
            std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            if opaque(&source) {
                set_opaque(&target)?;
            }
            set_time(&target, meta.mtime(), meta.mtime_nsec());
        } else {
            match fs::hard_link(&source, &target) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) && meta.is_file() => {
                    fs::copy(&source, &target)?;
                    std::os::unix::fs::lchown(&target, Some(meta.uid()), Some(meta.gid()))?;
                    set_time(&target, meta.mtime(), meta.mtime_nsec());
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

struct Merge {
    base: u32,
    copied: u64,
    /// Sizes of the files copied, holes included.
    apparent: u64,
    max_bytes: u64,
    /// Files of the upper with several names: (device, inode) → the first one's copy.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Merge {
    /// `upper`'s entries over `dest`'s (both directories).
    fn directory(&mut self, upper: &Path, dest: &Path, depth: usize) -> io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(refused(format!(
                "the sandbox's files nest deeper than {MAX_DEPTH} directories"
            )));
        }
        for entry in fs::read_dir(upper)? {
            let entry = entry?;
            if entry.file_name().as_bytes().starts_with(WHITEOUT_PREFIX) {
                return Err(refused(format!(
                    "{}: a name starting with .wh. marks a deletion in a snapshot file, so it cannot be captured",
                    entry.path().strip_prefix(upper).unwrap_or(&entry.path()).display()
                )));
            }
            let source = entry.path();
            let target = dest.join(entry.file_name());
            let meta = fs::symlink_metadata(&source)?;
            if is_whiteout(&meta) {
                clear(&target)?;
                whiteout(&target)?;
            } else if meta.is_dir() {
                let keep =
                    !opaque(&source) && fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
                if !keep {
                    clear(&target)?;
                    fs::create_dir(&target)?;
                    if opaque(&source) {
                        set_opaque(&target)?;
                    }
                }
                self.directory(&source, &target, depth + 1)?;
                set_owner_mode_time(&target, &meta, self.base)?;
            } else {
                clear(&target)?;
                self.other(&source, &target, &meta)?;
            }
        }
        Ok(())
    }

    fn other(&mut self, source: &Path, target: &Path, meta: &fs::Metadata) -> io::Result<()> {
        match kind(meta) {
            SFlag::S_IFREG => {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        if fs::hard_link(first, target).is_ok() {
                            return Ok(());
                        }
                    }
                }
                use std::os::unix::fs::OpenOptionsExt;
                let from = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(source)?;
                let to = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(target)?;
                // Counted at their full size (holes too): an export writes them whole.
                self.apparent += meta.len();
                if self.apparent > self.max_bytes {
                    return Err(refused(format!(
                        "the sandbox's files add up to more than its disk ({} bytes; sparse files count at their full size)",
                        self.max_bytes
                    )));
                }
                let left = self.max_bytes.saturating_sub(self.copied);
                self.copied += copy_sparse(&from, &to, meta.len(), left)?;
                if meta.nlink() > 1 {
                    self.links.insert(key, target.to_owned());
                }
            }
            SFlag::S_IFLNK => std::os::unix::fs::symlink(fs::read_link(source)?, target)?,
            SFlag::S_IFIFO => {
                nix::unistd::mkfifo(target, Mode::from_bits_truncate(0o600))?;
            }
            // Sockets and devices (a sandbox cannot make devices) are not kept.
            _ => return Ok(()),
        }
        set_owner_mode_time(target, meta, self.base)
    }
}

/// Copies the data of `from` (a file of `size` bytes) into the empty `to`, leaving its holes
/// as holes; refuses more than `most` bytes of data.
fn copy_sparse(from: &fs::File, to: &fs::File, size: u64, most: u64) -> io::Result<u64> {
    let too_much = || {
        refused(format!(
            "the sandbox's files hold more data than its disk ({most} bytes left)"
        ))
    };
    let mut copied = 0u64;
    let mut offset = 0i64;
    let end = i64::try_from(size).unwrap_or(i64::MAX);
    while offset < end {
        // SAFETY: lseek on a descriptor this process owns.
        let data = unsafe { libc::lseek(from.as_raw_fd(), offset, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: no data past `offset` (a hole up to the end).
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { end } else { hole.min(end) };
        let mut at_from = data;
        let mut at_to = data;
        while at_from < hole {
            let want = usize::try_from(hole - at_from)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            if copied + want as u64 > most {
                return Err(too_much());
            }
            // SAFETY: copy_file_range between two descriptors this process owns, with
            // offsets it owns.
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut at_from,
                    to.as_raw_fd(),
                    &mut at_to,
                    want,
                    0,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if !matches!(
                    error.raw_os_error(),
                    Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                ) {
                    return Err(error);
                }
                // Across file systems of different kinds: by reading and writing.
                copied += copy_range(from, to, at_from, hole)?;
                break;
            }
            if n == 0 {
                break;
            }
            copied += n as u64;
        }
        offset = hole;
    }
    to.set_len(size)?;
    Ok(copied)
}

/// Copies `from`'s bytes `start..end` to the same offsets of `to`.
fn copy_range(from: &fs::File, to: &fs::File, start: i64, end: i64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut at = u64::try_from(start).unwrap_or(0);
    let end = u64::try_from(end).unwrap_or(0);
    let mut copied = 0;
    while at < end {
        let want = buffer
            .len()
            .min(usize::try_from(end - at).unwrap_or(usize::MAX));
        let n = from.read_at(&mut buffer[..want], at)?;
        if n == 0 {
            break;
        }
        to.write_all_at(&buffer[..n], at)?;
        at += n as u64;
        copied += n as u64;
    }
    Ok(copied)
}

/// Bytes a layer holds on disk (blocks of files with one link; the shared ones are its
/// parents' as much as its own).
pub fn stored_bytes(layer: &Path) -> u64 {
    fn walk(dir: &Path, total: &mut u64) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                *total += meta.blocks() * 512;
                walk(&entry.path(), total);
            } else if meta.nlink() == 1 {
                *total += meta.blocks() * 512;
            }
        }
    }
    let mut total = 0;
    walk(layer, &mut total);
    total
}

/// Writes `manifest` and then the layer as a tar stream (OCI whiteout convention) to `out`.
pub fn export(layer: &Path, manifest: &[u8], out: impl Write) -> io::Result<()> {
    let mut builder = tar::Builder::new(out);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(manifest.len() as u64);
    builder.append_data(&mut header, MANIFEST, manifest)?;
    let mut walk = Export {
        builder,
        links: HashMap::new(),
    };
    let meta = fs::symlink_metadata(layer)?;
    walk.dir(layer, b"layer", &meta)?;
    walk.builder.into_inner()?.flush()
}

struct Export<W: Write> {
    builder: tar::Builder<W>,
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn header_of(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_size(0);
    header
}

impl<W: Write> Export<W> {
    fn dir(&mut self, dir: &Path, name: &[u8], meta: &fs::Metadata) -> io::Result<()> {
        // Layers are at most MAX_DEPTH deep (captured and imported alike): bounded recursion.
        let mut header = header_of(meta, tar::EntryType::Directory);
        self.builder
            .append_data(&mut header, OsStr::from_bytes(name), io::empty())?;
        if opaque(dir) {
            let mut marker = header_of(meta, tar::EntryType::Regular);
            marker.set_mode(0o644);
            let path = [name, b"/", OPAQUE_MARKER].concat();
            self.builder
                .append_data(&mut marker, OsStr::from_bytes(&path), io::empty())?;
        }
        let mut names: Vec<OsString> = fs::read_dir(dir)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for child in names {
            let source = dir.join(&child);
            let meta = fs::symlink_metadata(&source)?;
            let path = [name, b"/", child.as_bytes()].concat();
            if meta.is_dir() {
                self.dir(&source, &path, &meta)?;
            } else if is_whiteout(&meta) {
                let mut header = header_of(&meta, tar::EntryType::Regular);
                let path = [name, b"/", WHITEOUT_PREFIX, child.as_bytes()].concat();
                self.builder
                    .append_data(&mut header, OsStr::from_bytes(&path), io::empty())?;
            } else if meta.file_type().is_symlink() {
                let mut header = header_of(&meta, tar::EntryType::Symlink);
                let target = fs::read_link(&source)?;
                self.builder
                    .append_link(&mut header, OsStr::from_bytes(&path), &target)?;
            } else if meta.is_file() {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    let mut header = header_of(&meta, tar::EntryType::Link);
                    let first = first.clone();
                    self.builder.append_link(
                        &mut header,
                        OsStr::from_bytes(&path),
                        OsStr::from_bytes(&first),
                    )?;
                    continue;
                }
                if meta.nlink() > 1 && self.links.len() < 100_000 {
                    self.links.insert(key, path.clone());
                }
                let mut header = header_of(&meta, tar::EntryType::Regular);
                header.set_size(meta.len());
                let file = fs::File::open(&source)?;
                let exact = file.take(meta.len()).chain(io::repeat(0)).take(meta.len());
                self.builder
                    .append_data(&mut header, OsStr::from_bytes(&path), exact)?;
            } else if kind(&meta) == SFlag::S_IFIFO {
                let mut header = header_of(&meta, tar::EntryType::Fifo);
                self.builder
                    .append_data(&mut header, OsStr::from_bytes(&path), io::empty())?;
            }
        }
        Ok(())
    }
}

/// The plain names of an archive entry's path (shared by the sandbox's archives).
pub(crate) use sbx_images::unpack::names;
/// Why an import was refused: the file is not a snapshot sbx can take.
pub use sbx_images::unpack::UnpackError as ImportError;

/// Reads an exported snapshot from `input` into the new layer `dest` (which must not exist);
/// returns its manifest. Refuses what [`export`] never writes (see `sbx_images::unpack`).
pub fn import(input: impl Read, dest: &Path, max_bytes: u64) -> Result<Vec<u8>, ImportError> {
    fs::create_dir(dest)?;
    let mut archive = tar::Archive::new(input);
    let invalid = |m: String| ImportError::Invalid(m);
    // Raw: see `Unpacker::all` (a long name before the manifest is refused unread).
    let mut entries = archive
        .entries()
        .map_err(|e| invalid(format!("not a snapshot file: {e}")))?
        .raw(true);
    let manifest = {
        let mut first = entries
            .next()
            .ok_or_else(|| invalid("not a snapshot file: it is empty".into()))?
            .map_err(|e| invalid(format!("not a snapshot file: {e}")))?;
        if first.path_bytes().as_ref() != MANIFEST.as_bytes() || first.size() > MAX_MANIFEST {
            return Err(invalid(format!(
                "not a snapshot file: it does not start with {MANIFEST}"
            )));
        }
        let mut manifest = Vec::new();
        first.read_to_end(&mut manifest)?;
        manifest
    };
    let mut unpacker =
        sbx_images::unpack::Unpacker::new(dest, Some(b"layer"), max_bytes, "the snapshot")?;
    unpacker.all(entries)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_shift_into_the_sandbox_range() {
        let base = 0x7000_0000;
        assert_eq!(canonical(base, base), 0);
        assert_eq!(canonical(base + 1000, base), 1000);
        assert_eq!(canonical(0, base), NOBODY);
        assert_eq!(canonical(base + RANGE, base), NOBODY);
    }

    #[test]
    fn capture_merges_a_parent_and_round_trips_through_export() {
        let dir = tempfile::tempdir().unwrap();
        let base = 5000;
        let parent_upper = dir.path().join("u1");
        fs::create_dir(&parent_upper).unwrap();
        fs::write(parent_upper.join("kept"), "parent").unwrap();
        fs::write(parent_upper.join("replaced"), "old").unwrap();
        fs::create_dir(parent_upper.join("gone-dir")).unwrap();
        fs::write(parent_upper.join("gone-dir/x"), "x").unwrap();
        let parent = dir.path().join("p");
        capture(&parent_upper, base, None, &parent, 1 << 20).unwrap();
        let upper = dir.path().join("u2");
        fs::create_dir(&upper).unwrap();
        fs::write(upper.join("replaced"), "new").unwrap();
        whiteout(&upper.join("gone-dir")).unwrap();
        fs::create_dir(upper.join("fresh")).unwrap();
        set_opaque(&upper.join("fresh")).unwrap();
        std::os::unix::fs::symlink("kept", upper.join("link")).unwrap();
        let layer = dir.path().join("l");
        // A sparse file: its hole is not data.
        let sparse = fs::File::create(upper.join("sparse")).unwrap();
        sparse.set_len(512 << 10).unwrap();
        drop(sparse);
        let copied = capture(&upper, base, Some(&parent), &layer, 1 << 20).unwrap();
        assert_eq!(fs::metadata(layer.join("sparse")).unwrap().len(), 512 << 10);
        assert_eq!(fs::metadata(layer.join("sparse")).unwrap().blocks(), 0);
        // More data than the disk: refused.
        let full = dir.path().join("full");
        let refused = capture(&parent_upper, base, None, &full, 2).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
        assert_eq!(copied, 3);
        assert_eq!(fs::read_to_string(layer.join("kept")).unwrap(), "parent");
        assert_eq!(fs::read_to_string(layer.join("replaced")).unwrap(), "new");
        assert_eq!(fs::read_to_string(parent.join("replaced")).unwrap(), "old");
        assert!(is_whiteout(
            &fs::symlink_metadata(layer.join("gone-dir")).unwrap()
        ));
        assert!(opaque(&layer.join("fresh")));
        // Owners outside the sandbox's range became nobody.
        assert_eq!(fs::metadata(layer.join("kept")).unwrap().uid(), NOBODY);
        let mut file = Vec::new();
        export(&layer, b"{}", &mut file).unwrap();
        let back = dir.path().join("b");
        let manifest = import(&file[..], &back, 1 << 20).unwrap();
        assert_eq!(manifest, b"{}");
        assert_eq!(fs::read_to_string(back.join("replaced")).unwrap(), "new");
        assert!(is_whiteout(
            &fs::symlink_metadata(back.join("gone-dir")).unwrap()
        ));
        assert!(opaque(&back.join("fresh")));
        assert_eq!(fs::read_link(back.join("link")).unwrap(), Path::new("kept"));
        let too_small = import(&file[..], &dir.path().join("c"), 5);
        assert!(matches!(too_small, Err(ImportError::TooLarge(_))));
    }
}
