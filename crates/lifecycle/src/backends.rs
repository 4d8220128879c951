//! The registry of backends: every backend this daemon runs, by kind. A profile names the
//! backend its sandboxes are made by; the store records it with each sandbox, and every later
//! call for that sandbox goes to the backend of its record.

use std::collections::BTreeMap;
use std::sync::Arc;

use sbx_backend::Backend;

use crate::validate::Bounds;
use crate::Error;

/// The backends of one daemon, with the bounds each gives a sandbox under the operator's
/// capacity settings.
pub struct Backends {
    by_kind: BTreeMap<&'static str, Entry>,
}

struct Entry {
    backend: Arc<dyn Backend>,
    bounds: Bounds,
}

impl Backends {
    /// Registers `backends`; two of one kind are an error.
    pub fn new(
        backends: impl IntoIterator<Item = Arc<dyn Backend>>,
        capacity: &sbx_config::Capacity,
    ) -> Result<Backends, Error> {
        let mut by_kind = BTreeMap::new();
        for backend in backends {
            let kind = backend.kind();
            let bounds = Bounds::new(&backend.bounds(), capacity);
            if by_kind.insert(kind, Entry { backend, bounds }).is_some() {
                return Err(Error::internal(format!(
                    "two backends of kind {kind:?} were registered"
                )));
            }
        }
        Ok(Backends { by_kind })
    }

    /// The backend of `kind`: the one a profile or a sandbox's record names.
    pub fn get(&self, kind: &str) -> Result<&Arc<dyn Backend>, Error> {
        self.entry(kind).map(|entry| &entry.backend)
    }

    pub fn bounds(&self, kind: &str) -> Result<&Bounds, Error> {
        self.entry(kind).map(|entry| &entry.bounds)
    }

    fn entry(&self, kind: &str) -> Result<&Entry, Error> {
        self.by_kind.get(kind).ok_or_else(|| {
            Error::Unavailable(format!(
                "the {kind:?} backend is not running in this daemon (backends: {})",
                self.kinds().join(", ")
            ))
        })
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.by_kind.keys().copied().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.by_kind.values().map(|entry| &entry.backend)
    }

    /// The backends whose sandboxes share this host's task table (and their capacity for
    /// sandbox processes, the smallest any of them reports).
    pub fn host_local(&self) -> (Vec<&'static str>, Option<u64>) {
        let mut kinds = Vec::new();
        let mut capacity: Option<u64> = None;
        for (kind, entry) in &self.by_kind {
            if let Some(cap) = entry.bounds.pids_capacity {
                kinds.push(*kind);
                capacity = Some(capacity.map_or(cap, |c| c.min(cap)));
            }
        }
        (kinds, capacity)
    }
}
