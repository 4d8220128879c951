//! The daemon side of the native backend: [`NativeBackend`] and everything it does on the host
//! from the daemon's own process.
//!
//! - [`build`]: a sandbox's host traces and its build, and the warm pool's refill;
//! - [`pool`]: stage-1 helpers, and the pool of helpers prepared ahead of time;
//! - [`destroy`]: removal, and finding processes by pidfd;
//! - [`keys`]: host keys (pooled sandboxes keep the pool's key) and the [`sbx_backend::Handle`];
//! - [`cgroup`], [`disk`], [`slots`], [`template`], [`layout`]: the host resources;
//! - [`client`]: the control protocol's client side (exec sessions);
//! - [`host`]: facts of the host read at start.

mod build;
mod cgroup;
mod client;
mod destroy;
mod disk;
mod files;
mod host;
mod keys;
mod layout;
mod pool;
mod snapshots;
pub(crate) mod template;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sbx_backend::{
    Backend, BackendError, Bounds, Capabilities, ExecSession, ExecSpec, Handle, Health, Observed,
    PauseResume, SandboxId, SandboxSpec, StdinMode, Storage, TerminalSpec, Terminals, User,
};

use crate::{init, wire};
use keys::NativeHandle;
use sbx_backend::slots;

/// First host uid/gid of sandbox ranges (the host-wide registry's, [`slots`]).
const ID_BASE: u32 = slots::ID_BASE;
const ID_SLOTS: u32 = slots::ID_SLOTS;
const KIND: &str = "native";

/// Settings of the native backend.
#[derive(Debug, Clone)]
pub struct NativeConfig {
    /// The daemon's data directory; the backend uses `templates/`, `sandboxes/` and
    /// `instance-id` in it.
    pub data_dir: PathBuf,
    /// How many stage-1 helpers to keep ready, joined to their cgroups (0: none).
    pub warm_pool: usize,
    /// Disk size of the pool's sandboxes (the default profile's): a create asking for another
    /// size is built from scratch.
    pub warm_pool_disk_bytes: u64,
    /// Free space the pool's disks may never promise away (see [`Backend::storage`]), and how
    /// far promises may exceed the free space: the pool stops refilling rather than take it.
    pub disk_reserve_bytes: u64,
    pub disk_overcommit: f64,
    /// The program run as stage 1 (`<program> __native-stage1 <key>`), which must call
    /// [`crate::run_if_requested`] first thing: by default this process's own executable.
    pub stage1_program: Option<PathBuf>,
    /// The daemon's image store, whose templates this backend builds roots from.
    pub images: Option<Arc<sbx_images::ImageStore>>,
}

pub struct NativeBackend {
    inner: Arc<Inner>,
    files: sbx_backend::agent::FileService<files::NativeTransport>,
}

