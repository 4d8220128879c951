//! What the seccomp filters of every backend on the host's kernel agree on (the native
//! backend's own filter, and the OCI filter of `crun`/`runc` sandboxes): the argument checks
//! written once. The allow-lists themselves live with each filter (numbers for one, names for
//! the other); a test in `crates/sbx/tests` checks that they name the same calls.

/// Namespace-creating `clone` flags (CLONE_NEWTIME, 0x80, included, though only clone3 takes
/// it): a `clone` with any of them is refused.
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64
    | 0x80;

/// `personality(2)` values allowed (Docker's): PER_LINUX, PER_LINUX32, their UNAME26
/// variants, and the query.
pub const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
