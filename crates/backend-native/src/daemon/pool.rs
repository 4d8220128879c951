//! The daemon's handle on one stage-1 helper process, and the pool of helpers started ahead of
//! time.
//!
//! A helper is spawned with the sandbox's id, told which cgroups to join, and answers `joined`;
//! later it gets the build request and answers `ready` or `failed` (see [`crate::stage1`]).
//! The pool keeps a few helpers that have already joined, so that a create skips both the
//! process start and the cgroup move — the latter can cost an RCU grace period (10–20 ms) on
//! cgroup v1 after a quiet spell.
//!
//! A helper is made for a host key (see [`super::keys`]): the sandbox's id when it is made for a
//! create, a fresh one when the pool makes it ahead of time. The sandbox a pooled helper ends
//! up serving is written beside it when a create takes it.
//!
//! Invariant: a pooled helper is a complete set of host traces for its key (directory, cgroup,
//! process), so an interrupted daemon's pool is found and removed by reconciliation like any
//! orphan, and a helper whose daemon vanished exits on its own (its stdin closes). While a
//! helper is pooled or being built it is the pool's ([`Pool::is_busy`]), never an orphan.

use std::collections::{BTreeSet, VecDeque};
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
    /// The host key its traces are named by.
    pub key: SandboxId,
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
    /// Starts `sbx __native-stage1 <key>` and waits until it has joined its cgroups and mounted
    /// `disk` (held attached until then; the mount is its last user afterwards).
    pub async fn start(
        program: &std::path::Path,
        key: SandboxId,
        slot: u32,
        disk_bytes: u64,
        disk: super::disk::Disk,
        join: Join,
    ) -> Result<Helper, BackendError> {
        let mut command = tokio::process::Command::new(program);
        command
            .arg0("sbx")
            .arg(stage1::STAGE1_ARG)
            // The key marks stage 1 and init (which inherits its argv) as this sandbox's.
            .arg(key.as_str())
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
            key,
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
            Err(_) => Err(BackendError::Timeout {
                operation: "stage 1",
                after: deadline,
            }),
            Ok(Err(e)) => Err(BackendError::io("cannot talk to stage 1", e)),
            Ok(Ok(None)) => Ok(Outcome::Failed {
                message: "stage 1 exited without an answer".into(),
            }),
            Ok(Ok(Some(text))) => serde_json::from_str(&text).map_err(|e| {
                BackendError::other_from(format!("malformed answer from stage 1: {text}"), e)
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
            BackendError::other(format!("sandbox setup failed: {message}"))
        } else {
            BackendError::other(format!("sandbox setup failed: {message} ({stderr})"))
        }
    }
}

/// Helpers ready to build, and the keys of every sandbox being built right now (a create's, a
/// refill's): together, what [`Pool::is_busy`] keeps out of orphan listings.
#[derive(Default)]
pub struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    ready: VecDeque<Helper>,
    busy: BTreeSet<SandboxId>,
}

/// Marks a key as being built for as long as it lives.
pub struct Busy<'a> {
    pool: &'a Pool,
    key: SandboxId,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.pool.lock().busy.remove(&self.key);
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().expect("pool lock is never poisoned")
    }

    /// Marks `key` as being built until the guard goes.
    pub fn busy(&self, key: &SandboxId) -> Busy<'_> {
        self.lock().busy.insert(key.clone());
        Busy {
            pool: self,
            key: key.clone(),
        }
    }

    /// A ready helper with a disk of `disk_bytes`, marked busy (in the same step, so that it is
    /// never seen as neither pooled nor busy).
    pub fn take(&self, disk_bytes: u64) -> Option<(Helper, Busy<'_>)> {
        let mut state = self.lock();
        let index = state
            .ready
            .iter()
            .position(|h| h.disk_bytes == disk_bytes)?;
        let helper = state.ready.remove(index)?;
        state.busy.insert(helper.key.clone());
        drop(state);
        let busy = Busy {
            pool: self,
            key: helper.key.clone(),
        };
        Some((helper, busy))
    }

    pub fn add(&self, helper: Helper) {
        self.lock().ready.push_back(helper);
    }

    pub fn ready_len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Whether `key` is a pooled helper's or is being built (either way not an orphan).
    pub fn is_busy(&self, key: &SandboxId) -> bool {
        let state = self.lock();
        state.busy.contains(key) || state.ready.iter().any(|h| &h.key == key)
    }

    /// Removes every ready helper.
    pub fn drain(&self) -> Vec<Helper> {
        self.lock().ready.drain(..).collect()
    }
}
