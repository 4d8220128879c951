//! The Docker backend: each sandbox is a container of a Docker Engine, reached through its
//! API (`bollard`, over the engine's unix socket), under the engine's default runtime or under
//! gVisor's `runsc` registered with the engine (`docker-gvisor`).
//!
//! Owns, per sandbox: one container named `sbx-<instance>-<sandbox id>`, labelled with this
//! daemon instance and the sandbox id (so that orphans are found after a crash, from the
//! engine alone), and whatever the engine's runtime left of it (see [`Inner::sweep`]). Shared
//! by every sandbox of the engine: the images templates are imported as (`images.rs`).
//! Must never: give a container a network (`NetworkMode: none`), a capability, a writable
//! host path or a writable image layer (the root is read-only; `/tmp`, `/var/tmp`, `/run`,
//! `/root` and `/home/user` are tmpfs of the sandbox's disk size, their pages charged to its
//! memory limit), or make an engine call without a deadline.
//!
//! Commands run through the engine's exec API (`exec.rs`).

mod exec;
mod images;

use sbx_backend::agent::exec::{Exec, ExecTransport, HostAgent};
use sbx_backend::agent::FileService;
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use sbx_backend::{
    Backend, BackendError, Bounds, Capabilities, ExecSession, ExecSpec, Handle, Health,
    ImageConfig, Observed, PauseResume, SandboxId, SandboxSpec, TerminalSpec, Terminals, User,
};
use sbx_images::ImageStore;

/// Where each sandbox finds the host's static busybox (its init's `sleep`, the exec wrapper).
pub(crate) const BUSYBOX: &str = "/.sbx/busybox";
/// The deadline of every engine call.
pub(crate) const CALL: Duration = Duration::from_secs(30);
/// Importing a template's image may take longer (a large image, once).
const IMPORT: Duration = Duration::from_secs(600);
const LABEL_INSTANCE: &str = "sbx.instance";
const LABEL_SANDBOX: &str = "sbx.sandbox";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Tasks a sandbox's container takes beyond its `pids` limit: the init shell, its `sleep`,
/// a signal being sent (a shell and its `kill`).
const CONTAINER_TASKS: u64 = 4;
/// Under gVisor, the sentry's and gofer's threads count in the container's cgroup too.
const GVISOR_TASKS: u64 = 128;

/// Settings of the Docker backend.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The backend's name (`docker`, `docker-gvisor`): its handles and profiles say it, and
    /// its state lives in `<data>/<kind>/`.
    pub kind: &'static str,
    pub data_dir: PathBuf,
    /// The engine's API socket.
    pub socket: PathBuf,
    /// A runtime registered with the engine (`runsc`); `None`: the engine's default.
    pub runtime: Option<String>,
    pub images: Option<Arc<ImageStore>>,
    /// The program that is the file agent when run with its argument (`sbx __file-agent`);
    /// this binary when `None`.
    pub agent_program: Option<PathBuf>,
}

pub struct DockerBackend {
    inner: Arc<Inner>,
    /// Files through the file agent (`sbx_backend::agent`), when it can run here.
    files: Option<FileService<ExecTransport>>,
}

struct Inner {
    kind: &'static str,
    docker: Docker,
    socket: PathBuf,
    runtime: Option<String>,
    /// The runtime's program and state directory on this host, to remove what it leaves.
    runtime_program: Option<String>,
    engine_version: String,
    instance: String,
    busybox: PathBuf,
    host_root: PathBuf,
    host_binds: Vec<sbx_images::host::Bind>,
    images: Option<Arc<ImageStore>>,
    scratch: PathBuf,
    /// Tags already imported into the engine, and the lock imports take turns under.
    imported: tokio::sync::Mutex<std::collections::HashSet<String>>,
    bounds: Bounds,
    /// The file agent's program and libraries, bound into every sandbox.
    agent: Option<HostAgent>,
}

#[async_trait]
impl Exec for Inner {
    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError> {
        self.command(handle, spec, None).await
    }
}

