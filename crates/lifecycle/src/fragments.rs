//! Fragments' files in and out: entries from a file map or a hostile tar stream become blobs
//! and entry records ([`Ingest`]); a fragment becomes a tar stream again ([`emit`]) for a
//! sandbox's files API to extract. Synchronous (the store is), run on blocking threads.
//!
//! Paths are plain relative names (no `..`, no empty or absolute ones, bounded in length and
//! depth); a file's content is cut into blobs of at most [`CHUNK`] bytes, named by their
//! SHA-256 and stored once (a fragment takes a reference to a blob it shares), so the daemon
//! holds at most one chunk of a file at a time. Only files, directories and symbolic links are
//! kept (hard links become copies); set-id bits are cleared. The tar stream is never written
//! to the host: a sandbox's own files API extracts it, with its own refusals.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use bytes::Bytes;
use sbx_backend::tarmeta;
use sbx_store::{EntryRow, Store};
use sha2::{Digest, Sha256};

use crate::Error;

/// Largest blob: a file's content is stored in pieces of this size.
pub const CHUNK: usize = 1 << 20;
/// Longest path of an entry, and most components.
const MAX_PATH: usize = 4096;
const MAX_DEPTH: usize = 128;
/// What an entry costs beyond its content, its path and its link's target: its record.
pub const ENTRY_COST: u64 = 256;
/// Most bytes of paths and link targets one fragment holds together (they are held in memory
/// while it is written).
const MAX_NAMES: u64 = 16 << 20;

/// Bounds of one fragment and what its owner may still store.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_files: u64,
    pub max_bytes: u64,
    /// Bytes the owner may still add, all fragments together.
    pub owner_room: u64,
}

/// A fragment being written: its blobs go in as they come, its entries at the end.
///
/// What it stores is counted as it goes, against the fragment's bound and its owner's room:
/// its files' bytes, and for every entry (files, directories and links alike) [`ENTRY_COST`]
/// and the bytes of its path and link target.
pub struct Ingest<'s> {
    store: &'s Store,
    fragment: String,
    bounds: Bounds,
    exclude: Vec<String>,
    entries: BTreeMap<String, EntryRow>,
    /// Its files' bytes.
    bytes: u64,
    /// What it stores: `bytes` and its entries' costs.
    stored: u64,
    /// Bytes of its paths and link targets.
    names: u64,
}

impl<'s> Ingest<'s> {
    pub fn new(store: &'s Store, fragment: &str, bounds: Bounds, exclude: Vec<String>) -> Self {
        Ingest {
            store,
            fragment: fragment.to_owned(),
            bounds,
            exclude,
            entries: BTreeMap::new(),
            bytes: 0,
            stored: 0,
            names: 0,
        }
    }

