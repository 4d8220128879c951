//! `GET /healthz`: answers while the daemon runs; needs nothing else to be up.

use axum::routing::get;
use axum::{Json, Router};
use sbx_protocol::Health;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(health))
}

#[utoipa::path(get, path = "/healthz", tag = "daemon",
    responses((status = 200, description = "The daemon is up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}
