//! The native backend: sandboxes built from Linux namespaces, cgroups, seccomp and an overlay
//! root, with nothing to install. Needs root on the host.
//!
//! Owns: every host resource of a native sandbox — its init process, cgroups, directories and
//! control socket — from creation to removal.
//! Must never: import store, lifecycle or api; keep bookkeeping that the host or the
//! [`Handle`] cannot give back after a restart.
//!
//! A sandbox is a long-lived init (pid 1 of its namespaces, see [`init`]) built by a short
//! stage-1 helper process (see [`stage1`]). Execs reach init over a Unix socket (see [`wire`],
//! [`client`]). Every host trace carries the sandbox id: `<data>/sandboxes/<id>/`,
//! `<cgroup>/sbx/<instance>/<id>`, and init's argv. Mounts live only in the sandbox's own mount
//! namespace and vanish with it.

mod caps;
mod cgroup;
mod child;
mod client;
mod disk;
mod helper;
mod init;
mod layout;
mod seccomp;
mod slots;
mod stage1;
mod template;
mod wire;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rustix::process::{Pid as RPid, PidfdFlags, Signal as RSignal, WaitIdOptions};
use sbx_backend::{
    Backend, BackendError, ExecSession, ExecSpec, Handle, Health, Limits, Observed, SandboxId,
    SandboxSpec, StdinMode, Storage,
};
use serde::{Deserialize, Serialize};

pub use stage1::run_if_requested;

/// First host uid/gid of sandbox ranges: above systemd's container range (0x00080000–
/// 0x6FFFFFFF) so a sandbox never shares ids with host users or other container managers.
const ID_BASE: u32 = 0x7000_0000;
/// Number of 65536-id ranges above [`ID_BASE`], hence of sandboxes alive at once.
const ID_SLOTS: u32 = (u32::MAX - ID_BASE) / stage1::ID_RANGE - 1;
const KIND: &str = "native";
/// How long destroy waits for processes to die and cgroups to empty.
const KILL_DEADLINE: Duration = Duration::from_secs(10);
/// `/dev/shm` size at most (Docker's default).
const SHM_BYTES: u64 = 64 << 20;
/// One TCP socket's buffer at most, each way (the kernel's default `tcp_wmem` maximum).
const SOCKET_BUFFER_BYTES: u64 = 4 << 20;

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
}

/// What the native backend stores in a [`Handle`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NativeHandle {
    id: String,
    /// Host pid of init.
    pid: i32,
    /// Init's start time (clock ticks since boot), which pins `pid` to one process.
    start_time: u64,
    /// Which 65536-id range the sandbox's users map to.
    slot: u32,
}

pub struct NativeBackend {
    inner: Arc<Inner>,
}

struct Inner {
    layout: layout::Layout,
    cgroups: cgroup::Driver,
    instance: String,
    templates: template::Templates,
    slots: slots::Slots,
    pool: helper::Pool,
    pool_size: usize,
    pool_disk_bytes: u64,
    disk_reserve_bytes: u64,
    disk_overcommit: f64,
    /// Wakes the pool's refill task (a helper was taken, or it is time to stop).
    refill: tokio::sync::Notify,
    stopping: std::sync::atomic::AtomicBool,
    refill_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Ids whose host resources are being made right now (a create, a pool refill): they are
    /// not orphans, whatever `list_owned` finds of them.
    building: Mutex<BTreeSet<SandboxId>>,
}

/// Marks an id as being built for as long as it lives.
struct Building<'a> {
    set: &'a Mutex<BTreeSet<SandboxId>>,
    id: SandboxId,
}

impl<'a> Building<'a> {
    fn start(set: &'a Mutex<BTreeSet<SandboxId>>, id: &SandboxId) -> Building<'a> {
        set.lock()
            .expect("building lock is never poisoned")
            .insert(id.clone());
        Building {
            set,
            id: id.clone(),
        }
    }
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .expect("building lock is never poisoned")
            .remove(&self.id);
    }
}

