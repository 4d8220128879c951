//! Lifecycle errors. Each variant is one thing a client or operator can act on; the API maps
//! them to HTTP in one `match` (see `api::error`). Messages never carry host paths: backend
//! details go to the log, not into these.

use sbx_backend::{BackendError, HostResource};

use crate::State;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or out of bounds; the message says which field and why.
    #[error("{0}")]
    Invalid(String),
    /// A well-formed request asks for more than a cap allows (a profile's maximum, the
    /// host's capacity for one sandbox, a user's whole quota): no wait will help. The message
    /// names the field and the cap.
    #[error("{0}")]
    OverLimit(String),
    /// The host has no room now for what was asked (its process table or the daemon's own
    /// threads are promised or used up); trying again later may work.
    #[error("{message}")]
    AtCapacity {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The host's disk cannot take what was asked.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("no sandbox {0:?}")]
    NotFound(String),
    #[error("template {0:?} does not exist")]
    TemplateNotFound(String),
    /// The message lists the profiles there are.
    #[error("{0}")]
    ProfileNotFound(String),
    #[error("a live sandbox is already named {0:?}")]
    NameTaken(String),
    #[error("sandbox {id} is {state}: cannot {operation}")]
    WrongState {
        id: String,
        state: State,
        operation: &'static str,
    },
    /// The command could not start (not found, not executable, bad working directory).
    #[error("{0}")]
    ExecFailed(String),
    /// The key the caller acted with was revoked, or its web session ended, while a stream it
    /// opened was still open.
    #[error("the credential this stream was opened with was revoked or its session ended")]
    CredentialEnded,
    /// The sandbox died or was destroyed while the operation ran.
    #[error("sandbox {0} stopped while the command ran")]
    SandboxGone(String),
    #[error("the backend did not finish {operation} in time")]
    Timeout { operation: &'static str },
    #[error("the backend is unavailable")]
    Unavailable(String),
    /// The caller may not do this (only admins may); the message says why.
    #[error("{0}")]
    Forbidden(String),
    #[error("no key {0:?}")]
    KeyNotFound(String),
    /// The request contradicts the current state of things; the message says how.
    #[error("{0}")]
    Conflict(String),
    /// A rate limit or quota refused the request.
    #[error("{}", .0.message)]
    Limited(crate::Limited),
    /// Anything else; the detail is logged, never shown to clients.
    #[error("internal error")]
    Internal(String),
}

impl From<BackendError> for Error {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::TemplateNotFound(name) => Error::TemplateNotFound(name),
            BackendError::ExecFailed(message) => Error::ExecFailed(message),
            BackendError::Unavailable(detail) => Error::Unavailable(detail),
            BackendError::Exhausted { resource, detail } => {
                tracing::warn!(%resource, detail, "the host is out of a shared resource");
                match resource {
                    HostResource::Processes => Error::AtCapacity {
                        message: "the host cannot start more processes right now; try again later"
                            .into(),
                        retry_after: std::time::Duration::from_secs(5),
                    },
                    HostResource::Disk => Error::InsufficientStorage(
                        "the host's disk is full; try again later or with a smaller disk_mb".into(),
                    ),
                }
            }
            BackendError::NotRunning => Error::Internal("sandbox is not running".into()),
            other => Error::Internal(error_chain(&other)),
        }
    }
}

impl From<sbx_store::StoreError> for Error {
    fn from(error: sbx_store::StoreError) -> Self {
        match error {
            sbx_store::StoreError::NameTaken(name) => Error::NameTaken(name),
            other => Error::Internal(error_chain(&other)),
        }
    }
}

impl Error {
    /// The full detail, for the log.
    pub fn detail(&self) -> String {
        match self {
            Error::Internal(detail) | Error::Unavailable(detail) => detail.clone(),
            other => other.to_string(),
        }
    }
}

/// `error: cause: cause` — the whole chain on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
