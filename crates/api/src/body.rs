//! Decoding JSON request bodies with errors in the API's shape.
//!
//! Strict: a body must say `Content-Type: application/json` (or `…+json`) whatever the
//! daemon's mode — a page of another site can send a body without one, or as `text/plain`,
//! without asking the browser's permission first (CORS "simple requests"). Only an empty body
//! (a request whose fields are all optional, as `curl -X POST` sends) needs no type. Unknown
//! fields, wrong types and oversized bodies are answered with the field and what was wrong.
//!
//! Bounded: bodies being read and decoded count against a daemon-wide [`BodyBudget`], so that
//! many large requests at once (exec stdin may be 32 MiB) cannot make the daemon hold more
//! than the budget; past it a request waits a moment, then gets `503 busy`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{ApiError, MAX_EXEC_BODY_BYTES};

pub struct JsonBody<T>(pub T);

/// A decoded body and its share of the [`BodyBudget`], for a handler that keeps what it
/// decoded for long (an exec's stdin lives until the command ends or its caller leaves).
pub struct BudgetedJsonBody<T>(pub T, pub BodyPermit);

/// Bytes of request bodies being read or held, daemon-wide (in KiB permits).
#[derive(Debug, Clone)]
pub struct BodyBudget(Arc<Semaphore>);

/// A share of the [`BodyBudget`]; given back when dropped.
#[derive(Debug)]
pub struct BodyPermit(Option<OwnedSemaphorePermit>);

impl Drop for BodyPermit {
    fn drop(&mut self) {
        if self.0.take().is_some_and(|p| p.num_permits() >= 1024) {
            trim_soon();
        }
    }
}

/// Gives memory freed with a large body back to the host, a moment after the body went (what
/// held its copies — a command's stdin — may go a little later). glibc's malloc keeps freed
/// memory of its per-thread heaps for reuse: ten 20 MiB bodies left the daemon's footprint at
/// 180 MiB after they were freed, where `malloc_trim` brings it back to its idle size. At most
/// one trim runs per second.
fn trim_soon() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SCHEDULED: AtomicBool = AtomicBool::new(false);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    runtime.spawn(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        SCHEDULED.store(false, Ordering::Release);
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only returns free memory of the allocator's heaps to the system;
        // it takes the allocator's locks like any malloc call.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    });
}

/// Bodies up to this size need no share of the budget.
const FREE_BYTES: u64 = 64 * 1024;
/// How long a request waits for the budget before `503 busy`.
const BUDGET_WAIT: Duration = Duration::from_secs(10);

impl BodyBudget {
    pub fn new(bytes: u64) -> BodyBudget {
        let kib = (bytes / 1024).min(u64::from(u32::MAX >> 4)) as usize;
        BodyBudget(Arc::new(Semaphore::new(kib)))
    }

    /// A share for a body of `length` bytes.
    async fn reserve(&self, length: u64) -> Result<BodyPermit, ApiError> {
        if length <= FREE_BYTES {
            return Ok(BodyPermit(None));
        }
        let kib = length.div_ceil(1024).min(u64::from(u32::MAX)) as u32;
        match tokio::time::timeout(BUDGET_WAIT, self.0.clone().acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(BodyPermit(Some(permit))),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the daemon is holding as many large requests as it may; try again shortly",
            )
            .retry_after(Duration::from_secs(5))),
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Send + 'static> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let BudgetedJsonBody(value, _permit) =
            BudgetedJsonBody::from_request(request, state).await?;
        Ok(JsonBody(value))
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Send + 'static> FromRequest<S> for BudgetedJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let headers = request.headers();
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let has_body =
            length.is_some_and(|l| l > 0) || headers.contains_key(header::TRANSFER_ENCODING);
        match headers.get(header::CONTENT_TYPE) {
            Some(content_type) => {
                let content_type = content_type
                    .to_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                let essence = content_type.split(';').next().unwrap_or_default().trim();
                if essence != "application/json" && !essence.ends_with("+json") {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        format!("expected Content-Type application/json, got {essence:?}"),
                    ));
                }
            }
            None if has_body => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "a request body needs Content-Type: application/json",
                ))
            }
            None => {}
        }
        let budget = request.extensions().get::<BodyBudget>().cloned();
        let permit = match budget {
            // Without a length the body may be as large as the route allows.
            Some(budget) => {
                budget
                    .reserve(length.unwrap_or(MAX_EXEC_BODY_BYTES as u64))
                    .await?
            }
            None => BodyPermit(None),
        };
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!(
                            "request body exceeds this route's limit ({} bytes; {} for exec)",
                            crate::MAX_BODY_BYTES,
                            crate::MAX_EXEC_BODY_BYTES
                        ),
                    )
                } else {
                    ApiError::invalid(format!(
                        "cannot read the request body: {}",
                        rejection.body_text()
                    ))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return decode(b"{}").map(|value| BudgetedJsonBody(value, permit));
        }
        // Parsing megabytes of JSON takes milliseconds: not on the threads that serve every
        // other request (ten 20 MiB exec bodies at once held them for 200 ms).
        if bytes.len() as u64 > FREE_BYTES {
            return tokio::task::spawn_blocking(move || decode(&bytes))
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        format!("decoding the body failed: {e}"),
                    )
                })?
                .map(|value| BudgetedJsonBody(value, permit));
        }
        decode(&bytes).map(|value| BudgetedJsonBody(value, permit))
    }
}

/// Parses JSON, naming the offending field in the error (`resources.memory_mb: invalid type…`).
fn decode<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    // Every request body is an object (serde would also read a struct from an array).
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid(
            "invalid request body: expected a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            json_error(&inner, format!("invalid request body: {inner}"))
        } else {
            json_error(&inner, format!("invalid request body: {path}: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| json_error(&e, format!("invalid request body: {e}")))?;
    Ok(value)
}

fn json_error(error: &serde_json::Error, message: String) -> ApiError {
    let code = if error.is_syntax() || error.is_eof() {
        "invalid_json"
    } else {
        "invalid_request"
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let error = decode::<sbx_protocol::CreateSandboxRequest>(br#"{"resources":{"pids":"x"}}"#)
            .err()
            .unwrap();
        assert!(
            error.message.contains("resources.pids: invalid type"),
            "{}",
            error.message
        );
        let error = decode::<sbx_protocol::CreateSandboxRequest>(b"{} x")
            .err()
            .unwrap();
        assert_eq!(error.code, "invalid_json");
        let error = decode::<sbx_protocol::CreateSandboxRequest>(b"[]")
            .err()
            .unwrap();
        assert_eq!(error.code, "invalid_request");
    }
}
