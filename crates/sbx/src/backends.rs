//! The factory: every backend this build has, made from the configuration. Adding a backend is
//! its crate, a cargo feature when it pulls dependencies, and one arm in [`build_one`] —
//! nothing in lifecycle, api or store.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use sbx_backend::Backend;

/// The backends this build can run.
pub const AVAILABLE: &[&str] = &[
    #[cfg(feature = "native")]
    "native",
    #[cfg(feature = "oci")]
    "oci",
    #[cfg(feature = "oci")]
    "crun",
    #[cfg(feature = "oci")]
    "runc",
    #[cfg(feature = "docker")]
    "docker",
    #[cfg(feature = "docker")]
    "docker-gvisor",
    #[cfg(feature = "backend-fake")]
    "fake",
];

/// Checks that every profile names a backend this build has: what `sbx config check` and
/// `sbx serve` say of a configuration that names another.
pub fn check(config: &sbx_config::Config) -> anyhow::Result<()> {
    for profile in config.profiles.values() {
        if !AVAILABLE.contains(&profile.backend.as_str()) {
            anyhow::bail!(
                "profiles.{}.backend: {:?} is not available in this build of sbx (backends: {})",
                profile.name,
                profile.backend,
                AVAILABLE.join(", ")
            );
        }
    }
    Ok(())
}

/// Becomes the helper a backend re-executed this binary as, if it did (and then never
/// returns): the native backend's stage 1 and sandbox init, the oci backend's shim.
pub fn run_helper_if_requested() {
    #[cfg(feature = "native")]
    sbx_backend_native::run_if_requested();
    #[cfg(feature = "oci")]
    sbx_backend_oci::run_if_requested();
}

/// What a backend may need to be made.
pub struct Context<'a> {
    pub config: &'a sbx_config::Config,
    pub data_dir: &'a Path,
    /// Sandboxes to prepare ahead of time (0 for the offline cleanup).
    pub warm_pool: usize,
    /// The daemon's image store (templates from images).
    pub images: Arc<sbx_images::ImageStore>,
}

/// The backends a daemon runs: those its profiles name, and those that sandboxes still alive
/// in its store were made by (so that they are reconciled and can be destroyed). A backend of
/// the second kind that this build lacks is left out; reconciliation marks its sandboxes
/// failed.
pub fn wanted(config: &sbx_config::Config, live_backends: &[String]) -> BTreeSet<String> {
    let mut kinds: BTreeSet<String> = config
        .profiles
        .values()
        .map(|p| p.backend.clone())
        .collect();
    kinds.extend(
        live_backends
            .iter()
            .filter(|kind| AVAILABLE.contains(&kind.as_str()))
            .cloned(),
    );
    kinds
}

pub fn build(
    kinds: &BTreeSet<String>,
    context: &Context<'_>,
) -> anyhow::Result<Vec<Arc<dyn Backend>>> {
    kinds
        .iter()
        .map(|kind| {
            build_one(kind, context).with_context(|| format!("the {kind} backend cannot start"))
        })
        .collect()
}

fn build_one(kind: &str, context: &Context<'_>) -> anyhow::Result<Arc<dyn Backend>> {
    // Each arm only reads what its backend needs; unused with some feature sets.
    let _ = context;
    match kind {
        #[cfg(feature = "native")]
        "native" => {
            let config = context.config;
            let native = sbx_backend_native::NativeBackend::new(sbx_backend_native::NativeConfig {
                data_dir: context.data_dir.to_owned(),
                warm_pool: context.warm_pool,
                warm_pool_disk_bytes: config
                    .profile(sbx_config::DEFAULT_PROFILE)
                    .map_or(0, |p| p.resources.disk_mb << 20),
                disk_reserve_bytes: config.capacity.disk_reserve_mb << 20,
                disk_overcommit: config.capacity.disk_overcommit,
                stage1_program: None,
                images: Some(context.images.clone()),
            })
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
            Ok(Arc::new(native))
        }
        // `oci` runs `[oci] runtime` (gVisor's `runsc` by default); `crun` and `runc` are the
        // same backend over those runtimes, each with its own state.
        #[cfg(feature = "oci")]
        "oci" | "crun" | "runc" => {
            let settings = &context.config.oci;
            let (kind, runtime) = match kind {
                "crun" => ("crun", "crun".to_owned()),
                "runc" => ("runc", "runc".to_owned()),
                _ => ("oci", settings.runtime.clone()),
            };
            // Each profile of this backend on the host template: its default resources, as
            // many as it asks (the daemon's `warm_pool` unless it says).
            let warm = context
                .config
                .profiles
                .values()
                .filter(|p| p.backend == kind && p.template == sbx_images::host::HOST)
                .map(|p| {
                    let count = p.warm_pool.unwrap_or(context.warm_pool);
                    (sbx_lifecycle::sandbox_limits(&(&p.resources).into()), count)
                })
                .collect();
            let oci = sbx_backend_oci::OciBackend::new(sbx_backend_oci::OciConfig {
                kind,
                data_dir: context.data_dir.to_owned(),
                runtime: runtime.into(),
                platform: settings.platform.clone(),
                favor_cgroup_moves: settings.favor_cgroup_moves,
                images: Some(context.images.clone()),
                shim_program: None,
                warm,
            })
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
            Ok(Arc::new(oci))
        }
        // `docker` runs containers under the engine's default runtime, `docker-gvisor` under
        // gVisor's runsc registered with the engine (`[docker] gvisor_runtime`).
        #[cfg(feature = "docker")]
        "docker" | "docker-gvisor" => {
            let settings = &context.config.docker;
            let (kind, runtime) = match kind {
                "docker-gvisor" => ("docker-gvisor", Some(settings.gvisor_runtime.clone())),
                _ => ("docker", None),
            };
            let docker = sbx_backend_docker::DockerBackend::new(sbx_backend_docker::DockerConfig {
                kind,
                data_dir: context.data_dir.to_owned(),
                socket: settings.socket.clone(),
                runtime,
                images: Some(context.images.clone()),
                agent_program: None,
            })
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
            Ok(Arc::new(docker))
        }
        #[cfg(feature = "backend-fake")]
        "fake" => Ok(Arc::new(sbx_backend_fake::FakeBackend::new())),
        other => anyhow::bail!(
            "backend {other:?} is not available in this build of sbx (backends: {})",
            AVAILABLE.join(", ")
        ),
    }
}
