//! Validated inputs of [`crate::Backend::create`]. Built by lifecycle from wire types; a
//! backend can trust every field.

use crate::SandboxId;

/// Everything a backend needs to build a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub id: SandboxId,
    /// A template name the backend reported with `has_template`.
    pub template: String,
    pub limits: Limits,
    /// A snapshot (of this backend, taken from a sandbox of the same template) whose files
    /// the sandbox starts with.
    pub snapshot: Option<String>,
    /// A hibernated sandbox of this backend (same template and limits) whose checkpoint the
    /// sandbox is restored from, rather than started ([`crate::Hibernation`]).
    pub fork_of: Option<crate::Handle>,
}

/// Resource limits, already checked against the host's bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPU quota in thousandths of a CPU (1000 = one CPU).
    pub cpu_millis: u64,
    pub pids: u64,
    /// Size of the sandbox's writable disk (its root's changes and home).
    pub disk_bytes: u64,
}

/// Identity of a process inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// The default, unprivileged user (uid/gid 1000, no capabilities).
    pub const DEFAULT: User = User {
        uid: 1000,
        gid: 1000,
    };
    /// Root inside the sandbox's user namespace only.
    pub const ROOT: User = User { uid: 0, gid: 0 };
}

/// Template names, for every backend: 1–63 of `[a-z0-9._-]`, starting with a letter or digit
/// (so a name is also a safe path component).
pub fn valid_template_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names() {
        for good in ["host", "py3", "debian-12", "a.b_c"] {
            assert!(valid_template_name(good), "{good}");
        }
        for bad in ["", "../x", "Host", "-x", ".hidden", "a/b", &"x".repeat(64)] {
            assert!(!valid_template_name(bad), "{bad}");
        }
    }
}
