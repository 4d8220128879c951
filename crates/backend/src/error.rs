//! Errors a backend reports. Messages may name host paths: lifecycle and api decide what a
//! client sees (see `api::error`), the log gets the full chain.

/// What went wrong in a backend call.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("template {0:?} does not exist")]
    TemplateNotFound(String),
    #[error("sandbox is not running")]
    NotRunning,
    /// The command could not be started (not found, not executable, bad cwd, …).
    #[error("{0}")]
    ExecFailed(String),
    /// The backend cannot be used on this host (missing privilege, kernel feature, …).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The host ran out of something every tenant shares (it could not start a process or a
    /// thread, or its disk is full): nothing was made; trying again later may work.
    #[error("the host is out of {resource}: {detail}")]
    Exhausted {
        resource: HostResource,
        detail: String,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// A resource of the host that all sandboxes (and the host) share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostResource {
    /// Processes or threads (`kernel.pid_max`, `kernel.threads-max`, the daemon's own limits).
    Processes,
    /// Space on the file system that holds sandbox disks.
    Disk,
}

impl std::fmt::Display for HostResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostResource::Processes => "processes",
            HostResource::Disk => "disk space",
        })
    }
}

impl BackendError {
    /// Wraps an I/O error with what was being done. Running out of processes or threads
    /// (`EAGAIN` from fork or clone) or of disk space (`ENOSPC`, `EDQUOT`) becomes
    /// [`BackendError::Exhausted`], which a caller can tell apart from a fault.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        use std::io::ErrorKind;
        let resource = match (source.raw_os_error(), source.kind()) {
            (Some(libc::EAGAIN), _) | (None, ErrorKind::WouldBlock) => {
                Some(HostResource::Processes)
            }
            (Some(libc::ENOSPC | libc::EDQUOT), _)
            | (None, ErrorKind::StorageFull | ErrorKind::QuotaExceeded) => Some(HostResource::Disk),
            _ => None,
        };
        match resource {
            Some(resource) => BackendError::Exhausted {
                resource,
                detail: format!("{context}: {source}"),
            },
            None => BackendError::Io { context, source },
        }
    }
}
