//! Errors in E2B's shapes: `{"code": <HTTP status>, "message"}` on the control plane and on
//! envd's HTTP routes (the SDKs parse exactly that for the statuses they document), Connect
//! error codes on envd's RPCs. Lifecycle's messages are client-safe by construction.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use connectrpc::{ConnectError, ErrorCode};
use sbx_lifecycle::Error;

/// The HTTP status E2B's APIs answer a lifecycle error with.
pub(crate) fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::Invalid(_)
        | Error::ExecFailed(_)
        | Error::TemplateNotFound(_)
        | Error::ProfileNotFound(_) => StatusCode::BAD_REQUEST,
        Error::OverLimit(_) => StatusCode::BAD_REQUEST,
        Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::AtCapacity { .. } | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::NotFound(_)
        | Error::FileNotFound(_)
        | Error::SnapshotNotFound(_)
        | Error::ProjectNotFound(_)
        | Error::FragmentNotFound(_)
        | Error::UserNotFound(_) => StatusCode::NOT_FOUND,
        Error::KeyNotFound(_) => StatusCode::NOT_FOUND,
        Error::FileDenied(_) | Error::Forbidden(_) | Error::ReadOnly(_) => StatusCode::FORBIDDEN,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::NameTaken(_) | Error::WrongState { .. } | Error::Conflict(_) => StatusCode::CONFLICT,
        Error::SandboxGone(_) | Error::Upstream(_) => StatusCode::BAD_GATEWAY,
        Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        Error::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        Error::CredentialEnded => StatusCode::UNAUTHORIZED,
        Error::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"code", "message"}` with `status`; a refusal that waiting cannot cure says so to the SDKs
/// that retry server errors (`Should-Retry: false`).
pub(crate) fn e2b_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message.into() });
    let mut response = (status, axum::Json(body)).into_response();
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert("should-retry", HeaderValue::from_static("false"));
    }
    response
}

/// A lifecycle error in E2B's shape (with `Retry-After` when waiting helps).
pub(crate) fn from_lifecycle(error: Error) -> Response {
    let status = status_of(&error);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(detail = %error.detail(), "e2b request failed");
    }
    let retry_after = match &error {
        Error::AtCapacity { retry_after, .. } => Some(*retry_after),
        Error::Limited(limited) => Some(limited.retry_after),
        _ => None,
    };
    let mut response = e2b_error(status, error.to_string());
    if let Some(after) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(after.as_secs().max(1)),
        );
    }
    response
}

/// A lifecycle error as a Connect error.
pub(crate) fn connect_error(error: Error) -> ConnectError {
    let code = match &error {
        Error::Invalid(_) | Error::ExecFailed(_) | Error::OverLimit(_) => {
            ErrorCode::InvalidArgument
        }
        Error::NotFound(_)
        | Error::FileNotFound(_)
        | Error::SnapshotNotFound(_)
        | Error::ProjectNotFound(_)
        | Error::FragmentNotFound(_)
        | Error::UserNotFound(_) => ErrorCode::NotFound,
        Error::KeyNotFound(_) | Error::TemplateNotFound(_) | Error::ProfileNotFound(_) => {
            ErrorCode::NotFound
        }
        Error::FileDenied(_) | Error::Forbidden(_) | Error::ReadOnly(_) => {
            ErrorCode::PermissionDenied
        }
        Error::TooLarge(_) | Error::Limited(_) | Error::InsufficientStorage(_) => {
            ErrorCode::ResourceExhausted
        }
        Error::AtCapacity { .. } => ErrorCode::ResourceExhausted,
        Error::NameTaken(_) | Error::Conflict(_) => ErrorCode::AlreadyExists,
        Error::WrongState { .. } => ErrorCode::FailedPrecondition,
        Error::SandboxGone(_) | Error::Unavailable(_) | Error::Upstream(_) => {
            ErrorCode::Unavailable
        }
        Error::Timeout { .. } => ErrorCode::DeadlineExceeded,
        Error::Unsupported(_) => ErrorCode::Unimplemented,
        Error::CredentialEnded => ErrorCode::Unauthenticated,
        Error::Internal(_) => {
            tracing::error!(detail = %error.detail(), "envd request failed");
            ErrorCode::Internal
        }
    };
    ConnectError::new(code, error.to_string())
}

/// Rewrites an sbx error answer (`{"error": {"code", "message"}}`) on a control-plane path
/// into E2B's `{"code": <status>, "message"}`, which the SDKs parse for the statuses they
/// document (anything else makes them fail with a decoding error instead of a clear one).
pub async fn rewrite_control_error(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return e2b_error(status, status.canonical_reason().unwrap_or("error"));
    };
    let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    // Only sbx's own shape is rewritten: E2B's, and Connect's `{"code": "<name>"}`, stay.
    let Some(message) = parsed.pointer("/error/message").and_then(|m| m.as_str()) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let message = message.to_owned();
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        parts
            .headers
            .insert("should-retry", HeaderValue::from_static("false"));
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