struct Inner {
    layout: layout::Layout,
    cgroups: cgroup::Driver,
    instance: String,
    templates: template::Templates,
    slots: slots::Slots,
    keys: keys::Keys,
    bounds: Bounds,
    stage1_program: PathBuf,
    pool: pool::Pool,
    pool_size: usize,
    pool_disk_bytes: u64,
    disk_reserve_bytes: u64,
    disk_overcommit: f64,
    /// Wakes the pool's refill task (a helper was taken, or it is time to stop).
    refill: tokio::sync::Notify,
    stopping: std::sync::atomic::AtomicBool,
    refill_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl NativeBackend {
    /// Prepares the host: directories, cgroup parents, the `host` template. Makes the calling
    /// process a child subreaper so that orphaned sandbox inits are re-parented to it.
    pub fn new(config: NativeConfig) -> Result<NativeBackend, BackendError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(BackendError::unavailable(
                "the native backend needs root (user namespaces with mapped id ranges, cgroups)",
            ));
        }
        host::raise_file_max();
        let layout = layout::Layout::new(&config.data_dir).map_err(BackendError::unavailable)?;
        for dir in [layout.data_dir().to_owned(), layout.sandboxes()] {
            fs::create_dir_all(&dir)
                .map_err(|e| BackendError::io(format!("cannot create {}", dir.display()), e))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| BackendError::io(format!("cannot chmod {}", dir.display()), e))?;
        }
        let instance = host::instance_id(&layout.instance_file())
            .map_err(|e| BackendError::io("cannot read or create the instance id", e))?;
        let cgroups = cgroup::Driver::detect().map_err(BackendError::unavailable)?;
        cgroups
            .prepare_instance(&instance)
            .map_err(|e| BackendError::io("cannot prepare the cgroup parent", e))?;
        let templates = template::Templates::open(&layout.templates(), config.images.clone())
            .map_err(|e| BackendError::io("cannot build the host template", e))?;
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| BackendError::io("cannot become a child subreaper", e.into()))?;
        let slots = slots::Slots::open(
            Path::new(slots::REGISTRY),
            &instance,
            ID_SLOTS,
            destroy::used_slots(&layout),
        )
        .map_err(|e| BackendError::io("cannot open the host's uid slot registry", e))?;
        let keys = keys::Keys::load(&layout);
        let bounds = host::bounds(layout.data_dir());
        Ok(NativeBackend {
            files: sbx_backend::agent::FileService::new(files::NativeTransport {
                layout: layout.clone(),
            }),
            inner: Arc::new(Inner {
                layout,
                cgroups,
                instance,
                templates,
                slots,
                keys,
                bounds,
                stage1_program: config
                    .stage1_program
                    .unwrap_or_else(|| PathBuf::from("/proc/self/exe")),
                pool: pool::Pool::default(),
                pool_size: config.warm_pool,
                pool_disk_bytes: config.warm_pool_disk_bytes,
                disk_reserve_bytes: config.disk_reserve_bytes,
                disk_overcommit: config.disk_overcommit,
                refill: tokio::sync::Notify::new(),
                stopping: std::sync::atomic::AtomicBool::new(false),
                refill_task: Mutex::new(None),
            }),
        })
    }

    /// The helper for a create: a pooled one with the right disk, else one made now (after
    /// removing what an interrupted earlier attempt with this id left). Returns it with its
    /// busy mark.
    async fn helper_for(
        &self,
        spec: &SandboxSpec,
    ) -> Result<(pool::Helper, pool::Busy<'_>), BackendError> {
        let inner = &self.inner;
        let id = &spec.id;
        let pooled = if inner.keys.has_alias(id) || inner.layout.sandbox(id).exists() {
            // Remains of an earlier attempt: never mixed with a pooled helper.
            None
        } else {
            inner.pool.take(spec.limits.disk_bytes)
        };
        if let Some((helper, busy)) = pooled {
            inner.refill.notify_one();
            if let Err(e) = inner.keys.assign(&inner.layout, id, &helper.key) {
                let key = helper.key.clone();
                helper.abort().await;
                inner.rollback(&key).await;
                return Err(BackendError::io("cannot assign a prepared sandbox", e));
            }
            return Ok((helper, busy));
        }
        let busy = inner.pool.busy(id);
        let cleanup = inner.clone();
        let cleanup_id = id.clone();
        blocking(move || cleanup.destroy_id(&cleanup_id, None)).await?;
        match inner.start_helper(id.clone(), spec.limits.disk_bytes).await {
            Ok(helper) => Ok((helper, busy)),
            Err(e) => {
                inner.rollback(id).await;
                Err(e)
            }
        }
    }
}

impl Inner {
    /// Removes every trace of sandbox `id`, whatever its host key.
    fn destroy_id(
        &self,
        id: &SandboxId,
        handle: Option<&NativeHandle>,
    ) -> Result<(), BackendError> {
        let key = match handle {
            Some(handle) => handle.key()?,
            None => self.keys.key_of(id),
        };
        self.destroy_key(&key, handle)?;
        self.keys.forget(id);
        Ok(())
    }
}

