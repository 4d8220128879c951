//! `POST /v1/expire` and `POST /v1/cleanup`: operator actions over all sandboxes.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use sbx_protocol::{CleanupReport, CleanupRequest, ErrorBody, ExpireRequest, ExpireResult};

use crate::body::JsonBody;
use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/expire", post(expire))
        .route("/v1/cleanup", post(cleanup))
}

#[utoipa::path(post, path = "/v1/expire", tag = "maintenance",
    request_body = ExpireRequest,
    responses(
        (status = 200, description = "Sandboxes past their deadline: listed, or destroyed with `apply`", body = ExpireResult),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
    ))]
pub async fn expire(
    State(state): State<AppState>,
    Auth(caller): Auth,
    JsonBody(request): JsonBody<ExpireRequest>,
) -> Result<Json<ExpireResult>, ApiError> {
    let result = state.service.expire(&caller, request.apply).await?;
    Ok(Json(wire::expire_result(result)))
}

#[utoipa::path(post, path = "/v1/cleanup", tag = "maintenance",
    request_body = CleanupRequest,
    responses(
        (status = 200, description = "Every sandbox destroyed (reason `daemon-cleanup`) and every orphaned host trace removed; with `dry_run` only listed", body = CleanupReport),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
    ))]
pub async fn cleanup(
    State(state): State<AppState>,
    Auth(caller): Auth,
    JsonBody(request): JsonBody<CleanupRequest>,
) -> Result<Json<CleanupReport>, ApiError> {
    let report = state.service.cleanup(&caller, request.dry_run).await?;
    Ok(Json(wire::cleanup_report(report)))
}
