//! `reconcile`: at daemon start, make the store and the host agree.
//!
//! - a `running` (or `expired`) sandbox whose init is alive and answers is adopted: watched
//!   again, usable again, under its deadline (the reaper destroys it at once if that passed);
//! - a `hibernated` one whose checkpoint is still there is kept (a resume restores it);
//! - one whose processes are gone is marked `failed` and its remains are removed;
//! - one caught `creating` is removed and marked `failed` (its create was interrupted);
//! - one caught `destroying` is finished;
//! - one whose backend this daemon does not run (the configuration changed) is marked
//!   `failed`: nothing can reach it (if that backend comes back, its traces are orphans then);
//! - host traces of this instance that no live record names (an interrupted create, a warm
//!   helper of the previous daemon) are removed, backend by backend;
//! - what a switch of a user's active sandbox cut off left is settled (`ops/active.rs`).

use std::collections::BTreeSet;

use crate::transition::Change;
use sbx_backend::BackendError;

use super::{handle_of, sandbox_id};
use crate::{deadline, reason, view, Error, Service, State};

/// What reconciliation did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    pub adopted: Vec<String>,
    pub failed: Vec<String>,
    pub finished: Vec<String>,
    pub orphans_removed: Vec<String>,
}

impl Service {
    pub async fn reconcile(&self) -> Result<ReconcileReport, Error> {
        let inner = &self.inner;
        let mut report = ReconcileReport::default();
        self.collect_fragments()?;
        let mut known = BTreeSet::new();
        for row in inner
            .store
            .list_sandboxes(&State::names_where(State::may_have_host_traces))?
        {
            let id = sandbox_id(&row)?;
            known.insert(row.id.clone());
            let state = view::state_of(&row)?;
            let handle = handle_of(&row)?;
            let Ok(backend) = self.backend_of(&row) else {
                // Nothing can be asked of it. A sandbox being destroyed is destroyed (what its
                // backend left is an orphan to it when it runs again); any other has failed.
                if state == State::Destroying {
                    let why = row
                        .state_reason
                        .clone()
                        .unwrap_or_else(|| reason::DELETED.into());
                    self.record(Change::to(&row.id, State::Destroyed, &why))?;
                    report.finished.push(row.id);
                    continue;
                }
                let why = format!("the {} backend is not running", row.backend);
                tracing::warn!(sandbox = %id, backend = %row.backend, "a sandbox's backend is not running; marked failed");
                self.record(Change::to(
                    &row.id,
                    State::Failed,
                    &reason::with_detail(reason::DAEMON_RESTART, &why),
                ))?;
                report.failed.push(row.id);
                continue;
            };
            if state == State::Hibernated {
                // Nothing runs: kept while its checkpoint is there to restore. Only a
                // checkpoint known to be gone fails it: a backend that cannot tell now (no
                // hibernation this time, an error) keeps it for a later daemon.
                let kept = match (&handle, backend.hibernation()) {
                    (Some(handle), Some(hibernation)) => {
                        deadline::run_raw(
                            deadline::LIST,
                            "adopt",
                            hibernation.is_hibernated(handle),
                        )
                        .await?
                    }
                    (None, _) => Ok(false),
                    (Some(_), None) => Err(BackendError::unavailable(
                        "the backend cannot hibernate now",
                    )),
                };
                match kept {
                    Ok(true) => {
                        tracing::info!(sandbox = %id, "kept a hibernated sandbox of a previous daemon");
                        report.adopted.push(row.id.clone());
                        continue;
                    }
                    Ok(false) | Err(BackendError::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(sandbox = %id, error = %e.chain(), "cannot find a hibernated sandbox's checkpoint; kept as it is");
                        report.adopted.push(row.id.clone());
                        continue;
                    }
                }
            } else if state.has_deadline() {
                if let Some(handle) = &handle {
                    let adopted =
                        deadline::run_raw(deadline::LIST, "adopt", backend.adopt(handle)).await?;
                    match adopted {
                        Ok(()) => {
                            self.match_freezer(&id, state, &**backend, handle).await;
                            self.watch(id.clone(), handle.clone());
                            tracing::info!(sandbox = %id, "adopted a sandbox of a previous daemon");
                            report.adopted.push(row.id.clone());
                            continue;
                        }
                        Err(BackendError::NotFound(_)) => {
                            // Gone — unless it was hibernating when the last daemon stopped
                            // short of recording it: then it is hibernated.
                            if self.hibernated_unrecorded(backend, handle, &row).await? {
                                tracing::warn!(sandbox = %id, "found hibernated; recorded so");
                                report.adopted.push(row.id.clone());
                                continue;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(sandbox = %id, error = %e.chain(), "cannot adopt sandbox")
                        }
                    }
                }
            }
            let removal = backend.destroy(&id, handle.as_ref());
            deadline::run(deadline::DESTROY, "destroy", removal).await?;
            let (to_state, reason) = match state {
                State::Destroying => (
                    State::Destroyed,
                    row.state_reason
                        .clone()
                        .unwrap_or_else(|| reason::DELETED.into()),
                ),
                State::Creating => (
                    State::Failed,
                    reason::with_detail(reason::DAEMON_RESTART, "create interrupted"),
                ),
                _ => (
                    State::Failed,
                    reason::with_detail(
                        reason::DAEMON_RESTART,
                        "sandbox exited while the daemon was down",
                    ),
                ),
            };
            self.record(Change::to(&row.id, to_state, &reason))?;
            tracing::warn!(sandbox = %id, was = %state, now = %to_state, "settled a sandbox of a previous daemon");
            match to_state {
                State::Destroyed => report.finished.push(row.id),
                _ => report.failed.push(row.id),
            }
        }
        for backend in inner.backends.iter() {
            for id in deadline::run(deadline::LIST, "list", backend.list_owned()).await? {
                if known.contains(id.as_str()) {
                    continue;
                }
                deadline::run(deadline::DESTROY, "destroy", backend.destroy(&id, None)).await?;
                tracing::warn!(sandbox = %id, backend = backend.kind(), "removed orphaned host resources");
                report.orphans_removed.push(id.to_string());
            }
        }
        self.settle_snapshots().await;
        self.settle_actives().await;
        Ok(report)
    }
}

impl Service {
    /// Whether a sandbox the store says runs has a complete checkpoint instead (a daemon
    /// stopped between a checkpoint and its record); recorded hibernated if so.
    async fn hibernated_unrecorded(
        &self,
        backend: &std::sync::Arc<dyn sbx_backend::Backend>,
        handle: &sbx_backend::Handle,
        row: &sbx_store::SandboxRow,
    ) -> Result<bool, Error> {
        let Some(hibernation) = backend.hibernation() else {
            return Ok(false);
        };
        let found =
            deadline::run_raw(deadline::LIST, "adopt", hibernation.is_hibernated(handle)).await?;
        if !matches!(found, Ok(true)) {
            return Ok(false);
        }
        let now = crate::now_ms();
        self.record(
            Change::to(&row.id, State::Hibernated, reason::HIBERNATED)
                .at(now)
                .paused(row.paused_at.unwrap_or(now), row.paused_remaining_ms),
        )?;
        Ok(true)
    }

    /// Makes an adopted sandbox's freezer agree with its record (a crash between a freeze or
    /// a thaw and its record leaves them apart): paused stays frozen, anything else runs.
    async fn match_freezer(
        &self,
        id: &sbx_backend::SandboxId,
        state: State,
        backend: &dyn sbx_backend::Backend,
        handle: &sbx_backend::Handle,
    ) {
        let Some(pauser) = backend.pause() else {
            return;
        };
        let Ok(observed) = deadline::run(deadline::LIST, "inspect", backend.inspect(handle)).await
        else {
            return;
        };
        let result = match (state == State::Paused, observed.frozen) {
            (true, Some(false)) => {
                deadline::run(deadline::PAUSE, "pause", pauser.pause(handle)).await
            }
            (false, Some(true)) => {
                deadline::run(deadline::PAUSE, "resume", pauser.resume(handle)).await
            }
            _ => return,
        };
        match result {
            Ok(()) => {
                tracing::warn!(sandbox = %id, state = %state, "its freezer disagreed with its record; corrected")
            }
            Err(e) => {
                tracing::error!(sandbox = %id, error = %e.detail(), "cannot correct its freezer")
            }
        }
    }
}