impl DockerBackend {
    pub fn new(config: DockerConfig) -> Result<DockerBackend, BackendError> {
        let base = config.data_dir.join(config.kind);
        fs::create_dir_all(&base)
            .map_err(|e| BackendError::io(format!("cannot make {}", base.display()), e))?;
        let busybox = sbx_images::host::static_busybox().ok_or_else(|| {
            BackendError::unavailable(
                "the docker backend needs a static busybox on the host (Debian's busybox-static)",
            )
        })?;
        let (host_root, host_binds) = sbx_images::host::ensure(&config.data_dir.join("templates"))
            .map_err(|e| BackendError::io("cannot build the host template", e))?;
        let instance = sbx_backend::instance_id(&base.join("instance-id"))
            .map_err(|e| BackendError::io("cannot read or create the instance id", e))?;
        let socket = config.socket.to_string_lossy().into_owned();
        let connect = || {
            // API 1.41 (Docker 20.10): what every engine since answers too.
            Docker::connect_with_unix(
                &socket,
                CALL.as_secs(),
                &bollard::ClientVersion {
                    major_version: 1,
                    minor_version: 41,
                },
            )
            .map_err(|e| BackendError::Unavailable {
                detail: format!("cannot reach the Docker Engine at {socket}"),
                source: Some(Box::new(e)),
            })
        };
        let (engine_version, runtime_program) = probe(connect()?, config.runtime.as_deref())
            .map_err(|detail| {
                BackendError::unavailable(format!("the Docker Engine at {socket}: {detail}"))
            })?;
        let tasks = match &config.runtime {
            Some(_) => GVISOR_TASKS,
            None => CONTAINER_TASKS,
        };
        let agent = HostAgent::prepare_or_none(
            &base.join("agent"),
            config.agent_program.as_deref(),
            config.kind,
        );
        let inner = Arc::new(Inner {
            kind: config.kind,
            docker: connect()?,
            socket: config.socket,
            runtime: config.runtime,
            runtime_program,
            engine_version,
            instance,
            busybox,
            host_root,
            host_binds,
            images: config.images,
            scratch: base.join("scratch"),
            imported: tokio::sync::Mutex::new(Default::default()),
            bounds: Bounds::of_this_host(tasks),
            agent,
        });
        let files = inner
            .agent
            .as_ref()
            .map(|agent| FileService::new(ExecTransport::new(inner.clone(), agent)));
        Ok(DockerBackend { inner, files })
    }
}

/// Asks the engine (on a runtime of its own: the backend is made outside any) for its version
/// and, when `runtime` is wanted, for that runtime's program.
fn probe(docker: Docker, runtime: Option<&str>) -> Result<(String, Option<String>), String> {
    let runtime = runtime.map(str::to_owned);
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    let info = tokio::time::timeout(Duration::from_secs(10), docker.info())
                        .await
                        .map_err(|_| "did not answer within 10 s".to_owned())?
                        .map_err(|e| format!("cannot be reached ({e}); is dockerd running?"))?;
                    let version = info.server_version.unwrap_or_else(|| "unknown".into());
                    let program = match &runtime {
                        None => None,
                        Some(name) => {
                            let known = info.runtimes.unwrap_or_default();
                            let entry = known.get(name).ok_or_else(|| {
                                format!(
                                    "has no runtime {name:?} (register it in \
                                     /etc/docker/daemon.json: \"runtimes\": {{\"{name}\": \
                                     {{\"path\": \"/usr/bin/{name}\", \"runtimeArgs\": \
                                     [\"--network=none\"]}}}}; it has: {})",
                                    known.keys().cloned().collect::<Vec<_>>().join(", ")
                                )
                            })?;
                            Some(entry.path.clone().unwrap_or_else(|| name.clone()))
                        }
                    };
                    Ok((version, program))
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the probe panicked".into()))
    })
}

