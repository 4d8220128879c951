//! Filesystem snapshots of native sandboxes (`Snapshots`): layers under `<data>/snapshots/`
//! (see `crate::layers`). A capture freezes the sandbox (unless it is paused already), runs
//! the snapshot helper (`crate::capture`) on its disk, and thaws it; the new layer is made
//! under a temporary name and renamed into place whole. A sandbox started from a snapshot
//! mounts its layer, idmapped, under its own writable layer (`stage1`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use sbx_backend::{BackendError, ByteStream, Handle, SnapshotName, Snapshots};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::keys::NativeHandle;
use super::{blocking, destroy, NativeBackend, FREEZE_DEADLINE, ID_BASE};
use crate::capture::{self, Job, Outcome};
use crate::layers;

/// Longest a capture may take (the sandbox is frozen meanwhile).
const CAPTURE_DEADLINE: Duration = Duration::from_secs(600);
/// zstd level of exported snapshots: fast, still a good ratio.
const ZSTD_LEVEL: i32 = 3;

/// The loop device whose backing file is `image`.
fn loop_device_of(image: &Path) -> Option<PathBuf> {
    let image = fs::canonicalize(image).ok()?;
    for entry in fs::read_dir("/sys/block").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(backing.trim_end()) == image {
            return Some(Path::new("/dev").join(name));
        }
    }
    None
}

impl NativeBackend {
    fn new_layer_dir(&self, name: &str) -> Result<PathBuf, BackendError> {
        self.inner.layout.snapshot(name)?;
        let dir = self.inner.layout.snapshots().join(format!(".new-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| BackendError::io("cannot make a snapshot", e))?;
        Ok(dir)
    }

    /// Moves a finished `.new-NAME` into place.
    fn publish(&self, staging: &Path, name: &str) -> Result<(), BackendError> {
        let target = self.inner.layout.snapshot(name)?;
        if target.exists() {
            return Err(BackendError::other(format!(
                "snapshot {name} exists already"
            )));
        }
        fs::rename(staging, &target).map_err(|e| BackendError::io("cannot store a snapshot", e))
    }

    async fn run_capture(&self, job: Job) -> Result<u64, BackendError> {
        let mut child = tokio::process::Command::new(&self.inner.stage1_program)
            .arg(capture::CAPTURE_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BackendError::io("cannot start the snapshot helper", e))?;
        let text = serde_json::to_vec(&job).expect("plain struct serialises");
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let mut stdout = child.stdout.take().expect("stdout was piped");
        let exchange = async {
            stdin.write_all(&text).await?;
            drop(stdin);
            let mut answer = Vec::new();
            (&mut stdout).take(1 << 20).read_to_end(&mut answer).await?;
            let _ = child.wait().await;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(CAPTURE_DEADLINE, exchange).await {
            Ok(answer) => answer.map_err(|e| BackendError::io("the snapshot helper failed", e))?,
            Err(_) => {
                return Err(BackendError::Timeout {
                    operation: "snapshot",
                    after: CAPTURE_DEADLINE,
                })
            }
        };
        match serde_json::from_slice::<Outcome>(&answer) {
            Ok(Outcome::Captured { bytes }) => Ok(bytes),
            Ok(Outcome::Failed { message }) => Err(BackendError::other(format!(
                "cannot capture the sandbox's files: {message}"
            ))),
            Err(_) => Err(BackendError::other("the snapshot helper died")),
        }
    }
}

#[async_trait]
impl Snapshots for NativeBackend {
    async fn snapshot(
        &self,
        handle: &Handle,
        name: &SnapshotName,
        parent: Option<&SnapshotName>,
    ) -> Result<u64, BackendError> {
        let native = NativeHandle::parse(handle)?;
        if !destroy::is_alive(native.pid, native.start_time) {
            return Err(BackendError::gone());
        }
        let key = native.key()?;
        let layout = &self.inner.layout;
        let parent = match parent {
            None => None,
            Some(parent) => {
                let layer = layout.snapshot_layer(parent)?;
                if !layer.is_dir() {
                    return Err(BackendError::other(format!(
                        "snapshot {parent}, which sandbox {} started from, is not stored here",
                        native.id
                    )));
                }
                Some(layer)
            }
        };
        let image = layout.disk_image(&key);
        let device = blocking(move || {
            loop_device_of(&image).ok_or_else(|| BackendError::other("the sandbox has no disk"))
        })
        .await?;
        let staging = self.new_layer_dir(name)?;
        let mount_point = staging.join("mnt");
        fs::create_dir(&mount_point).map_err(|e| BackendError::io("cannot make a snapshot", e))?;
        let job = Job {
            device,
            mount_point: mount_point.clone(),
            base: ID_BASE + native.slot * crate::stage1::ID_RANGE,
            parent,
            dest: staging.join("layer"),
        };
        // Frozen for the copy: what is captured is one instant of the sandbox's files.
        let cgroup = self.inner.cgroup(&key);
        let was_frozen = cgroup.frozen().unwrap_or(false);
        if !was_frozen {
            let freezing = cgroup.clone();
            blocking(move || {
                freezing
                    .freeze(FREEZE_DEADLINE)
                    .map_err(|e| BackendError::io("cannot freeze the sandbox", e))
            })
            .await?;
        }
        let captured = self.run_capture(job).await;
        if !was_frozen {
            if let Err(e) = cgroup.thaw() {
                tracing::error!(error = %e, sandbox = %native.id, "cannot thaw a sandbox after a snapshot");
            }
        }
        let _ = fs::remove_dir(&mount_point);
        let stored = captured.and_then(|bytes| {
            self.publish(&staging, name)?;
            Ok(bytes)
        });
        if stored.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        stored
    }

    async fn has_snapshot(&self, name: &SnapshotName) -> Result<bool, BackendError> {
        Ok(self.inner.layout.snapshot_layer(name)?.is_dir())
    }

    async fn delete_snapshot(&self, name: &SnapshotName) -> Result<(), BackendError> {
        let dir = self.inner.layout.snapshot(name)?;
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io("cannot remove a snapshot", e)),
        })
        .await
    }

