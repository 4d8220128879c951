//! The embedded SQLite store.
//!
//! Owns: the schema (numbered migrations applied at open), the queries, the row types.
//! Must never: hold business rules (which transitions are allowed is lifecycle's), or call a
//! backend. States are stored as the text lifecycle gives; the store only filters on them.
//!
//! Every call takes the connection mutex for one short statement or transaction; no call
//! spans a backend operation (lifecycle's invariant), so the lock is never held for long.

mod migrations;
mod projects;

pub use projects::{ActiveRow, EntryRow, FragmentRow, ProjectRow};

/// The states whose sandbox no longer holds its name: the partial unique index on names
/// (`migrations.rs`) lists them literally, as SQL must; lifecycle's state machine is the
/// source of truth, and a test on each side checks that the two agree.
pub const STATES_RELEASING_NAMES: [&str; 2] = ["destroyed", "failed"];

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a live sandbox is already named {0:?}")]
    NameTaken(String),
    #[error("a project is already named {0:?}")]
    ProjectNameTaken(String),
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this sbx understands ({known})")]
    TooNew { found: i64, known: i64 },
}

/// One sandbox record.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRow {
    pub id: String,
    pub name: Option<String>,
    pub state: String,
    pub state_reason: Option<String>,
    pub backend: String,
    pub template: String,
    /// JSON owned by lifecycle (resources, environment).
    pub spec: String,
    /// JSON object of string labels.
    pub metadata: String,
    /// JSON owned by the backend; set once the backend instance exists.
    pub handle: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub destroyed_at: Option<i64>,
    pub profile: String,
    /// Lifetime given to the current instance, in milliseconds.
    pub ttl_ms: i64,
    /// When the current backend instance started (create or recreate), Unix ms.
    pub started_at: i64,
    /// Deadline, Unix ms.
    pub expires_at: i64,
    /// The user whose key created it (`None`: made before sbx had users; admins only).
    pub owner: Option<String>,
    /// When it was paused (while it is), Unix ms.
    pub paused_at: Option<i64>,
    /// The lifetime it had left when paused, if its clock stopped (see migration 4).
    pub paused_remaining_ms: Option<i64>,
}

/// An API key: its public id, whose it is, and a hash of its secret part.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub id: String,
    pub user: String,
    pub admin: bool,
    /// Hex SHA-256 of the secret part.
    pub hash: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// Which sandboxes [`Store::totals`] counts: those in `states`, and when given, of `owner`,
/// of `profile`, and made by one of `backends`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub states: &'a [&'a str],
    pub owner: Option<&'a str>,
    pub profile: Option<&'a str>,
    pub backends: Option<&'a [&'a str]>,
}

/// What [`Store::totals`] counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub count: u64,
    /// One sum per field asked for, in order.
    pub sums: Vec<f64>,
    /// The earliest `expires_at` among them.
    pub soonest_expiry: Option<i64>,
}

/// A state change, as recorded in the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub seq: i64,
    pub sandbox_id: String,
    pub at: i64,
    pub from_state: Option<String>,
    pub to_state: String,
    pub reason: Option<String>,
}

/// One snapshot record.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub id: String,
    pub name: Option<String>,
    pub owner: Option<String>,
    /// `creating`, `ready`, `deleted`, `purged` (see migration 5).
    pub state: String,
    pub backend: String,
    pub template: String,
    pub profile: String,
    /// The sandbox it was taken from (`None`: imported).
    pub sandbox_id: Option<String>,
    /// The snapshot that sandbox started from.
    pub parent: Option<String>,
    pub size_bytes: i64,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

const SNAPSHOT_COLUMNS: &str = "id, name, owner, state, backend, template, profile, sandbox_id, \
                                parent, size_bytes, created_at, deleted_at";

fn snapshot_row(r: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        id: r.get(0)?,
        name: r.get(1)?,
        owner: r.get(2)?,
        state: r.get(3)?,
        backend: r.get(4)?,
        template: r.get(5)?,
        profile: r.get(6)?,
        sandbox_id: r.get(7)?,
        parent: r.get(8)?,
        size_bytes: r.get(9)?,
        created_at: r.get(10)?,
        deleted_at: r.get(11)?,
    })
}

pub struct Store {
    connection: Mutex<Connection>,
}

