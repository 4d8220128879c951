//! Projects, fragments, the blobs that hold their files' content, and each user's active
//! sandbox (migration 6).
//!
//! Blobs are counted by reference: every reference a fragment takes is one row of
//! `fragment_blobs`, written in the same transaction as the count's increment, so removing a
//! fragment (or one a crash left `writing`) gives back exactly what it took, and a blob goes
//! when its count reaches zero. Each blob is one short transaction: a large fragment never
//! holds the connection for long.

use rusqlite::{params, OptionalExtension, Row};

use crate::{Store, StoreError};

/// One project.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRow {
    pub id: String,
    pub owner: String,
    pub name: String,
    /// The directory of a sandbox its fragments' paths are relative to.
    pub root: String,
    /// The port its preview URL names.
    pub port: Option<i64>,
    /// The profile its sandboxes are made with (`None`: the default).
    pub profile: Option<String>,
    pub created_at: i64,
}

/// One fragment: an immutable version of a project's files.
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentRow {
    pub id: String,
    pub project_id: String,
    /// The project's owner (whose storage it counts against).
    pub owner: String,
    /// `writing` or `ready`.
    pub state: String,
    pub created_by: String,
    /// Where its files came from: `files`, `tar`, `sandbox:<id>`.
    pub source: String,
    pub message: Option<String>,
    pub files: i64,
    pub bytes: i64,
    pub created_at: i64,
}

/// One entry of a fragment: a file (its content as blob digests, in order), a directory or a
/// symbolic link.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryRow {
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub mode: i64,
    pub size: i64,
    pub target: Option<String>,
    /// Hex SHA-256 digests, comma-separated.
    pub chunks: String,
}

/// A user's active sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveRow {
    pub user: String,
    pub project_id: String,
    pub fragment_id: Option<String>,
    pub sandbox_id: String,
    pub port: Option<i64>,
    /// How many files the switch restored.
    pub restored: i64,
    pub created_at: i64,
}

const PROJECT_COLUMNS: &str = "id, owner, name, root, port, profile, created_at";
const FRAGMENT_COLUMNS: &str =
    "id, project_id, owner, state, created_by, source, message, files, bytes, created_at";
const ACTIVE_COLUMNS: &str =
    "user, project_id, fragment_id, sandbox_id, port, restored, created_at";

