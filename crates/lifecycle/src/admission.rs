//! Admission of sandboxes: whether a user's quotas of live sandboxes (theirs and their
//! profile's) and the host's capacity (processes, disk promises) have room for one more, and
//! how fast the daemon reads each sandbox's output. The caller's rates and the limits
//! themselves are [`crate::access`]'s.
//!
//! Invariant: admission (check, reserve, record the row, count the creation) happens under one
//! lock, so concurrent creates cannot both take the last slot.

use std::sync::Mutex;
use std::time::Duration;

use sbx_config::Limits;
use sbx_store::Scope;

use crate::model::Resources;

use crate::access::{ceil_duration, quota_exceeded, RateState};
use crate::validate::CreateParams;
use crate::{now_ms, Caller, Error, Service, State};

/// The members of a sandbox's stored spec that quotas count, in `Store::totals` order.
const RESOURCE_FIELDS: [&str; 4] = ["memory_mb", "cpus", "pids", "disk_mb"];

/// The configuration key of a resource quota.
fn limit_name(field: &str) -> &'static str {
    match field {
        "memory_mb" => "memory_mb",
        "cpus" => "cpus",
        "pids" => "pids",
        _ => "disk_mb",
    }
}

/// How fast the daemon reads one sandbox's output, all its commands together: a token bucket
/// of bytes that may run into debt (one chunk always passes, the next waits for the debt).
pub(crate) struct OutputRate {
    bytes_per_second: f64,
    burst: f64,
    state: Mutex<(f64, std::time::Instant)>,
}

impl OutputRate {
    pub(crate) fn new(bytes_per_second: f64) -> OutputRate {
        // A quarter second of output at once, and never less than a few chunks.
        let burst = (bytes_per_second / 4.0).max(256.0 * 1024.0);
        OutputRate {
            bytes_per_second,
            burst,
            state: Mutex::new((burst, std::time::Instant::now())),
        }
    }