impl NativeBackend {
    /// Prepares the host: directories, cgroup parents, the `host` template. Makes the calling
    /// process a child subreaper so that orphaned sandbox inits are re-parented to it.
    pub fn new(config: NativeConfig) -> Result<NativeBackend, BackendError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(BackendError::Unavailable(
                "the native backend needs root (user namespaces with mapped id ranges, cgroups)"
                    .into(),
            ));
        }
        raise_host_file_max();
        let layout = layout::Layout::new(&config.data_dir).map_err(BackendError::Unavailable)?;
        for dir in [layout.data_dir().to_owned(), layout.sandboxes()] {
            fs::create_dir_all(&dir)
                .map_err(|e| BackendError::io(format!("cannot create {}", dir.display()), e))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| BackendError::io(format!("cannot chmod {}", dir.display()), e))?;
        }
        let instance = instance_id(&layout.instance_file())
            .map_err(|e| BackendError::io("cannot read or create the instance id", e))?;
        let cgroups = cgroup::Driver::detect().map_err(BackendError::Unavailable)?;
        cgroups
            .prepare_instance(&instance)
            .map_err(|e| BackendError::io("cannot prepare the cgroup parent", e))?;
        let templates = template::Templates::open(&layout.templates())
            .map_err(|e| BackendError::io("cannot build the host template", e))?;
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| BackendError::io("cannot become a child subreaper", e.into()))?;
        let slots = slots::Slots::open(
            Path::new(slots::REGISTRY),
            &instance,
            ID_SLOTS,
            used_slots(&layout),
        )
        .map_err(|e| BackendError::io("cannot open the host's uid slot registry", e))?;
        Ok(NativeBackend {
            inner: Arc::new(Inner {
                layout,
                cgroups,
                instance,
                templates,
                slots,
                pool: helper::Pool::default(),
                pool_size: config.warm_pool,
                pool_disk_bytes: config.warm_pool_disk_bytes,
                disk_reserve_bytes: config.disk_reserve_bytes,
                disk_overcommit: config.disk_overcommit,
                refill: tokio::sync::Notify::new(),
                stopping: std::sync::atomic::AtomicBool::new(false),
                refill_task: Mutex::new(None),
                building: Mutex::new(BTreeSet::new()),
            }),
        })
    }

    /// Starts keeping `warm_pool` helpers ready. Call after reconciliation, which would
    /// otherwise take them for orphans of an earlier daemon.
    pub fn start_warm_pool(&self) {
        if self.inner.pool_size == 0 {
            return;
        }
        let inner = self.inner.clone();
        let task = tokio::spawn(async move { inner.refill_loop().await });
        *self.inner.refill_task.lock().expect("task lock") = Some(task);
    }

    /// Stops the pool, removes its helpers, and removes the cgroup parents of this instance if
    /// no sandbox is left (daemon shutdown).
    pub async fn shutdown(&self) {
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
            let id = helper.id.clone();
            helper.abort().await;
            inner.rollback(&id).await;
        }
        inner.cgroups.remove_instance_if_empty(&inner.instance);
    }

    /// `v1` or `v2`.
    pub fn cgroup_version(&self) -> &'static str {
        self.inner.cgroups.version_name()
    }
}

#[async_trait]
impl Backend for NativeBackend {
    fn kind(&self) -> &'static str {
        KIND
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

    fn has_template(&self, name: &str) -> bool {
        self.inner.templates.resolve(name).is_some()
    }

