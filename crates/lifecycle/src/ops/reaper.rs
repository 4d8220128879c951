//! The reaper: destroys sandboxes at their deadline (reason `expired`) and, where the profile
//! sets `ttl.idle`, sandboxes that have been idle that long (reason `idle`) — or pauses them,
//! where it says `ttl.idle_action = "pause"`.
//!
//! Idle means both: no API use (exec, extend, recreate) and no process of the sandbox's own
//! running besides its init. A sandbox busy with background work is seen as active at every
//! check, so its idle time only starts once that work ends.
//!
//! Scheduling: one task sleeps until the earliest deadline, and is woken early when a deadline
//! is set or changes (create, extend, recreate). Between deadlines it costs nothing, however
//! many sandboxes there are; each wake reads the deadlines once. Only while a running sandbox
//! has `ttl.idle` does it also wake every `reaper.interval` to look for idleness. A wake every
//! [`MAX_SLEEP`] at most is the safety net against wall-clock jumps (deadlines are wall-clock
//! times; sleeps are monotonic).

use std::time::Duration;

use tokio::time::Instant;

use sbx_store::SandboxRow;

use super::handle_of;
use crate::view::StoredSpec;
use crate::{deadline, now_ms, view, Service, State};

/// Shortest sleep between passes, so that a burst of deadlines cannot spin the loop.
const MIN_SLEEP: Duration = Duration::from_millis(20);
/// Longest sleep when no deadline is nearer and no sandbox needs idle checks.
const MAX_SLEEP: Duration = Duration::from_secs(60);

impl Service {
    /// Starts the reaper task, unless the configuration turns it off.
    pub fn start_reaper(&self) {
        if !self.inner.config.reaper.enabled {
            return;
        }
        let service = self.clone();
        let task = tokio::spawn(async move { service.reap_loop().await });
        *self
            .inner
            .reaper
            .lock()
            .expect("reaper slot is never poisoned") = Some(task);
    }

    pub(crate) async fn stop_reaper(&self) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.reaper_wake.notify_one();
        let task = self
            .inner
            .reaper
            .lock()
            .expect("reaper slot is never poisoned")
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    async fn reap_loop(&self) {
        let interval = self.inner.config.reaper.interval;
        let mut next_idle_check = Instant::now();
        while !self
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            let now = now_ms();
            let rows = match self
                .inner
                .store
                .list_sandboxes(&State::names_where(State::has_deadline))
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "reaper cannot read the store");
                    Vec::new()
                }
            };
            let mut due = tokio::task::JoinSet::new();
            let mut next_deadline: Option<i64> = None;
            for row in &rows {
                // A paused sandbox whose clock stopped has its hold (`ttl.max` from its pause)
                // as its deadline until resumed.
                if row.expires_at <= now {
                    let service = self.clone();
                    let id = row.id.clone();
                    due.spawn(async move {
                        if let Err(e) = service.expire_one(&id).await {
                            tracing::error!(sandbox = %id, error = %e.detail(), "cannot expire sandbox");
                        }
                    });
                } else {
                    next_deadline =
                        Some(next_deadline.map_or(row.expires_at, |d| d.min(row.expires_at)));
                }
            }
            while due.join_next().await.is_some() {}
            let watch_idle = rows.iter().any(needs_idle_checks);
            if watch_idle && Instant::now() >= next_idle_check {
                self.reap_idle(&rows, now).await;
                next_idle_check = Instant::now() + interval;
            }
            let until_deadline = next_deadline
                .map(|d| Duration::from_millis(u64::try_from(d - now_ms()).unwrap_or(0)))
                .unwrap_or(MAX_SLEEP);
            let cap = if watch_idle { interval } else { MAX_SLEEP };
            let sleep = until_deadline.min(cap).max(MIN_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.inner.reaper_wake.notified() => {}
            }
        }
    }

    async fn reap_idle(&self, rows: &[SandboxRow], now: i64) {
        for row in rows {
            let Ok(spec) = StoredSpec::parse(row) else {
                continue;
            };
            let Some(idle_ms) = spec.idle_ms else {
                continue;
            };
            let state = view::state_of(row).ok();
            let paused = state.is_some_and(State::is_suspended);
            // A paused sandbox is idle since it was paused; where the profile destroys idle
            // sandboxes, pausing does not keep one (a pausing profile keeps it paused).
            if !(state == Some(State::Running) || paused && !spec.idle_pauses) {
                continue;
            }
            let last = self.last_activity(row);
            if now - last < idle_ms {
                continue;
            }
            if paused {
                if let Err(e) = self.reap_idle_one(&row.id, idle_ms).await {
                    tracing::error!(sandbox = %row.id, error = %e.detail(), "cannot reap idle sandbox");
                }
                continue;
            }
            let Ok(Some(handle)) = handle_of(row) else {
                continue;
            };
            let observed = match self.backend_of(row) {
                Ok(backend) => {
                    deadline::run(deadline::LIST, "inspect", backend.inspect(&handle)).await
                }
                Err(e) => Err(e),
            };
            match observed {
                // Init alone is 1 process; anything more is the sandbox at work.
                Ok(observed) if observed.pids.unwrap_or(0) > 1 => self.touch(&row.id),
                Ok(_) => {
                    if let Err(e) = self.reap_idle_one(&row.id, idle_ms).await {
                        tracing::error!(sandbox = %row.id, error = %e.detail(), "cannot reap idle sandbox");
                    }
                }
                Err(e) => {
                    tracing::warn!(sandbox = %row.id, error = %e.detail(), "cannot inspect sandbox")
                }
            }
        }
    }

    /// When the sandbox was last used: API activity seen by this daemon, else the later of its
    /// start and this daemon's start (a restart does not make adopted sandboxes idle at once).
    pub(crate) fn last_activity(&self, row: &SandboxRow) -> i64 {
        let seen = self
            .inner
            .activity
            .lock()
            .expect("activity map is never poisoned")
            .get(&row.id)
            .copied();
        seen.unwrap_or_else(|| row.started_at.max(self.inner.started_at))
            .max(row.paused_at.unwrap_or(0))
    }

    async fn reap_idle_one(&self, id: &str, idle_ms: i64) -> Result<(), crate::Error> {
        let lock = self.lock_for(id);
        let guard = lock.lock().await;
        let row = self.reread(id)?;
        // Still idle (an exec may have come in meanwhile), and still running — or paused, where
        // the profile destroys idle sandboxes.
        let spec = StoredSpec::parse(&row)?;
        let state = view::state_of(&row)?;
        let reapable = state == State::Running || (state.is_suspended() && !spec.idle_pauses);
        if !reapable || now_ms() - self.last_activity(&row) < idle_ms {
            return Ok(());
        }
        let system = crate::Caller::system();
        if spec.idle_pauses {
            self.pause_locked(&row, crate::reason::IDLE, &system, None)
                .await?;
            return Ok(());
        }
        self.destroy_locked(&row, crate::reason::IDLE, &system)
            .await?;
        drop(guard);
        self.forget(id);
        Ok(())
    }
}

/// A running sandbox whose profile reaps it when idle (or a paused one, where that reaping
/// destroys).
fn needs_idle_checks(row: &SandboxRow) -> bool {
    let state = view::state_of(row).ok();
    StoredSpec::parse(row).is_ok_and(|spec| {
        spec.idle_ms.is_some()
            && (state == Some(State::Running)
                || state.is_some_and(State::is_suspended) && !spec.idle_pauses)
    })
}
