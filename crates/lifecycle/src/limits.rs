//! Rate limits and quotas: who may create a sandbox or start a command now.
//!
//! - Creations per hour, per user and per client address: sliding windows of admission times.
//!   A refusal's retry-after is when the oldest admission in the window leaves it.
//! - Commands per second, per user: a token bucket (capacity = rate).
//! - Live sandboxes, their memory and their CPUs, per user: counted from the store at each
//!   create. A refusal's retry-after is the soonest deadline among the user's sandboxes.
//!
//! A profile's own limits count only that profile's sandboxes and creations. Windows and
//! buckets live in memory: a restarted daemon starts them afresh (the quotas, read from the
//! store, do not).
//!
//! Invariant: admission (check, reserve, record the row, count the creation) happens under one
//! lock, so concurrent creates cannot both take the last slot.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use sbx_config::Limits;
use sbx_store::Scope;

use sbx_protocol::Resources;

use crate::validate::CreateParams;
use crate::{now_ms, Caller, Error, Service, State};

const HOUR_MS: i64 = 3600 * 1000;

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

/// A refused request: which limit, why, and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// `rate_limited` (a rate; waiting helps by itself) or `quota_exceeded` (a quota; ending a
    /// sandbox helps).
    pub code: &'static str,
    /// The configuration key of the limit (`creates_per_hour`, …).
    pub limit: &'static str,
    pub message: String,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Window {
    User(String),
    Ip(IpAddr),
    ProfileUser(String, String),
    ProfileIp(String, IpAddr),
}

struct Bucket {
    tokens: f64,
    at: i64,
}

#[derive(Default)]
pub(crate) struct RateState {
    windows: HashMap<Window, VecDeque<i64>>,
    /// Admissions since the last sweep of emptied windows.
    since_sweep: usize,
}

#[derive(Default)]
pub(crate) struct RateLimits {
    /// Held across a create's admission (see the module's invariant).
    pub(crate) admission: Mutex<RateState>,
    /// Disk promised to admitted creates whose disks may not exist yet, bytes (the backend's
    /// [`sbx_backend::Storage`] counts a disk once it exists). See [`DiskPromise`].
    pub(crate) pending_disk: Mutex<HashMap<String, u64>>,
    pub(crate) running: std::sync::Arc<Mutex<Running>>,
    /// Login attempts per client address in the last minute.
    logins: Mutex<HashMap<Option<IpAddr>, VecDeque<i64>>>,
    /// Each user's command rate (token buckets).
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Commands running through the API at once (exec, exec streams, terminals): per user (the
/// caller's) and per sandbox.
#[derive(Debug, Default)]
pub(crate) struct Running {
    per_user: HashMap<String, u64>,
    per_sandbox: HashMap<String, u64>,
}

/// One running command's place in [`Running`]; given back when dropped, so whatever holds the
/// command's stream (a response body still being sent, a terminal) holds it.
#[derive(Debug)]
pub struct ExecPermit {
    running: std::sync::Arc<Mutex<Running>>,
    user: String,
    sandbox: String,
}

impl Drop for ExecPermit {
    fn drop(&mut self) {
        let mut running = self.running.lock().expect("exec counts are never poisoned");
        let running = &mut *running;
        for (map, key) in [
            (&mut running.per_user, &self.user),
            (&mut running.per_sandbox, &self.sandbox),
        ] {
            if let Some(count) = map.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    map.remove(key);
                }
            }
        }
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
            .limits
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
            .limits
            .pending_disk
            .lock()
            .expect("disk ledger is never poisoned");
        if let Some(bytes) = pending.get_mut(&self.backend) {
            *bytes = bytes.saturating_sub(self.bytes);
        }
    }
}

impl RateState {
    /// How long until `window` has room for one more under `limit` (`None`: it has room now).
    fn wait(&mut self, window: &Window, limit: u64, now: i64) -> Option<Duration> {
        let times = self.windows.get_mut(window)?;
        while times.front().is_some_and(|t| *t <= now - HOUR_MS) {
            times.pop_front();
        }
        if (times.len() as u64) < limit {
            return None;
        }
        // The window is full: room comes when enough of its oldest entries leave it.
        let excess = times.len() as u64 - limit;
        let leaves = times.get(excess as usize).copied().unwrap_or(now - HOUR_MS) + HOUR_MS;
        Some(ceil_duration(leaves - now))
    }