    fn reserve_id(&self, limits: &Limits) -> SandboxId {
        // Pooled sandboxes have a disk of the pool's size; another size is built to order.
        if limits.disk_bytes != self.inner.pool_disk_bytes {
            return SandboxId::generate();
        }
        match self.inner.pool.reserve() {
            Some(id) => {
                self.inner.refill.notify_one();
                id
            }
            None => SandboxId::generate(),
        }
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Handle, BackendError> {
        let inner = &self.inner;
        let id = spec.id.clone();
        let _building = Building::start(&inner.building, &id);
        let helper = match inner
            .pool
            .take(&id)
            .filter(|h| h.disk_bytes == spec.limits.disk_bytes)
        {
            Some(helper) => helper,
            None => {
                // Remains of an interrupted earlier attempt with this id go first.
                let cleanup = inner.clone();
                let cleanup_id = id.clone();
                blocking(move || cleanup.destroy(&cleanup_id, None)).await?;
                match inner.start_helper(id.clone(), spec.limits.disk_bytes).await {
                    Ok(helper) => helper,
                    Err(e) => {
                        inner.rollback(&id).await;
                        return Err(e);
                    }
                }
            }
        };
        let slot = helper.slot;
        let prepare = inner.clone();
        let prepare_spec = spec.clone();
        let request = match blocking(move || prepare.build_request(&prepare_spec)).await {
            Ok(request) => request,
            Err(e) => {
                helper.abort().await;
                inner.rollback(&id).await;
                return Err(e);
            }
        };
        match helper.build(&request).await {
            Ok((pid, start_time)) => {
                let handle = NativeHandle {
                    id: id.to_string(),
                    pid,
                    start_time,
                    slot,
                };
                Ok(Handle {
                    backend: KIND.into(),
                    data: serde_json::to_value(handle).expect("plain struct serialises"),
                })
            }
            Err(e) => {
                inner.rollback(&id).await;
                Err(e)
            }
        }
    }

    async fn inspect(&self, handle: &Handle) -> Result<Observed, BackendError> {
        let native = parse_handle(handle)?;
        let id = SandboxId::parse(&native.id).map_err(|e| BackendError::Other(e.to_string()))?;
        let inner = self.inner.clone();
        blocking(move || {
            let alive = is_alive(native.pid, native.start_time);
            let usage = inner.cgroup(&id).usage();
            Ok(Observed {
                alive,
                memory_bytes: usage.memory_bytes,
                cpu_usec: usage.cpu_usec,
                pids: usage.pids,
            })
        })
        .await
    }

    async fn adopt(&self, handle: &Handle) -> Result<(), BackendError> {
        let native = parse_handle(handle)?;
        let id = SandboxId::parse(&native.id).map_err(|e| BackendError::Other(e.to_string()))?;
        if !is_alive(native.pid, native.start_time) {
            return Err(BackendError::NotRunning);
        }
        let socket = self.inner.layout.socket(&id);
        match tokio::time::timeout(Duration::from_secs(5), client::ping(&socket)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(BackendError::NotRunning),
        }
        self.inner
            .slots
            .claim(native.slot, &id)
            .map_err(|e| BackendError::io("cannot claim the uid slot of an adopted sandbox", e))?;
        Ok(())
    }

    fn storage(&self) -> Option<Storage> {
        Some(self.inner.storage())
    }

    fn capabilities(&self) -> Vec<&'static str> {
        vec![
            "exec",
            "exec-stream",
            "stdin",
            "timeout",
            "adopt",
            "warm-pool",
        ]
    }

    async fn list_owned(&self) -> Result<Vec<SandboxId>, BackendError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut ids = BTreeSet::new();
            for name in inner.cgroups.list(&inner.instance) {
                ids.extend(SandboxId::parse(&name).ok());
            }
            if let Ok(entries) = fs::read_dir(inner.layout.sandboxes()) {
                for entry in entries.flatten() {
                    ids.extend(SandboxId::parse(&entry.file_name().to_string_lossy()).ok());
                }
            }
            // Pooled helpers and sandboxes being built are this daemon's, not orphans.
            let building = inner
                .building
                .lock()
                .expect("building lock is never poisoned")
                .clone();
            Ok(ids
                .into_iter()
                .filter(|id| !inner.pool.contains(id) && !building.contains(id))
                .collect())
        })
        .await
    }

    async fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), BackendError> {
        let native = handle.map(parse_handle).transpose()?;
        let inner = self.inner.clone();
        let id = id.clone();
        blocking(move || inner.destroy(&id, native.as_ref())).await
    }

    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError> {
        let native = parse_handle(handle)?;
        let id = SandboxId::parse(&native.id).map_err(|e| BackendError::Other(e.to_string()))?;
        let (home, user) = match spec.user.uid {
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
        if spec.tty.is_none() {
            env.retain(|(key, _)| key != "TERM");
        }
        for (key, value) in spec.env {
            match env.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => env.push((key, value)),
            }
        }
        let request = wire::SpawnRequest {
            version: wire::PROTOCOL_VERSION,
            argv: spec.argv,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: spec.cwd.unwrap_or(home),
            uid: spec.user.uid,
            gid: spec.user.gid,
            stdin_pipe: spec.stdin == StdinMode::Pipe,
            tty: spec.tty.map(|size| wire::TtySize {
                rows: size.rows,
                cols: size.cols,
            }),
        };
        client::spawn(&self.inner.layout.socket(&id), request).await
    }

    async fn wait_exit(&self, handle: &Handle) -> Result<(), BackendError> {
        let native = parse_handle(handle)?;
        let Some(pidfd) = open_pidfd(native.pid, native.start_time) else {
            return Ok(());
        };
        // SAFETY: the OwnedFd stays open, and names the same pidfd, for the AsyncFd's lifetime.
        let watched = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| BackendError::io("cannot watch init", e.into()))?;
        // A pidfd polls readable once the process has exited.
        let _ = watched.readable().await;
        reap(watched.get_ref());
        Ok(())
    }
}

