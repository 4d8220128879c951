//! Filesystem snapshots of native sandboxes (`Snapshots`): layers under `<data>/snapshots/`
//! (see `crate::layers`). A capture freezes the sandbox (unless it is paused already), runs
//! the snapshot helper (`crate::capture`) on its disk, and thaws it — whatever becomes of the
//! call (a guard thaws); the new layer is made under `.new-<id>` and renamed into place whole.
//! An import is unpacked by the same helper, never by the daemon. A sandbox started from a
//! snapshot mounts its layer, idmapped, under its own writable layer (`stage1`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sbx_backend::{
    BackendError, ByteStream, FileErrorKind, Handle, SharedResource, SnapshotName, Snapshots,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::keys::NativeHandle;
use super::{blocking, cgroup, destroy, NativeBackend, FREEZE_DEADLINE, ID_BASE};
use crate::capture::{self, Job, Outcome};
use crate::layers;

/// Longest a capture may take (the sandbox is frozen meanwhile): shorter than lifecycle's own
/// deadline, so that this one fires first and its clean-up runs.
const CAPTURE_DEADLINE: Duration = Duration::from_secs(540);
/// Longest an import may take.
const IMPORT_DEADLINE: Duration = Duration::from_secs(1800);
/// zstd level of exported snapshots: fast, still a good ratio.
const ZSTD_LEVEL: i32 = 3;
/// Exports at once (each holds a thread while its reader reads).
const MAX_EXPORTS: usize = 4;
/// How long an export waits for a reader that stopped reading before giving up.
const EXPORT_STALL: Duration = Duration::from_secs(60);

static EXPORTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_EXPORTS);

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

/// Removes a directory tree, if there (layers are at most `layers::MAX_DEPTH` deep).
fn remove_tree(dir: &Path) -> Result<(), BackendError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackendError::io("cannot remove a snapshot", e)),
    }
}

/// Thaws a sandbox the capture froze, however the capture ends.
struct Thaw(Option<cgroup::SandboxCgroup>);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Some(cgroup) = self.0.take() {
            if let Err(e) = cgroup.thaw() {
                tracing::error!(error = %e, "cannot thaw a sandbox after a snapshot");
            }
        }
    }
}

/// Removes a staging directory unless the snapshot was published.
struct Staging {
    dir: PathBuf,
    published: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let dir = self.dir.clone();
            // Off the async threads: a layer may be large.
            std::thread::spawn(move || {
                let _ = remove_tree(&dir);
            });
        }
    }
}

fn outcome_error(outcome: Outcome, refused_kind: FileErrorKind) -> BackendError {
    match outcome {
        Outcome::Refused { message } => BackendError::File {
            kind: refused_kind,
            message,
        },
        Outcome::TooLarge { message } => BackendError::File {
            kind: FileErrorKind::NoSpace,
            message,
        },
        Outcome::Failed {
            message,
            no_space: true,
        } => BackendError::Capacity {
            resource: SharedResource::Disk,
            detail: format!("the host's disk is full: {message}"),
        },
        Outcome::Failed { message, .. } => {
            BackendError::other(format!("the snapshot helper failed: {message}"))
        }
        other => BackendError::other(format!("unexpected snapshot helper answer: {other:?}")),
    }
}

impl Staging {
    /// Removes the staging directory now (off the async threads), before the call answers.
    async fn discard(mut self) {
        self.published = true;
        let dir = self.dir.clone();
        let _ = blocking(move || remove_tree(&dir)).await;
    }
}

impl NativeBackend {
    /// A fresh `.new-NAME` staging directory (removed when dropped unpublished).
    async fn staging(&self, name: &str) -> Result<Staging, BackendError> {
        self.inner.layout.snapshot(name)?;
        let dir = self.inner.layout.snapshots().join(format!(".new-{name}"));
        let made = dir.clone();
        blocking(move || {
            remove_tree(&made)?;
            fs::create_dir_all(&made).map_err(|e| BackendError::io("cannot make a snapshot", e))
        })
        .await?;
        Ok(Staging {
            dir,
            published: false,
        })
    }

