//! The one place where failures become HTTP: stable codes, 4xx for client mistakes, and
//! messages that never carry host paths or backend internals (those go to the log, under the
//! request's id, which the error body carries as `request_id`).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sbx_lifecycle::Error;
use sbx_protocol::ErrorBody;

/// An error response: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// `Retry-After`, whole seconds (429, 503).
    pub retry_after: Option<Duration>,
    /// The configuration key of the limit that refused the request (429).
    pub limit: Option<&'static str>,
}

/// What an error response was, for the request context's audit (a response extension).
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
    pub limit: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            limit: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn retry_after(mut self, after: Duration) -> ApiError {
        self.retry_after = Some(after);
        self
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let (status, code) = match &error {
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Error::OverLimit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "over_limit"),
            Error::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            Error::AtCapacity { retry_after, .. } => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "at_capacity",
                    error.to_string(),
                )
                .retry_after(*retry_after)
            }
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "sandbox_not_found"),
            Error::FileNotFound(_) => (StatusCode::NOT_FOUND, "file_not_found"),
            Error::SnapshotNotFound(_) => (StatusCode::NOT_FOUND, "snapshot_not_found"),
            Error::ProjectNotFound(_) => (StatusCode::NOT_FOUND, "project_not_found"),
            Error::FragmentNotFound(_) => (StatusCode::NOT_FOUND, "fragment_not_found"),
            Error::UserNotFound(_) => (StatusCode::NOT_FOUND, "user_not_found"),
            Error::FileDenied(_) => (StatusCode::FORBIDDEN, "permission_denied"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::TemplateNotFound(_) => (StatusCode::BAD_REQUEST, "template_not_found"),
            Error::ProfileNotFound(_) => (StatusCode::BAD_REQUEST, "profile_not_found"),
            Error::NameTaken(_) => (StatusCode::CONFLICT, "name_taken"),
            Error::WrongState { .. } => (StatusCode::CONFLICT, "invalid_state"),
            Error::ExecFailed(_) => (StatusCode::BAD_REQUEST, "exec_failed"),
            Error::SandboxGone(_) => (StatusCode::CONFLICT, "sandbox_gone"),
            Error::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "backend_timeout"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "backend_unavailable"),
            Error::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "admin_required"),
            Error::ReadOnly(_) => (StatusCode::FORBIDDEN, "read_only"),
            Error::CredentialEnded => (StatusCode::UNAUTHORIZED, "credential_ended"),
            Error::KeyNotFound(_) => (StatusCode::NOT_FOUND, "key_not_found"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_error"),
            Error::Limited(limited) => {
                return ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: limited.code,
                    message: format!("{} (limit: {})", limited.message, limited.limit),
                    retry_after: Some(limited.retry_after),
                    limit: Some(limited.limit),
                }
            }
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        // A host at capacity is the answer working, not a failure of the daemon.
        if matches!(
            error,
            Error::AtCapacity { .. } | Error::InsufficientStorage(_)
        ) {
            tracing::warn!(code, detail = %error.detail(), "refused: the host is at capacity");
        } else if status.is_server_error() {
            tracing::error!(code, detail = %error.detail(), "request failed");
        }
        // Display of lifecycle errors is client-safe by construction (see lifecycle::Error).
        ApiError::new(status, code, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = ErrorBody::new(self.code, self.message.clone());
        body.error.request_id = crate::context::request_id();
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sbx\""),
            );
        }
        response.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message,
            limit: self.limit,
        });
        response
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    let path = crate::context::truncated(uri.path(), crate::context::LOGGED_PATH_BYTES);
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for {path}"),
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let path = crate::context::truncated(uri.path(), crate::context::LOGGED_PATH_BYTES);
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {path}"),
    )
}
