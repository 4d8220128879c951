//! Watching a directory, done by a file child (inside the sandbox, as the requested user):
//! inotify on the directory (and, when recursive, on every directory under it, new ones as
//! they appear), each change written to the data pipe as one JSON line. The child runs until
//! the reader goes (the pipe breaks), the directory itself goes, or the sandbox ends — its
//! namespaces, and this child with them.
//!
//! Bounded: at most [`MAX_WATCHES`] directories are watched (past that, an `overflow` event
//! says some are not); the kernel's own queue overflowing is reported the same way.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Most directories one watch follows.
pub const MAX_WATCHES: usize = 10_000;

/// One change, as the daemon reads it.
#[derive(Debug, serde::Serialize)]
struct Change<'a> {
    /// `create`, `write`, `remove`, `rename`, `chmod`, or `overflow`.
    kind: &'a str,
    path: String,
    is_dir: bool,
}

struct Watcher {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    recursive: bool,
    overflowed: bool,
}

fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONLYDIR
        | AddWatchFlags::IN_DONT_FOLLOW
}

impl Watcher {
    /// Watches `dir` (and with `recursive` what is under it); false when the bound is reached.
    /// With `found`, what is already in the directories it starts watching is noted there:
    /// a directory made just now may have entries made before its watch began.
    fn add(&mut self, dir: &Path, depth: usize, found: &mut Option<Vec<(PathBuf, bool)>>) -> bool {
        if self.dirs.len() >= MAX_WATCHES {
            return false;
        }
        let Ok(wd) = self.inotify.add_watch(dir, flags()) else {
            return true;
        };
        self.dirs.insert(wd, dir.to_owned());
        if self.recursive && depth < 64 {
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                    if let Some(found) = found.as_mut() {
                        found.push((entry.path(), is_dir));
                    }
                    if is_dir && !self.add(&entry.path(), depth + 1, found) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

fn send(out: &mut impl Write, change: &Change<'_>) -> bool {
    let mut line = serde_json::to_vec(change).unwrap_or_default();
    line.push(b'\n');
    out.write_all(&line).is_ok()
}

/// Watches `dir` until the reader leaves or `dir` goes; true when it ended cleanly.
pub fn watch(dir: &Path, recursive: bool, data: fs::File) -> bool {
    let Ok(inotify) = Inotify::init(InitFlags::IN_CLOEXEC) else {
        return false;
    };
    let mut watcher = Watcher {
        inotify,
        dirs: HashMap::new(),
        recursive,
        overflowed: false,
    };
    let mut out = std::io::BufWriter::new(data);
    if !watcher.add(dir, 0, &mut None) {
        watcher.overflowed = true;
        let overflow = Change {
            kind: "overflow",
            path: dir.to_string_lossy().into_owned(),
            is_dir: true,
        };
        if !send(&mut out, &overflow) || out.flush().is_err() {
            return false;
        }
    }
    let Some(root) = watcher
        .dirs
        .iter()
        .find(|(_, path)| path.as_path() == dir)
        .map(|(wd, _)| *wd)
    else {
        return false;
    };
    loop {
        let Ok(events) = watcher.inotify.read_events() else {
            return false;
        };
        for event in events {
            let mask = event.mask;
            if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                let overflow = Change {
                    kind: "overflow",
                    path: dir.to_string_lossy().into_owned(),
                    is_dir: true,
                };
                if !send(&mut out, &overflow) {
                    return false;
                }
                continue;
            }
            let Some(base) = watcher.dirs.get(&event.wd).cloned() else {
                continue;
            };
            if mask.contains(AddWatchFlags::IN_IGNORED) {
                watcher.dirs.remove(&event.wd);
                if event.wd == root {
                    // The directory itself is gone: nothing more will come.
                    let _ = out.flush();
                    return true;
                }
                continue;
            }
            let path = match &event.name {
                Some(name) => base.join(OsStr::from_bytes(name.as_bytes())),
                None => base.clone(),
            };
            let is_dir = mask.contains(AddWatchFlags::IN_ISDIR);
            let kind = if mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
                if is_dir && watcher.recursive {
                    let mut found = Some(Vec::new());
                    let complete = watcher.add(&path, 1, &mut found);
                    let mut told = vec![(path.clone(), true)];
                    // What was made in it before its watch began: told as created.
                    told.extend(found.unwrap_or_default());
                    for (inner, inner_is_dir) in told {
                        let change = Change {
                            kind: "create",
                            path: inner.to_string_lossy().into_owned(),
                            is_dir: inner_is_dir,
                        };
                        if !send(&mut out, &change) {
                            return false;
                        }
                    }
                    if !complete && !watcher.overflowed {
                        watcher.overflowed = true;
                        let overflow = Change {
                            kind: "overflow",
                            path: path.to_string_lossy().into_owned(),
                            is_dir: true,
                        };
                        if !send(&mut out, &overflow) {
                            return false;
                        }
                    }
                    continue;
                }
                "create"
            } else if mask.intersects(AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CLOSE_WRITE) {
                "write"
            } else if mask.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_DELETE_SELF) {
                if event.name.is_none() {
                    // A watched directory's own removal is told by its parent's watch.
                    continue;
                }
                "remove"
            } else if mask.contains(AddWatchFlags::IN_MOVED_FROM) {
                "rename"
            } else if mask.contains(AddWatchFlags::IN_ATTRIB) {
                "chmod"
            } else {
                continue;
            };
            let change = Change {
                kind,
                path: path.to_string_lossy().into_owned(),
                is_dir,
            };
            if !send(&mut out, &change) {
                return false;
            }
        }
        // Told as they come: a reader that left is noticed here.
        if out.flush().is_err() {
            return false;
        }
    }
}