const SANDBOX_COLUMNS: &str = "id, name, state, state_reason, backend, template, spec, metadata, \
                               handle, created_at, updated_at, destroyed_at, profile, ttl_ms, \
                               started_at, expires_at, owner, paused_at, paused_remaining_ms";

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::setup(Connection::open(path)?)
    }

    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::setup(Connection::open_in_memory()?)
    }

    fn setup(mut connection: Connection) -> Result<Store, StoreError> {
        // WAL: readers never wait for the writer; NORMAL sync is durable across a daemon crash
        // (the OS still has the pages), which is what sbx's crash safety is about.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut connection)?;
        Ok(Store {
            connection: Mutex::new(connection),
        })
    }

    fn with<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite inconsistent (statements are atomic),
        // so a poisoned lock is still safe to use.
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        work(&mut connection)
    }

    /// Inserts a new sandbox and its first event.
    pub fn insert_sandbox(&self, row: &SandboxRow) -> Result<EventRow, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let inserted = tx.execute(
                &format!("INSERT INTO sandboxes ({SANDBOX_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"),
                params![
                    row.id, row.name, row.state, row.state_reason, row.backend, row.template,
                    row.spec, row.metadata, row.handle, row.created_at, row.updated_at,
                    row.destroyed_at, row.profile, row.ttl_ms, row.started_at, row.expires_at,
                    row.owner, row.paused_at, row.paused_remaining_ms
                ],
            );
            match inserted {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation && row.name.is_some() =>
                {
                    return Err(StoreError::NameTaken(row.name.clone().unwrap_or_default()))
                }
                other => {
                    other?;
                }
            }
            let event = insert_event(&tx, &row.id, row.created_at, None, &row.state, row.state_reason.as_deref())?;
            tx.commit()?;
            Ok(event)
        })
    }

    pub fn insert_snapshot(&self, row: &SnapshotRow) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                &format!("INSERT INTO snapshots ({SNAPSHOT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                params![
                    row.id, row.name, row.owner, row.state, row.backend, row.template,
                    row.profile, row.sandbox_id, row.parent, row.size_bytes, row.created_at,
                    row.deleted_at
                ],
            )?;
            Ok(())
        })
    }

    pub fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRow>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?1"),
                [id],
                snapshot_row,
            )
            .optional()?)
        })
    }

    /// Snapshots in one of `states`, of `owner` when given, oldest first.
    pub fn snapshots(
        &self,
        states: &[&str],
        owner: Option<&str>,
    ) -> Result<Vec<SnapshotRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM snapshots \
                 WHERE (?1 IS NULL OR owner = ?1) ORDER BY created_at, id"
            ))?;
            let rows = statement
                .query_map([owner], snapshot_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .filter(|r| states.contains(&r.state.as_str()))
                .collect())
        })
    }

    /// Sets a snapshot's state (and size, and when it was deleted, when given).
    pub fn set_snapshot_state(
        &self,
        id: &str,
        state: &str,
        size_bytes: Option<i64>,
        deleted_at: Option<i64>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE snapshots SET state = ?2, size_bytes = coalesce(?3, size_bytes), \
                 deleted_at = coalesce(?4, deleted_at) WHERE id = ?1",
                params![id, state, size_bytes, deleted_at],
            )?;
            Ok(())
        })
    }

    /// Forgets a snapshot record (one whose capture failed).
    pub fn remove_snapshot(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Replaces a sandbox's spec (lifecycle's JSON).
    pub fn set_sandbox_spec(&self, id: &str, spec: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET spec = ?2 WHERE id = ?1",
                params![id, spec],
            )?;
            Ok(())
        })
    }

    pub fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRow>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE id = ?1"),
                [id],
                sandbox_row,
            )
            .optional()?)
        })
    }

    /// The sandbox called `name` among those not in one of `dead_states`.
    pub fn find_by_name(
        &self,
        name: &str,
        owner: Option<&str>,
        dead_states: &[&str],
    ) -> Result<Option<SandboxRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE name = ?1
                 AND (?2 IS NULL OR owner = ?2) ORDER BY created_at DESC"
            ))?;
            let rows = statement.query_map(params![name, owner], sandbox_row)?;
            for row in rows {
                let row = row?;
                if !dead_states.contains(&row.state.as_str()) {
                    return Ok(Some(row));
                }
            }
            Ok(None)
        })
    }

    /// One owner's sandboxes in any of `states`, oldest first.
    pub fn sandboxes_of(
        &self,
        owner: &str,
        states: &[&str],
    ) -> Result<Vec<SandboxRow>, StoreError> {
        self.with(|c| {
            let marks = vec!["?"; states.len()].join(", ");
            let mut statement = c.prepare_cached(&format!(
                "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE owner = ? AND state IN ({marks})
                 ORDER BY created_at, id"
            ))?;
            let values = std::iter::once(owner).chain(states.iter().copied());
            let rows = statement.query_map(rusqlite::params_from_iter(values), sandbox_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Totals over the sandboxes in any of `states`, of one `owner` and one `profile` when
    /// given: how many, the sum of each numeric member of their `spec` named in `fields` (one
    /// sum per field, in order; absent members count 0) and the earliest deadline.
    pub fn totals(&self, scope: &Scope<'_>, fields: &[&str]) -> Result<Totals, StoreError> {
        self.with(|c| {
            let sums: String = fields
                .iter()
                .enumerate()
                .map(|(i, _)| format!(", TOTAL(json_extract(spec, ?{}))", i + 3))
                .collect();
            let first_state = 3 + fields.len();
            let marks = |from: usize, count: usize| {
                (from..from + count)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let states = marks(first_state, scope.states.len());
            let backends = match scope.backends {
                Some(backends) => format!(
                    " AND backend IN ({})",
                    marks(first_state + scope.states.len(), backends.len())
                ),
                None => String::new(),
            };
            let mut statement = c.prepare_cached(&format!(
                "SELECT COUNT(*), MIN(expires_at){sums} FROM sandboxes
                 WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR profile = ?2)
                 AND state IN ({states}){backends}"
            ))?;
            let paths: Vec<String> = fields.iter().map(|f| format!("$.{f}")).collect();
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![&scope.owner, &scope.profile];
            values.extend(paths.iter().map(|p| p as &dyn rusqlite::ToSql));
            values.extend(scope.states.iter().map(|s| s as &dyn rusqlite::ToSql));
            if let Some(backends) = scope.backends {
                values.extend(backends.iter().map(|b| b as &dyn rusqlite::ToSql));
            }
            Ok(statement.query_row(values.as_slice(), |row| {
                let count: i64 = row.get(0)?;
                let soonest_expiry: Option<i64> = row.get(1)?;
                let sums = (0..fields.len())
                    .map(|i| row.get::<_, f64>(i + 2))
                    .collect::<Result<_, _>>()?;
                Ok(Totals {
                    count: count as u64,
                    sums,
                    soonest_expiry,
                })
            })?)
        })
    }

    pub fn list_sandboxes(&self, states: &[&str]) -> Result<Vec<SandboxRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {SANDBOX_COLUMNS} FROM sandboxes ORDER BY created_at, id"
            ))?;
            let rows = statement.query_map([], sandbox_row)?;
            let mut out = Vec::new();
            for row in rows {
                let row = row?;
                if states.is_empty() || states.contains(&row.state.as_str()) {
                    out.push(row);
                }
            }
            Ok(out)
        })
    }

    pub fn insert_key(&self, key: &KeyRow) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO keys (id, user, admin, hash, created_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.id, key.user, key.admin, key.hash, key.created_at, key.revoked_at],
            )?;
            Ok(())
        })
    }

    /// Every key, revoked ones included, oldest first.
    pub fn keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT id, user, admin, hash, created_at, revoked_at FROM keys ORDER BY created_at, id",
            )?;
            let rows = statement.query_map([], |r| {
                Ok(KeyRow {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    admin: r.get(2)?,
                    hash: r.get(3)?,
                    created_at: r.get(4)?,
                    revoked_at: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Marks a key revoked; false when there is no such key or it already was.
    pub fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        self.with(|c| {
            let changed = c.execute(
                "UPDATE keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, at],
            )?;
            Ok(changed == 1)
        })
    }

    /// How many sandboxes are in each state.
    pub fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|c| {
            let mut statement =
                c.prepare_cached("SELECT state, COUNT(*) FROM sandboxes GROUP BY state")?;
            let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Moves a sandbox to `to_state` (possibly the state it is in), updates what the change
    /// carries, and logs it. Returns the logged event.
    pub fn transition(&self, change: &Transition<'_>) -> Result<EventRow, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let from: Option<String> = tx
                .query_row(
                    "SELECT state FROM sandboxes WHERE id = ?1",
                    [change.id],
                    |r| r.get(0),
                )
                .optional()?;
            let (started_at, ttl_ms, expires_at) = match change.lifetime {
                Some(l) => (Some(l.started_at), Some(l.ttl_ms), Some(l.expires_at)),
                None => (None, None, None),
            };
            let (paused_at, paused_remaining_ms) = match change.pause {
                Some(p) => (p.at, p.remaining_ms),
                None => (None, None),
            };
            tx.execute(
                "UPDATE sandboxes SET state = ?2, state_reason = ?3, updated_at = ?4,
                     destroyed_at = COALESCE(?5, destroyed_at),
                     handle = CASE WHEN ?6 THEN ?7 ELSE handle END,
                     started_at = COALESCE(?8, started_at),
                     ttl_ms = COALESCE(?9, ttl_ms),
                     expires_at = COALESCE(?10, expires_at),
                     paused_at = CASE WHEN ?11 THEN ?12 ELSE paused_at END,
                     paused_remaining_ms = CASE WHEN ?11 THEN ?13 ELSE paused_remaining_ms END
                 WHERE id = ?1",
                params![
                    change.id,
                    change.to_state,
                    change.reason,
                    change.at,
                    change.destroyed_at,
                    change.handle.is_some(),
                    change.handle.flatten(),
                    started_at,
                    ttl_ms,
                    expires_at,
                    change.pause.is_some(),
                    paused_at,
                    paused_remaining_ms
                ],
            )?;
            let event = insert_event(
                &tx,
                change.id,
                change.at,
                from.as_deref(),
                change.to_state,
                change.reason,
            )?;
            tx.commit()?;
            Ok(event)
        })
    }

    /// The event log of one sandbox, oldest first.
    pub fn events(&self, sandbox_id: &str) -> Result<Vec<EventRow>, StoreError> {
        self.events_after(0, Some(sandbox_id), None, i64::MAX)
    }

    /// Events with a sequence number above `after` (of one sandbox, or all; of one owner's
    /// sandboxes, or all), oldest first.
    pub fn events_after(
        &self,
        after: i64,
        sandbox_id: Option<&str>,
        owner: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare_cached(
                "SELECT e.seq, e.sandbox_id, e.at, e.from_state, e.to_state, e.reason
                 FROM events e JOIN sandboxes s ON s.id = e.sandbox_id
                 WHERE e.seq > ?1 AND (?2 IS NULL OR e.sandbox_id = ?2)
                   AND (?3 IS NULL OR s.owner = ?3)
                 ORDER BY e.seq LIMIT ?4",
            )?;
            let rows = statement.query_map(params![after, sandbox_id, owner, limit], event_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Who owns a sandbox: `None` if there is no such sandbox.
    pub fn owner_of(&self, sandbox_id: &str) -> Result<Option<Option<String>>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT owner FROM sandboxes WHERE id = ?1",
                [sandbox_id],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    /// The newest event's sequence number (0 when there is none).
    pub fn last_event(&self) -> Result<i64, StoreError> {
        self.with(
            |c| Ok(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?),
        )
    }
}

/// A new lifetime: set at create, extend and recreate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub started_at: i64,
    pub ttl_ms: i64,
    pub expires_at: i64,
}

/// A state change to record.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub id: &'a str,
    pub to_state: &'a str,
    pub reason: Option<&'a str>,
    pub at: i64,
    /// Set when the change destroys the sandbox.
    pub destroyed_at: Option<i64>,
    /// `Some(new)` replaces the stored handle (`Some(None)` clears it); `None` keeps it.
    pub handle: Option<Option<&'a str>>,
    /// Replaces the lifetime when set.
    pub lifetime: Option<Lifetime>,
    /// Replaces the pause mark when set (`Pause::default()` clears it).
    pub pause: Option<Pause>,
}

/// When a sandbox was paused, and the lifetime it had left if its clock stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pause {
    pub at: Option<i64>,
    pub remaining_ms: Option<i64>,
}

fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    at: i64,
    from: Option<&str>,
    to: &str,
    reason: Option<&str>,
) -> rusqlite::Result<EventRow> {
    tx.execute(
        "INSERT INTO events (sandbox_id, at, from_state, to_state, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, at, from, to, reason],
    )?;
    Ok(EventRow {
        seq: tx.last_insert_rowid(),
        sandbox_id: id.to_owned(),
        at,
        from_state: from.map(str::to_owned),
        to_state: to.to_owned(),
        reason: reason.map(str::to_owned),
    })
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        seq: r.get(0)?,
        sandbox_id: r.get(1)?,
        at: r.get(2)?,
        from_state: r.get(3)?,
        to_state: r.get(4)?,
        reason: r.get(5)?,
    })
}

fn sandbox_row(r: &Row<'_>) -> rusqlite::Result<SandboxRow> {
    Ok(SandboxRow {
        id: r.get(0)?,
        name: r.get(1)?,
        state: r.get(2)?,
        state_reason: r.get(3)?,
        backend: r.get(4)?,
        template: r.get(5)?,
        spec: r.get(6)?,
        metadata: r.get(7)?,
        handle: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        destroyed_at: r.get(11)?,
        profile: r.get(12)?,
        ttl_ms: r.get(13)?,
        started_at: r.get(14)?,
        expires_at: r.get(15)?,
        owner: r.get(16)?,
        paused_at: r.get(17)?,
        paused_remaining_ms: r.get(18)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: Option<&str>) -> SandboxRow {
        SandboxRow {
            id: id.into(),
            name: name.map(Into::into),
            state: "creating".into(),
            state_reason: None,
            backend: "native".into(),
            template: "host".into(),
            spec: "{}".into(),
            metadata: "{}".into(),
            handle: None,
            created_at: 1,
            updated_at: 1,
            destroyed_at: None,
            profile: "default".into(),
            ttl_ms: 60_000,
            started_at: 1,
            expires_at: 60_001,
            owner: Some("alice".into()),
            paused_at: None,
            paused_remaining_ms: None,
        }
    }

    #[test]
    fn totals_sum_spec_members_by_state_owner_and_profile() {
        let store = Store::open_in_memory().unwrap();
        let specs = [
            ("a", "alice", "default", r#"{"pids":100,"cpus":0.5}"#, 9_000),
            ("b", "alice", "big", r#"{"pids":200,"cpus":1.5}"#, 5_000),
            ("c", "bob", "default", r#"{"pids":50}"#, 7_000),
        ];
        for (id, owner, profile, spec, expires_at) in specs {
            let mut r = row(id, None);
            r.owner = Some(owner.into());
            r.profile = profile.into();
            r.spec = spec.into();
            r.expires_at = expires_at;
            store.insert_sandbox(&r).unwrap();
        }
        let all = store
            .totals(
                &Scope {
                    states: &["creating"],
                    ..Scope::default()
                },
                &["pids", "cpus"],
            )
            .unwrap();
        assert_eq!(all.count, 3);
        assert_eq!(all.sums, vec![350.0, 2.0]);
        assert_eq!(all.soonest_expiry, Some(5_000));
        let alice = store
            .totals(
                &Scope {
                    states: &["creating"],
                    owner: Some("alice"),
                    profile: Some("default"),
                    backends: None,
                },
                &["pids"],
            )
            .unwrap();
        assert_eq!((alice.count, alice.sums[0]), (1, 100.0));
        let other_backend = store
            .totals(
                &Scope {
                    states: &["creating"],
                    backends: Some(&["fake", "docker"]),
                    ..Scope::default()
                },
                &["pids"],
            )
            .unwrap();
        assert_eq!((other_backend.count, other_backend.sums[0]), (0, 0.0));
        let native = store
            .totals(
                &Scope {
                    states: &["creating"],
                    backends: Some(&["fake", "native"]),
                    ..Scope::default()
                },
                &["pids"],
            )
            .unwrap();
        assert_eq!((native.count, native.sums[0]), (3, 350.0));
        let none = store
            .totals(
                &Scope {
                    states: &["running"],
                    ..Scope::default()
                },
                &["pids"],
            )
            .unwrap();
        assert_eq!(
            (none.count, none.sums[0], none.soonest_expiry),
            (0, 0.0, None)
        );
    }

    #[test]
    fn keys_are_stored_listed_and_revoked() {
        let store = Store::open_in_memory().unwrap();
        let key = KeyRow {
            id: "k1".into(),
            user: "alice".into(),
            admin: false,
            hash: "ab".into(),
            created_at: 5,
            revoked_at: None,
        };
        store.insert_key(&key).unwrap();
        assert_eq!(store.keys().unwrap(), vec![key]);
        assert!(store.revoke_key("k1", 9).unwrap());
        assert!(!store.revoke_key("k1", 10).unwrap());
        assert!(!store.revoke_key("nope", 10).unwrap());
        assert_eq!(store.keys().unwrap()[0].revoked_at, Some(9));
    }

    #[test]
    fn insert_get_transition_and_events() {
        let store = Store::open_in_memory().unwrap();
        store.insert_sandbox(&row("a", Some("web"))).unwrap();
        let event = store
            .transition(&Transition {
                id: "a",
                to_state: "running",
                reason: None,
                at: 2,
                destroyed_at: None,
                handle: Some(Some("{\"pid\":1}")),
                lifetime: None,
                pause: None,
            })
            .unwrap();
        assert_eq!(
            (event.seq, event.from_state.as_deref()),
            (2, Some("creating"))
        );
        let got = store.get_sandbox("a").unwrap().unwrap();
        assert_eq!(got.state, "running");
        assert_eq!(got.handle.as_deref(), Some("{\"pid\":1}"));
        assert_eq!(got.updated_at, 2);
        let events = store.events("a").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].from_state.as_deref(), Some("creating"));
        assert_eq!(events[1].to_state, "running");
        assert!(store.get_sandbox("b").unwrap().is_none());

        // A lifetime change without a state change (an extend).
        store
            .transition(&Transition {
                id: "a",
                to_state: "running",
                reason: Some("extended"),
                at: 3,
                destroyed_at: None,
                handle: None,
                lifetime: Some(Lifetime {
                    started_at: 1,
                    ttl_ms: 60_000,
                    expires_at: 99_000,
                }),
                pause: None,
            })
            .unwrap();
        let got = store.get_sandbox("a").unwrap().unwrap();
        assert_eq!(
            (got.expires_at, got.handle.as_deref()),
            (99_000, Some("{\"pid\":1}"))
        );
        assert_eq!(store.events_after(1, None, None, 10).unwrap().len(), 2);
        assert_eq!(
            store.events_after(0, Some("zzz"), None, 10).unwrap().len(),
            0
        );
        assert_eq!(
            store.events_after(0, None, Some("bob"), 10).unwrap().len(),
            0
        );
        assert_eq!(
            store
                .events_after(0, None, Some("alice"), 10)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(store.last_event().unwrap(), 3);
    }

    #[test]
    fn names_are_unique_among_live_sandboxes_only() {
        let store = Store::open_in_memory().unwrap();
        store.insert_sandbox(&row("a", Some("web"))).unwrap();
        assert!(matches!(
            store.insert_sandbox(&row("b", Some("web"))),
            Err(StoreError::NameTaken(_))
        ));
        store
            .transition(&Transition {
                id: "a",
                to_state: "destroyed",
                reason: Some("deleted"),
                at: 3,
                destroyed_at: Some(3),
                handle: Some(None),
                lifetime: None,
                pause: None,
            })
            .unwrap();
        store.insert_sandbox(&row("b", Some("web"))).unwrap();
        assert_eq!(
            store
                .find_by_name("web", Some("alice"), &["destroyed"])
                .unwrap()
                .unwrap()
                .id,
            "b"
        );
        assert!(store
            .find_by_name("web", Some("bob"), &["destroyed"])
            .unwrap()
            .is_none());
        assert_eq!(store.list_sandboxes(&["destroyed"]).unwrap().len(), 1);
        assert_eq!(store.list_sandboxes(&[]).unwrap().len(), 2);
        // Names are per owner: bob may use the same one.
        let mut bobs = row("c", Some("web"));
        bobs.owner = Some("bob".into());
        store.insert_sandbox(&bobs).unwrap();
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sbx.db");
        Store::open(&path)
            .unwrap()
            .insert_sandbox(&row("a", None))
            .unwrap();
        let store = Store::open(&path).unwrap();
        assert!(store.get_sandbox("a").unwrap().is_some());
    }
}
