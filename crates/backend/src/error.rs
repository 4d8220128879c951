//! Errors a backend reports. Each variant is one thing lifecycle acts on differently; the
//! source chain is kept for the log. Messages may name host paths: lifecycle and api decide
//! what a client sees (see `api::error`).

use std::time::Duration;

/// Any error, as a source of a [`BackendError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a backend call.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The sandbox is gone: its main process ended, or the engine no longer knows it. The
    /// message says which.
    #[error("{0}")]
    NotFound(String),
    #[error("template {0:?} does not exist")]
    TemplateNotFound(String),
    /// The command could not be started (not found, not executable, bad cwd, …). The message
    /// is for the client.
    #[error("{0}")]
    ExecFailed(String),
    /// This backend does not offer the operation (see [`crate::Capabilities`]).
    #[error("the {backend} backend does not support {operation}")]
    Unsupported {
        backend: &'static str,
        operation: &'static str,
    },
    /// The engine did not answer in time (a backend's own deadline; lifecycle has its own
    /// around every call as well).
    #[error("{operation} did not finish within {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// Something every tenant shares ran out (the host could not start a process or a thread,
    /// its disk is full, the engine's own quota is used up): nothing was made; trying again
    /// later may work.
    #[error("out of {resource}: {detail}")]
    Capacity {
        resource: SharedResource,
        detail: String,
    },
    /// The backend cannot be used now (missing privilege or kernel feature, engine down).
    #[error("backend unavailable: {detail}")]
    Unavailable {
        detail: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Nothing inside the sandbox accepted a connection to the port (the message is for the
    /// client).
    #[error("{0}")]
    PortUnreachable(String),
    /// A file operation was refused, for a reason the caller should hear (the message names
    /// the path inside the sandbox, never a host path).
    #[error("{message}")]
    File {
        kind: FileErrorKind,
        message: String,
    },
    /// Anything else: a fault, with what was being done and why.
    #[error("{context}")]
    Other {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
}

/// Why a file operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileErrorKind {
    /// No such file or directory.
    NotFound,
    /// The path is the wrong kind of thing (a directory where a file is expected, a non-empty
    /// directory, a device or a FIFO), or something is in the way.
    Conflict,
    /// The sandbox's user may not (permissions inside the sandbox).
    Denied,
    /// The sandbox's own disk is full.
    NoSpace,
    /// The path or request is malformed (empty, a NUL byte, too long).
    Invalid,
}

/// Something that all sandboxes of a backend (and, for local backends, the host) share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedResource {
    /// Processes or threads (`kernel.pid_max`, `kernel.threads-max`, the daemon's own limits).
    Processes,
    /// Space on the file system that holds sandbox disks.
    Disk,
    /// The engine's own capacity (machines, pods, an account's quota).
    Engine,
}

impl std::fmt::Display for SharedResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SharedResource::Processes => "processes",
            SharedResource::Disk => "disk space",
            SharedResource::Engine => "engine capacity",
        })
    }
}

impl BackendError {
    /// A fault with no underlying error.
    pub fn other(context: impl Into<String>) -> Self {
        BackendError::Other {
            context: context.into(),
            source: None,
        }
    }

    /// A fault caused by `source`.
    pub fn other_from(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BackendError::Other {
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The sandbox is not running (any more).
    pub fn gone() -> Self {
        BackendError::NotFound("the sandbox is not running".into())
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        BackendError::Unavailable {
            detail: detail.into(),
            source: None,
        }
    }

    /// Wraps an I/O error with what was being done. Running out of processes or threads
    /// (`EAGAIN` from fork or clone) or of disk space (`ENOSPC`, `EDQUOT`) becomes
    /// [`BackendError::Capacity`], which a caller can tell apart from a fault.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        use std::io::ErrorKind;
        let resource = match (source.raw_os_error(), source.kind()) {
            (Some(libc::EAGAIN), _) | (None, ErrorKind::WouldBlock) => {
                Some(SharedResource::Processes)
            }
            (Some(libc::ENOSPC | libc::EDQUOT), _)
            | (None, ErrorKind::StorageFull | ErrorKind::QuotaExceeded) => {
                Some(SharedResource::Disk)
            }
            _ => None,
        };
        match resource {
            Some(resource) => BackendError::Capacity {
                resource,
                detail: format!("{context}: {source}"),
            },
            None => BackendError::other_from(context, source),
        }
    }

    /// `error: cause: cause` — the whole chain on one line, for the log.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_tell_exhaustion_from_faults() {
        let eagain = BackendError::io("fork", std::io::Error::from_raw_os_error(libc::EAGAIN));
        assert!(matches!(
            eagain,
            BackendError::Capacity {
                resource: SharedResource::Processes,
                ..
            }
        ));
        let enospc = BackendError::io("write", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(
            enospc,
            BackendError::Capacity {
                resource: SharedResource::Disk,
                ..
            }
        ));
        let eperm = BackendError::io("mount", std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(matches!(eperm, BackendError::Other { .. }));
        assert!(eperm.chain().starts_with("mount: "), "{}", eperm.chain());
    }
}
