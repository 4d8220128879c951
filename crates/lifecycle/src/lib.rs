//! Lifecycle: what may happen to a sandbox, and when.
//!
//! Owns: the state machine ([`State`] and its `can_*` rules), validation of requests into
//! backend specs ("parse, then trust"), one file per verb under `ops/`, the reaper (deadlines
//! and idleness), the watchers that notice a sandbox dying on its own, the event stream, and
//! start-up reconciliation (adoption) of store and host.
//! Must never: hold a store transaction across a backend call, or let a backend call run
//! without a deadline ([`deadline`]).
//!
//! Architecture invariant: lifecycle is the only place where the store and the backends meet.
//! Every state change is a [`transition::Change`] that goes through [`Service::record`]: written to the store with its reason,
//! then published to event subscribers. A row exists before its sandbox's host traces do, so a
//! crash at any point leaves a record that names what may exist on the host.

pub mod access;
mod admission;
mod backends;
mod deadline;
mod error;
mod fragments;
pub mod model;
mod ops;
pub mod reason;
mod state;
#[cfg(test)]
mod tests;
mod transition;
mod validate;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use sbx_backend::Backend;
use sbx_store::Store;

pub use backends::Backends;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinSet;

pub use access::{
    Access, AuditEntry, AuditQuery, AuthFailure, Caller, ExecPermit, Limited, LoginRefusal,
    ADMIN_USER, MAX_QUERY as MAX_AUDIT_QUERY, MAX_SESSIONS_PER_KEY, SESSION_LIFETIME_MS,
};
pub use error::Error;
pub use model::Snapshot;
pub use ops::events::PAGE as EVENT_PAGE;
pub use ops::exec::{ExecOutput, ExecStream};
pub use ops::list::ListFilter;
pub use ops::reconcile::ReconcileReport;
pub use ops::status::Usage;
pub use sbx_backend::Signal;
pub use sbx_backend::{
    ByteStream, FileEvent, FileEventKind, FileEvents, FileInfo, FileKind, Listing,
};
pub use sbx_backend::{ExecInput, ExitStatus, KillSwitch, SignalTarget, TtySize};
pub use sbx_backend::{ImageProgress, ImageSource, ImageTemplate, ProgressSender};
pub use state::State;
/// The backend's limits for a sandbox of these resources.
pub use validate::limits as sandbox_limits;
pub use validate::Bounds;

/// Settings lifecycle needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub profiles: BTreeMap<String, sbx_config::Profile>,
    pub reaper: sbx_config::Reaper,
    /// How much of what the host has sandboxes may be promised (applied to each backend's
    /// bounds).
    pub capacity: sbx_config::Capacity,
    pub limits: sbx_config::LimitsConfig,
    /// Where the audit log goes, and its rotation (`None`: no audit log).
    pub audit: Option<(std::path::PathBuf, sbx_config::Audit)>,
    /// What a running command may cost the daemon.
    pub exec: sbx_config::Exec,
    /// How many snapshots each user may keep.
    pub snapshots: sbx_config::Snapshots,
    /// Projects, fragments and their bounds.
    pub projects: sbx_config::Projects,
}

