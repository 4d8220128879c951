//! One file per verb. Each is a method on [`crate::Service`].

pub mod active;
pub mod cleanup;
pub mod create;
pub mod destroy;
pub mod events;
pub mod exec;
pub mod expire;
pub mod extend;
pub mod files;
pub mod get;
pub mod list;
pub mod pause;
pub mod ports;
pub mod profiles;
pub mod projects;
pub mod reaper;
pub mod reconcile;
pub mod recreate;
pub mod shutdown;
pub mod snapshots;
pub mod status;
pub mod templates;
mod watch;

use sbx_backend::{Handle, SandboxId};
use sbx_store::SandboxRow;

use crate::{Caller, Error, Service, State};

impl Service {
    /// Finds a sandbox by id, or by the name of a live sandbox of the caller's own. Another
    /// user's sandbox is "not found", exactly like one that does not exist: ids cannot be
    /// probed. Names are per user and resolve within the caller's sandboxes only — an admin
    /// names another user's as `owner/name` (or by id), so that a name of their own that has
    /// gone never silently reaches someone else's sandbox.
    pub(crate) fn resolve(&self, caller: &Caller, id_or_name: &str) -> Result<SandboxRow, Error> {
        let store = &self.inner.store;
        let dead = State::names_where(State::releases_name);
        let row = if SandboxId::parse(id_or_name).is_ok() {
            store.get_sandbox(id_or_name)?
        } else if let Some((owner, name)) = id_or_name.split_once('/') {
            let valid = sbx_config::limits::valid_user(owner)
                && crate::validate::validate_name(name).is_ok();
            if valid && (caller.admin || owner == caller.user) {
                store.find_by_name(name, Some(owner), &dead)?
            } else {
                None
            }
        } else if crate::validate::validate_name(id_or_name).is_ok() {
            store.find_by_name(id_or_name, Some(&caller.user), &dead)?
        } else {
            None
        };
        row.filter(|row| caller.may_see(row))
            .ok_or_else(|| Error::NotFound(id_or_name.to_owned()))
    }

    /// A sandbox a call may use now, with its lock held: running, or paused and resumed here
    /// when its profile says `auto_resume`; else `WrongState` for `operation`.
    pub(crate) async fn usable_locked(
        &self,
        caller: &Caller,
        id_or_name: &str,
        operation: &'static str,
    ) -> Result<(SandboxRow, tokio::sync::OwnedMutexGuard<()>), Error> {
        let row = self.resolve(caller, id_or_name)?;
        let lock = self.lock_for(&row.id).lock_owned().await;
        let mut row = self.reread(&row.id)?;
        let state = crate::view::effective_state(&row)?;
        if state.is_suspended() && crate::view::StoredSpec::parse(&row)?.auto_resume {
            row = self.resume_locked(&row, caller).await?;
        } else if !state.can_exec() {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation,
            });
        }
        Ok((row, lock))
    }

    /// Re-reads a sandbox (under its lock, to see what a concurrent operation did).
    pub(crate) fn reread(&self, id: &str) -> Result<SandboxRow, Error> {
        self.inner
            .store
            .get_sandbox(id)?
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }
}

pub(crate) fn handle_of(row: &SandboxRow) -> Result<Option<Handle>, Error> {
    row.handle
        .as_deref()
        .map(|text| {
            serde_json::from_str(text).map_err(|e| {
                Error::internal(format!("sandbox {} has a malformed handle: {e}", row.id))
            })
        })
        .transpose()
}

pub(crate) fn sandbox_id(row: &SandboxRow) -> Result<SandboxId, Error> {
    SandboxId::parse(&row.id).map_err(|e| Error::internal(e.to_string()))
}