fn project_row(r: &Row<'_>) -> rusqlite::Result<ProjectRow> {
    Ok(ProjectRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        name: r.get(2)?,
        root: r.get(3)?,
        port: r.get(4)?,
        profile: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn fragment_row(r: &Row<'_>) -> rusqlite::Result<FragmentRow> {
    Ok(FragmentRow {
        id: r.get(0)?,
        project_id: r.get(1)?,
        owner: r.get(2)?,
        state: r.get(3)?,
        created_by: r.get(4)?,
        source: r.get(5)?,
        message: r.get(6)?,
        files: r.get(7)?,
        bytes: r.get(8)?,
        created_at: r.get(9)?,
    })
}

fn active_row(r: &Row<'_>) -> rusqlite::Result<ActiveRow> {
    Ok(ActiveRow {
        user: r.get(0)?,
        project_id: r.get(1)?,
        fragment_id: r.get(2)?,
        sandbox_id: r.get(3)?,
        port: r.get(4)?,
        restored: r.get(5)?,
        created_at: r.get(6)?,
    })
}

impl Store {
    pub fn insert_project(&self, row: &ProjectRow) -> Result<(), StoreError> {
        self.with(|c| {
            let inserted = c.execute(
                &format!(
                    "INSERT INTO projects ({PROJECT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    row.id,
                    row.owner,
                    row.name,
                    row.root,
                    row.port,
                    row.profile,
                    row.created_at
                ],
            );
            match inserted {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::ProjectNameTaken(row.name.clone()))
                }
                other => other.map(|_| ()).map_err(Into::into),
            }
        })
    }

    pub fn get_project(&self, id: &str) -> Result<Option<ProjectRow>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1"),
                [id],
                project_row,
            )
            .optional()?)
        })
    }

    /// `user`'s own project named `name`.
    pub fn find_project(&self, owner: &str, name: &str) -> Result<Option<ProjectRow>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE owner = ?1 AND name = ?2"),
                [owner, name],
                project_row,
            )
            .optional()?)
        })
    }

    /// Projects `user` owns or was given (every project when `None`), oldest first.
    pub fn projects_of(&self, user: Option<&str>) -> Result<Vec<ProjectRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {PROJECT_COLUMNS} FROM projects WHERE ?1 IS NULL OR owner = ?1 \
                 OR id IN (SELECT project_id FROM project_shares WHERE user = ?1) \
                 ORDER BY created_at, id"
            ))?;
            let rows = statement
                .query_map([user], project_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    pub fn count_projects(&self, owner: &str) -> Result<u64, StoreError> {
        self.with(|c| {
            let n: i64 = c.query_row(
                "SELECT count(*) FROM projects WHERE owner = ?1",
                [owner],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
    }

    /// Removes a project and its shares (its fragments must be gone first).
    pub fn remove_project(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM project_shares WHERE project_id = ?1", [id])?;
            tx.execute("DELETE FROM projects WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Gives `user` `access` (`read`, `write`) to a project, or takes it away (`None`).
    pub fn set_share(
        &self,
        project_id: &str,
        user: &str,
        access: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            match access {
                Some(access) => c.execute(
                    "INSERT INTO project_shares (project_id, user, access) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (project_id, user) DO UPDATE SET access = ?3",
                    params![project_id, user, access],
                )?,
                None => c.execute(
                    "DELETE FROM project_shares WHERE project_id = ?1 AND user = ?2",
                    params![project_id, user],
                )?,
            };
            Ok(())
        })
    }

    /// A project's shares: (user, access), by user.
    pub fn shares(&self, project_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT user, access FROM project_shares WHERE project_id = ?1 ORDER BY user",
            )?;
            let rows = statement
                .query_map([project_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Records a fragment about to be written (state `writing`).
    pub fn insert_fragment(&self, row: &FragmentRow) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                &format!("INSERT INTO fragments ({FRAGMENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    row.id, row.project_id, row.owner, row.state, row.created_by, row.source,
                    row.message, row.files, row.bytes, row.created_at
                ],
            )?;
            Ok(())
        })
    }

    /// Stores one blob of a fragment being written (or takes one more reference to it).
    pub fn put_blob(&self, fragment_id: &str, digest: &str, data: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let counted = tx.execute(
                "UPDATE blobs SET refs = refs + 1 WHERE digest = ?1",
                [digest],
            )?;
            if counted == 0 {
                tx.execute(
                    "INSERT INTO blobs (digest, refs, size, data) VALUES (?1, 1, ?2, ?3)",
                    params![digest, data.len() as i64, data],
                )?;
            }
            tx.execute(
                "INSERT INTO fragment_blobs (fragment_id, digest) VALUES (?1, ?2)",
                [fragment_id, digest],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Takes one more reference to a blob that is stored already; false when it is not.
    pub fn reuse_blob(&self, fragment_id: &str, digest: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            if tx.execute(
                "UPDATE blobs SET refs = refs + 1 WHERE digest = ?1",
                [digest],
            )? == 0
            {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO fragment_blobs (fragment_id, digest) VALUES (?1, ?2)",
                [fragment_id, digest],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// A blob's content.
    pub fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| {
            // Cached: a restore asks for a fragment's blobs one after another.
            let mut statement = c.prepare_cached("SELECT data FROM blobs WHERE digest = ?1")?;
            Ok(statement.query_row([digest], |r| r.get(0)).optional()?)
        })
    }

    /// Makes a written fragment ready, with its entries, in one transaction.
    pub fn finish_fragment(
        &self,
        id: &str,
        entries: &[EntryRow],
        files: i64,
        bytes: i64,
        stored: i64,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO fragment_entries (fragment_id, path, kind, mode, size, target, chunks) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for e in entries {
                    insert.execute(params![id, e.path, e.kind, e.mode, e.size, e.target, e.chunks])?;
                }
            }
            let updated = tx.execute(
                "UPDATE fragments SET state = 'ready', files = ?2, bytes = ?3, stored = ?4 \
                 WHERE id = ?1 AND state = 'writing'",
                params![id, files, bytes, stored],
            )?;
            if updated != 1 {
                // Removed while it was written: nothing of it is kept (the caller removes
                // the blob references it took).
                return Err(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows));
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn get_fragment(&self, id: &str) -> Result<Option<FragmentRow>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {FRAGMENT_COLUMNS} FROM fragments WHERE id = ?1"),
                [id],
                fragment_row,
            )
            .optional()?)
        })
    }

    /// Fragments of a project (of every project when `None`) in `state`, oldest first.
    pub fn fragments(
        &self,
        project_id: Option<&str>,
        state: &str,
    ) -> Result<Vec<FragmentRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {FRAGMENT_COLUMNS} FROM fragments \
                 WHERE (?1 IS NULL OR project_id = ?1) AND state = ?2 ORDER BY created_at, rowid"
            ))?;
            let rows = statement
                .query_map(params![project_id, state], fragment_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// What the fragments of `owner`'s projects store, together: their files' bytes and their
    /// entries' (one being written counts once it is ready).
    pub fn fragment_bytes(&self, owner: &str) -> Result<u64, StoreError> {
        self.with(|c| {
            let bytes: i64 = c.query_row(
                "SELECT coalesce(sum(stored), 0) FROM fragments WHERE owner = ?1",
                [owner],
                |r| r.get(0),
            )?;
            Ok(bytes as u64)
        })
    }

    /// Fragments whose project is gone (a project's removal takes its fragments after it).
    pub fn orphan_fragments(&self) -> Result<Vec<FragmentRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {FRAGMENT_COLUMNS} FROM fragments \
                 WHERE project_id NOT IN (SELECT id FROM projects)"
            ))?;
            let rows = statement
                .query_map([], fragment_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// A fragment's entries, by path.
    pub fn fragment_entries(&self, id: &str) -> Result<Vec<EntryRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT path, kind, mode, size, target, chunks FROM fragment_entries \
                 WHERE fragment_id = ?1 ORDER BY path",
            )?;
            let rows = statement
                .query_map([id], |r| {
                    Ok(EntryRow {
                        path: r.get(0)?,
                        kind: r.get(1)?,
                        mode: r.get(2)?,
                        size: r.get(3)?,
                        target: r.get(4)?,
                        chunks: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Removes a fragment, its entries and its blob references; blobs no fragment refers to
    /// any more go with it.
    pub fn remove_fragment(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE blobs SET refs = refs - (SELECT count(*) FROM fragment_blobs f \
                 WHERE f.fragment_id = ?1 AND f.digest = blobs.digest) \
                 WHERE digest IN (SELECT digest FROM fragment_blobs WHERE fragment_id = ?1)",
                [id],
            )?;
            tx.execute(
                "DELETE FROM blobs WHERE refs <= 0 \
                 AND digest IN (SELECT digest FROM fragment_blobs WHERE fragment_id = ?1)",
                [id],
            )?;
            tx.execute("DELETE FROM fragment_blobs WHERE fragment_id = ?1", [id])?;
            tx.execute("DELETE FROM fragment_entries WHERE fragment_id = ?1", [id])?;
            tx.execute("DELETE FROM fragments WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// How many blobs are stored and their bytes (for status and tests).
    pub fn blob_usage(&self) -> Result<(u64, u64), StoreError> {
        self.with(|c| {
            let (count, bytes): (i64, i64) = c.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM blobs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok((count as u64, bytes as u64))
        })
    }

    /// Records `row` as its user's active sandbox, replacing the one before.
    pub fn set_active(&self, row: &ActiveRow) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                &format!("INSERT OR REPLACE INTO active_sandboxes ({ACTIVE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    row.user, row.project_id, row.fragment_id, row.sandbox_id, row.port,
                    row.restored, row.created_at
                ],
            )?;
            Ok(())
        })
    }

    /// The generation of sandbox `id`'s share links (0 until they are first revoked).
    pub fn share_epoch(&self, id: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT epoch FROM share_epochs WHERE sandbox_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
        })
    }

    /// Revokes every share link of sandbox `id` made so far: its next generation.
    pub fn revoke_shares(&self, id: &str) -> Result<i64, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "INSERT INTO share_epochs (sandbox_id, epoch) VALUES (?1, 1) \
                 ON CONFLICT (sandbox_id) DO UPDATE SET epoch = epoch + 1 RETURNING epoch",
                [id],
                |r| r.get(0),
            )?)
        })
    }

    pub fn get_active(&self, user: &str) -> Result<Option<ActiveRow>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {ACTIVE_COLUMNS} FROM active_sandboxes WHERE user = ?1"),
                [user],
                active_row,
            )
            .optional()?)
        })
    }

    /// Every user's active sandbox (`user`'s alone when given), by user.
    pub fn actives(&self, user: Option<&str>) -> Result<Vec<ActiveRow>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(&format!(
                "SELECT {ACTIVE_COLUMNS} FROM active_sandboxes WHERE ?1 IS NULL OR user = ?1 \
                 ORDER BY user"
            ))?;
            let rows = statement
                .query_map([user], active_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Forgets `user`'s active sandbox.
    pub fn remove_active(&self, user: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM active_sandboxes WHERE user = ?1", [user])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(id: &str) -> FragmentRow {
        FragmentRow {
            id: id.into(),
            project_id: "p".into(),
            owner: "alice".into(),
            state: "writing".into(),
            created_by: "alice".into(),
            source: "files".into(),
            message: None,
            files: 0,
            bytes: 0,
            created_at: 1,
        }
    }

    #[test]
    fn share_generations_start_at_zero_and_move_on() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.share_epoch("sb-a").unwrap(), 0);
        assert_eq!(store.revoke_shares("sb-a").unwrap(), 1);
        assert_eq!(store.revoke_shares("sb-a").unwrap(), 2);
        assert_eq!(store.share_epoch("sb-a").unwrap(), 2);
        assert_eq!(store.share_epoch("sb-b").unwrap(), 0);
    }

    #[test]
    fn blobs_are_shared_and_go_with_their_last_fragment() {
        let store = Store::open_in_memory().unwrap();
        store.insert_fragment(&fragment("a")).unwrap();
        store.put_blob("a", "d1", b"one").unwrap();
        store.put_blob("a", "d1", b"one").unwrap();
        store.put_blob("a", "d2", b"two").unwrap();
        store.insert_fragment(&fragment("b")).unwrap();
        assert!(store.reuse_blob("b", "d1").unwrap());
        assert!(!store.reuse_blob("b", "d3").unwrap());
        assert_eq!(store.blob_usage().unwrap(), (2, 6));
        store.remove_fragment("a").unwrap();
        assert_eq!(store.blob_usage().unwrap(), (1, 3));
        assert_eq!(store.blob("d1").unwrap().unwrap(), b"one");
        store.remove_fragment("b").unwrap();
        assert_eq!(store.blob_usage().unwrap(), (0, 0));
    }
}
