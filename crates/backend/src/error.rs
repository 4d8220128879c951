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
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl BackendError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BackendError::Io {
            context: context.into(),
            source,
        }
    }
}
