//! The OCI backend: each sandbox is a container of an OCI runtime binary — gVisor's `runsc`,
//! whose user-space kernel stands between the sandbox and the host's — made from a bundle sbx
//! writes (`bundle.rs`), its commands started through the runtime's `exec` (`exec.rs`).
//!
//! Owns, per sandbox: the runtime's container (named by the sandbox's *key*, under this
//! instance's runtime root `<data>/oci/state`), its bundle `<data>/oci/bundles/<key>/` (and,
//! for a template from an image, the read-only overlay mounted at its `rootfs/`), and its
//! cgroup `sbx-oci/<instance>/<key>` (made and removed by the runtime). The key is the
//! sandbox's id, or for a container the warm pool started ahead of time (`pool.rs`) the pool's
//! own id, which the handle carries and `<bundle>/sandbox-id` maps back.
//! Must never: give a sandbox a network (`--network=none`), a writable host path, or a
//! command without a deadline on the runtime call that starts it.
//!
//! The sandbox's writes stay in the gVisor sentry's memory (`--overlay2=root:memory`), inside
//! its memory limit: no host disk is written. Not offered yet: terminals, files, snapshots,
//! ports (their capability says so).

mod bundle;
mod cgroups;
mod exec;
mod pool;
mod runtime;
mod shim;

/// The system calls the OCI filter of `crun`/`runc` sandboxes allows without argument checks.
#[doc(hidden)]
pub use bundle::SECCOMP_ALLOWED;
pub use shim::run_if_requested;

use sbx_backend::agent::exec::{Exec, ExecTransport, HostAgent};
use sbx_backend::agent::FileService;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sbx_backend::{
    Backend, BackendError, Bounds, Capabilities, ExecSession, ExecSpec, Handle, Health,
    Hibernation, ImageConfig, Limits, Observed, PauseResume, SandboxId, SandboxSpec, StdinMode,
    TerminalSpec, Terminals,
};
use sbx_images::ImageStore;

use crate::bundle::Root;
use crate::runtime::{Flavor, Runtime};

/// The mount points of namespaces runtimes' sandbox roots.
const ROOTS: &str = "/run/sbx/roots";

/// Settings of the OCI backend.
#[derive(Debug, Clone)]
pub struct OciConfig {
    /// The backend's name (`oci`, `crun`, `runc`): its handles and profiles say it, and its
    /// state lives in `<data>/<kind>/`.
    pub kind: &'static str,
    /// The daemon's data directory: the backend uses `<kind>/` and the shared
    /// `templates/host`.
    pub data_dir: PathBuf,
    /// The runtime binary: `runsc` (gVisor), `crun` or `runc` (the host's kernel behind a user
    /// namespace of the sandbox's own and a seccomp filter).
    pub runtime: PathBuf,
    /// gVisor's platform: `ptrace` works everywhere; `systrap` (newer runsc) and `kvm` are
    /// faster where they work.
    pub platform: String,
    /// `crun`, `runc`: remount the host's cgroup v2 with `favordynmods`
    /// ([`cgroups::favor_moves`]).
    pub favor_cgroup_moves: bool,
    pub images: Option<Arc<ImageStore>>,
    /// The program that is the shim when run with its argument (`shim.rs`); this binary when
    /// `None`.
    pub shim_program: Option<PathBuf>,
    /// Containers to keep started ahead of time, per shape (the default resources of a
    /// profile on the host template): see `pool.rs`.
    pub warm: Vec<(Limits, usize)>,
}