/// The sandbox service: every operation the API offers, on one shared object.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    /// Who may do what, how often, and the audit trail.
    access: Access,
    backends: Backends,
    config: Config,
    started_at: i64,
    /// Serialises state-changing operations per sandbox (create, destroy, extend, recreate).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Fragments being written, per owner (see `ops::projects`).
    fragment_writes: Arc<ops::projects::Writes>,
    /// Downloads of fragments under way, per user (see `ops::projects`).
    fragment_reads: Arc<ops::projects::Reads>,
    /// Serialises switches of each user's active sandbox (see `ops::active`).
    user_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Watchers of running sandboxes (see `ops::watch`).
    watchers: Mutex<JoinSet<()>>,
    /// Every recorded event, as it happens.
    events: broadcast::Sender<model::Event>,
    /// Last API use of each live sandbox (Unix ms), for idle reaping.
    activity: Mutex<HashMap<String, i64>>,
    /// How fast the daemon reads each sandbox's output (made at its first command).
    output_rates: Mutex<HashMap<String, Arc<admission::OutputRate>>>,
    /// Disk promised to admitted creates whose disks may not exist yet, bytes per backend
    /// (the backend's [`sbx_backend::Storage`] counts a disk once it exists).
    pending_disk: Mutex<HashMap<String, u64>>,
    /// Wakes the reaper (a deadline changed, or it is time to stop).
    reaper_wake: Notify,
    /// The daemon's image store (templates from images), when it has one.
    images: std::sync::OnceLock<Arc<dyn sbx_backend::Images>>,
    /// Templates whose removal is under way: no create of them is admitted.
    images_removing: Mutex<std::collections::HashSet<String>>,
    stopping: AtomicBool,
    reaper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Turns true when the daemon stops: long-lived streams end.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Service {
    /// A service over `backends` (one of each kind). Every profile must name one of them.
    pub fn new(
        store: Store,
        backends: Vec<Arc<dyn Backend>>,
        config: Config,
    ) -> Result<Service, Error> {
        let backends = Backends::new(backends, &config.capacity)?;
        for profile in config.profiles.values() {
            if backends.get(&profile.backend).is_err() {
                return Err(Error::Invalid(format!(
                    "profiles.{}.backend: {:?} is not running in this daemon (backends: {})",
                    profile.name,
                    profile.backend,
                    backends.kinds().join(", ")
                )));
            }
        }
        let (events, _) = broadcast::channel(1024);
        let store = Arc::new(store);
        let access = Access::new(store.clone(), config.limits.clone(), config.audit.clone())?;
        Ok(Service {
            inner: Arc::new(Inner {
                store,
                access,
                backends,
                config,
                started_at: now_ms(),
                locks: Mutex::new(HashMap::new()),
                user_locks: Mutex::new(HashMap::new()),
                fragment_writes: Arc::default(),
                fragment_reads: Arc::default(),
                watchers: Mutex::new(JoinSet::new()),
                events,
                activity: Mutex::new(HashMap::new()),
                output_rates: Mutex::new(HashMap::new()),
                pending_disk: Mutex::new(HashMap::new()),
                reaper_wake: Notify::new(),
                images: std::sync::OnceLock::new(),
                images_removing: Mutex::default(),
                stopping: AtomicBool::new(false),
                reaper: Mutex::new(None),
                closing: tokio::sync::watch::Sender::new(false),
            }),
        })
    }

    /// Callers, keys, sessions, rates and the audit trail.
    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    pub fn backends(&self) -> &Backends {
        &self.inner.backends
    }

    /// Starts every backend's background work (after [`Service::reconcile`]).
    pub async fn start_backends(&self) -> Result<(), Error> {
        for backend in self.inner.backends.iter() {
            let kind = backend.kind();
            deadline::run(deadline::LIST, "start", backend.start())
                .await
                .map_err(|e| {
                    Error::internal(format!("the {kind} backend cannot start: {}", e.detail()))
                })?;
        }
        Ok(())
    }

    /// Stops every backend's background work (the daemon's last step with the backends).
    pub async fn shutdown_backends(&self) {
        for backend in self.inner.backends.iter() {
            if tokio::time::timeout(deadline::DESTROY, backend.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(backend = backend.kind(), "backend shutdown timed out");
            }
        }
    }

    /// The backend that made the sandbox of `row`.
    fn backend_of(&self, row: &sbx_store::SandboxRow) -> Result<&Arc<dyn Backend>, Error> {
        self.inner.backends.get(&row.backend)
    }

    /// Becomes true once the daemon stops; streams that would run forever watch it.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().expect("lock map is never poisoned");
        locks.entry(id.to_owned()).or_default().clone()
    }

    fn forget(&self, id: &str) {
        self.inner
            .locks
            .lock()
            .expect("lock map is never poisoned")
            .remove(id);
        self.inner
            .activity
            .lock()
            .expect("activity map is never poisoned")
            .remove(id);
        self.inner
            .output_rates
            .lock()
            .expect("rate map is never poisoned")
            .remove(id);
    }

    /// The output rate of sandbox `id`, whose CPU limit is `cpus`.
    fn output_rate(&self, id: &str, cpus: f64) -> Arc<admission::OutputRate> {
        let per_cpu = self.inner.config.exec.output_bytes_per_cpu as f64;
        self.inner
            .output_rates
            .lock()
            .expect("rate map is never poisoned")
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(admission::OutputRate::new(per_cpu * cpus)))
            .clone()
    }

    /// Notes API use of a sandbox (it is not idle).
    fn touch(&self, id: &str) {
        self.inner
            .activity
            .lock()
            .expect("activity map is never poisoned")
            .insert(id.to_owned(), now_ms());
    }

    /// Runs `work` to its end in a task of its own, whatever becomes of the caller: an
    /// operation that changes a sandbox's state must not stop half-way because the client
    /// that asked for it hung up (its request future is then dropped). A panic in it is an
    /// internal error.
    async fn to_completion<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        match tokio::spawn(work).await {
            Ok(result) => result,
            Err(panic) => {
                tracing::error!(operation, error = %panic, "operation panicked");
                Err(Error::internal(format!("{operation} panicked: {panic}")))
            }
        }
    }

    /// Records a state change and publishes it.
    fn record(&self, change: transition::Change<'_>) -> Result<(), Error> {
        let event = self.inner.store.transition(&change.stored())?;
        self.publish(event);
        Ok(())
    }

    fn publish(&self, event: sbx_store::EventRow) {
        // No subscriber is not an error.
        let _ = self.inner.events.send(view::event(&event));
    }
}

/// Milliseconds since the Unix epoch. (In lifecycle's own tests: the wall clock at the start
/// of the process moved on by tokio's clock, which a paused test runtime advances at will.)
pub fn now_ms() -> i64 {
    #[cfg(test)]
    return tests::clock::now_ms();
    #[cfg(not(test))]
    wall_clock_ms()
}

#[cfg_attr(test, allow(dead_code))]
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
