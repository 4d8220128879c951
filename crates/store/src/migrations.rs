//! Numbered schema migrations. Each runs once, in order, inside a transaction; the database's
//! `user_version` is the number of migrations applied. Never edit a released migration: add one.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: sandboxes and their state-change log.
    "CREATE TABLE sandboxes (
        id            TEXT PRIMARY KEY,
        name          TEXT,
        state         TEXT NOT NULL,
        state_reason  TEXT,
        backend       TEXT NOT NULL,
        template      TEXT NOT NULL,
        spec          TEXT NOT NULL,
        metadata      TEXT NOT NULL,
        handle        TEXT,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        destroyed_at  INTEGER
     );
     CREATE INDEX sandboxes_state ON sandboxes (state);
     -- A name belongs to at most one live sandbox (neither destroyed nor failed).
     CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes (name)
        WHERE name IS NOT NULL AND state NOT IN ('destroyed', 'failed');
     CREATE TABLE events (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        sandbox_id  TEXT NOT NULL REFERENCES sandboxes (id),
        at          INTEGER NOT NULL,
        from_state  TEXT,
        to_state    TEXT NOT NULL,
        reason      TEXT
     );
     CREATE INDEX events_sandbox ON events (sandbox_id, seq);",
    // 2: profiles and lifetimes. `started_at` is when the current backend instance started
    // (create or recreate); `ttl_ms` the lifetime it was given; the maximum counts from it.
    "ALTER TABLE sandboxes ADD COLUMN profile TEXT NOT NULL DEFAULT 'default';
     ALTER TABLE sandboxes ADD COLUMN ttl_ms INTEGER NOT NULL DEFAULT 3600000;
     ALTER TABLE sandboxes ADD COLUMN started_at INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE sandboxes ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
     UPDATE sandboxes SET started_at = created_at, expires_at = created_at + ttl_ms;
     CREATE INDEX sandboxes_expiry ON sandboxes (expires_at);",
    // 3: API keys (only a hash of the secret part is kept) and sandbox ownership.
    "CREATE TABLE keys (
        id          TEXT PRIMARY KEY,
        user        TEXT NOT NULL,
        admin       INTEGER NOT NULL,
        hash        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        revoked_at  INTEGER
     );
     ALTER TABLE sandboxes ADD COLUMN owner TEXT;
     CREATE INDEX sandboxes_owner ON sandboxes (owner, state);
     -- Names are per user now: a name belongs to at most one live sandbox of its owner.
     DROP INDEX sandboxes_live_name;
     CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes (coalesce(owner, ''), name)
        WHERE name IS NOT NULL AND state NOT IN ('destroyed', 'failed');",
    // 4: pausing. `paused_at` is when a paused sandbox was frozen; `paused_remaining_ms` the
    // lifetime it had left then, when its profile stops the clock while paused (its deadline
    // is then far away until it is resumed).
    "ALTER TABLE sandboxes ADD COLUMN paused_at INTEGER;
     ALTER TABLE sandboxes ADD COLUMN paused_remaining_ms INTEGER;",
    // 5: filesystem snapshots. `state`: creating, ready, deleted (hidden from its owner, its
    // stored layer kept while a sandbox or snapshot still needs it), purged (layer removed).
    "CREATE TABLE snapshots (
        id          TEXT PRIMARY KEY,
        name        TEXT,
        owner       TEXT,
        state       TEXT NOT NULL,
        backend     TEXT NOT NULL,
        template    TEXT NOT NULL,
        profile     TEXT NOT NULL,
        sandbox_id  TEXT,
        parent      TEXT,
        size_bytes  INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        deleted_at  INTEGER
     );
     CREATE INDEX snapshots_owner ON snapshots (owner, state);",
    // 6: projects, their fragments (immutable versions of their files, content in blobs shared
    // between fragments and counted by reference), and each user's one active sandbox.
    // A fragment is `writing` while its blobs go in (each blob reference is recorded with it,
    // so a crash mid-write leaves references a start-up collection gives back), then `ready`.
    "CREATE TABLE projects (
        id          TEXT PRIMARY KEY,
        owner       TEXT NOT NULL,
        name        TEXT NOT NULL,
        root        TEXT NOT NULL,
        port        INTEGER,
        profile     TEXT,
        created_at  INTEGER NOT NULL,
        UNIQUE (owner, name)
     );
     CREATE TABLE project_shares (
        project_id  TEXT NOT NULL,
        user        TEXT NOT NULL,
        access      TEXT NOT NULL,
        PRIMARY KEY (project_id, user)
     );
     CREATE INDEX project_shares_user ON project_shares (user);
     CREATE TABLE fragments (
        id          TEXT PRIMARY KEY,
        project_id  TEXT NOT NULL,
        owner       TEXT NOT NULL,
        state       TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        source      TEXT NOT NULL,
        message     TEXT,
        files       INTEGER NOT NULL DEFAULT 0,
        bytes       INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL
     );
     CREATE INDEX fragments_project ON fragments (project_id, created_at);
     CREATE INDEX fragments_owner ON fragments (owner, state);
     CREATE TABLE fragment_entries (
        fragment_id TEXT NOT NULL,
        path        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        mode        INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        target      TEXT,
        chunks      TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (fragment_id, path)
     ) WITHOUT ROWID;
     CREATE TABLE blobs (
        digest      TEXT PRIMARY KEY,
        refs        INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        data        BLOB NOT NULL
     );
     CREATE TABLE fragment_blobs (
        fragment_id TEXT NOT NULL,
        digest      TEXT NOT NULL
     );
     CREATE INDEX fragment_blobs_fragment ON fragment_blobs (fragment_id, digest);
     CREATE TABLE active_sandboxes (
        user        TEXT PRIMARY KEY,
        project_id  TEXT NOT NULL,
        fragment_id TEXT,
        sandbox_id  TEXT NOT NULL,
        port        INTEGER,
        restored    INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL
     );",
    // 7: the generation of a sandbox's share links: a token is signed with it, and revoking
    // a sandbox's links moves it on (absent: 0).
    "CREATE TABLE share_epochs (
        sandbox_id  TEXT PRIMARY KEY,
        epoch       INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 8: what a fragment stores, counted against its owner's room: its files' bytes and, for
    // each entry, 256 bytes and its path's and link target's (an entry without content is not
    // free). Fragments made before are counted the same way.
    "ALTER TABLE fragments ADD COLUMN stored INTEGER NOT NULL DEFAULT 0;
     UPDATE fragments SET stored = bytes + coalesce((
        SELECT sum(256 + length(CAST(e.path AS BLOB)) + coalesce(length(CAST(e.target AS BLOB)), 0))
        FROM fragment_entries e WHERE e.fragment_id = fragments.id), 0);",
    // 9: a paused sandbox whose clock stopped has, as its deadline, its hold: the longest it
    // waits for its resume (its `ttl_max_ms` from its pause). Those paused before kept the
    // deadline they had when paused: given a whole hold from now.
    "UPDATE sandboxes
        SET expires_at = max(expires_at,
            CAST(strftime('%s', 'now') AS INTEGER) * 1000
                + coalesce(json_extract(spec, '$.ttl_max_ms'), 86400000))
      WHERE state IN ('paused', 'hibernated') AND paused_remaining_ms IS NOT NULL;",
];