pub struct OciBackend {
    inner: Arc<Inner>,
    /// Files through the file agent (`sbx_backend::agent`), when it can run here.
    files: Option<FileService<ExecTransport>>,
    /// The task that reaps orphans of commands (namespaces runtimes).
    reaper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The task that keeps the warm pool full.
    filler: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How long after a create took a warm container the refill waits (each take starts it
/// again): starting a container costs CPU the new sandbox's first commands want.
const REFILL_PAUSE: Duration = Duration::from_millis(250);

/// Keeps the warm pool full, one container at a time, until it closes; after a failure,
/// tries again 5 s later.
async fn keep_warm(inner: Arc<Inner>) {
    loop {
        let Some(limits) = inner.pool.wanted() else {
            if inner.pool.is_closed() {
                return;
            }
            inner.pool.wake.notified().await;
            continue;
        };
        if let Some(wait) = inner.pool.until_quiet(REFILL_PAUSE) {
            tokio::time::sleep(wait).await;
            continue;
        }
        if let Err(e) = inner.warm_one(limits).await {
            tracing::warn!(kind = inner.kind, error = %e.chain(), "cannot start a warm container");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = inner.pool.wake.notified() => {}
            }
        }
    }
}

/// Reaps orphans of sandboxes at each `SIGCHLD`, and every second in case one was missed.
async fn reap_orphans() {
    let mut children = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    loop {
        let tick = tokio::time::sleep(std::time::Duration::from_secs(1));
        match &mut children {
            Some(children) => {
                tokio::select! {
                    _ = children.recv() => {}
                    () = tick => {}
                }
            }
            None => tick.await,
        }
        let _ = tokio::task::spawn_blocking(sbx_backend::reap::orphans).await;
    }
}

struct Inner {
    kind: &'static str,
    runtime: Runtime,
    /// Host uid ranges, for a namespaces runtime (`None` for gVisor).
    slots: Option<sbx_backend::slots::Slots>,
    version: String,
    bundles: PathBuf,
    skeleton: PathBuf,
    host_root: PathBuf,
    host_binds: Vec<sbx_images::host::Bind>,
    images: Option<Arc<ImageStore>>,
    instance: String,
    serial: AtomicU64,
    bounds: Bounds,
    /// A static busybox whose `sleep` is every sandbox's init.
    init: Option<PathBuf>,
    /// The file agent's program and libraries, bound into every sandbox.
    agent: Option<HostAgent>,
    pool: pool::Pool,
    /// The key of each sandbox whose container the pool started (its `sandbox-id`).
    keys: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

#[async_trait]
impl Exec for Inner {
    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError> {
        let command = self.command(
            handle,
            spec.argv,
            spec.env,
            spec.cwd,
            spec.user,
            spec.stdin == StdinMode::Pipe,
        )?;
        exec::start(&self.runtime, command).await
    }
}

impl OciBackend {
    pub fn new(config: OciConfig) -> Result<OciBackend, BackendError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(BackendError::unavailable("the oci backend needs root"));
        }
        let base = config.data_dir.join(config.kind);
        let state = base.join("state");
        let bundles = base.join("bundles");
        let skeleton = base.join("skeleton");
        for dir in [&base, &state, &bundles] {
            fs::create_dir_all(dir)
                .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
                .map_err(|e| BackendError::io(format!("cannot make {}", dir.display()), e))?;
        }
        bundle::ensure_skeleton(&skeleton)
            .map_err(|e| BackendError::io("cannot make the mount points' directory", e))?;
        let (host_root, host_binds) = sbx_images::host::ensure(&config.data_dir.join("templates"))
            .map_err(|e| BackendError::io("cannot build the host template", e))?;
        let instance = sbx_backend::instance_id(&base.join("instance-id"))
            .map_err(|e| BackendError::io("cannot read or create the instance id", e))?;
        let mut runtime = Runtime {
            binary: config.runtime.clone(),
            flavor: Flavor::Gvisor,
            console_socket: false,
            state,
            platform: config.platform.clone(),
            shim: config
                .shim_program
                .clone()
                .unwrap_or_else(|| PathBuf::from("/proc/self/exe")),
        };
        let version = runtime.version()?;
        runtime.flavor = Runtime::flavor_of(&version);
        runtime.console_socket = version.starts_with("crun");
        let slots = match runtime.flavor {
            Flavor::Gvisor => None,
            Flavor::Native => {
                if version.starts_with("crun") {
                    cgroups::prepare_hybrid()?;
                }
                if config.favor_cgroup_moves {
                    cgroups::favor_moves();
                }
                for dir in [
                    Path::new(ROOTS).parent().unwrap_or(Path::new("/")),
                    Path::new(ROOTS),
                ] {
                    fs::create_dir_all(dir)
                        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o711)))
                        .map_err(|e| {
                            BackendError::io(format!("cannot make {}", dir.display()), e)
                        })?;
                }
                let own = bundle_slots(&bundles);
                let slots = sbx_backend::slots::Slots::open(
                    Path::new(sbx_backend::slots::REGISTRY),
                    &instance,
                    sbx_backend::slots::ID_SLOTS,
                    own,
                )
                .map_err(|e| BackendError::io("cannot open the uid slot registry", e))?;
                Some(slots)
            }
        };
        let bounds = Bounds::of_this_host(match runtime.flavor {
            Flavor::Gvisor => bundle::RUNTIME_TASKS,
            Flavor::Native => bundle::NAMESPACE_RUNTIME_TASKS,
        });
        let agent = HostAgent::prepare_or_none(
            &base.join("agent"),
            config.shim_program.as_deref(),
            config.kind,
        );
        let keys = std::sync::Mutex::new(pooled_sandboxes(&bundles));
        let init = sbx_images::host::static_busybox();
        let inner = Arc::new(Inner {
            keys,
            // Under gVisor a warm container is renamed by a command of the static busybox.
            pool: pool::Pool::new(if init.is_none() && runtime.flavor == Flavor::Gvisor {
                &[]
            } else {
                &config.warm
            }),
            kind: config.kind,
            runtime,
            slots,
            version,
            bundles,
            skeleton,
            host_root,
            host_binds,
            images: config.images,
            instance,
            serial: AtomicU64::new(0),
            bounds,
            init,
            agent,
        });
        let files = inner
            .agent
            .as_ref()
            .map(|agent| FileService::new(ExecTransport::new(inner.clone(), agent)));
        Ok(OciBackend {
            inner,
            files,
            reaper: Default::default(),
            filler: Default::default(),
        })
    }
}

/// The uid slots the sandboxes in `bundles` hold (their `slot` files).
fn bundle_slots(bundles: &Path) -> std::collections::BTreeMap<u32, SandboxId> {
    fs::read_dir(bundles)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let id = SandboxId::parse(entry.file_name().to_str()?).ok()?;
            let slot = fs::read_to_string(entry.path().join("slot")).ok()?;
            Some((slot.trim().parse().ok()?, id))
        })
        .collect()
}

/// Sandbox id → key, for the bundles in `bundles` that a pool started (their `sandbox-id`).
fn pooled_sandboxes(bundles: &Path) -> std::collections::HashMap<String, String> {
    fs::read_dir(bundles)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let key = SandboxId::parse(entry.file_name().to_str()?).ok()?;
            let id = fs::read_to_string(entry.path().join(SANDBOX_ID)).ok()?;
            let id = SandboxId::parse(id.trim()).ok()?;
            Some((id.to_string(), key.to_string()))
        })
        .collect()
}

/// The file in a pooled container's bundle that names the sandbox it serves.
const SANDBOX_ID: &str = "sandbox-id";

fn getrandom(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator is unavailable");
}

fn io(context: &str, e: std::io::Error) -> BackendError {
    BackendError::io(context.to_owned(), e)
}

impl Inner {
    fn bundle(&self, id: &str) -> PathBuf {
        self.bundles.join(id)
    }

    /// Where the sandbox's root is mounted: in its bundle for gVisor; for a namespaces
    /// runtime, which enters the root from inside the sandbox's user namespace, under
    /// [`ROOTS`], the one path on the host it can walk to (its parents are `0711`).
    fn rootfs(&self, id: &str) -> PathBuf {
        match self.runtime.flavor {
            Flavor::Gvisor => self.bundle(id).join("rootfs"),
            Flavor::Native => Path::new(ROOTS).join(format!("{}-{id}", self.instance)),
        }
    }

    fn cgroup(&self, id: &str) -> String {
        format!("/sbx-oci/{}/{id}", self.instance)
    }

    fn root_of(&self, template: &str) -> Option<Root> {
        if template == sbx_images::host::HOST {
            return Some(Root::Directory {
                path: self.host_root.clone(),
                binds: self.host_binds.clone(),
            });
        }
        let image = self.images.as_ref()?.resolve(template)?;
        Some(Root::Layers {
            layers: image.layers,
            config: image.config,
        })
    }

