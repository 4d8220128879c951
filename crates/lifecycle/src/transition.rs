//! State changes, built one way: [`Change::to`] names the sandbox, the state it goes to and
//! why; only what differs from the rules below is said.
//!
//! Rules that follow from the target state (see [`State`]): a change to a state without host
//! traces (`failed`, `destroyed`) forgets the handle; a change to `destroyed` stamps
//! `destroyed_at`. The store records the change and its event in one transaction.

use sbx_store::{Lifetime, Pause, Transition};

use crate::{now_ms, State};

#[derive(Debug, Clone)]
pub(crate) struct Change<'a> {
    id: &'a str,
    to: State,
    reason: &'a str,
    at: i64,
    handle: Option<Option<&'a str>>,
    lifetime: Option<Lifetime>,
    pause: Option<Pause>,
}

impl<'a> Change<'a> {
    /// Sandbox `id` goes to `to` now, for `reason` (a code of [`crate::reason`], maybe with a
    /// detail).
    pub fn to(id: &'a str, to: State, reason: &'a str) -> Change<'a> {
        Change {
            id,
            to,
            reason,
            at: now_ms(),
            handle: (!to.may_have_host_traces()).then_some(None),
            lifetime: None,
            // Only a suspended sandbox has a pause mark: every other state clears it.
            pause: (!to.is_suspended()).then_some(Pause::default()),
        }
    }

    /// At `at` (Unix ms) rather than now: when the change must agree with another time.
    pub fn at(mut self, at: i64) -> Change<'a> {
        self.at = at;
        self
    }

    /// The backend's handle of the sandbox's new instance.
    pub fn handle(mut self, handle: &'a str) -> Change<'a> {
        self.handle = Some(Some(handle));
        self
    }

    /// Forgets the handle although the sandbox may still have traces (only its id remains to
    /// destroy them by).
    pub fn without_handle(mut self) -> Change<'a> {
        self.handle = Some(None);
        self
    }

    /// A new lifetime (start and deadline).
    pub fn lifetime(mut self, lifetime: Lifetime) -> Change<'a> {
        self.lifetime = Some(lifetime);
        self
    }

    /// The pause mark of a sandbox going to `paused`: when, and the lifetime it had left if
    /// its clock stops while paused.
    pub fn paused(mut self, at: i64, remaining_ms: Option<i64>) -> Change<'a> {
        self.pause = Some(Pause {
            at: Some(at),
            remaining_ms,
        });
        self
    }

    pub fn stored(&self) -> Transition<'a> {
        Transition {
            id: self.id,
            to_state: self.to.as_str(),
            reason: Some(self.reason),
            at: self.at,
            destroyed_at: (self.to == State::Destroyed).then_some(self.at),
            handle: self.handle,
            lifetime: self.lifetime,
            pause: self.pause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_state_decides_handle_and_destroyed_at() {
        let change = Change::to("sb-1", State::Destroyed, "deleted")
            .at(5)
            .stored();
        assert_eq!((change.destroyed_at, change.handle), (Some(5), Some(None)));
        let change = Change::to("sb-1", State::Failed, "failed").stored();
        assert_eq!((change.destroyed_at, change.handle), (None, Some(None)));
        let change = Change::to("sb-1", State::Destroying, "deleted").stored();
        assert_eq!((change.destroyed_at, change.handle), (None, None));
        let change = Change::to("sb-1", State::Running, "created")
            .handle("{}")
            .stored();
        assert_eq!(change.handle, Some(Some("{}")));
        assert_eq!(change.to_state, "running");
    }
}
