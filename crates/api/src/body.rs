//! Decoding JSON request bodies with errors in the API's shape.
//!
//! Strict: a body must say `Content-Type: application/json` (or `…+json`) whatever the
//! daemon's mode — a page of another site can send a body without one, or as `text/plain`,
//! without asking the browser's permission first (CORS "simple requests"). Only an empty body
//! (a request whose fields are all optional, as `curl -X POST` sends) needs no type. Unknown
//! fields, wrong types and oversized bodies are answered with the field and what was wrong.
//!
//! Bounded: bodies over 64 KiB count against a daemon-wide [`BodyBudget`] while they are read
//! and decoded (and, for an exec, while its command keeps the stdin), each user at most a
//! quarter of it, so that many large requests at once (exec stdin may be 32 MiB) cannot make
//! the daemon hold more than the budget; past it a request is refused at once (`503 busy`, or
//! `429` past the user's share). A body must arrive whole within `daemon.body_timeout`
//! (`408`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::{ApiError, MAX_EXEC_BODY_BYTES};

pub struct JsonBody<T>(pub T);

/// A decoded body and its share of the [`BodyBudget`], for a handler that keeps what it
/// decoded for long (an exec's stdin lives until the command ends or its caller leaves).
pub struct BudgetedJsonBody<T>(pub T, pub BodyPermit);

/// Bytes of request bodies being read or held: daemon-wide, and per user (a quarter of the
/// whole), with the deadline for reading a whole body.
#[derive(Debug, Clone)]
pub struct BodyBudget(Arc<BudgetInner>);

#[derive(Debug)]
struct BudgetInner {
    limit: u64,
    user_limit: u64,
    /// How long a body may take to arrive, whole.
    deadline: Duration,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: u64,
    per_user: HashMap<String, u64>,
}

/// A share of the [`BodyBudget`]; given back when dropped.
#[derive(Debug)]
pub struct BodyPermit(Option<(Arc<BudgetInner>, String, u64)>);

impl Drop for BodyPermit {
    fn drop(&mut self) {
        let Some((budget, user, bytes)) = self.0.take() else {
            return;
        };
        {
            let mut held = budget.held.lock().expect("body budget is never poisoned");
            held.total -= bytes;
            if let Some(mine) = held.per_user.get_mut(&user) {
                *mine -= bytes;
                if *mine == 0 {
                    held.per_user.remove(&user);
                }
            }
        }
        if bytes >= 1 << 20 {
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

impl BodyBudget {
    /// `bytes` for all bodies together; each user may hold a quarter. A body must arrive whole
    /// within `deadline`.
    pub fn new(bytes: u64, deadline: Duration) -> BodyBudget {
        BodyBudget(Arc::new(BudgetInner {
            limit: bytes,
            user_limit: bytes / 4,
            deadline,
            held: Mutex::default(),
        }))
    }

    /// A share for a body of `length` bytes of `user`'s. Refused at once when it does not fit
    /// (a request never waits in a queue that others could fill).
    fn reserve(&self, user: &str, length: u64) -> Result<BodyPermit, ApiError> {
        if length <= FREE_BYTES {
            return Ok(BodyPermit(None));
        }
        let budget = &self.0;
        let mut held = budget.held.lock().expect("body budget is never poisoned");
        let mine = held.per_user.get(user).copied().unwrap_or(0);
        if mine + length > budget.user_limit {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "user {user:?} holds {} MiB of request bodies (stdin of running commands among them) and may hold {} MiB; wait for a command to end",
                    mine >> 20,
                    budget.user_limit >> 20
                ),
            )
            .retry_after(Duration::from_secs(5)));
        }
        if held.total + length > budget.limit {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the daemon is holding as many large request bodies as it may; try again shortly",
            )
            .retry_after(Duration::from_secs(5)));
        }
        held.total += length;
        *held.per_user.entry(user.to_owned()).or_default() += length;
        Ok(BodyPermit(Some((budget.clone(), user.to_owned(), length))))
    }
}

impl BodyBudget {
    /// `body`, charged to the budget as it arrives (a MiB at a time, for `user`) and given
    /// back when it is dropped: for bodies read whole by code that is not sbx's own (the
    /// Connect services of E2B's envd). Past the budget, the body fails with an error.
    pub(crate) fn charged(&self, user: &str, body: axum::body::Body) -> axum::body::Body {
        use futures::StreamExt as _;
        const STEP: u64 = 1 << 20;
        let budget = self.clone();
        let user = user.to_owned();
        let mut permits: Vec<BodyPermit> = Vec::new();
        let mut uncharged = 0u64;
        let stream = body.into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            uncharged += chunk.len() as u64;
            while uncharged >= STEP {
                let permit = budget
                    .reserve(&user, STEP)
                    .map_err(|e| std::io::Error::other(e.message))?;
                permits.push(permit);
                uncharged -= STEP;
            }
            Ok::<_, std::io::Error>(chunk)
        });
        axum::body::Body::from_stream(stream)
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
        let user = request
            .extensions()
            .get::<sbx_lifecycle::Caller>()
            .map_or_else(|| "anonymous".to_owned(), |c| c.user.clone());
        // A length past the largest body any route takes is refused before anything is held.
        if length.is_some_and(|l| l > MAX_EXEC_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let permit = match &budget {
            // Without a length the body may be as large as the route allows.
            Some(budget) => budget.reserve(&user, length.unwrap_or(MAX_EXEC_BODY_BYTES as u64))?,
            None => BodyPermit(None),
        };
        let deadline = budget.map_or(Duration::from_secs(60), |b| b.0.deadline);
        // The whole body within the deadline: a client dripping a byte at a time holds its
        // share of the budget no longer than that.
        let bytes = tokio::time::timeout(deadline, Bytes::from_request(request, state))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        deadline.as_secs()
                    ),
                )
            })?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
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

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "request body exceeds this route's limit ({} bytes; {} for exec and a project's files as JSON; 4096 for login)",
            crate::MAX_BODY_BYTES,
            crate::MAX_EXEC_BODY_BYTES
        ),
    )
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