    /// Builds the sandbox; returns the nonce that tells this build from an earlier one with
    /// the same id.
    async fn build(&self, spec: &SandboxSpec) -> Result<String, BackendError> {
        let id = spec.id.to_string();
        let root = self
            .root_of(&spec.template)
            .ok_or_else(|| BackendError::TemplateNotFound(spec.template.clone()))?;
        if spec.snapshot.is_some() {
            return Err(BackendError::Unsupported {
                backend: self.kind,
                operation: "snapshots",
            });
        }
        let bundle = self.bundle(&id);
        let rootfs = self.rootfs(&id);
        fs::create_dir_all(bundle.join("exec"))
            .and_then(|()| fs::set_permissions(&bundle, fs::Permissions::from_mode(0o700)))
            .map_err(|e| io("cannot make the bundle", e))?;
        fs::create_dir_all(rootfs.parent().unwrap_or(&bundle))
            .and_then(|()| fs::create_dir(&rootfs))
            .map_err(|e| io("cannot make the sandbox's root", e))?;
        if let Root::Layers { config, .. } = &root {
            let text = serde_json::to_vec(config).unwrap_or_default();
            fs::write(bundle.join("image.json"), text)
                .map_err(|e| io("cannot record the image's defaults", e))?;
        }
        let mut nonce = [0u8; 8];
        getrandom(&mut nonce);
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        fs::write(bundle.join("nonce"), &nonce).map_err(|e| io("cannot write the nonce", e))?;
        let isolation = match &self.slots {
            None => bundle::Isolation::Gvisor,
            Some(slots) => {
                let slot = slots.allocate(&spec.id, sbx_backend::slots::sandbox_alive)?;
                if let Err(e) = fs::write(bundle.join("slot"), slot.to_string()) {
                    slots.free(slot, &spec.id);
                    return Err(io("cannot record the sandbox's uid slot", e));
                }
                bundle::Isolation::Namespaces {
                    id_base: sbx_backend::slots::id_base(slot),
                }
            }
        };
        let layer = bundle.join("layer");
        let lowers = bundle.join("lowers");
        let writable = match isolation {
            bundle::Isolation::Gvisor => None,
            bundle::Isolation::Namespaces { id_base } => Some(bundle::Writable {
                dir: &layer,
                id_base,
                size: spec.limits.disk_bytes,
                lowers: &lowers,
                busybox: self.init.as_deref(),
            }),
        };
        bundle::mount_root(&root, &self.skeleton, &rootfs, writable)?;
        let config = bundle::config(
            spec,
            &root,
            &self.cgroup(&id),
            self.init.as_deref(),
            self.agent.as_ref(),
            isolation,
            &rootfs,
        );
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )
        .map_err(|e| io("cannot write the bundle's config.json", e))?;
        let bundle_arg = format!("--bundle={}", bundle.display());
        if let Some(source) = &spec.fork_of {
            self.restore_fork(&id, source, &bundle_arg).await?;
            return Ok(nonce);
        }
        self.runtime
            .create(&[&bundle_arg, &id], &bundle.join("runsc.log"))
            .await?;
        self.runtime.call(&["start", &id]).await?;
        Ok(nonce)
    }

    /// A fork: the container made from a hibernated sandbox's checkpoint, linked into this
    /// bundle first (a resume of the source removes its own names, not these).
    async fn restore_fork(
        &self,
        id: &str,
        source: &Handle,
        bundle_arg: &str,
    ) -> Result<(), BackendError> {
        let gone = |source: &str| BackendError::File {
            // A conflict with the source's state (lifecycle answers 409).
            kind: sbx_backend::FileErrorKind::Conflict,
            message: format!("sandbox {source} is no longer hibernated"),
        };
        let source_id = self.current(source).map_err(|_| gone("the source"))?;
        let image = self.checkpoint_dir(&source_id);
        let linked = self.bundle(id).join("fork-image");
        fs::create_dir(&linked).map_err(|e| io("cannot make the fork's image directory", e))?;
        let entries = fs::read_dir(&image).map_err(|_| gone(&source_id))?;
        for entry in entries {
            let entry = entry.map_err(|_| gone(&source_id))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                fs::hard_link(entry.path(), linked.join(entry.file_name())).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        gone(&source_id)
                    } else {
                        io("cannot link the checkpoint into the fork's bundle", e)
                    }
                })?;
            }
        }
        let image_path = format!("--image-path={}", linked.display());
        let restored = self
            .runtime
            .restore(
                &["--detach", &image_path, bundle_arg, id],
                &self.bundle(id).join("runsc.log"),
                HIBERNATION,
            )
            .await;
        let _ = fs::remove_dir_all(&linked);
        restored.map_err(|e| {
            tracing::warn!(sandbox = %id, error = %e.chain(), "restore of a fork failed");
            match e {
                BackendError::Timeout { .. } | BackendError::Capacity { .. } => e,
                _ => BackendError::unavailable(format!(
                    "the runtime could not restore a fork of sandbox {source_id} (the daemon's \
                     log says why)"
                )),
            }
        })
    }

    /// A command for the sandbox of `handle`: the base environment, the image's, the
    /// request's; the working directory asked, else the image's, else the user's home.
    fn command(
        &self,
        handle: &Handle,
        argv: Vec<String>,
        request_env: Vec<(String, String)>,
        cwd: Option<String>,
        user: sbx_backend::User,
        stdin: bool,
    ) -> Result<exec::Command, BackendError> {
        let key = self.current(handle)?;
        let id = id_of(handle)?;
        let bundle = self.bundle(&key);
        let image: Option<ImageConfig> = fs::read(bundle.join("image.json"))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok());
        let (home, name) = match user.uid {
            0 => ("/root".to_owned(), "root".to_owned()),
            1000 => ("/home/user".to_owned(), "user".to_owned()),
            uid => ("/".to_owned(), uid.to_string()),
        };
        let mut env = bundle::base_env(image.as_ref(), &id);
        for (key, value) in [
            ("HOME".to_owned(), home.clone()),
            ("USER".to_owned(), name.clone()),
            ("LOGNAME".to_owned(), name),
        ]
        .into_iter()
        .chain(request_env)
        {
            bundle::set_env(&mut env, key, value);
        }
        let cwd = cwd
            .or_else(|| image.and_then(|i| i.working_dir))
            .unwrap_or(home);
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let cgroup_procs = self
            .cgroup_leaves(&key)
            .into_iter()
            .map(|leaf| leaf.join("cgroup.procs"))
            .filter(|procs| procs.exists())
            .collect();
        Ok(exec::Command {
            argv,
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            stdin,
            pid_file: bundle.join("exec").join(format!("{serial}.pid")),
            cgroup_procs,
            busybox: self.init.as_ref().map(|_| bundle::INIT_PATH.to_owned()),
            container: key,
        })
    }

    /// The key (container) of `handle`, if it is still the one the handle was made for.
    fn current(&self, handle: &Handle) -> Result<String, BackendError> {
        let key = key_of(handle)?;
        let nonce = handle.data.get("nonce").and_then(|v| v.as_str());
        let stored = fs::read_to_string(self.bundle(&key).join("nonce")).ok();
        match (nonce, stored) {
            (Some(nonce), Some(stored)) if nonce == stored.trim() => Ok(key),
            (None, Some(_)) => Ok(key),
            _ => Err(BackendError::NotFound(format!(
                "sandbox {} is gone",
                id_of(handle)?
            ))),
        }
    }

    /// The key of sandbox `id` when no handle says it: the pool's, or its id.
    fn key_for(&self, id: &str) -> String {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }

    /// The sandbox a key's container serves: its `sandbox-id`, or the key itself.
    fn sandbox_of(&self, key: &str) -> String {
        fs::read_to_string(self.bundle(key).join(SANDBOX_ID))
            .ok()
            .and_then(|id| SandboxId::parse(id.trim()).ok())
            .map_or_else(|| key.to_owned(), |id| id.to_string())
    }

    /// Builds a container for the pool and adds it: a sandbox of `limits` on the host
    /// template, named by a fresh key (the pool's from the start: never an orphan).
    async fn warm_one(&self, limits: Limits) -> Result<(), BackendError> {
        let key = SandboxId::generate();
        let busy = self.pool.busy(&key);
        let spec = SandboxSpec {
            id: key.clone(),
            template: sbx_images::host::HOST.to_owned(),
            limits,
            snapshot: None,
            fork_of: None,
        };
        let built = async {
            let nonce = self.build(&spec).await?;
            let stopped = || BackendError::other("a warm container stopped at once");
            let init = self
                .runtime
                .state(key.as_str())
                .await?
                .filter(|state| alive(&state.status))
                .and_then(|state| i32::try_from(state.pid).ok())
                .filter(|pid| *pid > 0)
                .ok_or_else(stopped)?;
            let start_time = sbx_backend::process::start_time(init).ok_or_else(stopped)?;
            Ok::<_, BackendError>(pool::Warm {
                key: key.clone(),
                nonce,
                limits,
                init,
                start_time,
            })
        }
        .await;
        let result = match built {
            // Added while still busy: never seen as neither.
            Ok(warm) => match self.pool.add(warm) {
                None => Ok(()),
                // The pool closed meanwhile.
                Some(_) => self.remove(key.as_str()).await,
            },
            Err(e) => {
                if let Err(cleanup) = self.remove(key.as_str()).await {
                    tracing::warn!(key = %key, error = %cleanup, "cannot remove a failed warm container");
                }
                Err(e)
            }
        };
        drop(busy);
        result
    }

    /// Sandbox `spec` from a warm container, when the pool has one of its shape: the
    /// container is told whom it serves and takes its name. `None`: build one.
    async fn take_warm(&self, spec: &SandboxSpec) -> Option<Handle> {
        if spec.snapshot.is_some()
            || spec.fork_of.is_some()
            || spec.template != sbx_images::host::HOST
        {
            return None;
        }
        let (warm, busy) = self.pool.take(&spec.limits)?;
        if self.runtime.flavor == Flavor::Native {
            // Its first command will be a `crun exec`/`runc exec`: see `warm_attach`.
            cgroups::warm_attach();
        }
        let key = warm.key.to_string();
        let id = spec.id.to_string();
        let handed = async {
            fs::write(self.bundle(&key).join(SANDBOX_ID), &id)
                .map_err(|e| format!("cannot record the sandbox it serves: {e}"))?;
            self.keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), key.clone());
            self.set_hostname(&warm, &id).await
        }
        .await;
        match handed {
            Ok(()) => {
                drop(busy);
                Some(Handle {
                    backend: self.kind.into(),
                    data: serde_json::json!({
                        "id": id,
                        "key": key,
                        "nonce": warm.nonce,
                        "pid": warm.init,
                        "start_time": warm.start_time,
                    }),
                })
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, key = %key, error = %e, "a warm container could not be used; building one");
                if let Err(e) = self.remove(&key).await {
                    tracing::warn!(key = %key, error = %e, "cannot remove a warm container");
                }
                drop(busy);
                None
            }
        }
    }

    /// Gives a warm container the host name of the sandbox it now serves: from the host for
    /// a namespaces runtime; under gVisor, whose kernel is the sentry, by a command (root with
    /// the one capability that needs, for that command alone).
    async fn set_hostname(&self, warm: &pool::Warm, id: &str) -> Result<(), String> {
        let key = warm.key.to_string();
        match self.runtime.flavor {
            Flavor::Native => {
                let (init, start_time, id) = (warm.init, warm.start_time, id.to_owned());
                tokio::task::spawn_blocking(move || {
                    pool::set_hostname_from_host(init, start_time, &id)
                })
                .await
                .unwrap_or_else(|e| Err(format!("the naming task failed: {e}")))
            }
            Flavor::Gvisor => self
                .runtime
                .call(&[
                    "exec",
                    "--user=0:0",
                    "--cap=CAP_SYS_ADMIN",
                    &key,
                    bundle::INIT_PATH,
                    "hostname",
                    id,
                ])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    /// Pauses or resumes (already so: nothing to do).
    async fn set_paused(&self, handle: &Handle, paused: bool) -> Result<(), BackendError> {
        let id = self.current(handle)?;
        let state = self
            .runtime
            .state(&id)
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("sandbox {id} is gone")))?;
        let (from, verb) = if paused {
            ("running", "pause")
        } else {
            ("paused", "resume")
        };
        if state.status != from {
            return if alive(&state.status) {
                Ok(())
            } else {
                Err(BackendError::NotFound(format!("sandbox {id} has stopped")))
            };
        }
        self.runtime.call(&[verb, &id]).await.map(|_| ())
    }

    /// Whether the runtime keeps state for container `id` (runsc's `<id>_sandbox:<id>.state`,
    /// crun's and runc's `<id>/`): what its `state`, `kill` and `delete` would act on.
    fn runtime_knows(&self, id: &str) -> bool {
        fs::read_dir(&self.runtime.state)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().starts_with(id))
    }

    /// Removes every trace of the container named `id` (a key).
    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        let bundle = self.bundle(id);
        // Nothing of it (a create's first step, a destroy again): no runtime call, which is
        // most of what this costs.
        if !self.runtime_knows(id)
            && !bundle.exists()
            && self.cgroup_leaves(id).iter().all(|leaf| !leaf.exists())
        {
            return Ok(());
        }
        if self.runtime_knows(id) {
            // runsc refuses (panics) to delete a paused container: resumed first, then killed.
            if let Ok(Some(state)) = self.runtime.state(id).await {
                if state.status == "paused" {
                    let _ = self.runtime.call(&["resume", id]).await;
                }
            }
            let _ = self.runtime.call(&["kill", id, "KILL"]).await;
            // A sandbox's init ends only once every process of its pid namespace is reaped,
            // orphans that came to this daemon too.
            if self.runtime.flavor == Flavor::Native {
                let _ = tokio::task::spawn_blocking(sbx_backend::reap::orphans).await;
            }
            let deleted = self.runtime.call(&["delete", "--force", id]).await;
            if self.runtime.flavor == Flavor::Native {
                let _ = tokio::task::spawn_blocking(sbx_backend::reap::orphans).await;
            }
            if let Err(e) = deleted {
                if self.runtime.state(id).await?.is_some() {
                    return Err(e);
                }
            }
        }
        let rootfs = self.rootfs(id);
        bundle::unmount_root(&rootfs);
        if rootfs.parent() != Some(bundle.as_path()) {
            match fs::remove_dir(&rootfs) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot remove the sandbox's root", e)),
            }
        }
        bundle::unmount_root(&bundle.join("layer"));
        bundle::unmount_lowers(&bundle.join("lowers"));
        let slot = fs::read_to_string(bundle.join("slot"))
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        match fs::remove_dir_all(&bundle) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove the bundle", e)),
        }
        self.remove_cgroup_leaves(id).await;
        if let (Some(slots), Some(slot), Ok(sandbox)) = (&self.slots, slot, SandboxId::parse(id)) {
            slots.free(slot, &sandbox);
        }
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, key| key != id);
        Ok(())
    }
}