    fn count(&mut self, window: Window, now: i64) {
        self.windows.entry(window).or_default().push_back(now);
        self.since_sweep += 1;
        if self.since_sweep >= 1024 {
            self.since_sweep = 0;
            self.windows
                .retain(|_, times| times.back().is_some_and(|t| *t > now - HOUR_MS));
        }
    }
}

impl Service {
    /// Checks every limit a create is subject to; on success the caller records the row and
    /// then [`Service::count_create`], still holding `state`.
    pub(crate) fn admit_create(
        &self,
        state: &mut RateState,
        caller: &Caller,
        params: &CreateParams,
    ) -> Result<(), Error> {
        let now = now_ms();
        let limits = self.inner.config.limits.for_user(&caller.user);
        let profile_limits = self
            .inner
            .config
            .profiles
            .get(&params.profile)
            .map(|p| p.limits)
            .unwrap_or(Limits::UNLIMITED);
        for (limits, profile) in [(limits, None), (&profile_limits, Some(&params.profile))] {
            let of = |what: &str| match profile {
                Some(p) => format!("{what} of profile {p:?}"),
                None => what.to_owned(),
            };
            if let Some(limit) = limits.creates_per_hour {
                let window = match profile {
                    Some(p) => Window::ProfileUser(p.clone(), caller.user.clone()),
                    None => Window::User(caller.user.clone()),
                };
                if let Some(wait) = state.wait(&window, limit, now) {
                    return Err(rate_limited(
                        "creates_per_hour",
                        format!(
                            "user {:?} may create {limit} {} per hour",
                            caller.user,
                            of("sandboxes")
                        ),
                        wait,
                    ));
                }
            }
            if let (Some(limit), Some(ip)) = (limits.creates_per_hour_per_ip, caller.ip) {
                let window = match profile {
                    Some(p) => Window::ProfileIp(p.clone(), ip),
                    None => Window::Ip(ip),
                };
                if let Some(wait) = state.wait(&window, limit, now) {
                    return Err(rate_limited(
                        "creates_per_hour_per_ip",
                        format!(
                            "address {ip} may create {limit} {} per hour",
                            of("sandboxes")
                        ),
                        wait,
                    ));
                }
            }
        }
        self.admit_resources(
            &caller.user,
            &params.profile,
            &params.backend,
            &params.resources,
        )
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
        let limits = self.inner.config.limits.for_user(user);
        let profile_limits = self
            .inner
            .config
            .profiles
            .get(profile)
            .map(|p| p.limits)
            .unwrap_or(Limits::UNLIMITED);
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

    /// Counts an admitted create in its windows.
    pub(crate) fn count_create(&self, state: &mut RateState, caller: &Caller, profile: &str) {
        let now = now_ms();
        state.count(Window::User(caller.user.clone()), now);
        state.count(
            Window::ProfileUser(profile.to_owned(), caller.user.clone()),
            now,
        );
        if let Some(ip) = caller.ip {
            state.count(Window::Ip(ip), now);
            state.count(Window::ProfileIp(profile.to_owned(), ip), now);
        }
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
            let promised = totals.sums[0] as u64;
            let asked = resources.pids;
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
            .limits
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

    /// A place for one more command of `caller` in sandbox `row` (of `profile`), within the
    /// user's and the sandbox's caps on commands running at once.
    pub(crate) fn admit_running(
        &self,
        caller: &Caller,
        sandbox: &str,
        profile: &str,
    ) -> Result<ExecPermit, Error> {
        let limits = self.inner.config.limits.for_user(&caller.user);
        let profile_cap = self
            .inner
            .config
            .profiles
            .get(profile)
            .and_then(|p| p.limits.concurrent_execs_per_sandbox);
        let per_sandbox = match (limits.concurrent_execs_per_sandbox, profile_cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut running = self
            .inner
            .limits
            .running
            .lock()
            .expect("exec counts are never poisoned");
        let user_count = running.per_user.get(&caller.user).copied().unwrap_or(0);
        if let Some(limit) = limits.concurrent_execs {
            if user_count >= limit {
                return Err(quota_exceeded(
                    "concurrent_execs",
                    format!(
                        "user {:?} may run {limit} commands at once; wait for one to end",
                        caller.user
                    ),
                    Duration::from_secs(1),
                ));
            }
        }
        let sandbox_count = running.per_sandbox.get(sandbox).copied().unwrap_or(0);
        if let Some(limit) = per_sandbox {
            if sandbox_count >= limit {
                return Err(quota_exceeded(
                    "concurrent_execs_per_sandbox",
                    format!(
                        "sandbox {sandbox} may run {limit} commands through the API at once; wait for one to end"
                    ),
                    Duration::from_secs(1),
                ));
            }
        }
        *running.per_user.entry(caller.user.clone()).or_default() += 1;
        *running.per_sandbox.entry(sandbox.to_owned()).or_default() += 1;
        Ok(ExecPermit {
            running: self.inner.limits.running.clone(),
            user: caller.user.clone(),
            sandbox: sandbox.to_owned(),
        })
    }

    /// Counts a login attempt from `ip`, within `limits.logins_per_minute_per_ip`; failed
    /// attempts count too.
    pub fn admit_login(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        const MINUTE_MS: i64 = 60_000;
        let limit = self.inner.config.limits.logins_per_minute_per_ip as usize;
        let now = now_ms();
        let mut logins = self
            .inner
            .limits
            .logins
            .lock()
            .expect("login counts are never poisoned");
        if logins.len() > 10_000 {
            logins.retain(|_, times| times.back().is_some_and(|t| *t > now - MINUTE_MS));
        }
        let times = logins.entry(ip).or_default();
        while times.front().is_some_and(|t| *t <= now - MINUTE_MS) {
            times.pop_front();
        }
        if times.len() >= limit {
            let leaves = times.front().copied().unwrap_or(now) + MINUTE_MS;
            let who = ip.map_or_else(|| "this client".to_owned(), |ip| format!("address {ip}"));
            return Err(rate_limited(
                "logins_per_minute_per_ip",
                format!("{who} may try to log in {limit} times a minute"),
                ceil_duration(leaves - now),
            ));
        }
        times.push_back(now);
        Ok(())
    }

    /// Takes one token of the user's command rate.
    pub(crate) fn admit_command(&self, caller: &Caller) -> Result<(), Error> {
        let Some(rate) = self
            .inner
            .config
            .limits
            .for_user(&caller.user)
            .exec_per_second
        else {
            return Ok(());
        };
        let rate = rate as f64;
        let now = now_ms();
        // The buckets have a lock of their own: a create holds the admission lock for its
        // checks and its insert, and commands must not queue behind it.
        let mut buckets = self
            .inner
            .limits
            .buckets
            .lock()
            .expect("rate state is never poisoned");
        let bucket = buckets.entry(caller.user.clone()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = (now - bucket.at).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = ((1.0 - bucket.tokens) / rate * 1000.0).ceil() as i64;
        Err(rate_limited(
            "exec_per_second",
            format!(
                "user {:?} may start {} commands per second",
                caller.user, rate as u64
            ),
            ceil_duration(wait_ms),
        ))
    }
}

fn rate_limited(limit: &'static str, message: String, retry_after: Duration) -> Error {
    Error::Limited(Limited {
        code: "rate_limited",
        limit,
        message,
        retry_after,
    })
}

fn quota_exceeded(limit: &'static str, message: String, retry_after: Duration) -> Error {
    Error::Limited(Limited {
        code: "quota_exceeded",
        limit,
        message,
        retry_after,
    })
}

/// Whole seconds, rounded up, at least one (what `Retry-After` can say).
fn ceil_duration(ms: i64) -> Duration {
    Duration::from_secs(u64::try_from((ms + 999) / 1000).unwrap_or(0).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_waits_for_its_oldest_entry() {
        let mut state = RateState::default();
        let window = Window::User("a".into());
        assert_eq!(state.wait(&window, 2, 0), None);
        state.count(window.clone(), 1_000);
        state.count(window.clone(), 5_000);
        // Full at 10 s: the entry of 1 s leaves at 3601 s.
        assert_eq!(
            state.wait(&window, 2, 10_000),
            Some(Duration::from_secs(3591))
        );
        // After it left there is room again.
        assert_eq!(state.wait(&window, 2, 3_601_000), None);
        // A lowered limit waits for as many entries as exceed it.
        state.count(window.clone(), 3_601_500);
        assert_eq!(
            state.wait(&window, 1, 3_602_000),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(ceil_duration(1), Duration::from_secs(1));
        assert_eq!(ceil_duration(1000), Duration::from_secs(1));
        assert_eq!(ceil_duration(1001), Duration::from_secs(2));
        assert_eq!(ceil_duration(-5), Duration::from_secs(1));
    }
}