#[async_trait]
impl Backend for NativeBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn isolation(&self) -> &'static str {
        "namespaces"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            stdin: true,
            terminals: true,
            pause: true,
            files: true,
            snapshots: true,
            ports: true,
            adopt: true,
            warm_pool: self.inner.pool_size > 0,
            ..Capabilities::default()
        }
    }

    fn bounds(&self) -> Bounds {
        self.inner.bounds
    }

    /// Starts keeping `warm_pool` helpers ready.
    async fn start(&self) -> Result<(), BackendError> {
        self.sweep_snapshots();
        if self.inner.pool_size == 0 {
            return Ok(());
        }
        let inner = self.inner.clone();
        let task = tokio::spawn(async move { inner.refill_loop().await });
        *self.inner.refill_task.lock().expect("task lock") = Some(task);
        Ok(())
    }

    /// Stops the pool, removes its helpers, and removes the cgroup parents of this instance if
    /// no sandbox is left.
    async fn shutdown(&self) {
        let inner = &self.inner;
        inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        inner.refill.notify_one();
        let task = inner.refill_task.lock().expect("task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        for helper in inner.pool.drain() {
            let key = helper.key.clone();
            helper.abort().await;
            inner.rollback(&key).await;
        }
        inner.cgroups.remove_instance_if_empty(&inner.instance);
    }

    async fn health(&self) -> Health {
        let inner = &self.inner;
        let cgroup_ok = inner
            .cgroups
            .instance_dirs(&inner.instance)
            .iter()
            .all(|d| d.is_dir());
        let template_ok = inner.templates.resolve(template::HOST).is_some();
        Health {
            healthy: cgroup_ok && template_ok,
            detail: format!(
                "cgroup {} {}, host template {}",
                inner.cgroups.version_name(),
                if cgroup_ok { "ready" } else { "missing" },
                if template_ok { "ready" } else { "missing" }
            ),
        }
    }

    async fn has_template(&self, name: &str) -> Result<bool, BackendError> {
        Ok(self.inner.templates.resolve(name).is_some())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Handle, BackendError> {
        let inner = &self.inner;
        let (helper, _busy) = self.helper_for(spec).await?;
        let key = helper.key.clone();
        let slot = helper.slot;
        let prepare = inner.clone();
        let prepare_spec = spec.clone();
        let prepare_key = key.clone();
        let request =
            match blocking(move || prepare.build_request(&prepare_spec, &prepare_key)).await {
                Ok(request) => request,
                Err(e) => {
                    helper.abort().await;
                    inner.rollback_create(&spec.id, &key).await;
                    return Err(e);
                }
            };
        match helper.build(&request).await {
            Ok((pid, start_time)) => Ok(NativeHandle {
                id: spec.id.to_string(),
                key: (key != spec.id).then(|| key.to_string()),
                pid,
                start_time,
                slot,
            }
            .to_handle()),
            Err(e) => {
                inner.rollback_create(&spec.id, &key).await;
                Err(e)
            }
        }
    }

    async fn inspect(&self, handle: &Handle) -> Result<Observed, BackendError> {
        let native = NativeHandle::parse(handle)?;
        let key = native.key()?;
        let inner = self.inner.clone();
        blocking(move || {
            let alive = destroy::is_alive(native.pid, native.start_time);
            let cgroup = inner.cgroup(&key);
            let usage = cgroup.usage();
            Ok(Observed {
                alive,
                main_pid: u32::try_from(native.pid).ok(),
                memory_bytes: usage.memory_bytes,
                cpu_usec: usage.cpu_usec,
                pids: usage.pids,
                frozen: cgroup.frozen().ok(),
            })
        })
        .await
    }

    async fn adopt(&self, handle: &Handle) -> Result<(), BackendError> {
        let native = NativeHandle::parse(handle)?;
        let key = native.key()?;
        if !destroy::is_alive(native.pid, native.start_time) {
            return Err(BackendError::gone());
        }
        // A paused sandbox's init cannot answer (it is frozen): alive is all it can say.
        if !self.inner.cgroup(&key).frozen().unwrap_or(false) {
            let socket = self.inner.layout.socket(&key);
            match tokio::time::timeout(Duration::from_secs(5), client::ping(&socket)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(BackendError::gone()),
            }
        }
        self.inner
            .slots
            .claim(native.slot, &key)
            .map_err(|e| BackendError::io("cannot claim the uid slot of an adopted sandbox", e))?;
        Ok(())
    }

    fn storage(&self) -> Option<Storage> {
        Some(self.inner.storage())
    }

    async fn list_owned(&self) -> Result<Vec<SandboxId>, BackendError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut keys = BTreeSet::new();
            for name in inner.cgroups.list(&inner.instance) {
                keys.extend(SandboxId::parse(&name).ok());
            }
            if let Ok(entries) = fs::read_dir(inner.layout.sandboxes()) {
                for entry in entries.flatten() {
                    keys.extend(SandboxId::parse(&entry.file_name().to_string_lossy()).ok());
                }
            }
            // Pooled helpers and sandboxes being built are this daemon's, not orphans; the
            // others are reported by the sandbox they serve.
            // A key whose owner cannot be read is left alone (and said so): its traces may
            // serve a live sandbox.
            Ok(keys
                .into_iter()
                .filter(|key| !inner.pool.is_busy(key))
                .filter_map(|key| match keys::read_owner(&inner.layout, &key) {
                    Ok(owner) => Some(owner.unwrap_or(key)),
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "cannot read whose sandbox these traces are");
                        None
                    }
                })
                .collect())
        })
        .await
    }

    async fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), BackendError> {
        let native = handle.map(NativeHandle::parse).transpose()?;
        let inner = self.inner.clone();
        let id = id.clone();
        blocking(move || inner.destroy_id(&id, native.as_ref())).await
    }

    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError> {
        let native = NativeHandle::parse(handle)?;
        let command = Command {
            argv: spec.argv,
            env: spec.env,
            cwd: spec.cwd,
            user: spec.user,
            image: build::image_config(&self.inner.layout, &native.key()?),
        };
        let request = command.request(&native.id()?, spec.stdin == StdinMode::Pipe, None);
        client::spawn(&self.inner.layout.socket(&native.key()?), request).await
    }

    async fn wait_exit(&self, handle: &Handle) -> Result<(), BackendError> {
        let native = NativeHandle::parse(handle)?;
        let Some(pidfd) = destroy::open_pidfd(native.pid, native.start_time) else {
            return Ok(());
        };
        // SAFETY: the OwnedFd stays open, and names the same pidfd, for the AsyncFd's lifetime.
        let watched = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| BackendError::io("cannot watch init", e.into()))?;
        // A pidfd polls readable once the process has exited.
        let _ = watched.readable().await;
        destroy::reap(watched.get_ref());
        Ok(())
    }

    fn terminals(&self) -> Option<&dyn Terminals> {
        Some(self)
    }

    fn pause(&self) -> Option<&dyn PauseResume> {
        Some(self)
    }

    fn files(&self) -> Option<&dyn sbx_backend::Files> {
        Some(&self.files)
    }

    fn ports(&self) -> Option<&dyn sbx_backend::Ports> {
        Some(self)
    }

    fn snapshots(&self) -> Option<&dyn sbx_backend::Snapshots> {
        Some(self)
    }
}