    /// Moves a finished staging directory into place.
    fn publish(&self, staging: &mut Staging, name: &str) -> Result<(), BackendError> {
        let target = self.inner.layout.snapshot(name)?;
        if target.exists() {
            return Err(BackendError::other(format!(
                "snapshot {name} exists already"
            )));
        }
        fs::rename(&staging.dir, &target)
            .map_err(|e| BackendError::io("cannot store a snapshot", e))?;
        staging.published = true;
        Ok(())
    }

    /// Runs the snapshot helper on `job`, feeding it `input` after the job; its answer.
    async fn run_helper(
        &self,
        job: &Job,
        input: Option<ByteStream>,
        deadline: Duration,
    ) -> Result<Outcome, BackendError> {
        let mut child = tokio::process::Command::new(&self.inner.stage1_program)
            .arg(capture::CAPTURE_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BackendError::io("cannot start the snapshot helper", e))?;
        let mut line = serde_json::to_vec(job).expect("plain enum serialises");
        line.push(b'\n');
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let mut stdout = child.stdout.take().expect("stdout was piped");
        let feeding = async move {
            stdin.write_all(&line).await?;
            if let Some(mut input) = input {
                while let Some(chunk) = input.next().await {
                    // The helper stops reading once it refuses the file: its answer says why.
                    if stdin.write_all(&chunk?).await.is_err() {
                        break;
                    }
                }
            }
            drop(stdin);
            Ok::<_, std::io::Error>(())
        };
        let answering = async {
            let mut answer = Vec::new();
            (&mut stdout).take(1 << 20).read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let exchange = async {
            let (fed, answer) = tokio::join!(feeding, answering);
            let _ = child.wait().await;
            (fed, answer)
        };
        let (fed, answer) = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| BackendError::Timeout {
                operation: "snapshot",
                after: deadline,
            })?;
        let answer = answer.map_err(|e| BackendError::io("the snapshot helper failed", e))?;
        match serde_json::from_slice::<Outcome>(&answer) {
            Ok(outcome) => Ok(outcome),
            // No answer: the helper died (out of memory on a hostile file, say), or the
            // upload failed under it.
            Err(_) => match fed {
                Err(e) => Err(BackendError::io("the snapshot file could not be read", e)),
                Ok(()) => Err(BackendError::File {
                    kind: FileErrorKind::Invalid,
                    message: "the snapshot helper gave up on this file".into(),
                }),
            },
        }
    }

    /// Removes what a crashed daemon left half-made (`.new-*`).
    pub(super) fn sweep_snapshots(&self) {
        let Ok(entries) = fs::read_dir(self.inner.layout.snapshots()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".new-") {
                let _ = remove_tree(&entry.path());
            }
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
        let (device, max_bytes) = blocking(move || {
            let device = loop_device_of(&image)
                .ok_or_else(|| BackendError::other("the sandbox has no disk"))?;
            let size = fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
            Ok((device, size))
        })
        .await?;
        let mut staging = self.staging(name).await?;
        let mount_point = staging.dir.join("mnt");
        fs::create_dir(&mount_point).map_err(|e| BackendError::io("cannot make a snapshot", e))?;
        let job = Job::Capture {
            device,
            mount_point: mount_point.clone(),
            base: ID_BASE + native.slot * crate::stage1::ID_RANGE,
            parent,
            dest: staging.dir.join("layer"),
            max_bytes,
        };
        // Frozen for the copy: what is captured is one instant of the sandbox's files.
        let cgroup = self.inner.cgroup(&key);
        let thaw = if cgroup.frozen().unwrap_or(false) {
            Thaw(None)
        } else {
            let freezing = cgroup.clone();
            let sandbox = key.to_string();
            // Thawed by the guard from here on, even if the freeze is cut short.
            let thaw = Thaw(Some(cgroup.clone()));
            blocking(move || {
                freezing
                    .freeze(FREEZE_DEADLINE)
                    .map_err(|e| super::freeze_failed(&sandbox, e))
            })
            .await?;
            thaw
        };
        let outcome = self.run_helper(&job, None, CAPTURE_DEADLINE).await;
        drop(thaw);
        let _ = fs::remove_dir(&mount_point);
        let published = match outcome {
            Ok(Outcome::Captured { bytes }) => self.publish(&mut staging, name).map(|()| bytes),
            Ok(other) => Err(outcome_error(other, FileErrorKind::Conflict)),
            Err(e) => Err(e),
        };
        if published.is_err() {
            staging.discard().await;
        }
        published
    }

