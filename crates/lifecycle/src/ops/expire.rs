//! `expire`: the sandboxes past their deadline — listed (dry run), or destroyed with reason
//! `expired`. The reaper calls `expire_one` at each deadline; `expire --apply` is the same on
//! demand (for deployments that turn the reaper off and schedule expiry themselves).

use crate::model::ExpireResult;
use crate::transition::Change;

use crate::{now_ms, reason, view, Caller, Error, Service, State};

impl Service {
    /// Admins only: it acts on every user's sandboxes.
    pub async fn expire(&self, caller: &Caller, apply: bool) -> Result<ExpireResult, Error> {
        caller.require_admin()?;
        let now = now_ms();
        let due: Vec<_> = self
            .inner
            .store
            .list_sandboxes(&State::names_where(State::has_deadline))?
            .into_iter()
            .filter(|row| row.expires_at <= now)
            .collect();
        let mut sandboxes = Vec::with_capacity(due.len());
        for row in due {
            if apply {
                if let Some(row) = self.expire_one(&row.id).await? {
                    sandboxes.push(view::sandbox(&row)?);
                }
            } else {
                sandboxes.push(view::sandbox(&row)?);
            }
        }
        Ok(ExpireResult {
            applied: apply,
            sandboxes,
        })
    }

    /// Marks a sandbox `expired` and destroys it, if it still is past its deadline (an extend
    /// may have come first). Returns the destroyed record.
    pub(crate) async fn expire_one(
        &self,
        id: &str,
    ) -> Result<Option<sbx_store::SandboxRow>, Error> {
        let lock = self.lock_for(id);
        let guard = lock.lock().await;
        let row = self.reread(id)?;
        let state = view::state_of(&row)?;
        if !state.has_deadline() || row.expires_at > now_ms() {
            return Ok(None);
        }
        if state != State::Expired {
            self.record(Change::to(id, State::Expired, reason::EXPIRED))?;
            self.inner.access.audit(
                &Caller::system(),
                "sandbox.expired",
                serde_json::json!({ "sandbox_id": id, "owner": row.owner }),
            );
        }
        let destroyed = self
            .destroy_locked(&self.reread(id)?, reason::EXPIRED, &Caller::system())
            .await?;
        drop(guard);
        self.forget(id);
        Ok(Some(destroyed))
    }
}
