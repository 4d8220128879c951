//! `recreate`: a fresh backend instance for an existing sandbox — same id, name, profile,
//! template, limits and environment, a fresh lifetime. The old instance (and everything in
//! it) is gone. A destroyed sandbox cannot be recreated.

use crate::model::Sandbox;
use sbx_backend::SandboxSpec;
use sbx_store::{Lifetime, SandboxRow};

use crate::transition::Change;

use super::{handle_of, sandbox_id};
use crate::admission::DiskPromise;
use crate::view::StoredSpec;
use crate::{deadline, now_ms, reason, validate, view, Caller, Error, Service, State};

impl Service {
    /// Runs to its end even if the caller goes away.
    pub async fn recreate(&self, caller: &Caller, id_or_name: &str) -> Result<Sandbox, Error> {
        self.recreate_from(caller, id_or_name, None).await
    }

    /// A recreate whose files start from `snapshot` (one of the caller's, of the sandbox's
    /// template and backend) — and from it again on later recreates.
    pub async fn recreate_from(
        &self,
        caller: &Caller,
        id_or_name: &str,
        snapshot: Option<&str>,
    ) -> Result<Sandbox, Error> {
        let row = self.resolve(caller, id_or_name)?;
        let snapshot = match snapshot {
            None => None,
            Some(id) => {
                let snapshot = self.snapshot_row_for(caller, id)?;
                if snapshot.template != row.template || snapshot.backend != row.backend {
                    return Err(Error::Invalid(format!(
                        "snapshot {} is of template {:?} on the {} backend; sandbox {} is of {:?} on {}",
                        snapshot.id, snapshot.template, snapshot.backend, row.id, row.template, row.backend
                    )));
                }
                Some(snapshot.id)
            }
        };
        let (service, caller) = (self.clone(), caller.clone());
        self.to_completion("recreate", async move {
            service.recreate_resolved(&caller, row, snapshot).await
        })
        .await
    }

    async fn recreate_resolved(
        &self,
        caller: &Caller,
        row: SandboxRow,
        snapshot: Option<String>,
    ) -> Result<Sandbox, Error> {
        let inner = &self.inner;
        let lock = self.lock_for(&row.id);
        let _guard = lock.lock().await;
        let row = self.reread(&row.id)?;
        let state = view::state_of(&row)?;
        if !state.can_recreate() {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "recreate",
            });
        }
        let id = sandbox_id(&row)?;
        let mut spec = StoredSpec::parse(&row)?;
        let promise = {
            let _admission = inner.access.admission();
            // A failed sandbox gave its share of quotas and of the host back: it must fit again.
            if !state.holds_resources() {
                let owner = row.owner.as_deref().unwrap_or(crate::ADMIN_USER);
                self.admit_resources(owner, &row.profile, &row.backend, &spec.resources())?;
            }
            self.record(Change::to(&row.id, State::Creating, reason::RECREATING))?;
            DiskPromise::new(self, &row.backend, spec.disk_mb << 20)
        };
        let old = handle_of(&row).ok().flatten();
        let backend = self.backend_of(&row)?;
        let removal = backend.destroy(&id, old.as_ref());
        if let Err(error) = deadline::run(deadline::DESTROY, "destroy", removal).await {
            // Not left `creating`: `destroying`, as a destroy that failed is (it still holds
            // its share, for its processes may still be there; a delete retries, and
            // reconciliation finishes it).
            tracing::error!(sandbox = %id, error = %error.detail(), "recreate could not remove the old instance");
            self.record(
                Change::to(
                    &row.id,
                    State::Destroying,
                    &reason::with_detail(reason::FAILED, "recreate failed"),
                )
                .without_handle(),
            )?;
            return Err(error);
        }
        // Recorded once the old instance (and the snapshot it may use) is gone, and before
        // the new one starts from it: the snapshots a sandbox needs are always in its record.
        if let Some(snapshot) = snapshot {
            spec.snapshot = Some(snapshot);
            let text = serde_json::to_string(&spec).expect("plain struct serialises");
            inner.store.set_sandbox_spec(&row.id, &text)?;
        }
        let backend_spec = SandboxSpec {
            id: id.clone(),
            template: row.template.clone(),
            limits: validate::limits(&spec.resources()),
            snapshot: spec.snapshot.clone(),
            fork_of: None,
        };
        let built = deadline::run(deadline::CREATE, "create", backend.create(&backend_spec)).await;
        drop(promise);
        match built {
            Ok(handle) => {
                let handle_json = serde_json::to_string(&handle).expect("handle serialises");
                let now = now_ms();
                self.record(
                    Change::to(&row.id, State::Running, reason::RECREATED)
                        .at(now)
                        .handle(&handle_json)
                        .lifetime(Lifetime {
                            started_at: now,
                            ttl_ms: row.ttl_ms,
                            expires_at: now + row.ttl_ms,
                        }),
                )?;
                self.touch(&row.id);
                self.watch(id.clone(), handle);
                self.inner.reaper_wake.notify_one();
                tracing::info!(sandbox = %id, "sandbox recreated");
                self.inner.access.audit(
                    caller,
                    "sandbox.recreated",
                    serde_json::json!({ "sandbox_id": row.id }),
                );
                view::sandbox(&self.reread(&row.id)?)
            }
            Err(error) => {
                tracing::error!(sandbox = %id, error = %error.detail(), "recreate failed");
                self.record(Change::to(
                    &row.id,
                    State::Failed,
                    &reason::with_detail(reason::FAILED, "recreate failed"),
                ))?;
                Err(error)
            }
        }
    }
}
