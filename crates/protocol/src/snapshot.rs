//! Filesystem snapshots: what `/v1/snapshots…` and `/v1/sandboxes/{id}/snapshots` take and
//! answer.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A filesystem snapshot of a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// `snap-` and 26 lowercase letters and digits.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The backend that stores it (sandboxes made from it use the same).
    pub backend: String,
    /// The template of the sandbox it was taken from (sandboxes made from it have it too).
    pub template: String,
    /// The profile of the sandbox it was taken from (or imported for).
    pub profile: String,
    /// The sandbox it was taken from; absent for an imported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// The snapshot that sandbox started from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Bytes it added to the host's storage (what it shares with its parent is not counted).
    pub size_bytes: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// Body of `GET /v1/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<Snapshot>,
}

/// Body of `POST /v1/sandboxes/{id}/snapshots` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// A label of the caller's choosing (1-128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Body of `POST /v1/sandboxes/{id}/recreate` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecreateRequest {
    /// Start the new instance's files from this snapshot (and from it again on later
    /// recreates); by default, from what the sandbox started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}
