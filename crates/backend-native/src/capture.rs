//! The snapshot helper (`sbx __native-snapshot`): captures a sandbox's writable layer into a
//! snapshot layer. The sandbox's disk is mounted only in the sandbox's own mount namespace, so
//! the helper mounts the same device again in a private mount namespace of its own (the
//! kernel shares the one file system between the two mounts: what it reads is exactly what
//! the sandbox wrote), copies (`layers::capture`), and exits; its namespace, and the mount,
//! go with it. The daemon freezes the sandbox around the helper's run.

use std::io::Write;
use std::path::PathBuf;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

/// argv[1] that selects the snapshot helper in the `sbx` binary.
pub const CAPTURE_ARG: &str = "__native-snapshot";

/// What to capture (on stdin, as JSON).
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    /// The sandbox's disk (its loop device).
    pub device: PathBuf,
    /// An empty directory to mount it on (in the helper's namespace only).
    pub mount_point: PathBuf,
    /// The first host id of the sandbox's range.
    pub base: u32,
    /// The layer of the snapshot the sandbox started from.
    pub parent: Option<PathBuf>,
    /// The new layer (must not exist).
    pub dest: PathBuf,
}

/// What the helper says (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Captured { bytes: u64 },
    Failed { message: String },
}

pub fn main() -> i32 {
    // SAFETY: close_range only closes descriptors; nothing Rust owns is above stdio yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0) };
    let outcome = match run() {
        Ok(bytes) => Outcome::Captured { bytes },
        Err(message) => Outcome::Failed { message },
    };
    let code = i32::from(matches!(outcome, Outcome::Failed { .. }));
    let line = serde_json::to_string(&outcome).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    code
}

fn run() -> Result<u64, String> {
    let job: Job = serde_json::from_reader(std::io::stdin().lock())
        .map_err(|e| format!("malformed job: {e}"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(mount): {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make the mounts private: {e}"))?;
    nix::mount::mount(
        Some(&job.device),
        &job.mount_point,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot mount the sandbox's disk: {e}"))?;
    crate::layers::capture(
        &job.mount_point.join("upper"),
        job.base,
        job.parent.as_deref(),
        &job.dest,
    )
    .map_err(|e| format!("cannot copy the sandbox's files: {e}"))
}
