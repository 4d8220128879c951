//! `[limits]`, `[limits.users.NAME]`, `[profiles.NAME.limits]`, `[audit]` and the trusted
//! proxies' address ranges.
//!
//! In the file a limit of 0 means "no limit"; resolved, `None` does.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::DurationText;

/// Limits on what one user (or one client address) may do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Sandboxes a user may create in any hour (sliding window).
    pub creates_per_hour: Option<u64>,
    /// Sandboxes one client address may create in any hour, whoever's key it uses.
    pub creates_per_hour_per_ip: Option<u64>,
    /// Live sandboxes a user may have at once.
    pub concurrent_sandboxes: Option<u64>,
    /// Commands (exec and terminals) a user may start per second (burst: as many).
    pub exec_per_second: Option<u64>,
    /// Commands (exec, exec streams, terminals) a user may have running through the API at once.
    pub concurrent_execs: Option<u64>,
    /// Commands running through the API at once in any one sandbox.
    pub concurrent_execs_per_sandbox: Option<u64>,
    /// Memory of a user's live sandboxes together, MiB.
    pub memory_mb: Option<u64>,
    /// CPUs of a user's live sandboxes together.
    pub cpus: Option<f64>,
    /// Process limits (`pids`) of a user's live sandboxes together.
    pub pids: Option<u64>,
    /// Disk sizes of a user's live sandboxes together, MiB.
    pub disk_mb: Option<u64>,
}

impl Limits {
    pub const UNLIMITED: Limits = Limits {
        creates_per_hour: None,
        creates_per_hour_per_ip: None,
        concurrent_sandboxes: None,
        exec_per_second: None,
        concurrent_execs: None,
        concurrent_execs_per_sandbox: None,
        memory_mb: None,
        cpus: None,
        pids: None,
        disk_mb: None,
    };

    /// For a trusted team: guard rails against a runaway script, not against each other.
    /// A public site wants far less (see `docs/security.md`). The host's own capacity
    /// (`[capacity]`) bounds every user together whatever these say.
    pub const TEAM: Limits = Limits {
        creates_per_hour: Some(1000),
        creates_per_hour_per_ip: None,
        concurrent_sandboxes: Some(256),
        exec_per_second: Some(1000),
        concurrent_execs: Some(256),
        concurrent_execs_per_sandbox: Some(64),
        memory_mb: None,
        cpus: None,
        pids: Some(8192),
        disk_mb: None,
    };

    pub(crate) fn to_raw(self) -> RawLimits {
        let n = |value: Option<u64>| Some(value.unwrap_or(0));
        RawLimits {
            creates_per_hour: n(self.creates_per_hour),
            creates_per_hour_per_ip: n(self.creates_per_hour_per_ip),
            concurrent_sandboxes: n(self.concurrent_sandboxes),
            exec_per_second: n(self.exec_per_second),
            concurrent_execs: n(self.concurrent_execs),
            concurrent_execs_per_sandbox: n(self.concurrent_execs_per_sandbox),
            memory_mb: n(self.memory_mb),
            cpus: Some(self.cpus.unwrap_or(0.0)),
            pids: n(self.pids),
            disk_mb: n(self.disk_mb),
            logins_per_minute_per_ip: None,
            users: None,
        }
    }
}

/// `[limits]`: the limits of every user, and per-user replacements.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    pub default: Limits,
    /// Fully resolved: the defaults with the user's own values over them.
    pub users: BTreeMap<String, Limits>,
    /// Logins (`POST /v1/login`) one client address may attempt per minute.
    pub logins_per_minute_per_ip: u64,
}

/// Default of `limits.logins_per_minute_per_ip`.
const LOGINS_PER_MINUTE_PER_IP: u64 = 30;

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            default: Limits::TEAM,
            users: BTreeMap::new(),
            logins_per_minute_per_ip: LOGINS_PER_MINUTE_PER_IP,
        }
    }
}

impl LimitsConfig {
    pub fn for_user(&self, user: &str) -> &Limits {
        self.users.get(user).unwrap_or(&self.default)
    }

    pub(crate) fn to_raw(&self) -> RawLimits {
        let mut raw = self.default.to_raw();
        raw.users = Some(
            self.users
                .iter()
                .map(|(name, limits)| (name.clone(), limits.to_raw()))
                .collect(),
        );
        raw.logins_per_minute_per_ip = Some(self.logins_per_minute_per_ip);
        raw
    }
}

/// `[audit]`: the audit log's rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// Size at which `audit.log` is rotated to `audit.log.1`.
    pub max_bytes: u64,
    /// Rotated files kept at least (`audit.log.1` … `audit.log.N`).
    pub keep: usize,
    /// Rotated files younger than this are kept even beyond `keep`, so that a burst of
    /// events cannot rotate recent history away (bounded by `max_total_bytes`).
    pub keep_for: Duration,
    /// The audit files together never exceed this; the oldest go first.
    pub max_total_bytes: u64,
}

impl Default for Audit {
    fn default() -> Audit {
        Audit {
            max_bytes: 16 << 20,
            keep: 5,
            keep_for: Duration::from_secs(7 * 24 * 3600),
            max_total_bytes: 1 << 30,
        }
    }
}