/// How long a freeze may take before it is undone (a process stuck in the kernel, say).
const FREEZE_DEADLINE: Duration = Duration::from_secs(5);

/// A failed freeze: one that did not finish in time is a timeout (the sandbox runs on, thawed).
fn freeze_failed(key: &dyn std::fmt::Display, error: std::io::Error) -> BackendError {
    if error.kind() == std::io::ErrorKind::TimedOut {
        return BackendError::Timeout {
            operation: "freezing the sandbox",
            after: FREEZE_DEADLINE,
        };
    }
    BackendError::io(format!("cannot freeze sandbox {key}"), error)
}

/// The cgroup freezer: every process of the sandbox stops where it is, and uses no CPU, until
/// thawed.
#[async_trait]
impl PauseResume for NativeBackend {
    async fn pause(&self, handle: &Handle) -> Result<(), BackendError> {
        let (key, cgroup) = self.live_cgroup(handle)?;
        blocking(move || {
            cgroup
                .freeze(FREEZE_DEADLINE)
                .map_err(|e| freeze_failed(&key, e))
        })
        .await
    }

    async fn resume(&self, handle: &Handle) -> Result<(), BackendError> {
        let (key, cgroup) = self.live_cgroup(handle)?;
        blocking(move || {
            cgroup
                .thaw()
                .map_err(|e| BackendError::io(format!("cannot thaw sandbox {key}"), e))
        })
        .await
    }
}

