//! Who is asking: the caller every operation acts for, and why a credential was refused.

use std::net::IpAddr;

use sbx_store::SandboxRow;

use super::ADMIN_USER;
use crate::Error;

/// Who a request acts for, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    /// Admins see and act on every user's sandboxes, and manage keys.
    pub admin: bool,
    /// The key used (`None`: the daemon itself, or a daemon without authentication).
    pub key_id: Option<String>,
    /// The client's address (after trusted proxies).
    pub ip: Option<IpAddr>,
    /// The request's id, for the audit trail.
    pub request_id: Option<String>,
    /// The web session it came with (the hash of its token), if any.
    pub session: Option<String>,
}

impl Caller {
    /// The daemon acting on its own (reaper, shutdown, cleanup).
    pub fn system() -> Caller {
        Caller {
            user: "sbx".into(),
            admin: true,
            key_id: None,
            ip: None,
            request_id: None,
            session: None,
        }
    }

    /// Everyone, on a daemon started with `--insecure-no-auth`.
    pub fn unauthenticated() -> Caller {
        Caller {
            user: ADMIN_USER.into(),
            ..Caller::system()
        }
    }

    /// Whose sandboxes this caller may see: `None` for all (admins).
    pub(crate) fn scope(&self) -> Option<&str> {
        (!self.admin).then_some(self.user.as_str())
    }

    pub(crate) fn may_see(&self, row: &SandboxRow) -> bool {
        self.admin || row.owner.as_deref() == Some(self.user.as_str())
    }

    pub(crate) fn require_admin(&self) -> Result<(), Error> {
        if self.admin {
            Ok(())
        } else {
            Err(Error::Forbidden("this needs an admin key".into()))
        }
    }
}

/// Why a presented credential was refused. The client is told only "invalid or revoked";
/// the audit trail gets the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Malformed,
    UnknownKey,
    WrongSecret,
    Revoked,
    UnknownSession,
    /// A session cookie sent by a page of another origin.
    CrossOrigin,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Malformed => "malformed",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::WrongSecret => "wrong_secret",
            AuthFailure::Revoked => "revoked",
            AuthFailure::UnknownSession => "unknown_session",
            AuthFailure::CrossOrigin => "cross_origin",
        }
    }
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    Auth(AuthFailure),
    /// The daemon holds as many sessions as it may.
    Full,
}
