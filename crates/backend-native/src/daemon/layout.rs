//! Where the native backend keeps things on the host. Every path that belongs to a sandbox
//! contains its host key (its id, or the key of the pooled helper it was built from: see
//! [`super::keys`]), so destroy and cleanup can find all of it from the key alone.
//!
//! ```text
//! <data>/instance-id                 random name of this daemon instance (cgroup parent)
//! <data>/templates/<name>/rootfs     read-only lower layers
//! <data>/sandboxes/<id>/disk.img     the sandbox's disk: a sparse ext4 image (its quota)
//! <data>/sandboxes/<id>/disk         its mount point (in the sandbox's mount ns only), holding
//!                                    upper/ (overlay upperdir) and work/ (overlay workdir)
//! <data>/sandboxes/<id>/slot         which uid range the sandbox maps to
//! <data>/sandboxes/<id>/rootfs       mount point of the sandbox root (in its own mount ns only)
//! <data>/sandboxes/<id>/ctl.sock     control socket of the sandbox's init (host side)
//! <data>/sandboxes/<id>/sandbox-id   the sandbox these traces serve, when not <id> (pooled)
//! <data>/sandboxes/<id>/snapshot     mount point of the snapshot layer it started from
//! <data>/snapshots/<name>/layer      a snapshot: a layer, owners in the sandbox's own ids
//! <data>/snapshots/.new-<name>       a snapshot being captured or imported (removed on failure)
//! ```

use std::path::{Path, PathBuf};

use sbx_backend::SandboxId;

/// `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The name of a sandbox's disk image in its directory.
pub const DISK_IMAGE: &str = "disk.img";

#[derive(Debug, Clone)]
pub struct Layout {
    data_dir: PathBuf,
}

impl Layout {
    /// Checks that every path derived from `data_dir` is usable: absolute, free of the
    /// characters overlayfs options cannot carry, short enough for a control socket.
    pub fn new(data_dir: &Path) -> Result<Layout, String> {
        if !data_dir.is_absolute() {
            return Err(format!(
                "data directory {} is not absolute",
                data_dir.display()
            ));
        }
        let text = data_dir
            .to_str()
            .ok_or("data directory path is not UTF-8")?;
        if text.contains([',', ':', '\\', '\n']) {
            return Err(format!(
                "data directory {text:?} contains one of , : \\ which overlayfs options cannot carry"
            ));
        }
        let layout = Layout {
            data_dir: data_dir.to_owned(),
        };
        let probe = layout.socket(&SandboxId::generate());
        if probe.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "data directory {text:?} is too long: control socket paths would exceed {MAX_SOCKET_PATH} bytes"
            ));
        }
        Ok(layout)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn instance_file(&self) -> PathBuf {
        self.data_dir.join("instance-id")
    }

    pub fn templates(&self) -> PathBuf {
        self.data_dir.join("templates")
    }

    pub fn sandboxes(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }

    pub fn sandbox(&self, id: &SandboxId) -> PathBuf {
        self.sandboxes().join(id.as_str())
    }

    pub fn disk_image(&self, id: &SandboxId) -> PathBuf {
        self.sandbox(id).join(DISK_IMAGE)
    }

    pub fn disk_mount(&self, id: &SandboxId) -> PathBuf {
        self.sandbox(id).join("disk")
    }

    pub fn slot_file(&self, id: &SandboxId) -> PathBuf {
        self.sandbox(id).join("slot")
    }

    pub fn rootfs(&self, id: &SandboxId) -> PathBuf {
        self.sandbox(id).join("rootfs")
    }

    pub fn socket(&self, id: &SandboxId) -> PathBuf {
        self.sandbox(id).join("ctl.sock")
    }

    pub fn snapshots(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }

    /// `<data>/snapshots/<name>`: a snapshot's directory (its `layer/`). The name is checked
    /// to be one path component of the characters snapshot names have.
    pub fn snapshot(&self, name: &str) -> Result<PathBuf, sbx_backend::BackendError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(sbx_backend::BackendError::other(format!(
                "malformed snapshot name {name:?}"
            )));
        }
        Ok(self.snapshots().join(name))
    }

    pub fn snapshot_layer(&self, name: &str) -> Result<PathBuf, sbx_backend::BackendError> {
        Ok(self.snapshot(name)?.join("layer"))
    }

    pub fn owner_file(&self, id: &SandboxId) -> PathBuf {
        self.sandbox(id).join("sandbox-id")
    }
}
