//! `pause` and `resume`: freeze a running sandbox's processes where they are (they use no CPU)
//! and let them carry on later. Both are idempotent: pausing a paused sandbox, like resuming a
//! running one, answers it as it is.
//!
//! The lifetime runs while paused unless the profile says `ttl.pause_stops_clock` (or the pause
//! asks, as E2B's does): then the lifetime left is kept with the record, the deadline while
//! paused is the hold, `ttl.max` of wall time from the pause ([`view::clock_stopped`]), and a
//! resume gives the lifetime left back (the start of the instance moves by the time paused, so `ttl.max`
//! counts running time too). A paused sandbox past its deadline expires and is destroyed like
//! a running one.
//!
//! `hibernate` goes further, where the backend can ([`Hibernation`]): the sandbox's processes
//! and memory go to disk and its host processes end; `resume` restores them. A hibernated
//! sandbox follows a paused one's rules (clock, expiry, `auto_resume`, idleness) and survives
//! a daemon restart (reconcile keeps it while its checkpoint is there).

use sbx_backend::{Hibernation, PauseResume};
use sbx_store::{Lifetime, SandboxRow};

use super::handle_of;
use crate::model::Sandbox;
use crate::transition::Change;
use crate::view::{self, StoredSpec};
use crate::{deadline, now_ms, reason, Caller, Error, Service, State};

impl Service {
    /// Pauses a sandbox for `caller`; its lifetime runs on while paused unless its profile
    /// says `ttl.pause_stops_clock`.
    pub async fn pause(&self, caller: &Caller, id_or_name: &str) -> Result<Sandbox, Error> {
        self.pause_with(caller, id_or_name, None).await
    }

