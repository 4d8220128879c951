//! Building a sandbox: its host traces made ahead of the request (uid range, directories,
//! disk, cgroup, a stage-1 helper that joined it — what the warm pool keeps ready), then what
//! depends on the request (limits, template, name), and the pool that keeps helpers ready.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sbx_backend::{BackendError, SandboxId, SandboxSpec, Storage};

use super::{blocking, cgroup, disk, layout, pool, template, Inner, ID_BASE};
use crate::stage1;

/// `/dev/shm` size at most (Docker's default).
const SHM_BYTES: u64 = 64 << 20;
/// One TCP socket's buffer at most, each way (the kernel's default `tcp_wmem` maximum).
const SOCKET_BUFFER_BYTES: u64 = 4 << 20;
/// How long the pool waits after a failure, or for room on the disk, before trying again.
const REFILL_BACKOFF: Duration = Duration::from_secs(5);

impl Inner {
    pub(super) fn cgroup(&self, key: &SandboxId) -> cgroup::SandboxCgroup {
        self.cgroups.sandbox(&self.instance, key.as_str())
    }

    /// A uid range for `key`, free host-wide (see [`sbx_backend::slots`]).
    fn allocate_slot(&self, key: &SandboxId) -> Result<u32, BackendError> {
        // Another instance's sandbox is alive while its cgroup exists.
        self.slots.allocate(key, sbx_backend::slots::sandbox_alive)
    }

    pub(super) fn free_slot(&self, slot: u32, key: &SandboxId) {
        self.slots.free(slot, key);
    }

