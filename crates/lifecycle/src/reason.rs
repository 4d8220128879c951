//! Why a sandbox is in its state: a stable code, stored as `code` or `code: detail`. Clients
//! see the code as `state_reason` (and an event's `reason`) and the rest as `state_detail`
//! (`detail`).

pub const CREATED: &str = "created";
pub const DELETED: &str = "deleted";
pub const EXPIRED: &str = "expired";
pub const IDLE: &str = "idle";
pub const EXTENDED: &str = "extended";
pub const RECREATING: &str = "recreating";
pub const RECREATED: &str = "recreated";
pub const PAUSED: &str = "paused";
pub const RESUMED: &str = "resumed";
pub const HIBERNATED: &str = "hibernated";
/// Creation failed, or the sandbox died on its own; the detail says which.
pub const FAILED: &str = "failed";
/// Its user switched their active sandbox to another project (or cleaned it up).
pub const SWITCHED: &str = "switched";
pub const DAEMON_SHUTDOWN: &str = "daemon-shutdown";
/// Settled by a daemon starting after a crash; the detail says how.
pub const DAEMON_RESTART: &str = "daemon-restart";
pub const DAEMON_CLEANUP: &str = "daemon-cleanup";

/// `code: detail`.
pub fn with_detail(code: &str, detail: &str) -> String {
    format!("{code}: {detail}")
}

/// The code and the detail of a stored reason.
pub fn split(text: &str) -> (String, Option<String>) {
    match text.split_once(": ") {
        Some((code, detail)) => (code.to_owned(), Some(detail.to_owned())),
        None => (text.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_details() {
        assert_eq!(split("expired"), ("expired".into(), None));
        let stored = with_detail(FAILED, "sandbox exited unexpectedly");
        assert_eq!(
            split(&stored),
            ("failed".into(), Some("sandbox exited unexpectedly".into()))
        );
    }
}