    /// Pauses a sandbox for `caller`, its lifetime stopped while it is paused whatever its
    /// profile says (E2B's pause: a paused sandbox waits for its resume, however long).
    pub async fn pause_stopping_clock(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<Sandbox, Error> {
        self.pause_with(caller, id_or_name, Some(true)).await
    }

    async fn pause_with(
        &self,
        caller: &Caller,
        id_or_name: &str,
        stop_clock: Option<bool>,
    ) -> Result<Sandbox, Error> {
        let row = self.resolve(caller, id_or_name)?;
        let (service, caller) = (self.clone(), caller.clone());
        self.to_completion("pause", async move {
            let lock = service.lock_for(&row.id);
            let _guard = lock.lock().await;
            let row = service.reread(&row.id)?;
            let row = service
                .pause_locked(&row, reason::PAUSED, &caller, stop_clock)
                .await?;
            view::sandbox(&row)
        })
        .await
    }

    /// Resumes a sandbox for `caller`.
    pub async fn resume(&self, caller: &Caller, id_or_name: &str) -> Result<Sandbox, Error> {
        let row = self.resolve(caller, id_or_name)?;
        let (service, caller) = (self.clone(), caller.clone());
        self.to_completion("resume", async move {
            let lock = service.lock_for(&row.id);
            let _guard = lock.lock().await;
            let row = service.reread(&row.id)?;
            let row = service.resume_locked(&row, &caller).await?;
            view::sandbox(&row)
        })
        .await
    }

    /// Hibernates a sandbox for `caller`.
    pub async fn hibernate(&self, caller: &Caller, id_or_name: &str) -> Result<Sandbox, Error> {
        let row = self.resolve(caller, id_or_name)?;
        let (service, caller) = (self.clone(), caller.clone());
        self.to_completion("hibernate", async move {
            let lock = service.lock_for(&row.id);
            let _guard = lock.lock().await;
            let row = service.reread(&row.id)?;
            let row = service.hibernate_locked(&row, &caller).await?;
            view::sandbox(&row)
        })
        .await
    }

    /// The hibernation itself; the caller holds the sandbox's lock.
    pub(crate) async fn hibernate_locked(
        &self,
        row: &SandboxRow,
        by: &Caller,
    ) -> Result<SandboxRow, Error> {
        let state = view::effective_state(row)?;
        if state == State::Hibernated {
            return Ok(row.clone());
        }
        if !state.can_hibernate() {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "hibernate",
            });
        }
        let (hibernation, handle) = self.hibernation(row)?;
        let bytes = deadline::run_on(
            &row.id,
            deadline::HIBERNATE,
            "hibernate",
            hibernation.hibernate(&handle),
        )
        .await?;
        let spec = StoredSpec::parse(row)?;
        let now = now_ms();
        // Its deadline (or hold) may have passed while it was checkpointed: then it is
        // expired, not hibernated.
        if row.expires_at <= now {
            let _ = hibernation.restore(&handle).await;
            return Err(Error::WrongState {
                id: row.id.clone(),
                state: State::Expired,
                operation: "hibernate",
            });
        }
        // The lifetime left, kept where the profile stops the clock; a paused sandbox keeps
        // the mark it had.
        let (paused_at, remaining) = match (state, row.paused_at) {
            (State::Paused, Some(at)) => (at, row.paused_remaining_ms),
            _ => (
                now,
                spec.pause_stops_clock
                    .then_some((row.expires_at - now).max(0)),
            ),
        };
        let mut change = Change::to(&row.id, State::Hibernated, reason::HIBERNATED)
            .at(now)
            .paused(paused_at, remaining);
        if remaining.is_some() && state != State::Paused {
            // Held at most `ttl.max` from now, as a pause that stops the clock is (a paused
            // sandbox keeps the hold its pause gave it).
            change = change.lifetime(hold(row, &spec, now));
        }
        if let Err(e) = self.record(change) {
            // The record says it runs: so must the sandbox.
            let _ = hibernation.restore(&handle).await;
            return Err(e);
        }
        self.inner.reaper_wake.notify_one();
        self.inner.access.audit(
            by,
            "sandbox.hibernated",
            serde_json::json!({ "sandbox_id": row.id, "checkpoint_bytes": bytes }),
        );
        self.reread(&row.id)
    }

    /// The pause itself; the caller holds the sandbox's lock. `stop_clock`: whether the
    /// lifetime stops while paused (`None`: as the profile says).
    pub(crate) async fn pause_locked(
        &self,
        row: &SandboxRow,
        why: &str,
        by: &Caller,
        stop_clock: Option<bool>,
    ) -> Result<SandboxRow, Error> {
        let state = view::effective_state(row)?;
        if state == State::Paused {
            return Ok(row.clone());
        }
        if !state.can_pause() {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "pause",
            });
        }
        let (pauser, handle) = self.pauser(row)?;
        deadline::run_on(&row.id, deadline::PAUSE, "pause", pauser.pause(&handle)).await?;
        let spec = StoredSpec::parse(row)?;
        let now = now_ms();
        // Its deadline may have passed while it froze: then it is expired, not paused.
        if row.expires_at <= now {
            let _ = pauser.resume(&handle).await;
            return Err(Error::WrongState {
                id: row.id.clone(),
                state: State::Expired,
                operation: "pause",
            });
        }
        let remaining = stop_clock
            .unwrap_or(spec.pause_stops_clock)
            .then_some(row.expires_at - now);
        let mut change = Change::to(&row.id, State::Paused, why)
            .at(now)
            .paused(now, remaining);
        if remaining.is_some() {
            // However long it waits for its resume, a sandbox whose clock stopped is held at
            // most its profile's `ttl.max` of wall time while paused (then it expires): a
            // pause is never a way to keep a sandbox for ever.
            change = change.lifetime(hold(row, &spec, now));
        }
        if let Err(e) = self.record(change) {
            // The record says running: so must the sandbox.
            let _ = pauser.resume(&handle).await;
            return Err(e);
        }
        self.inner.reaper_wake.notify_one();
        self.inner.access.audit(
            by,
            "sandbox.paused",
            serde_json::json!({ "sandbox_id": row.id, "reason": why }),
        );
        self.reread(&row.id)
    }

    /// The resume itself; the caller holds the sandbox's lock.
    pub(crate) async fn resume_locked(
        &self,
        row: &SandboxRow,
        by: &Caller,
    ) -> Result<SandboxRow, Error> {
        let state = view::effective_state(row)?;
        if state == State::Running {
            // Thawed whatever the record says (a crash between a freeze and its record): a
            // running sandbox is never left frozen.
            let (pauser, handle) = self.pauser(row)?;
            deadline::run_on(&row.id, deadline::PAUSE, "resume", pauser.resume(&handle)).await?;
            return Ok(row.clone());
        }
        if !state.can_resume() {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "resume",
            });
        }
        if state == State::Hibernated {
            let (hibernation, handle) = self.hibernation(row)?;
            deadline::run_on(
                &row.id,
                deadline::HIBERNATE,
                "resume",
                hibernation.restore(&handle),
            )
            .await?;
            // Its host processes are new: watched from here.
            if let Ok(id) = super::sandbox_id(row) {
                self.watch(id, handle);
            }
        } else {
            let (pauser, handle) = self.pauser(row)?;
            deadline::run_on(&row.id, deadline::PAUSE, "resume", pauser.resume(&handle)).await?;
        }
        let now = now_ms();
        let mut change = Change::to(&row.id, State::Running, reason::RESUMED).at(now);
        if let Some(remaining) = row.paused_remaining_ms {
            let paused_for = (now - row.paused_at.unwrap_or(now)).max(0);
            change = change.lifetime(Lifetime {
                started_at: row.started_at.saturating_add(paused_for),
                ttl_ms: row.ttl_ms,
                expires_at: now.saturating_add(remaining),
            });
        }
        self.record(change)?;
        // Resuming is use: the idle clock starts again from here.
        self.touch(&row.id);
        self.inner.reaper_wake.notify_one();
        self.inner.access.audit(
            by,
            "sandbox.resumed",
            serde_json::json!({ "sandbox_id": row.id }),
        );
        self.reread(&row.id)
    }

    /// The sandbox's backend's hibernation, and the sandbox's handle.
    fn hibernation(
        &self,
        row: &SandboxRow,
    ) -> Result<(&dyn Hibernation, sbx_backend::Handle), Error> {
        let backend = self.backend_of(row)?;
        let hibernation = backend.hibernation().ok_or_else(|| {
            Error::Unsupported(format!(
                "the {} backend of sandbox {} cannot hibernate sandboxes (memory snapshots need \
                 gVisor: a profile with backend \"oci\")",
                backend.kind(),
                row.id
            ))
        })?;
        let handle = handle_of(row)?
            .ok_or_else(|| Error::internal(format!("live sandbox {} has no handle", row.id)))?;
        Ok((hibernation, handle))
    }

    /// The freezer of the sandbox's backend, and the sandbox's handle.
    fn pauser(&self, row: &SandboxRow) -> Result<(&dyn PauseResume, sbx_backend::Handle), Error> {
        let backend = self.backend_of(row)?;
        let pauser = backend.pause().ok_or_else(|| {
            Error::Unsupported(format!(
                "the {} backend of sandbox {} cannot pause sandboxes",
                backend.kind(),
                row.id
            ))
        })?;
        let handle = handle_of(row)?
            .ok_or_else(|| Error::internal(format!("live sandbox {} has no handle", row.id)))?;
        Ok((pauser, handle))
    }
}

/// The lifetime of a sandbox whose clock stops at `now`: the same, but for its deadline, which
/// becomes its hold — the longest it waits for its resume, its profile's `ttl.max` of wall time.
fn hold(row: &SandboxRow, spec: &StoredSpec, now: i64) -> Lifetime {
    Lifetime {
        started_at: row.started_at,
        ttl_ms: row.ttl_ms,
        expires_at: now.saturating_add(spec.ttl_max_ms),
    }
}
