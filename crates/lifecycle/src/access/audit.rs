//! The audit log: one JSON line ([`AuditEntry`]) per security-relevant event, appended by one
//! writer thread to `<data>/audit.log` (mode 0600), rotated by size to `audit.log.1`, `.2`, …
//!
//! Two trails. Events of callers with a key go to `audit.log`, which keeps at least
//! `audit.keep` rotated files and any younger than `audit.keep_for`, all within
//! `audit.max_total_bytes`. Refusals of callers without a valid key (`auth.failed`, refused
//! anonymous requests) go to `audit-anonymous.log`, bounded on its own (two files of at most
//! [`ANONYMOUS_MAX_BYTES`]). Refusals are written one by one up to [`BURST`] a minute per
//! client address (anonymous) or per key (in the main trail) — the rest of that minute becomes
//! one `*.suppressed` entry with their count. So anonymous traffic, however much of it, cannot
//! rotate the trail of what keys did away, nor flood the disk (2,000 anonymous requests with 60
//! KB paths once erased the whole history in 2.3 s), and a key's refused requests cost the
//! trail a line a second at most. Refusals go to the writer through a bounded queue: when the
//! writer falls behind they are counted, not queued.
//!
//! Invariants: nothing secret is written (keys by id; environment values never); a line is
//! whole or absent; a query sees every event recorded before it (it flushes through the
//! writer first). When the log cannot be written the daemon keeps serving and says so in its
//! own log: losing the service to a full disk would be worse.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Access, Caller};
use crate::{now_ms, view, Error};

/// One line of the audit log (its own format, kept by lifecycle; the API shows it as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    #[serde(default)]
    pub details: Map<String, Value>,
}

/// Most entries one query returns.
pub const MAX_QUERY: usize = 10_000;
/// Size at which the anonymous trail rotates (one rotated file is kept).
pub const ANONYMOUS_MAX_BYTES: u64 = 4 << 20;
/// Refusals written one by one per client address (or key) and minute.
pub const BURST: u64 = 20;
/// Messages waiting for the writer at most; refusals past it are dropped and counted.
const QUEUE: usize = 65_536;
/// Addresses whose anonymous refusals are counted apart; past it, all others share one count.
const ANONYMOUS_ADDRESSES: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);