impl Inner {
    fn cgroup(&self, id: &SandboxId) -> cgroup::SandboxCgroup {
        self.cgroups.sandbox(&self.instance, id.as_str())
    }

    /// A uid range for `id`, free host-wide (see [`slots`]).
    fn allocate_slot(&self, id: &SandboxId) -> Result<u32, BackendError> {
        self.slots.allocate(id, |instance, sandbox| {
            // Another instance's sandbox is alive while its cgroup exists.
            let plausible = instance.len() == 12
                && instance.bytes().all(|b| b.is_ascii_hexdigit())
                && SandboxId::parse(sandbox).is_ok();
            plausible && self.cgroups.sandbox(instance, sandbox).exists()
        })
    }

    fn free_slot(&self, slot: u32, id: &SandboxId) {
        self.slots.free(slot, id);
    }

    /// Everything of a sandbox that can be made before its request: a uid range, the
    /// directories, its disk of `disk_bytes` (attached), the cgroup, and a stage-1 helper that
    /// has joined it. On error the caller rolls back by id.
    async fn start_helper(
        self: &Arc<Self>,
        id: SandboxId,
        disk_bytes: u64,
    ) -> Result<helper::Helper, BackendError> {
        let slot = self.allocate_slot(&id)?;
        let prepare = self.clone();
        let prepare_id = id.clone();
        let prepared = blocking(move || prepare.prepare_host(&prepare_id, slot, disk_bytes)).await;
        let (procs, disk) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                self.free_slot(slot, &id);
                return Err(e);
            }
        };
        let join = stage1::Join {
            cgroup_procs: procs,
            disk_device: disk.device.clone(),
            disk_mount: self.layout.disk_mount(&id),
            id_base: ID_BASE + slot * stage1::ID_RANGE,
            hostname: id.to_string(),
        };
        helper::Helper::start(id, slot, disk_bytes, disk, join).await
    }

    /// Directories, disk and cgroup of `id`; returns the `cgroup.procs` files to join and the
    /// attached disk.
    fn prepare_host(
        &self,
        id: &SandboxId,
        slot: u32,
        disk_bytes: u64,
    ) -> Result<(Vec<PathBuf>, disk::Disk), BackendError> {
        let layout = &self.layout;
        let io = |what: &str, e: io::Error| BackendError::io(format!("{what} for sandbox {id}"), e);
        fs::create_dir(layout.sandbox(id)).map_err(|e| io("cannot create the directory", e))?;
        // Searchable by others: the sandbox's init, whose host ids are the sandbox's, climbs
        // from its root to here and back before `pivot_root` (stage1::sandbox_setup). Nothing
        // else reaches it: the sandboxes directory above stays 0700.
        fs::set_permissions(layout.sandbox(id), fs::Permissions::from_mode(0o711))
            .map_err(|e| io("cannot chmod the directory", e))?;
        fs::write(layout.slot_file(id), slot.to_string())
            .map_err(|e| io("cannot record the uid range", e))?;
        for dir in [layout.disk_mount(id), layout.rootfs(id)] {
            fs::create_dir(&dir).map_err(|e| io("cannot create a directory", e))?;
        }
        disk::create(&layout.disk_image(id), disk_bytes)
            .map_err(|e| io("cannot make the disk", e))?;
        let disk =
            disk::attach(&layout.disk_image(id)).map_err(|e| io("cannot attach the disk", e))?;
        let cgroup = self.cgroup(id);
        cgroup
            .make()
            .map_err(|e| io("cannot create the cgroup", e))?;
        Ok((cgroup.procs_files(), disk))
    }

    /// What depends on the request: its limits (written now) and the build request.
    fn build_request(&self, spec: &SandboxSpec) -> Result<stage1::Request, BackendError> {
        let id = &spec.id;
        let template = self
            .templates
            .resolve(&spec.template)
            .ok_or_else(|| BackendError::TemplateNotFound(spec.template.clone()))?;
        self.cgroup(id)
            .set_limits(&spec.limits)
            .map_err(|e| BackendError::io(format!("cannot set the limits of sandbox {id}"), e))?;
        let layout = &self.layout;
        Ok(stage1::Request {
            rootfs: layout.rootfs(id),
            lower: template.lower,
            binds: template.binds,
            socket: layout.socket(id),
            // tmpfs pages count against the memory limit and cannot be reclaimed by killing a
            // process: were they allowed to fill it, the OOM killer would end every process,
            // init included. Bounded to half the limit together, a full /tmp is ENOSPC instead.
            tmp_bytes: spec.limits.memory_bytes * 2 / 5,
            shm_bytes: SHM_BYTES.min(spec.limits.memory_bytes / 10),
            socket_buffer_bytes: (spec.limits.memory_bytes / 16).min(SOCKET_BUFFER_BYTES),
        })
    }

    /// The data directory's file system, and what every sandbox disk on it (pooled, being
    /// built, live) may still grow by: each image's size less the blocks it has.
    // The casts are no-ops on 64-bit targets only (`fsblkcnt_t`, `c_ulong`).
    #[allow(clippy::unnecessary_cast)]
    fn storage(&self) -> Storage {
        use std::os::unix::fs::MetadataExt as _;
        let (total_bytes, free_bytes) = nix::sys::statvfs::statvfs(&self.layout.sandboxes())
            .map(|s| {
                let unit = s.fragment_size() as u64;
                (s.blocks() as u64 * unit, s.blocks_available() as u64 * unit)
            })
            .unwrap_or((0, 0));
        let mut promised_bytes = 0u64;
        if let Ok(entries) = fs::read_dir(self.layout.sandboxes()) {
            for entry in entries.flatten() {
                if let Ok(meta) = fs::metadata(entry.path().join(layout::DISK_IMAGE)) {
                    promised_bytes += meta.size().saturating_sub(meta.blocks() * 512);
                }
            }
        }
        Storage {
            total_bytes,
            free_bytes,
            promised_bytes,
        }
    }

    /// Whether a disk of `bytes` more fits beside the reserve.
    fn disk_has_room(&self, bytes: u64) -> bool {
        let storage = self.storage();
        let room = storage.free_bytes.saturating_sub(self.disk_reserve_bytes) as f64
            * self.disk_overcommit;
        (storage.promised_bytes + bytes) as f64 <= room
    }

    /// Keeps `pool_size` helpers ready until shutdown. A failure backs off instead of spinning;
    /// so does a disk without room for another pooled disk.
    async fn refill_loop(self: Arc<Self>) {
        use std::sync::atomic::Ordering;
        while !self.stopping.load(Ordering::SeqCst) {
            if self.pool.ready_len() < self.pool_size {
                let room = {
                    let inner = self.clone();
                    blocking(move || Ok(inner.disk_has_room(inner.pool_disk_bytes)))
                        .await
                        .unwrap_or(false)
                };
                if !room {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = self.refill.notified() => {}
                    }
                    continue;
                }
                let id = SandboxId::generate();
                let _building = Building::start(&self.building, &id);
                match self.start_helper(id.clone(), self.pool_disk_bytes).await {
                    Ok(helper) if !self.stopping.load(Ordering::SeqCst) => self.pool.add(helper),
                    Ok(helper) => {
                        helper.abort().await;
                        self.rollback(&id).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prepare a sandbox ahead of time");
                        self.rollback(&id).await;
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = self.refill.notified() => {}
                        }
                    }
                }
                continue;
            }
            self.refill.notified().await;
        }
    }

    async fn rollback(self: &Arc<Self>, id: &SandboxId) {
        let inner = self.clone();
        let id = id.clone();
        if let Err(e) = blocking(move || inner.destroy(&id, None)).await {
            tracing::error!(error = %e, "rollback of a failed create left traces");
        }
    }

    /// Removes every trace of `id`; works without a handle (then init is found in the cgroup).
    fn destroy(&self, id: &SandboxId, handle: Option<&NativeHandle>) -> Result<(), BackendError> {
        let cgroup = self.cgroup(id);
        let mut inits: Vec<OwnedFd> = Vec::new();
        if let Some(handle) = handle {
            inits.extend(open_pidfd(handle.pid, handle.start_time));
        }
        // Any other pid-namespace init in the cgroup (a create that crashed before recording
        // its handle) is also ours to reap once killed.
        for pid in cgroup.pids() {
            if is_namespace_init(pid) {
                inits.extend(rustix_pidfd(pid));
            }
        }
        for pidfd in &inits {
            // SIGKILL to a pid-namespace init kills every process of the namespace.
            let _ = rustix::process::pidfd_send_signal(pidfd, RSignal::KILL);
        }
        for pidfd in &inits {
            wait_readable(pidfd, KILL_DEADLINE);
            reap(pidfd);
        }

        cgroup
            .kill_all(KILL_DEADLINE)
            .map_err(|e| BackendError::io(format!("cannot empty the cgroup of {id}"), e))?;
        cgroup
            .remove(KILL_DEADLINE)
            .map_err(|e| BackendError::io(format!("cannot remove the cgroup of {id}"), e))?;
        let dir = self.layout.sandbox(id);
        let slot = handle
            .map(|h| h.slot)
            .or_else(|| read_slot(&self.layout.slot_file(id)));
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::io(
                    format!("cannot remove {}", dir.display()),
                    e,
                ))
            }
        }
        if let Some(slot) = slot {
            self.free_slot(slot, id);
        }
        Ok(())
    }
}

