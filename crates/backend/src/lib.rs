//! The backend seam: what every isolation technology must offer sbx.
//!
//! Owns: the [`Backend`] trait, the validated inputs it takes ([`SandboxSpec`], [`ExecSpec`]),
//! the opaque [`Handle`] it returns, the exec event model and [`BackendError`].
//! Must never: know about HTTP, SQL, TTLs or any particular technology.
//!
//! Architecture invariant: a backend keeps none of sbx's bookkeeping. Everything needed to find
//! a sandbox again after a daemon restart is in the [`Handle`] (stored by lifecycle) plus marks
//! on the host that carry the sandbox id (cgroup path, directory, process argv), so that
//! [`Backend::destroy`] works from the id alone.

mod error;
mod exec;
mod id;
mod spec;

use async_trait::async_trait;

pub use error::{BackendError, HostResource};
pub use exec::{
    ExecEvent, ExecInput, ExecSession, ExecSpec, ExitStatus, SignalTarget, StdinMode, TtySize,
};
pub use id::{InvalidSandboxId, SandboxId};
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
    pub memory_bytes: Option<u64>,
    pub cpu_usec: Option<u64>,
    pub pids: Option<u64>,
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

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Stable name of the technology (`native`, …).
    fn kind(&self) -> &'static str;

    async fn health(&self) -> Health;

    /// Whether `name` is a template this backend can start from.
    fn has_template(&self, name: &str) -> bool;

    /// The id for the next sandbox. A backend that prepares sandboxes ahead of time hands out
    /// the id of a prepared one, which `create` then starts quickly. An id that is never
    /// created is released by `destroy(id, None)` (or, after a crash, by reconciliation, as
    /// any host trace of an id the store does not know).
    fn reserve_id(&self, limits: &Limits) -> SandboxId {
        let _ = limits;
        SandboxId::generate()
    }

    /// Builds and starts the sandbox. Idempotent on `spec.id`: remains of an earlier,
    /// interrupted attempt with the same id are removed first. On error nothing is left behind.
    async fn create(&self, spec: &SandboxSpec) -> Result<Handle, BackendError>;

    async fn inspect(&self, handle: &Handle) -> Result<Observed, BackendError>;

    /// Takes over a sandbox made by an earlier daemon (after a restart). `Ok` when it is alive
    /// and usable; `NotRunning` when its processes are gone (destroy then removes the remains).
    async fn adopt(&self, handle: &Handle) -> Result<(), BackendError>;

    /// The host storage its sandbox disks live on, when they live on this host (`None`: the
    /// backend's disks are not the host's concern, or it has none). Cheap enough to call at
    /// every create.
    fn storage(&self) -> Option<Storage> {
        None
    }

    /// What this backend can do, for status reports (`exec`, `pty`, `files`, …).
    fn capabilities(&self) -> Vec<&'static str>;

    /// Ids of every sandbox of this daemon instance that still has a trace on the host.
    async fn list_owned(&self) -> Result<Vec<SandboxId>, BackendError>;

    /// Removes every trace of the sandbox (processes, mounts, cgroups, directories).
    /// Works from the id alone when the handle is lost; already gone is `Ok`.
    async fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), BackendError>;

    /// Starts a process. Returns once it runs (or with `ExecFailed` when it could not start).
    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError>;

    /// Resolves when the sandbox's main process has ended, for whatever reason.
    async fn wait_exit(&self, handle: &Handle) -> Result<(), BackendError>;
}