    /// `raw` as a plain relative path (`None`: the root itself, or excluded), with the first
    /// `strip` components taken off.
    pub fn path(&self, raw: &str, strip: usize) -> Result<Option<String>, Error> {
        if raw.len() > MAX_PATH || raw.contains('\0') {
            return Err(Error::Invalid(format!(
                "a path of at most {MAX_PATH} bytes without NUL, not {:?}",
                truncated(raw)
            )));
        }
        let mut parts = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => continue,
                ".." => {
                    return Err(Error::Invalid(format!(
                        "path {:?} has a '..' component",
                        truncated(raw)
                    )))
                }
                other => parts.push(other),
            }
        }
        let parts = parts.get(strip.min(parts.len())..).unwrap_or_default();
        if parts.is_empty() || parts.iter().any(|p| self.exclude.iter().any(|e| e == p)) {
            return Ok(None);
        }
        if parts.len() > MAX_DEPTH {
            return Err(Error::Invalid(format!(
                "path {:?} is deeper than {MAX_DEPTH}",
                truncated(raw)
            )));
        }
        Ok(Some(parts.join("/")))
    }

    /// Whether one more entry, named `path` (linking to `target`), may go in; what it costs
    /// beyond its content. A path given twice is refused: each entry's content is counted
    /// once, and what a fragment stores is what it holds.
    fn admit_entry(&self, path: &str, target: Option<&str>) -> Result<u64, Error> {
        if self.entries.contains_key(path) {
            return Err(Error::Invalid(format!(
                "{:?} is given twice (once normalized: no '.', '..', '//' or leading '/')",
                truncated(path)
            )));
        }
        if self.entries.len() as u64 >= self.bounds.max_files {
            return Err(Error::TooLarge(format!(
                "a fragment holds at most {} entries (projects.max_fragment_files)",
                self.bounds.max_files
            )));
        }
        let names = (path.len() + target.map_or(0, str::len)) as u64;
        if self.names + names > MAX_NAMES {
            return Err(Error::TooLarge(format!(
                "a fragment's paths and link targets hold at most {MAX_NAMES} bytes together"
            )));
        }
        let cost = ENTRY_COST + names;
        self.fits(cost)?;
        Ok(cost)
    }

    /// Whether `more` bytes beyond those counted fit the fragment's bound and its owner's room.
    fn fits(&self, more: u64) -> Result<(), Error> {
        let total = self.stored.saturating_add(more);
        if total > self.bounds.max_bytes {
            return Err(Error::TooLarge(format!(
                "a fragment stores at most {} bytes: its files' and {ENTRY_COST} per entry with its path (projects.max_fragment_bytes)",
                self.bounds.max_bytes
            )));
        }
        if total > self.bounds.owner_room {
            return Err(crate::access::quota_exceeded(
                "projects.max_bytes_per_user",
                "the project's owner stores as many bytes of fragments as allowed: delete old fragments first".into(),
                std::time::Duration::from_secs(60),
            ));
        }
        Ok(())
    }

    /// Records an entry that costs `cost` beyond its content, and `size` bytes of content.
    fn insert(&mut self, entry: EntryRow, cost: u64, size: u64) {
        self.names += cost - ENTRY_COST;
        self.stored += cost + size;
        self.bytes += size;
        self.entries.insert(entry.path.clone(), entry);
    }

    /// A regular file: its content is read to its end, a chunk at a time.
    pub fn file(&mut self, path: String, mode: u32, content: &mut dyn Read) -> Result<(), Error> {
        let cost = self.admit_entry(&path, None)?;
        let mut size = 0u64;
        let mut chunks = Vec::new();
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let filled = fill(content, &mut buffer)?;
            if filled == 0 {
                break;
            }
            size += filled as u64;
            self.fits(cost + size)?;
            let data = &buffer[..filled];
            let digest = hex(&Sha256::digest(data));
            if !self.store.reuse_blob(&self.fragment, &digest)? {
                self.store.put_blob(&self.fragment, &digest, data)?;
            }
            chunks.push(digest);
            if filled < CHUNK {
                break;
            }
        }
        self.insert(
            EntryRow {
                path,
                kind: "file".into(),
                mode: i64::from(mode & 0o777),
                size: size as i64,
                target: None,
                chunks: chunks.join(","),
            },
            cost,
            size,
        );
        Ok(())
    }

    pub fn dir(&mut self, path: String, mode: u32) -> Result<(), Error> {
        let cost = self.admit_entry(&path, None)?;
        self.insert(
            EntryRow {
                path,
                kind: "dir".into(),
                mode: i64::from(mode & 0o777),
                size: 0,
                target: None,
                chunks: String::new(),
            },
            cost,
            0,
        );
        Ok(())
    }

    pub fn symlink(&mut self, path: String, target: &str) -> Result<(), Error> {
        if target.is_empty() || target.len() > MAX_PATH || target.contains('\0') {
            return Err(Error::Invalid(format!(
                "the link {path:?} has no target or one longer than {MAX_PATH} bytes"
            )));
        }
        let cost = self.admit_entry(&path, Some(target))?;
        self.insert(
            EntryRow {
                path,
                kind: "symlink".into(),
                mode: 0o777,
                size: 0,
                target: Some(target.to_owned()),
                chunks: String::new(),
            },
            cost,
            0,
        );
        Ok(())
    }

    /// A hard link to an earlier file of the archive: a copy of it (its blobs referenced
    /// once more).
    fn hard_link(&mut self, path: String, to: &str) -> Result<(), Error> {
        let Some(original) = self.entries.get(to).filter(|e| e.kind == "file").cloned() else {
            return Err(Error::Invalid(format!(
                "the hard link {path:?} names {:?}, no earlier file of the archive",
                truncated(to)
            )));
        };
        let cost = self.admit_entry(&path, None)?;
        let size = u64::try_from(original.size).unwrap_or(0);
        // A copy counts as one: the fragment's and the owner's bounds before it is taken.
        self.fits(cost + size)?;
        for digest in original.chunks.split(',').filter(|d| !d.is_empty()) {
            if !self.store.reuse_blob(&self.fragment, digest)? {
                return Err(Error::internal("a blob of this fragment went missing"));
            }
        }
        self.insert(EntryRow { path, ..original }, cost, size);
        Ok(())
    }

    /// Every entry of a tar stream, with the first `strip` components of each path taken
    /// off. Devices, FIFOs and other kinds are skipped. The stream is read raw: GNU long names
    /// and links and PAX headers are read here with a bound (the `tar` crate would hold them
    /// whole, whatever their size) and applied to the entry after them.
    pub fn tar(&mut self, reader: impl Read, strip: usize) -> Result<(), Error> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(tar_error)?;
        let (mut name, mut link): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        for entry in entries.raw(true) {
            let mut entry = entry.map_err(tar_error)?;
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::GNULongName => {
                    name = Some(metadata(&mut entry)?);
                    continue;
                }
                tar::EntryType::GNULongLink => {
                    link = Some(metadata(&mut entry)?);
                    continue;
                }
                tar::EntryType::XHeader => {
                    for (key, value) in tarmeta::pax_records(&metadata(&mut entry)?) {
                        match key {
                            b"path" => name = Some(value.to_vec()),
                            b"linkpath" => link = Some(value.to_vec()),
                            _ => {}
                        }
                    }
                    continue;
                }
                tar::EntryType::XGlobalHeader => {
                    metadata(&mut entry)?;
                    continue;
                }
                _ => {}
            }
            let raw = name
                .take()
                .unwrap_or_else(|| entry.header().path_bytes().into_owned());
            let target = link.take().or_else(|| {
                entry
                    .header()
                    .link_name_bytes()
                    .map(std::borrow::Cow::into_owned)
            });
            let raw = String::from_utf8(raw)
                .map_err(|_| Error::Invalid("a path of the archive is not UTF-8".into()))?;
            let Some(path) = self.path(&raw, strip)? else {
                continue;
            };
            let target = target.map(|t| String::from_utf8_lossy(&t).into_owned());
            let mode = entry.header().mode().unwrap_or(0o644);
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    self.file(path, mode, &mut entry)?
                }
                tar::EntryType::Directory => self.dir(path, mode)?,
                tar::EntryType::Symlink => self.symlink(path, &target.unwrap_or_default())?,
                tar::EntryType::Link => {
                    let Some(to) = self.path(&target.unwrap_or_default(), strip)? else {
                        continue;
                    };
                    self.hard_link(path, &to)?
                }
                _ => continue,
            }
        }
        Ok(())
    }

    /// Makes the fragment ready: its regular files and their bytes.
    pub fn finish(self) -> Result<(u64, u64), Error> {
        let entries: Vec<EntryRow> = self.entries.into_values().collect();
        let files = entries.iter().filter(|e| e.kind == "file").count() as u64;
        self.store.finish_fragment(
            &self.fragment,
            &entries,
            files as i64,
            self.bytes as i64,
            self.stored as i64,
        )?;
        Ok((files, self.bytes))
    }
}

