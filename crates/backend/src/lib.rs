//! The backend seam: what every isolation technology must offer sbx.
//!
//! Owns: the [`Backend`] trait and its optional capability traits ([`Terminals`], [`Files`],
//! [`PauseResume`], [`Snapshots`], [`Ports`], [`Hibernation`]), the validated inputs they take ([`SandboxSpec`],
//! [`ExecSpec`], [`TerminalSpec`]), the opaque [`Handle`] a backend returns, the exec event
//! model, what a backend can give one sandbox ([`Bounds`]) and [`BackendError`].
//! Must never: know about HTTP, SQL, TTLs, users or any particular technology.
//!
//! Architecture invariant: a backend keeps none of sbx's bookkeeping. Everything needed to find
//! a sandbox again after a daemon restart is in the [`Handle`] (stored by lifecycle) plus marks
//! the engine keeps that carry the sandbox id (for the native backend: a cgroup path, a
//! directory, a process's argv), so that [`Backend::destroy`] works from the id alone.
//!
//! Adding a backend: a crate that implements [`Backend`] (and the capability traits it can),
//! passes `sbx-backend-conformance`, and gets one arm in the daemon's factory
//! (`crates/sbx/src/backends.rs`). Nothing in lifecycle, api or store changes.

pub mod agent;
mod capability;
mod error;
mod exec;
mod id;
pub mod idmap;
mod images;
pub mod ports;
pub mod process;
pub mod reap;
pub mod seccomp;
pub mod slots;
mod spec;
pub mod tarmeta;

use async_trait::async_trait;

pub use capability::{
    ByteStream, Capabilities, Duplex, Extracted, FileEvent, FileEventKind, FileEvents, FileInfo,
    FileKind, Files, Hibernation, Listing, PauseResume, Ports, SandboxPath, SnapshotName,
    Snapshots, Terminals,
};
pub use error::{BackendError, BoxError, FileErrorKind, SharedResource};
pub use exec::{
    ExecEvent, ExecInput, ExecSession, ExecSpec, ExitStatus, KillSwitch, Signal, SignalTarget,
    StdinMode, TerminalSpec, TtySize,
};
pub use id::{InvalidSandboxId, SandboxId};
pub use images::{
    ImageConfig, ImageError, ImageProgress, ImageSource, ImageTemplate, Images, ProgressSender,
    TemplateLayer,
};
pub use spec::{valid_template_name, Limits, SandboxSpec, User};

/// Opaque, serialisable locator of a backend instance (stored as JSON by lifecycle).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Handle {
    /// The backend kind that made it.
    pub backend: String,
    /// Backend-specific content; only that backend reads it.
    pub data: serde_json::Value,
}

/// A backend's self-report.
#[derive(Debug, Clone)]
pub struct Health {
    pub healthy: bool,
    /// One line on what was checked or what is wrong.
    pub detail: String,
}

/// What the host says about a sandbox right now.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Its main process is alive.
    pub alive: bool,
    /// The host pid of its main process, when it runs on this host.
    pub main_pid: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub pids: Option<u64>,
    /// Its processes are frozen ([`PauseResume`]), when the backend can tell.
    pub frozen: Option<bool>,
}

/// The file system that holds a backend's sandbox disks, and what those disks may still take
/// of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Storage {
    /// Size of the file system.
    pub total_bytes: u64,
    /// Free space on it now.
    pub free_bytes: u64,
    /// What the backend's sandbox disks (sparse images) may still grow by, together: their
    /// sizes less what they already take.
    pub promised_bytes: u64,
}

/// What a backend can give one sandbox at most, and what its sandboxes share: facts of the
/// host (or engine) it runs on, read when it starts. Lifecycle applies the operator's policy
/// (shares, reserves) on top.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Memory one sandbox may have at most.
    pub memory_bytes: u64,
    /// CPUs one sandbox may have at most, in thousandths.
    pub cpu_millis: u64,
    /// The task table (processes and threads) its sandboxes share with this host, when they
    /// run on it: every local backend's sandboxes share one. `None` for remote engines.
    pub host_tasks: Option<u64>,
    /// Size of the file system that holds its sandboxes' disks, when they are on this host.
    pub disk_bytes: Option<u64>,
    /// argv and environment of one command together, at most.
    pub max_command_bytes: usize,
    /// Host tasks each sandbox takes beyond its `pids` limit (a runtime's own threads in its
    /// cgroup): counted against the host's task table with it.
    pub tasks_per_sandbox: u64,
}

