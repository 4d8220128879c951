//! The audit log: one JSON line ([`AuditEntry`]) per security-relevant event, appended to
//! `<data>/audit.log` (mode 0600) by one writer thread, rotated by size to `audit.log.1` …
//! `audit.log.N`.
//!
//! Invariants: nothing secret is written (keys by id; environment values never); a line is
//! whole or absent; a query sees every event recorded before it (it flushes through the
//! writer first). When the log cannot be written the daemon keeps serving and says so in its
//! own log: losing the service to a full disk would be worse.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use sbx_protocol::AuditEntry;
use serde_json::{Map, Value};

use crate::{now_ms, view, Caller, Error, Service};

/// Most entries one query returns.
pub const MAX_QUERY: usize = 10_000;

enum Message {
    Line(String),
    Flush(mpsc::Sender<()>),
}

/// Which entries a query wants; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Entries at or after this time (Unix ms).
    pub since: Option<i64>,
    /// An event name, or a prefix ending in `.` (`sandbox.`).
    pub event: Option<String>,
    pub user: Option<String>,
    pub sandbox_id: Option<String>,
    pub key_id: Option<String>,
    /// The newest this many (at most [`MAX_QUERY`]).
    pub limit: usize,
}

pub(crate) struct AuditLog {
    path: Option<PathBuf>,
    keep: usize,
    sender: Mutex<Option<mpsc::Sender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// No log (tests of lifecycle alone).
    pub(crate) fn disabled() -> AuditLog {
        AuditLog {
            path: None,
            keep: 0,
            sender: Mutex::new(None),
            writer: Mutex::new(None),
        }
    }