enum Message {
    Line(String),
    /// A refusal, counted against `bucket` (an address or a key); `anonymous` ones go to the
    /// anonymous trail.
    Refusal {
        bucket: String,
        anonymous: bool,
        line: String,
    },
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
    /// The main trail and the anonymous one.
    paths: Option<(PathBuf, PathBuf)>,
    sender: Mutex<Option<mpsc::SyncSender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Refusals dropped because the writer's queue was full (reported by the writer).
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl AuditLog {
    /// No log (tests of lifecycle alone).
    pub(crate) fn disabled() -> AuditLog {
        AuditLog {
            paths: None,
            sender: Mutex::new(None),
            writer: Mutex::new(None),
            dropped: Default::default(),
        }
    }

    /// Starts the writer of `path` and of its anonymous companion beside it.
    pub(crate) fn open(path: PathBuf, settings: sbx_config::Audit) -> std::io::Result<AuditLog> {
        let anonymous_path = anonymous_path(&path);
        let mut main = Writer::open(path.clone(), settings)?;
        let mut anonymous_writer = Writer::open(
            anonymous_path.clone(),
            sbx_config::Audit {
                max_bytes: ANONYMOUS_MAX_BYTES.min(settings.max_bytes),
                keep: 1,
                keep_for: Duration::ZERO,
                max_total_bytes: 2 * ANONYMOUS_MAX_BYTES.min(settings.max_bytes),
            },
        )?;
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer_dropped = dropped.clone();
        let thread = std::thread::Builder::new()
            .name("sbx-audit".into())
            .spawn(move || {
                let mut bursts = Bursts::default();
                let mut closed_at = SystemTime::now();
                loop {
                    let message = match receiver.recv_timeout(Duration::from_secs(1)) {
                        Ok(message) => Some(message),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    // Windows end once a second, not at every message.
                    let now = SystemTime::now();
                    if now
                        .duration_since(closed_at)
                        .is_ok_and(|d| d >= Duration::from_secs(1))
                    {
                        closed_at = now;
                        for (anonymous, summary) in bursts.close_windows(now) {
                            if anonymous {
                                anonymous_writer.write(&summary);
                            } else {
                                main.write(&summary);
                            }
                        }
                        let lost = writer_dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
                        if lost > 0 {
                            anonymous_writer.write(&dropped_line(lost));
                        }
                    }
                    match message {
                        Some(Message::Line(line)) => main.write(&line),
                        Some(Message::Refusal {
                            bucket,
                            anonymous,
                            line,
                        }) if bursts.admit(&bucket, anonymous, SystemTime::now()) => {
                            if anonymous {
                                anonymous_writer.write(&line);
                            } else {
                                main.write(&line);
                            }
                        }
                        Some(Message::Refusal { .. }) => {}
                        Some(Message::Flush(done)) => {
                            let _ = done.send(());
                        }
                        None => {}
                    }
                }
                for (anonymous, summary) in bursts.close_all() {
                    if anonymous {
                        anonymous_writer.write(&summary);
                    } else {
                        main.write(&summary);
                    }
                }
            })?;
        Ok(AuditLog {
            paths: Some((path, anonymous_path)),
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(thread)),
            dropped,
        })
    }

    fn send(&self, message: Message) -> bool {
        let sender = self.sender.lock().expect("audit sender is never poisoned");
        sender.as_ref().is_some_and(|s| s.send(message).is_ok())
    }

    /// Queues a refusal if there is room; counts it as dropped otherwise.
    fn offer(&self, message: Message) {
        let sender = self.sender.lock().expect("audit sender is never poisoned");
        if let Some(sender) = sender.as_ref() {
            if let Err(mpsc::TrySendError::Full(_)) = sender.try_send(message) {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
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

/// `audit.log` → `audit-anonymous.log`, beside it.
fn anonymous_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    path.with_file_name(format!("{stem}-anonymous.log"))
}

/// Per client address or key: refusals written in the current minute, and those counted
/// instead.
#[derive(Default)]
struct Bursts {
    windows: HashMap<String, Burst>,
}

struct Burst {
    started: SystemTime,
    anonymous: bool,
    written: u64,
    suppressed: u64,
}

impl Bursts {
    /// Whether a refusal counted against `bucket` is written (else it is counted).
    fn admit(&mut self, bucket: &str, anonymous: bool, now: SystemTime) -> bool {
        let key = if self.windows.len() >= ANONYMOUS_ADDRESSES && !self.windows.contains_key(bucket)
        {
            if anonymous {
                "other addresses"
            } else {
                "other keys"
            }
        } else {
            bucket
        };
        let burst = self.windows.entry(key.to_owned()).or_insert(Burst {
            started: now,
            anonymous,
            written: 0,
            suppressed: 0,
        });
        if burst.written < BURST {
            burst.written += 1;
            true
        } else {
            burst.suppressed += 1;
            false
        }
    }

    /// Summaries (and whether each is anonymous) of the windows that are over; they end.
    fn close_windows(&mut self, now: SystemTime) -> Vec<(bool, String)> {
        let over = |b: &Burst| now.duration_since(b.started).is_ok_and(|age| age >= WINDOW);
        let ended: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, b)| over(b))
            .map(|(bucket, _)| bucket.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|bucket| {
                let burst = self.windows.remove(&bucket)?;
                Some((burst.anonymous, summary(&bucket, &burst)?))
            })
            .collect()
    }

    fn close_all(&mut self) -> Vec<(bool, String)> {
        self.windows
            .drain()
            .filter_map(|(bucket, burst)| Some((burst.anonymous, summary(&bucket, &burst)?)))
            .collect()
    }
}

/// The `*.suppressed` line of a window that counted refusals instead of writing them.
fn summary(bucket: &str, burst: &Burst) -> Option<String> {
    if burst.suppressed == 0 {
        return None;
    }
    let since = burst
        .started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut details = Map::new();
    details.insert("count".into(), burst.suppressed.into());
    details.insert("since".into(), view::rfc3339(since).into());
    let (event, user, key_id, ip) = if burst.anonymous {
        let ip = (bucket != "-").then(|| bucket.to_owned());
        ("auth.suppressed", "anonymous".to_owned(), None, ip)
    } else {
        let key = bucket.strip_prefix("key:").unwrap_or(bucket).to_owned();
        ("refusals.suppressed", "-".to_owned(), Some(key), None)
    };
    let entry = AuditEntry {
        at: view::rfc3339(now_ms()),
        event: event.into(),
        user: Some(user),
        key_id,
        ip,
        request_id: None,
        sandbox_id: None,
        details,
    };
    serde_json::to_string(&entry).ok()
}

/// The line that says how many refusals the writer's full queue lost.
fn dropped_line(count: u64) -> String {
    let mut details = Map::new();
    details.insert("count".into(), count.into());
    let entry = AuditEntry {
        at: view::rfc3339(now_ms()),
        event: "audit.dropped".into(),
        user: Some("sbx".into()),
        key_id: None,
        ip: None,
        request_id: None,
        sandbox_id: None,
        details,
    };
    serde_json::to_string(&entry).expect("an audit entry serialises")
}

struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    settings: sbx_config::Audit,
}

impl Writer {
    fn open(path: PathBuf, settings: sbx_config::Audit) -> std::io::Result<Writer> {
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path,
            file,
            size,
            settings,
        })
    }

    fn write(&mut self, line: &str) {
        let bytes = line.len() as u64 + 1;
        if self.size > 0 && self.size + bytes > self.settings.max_bytes {
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

    /// `audit.log.N` → `audit.log.(N+1)`, …, `audit.log` → `audit.log.1`; a fresh `audit.log`;
    /// then the rotated files past what the settings keep go, oldest first.
    fn rotate(&mut self) -> std::io::Result<()> {
        let mut rotated = numbered_files(&self.path);
        for (n, _) in rotated.iter().rev() {
            std::fs::rename(numbered(&self.path, *n), numbered(&self.path, n + 1))?;
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        rotated = numbered_files(&self.path);
        let now = SystemTime::now();
        let mut total: u64 = rotated.iter().map(|(_, meta)| meta.len()).sum();
        // Oldest first.
        for (n, meta) in rotated.iter().rev() {
            let old = meta
                .modified()
                .ok()
                .and_then(|at| now.duration_since(at).ok())
                .is_none_or(|age| age > self.settings.keep_for);
            let beyond_keep = *n > self.settings.keep;
            let over_total = total + self.settings.max_bytes > self.settings.max_total_bytes;
            if (beyond_keep && old) || over_total {
                std::fs::remove_file(numbered(&self.path, *n))?;
                total -= meta.len();
            }
        }
        Ok(())
    }
}

/// The rotated files of `path` (`path.1`, `path.2`, …), by number.
fn numbered_files(path: &Path) -> Vec<(usize, std::fs::Metadata)> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<(usize, std::fs::Metadata)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    let file = entry.file_name();
                    let n = file
                        .to_str()?
                        .strip_prefix(name.as_str())?
                        .strip_prefix('.')?
                        .parse::<usize>()
                        .ok()?;
                    Some((n, entry.metadata().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|(n, _)| *n);
    files
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

impl Access {
    /// Records an event done by `caller` (about `details`' `sandbox_id`, if it has one).
    pub fn audit(&self, caller: &Caller, event: &str, details: Value) {
        let line = entry_line(caller, event, details);
        self.log.send(Message::Line(line));
    }

    /// Records a refusal of a caller without a (valid) key, in the anonymous trail (see the
    /// module's documentation).
    pub fn audit_anonymous(&self, caller: &Caller, event: &str, details: Value) {
        let bucket = caller
            .ip
            .map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        let line = entry_line(caller, event, details);
        self.log.offer(Message::Refusal {
            bucket,
            anonymous: true,
            line,
        });
    }

    /// Records a refused request: a caller with a key in the main trail, anyone else in the
    /// anonymous one; past a burst, counted (see the module's documentation).
    pub fn audit_refusal(&self, caller: &Caller, event: &str, details: Value) {
        let Some(key) = &caller.key_id else {
            if caller.admin {
                // A daemon without authentication: every caller is the admin, on this host.
                return self.audit(caller, event, details);
            }
            return self.audit_anonymous(caller, event, details);
        };
        let line = entry_line(caller, event, details);
        self.log.offer(Message::Refusal {
            bucket: format!("key:{key}"),
            anonymous: false,
            line,
        });
    }

    /// The newest matching entries, oldest first (admins only).
    pub fn audit_query(
        &self,
        caller: &Caller,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, Error> {
        caller.require_admin()?;
        let log = &self.log;
        let Some((main, anonymous)) = &log.paths else {
            return Ok(Vec::new());
        };
        log.flush();
        let limit = query.limit.clamp(1, MAX_QUERY);
        // The newest `limit` of each trail, then the newest `limit` of both.
        let mut newest: Vec<AuditEntry> = read_newest(main, query, limit)?.into();
        newest.extend(read_newest(anonymous, query, limit)?);
        newest.sort_by(|a, b| a.at.cmp(&b.at));
        let skip = newest.len().saturating_sub(limit);
        newest.drain(..skip);
        Ok(newest)
    }
}

/// The newest `limit` entries of one trail (its rotated files, oldest first, then itself) that
/// match `query`.
fn read_newest(
    path: &Path,
    query: &AuditQuery,
    limit: usize,
) -> Result<VecDeque<AuditEntry>, Error> {
    let mut newest = VecDeque::with_capacity(limit.min(1024));
    let files = numbered_files(path)
        .into_iter()
        .rev()
        .map(|(n, _)| numbered(path, n))
        .chain([path.to_owned()]);
    for file in files {
        let Ok(file) = File::open(&file) else {
            continue;
        };
        for line in BufReader::new(file).lines() {
            let line =
                line.map_err(|e| Error::internal(format!("cannot read the audit log: {e}")))?;
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
    Ok(newest)
}

/// One entry's line.
fn entry_line(caller: &Caller, event: &str, details: Value) -> String {
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
    serde_json::to_string(&entry).expect("an audit entry serialises")
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
                keep_for: Duration::ZERO,
                max_total_bytes: 1 << 20,
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
    fn recent_history_is_kept_beyond_keep_within_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let settings = sbx_config::Audit {
            max_bytes: 200,
            keep: 2,
            keep_for: Duration::from_secs(3600),
            max_total_bytes: 1000,
        };
        let log = AuditLog::open(path.clone(), settings).unwrap();
        for n in 0..40 {
            log.send(Message::Line(line(n)));
        }
        log.close();
        // Younger than keep_for: more than `keep` rotated files stay, as many as fit.
        let rotated = numbered_files(&path);
        assert!(rotated.len() > 2, "{} files", rotated.len());
        let total: u64 = rotated.iter().map(|(_, m)| m.len()).sum::<u64>()
            + std::fs::metadata(&path).unwrap().len();
        assert!(total <= 1000, "{total} bytes");
    }

    #[test]
    fn anonymous_refusals_are_written_in_bursts_then_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(path.clone(), sbx_config::Audit::default()).unwrap();
        for n in 0..1000 {
            let ip = if n % 100 == 0 {
                "192.0.2.9"
            } else {
                "192.0.2.1"
            };
            log.send(Message::Refusal {
                bucket: ip.into(),
                anonymous: true,
                line: line(n),
            });
        }
        log.send(Message::Line(line(7777)));
        log.close();
        let anonymous = std::fs::read_to_string(dir.path().join("audit-anonymous.log")).unwrap();
        let lines: Vec<&str> = anonymous.lines().collect();
        // 20 of the flooding address, the other's 10, and one summary of the rest.
        assert_eq!(lines.len(), 20 + 10 + 1, "{anonymous}");
        let summary: AuditEntry = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(summary.event, "auth.suppressed");
        assert_eq!(summary.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(summary.details["count"], 990 - 20);
        // The main trail has only what keys did.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", line(7777))
        );
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