/// An engine error as a backend error: a missing container is `NotFound`, a stopped one too;
/// an engine that cannot be reached is `Unavailable`.
pub(crate) fn engine_error(context: &str, e: bollard::errors::Error) -> BackendError {
    use bollard::errors::Error;
    match e {
        Error::DockerResponseServerError {
            status_code: 404,
            message,
        } => BackendError::NotFound(message),
        Error::DockerResponseServerError {
            status_code: 409,
            message,
        } if message.contains("not running") => BackendError::NotFound(message),
        Error::DockerResponseServerError { .. } | Error::DockerStreamError { .. } => {
            BackendError::other_from(context.to_owned(), e)
        }
        other => BackendError::Unavailable {
            detail: format!("{context}: the Docker Engine did not answer"),
            source: Some(Box::new(other)),
        },
    }
}

fn is_missing(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The container id a handle names.
fn container_of(handle: &Handle) -> Result<String, BackendError> {
    handle
        .data
        .get("container")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| BackendError::other("the handle names no container"))
}

/// `HOME` and the user's name for a uid.
fn home_of(user: User) -> (&'static str, String) {
    match user.uid {
        0 => ("/root", "root".to_owned()),
        1000 => ("/home/user", "user".to_owned()),
        uid => ("/", uid.to_string()),
    }
}

impl Inner {
    fn container_name(&self, id: &SandboxId) -> String {
        format!("sbx-{}-{id}", self.instance)
    }

    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, BackendError> {
        exec::deadline(operation, call).await
    }