/// The cgroup hierarchies: each v1 controller's, or the v2 root.
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_owned()];
    }
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect()
}

impl Inner {
    /// The sandbox's cgroup in each hierarchy (made by the runtime).
    fn cgroup_leaves(&self, id: &str) -> Vec<PathBuf> {
        cgroup_hierarchies()
            .iter()
            .map(|h| h.join("sbx-oci").join(&self.instance).join(id))
            .collect()
    }

    /// Removes the sandbox's cgroups, killing what is left in them first (a create cut off
    /// half-way leaves its sandbox and gofer). The runtime removes them itself, or leaves them
    /// empty when the last process exits a moment after. Their parent stays until shutdown:
    /// removing it here would race the runtime making a sibling's (runsc does not retry its
    /// mkdir).
    async fn remove_cgroup_leaves(&self, id: &str) {
        let leaves = self.cgroup_leaves(id);
        // Whatever is left in it (a create cut off half-way leaves its sandbox and gofer).
        for leaf in &leaves {
            let procs = fs::read_to_string(leaf.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for _ in 0..100 {
            for leaf in &leaves {
                let _ = fs::remove_dir(leaf);
            }
            if leaves.iter().all(|l| !l.exists()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The runtime's record of a container and its cgroups go; its bundle stays.
    async fn forget_container(&self, id: &str) {
        let _ = self.runtime.call(&["delete", "--force", id]).await;
        self.remove_cgroup_leaves(id).await;
    }

    /// Removes this instance's cgroup parent where it is empty (at shutdown only). The shared
    /// `sbx-oci` above it stays: another daemon's runtime may be making a cgroup under it.
    fn remove_cgroup_parents(&self) {
        for hierarchy in cgroup_hierarchies() {
            let _ = fs::remove_dir(hierarchy.join("sbx-oci").join(&self.instance));
        }
    }
}

fn handle(kind: &str, id: &SandboxId, nonce: &str) -> Handle {
    Handle {
        backend: kind.into(),
        data: serde_json::json!({ "id": id.to_string(), "nonce": nonce }),
    }
}

/// The process a warm container's handle recorded (its pid and start time), if any.
fn recorded_process(handle: &Handle) -> Option<(i32, u64)> {
    let pid = handle.data.get("pid")?.as_i64()?;
    let start_time = handle.data.get("start_time")?.as_u64()?;
    Some((i32::try_from(pid).ok().filter(|pid| *pid > 0)?, start_time))
}

/// The sandbox's id in `handle`.
fn id_of(handle: &Handle) -> Result<String, BackendError> {
    handle_field(handle, "id")?
        .ok_or_else(|| BackendError::other("a malformed handle of the oci backend"))
}

/// The key its container is named by: the pool's (`key`), else the sandbox's id.
fn key_of(handle: &Handle) -> Result<String, BackendError> {
    match handle_field(handle, "key")? {
        Some(key) => Ok(key),
        None => id_of(handle),
    }
}

fn handle_field(handle: &Handle, field: &str) -> Result<Option<String>, BackendError> {
    let Some(value) = handle.data.get(field) else {
        return Ok(None);
    };
    value
        .as_str()
        .and_then(|text| SandboxId::parse(text).ok())
        .map(|id| Some(id.to_string()))
        .ok_or_else(|| BackendError::other("a malformed handle of the oci backend"))
}

fn alive(status: &str) -> bool {
    matches!(status, "running" | "paused")
}

#[async_trait]
impl Backend for OciBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind
    }

    fn isolation(&self) -> &'static str {
        match self.inner.runtime.flavor {
            Flavor::Gvisor => "gvisor",
            Flavor::Native => "namespaces",
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            stdin: true,
            terminals: true,
            pause: true,
            adopt: true,
            files: self.files.is_some(),
            hibernate: self.hibernation().is_some(),
            warm_pool: self.inner.pool.is_enabled(),
            ports: self.inner.runtime.flavor == Flavor::Native,
            ..Capabilities::default()
        }
    }

    fn bounds(&self) -> Bounds {
        self.inner.bounds
    }

    /// A namespaces runtime's commands can leave orphans to this daemon (see
    /// `sbx_backend::reap`): reaped as they come (each `SIGCHLD`, and every second).
    /// The warm pool starts filling (one container at a time).
    async fn start(&self) -> Result<(), BackendError> {
        if self.inner.runtime.flavor == Flavor::Native {
            let mut reaper = self.reaper.lock().unwrap_or_else(|e| e.into_inner());
            if reaper.is_none() {
                *reaper = Some(tokio::spawn(reap_orphans()));
            }
        }
        if self.inner.pool.is_enabled() {
            let mut filler = self.filler.lock().unwrap_or_else(|e| e.into_inner());
            if filler.is_none() && !self.inner.pool.is_closed() {
                *filler = Some(tokio::spawn(keep_warm(self.inner.clone())));
            }
        }
        Ok(())
    }

    /// The pool closes: the container being built is finished and removed, the warm ones
    /// are removed.
    async fn shutdown(&self) {
        let warm = self.inner.pool.close();
        let filler = self.filler.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(filler) = filler {
            let _ = filler.await;
        }
        for warm in warm {
            if let Err(e) = self.inner.remove(warm.key.as_str()).await {
                tracing::warn!(key = %warm.key, error = %e, "cannot remove a warm container");
            }
        }
        if let Some(reaper) = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reaper.abort();
        }
        self.inner.remove_cgroup_parents();
    }

    async fn health(&self) -> Health {
        let runtime = self.inner.runtime.clone();
        let version = tokio::task::spawn_blocking(move || runtime.version())
            .await
            .unwrap_or_else(|e| Err(BackendError::other_from("the health check failed", e)));
        let warm = match self.inner.pool.counts() {
            (_, 0) => String::new(),
            (ready, kept) => format!("; {ready}/{kept} warm"),
        };
        match version {
            Ok(version) => Health {
                healthy: true,
                detail: match self.inner.runtime.flavor {
                    Flavor::Gvisor => format!(
                        "{} ({version}), platform {}, gVisor",
                        self.inner.runtime.binary.display(),
                        self.inner.runtime.platform
                    ),
                    Flavor::Native => format!(
                        "{} ({version}), the host's kernel behind a user namespace and \
                         seccomp",
                        self.inner.runtime.binary.display()
                    ),
                } + &warm,
            },
            Err(e) => Health {
                healthy: false,
                detail: e.to_string(),
            },
        }
    }

    async fn has_template(&self, name: &str) -> Result<bool, BackendError> {
        Ok(self.inner.root_of(name).is_some())
    }

    /// From the warm pool when it has a container of this shape, else built.
    async fn create(&self, spec: &SandboxSpec) -> Result<Handle, BackendError> {
        let id = spec.id.to_string();
        // What an earlier life of this sandbox left (a recreate), under a warm key or its id.
        let key = self.inner.key_for(&id);
        self.inner.remove(&key).await?;
        if key != id {
            self.inner.remove(&id).await?;
        }
        if let Some(handle) = self.inner.take_warm(spec).await {
            return Ok(handle);
        }
        match self.inner.build(spec).await {
            Ok(nonce) => Ok(handle(self.inner.kind, &spec.id, &nonce)),
            Err(e) => {
                if let Err(cleanup) = self.inner.remove(&id).await {
                    tracing::warn!(sandbox = %id, error = %cleanup, "cannot remove a failed sandbox");
                }
                Err(e)
            }
        }
    }

    async fn inspect(&self, handle: &Handle) -> Result<Observed, BackendError> {
        let id = self.inner.current(handle)?;
        let state = self
            .inner
            .runtime
            .state(&id)
            .await?
            .ok_or_else(|| BackendError::NotFound(format!("container {id} is gone")))?;
        Ok(Observed {
            alive: alive(&state.status),
            main_pid: u32::try_from(state.pid).ok().filter(|p| *p > 0),
            frozen: Some(state.status == "paused"),
            ..Observed::default()
        })
    }

    async fn adopt(&self, handle: &Handle) -> Result<(), BackendError> {
        let observed = self.inspect(handle).await?;
        if observed.alive {
            Ok(())
        } else {
            Err(BackendError::NotFound("the container has stopped".into()))
        }
    }

    /// The sandboxes whose containers or bundles are here: by the sandbox each serves; the
    /// pool's own are not listed (a previous daemon's are: orphans now).
    async fn list_owned(&self) -> Result<Vec<SandboxId>, BackendError> {
        let mut keys = self.inner.runtime.list().await?;
        for entry in fs::read_dir(&self.inner.bundles)
            .map_err(|e| io("cannot list bundles", e))?
            .flatten()
        {
            keys.push(entry.file_name().to_string_lossy().into_owned());
        }
        keys.sort();
        keys.dedup();
        let mut ids: Vec<SandboxId> = keys
            .iter()
            .filter(|key| SandboxId::parse(key).is_ok() && !self.inner.pool.holds(key))
            .filter_map(|key| SandboxId::parse(&self.inner.sandbox_of(key)).ok())
            .collect();
        ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        Ok(ids)
    }

    async fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), BackendError> {
        let key = match handle.map(key_of) {
            Some(Ok(key)) => key,
            _ => self.inner.key_for(id.as_str()),
        };
        self.inner.remove(&key).await
    }

    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError> {
        Exec::exec(self.inner.as_ref(), handle, spec).await
    }

