//! Watchers: one task per running sandbox waits for its main process to end. If it ends while
//! nobody asked (the sandbox is still `running` or `expired`), the sandbox crashed or was
//! killed from the host: its remains are removed and it becomes `failed`.

use crate::transition::Change;
use sbx_backend::{Handle, SandboxId};

use super::handle_of;
use crate::{deadline, reason, view, Service, State};

impl Service {
    pub(crate) fn watch(&self, id: SandboxId, handle: Handle) {
        let service = self.clone();
        let mut watchers = self
            .inner
            .watchers
            .lock()
            .expect("watcher set is never poisoned");
        while watchers.try_join_next().is_some() {}
        watchers.spawn(async move {
            let backend = match service.inner.backends.get(&handle.backend) {
                Ok(backend) => backend.clone(),
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e.detail(), "cannot watch sandbox");
                    return;
                }
            };
            if let Err(e) = backend.wait_exit(&handle).await {
                tracing::warn!(sandbox = %id, error = %e.chain(), "cannot watch sandbox");
                return;
            }
            service.on_exit(&id, &handle).await;
        });
    }

    async fn on_exit(&self, id: &SandboxId, handle: &sbx_backend::Handle) {
        let lock = self.lock_for(id.as_str());
        let _guard = lock.lock().await;
        let Ok(row) = self.reread(id.as_str()) else {
            return;
        };
        let Ok(state) = view::state_of(&row) else {
            return;
        };
        // Only the instance this watcher watched: a recreate has already replaced it.
        if !state.is_watched() || handle_of(&row).ok().flatten().as_ref() != Some(handle) {
            return;
        }
        // A watcher of an instance that hibernated and was restored meanwhile (same handle)
        // sees the old process gone: the sandbox itself is alive, and watched by its restore.
        if let Ok(backend) = self.backend_of(&row) {
            if let Ok(observed) =
                deadline::run(deadline::LIST, "inspect", backend.inspect(handle)).await
            {
                if observed.alive {
                    return;
                }
            }
        }
        tracing::warn!(sandbox = %id, "sandbox exited on its own");
        let removal = async {
            let backend = self.backend_of(&row)?;
            deadline::run(
                deadline::DESTROY,
                "destroy",
                backend.destroy(id, Some(handle)),
            )
            .await
        };
        if let Err(e) = removal.await {
            tracing::error!(sandbox = %id, error = %e.detail(), "cannot remove the remains of a dead sandbox");
        }
        let _ = self.record(Change::to(
            id.as_str(),
            State::Failed,
            &reason::with_detail(reason::FAILED, "sandbox exited unexpectedly"),
        ));
        self.inner.access.audit(
            &crate::Caller::system(),
            "sandbox.failed",
            serde_json::json!({ "sandbox_id": row.id, "owner": row.owner, "reason": "sandbox exited unexpectedly" }),
        );
    }
}
