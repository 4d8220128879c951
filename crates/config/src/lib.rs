//! The configuration: an optional TOML file (`sbx serve --config FILE`) over embedded defaults.
//!
//! Owns: the file format ([`RawConfig`], unknown keys are errors), its validation into
//! [`Config`] with errors that name the file, line and key, the embedded defaults, the
//! resolved configuration as TOML (`sbx config check`), and duration parsing ([`duration`]).
//! Must never: know about the store, backends or HTTP.
//!
//! ```toml
//! [daemon]
//! listen = "127.0.0.1:7070"
//! data_dir = "/var/lib/sbx"
//! keep_sandboxes = false      # true: a graceful stop leaves sandboxes running for the next daemon
//! warm_pool = 2
//!
//! [reaper]
//! enabled = true              # false: only `sbx expire --apply` removes expired sandboxes
//! interval = "1s"
//!
//! [profiles.default]
//! backend = "native"
//! template = "host"
//! network = "none"
//! resources = { memory_mb = 512, cpus = 1.0, pids = 256 }
//! ttl = { default = "1h", max = "24h" }   # idle = "15m" to reap idle sandboxes
//! ```

pub mod duration;

pub mod limits;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use limits::{Audit, IpRange, Limits, LimitsConfig};
use limits::{RawAudit, RawLimits};

/// The profile a create uses when it names none.
pub const DEFAULT_PROFILE: &str = "default";
const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_WARM_POOL: usize = 2;
const DEFAULT_REAPER_INTERVAL: Duration = Duration::from_secs(1);

/// A configuration problem, saying where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax, unknown key or bad value; `message` has the line, column and key.
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub daemon: Daemon,
    pub reaper: Reaper,
    pub terminals: Terminals,
    pub limits: LimitsConfig,
    pub audit: Audit,
    pub capacity: Capacity,
    pub exec: Exec,
    pub files: Files,
    pub snapshots: Snapshots,
    pub projects: Projects,
    pub e2b: E2b,
    pub images: ImagesConfig,
    pub oci: OciSettings,
    pub docker: DockerSettings,
    pub profiles: BTreeMap<String, Profile>,
}

/// `[oci]`: the OCI backend (a profile with `backend = "oci"` starts it).
#[derive(Debug, Clone, PartialEq)]
pub struct OciSettings {
    /// The runtime binary: gVisor's `runsc` (a name is looked up in `PATH`).
    pub runtime: String,
    /// gVisor's platform: `ptrace` (works everywhere), `systrap` (newer runsc), `kvm`.
    pub platform: String,
    /// With `crun` or `runc`: the host's cgroup v2 is remounted with `favordynmods` (see
    /// docs/oci.md), so that moving a process into a sandbox's cgroup does not wait for an
    /// RCU grace period.
    pub favor_cgroup_moves: bool,
}

impl Default for OciSettings {
    fn default() -> Self {
        OciSettings {
            runtime: "runsc".into(),
            platform: "ptrace".into(),
            favor_cgroup_moves: true,
        }
    }
}

/// `[docker]`: the Docker backend (a profile with `backend = "docker"`, or `"docker-gvisor"`
/// for its containers under gVisor, starts it).
#[derive(Debug, Clone, PartialEq)]
pub struct DockerSettings {
    /// The engine's API socket.
    pub socket: PathBuf,
    /// The name gVisor's `runsc` is registered under with the engine (`docker-gvisor`).
    pub gvisor_runtime: String,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            socket: PathBuf::from("/var/run/docker.sock"),
            gvisor_runtime: "runsc".into(),
        }
    }
}

/// `[images]`: templates from container images (pulled or imported by admins).
#[derive(Debug, Clone, PartialEq)]
pub struct ImagesConfig {
    /// The most one image may unpack to, and the most bytes of an archive imported.
    pub max_image_mb: u64,
    /// Registries (`host:port`) spoken to over plain HTTP; loopback ones always are.
    pub insecure_registries: Vec<String>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            max_image_mb: 16 << 10,
            insecure_registries: Vec::new(),
        }
    }
}

/// `[e2b]`: the E2B-compatible API (see docs/e2b.md).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct E2b {
    /// The domain of host-based routing (`{port}-{sandbox}.{domain}`), also returned to SDKs
    /// as the sandboxes' `domain` (`sandbox.get_host(port)`); `None`: header routing only.
    pub domain: Option<String>,
    /// E2B template names and the sbx profiles they stand for; a name not listed is a profile
    /// of that name, and `base` and `code-interpreter-v1` are the default profile.
    pub templates: BTreeMap<String, String>,
}

/// `[files]`: the files API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Files {
    /// The largest file one upload may write (413 above). The daemon never holds more than a
    /// chunk of it, whatever its size.
    pub max_upload_bytes: u64,
}

impl Default for Files {
    fn default() -> Files {
        Files {
            max_upload_bytes: 10 << 30,
        }
    }
}