    /// The image, host binds and image settings a template's sandboxes start from; imports
    /// the template into the engine the first time.
    async fn image_for(
        &self,
        template: &str,
    ) -> Result<(String, Vec<String>, Option<ImageConfig>), BackendError> {
        if template == sbx_images::host::HOST {
            let root = self.host_root.clone();
            let (archive, tag) = tokio::task::spawn_blocking(move || images::host_archive(&root))
                .await
                .map_err(|e| BackendError::other_from("the archiver panicked", e))??;
            self.ensure_imported(&tag, move |tx| {
                let (done, finished) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let _ = tx.send(bytes::Bytes::from(archive)).await;
                    let _ = done.send(Ok(()));
                });
                Ok(finished)
            })
            .await?;
            let mut binds: Vec<String> = self
                .host_binds
                .iter()
                .map(|b| format!("{}:/{}:ro", b.source.display(), b.target))
                .collect();
            // The engine makes only a bind's top mount read-only: each mount under one (a
            // separate /usr/local, say) is bound again, read-only itself.
            binds.extend(
                submounts(&self.host_binds)
                    .into_iter()
                    .map(|(source, target)| {
                        format!("{}:{}:ro", source.display(), target.display())
                    }),
            );
            return Ok((format!("{}:{tag}", images::REPOSITORY), binds, None));
        }
        let resolved = self
            .images
            .as_ref()
            .and_then(|store| store.resolve(template))
            .ok_or_else(|| BackendError::TemplateNotFound(template.to_owned()))?;
        let tag = images::layers_tag(template, &resolved.layers);
        let layers = resolved.layers.clone();
        let scratch = self.scratch.clone();
        self.ensure_imported(&tag, move |tx| {
            static IMPORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let empty = scratch.join("empty");
            // A mount point of its own: an import cut off by its caller still runs to its end.
            let serial = IMPORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mount = scratch.join(format!("mount-{}-{serial}", std::process::id()));
            fs::create_dir_all(&empty)
                .map_err(|e| BackendError::io("cannot make a scratch directory", e))?;
            let (done, finished) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let _ = done.send(images::archive_layers(&layers, &empty, &mount, tx));
            });
            Ok(finished)
        })
        .await?;
        Ok((
            format!("{}:{tag}", images::REPOSITORY),
            Vec::new(),
            Some(resolved.config),
        ))
    }

    /// Imports `tag` unless the engine has it: `produce` starts writing the archive to the
    /// sender it is given, and tells on the receiver it returns whether the archive is whole.
    async fn ensure_imported(
        &self,
        tag: &str,
        produce: impl FnOnce(
            tokio::sync::mpsc::Sender<bytes::Bytes>,
        ) -> Result<
            tokio::sync::oneshot::Receiver<Result<(), BackendError>>,
            BackendError,
        >,
    ) -> Result<(), BackendError> {
        let mut imported = self.imported.lock().await;
        if imported.contains(tag) {
            return Ok(());
        }
        let reference = format!("{}:{tag}", images::REPOSITORY);
        match self
            .call("image inspect", self.docker.inspect_image(&reference))
            .await?
        {
            Ok(_) => {}
            Err(e) if is_missing(&e) => {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let finished = produce(tx)?;
                let body = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|chunk| (chunk, rx))
                });
                tokio::time::timeout(IMPORT, images::import(&self.docker, tag, body))
                    .await
                    .map_err(|_| BackendError::Timeout {
                        operation: "template import",
                        after: IMPORT,
                    })??;
                // An archive cut short still imports: the producer says whether it was whole.
                let whole = finished.await.unwrap_or_else(|_| {
                    Err(BackendError::other("the template's archiver ended early"))
                });
                if let Err(e) = whole {
                    let _ = self
                        .call(
                            "image remove",
                            self.docker.remove_image(
                                &reference,
                                None::<bollard::query_parameters::RemoveImageOptions>,
                                None,
                            ),
                        )
                        .await;
                    return Err(e);
                }
                self.call("image inspect", self.docker.inspect_image(&reference))
                    .await?
                    .map_err(|e| engine_error("the imported template is missing", e))?;
            }
            Err(e) => return Err(engine_error("cannot inspect a template's image", e)),
        }
        imported.insert(tag.to_owned());
        Ok(())
    }

    /// Removes the engine's images of template `name` (see `images::is_tag_of`).
    async fn remove_images_of(&self, name: &str) -> Result<(), BackendError> {
        if name == sbx_images::host::HOST {
            return Ok(());
        }
        let filters = HashMap::from([("reference", vec![images::REPOSITORY])]);
        let options = bollard::query_parameters::ListImagesOptionsBuilder::new()
            .filters(&filters)
            .build();
        let listed = self
            .call("image list", self.docker.list_images(Some(options)))
            .await?
            .map_err(|e| engine_error("cannot list the templates' images", e))?;
        let mut imported = self.imported.lock().await;
        for reference in listed.iter().flat_map(|image| &image.repo_tags) {
            let Some(tag) = reference
                .strip_prefix(images::REPOSITORY)
                .and_then(|rest| rest.strip_prefix(':'))
            else {
                continue;
            };
            if !images::is_tag_of(tag, name) {
                continue;
            }
            imported.remove(tag);
            let removed = self
                .call(
                    "image remove",
                    self.docker.remove_image(
                        reference,
                        None::<bollard::query_parameters::RemoveImageOptions>,
                        None,
                    ),
                )
                .await?;
            match removed {
                Ok(_) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => {
                    tracing::warn!(image = %reference, error = %e, "a removed template's image stays in the engine");
                }
            }
        }
        Ok(())
    }

    /// Removes the sandbox's container, whatever its state; gone already is fine. Returns the
    /// container's id when there was one.
    async fn remove(&self, name: &str) -> Result<Option<String>, BackendError> {
        let inspected = self
            .call(
                "container inspect",
                self.docker
                    .inspect_container(name, None::<InspectContainerOptions>),
            )
            .await?;
        let id = match inspected {
            Ok(container) => {
                // gVisor's sandbox cannot be killed while it is paused.
                if container.state.and_then(|s| s.paused) == Some(true) {
                    let _ = self
                        .call("container unpause", self.docker.unpause_container(name))
                        .await;
                }
                container.id
            }
            Err(e) if is_missing(&e) => None,
            Err(e) => return Err(engine_error("cannot inspect a container", e)),
        };
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self
            .call(
                "container remove",
                self.docker.remove_container(name, Some(options)),
            )
            .await?
        {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            // Already being removed (a concurrent destroy): waited for below.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(engine_error("cannot remove a container", e)),
        }
        // Gone from the engine before anything of it is swept.
        for attempt in 0.. {
            match self
                .call(
                    "container inspect",
                    self.docker
                        .inspect_container(name, None::<InspectContainerOptions>),
                )
                .await?
            {
                Err(e) if is_missing(&e) => break,
                _ if attempt >= 100 => {
                    return Err(BackendError::other(format!(
                        "the engine still has container {name} after removing it"
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        if let Some(id) = &id {
            self.sweep(id).await;
        }
        Ok(id)
    }

    /// What the engine's runtime may leave of a removed container (seen with runsc: a failed
    /// start left the shim, `runsc-sandbox` and `runsc-gofer` running and the runtime's state
    /// behind after the container's record was gone): its runtime state deleted, and every
    /// process whose command line names the container killed. Only for containers this
    /// backend made and the engine no longer knows.
    async fn sweep(&self, container: &str) {
        // Only a full container id: anything shorter could name unrelated processes.
        if container.len() != 64 || !container.bytes().all(|b| b.is_ascii_hexdigit()) {
            return;
        }
        if let Some(program) = &self.runtime_program {
            for root in runtime_roots(container) {
                let status = tokio::time::timeout(
                    CALL,
                    tokio::process::Command::new(program)
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force", container])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .status(),
                )
                .await;
                tracing::info!(container, root = %root.display(), ?status, "deleted the runtime's leftover state");
            }
        }
        for pid in processes_naming(container) {
            tracing::warn!(
                container,
                pid,
                "killing a runtime process left behind by the engine"
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Handle, BackendError> {
        if spec.snapshot.is_some() || spec.fork_of.is_some() {
            return Err(BackendError::Unsupported {
                backend: self.kind,
                operation: "snapshots",
            });
        }
        let name = self.container_name(&spec.id);
        // Idempotent: what an interrupted attempt left goes first.
        self.remove(&name).await?;
        let (image, mut binds, config) = self.image_for(&spec.template).await?;
        binds.push(format!("{}:{BUSYBOX}:ro", self.busybox.display()));
        for (source, target) in self.agent.iter().flat_map(HostAgent::binds) {
            binds.push(format!("{}:{target}:ro", source.display()));
        }
        let mut env = vec![
            format!("PATH={PATH}"),
            "LANG=C.UTF-8".to_owned(),
            format!("HOSTNAME={}", spec.id),
            "TMPDIR=/tmp".to_owned(),
        ];
        for entry in config.as_ref().map_or(&[][..], |c| &c.env) {
            if let Some((key, _)) = entry.split_once('=') {
                env.retain(|e| !e.starts_with(&format!("{key}=")));
                env.push(entry.clone());
            }
        }
        let limits = spec.limits;
        let disk = limits.disk_bytes.max(1 << 20);
        let tmpfs: HashMap<String, String> = [
            ("/tmp", "mode=1777".to_owned()),
            ("/var/tmp", "mode=1777".to_owned()),
            ("/run", "mode=755".to_owned()),
            ("/root", "mode=700".to_owned()),
            ("/home/user", "mode=700,uid=1000,gid=1000".to_owned()),
        ]
        .into_iter()
        .map(|(path, options)| {
            (
                path.to_owned(),
                format!("rw,nosuid,nodev,size={disk},{options}"),
            )
        })
        .collect();
        // The engine's processes usually share this one's limit; more is refused.
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(_, hard)| hard.min(65536)) as i64;
        let host_config = HostConfig {
            binds: Some(binds),
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            memory: Some(limits.memory_bytes as i64),
            memory_swap: Some(limits.memory_bytes as i64),
            nano_cpus: Some((limits.cpu_millis * 1_000_000) as i64),
            pids_limit: Some((limits.pids + self.bounds.tasks_per_sandbox) as i64),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            runtime: self.runtime.clone(),
            ipc_mode: Some("private".into()),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(nofile),
                hard: Some(nofile),
            }]),
            ..Default::default()
        };
        let labels: HashMap<String, String> = [
            (LABEL_INSTANCE.to_owned(), self.instance.clone()),
            (LABEL_SANDBOX.to_owned(), spec.id.to_string()),
        ]
        .into();
        let body = ContainerCreateBody {
            image: Some(image),
            // A shell as init, which reaps what is orphaned to it while it waits (the engine's
            // own init is bound at `/sbin`, which a template may not have as a directory).
            cmd: Some(vec![
                BUSYBOX.to_owned(),
                "sh".to_owned(),
                "-c".to_owned(),
                format!("while :; do {BUSYBOX} sleep 2147483647 & wait; done"),
            ]),
            env: Some(env),
            labels: Some(labels),
            hostname: Some(spec.id.to_string()),
            user: Some("0:0".into()),
            working_dir: Some("/".into()),
            network_disabled: Some(true),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let created = self
            .call(
                "container create",
                self.docker.create_container(Some(options), body),
            )
            .await?;
        let created = match created {
            Ok(created) => created,
            // Its image was removed from the engine (`docker image prune -a`): imported
            // again at the next create.
            Err(e) if is_missing(&e) => {
                self.imported.lock().await.clear();
                return Err(BackendError::other_from(
                    "the template's image is gone from the engine; it is imported again at the \
                     next create",
                    e,
                ));
            }
            Err(e) => return Err(engine_error("the engine could not make the container", e)),
        };
        let started = self
            .call(
                "container start",
                self.docker.start_container(
                    &created.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                ),
            )
            .await;
        let failure = match started {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(engine_error("the engine could not start the container", e)),
            Err(e) => Some(e),
        };
        if let Some(error) = failure {
            let _ = self.remove(&name).await;
            return Err(error);
        }
        Ok(Handle {
            backend: self.kind.to_owned(),
            data: serde_json::json!({
                "container": created.id,
                "workdir": config.and_then(|c| c.working_dir),
            }),
        })
    }

    /// The container's state; `NotFound` when the engine no longer has it.
    async fn state(
        &self,
        handle: &Handle,
    ) -> Result<bollard::models::ContainerState, BackendError> {
        let container = container_of(handle)?;
        let inspected = self
            .call(
                "container inspect",
                self.docker
                    .inspect_container(&container, None::<InspectContainerOptions>),
            )
            .await?
            .map_err(|e| engine_error("cannot inspect the container", e))?;
        inspected
            .state
            .ok_or_else(|| BackendError::other("the engine told no state"))
    }

    /// Runs `spec` (on a terminal of the size `tty` when given).
    async fn command(
        &self,
        handle: &Handle,
        spec: ExecSpec,
        tty: Option<sbx_backend::TtySize>,
    ) -> Result<ExecSession, BackendError> {
        let ExecSpec {
            argv,
            env: request_env,
            cwd,
            user,
            stdin,
        } = spec;
        let stdin = stdin == sbx_backend::StdinMode::Pipe;
        let state = self.state(handle).await?;
        if state.running != Some(true) {
            return Err(BackendError::gone());
        }
        let (home, name) = home_of(user);
        let mut env = vec![
            format!("HOME={home}"),
            format!("USER={name}"),
            format!("LOGNAME={name}"),
        ];
        if tty.is_some() && !request_env.iter().any(|(k, _)| k == "TERM") {
            env.push("TERM=xterm-256color".into());
        }
        env.extend(request_env.into_iter().map(|(k, v)| format!("{k}={v}")));
        let workdir = handle
            .data
            .get("workdir")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        exec::start(
            &self.docker,
            exec::Command {
                container: container_of(handle)?,
                argv,
                env,
                cwd: cwd.or(workdir).unwrap_or_else(|| home.to_owned()),
                user: format!("{}:{}", user.uid, user.gid),
                stdin,
                tty,
            },
        )
        .await
    }
}

/// Mounts of this host under the host template's bound directories: (host path, path inside).
fn submounts(binds: &[sbx_images::host::Bind]) -> Vec<(PathBuf, PathBuf)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        // Escaped names (spaces, …) are left out: no system directory has them.
        if point.contains('\\') {
            continue;
        }
        let point = PathBuf::from(point);
        for bind in binds {
            if let Ok(rest) = point.strip_prefix(&bind.source) {
                if !rest.as_os_str().is_empty() {
                    found.push((
                        point.clone(),
                        PathBuf::from("/").join(&bind.target).join(rest),
                    ));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Runtime state directories (`/run/docker/runtime-*/<namespace>/`) that still hold state of
/// `container`.
fn runtime_roots(container: &str) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for runtime in fs::read_dir("/run/docker").into_iter().flatten().flatten() {
        if !runtime
            .file_name()
            .to_string_lossy()
            .starts_with("runtime-")
        {
            continue;
        }
        for namespace in fs::read_dir(runtime.path()).into_iter().flatten().flatten() {
            let holds = fs::read_dir(namespace.path())
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(container));
            if holds {
                roots.push(namespace.path());
            }
        }
    }
    roots
}

/// Host processes of the engine's runtime (a containerd shim, runc, runsc and its sandbox,
/// gofer and exec) whose command line names `container` (a full 64-digit id).
fn processes_naming(container: &str) -> Vec<i32> {
    let own = std::process::id() as i32;
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = fs::read_link(entry.path().join("exe")).ok()?;
            let exe = exe.file_name()?.to_string_lossy().into_owned();
            if !["containerd-shim", "runc", "runsc", "crun"]
                .iter()
                .any(|runtime| exe.starts_with(runtime))
            {
                return None;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let names = cmdline
                .split(|b| *b == 0)
                .any(|arg| String::from_utf8_lossy(arg).contains(container));
            (names && pid != own).then_some(pid)
        })
        .collect()
}

/// Memory, CPU and tasks of the cgroup `pid` is in (v1 or v2).
fn usage_of(pid: u32) -> (Option<u64>, Option<u64>, Option<u64>) {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return (None, None, None);
    };
    let path_of = |controller: &str| {
        text.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
    };
    let read = |path: String| -> Option<u64> { fs::read_to_string(path).ok()?.trim().parse().ok() };
    let memory = path_of("memory")
        .and_then(|p| read(format!("/sys/fs/cgroup/memory{p}/memory.usage_in_bytes")));
    let cpu = path_of("cpuacct")
        .and_then(|p| read(format!("/sys/fs/cgroup/cpuacct{p}/cpuacct.usage")))
        .map(|ns| ns / 1000);
    let pids = path_of("pids").and_then(|p| read(format!("/sys/fs/cgroup/pids{p}/pids.current")));
    (memory, cpu, pids)
}

#[async_trait]
impl Backend for DockerBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind
    }

    fn isolation(&self) -> &'static str {
        match self.inner.runtime.as_deref() {
            Some("runsc") => "gvisor",
            _ => "namespaces",
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            stdin: true,
            terminals: true,
            pause: true,
            adopt: true,
            files: self.files.is_some(),
            ..Capabilities::default()
        }
    }

    fn bounds(&self) -> Bounds {
        self.inner.bounds
    }

    async fn health(&self) -> Health {
        let inner = &self.inner;
        let runtime = match &inner.runtime {
            Some(runtime) => format!("runtime {runtime}"),
            None => "its default runtime".to_owned(),
        };
        match tokio::time::timeout(Duration::from_secs(5), inner.docker.ping()).await {
            Ok(Ok(_)) => Health {
                healthy: true,
                detail: format!(
                    "Docker Engine {} at {}, {runtime}",
                    inner.engine_version,
                    inner.socket.display()
                ),
            },
            Ok(Err(e)) => Health {
                healthy: false,
                detail: format!("the Docker Engine at {} fails: {e}", inner.socket.display()),
            },
            Err(_) => Health {
                healthy: false,
                detail: format!(
                    "the Docker Engine at {} did not answer within 5 s",
                    inner.socket.display()
                ),
            },
        }
    }

    async fn has_template(&self, name: &str) -> Result<bool, BackendError> {
        Ok(name == sbx_images::host::HOST
            || self
                .inner
                .images
                .as_ref()
                .is_some_and(|store| store.template(name).is_some()))
    }

    /// The engine's copies of the template's image (`sbx-template:<name>-<hash>`) go; one a
    /// container still uses (another daemon's on the same engine) stays.
    async fn template_removed(&self, name: &str) -> Result<(), BackendError> {
        self.inner.remove_images_of(name).await
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<Handle, BackendError> {
        self.inner.create(spec).await
    }

    async fn inspect(&self, handle: &Handle) -> Result<Observed, BackendError> {
        let state = self.inner.state(handle).await?;
        let main_pid = state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let (memory_bytes, cpu_usec, pids) = main_pid.map_or((None, None, None), usage_of);
        Ok(Observed {
            alive: state.running == Some(true),
            main_pid,
            memory_bytes,
            cpu_usec,
            pids,
            frozen: state.paused,
        })
    }

    async fn adopt(&self, handle: &Handle) -> Result<(), BackendError> {
        let state = self.inner.state(handle).await?;
        if state.running == Some(true) {
            Ok(())
        } else {
            Err(BackendError::NotFound("the container has stopped".into()))
        }
    }

    async fn list_owned(&self) -> Result<Vec<SandboxId>, BackendError> {
        let inner = &self.inner;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{LABEL_INSTANCE}={}", inner.instance)],
            )])),
            ..Default::default()
        };
        let containers = inner
            .call(
                "container list",
                inner.docker.list_containers(Some(options)),
            )
            .await?
            .map_err(|e| engine_error("cannot list the engine's containers", e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| SandboxId::parse(c.labels?.get(LABEL_SANDBOX)?).ok())
            .collect())
    }

    async fn destroy(&self, id: &SandboxId, handle: Option<&Handle>) -> Result<(), BackendError> {
        let inner = &self.inner;
        let removed = inner.remove(&inner.container_name(id)).await?;
        // A container the handle names but the engine lost (removed by hand, a crashed
        // engine): what its runtime left still goes.
        if let Some(container) = handle.and_then(|h| container_of(h).ok()) {
            if removed.as_deref() != Some(container.as_str()) {
                inner.sweep(&container).await;
            }
        }
        Ok(())
    }

    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError> {
        self.inner.command(handle, spec, None).await
    }

    fn files(&self) -> Option<&dyn sbx_backend::Files> {
        self.files
            .as_ref()
            .map(|files| files as &dyn sbx_backend::Files)
    }

    async fn wait_exit(&self, handle: &Handle) -> Result<(), BackendError> {
        let inner = &self.inner;
        let container = container_of(handle)?;
        loop {
            let mut waiting = inner
                .docker
                .wait_container(&container, None::<WaitContainerOptions>);
            match waiting.next().await {
                Some(Err(e)) if is_missing(&e) => return Ok(()),
                // Ended (an exit code, or the engine's error for a non-zero one).
                Some(Ok(_))
                | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. }))
                | None => match inner.state(handle).await {
                    Ok(state) if state.running == Some(true) => {}
                    Err(BackendError::NotFound(_)) | Ok(_) => return Ok(()),
                    Err(_) => {}
                },
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "waiting on a container failed; asking again");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn terminals(&self) -> Option<&dyn Terminals> {
        Some(self)
    }

    fn pause(&self) -> Option<&dyn PauseResume> {
        Some(self)
    }
}