/// The data of a metadata entry (a long name, a PAX header), with a bound
/// (`sbx_backend::tarmeta`).
fn metadata(entry: &mut tar::Entry<'_, impl Read>) -> Result<Vec<u8>, Error> {
    let size = entry.header().entry_size().map_err(tar_error)?;
    tarmeta::read_metadata(entry, size).map_err(|e| match e {
        tarmeta::MetadataError::TooLarge(_) => Error::Invalid(format!("the archive has {e}")),
        tarmeta::MetadataError::Io(e) => tar_error(e),
    })
}

fn tar_error(error: io::Error) -> Error {
    // An error of the stream underneath (the client or the sandbox) comes through here too.
    Error::Invalid(format!("the archive cannot be read: {error}"))
}

fn truncated(text: &str) -> String {
    text.chars().take(80).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads until `buffer` is full or the content ends.
fn fill(content: &mut dyn Read, buffer: &mut [u8]) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < buffer.len() {
        match content.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(tar_error(e)),
        }
    }
    Ok(filled)
}

/// Writes a fragment's entries as a tar stream into `out`, a blob at a time. Fails when the
/// reader of the stream goes away.
pub fn emit(
    store: &Store,
    entries: &[EntryRow],
    mtime: u64,
    out: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let mut builder = tar::Builder::new(ChannelWriter {
        out,
        buffer: Vec::with_capacity(64 << 10),
    });
    builder.mode(tar::HeaderMode::Deterministic);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(entry.mode as u32);
        match entry.kind.as_str() {
            "dir" => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, &entry.path, io::empty())?;
            }
            "symlink" => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                let target = entry.target.as_deref().unwrap_or_default();
                builder.append_link(&mut header, &entry.path, target)?;
            }
            _ => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(entry.size as u64);
                let reader = BlobReader {
                    store,
                    digests: entry.chunks.split(',').filter(|d| !d.is_empty()).collect(),
                    next: 0,
                    current: io::Cursor::new(Vec::new()),
                };
                builder.append_data(&mut header, &entry.path, reader)?;
            }
        }
    }
    let mut writer = builder.into_inner()?;
    writer.flush()
}

