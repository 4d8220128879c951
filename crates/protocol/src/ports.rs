//! A sandbox's TCP services: what `/v1/sandboxes/{id}/ports` answers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `GET /v1/sandboxes/{id}/ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"ports": [8000]}))]
pub struct PortList {
    /// TCP ports something listens on inside the sandbox, in order; each is reachable at
    /// `/v1/sandboxes/{id}/ports/{port}/`.
    pub ports: Vec<u16>,
}

/// Body of `POST /v1/sandboxes/{id}/shares`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortShareRequest {
    /// The port the link reaches (1-65535).
    pub port: u16,
    /// How long the link works: seconds or text (`"30m"`); 1 h by default, 7 days at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<crate::DurationValue>,
}

/// A share link: one port of a sandbox, reachable without a key until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortShare {
    pub sandbox_id: String,
    pub port: u16,
    /// The signed token (sandbox, port and expiry under the daemon's secret).
    pub token: String,
    /// The link's path on this daemon: `/v1/shares/{token}/`.
    pub path: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}