/// `[snapshots]`: filesystem snapshots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshots {
    /// Most snapshots one user may keep (taken or imported; 429 above). Each holds at most a
    /// sandbox disk's worth of files.
    pub max_per_user: u32,
}

impl Default for Snapshots {
    fn default() -> Snapshots {
        Snapshots { max_per_user: 20 }
    }
}

/// `[projects]`: projects, their fragments (stored versions of their files) and each
/// user's active sandbox.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Projects {
    /// Most projects one user may own (429 above).
    pub max_per_user: u32,
    /// Most fragments one project may keep (429 above: delete old ones).
    pub max_fragments_per_project: u32,
    /// The most files (and directories and links) one fragment may hold (413 above).
    pub max_fragment_files: u32,
    /// The most bytes of file content one fragment may hold (413 above).
    pub max_fragment_bytes: u64,
    /// The most bytes of content one user's fragments may hold together, counted as written
    /// (before blobs shared between fragments are counted once; 429 above).
    pub max_bytes_per_user: u64,
}

impl Default for Projects {
    fn default() -> Projects {
        Projects {
            max_per_user: 50,
            max_fragments_per_project: 200,
            max_fragment_files: 20_000,
            max_fragment_bytes: 128 << 20,
            max_bytes_per_user: 2 << 30,
        }
    }
}

/// `[capacity]`: how much of what the host shares sandboxes may be promised, all users
/// together. Requests are admitted against these whatever the per-user limits say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// The sum of live sandboxes' `pids` limits stays within this share of the host's task
    /// table (the smaller of `kernel.pid_max` and `kernel.threads-max`).
    pub pids_share: f64,
    /// Free space on the data directory's file system that sandbox disks may never promise
    /// away, MiB. It holds what the daemon itself writes there: spooled exec output (at most a
    /// quarter of it), the audit trail, the store.
    pub disk_reserve_mb: u64,
    /// How far promises of (sparse) sandbox disks may exceed the free space: 1 promises no
    /// more than there is.
    pub disk_overcommit: f64,
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity {
            pids_share: 0.5,
            disk_reserve_mb: 4096,
            disk_overcommit: 1.0,
        }
    }
}

/// `[exec]`: what a running command may cost the daemon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exec {
    /// Output a collected exec keeps per stream; the rest is dropped and flagged
    /// `*_truncated`.
    pub max_output_bytes: u64,
    /// Output the daemon reads from one sandbox's commands, all streams together, per second
    /// and per CPU of the sandbox's limit. A command writing faster is slowed down (its pipe
    /// fills), so a sandbox's CPU limit bounds the work it makes the daemon do.
    pub output_bytes_per_cpu: u64,
}

