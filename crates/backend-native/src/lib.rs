//! The native backend: sandboxes built from Linux namespaces, cgroups, seccomp and an overlay
//! root, with nothing to install. Needs root on the host.
//!
//! Owns: every host resource of a native sandbox — its init process, cgroups, directories and
//! control socket — from creation to removal.
//! Must never: import store, lifecycle or api; keep bookkeeping that the host or the
//! [`sbx_backend::Handle`] cannot give back after a restart.
//!
//! Laid out by the process each part runs in:
//!
//! - [`daemon`]: in the daemon — the [`NativeBackend`] itself, host preparation, the warm
//!   pool of stage-1 helpers, cgroups, disks, uid slots, templates, destroy, and the client
//!   side of the control protocol;
//! - [`stage1`]: a short-lived helper (`sbx __native-stage1`) that joins the cgroups, mounts
//!   the disk, builds the root and clones init into fresh namespaces;
//! - [`init`]: pid 1 of the sandbox, serving the control socket;
//! - [`child`]: what init's fork does before `execve`-ing a command;
//! - [`wire`] (daemon ↔ init) and [`caps`] (stage 1 and child) are shared.
//!
//! A sandbox is a long-lived init built by a stage-1 helper. Execs reach init over a Unix
//! socket. Every host trace carries the sandbox's host key — its id, or for a sandbox the pool
//! prepared ahead of time the pool's own id, mapped to the sandbox in `<dir>/sandbox-id` —
//! `<data>/sandboxes/<key>/`, `<cgroup>/sbx/<instance>/<key>`, and init's argv. Mounts live
//! only in the sandbox's own mount namespace and vanish with it.

mod caps;
mod capture;
mod child;
mod daemon;
mod init;
mod layers;
mod stage1;
mod wire;

pub use daemon::{NativeBackend, NativeConfig};
pub use stage1::run_if_requested;
/// The system calls the sandbox's filter allows without argument checks (for the test that
/// the OCI filter of `crun`/`runc` sandboxes allows the same).
#[doc(hidden)]
pub use stage1::seccomp::ALLOWED as SECCOMP_ALLOWED;
