//! The sandbox state machine.
//!
//! ```text
//!                ┌──────────── recreate ─────────────┐
//!                ▼                                   │
//! creating ──▶ running ──▶ expired ──▶ destroying ──▶ destroyed
//!     │        │ ▲ │ └─────────────────▲  (deleted, idle, daemon-shutdown, daemon-cleanup)
//!     │  pause │ │ resume              │
//!     │        ▼ │                     │
//!     │       paused ──────────────────┤  (expires too, unless its clock stopped)
//!     │    hibernate │ ▲ resume          │
//!     │        ▼     │                 │
//!     │      hibernated ───────────────┘  (its processes on disk; the same rules as paused)
//!     └──▶ failed ◀┘  (creation failed, or the sandbox died on its own; remains removed)
//! ```
//! A running sandbox hibernates too (`running ──▶ hibernated`).
//! Every check of "may X happen now" is a `can_*` method here; nothing else compares states.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Creating,
    Running,
    /// Frozen: its processes stop where they are and use no CPU until resumed.
    Paused,
    /// Checkpointed to disk: its processes and memory are saved, its host processes gone
    /// (no memory, no CPU); a resume restores them. Survives a daemon restart.
    Hibernated,
    /// Past its deadline; the reaper (or `expire --apply`) destroys it.
    Expired,
    Destroying,
    Destroyed,
    Failed,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Creating,
        State::Running,
        State::Paused,
        State::Hibernated,
        State::Expired,
        State::Destroying,
        State::Destroyed,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Running => "running",
            State::Paused => "paused",
            State::Hibernated => "hibernated",
            State::Expired => "expired",
            State::Destroying => "destroying",
            State::Destroyed => "destroyed",
            State::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The names of every state for which `rule` holds.
    pub fn names_where(rule: fn(State) -> bool) -> Vec<&'static str> {
        State::ALL
            .into_iter()
            .filter(|s| rule(*s))
            .map(State::as_str)
            .collect()
    }

    pub fn can_exec(self) -> bool {
        self == State::Running
    }

    pub fn can_extend(self) -> bool {
        matches!(self, State::Running | State::Paused | State::Hibernated)
    }

    /// Paused or hibernated: stopped where it was until a resume (the pause mark, the clock
    /// that may stop, `auto_resume` and idleness apply alike).
    pub fn is_suspended(self) -> bool {
        matches!(self, State::Paused | State::Hibernated)
    }

    /// Hibernating a hibernated sandbox changes nothing; a paused one is resumed first.
    pub fn can_hibernate(self) -> bool {
        matches!(self, State::Running | State::Paused | State::Hibernated)
    }

    /// Its host processes run (or are frozen): one of them ending unasked is a crash.
    pub fn is_watched(self) -> bool {
        matches!(self, State::Running | State::Paused | State::Expired)
    }

    /// Pausing a paused sandbox, like resuming a running one, changes nothing.
    pub fn can_pause(self) -> bool {
        matches!(self, State::Running | State::Paused)
    }

    pub fn can_resume(self) -> bool {
        matches!(self, State::Running | State::Paused | State::Hibernated)
    }

    /// A destroyed sandbox is history; anything else can get a fresh instance.
    pub fn can_recreate(self) -> bool {
        matches!(
            self,
            State::Running | State::Paused | State::Hibernated | State::Expired | State::Failed
        )
    }

    /// Subject to its deadline (the reaper and `expire` look at these). A paused sandbox
    /// whose clock stopped has its hold as its deadline until it is resumed.
    pub fn has_deadline(self) -> bool {
        matches!(
            self,
            State::Running | State::Paused | State::Hibernated | State::Expired
        )
    }

    /// Destroy is idempotent: every state may ask; `Destroyed` answers at once.
    pub fn is_destroyed(self) -> bool {
        self == State::Destroyed
    }

    /// The sandbox may still have processes or other traces on the host.
    pub fn may_have_host_traces(self) -> bool {
        matches!(
            self,
            State::Creating
                | State::Running
                | State::Paused
                | State::Hibernated
                | State::Expired
                | State::Destroying
        )
    }

    /// Shown by default in listings.
    pub fn is_listed_by_default(self) -> bool {
        self != State::Destroyed
    }

    /// States whose sandbox counts against quotas and the host's capacity (its limits are
    /// promised to it): every state but the two that release its name too.
    pub fn holds_resources(self) -> bool {
        !self.releases_name()
    }

    /// States whose sandbox no longer holds its name.
    pub fn releases_name(self) -> bool {
        matches!(self, State::Destroyed | State::Failed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        assert_eq!(State::parse("sleeping"), None);
    }

    /// The store's SQL names states literally; it must agree with the rules here.
    #[test]
    fn the_stores_sql_agrees_with_the_rules() {
        assert_eq!(
            State::names_where(State::releases_name),
            sbx_store::STATES_RELEASING_NAMES
        );
    }
}