    fn files(&self) -> Option<&dyn sbx_backend::Files> {
        self.files
            .as_ref()
            .map(|files| files as &dyn sbx_backend::Files)
    }

    /// Watches the sandbox's host process (a signal 0 every half second, no runtime call);
    /// when it is gone, the runtime confirms.
    async fn wait_exit(&self, handle: &Handle) -> Result<(), BackendError> {
        let Ok(id) = self.inner.current(handle) else {
            return Ok(());
        };
        let mut watched = 0;
        // A warm container's process, known since the pool made it: watched with no runtime
        // call (each starts a program, which a new sandbox's first commands would wait for)
        // until it is gone; then the runtime confirms.
        if let Some((pid, start_time)) = recorded_process(handle) {
            while sbx_backend::process::is_alive(pid, start_time) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if self.inner.current(handle).is_err() {
                    return Ok(());
                }
            }
            watched = i64::from(pid);
        }
        loop {
            let pid = match self.inner.runtime.state(&id).await {
                Ok(Some(state)) if alive(&state.status) => state.pid,
                Ok(_) => return Ok(()),
                Err(BackendError::Timeout { .. }) => 0,
                Err(e) => return Err(e),
            };
            // Another process than the one watched: the sandbox was restored from a
            // hibernation meanwhile, and whoever restored it watches it now.
            if watched > 0 && pid > 0 && pid != watched {
                return Ok(());
            }
            if pid > 0 {
                watched = pid;
            }
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if self.inner.current(handle).is_err() {
                    return Ok(());
                }
                if pid.as_raw() <= 0 || nix::sys::signal::kill(pid, None).is_err() {
                    break;
                }
            }
        }
    }

    fn pause(&self) -> Option<&dyn PauseResume> {
        Some(self)
    }

    /// Under crun/runc, through the container's network namespace on the host; gVisor's
    /// network stack is in its Sentry, out of the daemon's reach.
    fn ports(&self) -> Option<&dyn sbx_backend::Ports> {
        (self.inner.runtime.flavor == Flavor::Native).then_some(self as &dyn sbx_backend::Ports)
    }

    fn terminals(&self) -> Option<&dyn Terminals> {
        Some(self)
    }

    /// gVisor's checkpoints (`crun` and `runc` would need a `criu` that works here).
    fn hibernation(&self) -> Option<&dyn Hibernation> {
        (self.inner.init.is_some() && self.inner.runtime.flavor == Flavor::Gvisor)
            .then_some(self as &dyn Hibernation)
    }
}