#[async_trait]
impl Terminals for DockerBackend {
    async fn open_terminal(
        &self,
        handle: &Handle,
        spec: TerminalSpec,
    ) -> Result<ExecSession, BackendError> {
        let size = spec.size;
        let spec = ExecSpec {
            argv: spec.argv,
            env: spec.env,
            cwd: spec.cwd,
            user: spec.user,
            stdin: sbx_backend::StdinMode::Pipe,
        };
        self.inner.command(handle, spec, Some(size)).await
    }
}

#[async_trait]
impl PauseResume for DockerBackend {
    async fn pause(&self, handle: &Handle) -> Result<(), BackendError> {
        let inner = &self.inner;
        if inner.state(handle).await?.paused == Some(true) {
            return Ok(());
        }
        let container = container_of(handle)?;
        inner
            .call("container pause", inner.docker.pause_container(&container))
            .await?
            .map_err(|e| engine_error("the engine could not pause the container", e))
    }

    async fn resume(&self, handle: &Handle) -> Result<(), BackendError> {
        let inner = &self.inner;
        if inner.state(handle).await?.paused != Some(true) {
            return Ok(());
        }
        let container = container_of(handle)?;
        inner
            .call(
                "container unpause",
                inner.docker.unpause_container(&container),
            )
            .await?
            .map_err(|e| engine_error("the engine could not resume the container", e))
    }
}