impl Default for Exec {
    fn default() -> Exec {
        Exec {
            max_output_bytes: 16 << 20,
            output_bytes_per_cpu: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Daemon {
    pub listen: SocketAddr,
    /// `None`: the daemon picks its default for the running user.
    pub data_dir: Option<PathBuf>,
    pub keep_sandboxes: bool,
    pub warm_pool: usize,
    /// Web origins (`https://tutorial.example`) whose pages may call the API and open
    /// terminals (CORS and the WebSocket `Origin` check). Empty: same origin only.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client. Empty: the header is ignored
    /// and the connection's peer is the client.
    pub trusted_proxies: Vec<IpRange>,
    /// Longest a client may take to send a request's headers (and to sit idle between
    /// requests on a kept-alive connection).
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body.
    pub body_timeout: Duration,
    /// Longest a response may wait for a client that does not read it (a stalled write ends
    /// the connection).
    pub write_timeout: Duration,
    /// Open connections at most, and per client address (trusted proxies are exempt).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// Limits of the terminal WebSocket (`GET /v1/sandboxes/{id}/pty`).
#[derive(Debug, Clone, PartialEq)]
pub struct Terminals {
    /// Largest inbound message; a larger one closes the socket with 1009.
    pub max_message_bytes: usize,
    /// Terminals open at once per client IP; one more is answered 429 before the upgrade.
    pub max_per_ip: usize,
    /// Close (1008) a terminal whose input carries escape sequences aimed at the host's
    /// terminal emulator (OSC, DCS, APC, PM introducers).
    pub filter_escape_sequences: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reaper {
    pub enabled: bool,
    /// How often idle sandboxes are looked for (expiry is acted on at its deadline).
    pub interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub backend: String,
    pub template: String,
    pub network: Network,
    /// Defaults of the profile's sandboxes.
    pub resources: Resources,
    /// The most a request may ask for (each at least the default); the host's capacity may
    /// allow less.
    pub max_resources: Resources,
    pub ttl: Ttl,
    /// An exec, terminal or files call on a paused sandbox resumes it (else it is refused, 409).
    pub auto_resume: bool,
    /// Extra limits on creating sandboxes of this profile, counted over this profile's
    /// sandboxes only (unlimited unless set).
    pub limits: Limits,
    /// Sandboxes of this profile (its template and default resources) an `oci`, `crun` or
    /// `runc` backend keeps started ahead of time; `None`: the daemon's `warm_pool`. (The
    /// native backend's pool is the daemon's `warm_pool` alone.)
    pub warm_pool: Option<usize>,
}

/// What the reaper does to a sandbox idle for `ttl.idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleAction {
    #[default]
    Destroy,
    /// Pause it: its processes are kept, frozen, until it is resumed.
    Pause,
}

impl IdleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            IdleAction::Destroy => "destroy",
            IdleAction::Pause => "pause",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    pub memory_mb: u64,
    pub cpus: f64,
    pub pids: u64,
    /// The sandbox's disk (writable root and home), MiB.
    pub disk_mb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Loopback only.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// Lifetime given at create when the request names none.
    pub default: Duration,
    /// Longest total lifetime, extensions included.
    pub max: Duration,
    /// Reap after this long without API activity or running processes; `None`: never.
    pub idle: Option<Duration>,
    /// What reaping an idle sandbox does.
    pub idle_action: IdleAction,
    /// The lifetime does not run while the sandbox is paused (it does by default).
    pub pause_stops_clock: bool,
}

impl Profile {
    fn builtin() -> Profile {
        Profile {
            name: DEFAULT_PROFILE.into(),
            backend: "native".into(),
            template: "host".into(),
            network: Network::None,
            resources: Resources {
                memory_mb: 512,
                cpus: 1.0,
                pids: 256,
                disk_mb: 2048,
            },
            ttl: Ttl {
                default: DEFAULT_TTL,
                max: DEFAULT_TTL_MAX,
                idle: None,
                idle_action: IdleAction::Destroy,
                pause_stops_clock: false,
            },
            auto_resume: false,
            max_resources: Resources {
                memory_mb: 8192,
                cpus: 4.0,
                pids: 1024,
                disk_mb: 16384,
            },
            limits: Limits::UNLIMITED,
            warm_pool: None,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            daemon: Daemon {
                listen: DEFAULT_LISTEN.parse().expect("a valid literal address"),
                data_dir: None,
                keep_sandboxes: false,
                warm_pool: DEFAULT_WARM_POOL,
                allowed_origins: Vec::new(),
                trusted_proxies: Vec::new(),
                header_timeout: Duration::from_secs(15),
                body_timeout: Duration::from_secs(60),
                write_timeout: Duration::from_secs(60),
                max_connections: 4096,
                max_connections_per_ip: 256,
            },
            terminals: Terminals {
                max_message_bytes: 64 * 1024,
                max_per_ip: 3,
                filter_escape_sequences: false,
            },
            reaper: Reaper {
                enabled: true,
                interval: DEFAULT_REAPER_INTERVAL,
            },
            limits: LimitsConfig::default(),
            audit: Audit::default(),
            capacity: Capacity::default(),
            exec: Exec::default(),
            files: Files::default(),
            snapshots: Snapshots::default(),
            projects: Projects::default(),
            e2b: E2b::default(),
            images: ImagesConfig::default(),
            oci: OciSettings::default(),
            docker: DockerSettings::default(),
            profiles: [(DEFAULT_PROFILE.to_owned(), Profile::builtin())].into(),
        }
    }
}

impl Config {
    /// The embedded defaults, or the file over them.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(file) = file else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Config::parse(&text, &file.display().to_string())
    }

    /// Parses `text` (named `file` in errors).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_owned(),
            message,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_owned()))?;
        raw.resolve().map_err(invalid)
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// The resolved configuration, every default filled in, as TOML.
    pub fn to_toml(&self) -> String {
        let raw = RawConfig {
            daemon: Some(RawDaemon {
                listen: Some(self.daemon.listen.to_string()),
                data_dir: self.daemon.data_dir.clone(),
                keep_sandboxes: Some(self.daemon.keep_sandboxes),
                warm_pool: Some(self.daemon.warm_pool),
                allowed_origins: Some(self.daemon.allowed_origins.clone()),
                trusted_proxies: Some(
                    self.daemon
                        .trusted_proxies
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                ),
                header_timeout: Some(DurationText(self.daemon.header_timeout)),
                body_timeout: Some(DurationText(self.daemon.body_timeout)),
                write_timeout: Some(DurationText(self.daemon.write_timeout)),
                max_connections: Some(self.daemon.max_connections),
                max_connections_per_ip: Some(self.daemon.max_connections_per_ip),
            }),
            limits: Some(self.limits.to_raw()),
            audit: Some(self.audit.to_raw()),
            capacity: Some(RawCapacity {
                pids_share: Some(self.capacity.pids_share),
                disk_reserve_mb: Some(self.capacity.disk_reserve_mb),
                disk_overcommit: Some(self.capacity.disk_overcommit),
            }),
            exec: Some(RawExec {
                max_output_bytes: Some(self.exec.max_output_bytes),
                output_bytes_per_cpu: Some(self.exec.output_bytes_per_cpu),
            }),
            files: Some(RawFiles {
                max_upload_bytes: Some(self.files.max_upload_bytes),
            }),
            snapshots: Some(RawSnapshots {
                max_per_user: Some(self.snapshots.max_per_user),
            }),
            projects: Some(RawProjects {
                max_per_user: Some(self.projects.max_per_user),
                max_fragments_per_project: Some(self.projects.max_fragments_per_project),
                max_fragment_files: Some(self.projects.max_fragment_files),
                max_fragment_bytes: Some(self.projects.max_fragment_bytes),
                max_bytes_per_user: Some(self.projects.max_bytes_per_user),
            }),
            e2b: Some(RawE2b {
                domain: self.e2b.domain.clone(),
                templates: self.e2b.templates.clone(),
            }),
            images: Some(RawImages {
                max_image_mb: Some(self.images.max_image_mb),
                insecure_registries: self.images.insecure_registries.clone(),
            }),
            oci: Some(RawOci {
                runtime: Some(self.oci.runtime.clone()),
                platform: Some(self.oci.platform.clone()),
                favor_cgroup_moves: Some(self.oci.favor_cgroup_moves),
            }),
            docker: Some(RawDocker {
                socket: Some(self.docker.socket.clone()),
                gvisor_runtime: Some(self.docker.gvisor_runtime.clone()),
            }),
            terminals: Some(RawTerminals {
                max_message_bytes: Some(self.terminals.max_message_bytes),
                max_per_ip: Some(self.terminals.max_per_ip),
                filter_escape_sequences: Some(self.terminals.filter_escape_sequences),
            }),
            reaper: Some(RawReaper {
                enabled: Some(self.reaper.enabled),
                interval: Some(DurationText(self.reaper.interval)),
            }),
            profiles: self
                .profiles
                .iter()
                .map(|(name, p)| {
                    let raw = RawProfile {
                        backend: Some(p.backend.clone()),
                        template: Some(p.template.clone()),
                        network: Some("none".into()),
                        resources: Some(RawResources::from(p.resources)),
                        max_resources: Some(RawResources::from(p.max_resources)),
                        ttl: Some(RawTtl {
                            default: Some(DurationText(p.ttl.default)),
                            max: Some(DurationText(p.ttl.max)),
                            idle: p.ttl.idle.map(DurationText),
                            idle_action: Some(p.ttl.idle_action.as_str().into()),
                            pause_stops_clock: Some(p.ttl.pause_stops_clock),
                        }),
                        auto_resume: Some(p.auto_resume),
                        limits: (p.limits != Limits::UNLIMITED).then(|| p.limits.to_raw()),
                        warm_pool: p.warm_pool,
                    };
                    (name.clone(), raw)
                })
                .collect(),
        };
        toml::to_string_pretty(&raw).expect("the configuration serialises")
    }
}