/// Makes memory, not the host's file table, the limit on a sandbox's open files: raises
/// `fs.file-max` to the kernel's maximum, as systemd does at boot (`bump_file_max_and_nr_open`,
/// since v240) on most hosts already.
///
/// A sandbox's descriptors are capped per process (`RLIMIT_NOFILE`) and their kernel memory is
/// charged to its memory cgroup, but nothing caps their number per sandbox, and the kernel's
/// default table (about one entry per 10 KiB of RAM) fills long before that memory runs out: a
/// 512 MiB sandbox held 2.27 M descriptors of a 2.47 M table on a 23 GiB host, and two filled
/// it, after which every unprivileged host process failed with ENFILE (root is exempt, so the
/// daemon would not notice). Test: `escape::descriptor_floods_are_bounded_and_the_host_file_table_keeps_room`.
fn raise_host_file_max() {
    const FILE_MAX: &str = "/proc/sys/fs/file-max";
    let maximum = i64::MAX as u64;
    let current = fs::read_to_string(FILE_MAX)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    if current.is_some_and(|value| value >= maximum) {
        return;
    }
    match fs::write(FILE_MAX, maximum.to_string()) {
        Ok(()) => tracing::info!(
            previous = ?current,
            "raised fs.file-max to the kernel's maximum: sandboxes' descriptors are bounded by their memory cgroups"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            current = ?current,
            "cannot raise fs.file-max: a sandbox with enough memory can exhaust the host's file table"
        ),
    }
}

