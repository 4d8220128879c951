//! The backend contract (`sbx-backend-conformance`) on the backends this binary builds in.
//! One `suite!` line per backend; the fake backend runs it in its own crate (no root needed).
//!
//! The native backend needs root, and its stage 1 is the `sbx` binary under test.

#![cfg(feature = "native")]

use std::sync::Arc;

use async_trait::async_trait;
use sbx_backend::Backend;
use sbx_backend_native::{NativeBackend, NativeConfig};

/// After a test that panicked (its sandboxes were never destroyed): `sbx cleanup` of the
/// subject's data directory, offline, with a profile on `kind`, so that a failing test leaves
/// nothing on the host for the next run's leak check.
fn clean_after_panic(data: &std::path::Path, kind: &str) {
    if !std::thread::panicking() {
        return;
    }
    let config = data.join("cleanup.toml");
    if std::fs::write(
        &config,
        format!("[profiles.default]\nbackend = \"{kind}\"\n"),
    )
    .is_err()
    {
        return;
    }
    let _ = std::process::Command::new(env!("CARGO_BIN_EXE_sbx"))
        .args(["cleanup", "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(&config)
        .env("SBX_URL", "http://127.0.0.1:1")
        .stdout(std::process::Stdio::null())
        .status();
}

/// The native backend on a data directory of its own.
struct Native {
    data: tempfile::TempDir,
}

impl Native {
    fn new() -> Native {
        Native {
            data: tempfile::Builder::new()
                .prefix("sbx-conformance-")
                .tempdir_in("/tmp")
                .unwrap(),
        }
    }
}

#[async_trait]
impl sbx_backend_conformance::Subject for Native {
    async fn instance(&self) -> Arc<dyn Backend> {
        let native = NativeBackend::new(NativeConfig {
            data_dir: self.data.path().to_owned(),
            warm_pool: 0,
            warm_pool_disk_bytes: 0,
            disk_reserve_bytes: 0,
            disk_overcommit: 1.0,
            stage1_program: Some(env!("CARGO_BIN_EXE_sbx").into()),
            images: None,
        })
        .unwrap_or_else(|e| panic!("the native backend cannot start: {}", e.chain()));
        Arc::new(native)
    }

    /// Removes the instance's cgroup parents, and checks that nothing was left.
    async fn finish(&self) {
        let backend = self.instance().await;
        backend.shutdown().await;
        let sandboxes: Vec<_> = std::fs::read_dir(self.data.path().join("sandboxes"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(sandboxes.is_empty(), "left behind: {sandboxes:?}");
        let instance = std::fs::read_to_string(self.data.path().join("instance-id")).unwrap();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let dir = hierarchy.path().join("sbx").join(instance.trim());
            assert!(!dir.exists(), "cgroup {} left behind", dir.display());
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        clean_after_panic(self.data.path(), "native");
    }
}

mod native {
    sbx_backend_conformance::suite!(super::Native::new());
}

/// The OCI backend over gVisor's `runsc` (installed by `scripts/setup --test`), on a data
/// directory of its own.
/// The OCI backend over a runtime: gVisor's `runsc`, `crun` or `runc` (all three installed by
/// `scripts/setup --test`).
#[cfg(feature = "oci")]
struct Gvisor {
    data: tempfile::TempDir,
    kind: &'static str,
    runtime: &'static str,
}

#[cfg(feature = "oci")]
impl Gvisor {
    fn new() -> Gvisor {
        Gvisor::over("oci", "runsc")
    }

    fn over(kind: &'static str, runtime: &'static str) -> Gvisor {
        Gvisor {
            data: tempfile::Builder::new()
                .prefix("sbx-conformance-")
                .tempdir_in("/tmp")
                .unwrap(),
            kind,
            runtime,
        }
    }
}

#[cfg(feature = "oci")]
#[async_trait]
impl sbx_backend_conformance::Subject for Gvisor {
    async fn instance(&self) -> Arc<dyn Backend> {
        let oci = sbx_backend_oci::OciBackend::new(sbx_backend_oci::OciConfig {
            kind: self.kind,
            data_dir: self.data.path().to_owned(),
            runtime: self.runtime.into(),
            platform: "ptrace".into(),
            favor_cgroup_moves: true,
            images: None,
            shim_program: Some(env!("CARGO_BIN_EXE_sbx").into()),
            warm: Vec::new(),
        })
        .unwrap_or_else(|e| panic!("the oci backend cannot start: {}", e.chain()));
        Arc::new(oci)
    }

    /// Checks that nothing was left: no container, bundle, mount or cgroup.
    async fn finish(&self) {
        let base = self.data.path().join(self.kind);
        let bundles: Vec<_> = std::fs::read_dir(base.join("bundles"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(bundles.is_empty(), "left behind: {bundles:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let data = self.data.path().to_string_lossy().into_owned();
        assert!(!mounts.contains(&data), "mounts left behind");
        let instance = std::fs::read_to_string(base.join("instance-id")).unwrap();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            // The instance's parent stays until shutdown; no sandbox's own may stay.
            let dir = hierarchy.path().join("sbx-oci").join(instance.trim());
            let leaves: Vec<_> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect();
            assert!(leaves.is_empty(), "cgroups left behind: {leaves:?}");
            // What the backend's shutdown would have removed.
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

#[cfg(feature = "oci")]
impl Drop for Gvisor {
    fn drop(&mut self) {
        clean_after_panic(self.data.path(), self.kind);
    }
}

#[cfg(feature = "oci")]
mod gvisor {
    sbx_backend_conformance::suite!(super::Gvisor::new());
}

#[cfg(feature = "oci")]
mod crun {
    sbx_backend_conformance::suite!(super::Gvisor::over("crun", "crun"));

    /// Once a crun backend has started, the host's cgroup v2 (where it has one, and the
    /// kernel has the option) is mounted with `favordynmods`: a sandbox's commands join its
    /// cgroup without an RCU grace period. (On a kernel that keeps the option on once set,
    /// as this machine's does, a run after the first finds it on already; the planning of
    /// the remount itself is unit-tested in `backend-oci`'s `cgroups.rs`.)
    #[tokio::test]
    async fn the_hosts_cgroup_v2_favors_moves_into_cgroups() {
        use sbx_backend_conformance::Subject;
        let features = std::fs::read_to_string("/sys/kernel/cgroup/features").unwrap_or_default();
        let kernel_has_it = features.split_whitespace().any(|f| f == "favordynmods");
        let subject = super::Gvisor::over("crun", "crun");
        let backend = subject.instance().await;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let cgroup2: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split_once(" - cgroup2 ").map(|(_, fs)| fs))
            .collect();
        for options in cgroup2.iter().filter(|_| kernel_has_it) {
            assert!(
                options.contains("favordynmods"),
                "cgroup2 mounted {options}"
            );
        }
        backend.shutdown().await;
        subject.finish().await;
    }
}

#[cfg(feature = "oci")]
mod runc {
    sbx_backend_conformance::suite!(super::Gvisor::over("runc", "runc"));
}

/// The Docker backend over the host's Docker Engine (`scripts/setup --test` installs and
/// starts it, with gVisor's runsc registered as `runsc`), under its default runtime or runsc.
#[cfg(feature = "docker")]
struct Docker {
    data: tempfile::TempDir,
    kind: &'static str,
    runtime: Option<&'static str>,
}

#[cfg(feature = "docker")]
impl Docker {
    fn over(kind: &'static str, runtime: Option<&'static str>) -> Docker {
        Docker {
            data: tempfile::Builder::new()
                .prefix("sbx-conformance-")
                .tempdir_in("/tmp")
                .unwrap(),
            kind,
            runtime,
        }
    }
}

#[cfg(feature = "docker")]
#[async_trait]
impl sbx_backend_conformance::Subject for Docker {
    async fn instance(&self) -> Arc<dyn Backend> {
        let docker = sbx_backend_docker::DockerBackend::new(sbx_backend_docker::DockerConfig {
            kind: self.kind,
            data_dir: self.data.path().to_owned(),
            socket: "/var/run/docker.sock".into(),
            runtime: self.runtime.map(str::to_owned),
            images: None,
            agent_program: Some(env!("CARGO_BIN_EXE_sbx").into()),
        })
        .unwrap_or_else(|e| panic!("the docker backend cannot start: {}", e.chain()));
        Arc::new(docker)
    }

    /// Checks that nothing was left: no container of the instance, no runtime process naming
    /// one.
    async fn finish(&self) {
        let instance =
            std::fs::read_to_string(self.data.path().join(self.kind).join("instance-id")).unwrap();
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=sbx.instance={}", instance.trim()))
            .output()
            .unwrap();
        assert!(out.status.success(), "docker ps failed");
        assert!(
            out.stdout.is_empty(),
            "containers left behind: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[cfg(feature = "docker")]
impl Drop for Docker {
    fn drop(&mut self) {
        clean_after_panic(self.data.path(), self.kind);
    }
}

#[cfg(feature = "docker")]
mod docker {
    sbx_backend_conformance::suite!(super::Docker::over("docker", None));
}

#[cfg(feature = "docker")]
mod docker_gvisor {
    sbx_backend_conformance::suite!(super::Docker::over("docker-gvisor", Some("runsc")));
}
