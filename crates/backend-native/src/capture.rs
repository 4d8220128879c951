//! The snapshot helper (`sbx __native-snapshot capture|import`), a process of its own so
//! that neither a sandbox's files nor a hostile snapshot file is ever walked or parsed inside
//! the daemon:
//!
//! - `capture`: the sandbox's disk is mounted only in the sandbox's own mount namespace, so
//!   the helper mounts the same device again in a private mount namespace of its own (the
//!   kernel shares the one file system between the two mounts: what it reads is exactly what
//!   the sandbox wrote), copies (`layers::capture`), and exits; its namespace, and the mount,
//!   go with it. The daemon freezes the sandbox around the helper's run.
//! - `import`: a snapshot file (zstd) on stdin unpacked into a new layer (`layers::import`),
//!   with the helper's memory bounded, so a file crafted to make a parser allocate (a huge
//!   long name, say) ends the helper, not the daemon.
//!
//! Either way the helper dies with the daemon (`PR_SET_PDEATHSIG`).

use std::io::Write;
use std::path::PathBuf;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use crate::layers;

/// argv[1] that selects the snapshot helper in the `sbx` binary.
pub const CAPTURE_ARG: &str = "__native-snapshot";
/// Memory an import may use (its parser's buffers, zstd's window).
const IMPORT_MEMORY: u64 = 1 << 30;

/// What to do (on stdin, as one JSON line; for an import, the file follows).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    Capture {
        /// The sandbox's disk (its loop device).
        device: PathBuf,
        /// An empty directory to mount it on (in the helper's namespace only).
        mount_point: PathBuf,
        /// The first host id of the sandbox's range.
        base: u32,
        /// The layer of the snapshot the sandbox started from.
        parent: Option<PathBuf>,
        /// The new layer (must not exist).
        dest: PathBuf,
        /// Most bytes of data it may hold (the sandbox's disk).
        max_bytes: u64,
    },
    Import {
        dest: PathBuf,
        max_bytes: u64,
    },
}

/// What the helper says (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Captured {
        bytes: u64,
    },
    Imported {
        bytes: u64,
        manifest: String,
    },
    /// The input was refused (what the sandbox holds, or what the file is).
    Refused {
        message: String,
    },
    /// Too large (over the bytes or entries allowed).
    TooLarge {
        message: String,
    },
    /// The host failed (full disk included: `no_space`).
    Failed {
        message: String,
        no_space: bool,
    },
}

pub fn main() -> i32 {
    // SAFETY: close_range only closes descriptors; nothing Rust owns is above stdio yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0) };
    // The daemon gone, so is its helper (it must not read a sandbox that thaws meanwhile).
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let outcome = run();
    let code = i32::from(!matches!(
        outcome,
        Outcome::Captured { .. } | Outcome::Imported { .. }
    ));
    let line = serde_json::to_string(&outcome).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    code
}

fn failed(e: &std::io::Error) -> Outcome {
    if e.kind() == std::io::ErrorKind::InvalidData {
        return Outcome::Refused {
            message: e.to_string(),
        };
    }
    Outcome::Failed {
        message: e.to_string(),
        no_space: matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)),
    }
}

fn run() -> Outcome {
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    if let Err(e) = std::io::BufRead::read_line(&mut stdin, &mut line) {
        return failed(&e);
    }
    let job: Job = match serde_json::from_str(&line) {
        Ok(job) => job,
        Err(e) => {
            return Outcome::Failed {
                message: format!("malformed job: {e}"),
                no_space: false,
            }
        }
    };
    match job {
        Job::Capture {
            device,
            mount_point,
            base,
            parent,
            dest,
            max_bytes,
        } => {
            if let Err(message) = mount_privately(&device, &mount_point) {
                return Outcome::Failed {
                    message,
                    no_space: false,
                };
            }
            match layers::capture(
                &mount_point.join("upper"),
                base,
                parent.as_deref(),
                &dest,
                max_bytes,
            ) {
                Ok(bytes) => Outcome::Captured { bytes },
                Err(e) => failed(&e),
            }
        }
        Job::Import { dest, max_bytes } => {
            let limit = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_AS,
                IMPORT_MEMORY,
                IMPORT_MEMORY,
            );
            if let Err(e) = limit {
                return Outcome::Failed {
                    message: format!("cannot bound the import's memory: {e}"),
                    no_space: false,
                };
            }
            let decoder = match zstd::stream::read::Decoder::with_buffer(stdin) {
                Ok(decoder) => decoder,
                Err(e) => return failed(&e),
            };
            match layers::import(decoder, &dest, max_bytes) {
                Ok(manifest) => Outcome::Imported {
                    bytes: layers::stored_bytes(&dest),
                    manifest: String::from_utf8_lossy(&manifest).into_owned(),
                },
                Err(layers::ImportError::Invalid(message)) => Outcome::Refused { message },
                Err(layers::ImportError::TooLarge(message)) => Outcome::TooLarge { message },
                Err(layers::ImportError::Io(e))
                    if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
                {
                    failed(&e)
                }
                // Anything else while unpacking into a directory of its own is the file's
                // doing (a truncated stream, a name the kernel refuses, …).
                Err(layers::ImportError::Io(e)) => Outcome::Refused {
                    message: format!("not a snapshot file sbx can take: {e}"),
                },
            }
        }
    }
}

fn mount_privately(device: &std::path::Path, mount_point: &std::path::Path) -> Result<(), String> {
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
        Some(device),
        mount_point,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot mount the sandbox's disk: {e}"))
}