pub fn apply(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = connection.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(StoreError::TooNew {
            found: applied,
            known,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = connection.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_paused_with_its_clock_stopped_before_holds_are_given_one() {
        let mut connection = Connection::open_in_memory().unwrap();
        // The schema as it was before holds, and a sandbox paused then with its clock
        // stopped: its deadline long past, as it was when it was paused.
        for (index, sql) in MIGRATIONS.iter().enumerate().take(8) {
            connection.execute_batch(sql).unwrap();
            connection
                .pragma_update(None, "user_version", index as i64 + 1)
                .unwrap();
        }
        let row = |id: &str, state: &str, remaining: Option<i64>| {
            connection
                .execute(
                    "INSERT INTO sandboxes (id, state, backend, template, spec, metadata, \
                     created_at, updated_at, expires_at, paused_at, paused_remaining_ms) \
                     VALUES (?1, ?2, 'native', 'host', '{\"ttl_max_ms\": 7200000}', '{}', \
                     0, 0, 1000, 500, ?3)",
                    rusqlite::params![id, state, remaining],
                )
                .unwrap();
        };
        row("stopped", "paused", Some(500));
        row("running-clock", "paused", None);
        row("live", "running", None);
        apply(&mut connection).unwrap();
        let deadline = |id: &str| -> i64 {
            connection
                .query_row(
                    "SELECT expires_at FROM sandboxes WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let held = deadline("stopped") - now;
        assert!((7_100_000..=7_200_000).contains(&held), "{held}");
        assert_eq!(deadline("running-clock"), 1000);
        assert_eq!(deadline("live"), 1000);
    }

    #[test]
    fn the_name_index_lists_the_states_that_release_names() {
        let listed = crate::STATES_RELEASING_NAMES
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let clause = format!("state NOT IN ({listed})");
        let last = MIGRATIONS
            .iter()
            .rev()
            .find(|m| m.contains("sandboxes_live_name"))
            .unwrap();
        assert!(last.contains(&clause), "{clause} not in {last}");
    }
}
