//! Lifecycle operations beyond create and exec: extend, expire, recreate, events, status,
//! cleanup.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Sandbox, SandboxState};

/// Body of `PATCH /v1/sandboxes/{id}/ttl`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// New lifetime counted from now: text (`2h`, `1h30m`) or whole seconds (`7200`); capped so
    /// that the sandbox's total lifetime stays within its profile's `ttl.max` (the response then
    /// carries a warning).
    #[schema(example = "2h")]
    pub duration: crate::DurationValue,
}

/// Body of `POST /v1/expire`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireRequest {
    /// Destroy the expired sandboxes (default: only list them).
    #[serde(default)]
    pub apply: bool,
}

/// Response of `POST /v1/expire`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExpireResult {
    /// Whether they were destroyed (`apply`) or only listed.
    pub applied: bool,
    /// The sandboxes past their deadline (after `apply`: as destroyed).
    pub sandboxes: Vec<Sandbox>,
}

/// A recorded lifecycle event: a state change and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing sequence number; pass it as `since` to resume.
    pub seq: i64,
    pub sandbox_id: String,
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(default)]
    pub from_state: Option<SandboxState>,
    pub to_state: SandboxState,
    /// A stable code: `created`, `deleted`, `expired`, `idle`, `extended`, `recreating`,
    /// `recreated`, `failed`, `daemon-shutdown`, `daemon-restart`, `daemon-cleanup`.
    #[serde(default)]
    pub reason: Option<String>,
    /// More about the reason, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Body of `GET /v1/sandboxes/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
}

/// Body of `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub version: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub uptime_seconds: u64,
    pub backends: Vec<BackendStatus>,
    /// Every profile, its backend, and whether its sandboxes run under gVisor.
    #[serde(default)]
    pub profiles: Vec<ProfileStatus>,
    /// Number of sandboxes in each state (destroyed ones included).
    pub counts: BTreeMap<String, u64>,
    /// Every sandbox that is not destroyed or failed, with what the host says of it.
    pub sandboxes: Vec<SandboxStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackendStatus {
    pub name: String,
    pub healthy: bool,
    pub detail: String,
    pub capabilities: Vec<String>,
    /// What stands between its sandboxes and the host's kernel: `namespaces` (native),
    /// `gvisor` (the oci backend), `none` (the test backend).
    #[serde(default)]
    pub isolation: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileStatus {
    pub name: String,
    pub backend: String,
    /// Its backend's isolation (`unavailable` when the backend is not running).
    pub isolation: String,
    pub gvisor: GvisorStatus,
}

/// Whether a profile's sandboxes run under gVisor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GvisorStatus {
    /// Its backend isolates with gVisor.
    pub requested: bool,
    /// …and is running and healthy now.
    pub available: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxStatus {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub profile: String,
    pub state: SandboxState,
    /// The user (API key owner) it belongs to, once sbx has users.
    #[serde(default)]
    pub owner: Option<String>,
    /// Host pid of the sandbox's init.
    #[serde(default)]
    pub init_pid: Option<u32>,
    /// Whether that init is alive.
    pub alive: bool,
    pub expires_at: String,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    #[serde(default)]
    pub pids: Option<u64>,
}

/// Body of `POST /v1/cleanup`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanupRequest {
    /// Only report what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a cleanup removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CleanupReport {
    pub dry_run: bool,
    /// Sandboxes of the store that were destroyed (reason `daemon-cleanup`).
    pub sandboxes: Vec<String>,
    /// Host traces that no live sandbox owned (processes, cgroups, directories).
    pub orphans: Vec<String>,
}

/// A profile as `GET /v1/profiles` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileInfo {
    pub name: String,
    pub backend: String,
    pub template: String,
    pub network: String,
    /// The defaults a create gets.
    pub resources: crate::Resources,
    /// The most a create may ask for (the host's capacity may allow less).
    pub max_resources: crate::Resources,
    pub ttl_default: String,
    pub ttl_max: String,
    #[serde(default)]
    pub ttl_idle: Option<String>,
    /// What reaping an idle sandbox does: `destroy` or `pause`.
    #[serde(default)]
    pub idle_action: String,
    /// A paused sandbox's lifetime does not run.
    #[serde(default)]
    pub pause_stops_clock: bool,
    /// An exec, terminal or files call on a paused sandbox resumes it (else 409).
    #[serde(default)]
    pub auto_resume: bool,
}

/// Body of `GET /v1/profiles`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProfileList {
    pub profiles: Vec<ProfileInfo>,
}