    /// Starts the writer of `path`.
    pub(crate) fn open(path: PathBuf, settings: sbx_config::Audit) -> std::io::Result<AuditLog> {
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        let (sender, receiver) = mpsc::channel();
        let mut writer = Writer {
            path: path.clone(),
            file,
            size,
            max_bytes: settings.max_bytes,
            keep: settings.keep,
        };
        let thread = std::thread::Builder::new()
            .name("sbx-audit".into())
            .spawn(move || {
                for message in receiver {
                    match message {
                        Message::Line(line) => writer.write(&line),
                        Message::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(AuditLog {
            path: Some(path),
            keep: settings.keep,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, message: Message) -> bool {
        let sender = self.sender.lock().expect("audit sender is never poisoned");
        sender.as_ref().is_some_and(|s| s.send(message).is_ok())
    }

    /// Waits until everything sent so far is written.
    fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.send(Message::Flush(done)) {
            let _ = wait.recv();
        }
    }

    /// Writes what is queued and stops the writer.
    pub(crate) fn close(&self) {
        self.sender
            .lock()
            .expect("audit sender is never poisoned")
            .take();
        let thread = self
            .writer
            .lock()
            .expect("audit writer is never poisoned")
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl Writer {
    fn write(&mut self, line: &str) {
        let bytes = line.len() as u64 + 1;
        if self.size > 0 && self.size + bytes > self.max_bytes {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, "cannot rotate the audit log");
            }
        }
        let mut buffer = Vec::with_capacity(line.len() + 1);
        buffer.extend_from_slice(line.as_bytes());
        buffer.push(b'\n');
        match self.file.write_all(&buffer) {
            Ok(()) => self.size += bytes,
            Err(e) => tracing::error!(error = %e, "cannot write the audit log"),
        }
    }

    /// `audit.log.(N-1)` → `audit.log.N`, …, `audit.log` → `audit.log.1`; a fresh `audit.log`.
    fn rotate(&mut self) -> std::io::Result<()> {
        for n in (1..self.keep).rev() {
            let from = numbered(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl AuditQuery {
    fn matches(&self, entry: &AuditEntry, at_ms: i64) -> bool {
        let event_matches = |wanted: &str| match wanted.strip_suffix('.') {
            Some(prefix) => entry
                .event
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.')),
            None => entry.event == wanted,
        };
        self.since.is_none_or(|since| at_ms >= since)
            && self.event.as_deref().is_none_or(event_matches)
            && self
                .user
                .as_deref()
                .is_none_or(|u| entry.user.as_deref() == Some(u))
            && self
                .sandbox_id
                .as_deref()
                .is_none_or(|s| entry.sandbox_id.as_deref() == Some(s))
            && self
                .key_id
                .as_deref()
                .is_none_or(|k| entry.key_id.as_deref() == Some(k))
    }
}

impl Service {
    /// Records an event done by `caller` (about `details`' `sandbox_id`, if it has one).
    pub fn audit(&self, caller: &Caller, event: &str, details: Value) {
        let mut details = match details {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => Map::from_iter([("value".to_owned(), other)]),
        };
        let sandbox_id = match details.remove("sandbox_id") {
            Some(Value::String(id)) => Some(id),
            _ => None,
        };
        let entry = AuditEntry {
            at: view::rfc3339(now_ms()),
            event: event.to_owned(),
            user: Some(caller.user.clone()),
            key_id: caller.key_id.clone(),
            ip: caller.ip.map(|ip| ip.to_string()),
            request_id: caller.request_id.clone(),
            sandbox_id,
            details,
        };
        let line = serde_json::to_string(&entry).expect("an audit entry serialises");
        self.inner.audit.send(Message::Line(line));
    }

    /// The newest matching entries, oldest first (admins only).
    pub fn audit_query(
        &self,
        caller: &Caller,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, Error> {
        caller.require_admin()?;
        let log = &self.inner.audit;
        let Some(path) = &log.path else {
            return Ok(Vec::new());
        };
        log.flush();
        let limit = query.limit.clamp(1, MAX_QUERY);
        let mut newest = VecDeque::with_capacity(limit.min(1024));
        let files = (1..=log.keep)
            .rev()
            .map(|n| numbered(path, n))
            .chain([path.clone()]);
        for file in files {
            let Ok(file) = File::open(&file) else {
                continue;
            };
            for line in BufReader::new(file).lines() {
                let line =
                    line.map_err(|e| Error::Internal(format!("cannot read the audit log: {e}")))?;
                let Ok(entry) = serde_json::from_str::<AuditEntry>(&line) else {
                    continue;
                };
                let at = humantime::parse_rfc3339(&entry.at)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                if query.matches(&entry, at) {
                    if newest.len() == limit {
                        newest.pop_front();
                    }
                    newest.push_back(entry);
                }
            }
        }
        Ok(newest.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> String {
        format!("{{\"at\":\"2026-01-01T00:00:00.000Z\",\"event\":\"e{n}\",\"details\":{{}}}}")
    }

    #[test]
    fn rotation_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(
            path.clone(),
            sbx_config::Audit {
                max_bytes: 200,
                keep: 2,
                ..Default::default()
            },
        )
        .unwrap();
        for n in 0..20 {
            log.send(Message::Line(line(n)));
        }
        log.close();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let current = read(&path);
        assert!(current.ends_with(&format!("{}\n", line(19))), "{current}");
        assert!(current.len() <= 200);
        assert!(!read(&numbered(&path, 1)).is_empty());
        assert!(!read(&numbered(&path, 2)).is_empty());
        assert!(!numbered(&path, 3).exists(), "only `keep` rotated files");
        // Lines are never split across files.
        for n in [1, 2] {
            for l in read(&numbered(&path, n)).lines() {
                serde_json::from_str::<AuditEntry>(l).unwrap();
            }
        }
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn event_filters_match_names_and_prefixes() {
        let entry: AuditEntry =
            serde_json::from_str(&line(0).replace("e0", "sandbox.created")).unwrap();
        let query = |event: &str| AuditQuery {
            event: Some(event.into()),
            ..Default::default()
        };
        assert!(query("sandbox.").matches(&entry, 0));
        assert!(query("sandbox.created").matches(&entry, 0));
        assert!(!query("sandbox.c").matches(&entry, 0));
        assert!(!query("exec").matches(&entry, 0));
        let since = AuditQuery {
            since: Some(10),
            ..Default::default()
        };
        assert!(!since.matches(&entry, 9));
        assert!(since.matches(&entry, 10));
    }
}
