//! Rates and concurrency, per caller: who may create a sandbox or start a command now.
//!
//! - Creations per hour, per user and per client address: sliding windows of admission times.
//!   A refusal's retry-after is when the oldest admission in the window leaves it.
//! - Commands per second, per user: a token bucket (capacity = rate).
//! - Commands running at once, per user and per sandbox: permits given back when dropped.
//! - Login attempts per minute, per client address.
//!
//! A profile's own limits count only that profile's creations. Windows and buckets live in
//! memory: a restarted daemon starts them afresh (the quotas of live sandboxes, read from the
//! store by the sandbox admission, do not).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use sbx_config::Limits;

use super::{Access, Caller};
use crate::{now_ms, Error};

const HOUR_MS: i64 = 3600 * 1000;

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
    /// Held across a create's admission (see `crate::admission`'s invariant).
    pub(crate) admission: Mutex<RateState>,
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

impl Access {
    /// Checks the caller's create rates (theirs, and theirs within `profile`); the quotas and
    /// capacity are the sandbox admission's. Call under the admission lock.
    pub(crate) fn admit_create(
        &self,
        state: &mut RateState,
        caller: &Caller,
        profile: &str,
        profile_limits: &Limits,
    ) -> Result<(), Error> {
        let now = now_ms();
        let limits = self.limits.for_user(&caller.user);
        let profile = profile.to_owned();
        for (limits, profile) in [(limits, None), (profile_limits, Some(&profile))] {
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
        Ok(())
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

    /// A place for one more command of `caller` in sandbox `row` (under its profile's `profile_limits`), within the
    /// user's and the sandbox's caps on commands running at once.
    pub(crate) fn admit_running(
        &self,
        caller: &Caller,
        sandbox: &str,
        profile_limits: &Limits,
    ) -> Result<ExecPermit, Error> {
        let limits = self.limits.for_user(&caller.user);
        let profile_cap = profile_limits.concurrent_execs_per_sandbox;
        let per_sandbox = match (limits.concurrent_execs_per_sandbox, profile_cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut running = self
            .rates
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
            running: self.rates.running.clone(),
            user: caller.user.clone(),
            sandbox: sandbox.to_owned(),
        })
    }

    /// Counts a login attempt from `ip`, within `limits.logins_per_minute_per_ip`; failed
    /// attempts count too.
    pub fn admit_login(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        const MINUTE_MS: i64 = 60_000;
        let limit = self.limits.logins_per_minute_per_ip as usize;
        let now = now_ms();
        let mut logins = self
            .rates
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
        let Some(rate) = self.limits.for_user(&caller.user).exec_per_second else {
            return Ok(());
        };
        let rate = rate as f64;
        let now = now_ms();
        // The buckets have a lock of their own: a create holds the admission lock for its
        // checks and its insert, and commands must not queue behind it.
        let mut buckets = self
            .rates
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

pub(crate) fn quota_exceeded(limit: &'static str, message: String, retry_after: Duration) -> Error {
    Error::Limited(Limited {
        code: "quota_exceeded",
        limit,
        message,
        retry_after,
    })
}

/// Whole seconds, rounded up, at least one (what `Retry-After` can say).
pub(crate) fn ceil_duration(ms: i64) -> Duration {
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
