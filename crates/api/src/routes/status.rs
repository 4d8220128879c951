//! `GET /v1/status`: version, uptime, backends, counts, and every live sandbox with its usage.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use sbx_protocol::Status;

use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/status", get(status))
}

#[utoipa::path(get, path = "/v1/status", tag = "daemon",
    responses((status = 200, description = "What the daemon runs, and how it is", body = Status)))]
pub async fn status(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<Status>, ApiError> {
    Ok(Json(wire::status(state.service.status(&caller).await?)))
}
