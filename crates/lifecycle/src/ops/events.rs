//! Events: the recorded history of state changes, and a live feed of new ones.

use crate::model::Event;
use tokio::sync::broadcast;

use crate::{view, Caller, Error, Service};

/// Most events one query returns.
pub const PAGE: i64 = 1000;

impl Service {
    /// Recorded events after `since` (of one sandbox, or all the caller may see), oldest
    /// first.
    pub fn events_since(
        &self,
        caller: &Caller,
        since: i64,
        sandbox: Option<&str>,
    ) -> Result<Vec<Event>, Error> {
        let rows = self
            .inner
            .store
            .events_after(since, sandbox, caller.scope(), PAGE)?;
        Ok(rows.iter().map(view::event).collect())
    }

    /// Whether the caller may see an event (of a sandbox of theirs).
    pub fn may_see_event(&self, caller: &Caller, event: &Event) -> bool {
        caller.admin
            || matches!(
                self.inner.store.owner_of(&event.sandbox_id),
                Ok(Some(Some(owner))) if owner == caller.user
            )
    }

    /// The history of one sandbox.
    pub fn sandbox_events(&self, caller: &Caller, id_or_name: &str) -> Result<Vec<Event>, Error> {
        let row = self.resolve(caller, id_or_name)?;
        let rows = self.inner.store.events(&row.id)?;
        Ok(rows.iter().map(view::event).collect())
    }

    /// Every event recorded from now on. A subscriber that falls behind by more than the
    /// channel holds gets `Lagged` and can catch up with [`Service::events_since`].
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The newest event's sequence number.
    pub fn last_event(&self) -> Result<i64, Error> {
        Ok(self.inner.store.last_event()?)
    }
}