#[async_trait]
impl sbx_backend::Ports for OciBackend {
    async fn connect(
        &self,
        handle: &Handle,
        port: u16,
    ) -> Result<Box<dyn sbx_backend::Duplex>, BackendError> {
        let (pid, start_time) = self.inner.init_process(handle).await?;
        let stream = sbx_backend::ports::connect_stream(pid, start_time, port).await?;
        Ok(Box::new(stream))
    }

    async fn listening(&self, handle: &Handle) -> Result<Vec<u16>, BackendError> {
        let (pid, start_time) = self.inner.init_process(handle).await?;
        sbx_backend::ports::listening_ports(pid, start_time).await
    }
}

impl Inner {
    /// The container's init on the host, and its start time: the warm pool's record, else the
    /// runtime's.
    async fn init_process(&self, handle: &Handle) -> Result<(i32, u64), BackendError> {
        let key = self.current(handle)?;
        if let Some((pid, start_time)) = recorded_process(handle) {
            if sbx_backend::process::is_alive(pid, start_time) {
                return Ok((pid, start_time));
            }
        }
        let gone = || BackendError::NotFound(format!("sandbox {key} has stopped"));
        let pid = self
            .runtime
            .state(&key)
            .await?
            .filter(|state| alive(&state.status))
            .and_then(|state| i32::try_from(state.pid).ok())
            .filter(|pid| *pid > 0)
            .ok_or_else(gone)?;
        let start_time = sbx_backend::process::start_time(pid).ok_or_else(gone)?;
        Ok((pid, start_time))
    }
}