    async fn export_snapshot(
        &self,
        name: &SnapshotName,
        manifest: Vec<u8>,
    ) -> Result<ByteStream, BackendError> {
        let layer = self.inner.layout.snapshot_layer(name)?;
        if !layer.is_dir() {
            return Err(BackendError::NotFound(format!("snapshot {name}")));
        }
        // Written by a blocking task into a bounded pipe; the stream reads the other end. A
        // reader that leaves breaks the pipe, which ends the task.
        let (reader, writer) = tokio::io::duplex(1 << 20);
        tokio::task::spawn_blocking(move || {
            let writer = tokio_util_bridge(writer);
            let written =
                zstd::stream::write::Encoder::new(writer, ZSTD_LEVEL).and_then(|mut encoder| {
                    layers::export(&layer, &manifest, &mut encoder)?;
                    encoder.finish()?.flush()
                });
            if let Err(e) = written {
                tracing::debug!(error = %e, "a snapshot export ended early");
            }
        });
        let stream = tokio_util_stream(reader);
        Ok(stream.boxed())
    }

    async fn import_snapshot(
        &self,
        name: &SnapshotName,
        data: ByteStream,
        max_bytes: u64,
    ) -> Result<(u64, Vec<u8>), BackendError> {
        let staging = self.new_layer_dir(name)?;
        let layer = staging.join("layer");
        let reader = stream_reader(data);
        let imported = blocking(move || {
            let decoder = zstd::stream::read::Decoder::new(reader)
                .map_err(|e| BackendError::io("cannot read the snapshot file", e))?;
            layers::import(decoder, &layer, max_bytes).map_err(|e| match e {
                layers::ImportError::Invalid(message) => BackendError::File {
                    kind: sbx_backend::FileErrorKind::Invalid,
                    message,
                },
                layers::ImportError::TooLarge(message) => BackendError::File {
                    kind: sbx_backend::FileErrorKind::NoSpace,
                    message,
                },
                layers::ImportError::Io(e) if e.kind() == std::io::ErrorKind::Other => {
                    BackendError::File {
                        kind: sbx_backend::FileErrorKind::Invalid,
                        message: format!("not a snapshot file: {e}"),
                    }
                }
                layers::ImportError::Io(e) => BackendError::io("cannot store the snapshot", e),
            })
        })
        .await;
        let stored = imported.and_then(|manifest| {
            let bytes = layers::stored_bytes(&staging.join("layer"));
            self.publish(&staging, name)?;
            Ok((bytes, manifest))
        });
        if stored.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        stored
    }
}

/// A synchronous writer into the async pipe (for the blocking export task).
fn tokio_util_bridge(writer: tokio::io::DuplexStream) -> impl Write {
    tokio_util::io::SyncIoBridge::new(writer)
}

fn tokio_util_stream(
    reader: tokio::io::DuplexStream,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
}

/// A synchronous reader of a byte stream (for the blocking import task).
fn stream_reader(data: ByteStream) -> impl std::io::Read + Send + 'static {
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(data))
}