impl NativeBackend {
    /// The cgroup of a sandbox whose init still runs.
    fn live_cgroup(
        &self,
        handle: &Handle,
    ) -> Result<(SandboxId, cgroup::SandboxCgroup), BackendError> {
        let native = NativeHandle::parse(handle)?;
        if !destroy::is_alive(native.pid, native.start_time) {
            return Err(BackendError::gone());
        }
        let key = native.key()?;
        Ok((key.clone(), self.inner.cgroup(&key)))
    }
}

#[async_trait]
impl Terminals for NativeBackend {
    async fn open_terminal(
        &self,
        handle: &Handle,
        spec: TerminalSpec,
    ) -> Result<ExecSession, BackendError> {
        let native = NativeHandle::parse(handle)?;
        let command = Command {
            argv: spec.argv,
            env: spec.env,
            cwd: spec.cwd,
            user: spec.user,
            image: build::image_config(&self.inner.layout, &native.key()?),
        };
        let size = wire::TtySize {
            rows: spec.size.rows,
            cols: spec.size.cols,
        };
        let request = command.request(&native.id()?, false, Some(size));
        client::spawn(&self.inner.layout.socket(&native.key()?), request).await
    }
}

/// What a command and a terminal have in common.
struct Command {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    user: User,
    /// The image's defaults, for a sandbox made from an image template.
    image: Option<sbx_backend::ImageConfig>,
}

impl Command {
    /// The spawn request for init: the sandbox's environment under the command's own.
    fn request(
        self,
        id: &SandboxId,
        stdin_pipe: bool,
        tty: Option<wire::TtySize>,
    ) -> wire::SpawnRequest {
        let (home, user) = match self.user.uid {
            0 => ("/root".to_owned(), "root".to_owned()),
            1000 => ("/home/user".to_owned(), "user".to_owned()),
            uid => ("/".to_owned(), uid.to_string()),
        };
        let mut env: Vec<(String, String)> = vec![
            ("TERM".into(), "xterm-256color".into()),
            ("PATH".into(), init::DEFAULT_PATH.into()),
            ("HOME".into(), home.clone()),
            ("USER".into(), user.clone()),
            ("LOGNAME".into(), user),
            ("SHELL".into(), "/bin/bash".into()),
            ("TMPDIR".into(), "/tmp".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("HOSTNAME".into(), id.to_string()),
        ];
        if tty.is_none() {
            env.retain(|(key, _)| key != "TERM");
        }
        let image = self.image.unwrap_or_default();
        let image_env = image.env.iter().filter_map(|entry| {
            entry
                .split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        });
        for (key, value) in image_env.chain(self.env) {
            match env.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => env.push((key, value)),
            }
        }
        wire::SpawnRequest {
            version: wire::PROTOCOL_VERSION,
            argv: self.argv,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: self.cwd.or(image.working_dir).unwrap_or(home),
            uid: self.user.uid,
            gid: self.user.gid,
            stdin_pipe,
            tty,
        }
    }
}

/// Ports through the sandbox's own network namespace, joined by a thread of the daemon
/// (`sbx_backend::ports`): the sandbox keeps its loopback-only network.
#[async_trait]
impl sbx_backend::Ports for NativeBackend {
    async fn connect(
        &self,
        handle: &Handle,
        port: u16,
    ) -> Result<Box<dyn sbx_backend::Duplex>, BackendError> {
        let native = NativeHandle::parse(handle)?;
        let stream =
            sbx_backend::ports::connect_stream(native.pid, native.start_time, port).await?;
        Ok(Box::new(stream))
    }

    async fn listening(&self, handle: &Handle) -> Result<Vec<u16>, BackendError> {
        let native = NativeHandle::parse(handle)?;
        sbx_backend::ports::listening_ports(native.pid, native.start_time).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackendError::other_from("backend task failed", e))?
}