/// Reads a backend's instance id (twelve hex digits, at `path` in its data directory): what
/// names this daemon's cgroups, containers and labels on a shared host or engine. Made on
/// first use.
pub fn instance_id(path: &std::path::Path) -> std::io::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim();
        if text.len() == 12 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(text.to_owned());
        }
    }
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(path, &id)?;
    Ok(id)
}

impl Bounds {
    /// This host's: its memory, its CPUs, its task table (`kernel.pid_max`), for a local
    /// backend whose runtime takes `tasks_per_sandbox` tasks of its own per sandbox.
    pub fn of_this_host(tasks_per_sandbox: u64) -> Bounds {
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(1 << 30, |kib| kib * 1024);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let tasks = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|t| t.trim().parse().ok());
        Bounds {
            memory_bytes: memory,
            cpu_millis: cpus * 1000,
            host_tasks: tasks,
            disk_bytes: None,
            max_command_bytes: 128 << 10,
            tasks_per_sandbox,
        }
    }
}

/// The contract every backend fulfils (see `sbx-backend-conformance` for it as tests).
///
/// Every call may be cut off by lifecycle's deadline: a backend must leave nothing half-made
/// that `destroy` (by id) cannot remove. Calls for different sandboxes run concurrently.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Stable name of the technology (`native`, `fake`, …), recorded with each sandbox.
    fn kind(&self) -> &'static str;

    /// What stands between a sandbox and the host's kernel: `namespaces` (the host's kernel,
    /// namespaces, cgroups, seccomp), `gvisor` (gVisor's user-space kernel), `none`, …
    fn isolation(&self) -> &'static str {
        "unspecified"
    }

    fn capabilities(&self) -> Capabilities;

    /// What one sandbox may get at most here.
    fn bounds(&self) -> Bounds;

    /// Starts the backend's background work (a warm pool, a connection to its engine). Called
    /// once, after reconciliation, which would otherwise take what it prepares for orphans.
    async fn start(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Stops the background work and removes what only it made (pooled sandboxes); the
    /// sandboxes themselves are destroyed (or left for adoption) by lifecycle before.
    async fn shutdown(&self) {}

    async fn health(&self) -> Health;

    /// Whether `name` is a template this backend can start from.
    async fn has_template(&self, name: &str) -> Result<bool, BackendError>;

    /// Template `name` has left the image store (no live sandbox was made from it): what the
    /// backend made of it for itself (an engine's copy of its image) may go too.
    async fn template_removed(&self, name: &str) -> Result<(), BackendError> {
        let _ = name;
        Ok(())
    }

    /// Builds and starts the sandbox. Idempotent on `spec.id`: remains of an earlier,
    /// interrupted attempt with the same id are removed first. On error nothing is left behind.
    async fn create(&self, spec: &SandboxSpec) -> Result<Handle, BackendError>;

    async fn inspect(&self, handle: &Handle) -> Result<Observed, BackendError>;

    /// Takes over a sandbox made by an earlier daemon (after a restart). `Ok` when it is alive
    /// and usable; `NotFound` when it is gone (destroy then removes the remains).
    async fn adopt(&self, handle: &Handle) -> Result<(), BackendError>;

    /// The host storage its sandbox disks live on, when they live on this host (`None`: the
    /// backend's disks are not the host's concern, or it has none). Called at every create
    /// under the admission lock, so it answers from local facts (a `statvfs`, a directory)
    /// without waiting on anything remote; a remote engine answers `None`.
    fn storage(&self) -> Option<Storage> {
        None
    }

    /// Ids of every sandbox of this daemon instance that still has a trace in the engine,
    /// except those it is building or keeps prepared right now.
    async fn list_owned(&self) -> Result<Vec<SandboxId>, BackendError>;

    /// Removes every trace of the sandbox (processes, mounts, cgroups, directories).
    /// Works from the id alone when the handle is lost; already gone is `Ok`.
    async fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), BackendError>;

    /// Starts a process. Returns once it runs (or with `ExecFailed` when it could not start).
    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError>;

    /// Resolves when the sandbox's main process has ended, for whatever reason.
    async fn wait_exit(&self, handle: &Handle) -> Result<(), BackendError>;

    fn terminals(&self) -> Option<&dyn Terminals> {
        None
    }

    fn files(&self) -> Option<&dyn Files> {
        None
    }

    fn pause(&self) -> Option<&dyn PauseResume> {
        None
    }

    fn snapshots(&self) -> Option<&dyn Snapshots> {
        None
    }

    fn ports(&self) -> Option<&dyn Ports> {
        None
    }

    fn hibernation(&self) -> Option<&dyn Hibernation> {
        None
    }
}