    async fn has_snapshot(&self, name: &SnapshotName) -> Result<bool, BackendError> {
        Ok(self.inner.layout.snapshot_layer(name)?.is_dir())
    }

    async fn delete_snapshot(&self, name: &SnapshotName) -> Result<(), BackendError> {
        let dir = self.inner.layout.snapshot(name)?;
        let staging = self.inner.layout.snapshots().join(format!(".new-{name}"));
        blocking(move || {
            remove_tree(&staging)?;
            remove_tree(&dir)
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
        let permit = EXPORTS.try_acquire().map_err(|_| BackendError::Capacity {
            resource: SharedResource::Engine,
            detail: format!("{MAX_EXPORTS} snapshot exports are under way already"),
        })?;
        // Written by a thread of its own, a chunk at a time, into a small queue the stream
        // reads; a failure reaches the reader as an error (the download is cut, never passes
        // for whole), and a reader that stops reading for a minute ends the export.
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let runtime = tokio::runtime::Handle::current();
        let writer_side = sender.clone();
        std::thread::Builder::new()
            .name("sbx-export".into())
            .spawn(move || {
                let _permit = permit;
                let writer = Chunks {
                    sender: writer_side,
                    runtime,
                    buffer: Vec::with_capacity(CHUNK),
                };
                let written = zstd::stream::write::Encoder::new(writer, ZSTD_LEVEL).and_then(
                    |mut encoder| {
                        layers::export(&layer, &manifest, &mut encoder)?;
                        encoder.finish()?.flush()
                    },
                );
                if let Err(e) = written {
                    let _ = sender.blocking_send(Err(e));
                }
            })
            .map_err(|e| BackendError::io("cannot start an export", e))?;
        Ok(tokio_stream_of(receiver).boxed())
    }

    async fn import_snapshot(
        &self,
        name: &SnapshotName,
        data: ByteStream,
        max_bytes: u64,
    ) -> Result<(u64, Vec<u8>), BackendError> {
        let mut staging = self.staging(name).await?;
        let job = Job::Import {
            dest: staging.dir.join("layer"),
            max_bytes,
        };
        let published = match self.run_helper(&job, Some(data), IMPORT_DEADLINE).await {
            Ok(Outcome::Imported { bytes, manifest }) => self
                .publish(&mut staging, name)
                .map(|()| (bytes, manifest.into_bytes())),
            Ok(other) => Err(outcome_error(other, FileErrorKind::Invalid)),
            Err(e) => Err(e),
        };
        if published.is_err() {
            staging.discard().await;
        }
        published
    }
}

const CHUNK: usize = 256 * 1024;

/// A writer that sends what it is given, a chunk at a time, to an export's stream.
struct Chunks {
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    runtime: tokio::runtime::Handle,
    buffer: Vec<u8>,
}

impl Chunks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        let sender = self.sender.clone();
        let sent = self
            .runtime
            .block_on(async { tokio::time::timeout(EXPORT_STALL, sender.send(Ok(chunk))).await });
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::other("the export's reader left")),
            Err(_) => Err(std::io::Error::other("the export's reader stopped reading")),
        }
    }
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

fn tokio_stream_of(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