/// Which id range a sandbox was given (`<sandbox>/slot`).
fn read_slot(file: &Path) -> Option<u32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The uid ranges of the sandboxes this data directory has on the host.
fn used_slots(layout: &layout::Layout) -> std::collections::BTreeMap<u32, SandboxId> {
    let Ok(entries) = fs::read_dir(layout.sandboxes()) else {
        return Default::default();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let id = SandboxId::parse(&entry.file_name().to_string_lossy()).ok()?;
            Some((read_slot(&entry.path().join("slot"))?, id))
        })
        .collect()
}

/// Reads this data directory's instance id, creating it on first use.
fn instance_id(path: &Path) -> io::Result<String> {
    if let Ok(text) = fs::read_to_string(path) {
        let text = text.trim();
        if text.len() == 12 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(text.to_owned());
        }
    }
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    fs::write(path, &id)?;
    Ok(id)
}

fn parse_handle(handle: &Handle) -> Result<NativeHandle, BackendError> {
    if handle.backend != KIND {
        return Err(BackendError::Other(format!(
            "handle of backend {:?} given to the native backend",
            handle.backend
        )));
    }
    serde_json::from_value(handle.data.clone())
        .map_err(|e| BackendError::Other(format!("malformed native handle: {e}")))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackendError::Other(format!("backend task failed: {e}")))?
}

/// A pidfd for `pid` if it still is the process that started at `start_time`.
fn open_pidfd(pid: i32, start_time: u64) -> Option<OwnedFd> {
    let pidfd = rustix_pidfd(pid)?;
    // Checked after opening: from here on the pidfd pins the process, whatever the pid does.
    (stage1::start_time(pid) == Some(start_time)).then_some(pidfd)
}

fn rustix_pidfd(pid: i32) -> Option<OwnedFd> {
    let pid = RPid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()
}

fn is_alive(pid: i32, start_time: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next());
    state != Some('Z') && stage1::start_time(pid) == Some(start_time)
}

/// Whether `pid` is pid 1 of a pid namespace below ours (`NSpid: <host pid> 1`).
fn is_namespace_init(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|ids| {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                ids.len() >= 2 && ids.last() == Some(&"1")
            })
    })
}

fn wait_readable(pidfd: &OwnedFd, deadline: Duration) {
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let timeout = nix::poll::PollTimeout::try_from(deadline).unwrap_or(nix::poll::PollTimeout::MAX);
    let _ = nix::poll::poll(&mut fds, timeout);
}

/// Collects the exit status if the process is our child (init is, through the subreaper);
/// otherwise its real parent does.
fn reap(pidfd: &OwnedFd) {
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    );
}
