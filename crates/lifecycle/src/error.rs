//! Lifecycle errors. Each variant is one thing a client or operator can act on; the API maps
//! them to HTTP in one `match` (see `api::error`). Messages never carry host paths: backend
//! details go to the log, not into these.

use sbx_backend::{BackendError, BoxError, SharedResource};

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
    /// A path inside a sandbox that does not exist.
    #[error("{0}")]
    FileNotFound(String),
    /// The sandbox's user may not do that to the path (its permissions inside the sandbox).
    #[error("{0}")]
    FileDenied(String),
    /// A request larger than the daemon takes (the message names the limit).
    #[error("{0}")]
    TooLarge(String),
    #[error("template {0:?} does not exist")]
    TemplateNotFound(String),
    #[error("no snapshot {0:?}")]
    SnapshotNotFound(String),
    #[error("no project {0:?}")]
    ProjectNotFound(String),
    #[error("no fragment {0:?}")]
    FragmentNotFound(String),
    /// A user the caller may not act for, or one with no active sandbox.
    #[error("{0}")]
    UserNotFound(String),
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
    /// The sandbox's backend cannot do this; the message names the backend and the operation.
    #[error("{0}")]
    Unsupported(String),
    /// The caller may not do this (only admins may); the message says why.
    #[error("{0}")]
    Forbidden(String),
    /// A project shared with the caller read-only, asked to change.
    #[error("{0}")]
    ReadOnly(String),
    #[error("no key {0:?}")]
    KeyNotFound(String),
    /// A service outside sbx (an image registry) refused or could not be reached; the
    /// message says which and why.
    #[error("{0}")]
    Upstream(String),
    /// The request contradicts the current state of things; the message says how.
    #[error("{0}")]
    Conflict(String),
    /// A rate limit or quota refused the request.
    #[error("{}", .0.message)]
    Limited(crate::Limited),
    /// Anything else; the detail (with its whole source chain) is logged, never shown to
    /// clients.
    #[error("internal error")]
    Internal(#[source] Internal),
}

/// What went wrong inside, and why.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct Internal {
    context: String,
    #[source]
    source: Option<BoxError>,
}

impl Error {
    /// A backend's error on a call about sandbox `id`: "not found" means the sandbox went.
    pub fn from_call_on(id: &str, error: BackendError) -> Error {
        match error {
            BackendError::NotFound(_) => Error::SandboxGone(id.to_owned()),
            other => other.into(),
        }
    }
}

impl From<BackendError> for Error {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::TemplateNotFound(name) => Error::TemplateNotFound(name),
            BackendError::ExecFailed(message) => Error::ExecFailed(message),
            BackendError::Unavailable { .. } => Error::Unavailable(error.chain()),
            BackendError::Unsupported { backend, operation } => Error::Unsupported(format!(
                "the {backend} backend of this sandbox does not support {operation}"
            )),
            BackendError::Timeout { operation, .. } => {
                tracing::warn!(error = %error.chain(), "a backend gave up");
                Error::Timeout { operation }
            }
            BackendError::Capacity { resource, .. } => {
                tracing::warn!(%resource, error = %error.chain(), "out of a shared resource");
                match resource {
                    SharedResource::Processes => Error::AtCapacity {
                        message: "the host cannot start more processes right now; try again later"
                            .into(),
                        retry_after: std::time::Duration::from_secs(5),
                    },
                    SharedResource::Engine => Error::AtCapacity {
                        message:
                            "the backend has no room for another sandbox right now; try again later"
                                .into(),
                        retry_after: std::time::Duration::from_secs(5),
                    },
                    SharedResource::Disk => Error::InsufficientStorage(
                        "the host's disk is full; try again later or with a smaller disk_mb".into(),
                    ),
                }
            }
            BackendError::PortUnreachable(message) => Error::Upstream(message),
            BackendError::File { kind, message } => match kind {
                sbx_backend::FileErrorKind::NotFound => Error::FileNotFound(message),
                sbx_backend::FileErrorKind::Conflict => Error::Conflict(message),
                sbx_backend::FileErrorKind::Denied => Error::FileDenied(message),
                sbx_backend::FileErrorKind::NoSpace => Error::InsufficientStorage(message),
                sbx_backend::FileErrorKind::Invalid => Error::Invalid(message),
            },
            other => Error::internal_from("backend call failed", other),
        }
    }
}

impl From<sbx_store::StoreError> for Error {
    fn from(error: sbx_store::StoreError) -> Self {
        match error {
            sbx_store::StoreError::NameTaken(name) => Error::NameTaken(name),
            sbx_store::StoreError::ProjectNameTaken(name) => {
                Error::Conflict(format!("a project of yours is already named {name:?}"))
            }
            other => Error::internal_from("store call failed", other),
        }
    }
}

impl Error {
    /// An internal error with no underlying cause.
    pub fn internal(context: impl Into<String>) -> Error {
        Error::Internal(Internal {
            context: context.into(),
            source: None,
        })
    }

    /// An internal error caused by `source`.
    pub fn internal_from(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Internal(Internal {
            context: context.into(),
            source: Some(Box::new(source)),
        })
    }

    /// The full detail, for the log.
    pub fn detail(&self) -> String {
        match self {
            Error::Internal(internal) => error_chain(internal),
            Error::Unavailable(detail) => detail.clone(),
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