impl Audit {
    pub(crate) fn to_raw(self) -> RawAudit {
        RawAudit {
            max_bytes: Some(self.max_bytes),
            keep: Some(self.keep),
            keep_for: Some(DurationText(self.keep_for)),
            max_total_bytes: Some(self.max_total_bytes),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_for: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_total_bytes: Option<u64>,
}

impl RawAudit {
    pub(crate) fn resolve(self) -> Result<Audit, String> {
        let mut audit = Audit::default();
        if let Some(bytes) = self.max_bytes {
            if bytes < 4096 {
                return Err(format!("audit.max_bytes: {bytes} is below 4096"));
            }
            audit.max_bytes = bytes;
        }
        if let Some(keep) = self.keep {
            if !(1..=100).contains(&keep) {
                return Err(format!("audit.keep: {keep} is not between 1 and 100"));
            }
            audit.keep = keep;
        }
        if let Some(DurationText(keep_for)) = self.keep_for {
            audit.keep_for = keep_for;
        }
        if let Some(total) = self.max_total_bytes {
            audit.max_total_bytes = total;
        }
        if audit.max_total_bytes < audit.max_bytes * 2 {
            return Err(format!(
                "audit.max_total_bytes: {} is less than twice audit.max_bytes ({})",
                audit.max_total_bytes, audit.max_bytes
            ));
        }
        Ok(audit)
    }
}

/// `[limits]`, `[limits.users.NAME]` or `[profiles.NAME.limits]` as written; every key
/// optional, 0 is "no limit". `users` and `logins_per_minute_per_ip` belong to `[limits]` only.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    creates_per_hour: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    creates_per_hour_per_ip: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrent_sandboxes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrent_execs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrent_execs_per_sandbox: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logins_per_minute_per_ip: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<BTreeMap<String, RawLimits>>,
}

impl RawLimits {
    /// These values over `base`; `at` names the table in errors. Only `[limits]` itself may
    /// hold `users` and `logins_per_minute_per_ip` (see [`RawLimits::resolve_table`]).
    pub(crate) fn over(&self, base: Limits, at: &str) -> Result<Limits, String> {
        for (key, present) in [
            ("users", self.users.is_some()),
            (
                "logins_per_minute_per_ip",
                self.logins_per_minute_per_ip.is_some(),
            ),
        ] {
            if present {
                return Err(format!("{at}.{key}: belongs in [limits] only"));
            }
        }
        let count = |value: Option<u64>, current: Option<u64>| match value {
            None => current,
            Some(0) => None,
            Some(n) => Some(n),
        };
        let cpus = match self.cpus {
            None => base.cpus,
            Some(c) if !c.is_finite() || c < 0.0 => {
                return Err(format!("{at}.cpus: {c} is not a number of CPUs"))
            }
            Some(0.0) => None,
            Some(c) => Some(c),
        };
        Ok(Limits {
            creates_per_hour: count(self.creates_per_hour, base.creates_per_hour),
            creates_per_hour_per_ip: count(
                self.creates_per_hour_per_ip,
                base.creates_per_hour_per_ip,
            ),
            concurrent_sandboxes: count(self.concurrent_sandboxes, base.concurrent_sandboxes),
            exec_per_second: count(self.exec_per_second, base.exec_per_second),
            concurrent_execs: count(self.concurrent_execs, base.concurrent_execs),
            concurrent_execs_per_sandbox: count(
                self.concurrent_execs_per_sandbox,
                base.concurrent_execs_per_sandbox,
            ),
            memory_mb: count(self.memory_mb, base.memory_mb),
            cpus,
            pids: count(self.pids, base.pids),
            disk_mb: count(self.disk_mb, base.disk_mb),
        })
    }

    /// `[limits]`: its own keys over the team defaults, then each `[limits.users.NAME]` over
    /// those.
    pub(crate) fn resolve_table(mut self) -> Result<LimitsConfig, String> {
        let users = self.users.take().unwrap_or_default();
        let logins = self.logins_per_minute_per_ip.take();
        let default = self.over(Limits::TEAM, "limits")?;
        let mut resolved = BTreeMap::new();
        for (name, raw) in users {
            if !valid_user(&name) {
                return Err(format!(
                    "limits.users.{name}: {name:?} is not a user name (1-63 of a-z, 0-9, '.', '_', '-')"
                ));
            }
            let limits = raw.over(default, &format!("limits.users.{name}"))?;
            resolved.insert(name, limits);
        }
        let logins_per_minute_per_ip = match logins {
            None => LOGINS_PER_MINUTE_PER_IP,
            Some(0) => return Err("limits.logins_per_minute_per_ip: must be at least 1".into()),
            Some(n) => n,
        };
        Ok(LimitsConfig {
            default,
            users: resolved,
            logins_per_minute_per_ip,
        })
    }
}

/// A user name: 1–63 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn valid_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// An address or a CIDR range (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<IpRange, String> {
        let bad = || format!("{text:?} is not an address or a range like 10.0.0.0/8");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(bad)?,
        };
        Ok(IpRange { network, prefix })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_match() {
        let range: IpRange = "10.1.0.0/16".parse().unwrap();
        assert!(range.contains("10.1.200.3".parse().unwrap()));
        assert!(!range.contains("10.2.0.1".parse().unwrap()));
        assert!(range.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: IpRange = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nowhere", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
        assert_eq!(range.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn zero_means_no_limit_and_users_inherit() {
        let raw: RawLimits = toml::from_str(
            "concurrent_sandboxes = 2\nexec_per_second = 0\n[users.ci]\nconcurrent_sandboxes = 50\n",
        )
        .unwrap();
        let limits = raw.resolve_table().unwrap();
        assert_eq!(limits.default.concurrent_sandboxes, Some(2));
        assert_eq!(limits.default.exec_per_second, None);
        assert_eq!(
            limits.default.creates_per_hour,
            Limits::TEAM.creates_per_hour
        );
        let ci = limits.for_user("ci");
        assert_eq!(ci.concurrent_sandboxes, Some(50));
        assert_eq!(ci.exec_per_second, None);
        assert_eq!(limits.for_user("someone").concurrent_sandboxes, Some(2));
    }
}
