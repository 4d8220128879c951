//! Filesystem snapshots: taken from a running or paused sandbox (by its backend's
//! [`sbx_backend::Snapshots`], consistently: its processes do not run meanwhile), listed,
//! inspected, deleted, exported as one file and imported from one; new sandboxes and
//! recreates start from them (`create`, `recreate`). A snapshot belongs to the user who took
//! or imported it: another user's is "not found", like one that does not exist. Each user
//! keeps at most `snapshots.max_per_user`.
//!
//! A snapshot outlives its sandbox and the daemon (its record is in the store, its files with
//! the backend). Deleting one hides it at once; its stored files go once no sandbox that is
//! not destroyed started from it (a failed one may still be recreated from it) — checked after
//! every delete, destroy and start-up ([`Service::collect_snapshots`]).

use std::time::Duration;

use sbx_backend::{ByteStream, SandboxId, Snapshots};
use sbx_store::SnapshotRow;

use super::handle_of;
use crate::model::Snapshot;
use crate::view::StoredSpec;
use crate::{deadline, now_ms, view, Caller, Error, Service, State};

/// States of a snapshot record (migration 5).
const CREATING: &str = "creating";
const READY: &str = "ready";
const DELETED: &str = "deleted";
const PURGED: &str = "purged";

/// Longest a snapshot's name may be.
const MAX_NAME: usize = 128;
/// Manifest format of exported snapshots.
const FORMAT: &str = "sbx-snapshot/1";

/// A new snapshot id: `snap-` and 26 base32 characters (a sandbox id's randomness).
fn new_id() -> String {
    let id = SandboxId::generate();
    let body = id.as_str().split_once('-').map_or(id.as_str(), |(_, b)| b);
    format!("snap-{body}")
}

fn valid_id(id: &str) -> bool {
    id.strip_prefix("snap-").is_some_and(|body| {
        !body.is_empty()
            && body.len() <= 40
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

fn snapshot_of(row: &SnapshotRow) -> Snapshot {
    Snapshot {
        id: row.id.clone(),
        name: row.name.clone(),
        owner: row.owner.clone(),
        backend: row.backend.clone(),
        template: row.template.clone(),
        profile: row.profile.clone(),
        sandbox_id: row.sandbox_id.clone(),
        parent: row.parent.clone(),
        size_bytes: u64::try_from(row.size_bytes).unwrap_or(0),
        created_at: row.created_at,
    }
}

/// Removes what a backend stores of a snapshot, under the deadline of a removal.
async fn remove_files(snapshots: &dyn Snapshots, id: &str) -> Result<(), Error> {
    deadline::run(
        deadline::DESTROY,
        "delete snapshot",
        snapshots.delete_snapshot(id),
    )
    .await
}

fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "a snapshot's name must be 1-{MAX_NAME} characters without control characters"
        )));
    }
    Ok(())
}

/// What an exported snapshot says of itself.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: String,
    id: String,
    #[serde(default)]
    name: Option<String>,
    template: String,
    #[serde(default)]
    created_at: i64,
}

impl Service {
    /// A ready snapshot the caller may use (their own; an admin's: anyone's).
    pub(crate) fn snapshot_row_for(&self, caller: &Caller, id: &str) -> Result<SnapshotRow, Error> {
        let row = if valid_id(id) {
            self.inner.store.get_snapshot(id)?
        } else {
            None
        };
        row.filter(|r| r.state == READY)
            .filter(|r| caller.admin || r.owner.as_deref() == Some(caller.user.as_str()))
            .ok_or_else(|| Error::SnapshotNotFound(id.to_owned()))
    }

    fn snapshots_backend(
        &self,
        kind: &str,
    ) -> Result<std::sync::Arc<dyn sbx_backend::Backend>, Error> {
        let backend = self.inner.backends.get(kind)?.clone();
        if backend.snapshots().is_none() {
            return Err(Error::Unsupported(format!(
                "the {kind} backend has no filesystem snapshots"
            )));
        }
        Ok(backend)
    }