#[async_trait]
impl Terminals for OciBackend {
    async fn open_terminal(
        &self,
        handle: &Handle,
        spec: TerminalSpec,
    ) -> Result<ExecSession, BackendError> {
        let command = self
            .inner
            .command(handle, spec.argv, spec.env, spec.cwd, spec.user, true)?;
        exec::start_terminal(&self.inner.runtime, command, spec.size.rows, spec.size.cols).await
    }
}

#[async_trait]
impl PauseResume for OciBackend {
    async fn pause(&self, handle: &Handle) -> Result<(), BackendError> {
        self.inner.set_paused(handle, true).await
    }

    async fn resume(&self, handle: &Handle) -> Result<(), BackendError> {
        self.inner.set_paused(handle, false).await
    }
}

/// Most a checkpoint or a restore may take (a sandbox's whole memory goes to disk or back);
/// with ending what cannot be saved and deleting the stopped container, the whole stays under
/// lifecycle's deadline for a hibernation.
const HIBERNATION: Duration = Duration::from_secs(240);

/// Free disk a checkpoint must leave, over the sandbox's memory limit (what it may write).
const CHECKPOINT_RESERVE: u64 = 256 << 20;

/// What cannot be saved ends first: every process (but init) holding a descriptor whose other
/// end is on the host — a command's pipes, a terminal — that the runtime could not restore.
/// The script's own descriptors are the sandbox's `/dev/null` before it looks. Passes repeat
/// until one finds nothing (a holder may fork between two looks, or hand a descriptor on);
/// after 50 it gives up (exit 1), and the hibernation with it.
const END_UNSAVEABLE: &str = r#"exec </dev/null >/dev/null 2>&1
pass=0
while [ $pass -lt 50 ]; do
  pass=$((pass+1))
  found=0
  for p in /proc/[0-9]*; do
    n=${p#/proc/}
    [ "$n" = 1 ] && continue
    [ "$n" = $$ ] && continue
    for f in $p/fd/*; do
      case "$(/.sbx/busybox readlink "$f")" in host:*) kill -9 "$n"; found=1; break;; esac
    done
  done
  [ $found = 0 ] && exit 0
  /.sbx/busybox sleep 0.05
done
exit 1"#;

impl Inner {
    /// A hibernated sandbox's checkpoint: in its bundle, so that it goes with it.
    fn checkpoint_dir(&self, id: &str) -> PathBuf {
        self.bundle(id).join("checkpoint")
    }

    async fn hibernate(&self, handle: &Handle) -> Result<u64, BackendError> {
        let id = self.current(handle)?;
        let checkpoint = self.checkpoint_dir(&id);
        let state = self.runtime.state(&id).await?;
        if state.is_none() && checkpoint.exists() {
            return Ok(disk_usage(&checkpoint));
        }
        let state = state.ok_or_else(|| BackendError::NotFound(format!("sandbox {id} is gone")))?;
        let was_paused = state.status == "paused";
        if !alive(&state.status) {
            return Err(BackendError::NotFound(format!("sandbox {id} has stopped")));
        }
        self.room_for_checkpoint(&id)?;
        if was_paused {
            self.runtime.call(&["resume", &id]).await?;
        }
        let result = self.checkpoint(&id).await;
        if result.is_err() && was_paused {
            // Left as it was found: frozen (its record says paused).
            if let Ok(Some(state)) = self.runtime.state(&id).await {
                if state.status == "running" {
                    let _ = self.runtime.call(&["pause", &id]).await;
                }
            }
        }
        result
    }

    /// Refuses a checkpoint the data directory's disk has no room for: as much as the
    /// sandbox's memory limit, and a reserve.
    fn room_for_checkpoint(&self, id: &str) -> Result<(), BackendError> {
        let memory = fs::read(self.bundle(id).join("config.json"))
            .ok()
            .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .and_then(|config| config.pointer("/linux/resources/memory/limit")?.as_u64())
            .unwrap_or(0);
        let free = nix::sys::statvfs::statvfs(&self.bundles)
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
            .unwrap_or(u64::MAX);
        if free < memory.saturating_add(CHECKPOINT_RESERVE) {
            return Err(BackendError::Capacity {
                resource: sbx_backend::SharedResource::Disk,
                detail: format!(
                    "a checkpoint of sandbox {id} needs up to {} MiB of disk; {} MiB are free",
                    (memory + CHECKPOINT_RESERVE) >> 20,
                    free >> 20
                ),
            });
        }
        Ok(())
    }

    /// The checkpoint of a running sandbox, and the end of its host processes.
    async fn checkpoint(&self, id: &str) -> Result<u64, BackendError> {
        let ended = self
            .runtime
            .call(&[
                "exec",
                "--user=0:0",
                id,
                bundle::INIT_PATH,
                "sh",
                "-c",
                END_UNSAVEABLE,
            ])
            .await;
        if let Err(e) = ended {
            tracing::warn!(sandbox = %id, error = %e.chain(), "cannot end what a checkpoint cannot save");
            return Err(BackendError::unavailable(format!(
                "sandbox {id} cannot be hibernated: the processes holding the host's end of a \
                 pipe or terminal could not all be ended"
            )));
        }
        let partial = self.bundle(id).join("checkpoint.partial");
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir(&partial)
            .and_then(|()| fs::set_permissions(&partial, fs::Permissions::from_mode(0o700)))
            .map_err(|e| io("cannot make the checkpoint's directory", e))?;
        let image_path = format!("--image-path={}", partial.display());
        if let Err(e) = self
            .runtime
            .call_within(&["checkpoint", &image_path, id], HIBERNATION)
            .await
        {
            let _ = fs::remove_dir_all(&partial);
            tracing::warn!(sandbox = %id, error = %e.chain(), "checkpoint failed");
            return Err(match (e, self.room_for_checkpoint(id)) {
                (e @ BackendError::Timeout { .. }, _) => e,
                // The disk filled up meanwhile.
                (_, Err(full)) => full,
                (_, Ok(())) => BackendError::unavailable(format!(
                    "the runtime could not checkpoint sandbox {id} (the daemon's log says why)"
                )),
            });
        }
        let checkpoint = self.checkpoint_dir(id);
        fs::rename(&partial, &checkpoint).map_err(|e| io("cannot keep the checkpoint", e))?;
        // The stopped container's record goes (a restore makes it again); its bundle stays.
        self.forget_container(id).await;
        Ok(disk_usage(&checkpoint))
    }

    async fn restore(&self, handle: &Handle) -> Result<(), BackendError> {
        let id = self.current(handle)?;
        let checkpoint = self.checkpoint_dir(&id);
        let state = self.runtime.state(&id).await?;
        if !checkpoint.exists() {
            return match state {
                Some(state) if alive(&state.status) => Ok(()),
                _ => Err(BackendError::NotFound(format!(
                    "sandbox {id} has no checkpoint to restore"
                ))),
            };
        }
        if state.is_some() {
            // What a restore cut off half-way left.
            self.forget_container(&id).await;
        }
        let bundle = self.bundle(&id);
        let bundle_arg = format!("--bundle={}", bundle.display());
        let image_path = format!("--image-path={}", checkpoint.display());
        let restored = self
            .runtime
            .restore(
                &["--detach", &image_path, &bundle_arg, &id],
                &bundle.join("runsc.log"),
                HIBERNATION,
            )
            .await;
        if let Err(e) = restored {
            // The checkpoint stays: the sandbox is still hibernated, and can be tried again.
            self.forget_container(&id).await;
            tracing::warn!(sandbox = %id, error = %e.chain(), "restore failed");
            return Err(match e {
                BackendError::Timeout { .. } | BackendError::Capacity { .. } => e,
                _ => BackendError::unavailable(format!(
                    "the runtime could not restore sandbox {id} from its checkpoint (the \
                     daemon's log says why); it stays hibernated"
                )),
            });
        }
        if let Err(e) = fs::remove_dir_all(&checkpoint) {
            tracing::warn!(sandbox = %id, error = %e, "cannot remove a restored checkpoint");
        }
        Ok(())
    }
}

/// The bytes the files under `dir` take.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| if m.is_dir() { 0 } else { m.blocks() * 512 })
        .sum()
}

#[async_trait]
impl Hibernation for OciBackend {
    async fn hibernate(&self, handle: &Handle) -> Result<u64, BackendError> {
        self.inner.hibernate(handle).await
    }

    async fn restore(&self, handle: &Handle) -> Result<(), BackendError> {
        self.inner.restore(handle).await
    }

    async fn is_hibernated(&self, handle: &Handle) -> Result<bool, BackendError> {
        let id = self.inner.current(handle)?;
        Ok(self.inner.checkpoint_dir(&id).exists())
    }
}

impl OciBackend {
    /// What status shows: the runtime and its version.
    pub fn runtime_version(&self) -> &str {
        &self.inner.version
    }
}
