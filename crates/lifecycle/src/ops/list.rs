//! `list`: sandboxes filtered by state and metadata.

use std::collections::BTreeMap;

use crate::model::Sandbox;

use crate::{view, Caller, Error, Service, State};

/// Which sandboxes to list. No states: every state but `destroyed`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub states: Vec<State>,
    /// Every pair must be present in the sandbox's metadata.
    pub metadata: BTreeMap<String, String>,
}

impl Service {
    /// The caller's sandboxes (everyone's for admins).
    pub fn list(&self, caller: &Caller, filter: &ListFilter) -> Result<Vec<Sandbox>, Error> {
        let states: Vec<&str> = if filter.states.is_empty() {
            State::ALL
                .into_iter()
                .filter(|s| s.is_listed_by_default())
                .map(State::as_str)
                .collect()
        } else {
            filter.states.iter().map(|s| s.as_str()).collect()
        };
        let mut out = Vec::new();
        let rows = match caller.scope() {
            Some(user) => self.inner.store.sandboxes_of(user, &states)?,
            None => self.inner.store.list_sandboxes(&states)?,
        };
        for row in rows {
            let sandbox = view::sandbox(&row)?;
            if filter
                .metadata
                .iter()
                .all(|(k, v)| sandbox.metadata.get(k) == Some(v))
            {
                out.push(sandbox);
            }
        }
        Ok(out)
    }
}