/// The file as written. Every table and key is optional; unknown ones are errors.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<RawDaemon>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reaper: Option<RawReaper>,
    #[serde(skip_serializing_if = "Option::is_none")]
    terminals: Option<RawTerminals>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<RawLimits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit: Option<RawAudit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<RawCapacity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec: Option<RawExec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<RawFiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshots: Option<RawSnapshots>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    projects: Option<RawProjects>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e2b: Option<RawE2b>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    images: Option<RawImages>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oci: Option<RawOci>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    docker: Option<RawDocker>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOci {
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    favor_cgroup_moves: Option<bool>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gvisor_runtime: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImages {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_image_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    insecure_registries: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawE2b {
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    templates: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshots {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_per_user: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProjects {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_per_user: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_fragments_per_project: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_fragment_files: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_fragment_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_bytes_per_user: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_upload_bytes: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_sandboxes: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warm_pool: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_origins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted_proxies: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header_timeout: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_timeout: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    write_timeout: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections_per_ip: Option<usize>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTerminals {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_per_ip: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter_escape_sequences: Option<bool>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pids_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_reserve_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_overcommit: Option<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_bytes_per_cpu: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReaper {
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<DurationText>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<RawResources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_resources: Option<RawResources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<RawTtl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_resume: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<RawLimits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warm_pool: Option<usize>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_mb: Option<u64>,
}

impl RawResources {
    /// These values over `base`, each checked against its minimum; `at` names the table.
    fn over(&self, base: Resources, at: &str) -> Result<Resources, String> {
        let mut resources = base;
        if let Some(memory_mb) = self.memory_mb {
            if memory_mb < 32 {
                return Err(format!("{at}.memory_mb: {memory_mb} is below 32"));
            }
            resources.memory_mb = memory_mb;
        }
        if let Some(cpus) = self.cpus {
            if !cpus.is_finite() || cpus < 0.01 {
                return Err(format!("{at}.cpus: {cpus} is below 0.01"));
            }
            resources.cpus = cpus;
        }
        if let Some(pids) = self.pids {
            if pids < 8 {
                return Err(format!("{at}.pids: {pids} is below 8"));
            }
            resources.pids = pids;
        }
        if let Some(disk_mb) = self.disk_mb {
            if disk_mb < 64 {
                return Err(format!("{at}.disk_mb: {disk_mb} is below 64"));
            }
            resources.disk_mb = disk_mb;
        }
        Ok(resources)
    }
}

impl From<Resources> for RawResources {
    fn from(resources: Resources) -> RawResources {
        RawResources {
            memory_mb: Some(resources.memory_mb),
            cpus: Some(resources.cpus),
            pids: Some(resources.pids),
            disk_mb: Some(resources.disk_mb),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTtl {
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pause_stops_clock: Option<bool>,
}

/// A duration written as text; a bad one fails where it stands, so the error has its line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DurationText(pub(crate) Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        duration::parse(&text)
            .map(DurationText)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for DurationText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&duration::format(self.0))
    }
}

impl RawConfig {
    fn resolve(self) -> Result<Config, String> {
        let mut config = Config::default();
        if let Some(daemon) = self.daemon {
            if let Some(listen) = daemon.listen {
                config.daemon.listen = listen.parse().map_err(|_| {
                    format!("daemon.listen: {listen:?} is not an address like 127.0.0.1:7070")
                })?;
            }
            if let Some(dir) = daemon.data_dir {
                if !dir.is_absolute() {
                    return Err(format!(
                        "daemon.data_dir: {} is not an absolute path",
                        dir.display()
                    ));
                }
                config.daemon.data_dir = Some(dir);
            }
            config.daemon.keep_sandboxes = daemon.keep_sandboxes.unwrap_or(false);
            config.daemon.warm_pool = daemon.warm_pool.unwrap_or(DEFAULT_WARM_POOL);
            if config.daemon.warm_pool > 64 {
                return Err("daemon.warm_pool: at most 64".into());
            }
            for origin in daemon.allowed_origins.unwrap_or_default() {
                // scheme://host[:port], nothing after: what browsers send as `Origin`.
                let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
                    (scheme == "http" || scheme == "https")
                        && !rest.is_empty()
                        && !rest.contains(['/', ' ', '?', '#'])
                });
                if !valid {
                    return Err(format!(
                        "daemon.allowed_origins: {origin:?} is not an origin like https://example.com:8443"
                    ));
                }
                config.daemon.allowed_origins.push(origin);
            }
            for proxy in daemon.trusted_proxies.unwrap_or_default() {
                let range = proxy
                    .parse()
                    .map_err(|e| format!("daemon.trusted_proxies: {e}"))?;
                config.daemon.trusted_proxies.push(range);
            }
            for (name, value, slot) in [
                (
                    "header_timeout",
                    daemon.header_timeout,
                    &mut config.daemon.header_timeout,
                ),
                (
                    "body_timeout",
                    daemon.body_timeout,
                    &mut config.daemon.body_timeout,
                ),
                (
                    "write_timeout",
                    daemon.write_timeout,
                    &mut config.daemon.write_timeout,
                ),
            ] {
                if let Some(DurationText(value)) = value {
                    if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                        return Err(format!(
                            "daemon.{name}: {} is not between 100ms and 1h",
                            duration::format(value)
                        ));
                    }
                    *slot = value;
                }
            }
            for (name, value, slot) in [
                (
                    "max_connections",
                    daemon.max_connections,
                    &mut config.daemon.max_connections,
                ),
                (
                    "max_connections_per_ip",
                    daemon.max_connections_per_ip,
                    &mut config.daemon.max_connections_per_ip,
                ),
            ] {
                if let Some(value) = value {
                    if value == 0 {
                        return Err(format!("daemon.{name}: must be at least 1"));
                    }
                    *slot = value;
                }
            }
        }
        if let Some(limits) = self.limits {
            config.limits = limits.resolve_table()?;
        }
        if let Some(audit) = self.audit {
            config.audit = audit.resolve()?;
        }
        if let Some(capacity) = self.capacity {
            if let Some(share) = capacity.pids_share {
                if !(share > 0.0 && share <= 0.9) {
                    return Err(format!(
                        "capacity.pids_share: {share} is not above 0 and at most 0.9"
                    ));
                }
                config.capacity.pids_share = share;
            }
            if let Some(reserve) = capacity.disk_reserve_mb {
                // It also holds spooled exec output (a quarter of it) and the audit trail.
                if !(256..=1 << 30).contains(&reserve) {
                    return Err(format!(
                        "capacity.disk_reserve_mb: {reserve} is not between 256 and 1073741824"
                    ));
                }
                config.capacity.disk_reserve_mb = reserve;
            }
            if let Some(factor) = capacity.disk_overcommit {
                if !(1.0..=100.0).contains(&factor) {
                    return Err(format!(
                        "capacity.disk_overcommit: {factor} is not between 1 and 100"
                    ));
                }
                config.capacity.disk_overcommit = factor;
            }
        }
        if let Some(exec) = self.exec {
            if let Some(bytes) = exec.max_output_bytes {
                if !(1024..=1 << 30).contains(&bytes) {
                    return Err(format!(
                        "exec.max_output_bytes: {bytes} is not between 1024 and 1073741824"
                    ));
                }
                config.exec.max_output_bytes = bytes;
            }
            if let Some(rate) = exec.output_bytes_per_cpu {
                if rate < 64 * 1024 {
                    return Err(format!("exec.output_bytes_per_cpu: {rate} is below 65536"));
                }
                config.exec.output_bytes_per_cpu = rate;
            }
        }
        if let Some(files) = self.files {
            if let Some(bytes) = files.max_upload_bytes {
                if bytes == 0 {
                    return Err("files.max_upload_bytes: must be above 0".into());
                }
                config.files.max_upload_bytes = bytes;
            }
        }
        if let Some(snapshots) = self.snapshots {
            if let Some(most) = snapshots.max_per_user {
                config.snapshots.max_per_user = most;
            }
        }
        if let Some(projects) = self.projects {
            let p = &mut config.projects;
            if let Some(most) = projects.max_per_user {
                p.max_per_user = most;
            }
            if let Some(most) = projects.max_fragments_per_project {
                p.max_fragments_per_project = most;
            }
            if let Some(most) = projects.max_fragment_files {
                if most == 0 {
                    return Err("projects.max_fragment_files: must be above 0".into());
                }
                p.max_fragment_files = most;
            }
            if let Some(most) = projects.max_fragment_bytes {
                p.max_fragment_bytes = most;
            }
            if let Some(most) = projects.max_bytes_per_user {
                p.max_bytes_per_user = most;
            }
        }
        if let Some(e2b) = self.e2b {
            if let Some(domain) = e2b.domain {
                let valid = !domain.is_empty()
                    && domain.len() <= 200
                    && domain.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(format!(
                        "e2b.domain: {domain:?} is not a DNS name (labels of letters, digits and '-')"
                    ));
                }
                config.e2b.domain = Some(domain.to_ascii_lowercase());
            }
            config.e2b.templates = e2b.templates;
        }
        if let Some(images) = self.images {
            if let Some(mb) = images.max_image_mb {
                if !(16..=1 << 20).contains(&mb) {
                    return Err(format!(
                        "images.max_image_mb: {mb} is out of range (16 to 1048576)"
                    ));
                }
                config.images.max_image_mb = mb;
            }
            for registry in &images.insecure_registries {
                let valid = !registry.is_empty()
                    && registry.len() <= 255
                    && registry
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
                if !valid {
                    return Err(format!(
                        "images.insecure_registries: {registry:?} is not a host[:port]"
                    ));
                }
            }
            config.images.insecure_registries = images.insecure_registries;
        }
        if let Some(oci) = self.oci {
            if let Some(runtime) = oci.runtime {
                if runtime.is_empty() || runtime.contains('\0') {
                    return Err("oci.runtime: must name a program".into());
                }
                config.oci.runtime = runtime;
            }
            if let Some(platform) = oci.platform {
                if !["ptrace", "systrap", "kvm"].contains(&platform.as_str()) {
                    return Err(format!(
                        "oci.platform: {platform:?} is not ptrace, systrap or kvm"
                    ));
                }
                config.oci.platform = platform;
            }
            if let Some(favor) = oci.favor_cgroup_moves {
                config.oci.favor_cgroup_moves = favor;
            }
        }
        if let Some(docker) = self.docker {
            if let Some(socket) = docker.socket {
                if !socket.is_absolute() {
                    return Err(format!(
                        "docker.socket: {} is not an absolute path",
                        socket.display()
                    ));
                }
                config.docker.socket = socket;
            }
            if let Some(runtime) = docker.gvisor_runtime {
                let valid = !runtime.is_empty()
                    && runtime
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !valid {
                    return Err(format!(
                        "docker.gvisor_runtime: {runtime:?} is not a runtime name"
                    ));
                }
                config.docker.gvisor_runtime = runtime;
            }
        }
        if let Some(reaper) = self.reaper {
            config.reaper.enabled = reaper.enabled.unwrap_or(true);
            if let Some(DurationText(interval)) = reaper.interval {
                config.reaper.interval = interval;
            }
        }
        if let Some(terminals) = self.terminals {
            if let Some(bytes) = terminals.max_message_bytes {
                if !(1024..=16 << 20).contains(&bytes) {
                    return Err(format!(
                        "terminals.max_message_bytes: {bytes} is not between 1024 and 16777216"
                    ));
                }
                config.terminals.max_message_bytes = bytes;
            }
            if let Some(count) = terminals.max_per_ip {
                if count == 0 {
                    return Err("terminals.max_per_ip: must be at least 1".into());
                }
                config.terminals.max_per_ip = count;
            }
            config.terminals.filter_escape_sequences =
                terminals.filter_escape_sequences.unwrap_or(false);
        }
        for (name, raw) in self.profiles {
            let profile =
                resolve_profile(&name, raw).map_err(|e| format!("profiles.{name}.{e}"))?;
            config.profiles.insert(name, profile);
        }
        for (template, profile) in &config.e2b.templates {
            if !config.profiles.contains_key(profile) {
                return Err(format!(
                    "e2b.templates.{template}: no profile named {profile:?}"
                ));
            }
        }
        Ok(config)
    }
}

fn resolve_profile(name: &str, raw: RawProfile) -> Result<Profile, String> {
    let valid_name = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
    if !valid_name {
        return Err(format!("name: {name:?} must be 1-63 of a-z, 0-9, '-', '_'"));
    }
    let mut profile = Profile::builtin();
    profile.name = name.to_owned();
    if let Some(backend) = raw.backend {
        // Which backends exist is the daemon's to say (its factory); here only the shape.
        let valid = !backend.is_empty()
            && backend.len() <= 32
            && backend
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(format!(
                "backend: {backend:?} must be a backend's name (1-32 of a-z, 0-9, '-')"
            ));
        }
        profile.backend = backend;
    }
    if let Some(template) = raw.template {
        let valid = template
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && template.len() <= 63
            && template
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !valid {
            return Err(format!("template: {template:?} is not a template name"));
        }
        profile.template = template;
    }
    if let Some(network) = raw.network {
        if network != "none" {
            return Err(format!(
                "network: {network:?} is not supported (networks: none)"
            ));
        }
    }
    // What a profile sets in `resources` is also its cap, unless `max_resources` raises it: a
    // profile's resources are maxima, not defaults a request may exceed.
    let given = raw.resources.unwrap_or_default();
    let capped = RawResources {
        memory_mb: given.memory_mb,
        cpus: given.cpus,
        pids: given.pids,
        disk_mb: given.disk_mb,
    };
    profile.resources = given.over(profile.resources, "resources")?;
    profile.max_resources = capped.over(profile.max_resources, "max_resources")?;
    if let Some(max) = raw.max_resources {
        profile.max_resources = max.over(profile.max_resources, "max_resources")?;
    }
    let (default, max) = (profile.resources, profile.max_resources);
    for (key, default, max) in [
        ("memory_mb", default.memory_mb as f64, max.memory_mb as f64),
        ("cpus", default.cpus, max.cpus),
        ("pids", default.pids as f64, max.pids as f64),
        ("disk_mb", default.disk_mb as f64, max.disk_mb as f64),
    ] {
        if default > max {
            return Err(format!(
                "resources.{key}: {default} is above max_resources.{key} {max}"
            ));
        }
    }
    if let Some(ttl) = raw.ttl {
        if let Some(DurationText(max)) = ttl.max {
            profile.ttl.max = max;
        }
        if let Some(DurationText(default)) = ttl.default {
            profile.ttl.default = default;
        } else if profile.ttl.default > profile.ttl.max {
            profile.ttl.default = profile.ttl.max;
        }
        profile.ttl.idle = ttl.idle.map(|DurationText(idle)| idle);
        if let Some(action) = ttl.idle_action {
            profile.ttl.idle_action = match action.as_str() {
                "destroy" => IdleAction::Destroy,
                "pause" => IdleAction::Pause,
                other => {
                    return Err(format!(
                        "ttl.idle_action: {other:?} must be \"destroy\" or \"pause\""
                    ))
                }
            };
        }
        if let Some(stops) = ttl.pause_stops_clock {
            profile.ttl.pause_stops_clock = stops;
        }
    }
    if let Some(auto_resume) = raw.auto_resume {
        profile.auto_resume = auto_resume;
    }
    if let Some(limits) = raw.limits {
        profile.limits = limits.over(Limits::UNLIMITED, "limits")?;
    }
    if let Some(warm_pool) = raw.warm_pool {
        if warm_pool > 64 {
            return Err("warm_pool: at most 64".into());
        }
        profile.warm_pool = Some(warm_pool);
    }
    if profile.ttl.default > profile.ttl.max {
        return Err(format!(
            "ttl.default: {} is longer than ttl.max {}",
            duration::format(profile.ttl.default),
            duration::format(profile.ttl.max)
        ));
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_the_embedded_defaults() {
        let config = Config::load(None).unwrap();
        let default = config.profile(DEFAULT_PROFILE).unwrap();
        assert_eq!(default.template, "host");
        assert_eq!(default.ttl.default, Duration::from_secs(3600));
        assert_eq!(default.ttl.idle, None);
        assert_eq!(config.daemon.listen.to_string(), "127.0.0.1:7070");
        assert!(config.reaper.enabled);
    }

    #[test]
    fn a_full_file_resolves() {
        let text = r#"
[daemon]
listen = "0.0.0.0:8080"
keep_sandboxes = true
warm_pool = 0

[reaper]
interval = "5s"

[profiles.tutorial]
resources = { memory_mb = 128, cpus = 0.5 }
ttl = { default = "15m", max = "1h", idle = "5m" }
"#;
        let config = Config::parse(text, "sbx.toml").unwrap();
        assert_eq!(config.daemon.listen.to_string(), "0.0.0.0:8080");
        assert!(config.daemon.keep_sandboxes);
        assert_eq!(config.reaper.interval, Duration::from_secs(5));
        let tutorial = config.profile("tutorial").unwrap();
        assert_eq!(tutorial.resources.memory_mb, 128);
        assert_eq!(tutorial.resources.pids, 256);
        assert_eq!(tutorial.ttl.idle, Some(Duration::from_secs(300)));
        assert!(
            config.profile(DEFAULT_PROFILE).is_some(),
            "the default profile stays"
        );
        // The resolved form parses back to the same configuration.
        assert_eq!(
            Config::parse(&config.to_toml(), "resolved").unwrap(),
            config
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "[daemon]\nlisten = \"127.0.0.1:1\"\ncolour = 3\n",
                "line 3",
                "colour",
            ),
            ("[profiles.a]\nttl = { default = \"5x\" }\n", "line 2", "5x"),
            (
                "[profiles.a]\n[profiles.a.ttl]\nmax = \"1h\"\ndefault = \"2h\"\n",
                "profiles.a.ttl.default",
                "longer than ttl.max",
            ),
            (
                "[profiles.a]\nnetwork = \"host\"\n",
                "profiles.a.network",
                "not supported",
            ),
            (
                "[profiles.a]\nbackend = \"VMware\"\n",
                "profiles.a.backend",
                "must be a backend",
            ),
            ("[profiles.A]\n", "profiles.A.name", "must be"),
            (
                "[daemon]\nlisten = \"nowhere\"\n",
                "daemon.listen",
                "nowhere",
            ),
            ("[reaper]\nenabled = \"yes\"\n", "line 2", "enabled"),
            ("not toml at all", "line 1", "sbx.toml"),
        ];
        for (text, where_, what) in cases {
            let error = Config::parse(text, "sbx.toml").unwrap_err().to_string();
            assert!(error.starts_with("sbx.toml: "), "{error}");
            assert!(error.contains(where_), "{text:?}: {error}");
            assert!(error.contains(what), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../../docs/sbx.example.toml");
        let config = Config::parse(text, "docs/sbx.example.toml").unwrap();
        assert_eq!(
            config.profile("tutorial").unwrap().ttl.idle,
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            config,
            Config::parse(&config.to_toml(), "resolved").unwrap()
        );
    }

    #[test]
    fn the_e2b_section_is_checked() {
        let config = Config::parse(
            "[e2b]\ndomain = \"Sbx.Example.com\"\ntemplates = { python = \"py\" }\n[profiles.py]\n",
            "sbx.toml",
        )
        .unwrap();
        assert_eq!(config.e2b.domain.as_deref(), Some("sbx.example.com"));
        assert_eq!(config.e2b.templates["python"], "py");
        for (text, what) in [
            ("[e2b]\ndomain = \"a..b\"\n", "e2b.domain"),
            ("[e2b]\ndomain = \"a/b\"\n", "e2b.domain"),
            ("[e2b]\ntemplates = { x = \"nope\" }\n", "e2b.templates.x"),
        ] {
            let error = Config::parse(text, "sbx.toml").unwrap_err().to_string();
            assert!(error.contains(what), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_profiles_resources_are_its_caps_unless_raised() {
        let text = r#"
[profiles.small]
resources = { pids = 128, disk_mb = 512 }

[profiles.roomy]
resources = { pids = 128 }
max_resources = { pids = 512, memory_mb = 1024 }
"#;
        let config = Config::parse(text, "sbx.toml").unwrap();
        let small = config.profile("small").unwrap();
        assert_eq!((small.resources.pids, small.max_resources.pids), (128, 128));
        assert_eq!(small.max_resources.disk_mb, 512);
        // What the profile does not set keeps the built-in default and cap.
        assert_eq!(small.max_resources.memory_mb, 8192);
        let roomy = config.profile("roomy").unwrap();
        assert_eq!((roomy.resources.pids, roomy.max_resources.pids), (128, 512));
        assert_eq!(roomy.max_resources.memory_mb, 1024);
        let error = Config::parse(
            "[profiles.x]\nresources = { pids = 300 }\nmax_resources = { pids = 200 }\n",
            "sbx.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("resources.pids: 300 is above max_resources.pids 200"),
            "{error}"
        );
        assert_eq!(
            Config::parse(&config.to_toml(), "resolved").unwrap(),
            config
        );
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let error = Config::load(Some(Path::new("/nonexistent/sbx.toml"))).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/sbx.toml"));
    }
}