    /// Takes `bytes` of the allowance; waits while the sandbox's output is over its rate.
    pub(crate) async fn take(&self, bytes: usize) {
        let wait = {
            let mut state = self.state.lock().expect("output rate is never poisoned");
            let now = std::time::Instant::now();
            let (tokens, at) = *state;
            let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.bytes_per_second)
                .min(self.burst)
                - bytes as f64;
            *state = (tokens, now);
            (tokens < 0.0).then(|| Duration::from_secs_f64(-tokens / self.bytes_per_second))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// An admitted create's disk, counted as promised until the create has finished (its disk
/// then exists and the backend counts it, or it failed and there is none).
pub(crate) struct DiskPromise {
    service: Service,
    backend: String,
    bytes: u64,
}

impl DiskPromise {
    /// Counts `bytes` as promised on `backend`'s storage; call under the admission lock, after
    /// the check.
    pub(crate) fn new(service: &Service, backend: &str, bytes: u64) -> DiskPromise {
        *service
            .inner
            .pending_disk
            .lock()
            .expect("disk ledger is never poisoned")
            .entry(backend.to_owned())
            .or_default() += bytes;
        DiskPromise {
            service: service.clone(),
            backend: backend.to_owned(),
            bytes,
        }
    }
}

impl Drop for DiskPromise {
    fn drop(&mut self) {
        let mut pending = self
            .service
            .inner
            .pending_disk
            .lock()
            .expect("disk ledger is never poisoned");
        if let Some(bytes) = pending.get_mut(&self.backend) {
            *bytes = bytes.saturating_sub(self.bytes);
        }
    }
}

impl Service {
    /// Checks every limit a create is subject to (the caller's rates, then quotas and
    /// capacity); on success the caller records the row and then counts the create
    /// ([`crate::access::Access::count_create`]), still holding `state`.
    pub(crate) fn admit_create(
        &self,
        state: &mut RateState,
        caller: &Caller,
        params: &CreateParams,
    ) -> Result<(), Error> {
        let profile_limits = self.profile_limits(&params.profile);
        self.inner
            .access
            .admit_create(state, caller, &params.profile, &profile_limits)?;
        self.admit_resources(
            &caller.user,
            &params.profile,
            &params.backend,
            &params.resources,
        )
    }

    /// A profile's own limits (none for an unknown profile).
    pub(crate) fn profile_limits(&self, profile: &str) -> Limits {
        self.inner
            .config
            .profiles
            .get(profile)
            .map(|p| p.limits)
            .unwrap_or(Limits::UNLIMITED)
    }

    /// Whether `user`'s quotas (theirs and the profile's) and the capacity of `backend` (and
    /// of the host) have room for one more live sandbox of `resources` (a new one, or a failed
    /// one brought back by a recreate). Call under the admission lock.
    pub(crate) fn admit_resources(
        &self,
        user: &str,
        profile: &str,
        backend: &str,
        resources: &Resources,
    ) -> Result<(), Error> {
        let now = now_ms();
        let limits = self.inner.access.limits_for(user);
        let profile_limits = self.profile_limits(profile);
        for (limits, profile) in [(limits, None), (&profile_limits, Some(profile))] {
            let quotas = [
                limits.concurrent_sandboxes.is_some(),
                limits.memory_mb.is_some(),
                limits.cpus.is_some(),
                limits.pids.is_some(),
                limits.disk_mb.is_some(),
            ];
            if quotas.contains(&true) {
                self.check_quota(user, resources, limits, profile, now)?;
            }
        }
        self.check_host_capacity(backend, resources, now)
    }

    fn check_quota(
        &self,
        user: &str,
        asked: &Resources,
        limits: &Limits,
        profile: Option<&str>,
        now: i64,
    ) -> Result<(), Error> {
        let live = State::names_where(State::holds_resources);
        let scope = Scope {
            states: &live,
            owner: Some(user),
            profile,
            backends: None,
        };
        let totals = self.inner.store.totals(&scope, &RESOURCE_FIELDS)?;
        let of = match profile {
            Some(p) => format!(" of profile {p:?}"),
            None => String::new(),
        };
        // Room comes when the first of them reaches its deadline.
        let soonest = ceil_duration(totals.soonest_expiry.unwrap_or(now) - now);
        if let Some(limit) = limits.concurrent_sandboxes {
            if totals.count >= limit {
                return Err(quota_exceeded(
                    "concurrent_sandboxes",
                    format!(
                        "user {user:?} may have {limit} live sandboxes{of} at once; destroy one first"
                    ),
                    soonest,
                ));
            }
        }
        let quotas = [
            (
                "memory_mb",
                limits.memory_mb.map(|l| l as f64),
                asked.memory_mb as f64,
                "MiB of memory",
            ),
            ("cpus", limits.cpus, asked.cpus, "CPUs"),
            (
                "pids",
                limits.pids.map(|l| l as f64),
                asked.pids as f64,
                "processes",
            ),
            (
                "disk_mb",
                limits.disk_mb.map(|l| l as f64),
                asked.disk_mb as f64,
                "MiB of disk",
            ),
        ];
        for (index, (key, limit, asked, unit)) in quotas.into_iter().enumerate() {
            let Some(limit) = limit else { continue };
            let used = totals.sums[index];
            if asked > limit + 1e-9 {
                return Err(Error::OverLimit(format!(
                    "resources.{key}: {asked} is more than user {user:?} may use in total ({limit}{of})"
                )));
            }
            if used + asked > limit + 1e-9 {
                return Err(quota_exceeded(
                    limit_name(key),
                    format!(
                        "user {user:?} may use {limit} {unit} in total{of}; {used} are in use and {asked} were asked for"
                    ),
                    soonest,
                ));
            }
        }
        Ok(())
    }

    /// The host's own capacity, all users together: the process limits of live sandboxes of
    /// every backend that runs them on this host stay within the share of the host's task
    /// table, and the disks `backend` promises within the free space beside the reserve.
    fn check_host_capacity(
        &self,
        backend: &str,
        resources: &Resources,
        now: i64,
    ) -> Result<(), Error> {
        let backends = &self.inner.backends;
        let bounds = backends.bounds(backend)?;
        let (local, capacity) = backends.host_local();
        if let (Some(_), Some(capacity)) = (bounds.pids_capacity, capacity) {
            let live = State::names_where(State::holds_resources);
            let scope = Scope {
                states: &live,
                backends: Some(&local),
                ..Scope::default()
            };
            let totals = self.inner.store.totals(&scope, &["pids"])?;
            // Each sandbox's runtime takes tasks of its own beyond its limit.
            let mut overhead = 0u64;
            for kind in &local {
                let per = backends.bounds(kind)?.tasks_per_sandbox;
                if per == 0 {
                    continue;
                }
                let kinds = [*kind];
                let of_kind = Scope {
                    states: &live,
                    backends: Some(&kinds),
                    ..Scope::default()
                };
                overhead += self.inner.store.totals(&of_kind, &[])?.count * per;
            }
            let promised = totals.sums[0] as u64 + overhead;
            let asked = resources.pids + bounds.tasks_per_sandbox;
            if promised + asked > capacity {
                let soonest = ceil_duration(totals.soonest_expiry.unwrap_or(now) - now);
                return Err(Error::AtCapacity {
                    message: format!(
                        "this host's capacity for sandbox processes is {capacity} (capacity.pids_share of the host's task table); {promised} are promised to live sandboxes and {asked} were asked for: try again when one ends, or ask for fewer pids"
                    ),
                    retry_after: soonest.min(Duration::from_secs(60)),
                });
            }
        }
        let Some(storage) = backends.get(backend)?.storage() else {
            return Ok(());
        };
        let pending = self
            .inner
            .pending_disk
            .lock()
            .expect("disk ledger is never poisoned")
            .get(backend)
            .copied()
            .unwrap_or(0);
        let reserve = bounds.disk_reserve_mb << 20;
        let room = storage.free_bytes.saturating_sub(reserve) as f64 * bounds.disk_overcommit;
        let promised = storage.promised_bytes + pending;
        let asked = resources.disk_mb << 20;
        if promised as f64 + asked as f64 > room {
            return Err(Error::InsufficientStorage(format!(
                "the host's disk cannot promise {} MiB more: {} MiB are free, {} MiB are promised to live sandboxes' disks and {} MiB are kept in reserve; ask for a smaller disk_mb or try again when a sandbox ends",
                asked >> 20,
                storage.free_bytes >> 20,
                promised >> 20,
                bounds.disk_reserve_mb
            )));
        }
        Ok(())
    }
}