    /// Everything of a sandbox that can be made before its request: a uid range, the
    /// directories, its disk of `disk_bytes` (attached), the cgroup, and a stage-1 helper that
    /// has joined it. On error the caller rolls back by key.
    pub(super) async fn start_helper(
        self: &Arc<Self>,
        key: SandboxId,
        disk_bytes: u64,
    ) -> Result<pool::Helper, BackendError> {
        let slot = self.allocate_slot(&key)?;
        let prepare = self.clone();
        let prepare_key = key.clone();
        let prepared = blocking(move || prepare.prepare_host(&prepare_key, slot, disk_bytes)).await;
        let (procs, disk) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                self.free_slot(slot, &key);
                return Err(e);
            }
        };
        let join = stage1::Join {
            cgroup_procs: procs,
            disk_device: disk.device.clone(),
            disk_mount: self.layout.disk_mount(&key),
            id_base: ID_BASE + slot * stage1::ID_RANGE,
        };
        pool::Helper::start(&self.stage1_program, key, slot, disk_bytes, disk, join).await
    }

    /// Directories, disk and cgroup of `key`; returns the `cgroup.procs` files to join and the
    /// attached disk.
    fn prepare_host(
        &self,
        key: &SandboxId,
        slot: u32,
        disk_bytes: u64,
    ) -> Result<(Vec<PathBuf>, disk::Disk), BackendError> {
        let layout = &self.layout;
        let io =
            |what: &str, e: io::Error| BackendError::io(format!("{what} for sandbox {key}"), e);
        fs::create_dir(layout.sandbox(key)).map_err(|e| io("cannot create the directory", e))?;
        // Searchable by others: the sandbox's init, whose host ids are the sandbox's, climbs
        // from its root to here and back before `pivot_root` (stage1::sandbox_setup). Nothing
        // else reaches it: the sandboxes directory above stays 0700.
        fs::set_permissions(layout.sandbox(key), fs::Permissions::from_mode(0o711))
            .map_err(|e| io("cannot chmod the directory", e))?;
        fs::write(layout.slot_file(key), slot.to_string())
            .map_err(|e| io("cannot record the uid range", e))?;
        for dir in [layout.disk_mount(key), layout.rootfs(key)] {
            fs::create_dir(&dir).map_err(|e| io("cannot create a directory", e))?;
        }
        disk::create(&layout.disk_image(key), disk_bytes)
            .map_err(|e| io("cannot make the disk", e))?;
        let disk =
            disk::attach(&layout.disk_image(key)).map_err(|e| io("cannot attach the disk", e))?;
        let cgroup = self.cgroup(key);
        cgroup
            .make()
            .map_err(|e| io("cannot create the cgroup", e))?;
        Ok((cgroup.procs_files(), disk))
    }

    /// What depends on the request: its limits (written now) and the build request for the
    /// helper of `key`.
    pub(super) fn build_request(
        &self,
        spec: &SandboxSpec,
        key: &SandboxId,
    ) -> Result<stage1::Request, BackendError> {
        let template = self
            .templates
            .resolve(&spec.template)
            .ok_or_else(|| BackendError::TemplateNotFound(spec.template.clone()))?;
        self.cgroup(key).set_limits(&spec.limits).map_err(|e| {
            BackendError::io(format!("cannot set the limits of sandbox {}", spec.id), e)
        })?;
        let layout = &self.layout;
        let template::TemplateRoot {
            lower,
            binds,
            layers,
            config,
        } = template;
        let layer_mounts = if layers.is_empty() {
            None
        } else {
            let mounts = layout.sandbox(key).join("layers");
            for index in 0..layers.len() {
                fs::create_dir_all(mounts.join(index.to_string()))
                    .map_err(|e| BackendError::io("cannot make the layers' mount points", e))?;
            }
            Some(mounts)
        };
        if let Some(config) = &config {
            let text = serde_json::to_vec(config).unwrap_or_default();
            fs::write(layout.sandbox(key).join(IMAGE_CONFIG), text)
                .map_err(|e| BackendError::io("cannot record the image's defaults", e))?;
        }
        let snapshot = match &spec.snapshot {
            None => None,
            Some(name) => {
                let layer = layout.snapshot_layer(name)?;
                if !layer.is_dir() {
                    return Err(BackendError::other(format!(
                        "snapshot {name} is not stored by this backend"
                    )));
                }
                let mount_point = layout.sandbox(key).join("snapshot");
                fs::create_dir_all(&mount_point)
                    .map_err(|e| BackendError::io("cannot make the snapshot's mount point", e))?;
                Some(stage1::SnapshotLayer { layer, mount_point })
            }
        };
        Ok(stage1::Request {
            hostname: spec.id.to_string(),
            rootfs: layout.rootfs(key),
            lower,
            binds,
            socket: layout.socket(key),
            // tmpfs pages count against the memory limit and cannot be reclaimed by killing a
            // process: were they allowed to fill it, the OOM killer would end every process,
            // init included. Bounded to half the limit together, a full /tmp is ENOSPC instead.
            tmp_bytes: spec.limits.memory_bytes * 2 / 5,
            shm_bytes: SHM_BYTES.min(spec.limits.memory_bytes / 10),
            socket_buffer_bytes: (spec.limits.memory_bytes / 16).min(SOCKET_BUFFER_BYTES),
            snapshot,
            layers,
            layer_mounts,
        })
    }

    /// The data directory's file system, and what every sandbox disk on it (pooled, being
    /// built, live) may still grow by: each image's size less the blocks it has.
    // The casts are no-ops on 64-bit targets only (`fsblkcnt_t`, `c_ulong`).
    #[allow(clippy::unnecessary_cast)]
    pub(super) fn storage(&self) -> Storage {
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
    pub(super) async fn refill_loop(self: Arc<Self>) {
        use std::sync::atomic::Ordering;
        while !self.stopping.load(Ordering::SeqCst) {
            if self.pool.ready_len() >= self.pool_size {
                self.refill.notified().await;
                continue;
            }
            let room = {
                let inner = self.clone();
                blocking(move || Ok(inner.disk_has_room(inner.pool_disk_bytes)))
                    .await
                    .unwrap_or(false)
            };
            if !room {
                self.back_off().await;
                continue;
            }
            let key = SandboxId::generate();
            let _busy = self.pool.busy(&key);
            match self.start_helper(key.clone(), self.pool_disk_bytes).await {
                Ok(helper) if !self.stopping.load(Ordering::SeqCst) => self.pool.add(helper),
                Ok(helper) => {
                    helper.abort().await;
                    self.rollback(&key).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "cannot prepare a sandbox ahead of time");
                    self.rollback(&key).await;
                    self.back_off().await;
                }
            }
        }
    }

    async fn back_off(&self) {
        tokio::select! {
            _ = tokio::time::sleep(REFILL_BACKOFF) => {}
            _ = self.refill.notified() => {}
        }
    }

    /// Removes every trace of `key` after a failed build.
    pub(super) async fn rollback(self: &Arc<Self>, key: &SandboxId) {
        let inner = self.clone();
        let key = key.clone();
        if let Err(e) = blocking(move || inner.destroy_key(&key, None)).await {
            tracing::error!(error = %e.chain(), "rollback of a failed create left traces");
        }
    }

    /// Removes what a failed create of sandbox `id` (on host key `key`) left. The sandbox's
    /// key is forgotten only once its traces are gone: until then a destroy of the id (by
    /// lifecycle, or a cleanup that finds it as an orphan) still reaches them.
    pub(super) async fn rollback_create(self: &Arc<Self>, id: &SandboxId, key: &SandboxId) {
        let inner = self.clone();
        let (id, key) = (id.clone(), key.clone());
        let removed = blocking(move || {
            inner.destroy_key(&key, None)?;
            inner.keys.forget(&id);
            Ok(())
        })
        .await;
        if let Err(e) = removed {
            tracing::error!(error = %e.chain(), "rollback of a failed create left traces");
        }
    }
}

/// Where a sandbox made from an image keeps the image's defaults for its commands.
const IMAGE_CONFIG: &str = "image.json";

/// The image defaults of the sandbox whose host key is `key`, if it was made from an image.
pub(super) fn image_config(
    layout: &layout::Layout,
    key: &SandboxId,
) -> Option<sbx_backend::ImageConfig> {
    let text = fs::read(layout.sandbox(key).join(IMAGE_CONFIG)).ok()?;
    serde_json::from_slice(&text).ok()
}
