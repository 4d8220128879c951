//! `extend`: a new deadline, counted from now, capped so that the instance's whole lifetime
//! stays within its profile's `ttl.max`. A running or paused sandbox can be extended (one whose
//! clock is stopped gets the new lifetime left for when it is resumed).

use crate::model::{Sandbox, Span};
use sbx_store::Lifetime;

use crate::transition::Change;

use crate::view::{millis, StoredSpec};
use crate::{now_ms, reason, view, Caller, Error, Service};

impl Service {
    pub async fn extend(
        &self,
        caller: &Caller,
        id_or_name: &str,
        duration: &Span,
    ) -> Result<Sandbox, Error> {
        let asked = duration.value;
        if asked.is_zero() {
            return Err(Error::Invalid("duration must be above 0".into()));
        }
        let row = self.resolve(caller, id_or_name)?;
        let lock = self.lock_for(&row.id);
        let _guard = lock.lock().await;
        let row = self.reread(&row.id)?;
        let state = view::effective_state(&row)?;
        if !state.can_extend() {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "extend",
            });
        }
        let spec = StoredSpec::parse(&row)?;
        let now = now_ms();
        // A paused sandbox whose clock stopped: its deadline is kept as the lifetime left, and
        // its start moves on by the time paused (see `pause.rs`).
        let stopped = row.paused_remaining_ms.filter(|_| state.is_suspended());
        let paused_for = match stopped {
            Some(_) => (now - row.paused_at.unwrap_or(now)).max(0),
            None => 0,
        };
        let latest = row
            .started_at
            .saturating_add(paused_for)
            .saturating_add(spec.ttl_max_ms);
        let wanted = now.saturating_add(millis(asked));
        let mut warnings = Vec::new();
        let expires_at = if wanted > latest {
            warnings.push(format!(
                "{duration} would outlive the profile's maximum lifetime of {}; capped",
                sbx_config::duration::format(std::time::Duration::from_millis(
                    spec.ttl_max_ms as u64
                ))
            ));
            latest
        } else {
            wanted
        };
        let why = reason::with_detail(reason::EXTENDED, &duration.to_string());
        let change = Change::to(&row.id, view::state_of(&row)?, &why).at(now);
        self.record(match stopped {
            Some(_) => change.paused(row.paused_at.unwrap_or(now), Some(expires_at - now)),
            None => change.lifetime(Lifetime {
                started_at: row.started_at,
                ttl_ms: row.ttl_ms,
                expires_at,
            }),
        })?;
        self.touch(&row.id);
        self.inner.reaper_wake.notify_one();
        self.inner.access.audit(
            caller,
            "sandbox.extended",
            serde_json::json!({ "sandbox_id": row.id, "duration": duration.written, "expires_at": view::rfc3339(expires_at) }),
        );
        let mut sandbox = view::sandbox(&self.reread(&row.id)?)?;
        sandbox.warnings = warnings;
        Ok(sandbox)
    }
}
