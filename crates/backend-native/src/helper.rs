//! The daemon's handle on one stage-1 helper process, and the pool of helpers started ahead of
//! time.
//!
//! A helper is spawned with the sandbox's id, told which cgroups to join, and answers `joined`;
//! later it gets the build request and answers `ready` or `failed` (see [`crate::stage1`]).
//! The pool keeps a few helpers that have already joined, so that a create skips both the
//! process start and the cgroup move — the latter can cost an RCU grace period (10–20 ms) on
//! cgroup v1 after a quiet spell.
//!
//! Invariant: a pooled helper is a complete set of host traces for its id (directory, cgroup,
//! process), so an interrupted daemon's pool is found and removed by reconciliation like any
//! orphan, and a helper whose daemon vanished exits on its own (its stdin closes).

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use sbx_backend::{BackendError, SandboxId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

use crate::stage1::{self, Join, Outcome};

/// How long a helper may take to join its cgroups, and to build the sandbox.
const JOIN_DEADLINE: Duration = Duration::from_secs(20);
const BUILD_DEADLINE: Duration = Duration::from_secs(20);

pub struct Helper {
    pub id: SandboxId,
    /// The uid range prepared for it.
    pub slot: u32,
    /// The size of its disk.
    pub disk_bytes: u64,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: JoinHandle<String>,
}

impl Helper {
    /// Starts `sbx __native-stage1 <id>` and waits until it has joined its cgroups and mounted
    /// `disk` (held attached until then; the mount is its last user afterwards).
    pub async fn start(
        id: SandboxId,
        slot: u32,
        disk_bytes: u64,
        disk: crate::disk::Disk,
        join: Join,
    ) -> Result<Helper, BackendError> {
        let mut command = tokio::process::Command::new("/proc/self/exe");
        command
            .arg0("sbx")
            .arg(stage1::STAGE1_ARG)
            // The id marks stage 1 and init (which inherits its argv) as this sandbox's.
            .arg(id.as_str())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| BackendError::io("cannot start stage 1", e))?;
        let stdin = child.stdin.take().expect("stdin was piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout was piped")).lines();
        let mut stderr_pipe = child.stderr.take().expect("stderr was piped");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text).await;
            text
        });
        let mut helper = Helper {
            id,
            slot,
            disk_bytes,
            child,
            stdin,
            stdout,
            stderr,
        };
        let outcome = helper.exchange(&join, JOIN_DEADLINE).await;
        drop(disk);
        match outcome? {
            Outcome::Joined => Ok(helper),
            other => Err(helper.fail(other).await),
        }
    }

    /// Sends the build request; returns init's pid and start time.
    pub async fn build(mut self, request: &stage1::Request) -> Result<(i32, u64), BackendError> {
        match self.exchange(request, BUILD_DEADLINE).await? {
            Outcome::Ready { pid, start_time } => {
                let _ = self.child.wait().await;
                Ok((pid, start_time))
            }
            other => Err(self.fail(other).await),
        }
    }

    /// Kills the helper (and with it any init it cloned but has not released) and reaps it.
    pub async fn abort(mut self) {
        let _ = self.child.kill().await;
    }

    async fn exchange<T: serde::Serialize>(
        &mut self,
        message: &T,
        deadline: Duration,
    ) -> Result<Outcome, BackendError> {
        let mut line = serde_json::to_vec(message).expect("plain structs serialise");
        line.push(b'\n');
        let talk = async {
            self.stdin.write_all(&line).await?;
            self.stdin.flush().await?;
            self.stdout.next_line().await
        };
        match tokio::time::timeout(deadline, talk).await {
            Err(_) => Err(BackendError::Other("stage 1 did not answer in time".into())),
            Ok(Err(e)) => Err(BackendError::io("cannot talk to stage 1", e)),
            Ok(Ok(None)) => Ok(Outcome::Failed {
                message: "stage 1 exited without an answer".into(),
            }),
            Ok(Ok(Some(text))) => serde_json::from_str(&text).map_err(|e| {
                BackendError::Other(format!("malformed answer from stage 1: {e}: {text}"))
            }),
        }
    }

    async fn fail(mut self, outcome: Outcome) -> BackendError {
        let _ = self.child.kill().await;
        let stderr = self.stderr.await.unwrap_or_default();
        let message = match outcome {
            Outcome::Failed { message } => message,
            other => format!("unexpected answer {other:?}"),
        };
        let stderr = stderr.trim();
        if stderr.is_empty() {
            BackendError::Other(format!("sandbox setup failed: {message}"))
        } else {
            BackendError::Other(format!("sandbox setup failed: {message} ({stderr})"))
        }
    }
}

/// Helpers ready to build, and those handed out with [`Pool::reserve`] but not yet used.
#[derive(Default)]
pub struct Pool {
    ready: Mutex<VecDeque<Helper>>,
    reserved: Mutex<HashMap<SandboxId, Helper>>,
}

impl Pool {
    /// Hands out the id of a ready helper, which `take` will return for it.
    pub fn reserve(&self) -> Option<SandboxId> {
        let helper = self.ready.lock().expect("pool lock").pop_front()?;
        let id = helper.id.clone();
        self.reserved
            .lock()
            .expect("pool lock")
            .insert(id.clone(), helper);
        Some(id)
    }

    pub fn take(&self, id: &SandboxId) -> Option<Helper> {
        self.reserved.lock().expect("pool lock").remove(id)
    }

    pub fn add(&self, helper: Helper) {
        self.ready.lock().expect("pool lock").push_back(helper);
    }

    pub fn ready_len(&self) -> usize {
        self.ready.lock().expect("pool lock").len()
    }

    /// Whether `id` belongs to a pooled helper (which is not an orphan).
    pub fn contains(&self, id: &SandboxId) -> bool {
        self.reserved.lock().expect("pool lock").contains_key(id)
            || self
                .ready
                .lock()
                .expect("pool lock")
                .iter()
                .any(|h| &h.id == id)
    }

    /// Removes every helper, ready or reserved.
    pub fn drain(&self) -> Vec<Helper> {
        let mut all: Vec<Helper> = self.ready.lock().expect("pool lock").drain(..).collect();
        all.extend(
            self.reserved
                .lock()
                .expect("pool lock")
                .drain()
                .map(|(_, h)| h),
        );
        all
    }
}
