//! Every backend call's deadline, in one place. A backend that hangs cannot hang the API:
//! the call fails with `Error::Timeout` and the sandbox is left in a state that says so.

use std::future::Future;
use std::time::Duration;

use crate::Error;

pub const CREATE: Duration = Duration::from_secs(30);
pub const DESTROY: Duration = Duration::from_secs(30);
pub const EXEC_START: Duration = Duration::from_secs(10);
pub const LIST: Duration = Duration::from_secs(10);
/// A file operation's start and answer (not the bytes, which go at the client's pace).
pub const FILES: Duration = Duration::from_secs(30);
/// Freezing (which waits for every process to stop) and thawing.
pub const PAUSE: Duration = Duration::from_secs(10);
/// A checkpoint writes a sandbox's whole memory to disk (a restore reads it back), after
/// ending what cannot be saved.
pub const HIBERNATE: Duration = Duration::from_secs(330);
/// A capture copies a sandbox's changes (its disk's worth at most) while it is frozen.
pub const SNAPSHOT: Duration = Duration::from_secs(600);

/// Runs a backend call under its deadline.
pub async fn run<T>(
    deadline: Duration,
    operation: &'static str,
    call: impl Future<Output = Result<T, sbx_backend::BackendError>>,
) -> Result<T, Error> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Timeout { operation }),
    }
}

/// Like [`run`], for a call on sandbox `id`: the backend's "not found" means the sandbox went
/// while the call ran ([`Error::SandboxGone`]).
pub async fn run_on<T>(
    id: &str,
    deadline: Duration,
    operation: &'static str,
    call: impl Future<Output = Result<T, sbx_backend::BackendError>>,
) -> Result<T, Error> {
    run_raw(deadline, operation, call)
        .await?
        .map_err(|e| Error::from_call_on(id, e))
}

/// Like [`run`], but hands the backend's own error back for the caller to interpret.
pub async fn run_raw<T>(
    deadline: Duration,
    operation: &'static str,
    call: impl Future<Output = Result<T, sbx_backend::BackendError>>,
) -> Result<Result<T, sbx_backend::BackendError>, Error> {
    tokio::time::timeout(deadline, call)
        .await
        .map_err(|_| Error::Timeout { operation })
}

/// A pull or an import of a template, whole (a registry that trickles cannot hold one of the
/// store's two slots for ever).
pub const TEMPLATE_MAKE: Duration = Duration::from_secs(30 * 60);
