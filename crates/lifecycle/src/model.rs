//! Lifecycle's own types: what its operations take and return. They carry no wire format —
//! no serde names, no base64, no OpenAPI — so every API surface (sbx's own in `api`, and the
//! E2B-compatible one to come) decodes into them and encodes from them once. Times are Unix
//! milliseconds, durations [`Duration`]s, bytes bytes, states [`State`]s.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::State;

/// Unix time in milliseconds.
pub type UnixMs = i64;

/// A request to create a sandbox; `None` takes the profile's value.
#[derive(Debug, Clone, Default)]
pub struct NewSandbox {
    pub profile: Option<String>,
    pub ttl: Option<Span>,
    pub template: Option<String>,
    pub name: Option<String>,
    pub env: BTreeMap<String, String>,
    pub resources: ResourceRequest,
    pub metadata: BTreeMap<String, String>,
    /// A snapshot (the caller's) whose files the sandbox starts with.
    pub snapshot: Option<String>,
    /// A hibernated sandbox (the caller's) whose checkpoint the sandbox is restored from.
    pub fork_of: Option<String>,
}

/// A filesystem snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub id: String,
    pub name: Option<String>,
    pub owner: Option<String>,
    pub backend: String,
    pub template: String,
    pub profile: String,
    /// The sandbox it was taken from (`None`: imported).
    pub sandbox_id: Option<String>,
    /// The snapshot that sandbox started from.
    pub parent: Option<String>,
    /// Bytes it added to the host's storage.
    pub size_bytes: u64,
    /// Unix ms.
    pub created_at: i64,
}

/// Resources asked for; each `None` is the profile's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceRequest {
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    pub disk_mb: Option<u64>,
}

/// Resources a sandbox has (or a profile gives).
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub memory_mb: u64,
    pub cpus: f64,
    pub pids: u64,
    pub disk_mb: u64,
}

impl From<&sbx_config::Resources> for Resources {
    fn from(r: &sbx_config::Resources) -> Resources {
        Resources {
            memory_mb: r.memory_mb,
            cpus: r.cpus,
            pids: r.pids,
            disk_mb: r.disk_mb,
        }
    }
}

/// A sandbox as lifecycle knows it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub id: String,
    pub name: Option<String>,
    /// As enforced: a running sandbox past its deadline is `Expired`.
    pub state: State,
    /// Why it entered its state: a reason code (see [`crate::reason`]) and a detail.
    pub state_reason: Option<String>,
    pub state_detail: Option<String>,
    pub backend: String,
    pub profile: String,
    pub owner: Option<String>,
    pub template: String,
    pub resources: Resources,
    /// Names of the variables set in its environment (values are not shown).
    pub env: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
    pub destroyed_at: Option<UnixMs>,
    /// When its current instance started (a recreate starts a new one).
    pub started_at: UnixMs,
    pub expires_at: UnixMs,
    /// When it was paused, while it is.
    pub paused_at: Option<UnixMs>,
    /// Whole seconds left, for a sandbox that may still run.
    pub expires_in_seconds: Option<u64>,
    /// What the request asked for but did not get.
    pub warnings: Vec<String>,
}

/// A command to run to its end.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    /// Bytes for its standard input (`None`: it reads end-of-file at once, unless
    /// `stdin_open`).
    pub stdin: Option<Vec<u8>>,
    /// Keep standard input open after `stdin` (if any): the caller writes to it through
    /// [`crate::ExecStream::input`] and ends it with `ExecInput::CloseStdin`.
    pub stdin_open: bool,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// `user`, `root` or a uid (`None`: the sandbox's user).
    pub user: Option<String>,
    pub timeout: Option<Span>,
}

/// A command on a pseudo-terminal (an empty `cmd` is a login shell).
#[derive(Debug, Clone, Default)]
pub struct TerminalRequest {
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub cwd: Option<String>,
    pub rows: Option<u16>,
    pub cols: Option<u16>,
}

/// A recorded state change.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub sandbox_id: String,
    pub at: UnixMs,
    pub from_state: Option<State>,
    pub to_state: State,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

/// The daemon, its backends, and the sandboxes a caller may see.
#[derive(Debug, Clone)]
pub struct Status {
    pub version: String,
    pub started_at: UnixMs,
    pub uptime_seconds: u64,
    pub backends: Vec<BackendStatus>,
    pub profiles: Vec<ProfileStatus>,
    /// Sandboxes in each state (every state named, destroyed included).
    pub counts: BTreeMap<State, u64>,
    pub sandboxes: Vec<SandboxStatus>,
}

#[derive(Debug, Clone)]
pub struct BackendStatus {
    pub name: String,
    pub healthy: bool,
    pub detail: String,
    pub capabilities: Vec<String>,
    pub isolation: String,
}

/// A profile, its backend, and whether its sandboxes run under gVisor.
#[derive(Debug, Clone)]
pub struct ProfileStatus {
    pub name: String,
    pub backend: String,
    pub isolation: String,
    /// Its backend isolates with gVisor.
    pub gvisor_requested: bool,
    /// …and is running and healthy.
    pub gvisor_available: bool,
}

/// A sandbox that may have traces on its host, with what its backend says of it.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    pub id: String,
    pub name: Option<String>,
    pub profile: String,
    pub state: State,
    pub owner: Option<String>,
    pub init_pid: Option<u32>,
    pub alive: bool,
    pub expires_at: UnixMs,
    pub memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub pids: Option<u64>,
}

/// What a cleanup removed (or, dry, would remove).
#[derive(Debug, Clone, Default)]
pub struct CleanupReport {
    pub dry_run: bool,
    pub sandboxes: Vec<String>,
    pub orphans: Vec<String>,
}

/// Sandboxes past their deadline, and whether they were destroyed.
#[derive(Debug, Clone)]
pub struct ExpireResult {
    pub applied: bool,
    pub sandboxes: Vec<Sandbox>,
}

/// A profile as callers see it.
#[derive(Debug, Clone)]
pub struct ProfileInfo {
    pub name: String,
    pub backend: String,
    pub template: String,
    pub network: String,
    pub resources: Resources,
    pub max_resources: Resources,
    pub ttl_default: Duration,
    pub ttl_max: Duration,
    pub ttl_idle: Option<Duration>,
    pub idle_action: sbx_config::IdleAction,
    pub pause_stops_clock: bool,
    pub auto_resume: bool,
}

/// An API key, without its secret.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: String,
    pub user: String,
    pub admin: bool,
    pub created_at: UnixMs,
    pub revoked_at: Option<UnixMs>,
}

/// A new key: its secret (shown once) and what it is.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: String,
    pub info: KeyInfo,
}

/// A duration as a caller gave it: its value, and how they wrote it (messages, event details
/// and the audit trail repeat the caller's own words).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub value: Duration,
    pub written: String,
}

impl Span {
    /// A span written the way sbx writes durations (`1h30m`).
    pub fn new(value: Duration) -> Span {
        Span {
            value,
            written: shown(value),
        }
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.written)
    }
}

/// A duration as messages show it: `1h30m`, or seconds with a fraction below a minute.
pub fn shown(duration: Duration) -> String {
    if duration.subsec_nanos() != 0 && duration.as_secs() < 60 {
        format!("{}s", duration.as_secs_f64())
    } else {
        sbx_config::duration::format(duration)
    }
}