/// A file's content, read from its blobs in order.
struct BlobReader<'s> {
    store: &'s Store,
    digests: Vec<&'s str>,
    next: usize,
    current: io::Cursor<Vec<u8>>,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(digest) = self.digests.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            let data = self
                .store
                .blob(digest)
                .map_err(io::Error::other)?
                .ok_or_else(|| io::Error::other("a blob of this fragment is missing"))?;
            self.current = io::Cursor::new(data);
        }
    }
}

/// Longest a reader may leave a piece of a fragment's archive untaken.
const PIECE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Sends `item` from a blocking thread, waiting at most [`PIECE_DEADLINE`] for the reader to
/// make room: a reader that takes nothing for a minute is given up (`TimedOut`), so that it
/// cannot hold the thread for ever; one that went is `BrokenPipe`. Off the runtime (a unit
/// test), it waits as long as it takes.
pub(crate) fn send_within_deadline(
    out: &tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    item: io::Result<Bytes>,
) -> io::Result<()> {
    let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away");
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime.block_on(async {
            match tokio::time::timeout(PIECE_DEADLINE, out.send(item)).await {
                Ok(sent) => sent.map_err(|_| gone()),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the reader took no piece for a minute",
                )),
            }
        }),
        Err(_) => out.blocking_send(item).map_err(|_| gone()),
    }
}

