//! The one error shape of the API: `{"error":{"code","message"}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of every non-2xx response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine code and a human message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case identifier of the error kind (e.g. `sandbox_not_found`).
    pub code: String,
    /// Human-readable explanation; never contains host paths or backend internals.
    pub message: String,
    /// The request's id (also in the `X-Request-Id` header): the daemon's log has the details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                request_id: None,
            },
        }
    }
}
