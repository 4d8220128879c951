//! API keys, sessions of the web page.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A key as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyInfo {
    /// Public identifier (`key_…`); what logs and the audit trail name.
    pub id: String,
    /// The user it acts for; sandboxes it creates belong to that user.
    pub user: String,
    /// Admin keys see and act on every user's sandboxes and manage keys.
    pub admin: bool,
    /// RFC 3339, UTC.
    pub created_at: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// 1–63 of `[a-z0-9_.-]`, starting with a letter or digit.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_.-]{0,62}$", example = "alice")]
    pub user: String,
    #[serde(default)]
    pub admin: bool,
}

/// Response of `POST /v1/keys`: the secret is shown this once; only a hash of it is kept.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// Send as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    pub key: String,
    /// The same key in the form E2B's SDKs accept (`e2b_` and hex digits): `E2B_API_KEY`.
    pub e2b_key: String,
    pub info: KeyInfo,
}

/// Body of `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// Body of `POST /v1/login`: the web page trades a key for an HttpOnly session cookie, so that
/// neither its JavaScript nor a URL ever holds the key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub key: String,
}

/// Who a request acts as (`GET /v1/whoami`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Identity {
    pub user: String,
    pub admin: bool,
    /// The key used, by id (`None` when the daemon runs without authentication).
    #[serde(default)]
    pub key_id: Option<String>,
}

/// One line of the audit log: a security-relevant event, who caused it, from where. Never
/// holds a secret: keys appear by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    /// `auth.failed`, `auth.login`, `access.denied`, `key.created`, `key.revoked`,
    /// `sandbox.created`, `sandbox.create_failed`, `sandbox.destroyed`, `sandbox.expired`,
    /// `sandbox.failed`, `sandbox.extended`, `sandbox.recreated`, `exec`, `terminal.opened`,
    /// `terminal.closed`, `rate_limited`, `input.rejected`, `daemon.started`, `daemon.stopped`.
    pub event: String,
    /// The user acting (`sbx` for the daemon itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The key used, by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The request (`X-Request-Id`) it happened in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// What else the event carries (an exec's argv and exit code, a limit's name, …).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Body of `GET /v1/audit`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// Oldest first.
    pub entries: Vec<AuditEntry>,
}