    /// Whether `owner` may keep one more snapshot.
    fn admit_snapshot(&self, owner: &str) -> Result<(), Error> {
        let most = self.inner.config.snapshots.max_per_user;
        let kept = self
            .inner
            .store
            .snapshots(&[CREATING, READY], Some(owner))?
            .len();
        if kept >= most as usize {
            return Err(crate::access::quota_exceeded(
                "snapshots.max_per_user",
                format!("{owner} keeps {kept} snapshots already: delete one first"),
                Duration::from_secs(60),
            ));
        }
        Ok(())
    }

    /// Takes a snapshot of a running or paused sandbox.
    pub async fn snapshot_create(
        &self,
        caller: &Caller,
        id_or_name: &str,
        name: Option<String>,
    ) -> Result<Snapshot, Error> {
        if let Some(name) = &name {
            validate_name(name)?;
        }
        let row = self.resolve(caller, id_or_name)?;
        let (service, caller) = (self.clone(), caller.clone());
        // Runs to its end even if the caller goes away: no record is left `creating`.
        self.to_completion("snapshot", async move {
            service.snapshot_resolved(&caller, row, name).await
        })
        .await
    }

    async fn snapshot_resolved(
        &self,
        caller: &Caller,
        row: sbx_store::SandboxRow,
        name: Option<String>,
    ) -> Result<Snapshot, Error> {
        let lock = self.lock_for(&row.id);
        let _guard = lock.lock().await;
        let row = self.reread(&row.id)?;
        let state = view::effective_state(&row)?;
        if !matches!(state, State::Running | State::Paused) {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "snapshot",
            });
        }
        let backend = self.snapshots_backend(&row.backend)?;
        let handle = handle_of(&row)?
            .ok_or_else(|| Error::internal(format!("running sandbox {} has no handle", row.id)))?;
        let spec = StoredSpec::parse(&row)?;
        let owner = row.owner.clone().unwrap_or_else(|| caller.user.clone());
        let record = {
            let _admission = self.inner.access.admission();
            self.admit_snapshot(&owner)?;
            let record = SnapshotRow {
                id: new_id(),
                name,
                owner: Some(owner.clone()),
                state: CREATING.into(),
                backend: row.backend.clone(),
                template: row.template.clone(),
                profile: row.profile.clone(),
                sandbox_id: Some(row.id.clone()),
                parent: spec.snapshot.clone(),
                size_bytes: 0,
                created_at: now_ms(),
                deleted_at: None,
            };
            self.inner.store.insert_snapshot(&record)?;
            record
        };
        let snapshots: &dyn Snapshots = backend.snapshots().expect("checked above");
        let taken = deadline::run_on(
            &row.id,
            deadline::SNAPSHOT,
            "snapshot",
            snapshots.snapshot(&handle, &record.id, record.parent.as_deref()),
        )
        .await;
        match taken {
            Ok(bytes) => {
                let size = i64::try_from(bytes).unwrap_or(i64::MAX);
                self.inner
                    .store
                    .set_snapshot_state(&record.id, READY, Some(size), None)?;
                self.inner.access.audit(
                    caller,
                    "snapshot.created",
                    serde_json::json!({
                        "snapshot_id": record.id,
                        "sandbox_id": row.id,
                        "size_bytes": bytes,
                    }),
                );
                tracing::info!(snapshot = %record.id, sandbox = %row.id, bytes, "snapshot taken");
                Ok(snapshot_of(&SnapshotRow {
                    state: READY.into(),
                    size_bytes: size,
                    ..record
                }))
            }
            Err(error) => {
                tracing::error!(snapshot = %record.id, sandbox = %row.id, error = %error.detail(), "snapshot failed");
                // Whatever the backend stored of it goes, then the record.
                let _ = remove_files(snapshots, &record.id).await;
                self.inner.store.remove_snapshot(&record.id)?;
                Err(error)
            }
        }
    }

    /// The caller's snapshots (an admin's: everyone's), oldest first.
    pub fn snapshots(&self, caller: &Caller) -> Result<Vec<Snapshot>, Error> {
        Ok(self
            .inner
            .store
            .snapshots(&[READY], caller.scope())?
            .iter()
            .map(snapshot_of)
            .collect())
    }

    pub fn snapshot(&self, caller: &Caller, id: &str) -> Result<Snapshot, Error> {
        Ok(snapshot_of(&self.snapshot_row_for(caller, id)?))
    }

    /// Deletes a snapshot: gone for its owner at once, its files once nothing needs them.
    pub async fn snapshot_delete(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        let row = self.snapshot_row_for(caller, id)?;
        self.inner
            .store
            .set_snapshot_state(&row.id, DELETED, None, Some(now_ms()))?;
        self.inner.access.audit(
            caller,
            "snapshot.deleted",
            serde_json::json!({ "snapshot_id": row.id }),
        );
        self.collect_snapshots().await;
        Ok(())
    }

    /// Removes the stored files of deleted snapshots that no sandbox needs any more (none that
    /// is not destroyed started from them).
    pub async fn collect_snapshots(&self) {
        let deleted = match self.inner.store.snapshots(&[DELETED], None) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list deleted snapshots");
                return;
            }
        };
        if deleted.is_empty() {
            return;
        }
        // Decided under the admission lock, which a create holds while it checks the
        // snapshot it starts from and records the sandbox: none can start from one chosen here.
        let chosen: Vec<SnapshotRow> = {
            let _admission = self.inner.access.admission();
            let live = match self
                .inner
                .store
                .list_sandboxes(&State::names_where(|s| s != State::Destroyed))
            {
                Ok(live) => live,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list sandboxes: no snapshot is removed");
                    return;
                }
            };
            let mut in_use = std::collections::HashSet::new();
            for row in &live {
                match StoredSpec::parse(row) {
                    Ok(spec) => in_use.extend(spec.snapshot),
                    // Unsure what it uses: nothing is removed this time.
                    Err(_) => return,
                }
            }
            let mut chosen = Vec::new();
            for row in deleted {
                if in_use.contains(&row.id) {
                    continue;
                }
                if self
                    .inner
                    .store
                    .set_snapshot_state(&row.id, PURGED, None, None)
                    .is_ok()
                {
                    chosen.push(row);
                }
            }
            chosen
        };
        for row in chosen {
            let Ok(backend) = self.inner.backends.get(&row.backend) else {
                continue;
            };
            let Some(snapshots) = backend.snapshots() else {
                continue;
            };
            if let Err(e) = remove_files(snapshots, &row.id).await {
                tracing::warn!(snapshot = %row.id, error = %e.detail(), "cannot remove a deleted snapshot's files");
            }
        }
    }

    /// The snapshot as one `.tar.zst` file, streamed.
    pub async fn snapshot_export(&self, caller: &Caller, id: &str) -> Result<ByteStream, Error> {
        let row = self.snapshot_row_for(caller, id)?;
        let backend = self.snapshots_backend(&row.backend)?;
        let manifest = Manifest {
            format: FORMAT.into(),
            id: row.id.clone(),
            name: row.name.clone(),
            template: row.template.clone(),
            created_at: row.created_at,
        };
        let manifest = serde_json::to_vec_pretty(&manifest).expect("plain struct serialises");
        let snapshots = backend.snapshots().expect("checked above");
        let stream = deadline::run(
            deadline::FILES,
            "export snapshot",
            snapshots.export_snapshot(&row.id, manifest),
        )
        .await?;
        self.inner.access.audit(
            caller,
            "snapshot.exported",
            serde_json::json!({ "snapshot_id": row.id }),
        );
        Ok(stream)
    }

    /// Stores an exported snapshot file as a new snapshot of the caller's, for the backend of
    /// `profile` (the default profile's when `None`).
    pub async fn snapshot_import(
        &self,
        caller: &Caller,
        data: ByteStream,
        name: Option<String>,
        profile: Option<&str>,
    ) -> Result<Snapshot, Error> {
        // Runs to its end even if the caller goes away: no record is left `creating`.
        let (service, caller) = (self.clone(), caller.clone());
        let profile = profile.map(str::to_owned);
        self.to_completion("snapshot import", async move {
            service
                .snapshot_import_now(&caller, data, name, profile.as_deref())
                .await
        })
        .await
    }

    async fn snapshot_import_now(
        &self,
        caller: &Caller,
        data: ByteStream,
        name: Option<String>,
        profile: Option<&str>,
    ) -> Result<Snapshot, Error> {
        if let Some(name) = &name {
            validate_name(name)?;
        }
        let profile_name = profile.unwrap_or(sbx_config::DEFAULT_PROFILE);
        let profile = self
            .inner
            .config
            .profiles
            .get(profile_name)
            .ok_or_else(|| {
                Error::ProfileNotFound(format!("profile {profile_name:?} does not exist"))
            })?;
        let backend = self.snapshots_backend(&profile.backend)?;
        // No more than the largest disk a sandbox of the profile may have.
        let max_bytes = profile.max_resources.disk_mb.max(profile.resources.disk_mb) << 20;
        let record = {
            let _admission = self.inner.access.admission();
            self.admit_snapshot(&caller.user)?;
            let record = SnapshotRow {
                id: new_id(),
                name: name.clone(),
                owner: Some(caller.user.clone()),
                state: CREATING.into(),
                backend: profile.backend.clone(),
                template: profile.template.clone(),
                profile: profile_name.to_owned(),
                sandbox_id: None,
                parent: None,
                size_bytes: 0,
                created_at: now_ms(),
                deleted_at: None,
            };
            self.inner.store.insert_snapshot(&record)?;
            record
        };
        let snapshots = backend.snapshots().expect("checked above");
        let imported = snapshots
            .import_snapshot(&record.id, data, max_bytes)
            .await
            .map_err(Error::from)
            .and_then(|(bytes, manifest)| {
                let manifest: Manifest = serde_json::from_slice(&manifest).map_err(|e| {
                    Error::Invalid(format!("the snapshot file's manifest is malformed: {e}"))
                })?;
                if manifest.format != FORMAT {
                    return Err(Error::Invalid(format!(
                        "the snapshot file is {:?}, not {FORMAT}",
                        manifest.format
                    )));
                }
                if !sbx_backend::valid_template_name(&manifest.template) {
                    return Err(Error::Invalid(format!(
                        "the snapshot file names template {:?}, which is not a template name",
                        manifest.template
                    )));
                }
                Ok((bytes, manifest))
            });
        let (bytes, manifest) = match imported {
            Ok(imported) => imported,
            Err(error) => {
                let _ = remove_files(snapshots, &record.id).await;
                self.inner.store.remove_snapshot(&record.id)?;
                return Err(match error {
                    Error::InsufficientStorage(message) => Error::TooLarge(message),
                    other => other,
                });
            }
        };
        let record = SnapshotRow {
            state: READY.into(),
            template: manifest.template,
            name: name.or(manifest.name),
            size_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            ..record
        };
        // The record as imported: template and name from the file.
        self.inner.store.remove_snapshot(&record.id)?;
        self.inner.store.insert_snapshot(&record)?;
        self.inner.access.audit(
            caller,
            "snapshot.imported",
            serde_json::json!({ "snapshot_id": record.id, "size_bytes": bytes }),
        );
        Ok(snapshot_of(&record))
    }

    /// At start-up: snapshots a crashed daemon left `creating` go (their files, their record).
    pub(crate) async fn settle_snapshots(&self) {
        let Ok(creating) = self.inner.store.snapshots(&[CREATING], None) else {
            return;
        };
        for row in creating {
            if let Ok(backend) = self.inner.backends.get(&row.backend) {
                if let Some(snapshots) = backend.snapshots() {
                    let _ = remove_files(snapshots, &row.id).await;
                }
            }
            let _ = self.inner.store.remove_snapshot(&row.id);
        }
        self.collect_snapshots().await;
    }
}
