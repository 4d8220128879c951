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
    /// Ports anyone may reach through the daemon without a key (preview URLs made public).
    pub public_ports: Vec<u16>,
    /// Metadata under sbx's own keys (`sbx.…`), which a request's `metadata` may not use:
    /// set by sbx's own operations (a switch marks the sandboxes it makes), never decoded
    /// from a request.
    pub labels: BTreeMap<String, String>,
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
    /// Ports anyone may reach through the daemon without a key.
    pub public_ports: Vec<u16>,
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

/// A project: files kept as fragments, owned by a user, shared read-only or read-write.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub id: String,
    pub owner: String,
    pub name: String,
    /// The directory of a sandbox its fragments' paths are relative to.
    pub root: String,
    /// The port its preview URL names.
    pub port: Option<u16>,
    /// The profile its sandboxes are made with (`None`: the daemon's default).
    pub profile: Option<String>,
    pub created_at: UnixMs,
    /// What the caller may do with it: `owner`, `write` or `read` (admins: `owner`).
    pub access: &'static str,
    /// Users it is shared with, and how (`read`, `write`); its owner and admins see them.
    pub shares: Vec<(String, String)>,
    /// Its ready fragments, and the newest of them.
    pub fragments: u64,
    pub latest_fragment: Option<String>,
}

/// What a new project is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewProject {
    pub name: String,
    pub root: Option<String>,
    pub port: Option<u16>,
    pub profile: Option<String>,
}

/// A fragment: one immutable version of a project's files.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    pub id: String,
    pub project_id: String,
    pub created_by: String,
    /// `files`, `tar` or `sandbox:<id>`.
    pub source: String,
    pub message: Option<String>,
    /// Regular files in it (directories and links not counted), and their bytes.
    pub files: u64,
    pub bytes: u64,
    pub created_at: UnixMs,
    /// Whether it is its project's newest.
    pub latest: bool,
}

/// One entry of a fragment.
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentEntry {
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub mode: u32,
    pub size: u64,
    pub target: Option<String>,
}

/// One file of a fragment made from a map of paths.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: Option<u32>,
}

/// Where a new fragment's files come from.
pub enum FragmentSource {
    /// Paths and their contents.
    Files(Vec<NewFile>),
    /// A tar stream (paths relative to the project's root).
    Tar(sbx_backend::ByteStream),
    /// The project's root directory in a running sandbox the caller may use, without the
    /// entries named in `exclude` (names of files or directories, at any depth).
    Sandbox {
        sandbox: String,
        exclude: Vec<String>,
    },
    /// The project's root in a filesystem snapshot the caller may use (read through a sandbox
    /// made from it, destroyed once read), with `exclude` as above.
    Snapshot {
        snapshot: String,
        exclude: Vec<String>,
    },
}

/// A switch of a user's active sandbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Switch {
    pub project: String,
    /// `None`: the project's newest fragment (none at all: the sandbox starts empty).
    pub fragment: Option<String>,
    /// `None`: the project's profile, else the daemon's default.
    pub profile: Option<String>,
    /// Save the old active sandbox's files into its project as a new fragment first.
    pub save_on_switch: bool,
    /// What a save leaves out (as [`FragmentSource::Sandbox`]).
    pub exclude: Vec<String>,
}

/// A user's active sandbox.
#[derive(Debug, Clone)]
pub struct Active {
    pub user: String,
    pub project_id: String,
    /// `None` once the project was deleted.
    pub project_name: Option<String>,
    pub fragment_id: Option<String>,
    pub sandbox: Sandbox,
    /// Whether the sandbox still runs (`false`: it died or expired; the next switch replaces it).
    pub alive: bool,
    pub port: Option<u16>,
    pub restored_files: u64,
    pub created_at: UnixMs,
    pub last_used_at: UnixMs,
    /// The fragment the switch saved the old sandbox's files as (`save_on_switch`).
    pub saved_fragment: Option<String>,
}
