//! `destroy`: idempotent removal. `destroying` is recorded first, so a crash mid-way leaves a
//! record that reconciliation finishes; a destroyed sandbox answers at once.

use crate::model::Sandbox;
use sbx_store::SandboxRow;

use crate::transition::Change;

use super::{handle_of, sandbox_id};
use crate::{deadline, now_ms, view, Caller, Error, Service, State};

impl Service {
    /// Destroys a sandbox for `by`, recording `reason` (`deleted`, `daemon-shutdown`, …).
    /// Runs to its end even if the caller goes away.
    pub async fn destroy(
        &self,
        by: &Caller,
        id_or_name: &str,
        reason: &str,
    ) -> Result<Sandbox, Error> {
        let row = self.resolve(by, id_or_name)?;
        let (service, by, reason) = (self.clone(), by.clone(), reason.to_owned());
        self.to_completion("destroy", async move {
            service.destroy_resolved(&by, row, &reason).await
        })
        .await
    }

    async fn destroy_resolved(
        &self,
        by: &Caller,
        row: SandboxRow,
        reason: &str,
    ) -> Result<Sandbox, Error> {
        let lock = self.lock_for(&row.id);
        let guard = lock.lock().await;
        // Re-read under the lock: a create or another destroy may have finished meanwhile.
        let row = self.reread(&row.id)?;
        let destroyed = self.destroy_locked(&row, reason, by).await?;
        drop(guard);
        self.forget(&row.id);
        view::sandbox(&destroyed)
    }

    /// The destroy itself; the caller holds the sandbox's lock.
    pub(crate) async fn destroy_locked(
        &self,
        row: &SandboxRow,
        reason: &str,
        by: &Caller,
    ) -> Result<SandboxRow, Error> {
        if view::state_of(row)?.is_destroyed() {
            return Ok(row.clone());
        }
        let id = sandbox_id(row)?;
        let handle = handle_of(row)?;
        match self.backend_of(row) {
            Ok(backend) => {
                self.record(Change::to(&row.id, State::Destroying, reason))?;
                let removal = backend.destroy(&id, handle.as_ref());
                if let Err(error) = deadline::run(deadline::DESTROY, "destroy", removal).await {
                    // Stays `destroying`: asking again retries, and reconciliation finishes it.
                    tracing::error!(sandbox = %id, error = %error.detail(), "destroy failed");
                    return Err(error);
                }
            }
            // Its backend is not running in this daemon: there is nothing to ask. The record
            // ends here; whatever the backend left is an orphan to it when it runs again
            // (no live record names it), and its start-up removes it.
            Err(_) => {
                tracing::warn!(sandbox = %id, backend = %row.backend, "destroyed the record of a sandbox whose backend is not running");
            }
        }
        let now = now_ms();
        self.record(Change::to(&row.id, State::Destroyed, reason).at(now))?;
        tracing::info!(sandbox = %id, reason, "sandbox destroyed");
        self.inner.access.audit(
            by,
            "sandbox.destroyed",
            serde_json::json!({ "sandbox_id": row.id, "owner": row.owner, "reason": reason }),
        );
        // A deleted snapshot this sandbox started from may be needed no more.
        if view::StoredSpec::parse(row).is_ok_and(|spec| spec.snapshot.is_some()) {
            self.collect_snapshots().await;
        }
        self.reread(&row.id)
    }
}