/// Bytes sent on a channel in pieces of 64 KiB.
struct ChannelWriter {
    out: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(64 << 10),
        ));
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away");
        // Room in the channel: no wait at all (the common case of a reader keeping up).
        let piece = match self.out.try_send(Ok(piece)) {
            Ok(()) => return Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return Err(gone()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(piece)) => piece,
        };
        send_within_deadline(&self.out, piece)
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= 64 << 10 {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest(store: &Store) -> Ingest<'_> {
        ingest_of(store, "f")
    }

    fn ingest_of<'s>(store: &'s Store, id: &str) -> Ingest<'s> {
        store
            .insert_fragment(&sbx_store::FragmentRow {
                id: id.into(),
                project_id: "p".into(),
                owner: "alice".into(),
                state: "writing".into(),
                created_by: "alice".into(),
                source: "tar".into(),
                message: None,
                files: 0,
                bytes: 0,
                created_at: 0,
            })
            .unwrap();
        Ingest::new(
            store,
            id,
            Bounds {
                max_files: 10,
                max_bytes: 3 * CHUNK as u64,
                owner_room: u64::MAX,
            },
            vec!["node_modules".into()],
        )
    }

    #[test]
    fn entries_without_content_are_not_free() {
        let store = Store::open_in_memory().unwrap();
        let mut i = ingest(&store);
        i.bounds.max_bytes = 1000;
        for n in 0..3 {
            i.dir(format!("d{n}"), 0o755).unwrap();
        }
        assert!(matches!(i.dir("d3".into(), 0o755), Err(Error::TooLarge(_))));
        // The owner's room counts them the same way (a quota, not a bound of the fragment).
        let mut i = ingest_of(&store, "g");
        i.bounds.owner_room = 650;
        i.symlink("a".into(), "t").unwrap();
        i.symlink("b".into(), &"t".repeat(100)).unwrap();
        assert!(matches!(i.symlink("c".into(), "t"), Err(Error::Limited(_))));
        assert_eq!(i.finish().unwrap(), (0, 0));
        // What it stores is what its owner is charged.
        assert_eq!(
            store.fragment_bytes("alice").unwrap(),
            2 * ENTRY_COST + 2 + 1 + 100
        );
    }

    #[test]
    fn paths_are_plain_and_relative() {
        let store = Store::open_in_memory().unwrap();
        let i = ingest(&store);
        assert_eq!(i.path("/a//b/./c", 0).unwrap().as_deref(), Some("a/b/c"));
        assert_eq!(i.path("user/a", 1).unwrap().as_deref(), Some("a"));
        assert_eq!(i.path("user", 1).unwrap(), None);
        assert_eq!(i.path("x/node_modules/y", 0).unwrap(), None);
        assert!(i.path("a/../../etc", 0).is_err());
        assert!(i.path("a\0b", 0).is_err());
    }

    #[test]
    fn a_tar_goes_in_and_comes_out_the_same() {
        let store = Store::open_in_memory().unwrap();
        let mut i = ingest(&store);
        let big = vec![7u8; CHUNK + 10];
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(big.len() as u64);
        h.set_mode(0o4755);
        tar.append_data(&mut h, "dir/big", &big[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        tar.append_link(&mut h, "copy", "dir/big").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        tar.append_link(&mut h, "link", "/etc/passwd").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Char);
        h.set_size(0);
        tar.append_data(&mut h, "null", io::empty()).unwrap();
        i.tar(&tar.into_inner().unwrap()[..], 0).unwrap();
        assert_eq!(i.finish().unwrap(), (2, 2 * big.len() as u64));
        // Two blobs: the big file's two chunks, shared by its copy.
        assert_eq!(store.blob_usage().unwrap().0, 2);
        let entries = store.fragment_entries("f").unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["copy", "dir/big", "link"]);
        assert_eq!(entries[1].mode, 0o755, "set-id bits cleared");

        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        emit(&store, &entries, 0, tx).unwrap();
        let mut out = Vec::new();
        while let Ok(piece) = rx.try_recv() {
            out.extend_from_slice(&piece.unwrap());
        }
        let mut archive = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            seen.push((e.path().unwrap().display().to_string(), content.len()));
        }
        assert_eq!(
            seen,
            [
                ("copy".to_owned(), big.len()),
                ("dir/big".to_owned(), big.len()),
                ("link".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn a_path_twice_and_an_oversized_long_name_are_refused() {
        let store = Store::open_in_memory().unwrap();
        let mut i = ingest(&store);
        i.file("a".into(), 0o644, &mut &b"1"[..]).unwrap();
        let again = i.path("./a", 0).unwrap().unwrap();
        assert!(matches!(
            i.file(again, 0o644, &mut &b"2"[..]),
            Err(Error::Invalid(_))
        ));
        // A GNU long name claiming 1 GiB: refused from its header, nothing read.
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(1 << 30);
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&[0; 4096]);
        let mut i = ingest_more(&store);
        assert!(matches!(i.tar(&bytes[..], 0), Err(Error::Invalid(_))));
        // A long name within the bound names the entry after it.
        let mut tar = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(150));
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        tar.append_data(&mut h, &long, &b"x"[..]).unwrap();
        let mut i = ingest_more(&store);
        i.tar(&tar.into_inner().unwrap()[..], 0).unwrap();
        assert!(i.entries.contains_key(&long));
    }

    #[test]
    fn bounds_hold() {
        let store = Store::open_in_memory().unwrap();
        let mut i = ingest(&store);
        let big = vec![1u8; 4 * CHUNK];
        assert!(matches!(
            i.file("a".into(), 0o644, &mut &big[..]),
            Err(Error::TooLarge(_))
        ));
        let mut i = ingest_more(&store);
        for n in 0..10 {
            i.dir(format!("d{n}"), 0o755).unwrap();
        }
        assert!(matches!(
            i.dir("d10".into(), 0o755),
            Err(Error::TooLarge(_))
        ));
    }

    fn ingest_more(store: &Store) -> Ingest<'_> {
        Ingest::new(
            store,
            "f",
            Bounds {
                max_files: 10,
                max_bytes: 1 << 20,
                owner_room: 1 << 20,
            },
            Vec::new(),
        )
    }
}
