//! Access control: who is asking, what they may do how often, and the trail of what they did.
//!
//! [`Access`] is one object with a narrow interface, apart from the sandbox service:
//! - identity — [`Caller`]s from API keys ([`Access::authenticate`]) and web sessions
//!   ([`Access::login`], [`Access::session`], [`Access::logout`]); the signal that ends
//!   streams when a credential ends ([`Access::credential_ended`]);
//! - keys — [`Access::init_keys`], [`Access::create_key`], [`Access::keys`],
//!   [`Access::revoke_key`];
//! - rates and concurrency — creates per hour, commands per second, commands at once, logins
//!   per minute (`rates.rs`), and each user's limits ([`Access::limits_for`]) that the sandbox
//!   admission counts live sandboxes against;
//! - audit — [`Access::audit`] and its variants, [`Access::audit_query`] (`audit.rs`).
//!
//! It knows users, keys and sessions, never sandboxes: the sandbox service asks it and acts.
//! Users and projects, when they come, belong here.

mod audit;
mod caller;
mod keys;
mod rates;

use std::sync::Arc;

use sbx_store::Store;

pub use audit::{AuditEntry, AuditQuery, MAX_QUERY};
pub use caller::{AuthFailure, Caller, LoginRefusal};
pub use keys::{e2b_form, ADMIN_USER, MAX_SESSIONS_PER_KEY, SESSION_LIFETIME_MS};
pub(crate) use rates::{ceil_duration, quota_exceeded, RateState};
pub use rates::{ExecPermit, Limited};

use crate::Error;

pub struct Access {
    store: Arc<Store>,
    limits: sbx_config::LimitsConfig,
    keys: keys::Keys,
    rates: rates::RateLimits,
    log: audit::AuditLog,
}

impl Access {
    /// Access over the keys in `store`, with `limits` per user, writing the audit log where
    /// `audit` says (`None`: no audit log).
    pub fn new(
        store: Arc<Store>,
        limits: sbx_config::LimitsConfig,
        audit: Option<(std::path::PathBuf, sbx_config::Audit)>,
    ) -> Result<Access, Error> {
        let log = match audit {
            Some((path, settings)) => {
                audit::AuditLog::open(path.clone(), settings).map_err(|e| {
                    Error::internal(format!("cannot open the audit log {}: {e}", path.display()))
                })?
            }
            None => audit::AuditLog::disabled(),
        };
        Ok(Access {
            store,
            limits,
            keys: keys::Keys::default(),
            rates: rates::RateLimits::default(),
            log,
        })
    }

    /// The limits that apply to `user` (their own, else the default's).
    pub fn limits_for(&self, user: &str) -> &sbx_config::Limits {
        self.limits.for_user(user)
    }

    /// Held across a create's admission (check, record, count), so that concurrent creates
    /// cannot both take the last place.
    pub(crate) fn admission(&self) -> std::sync::MutexGuard<'_, RateState> {
        self.rates
            .admission
            .lock()
            .expect("admission state is never poisoned")
    }

    /// Writes what the audit log has queued and stops its writer (the daemon's last step).
    pub fn close(&self) {
        self.log.close();
    }
}
