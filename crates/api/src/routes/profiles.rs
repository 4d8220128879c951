//! `GET /v1/profiles`: what a create may name as `profile`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use sbx_protocol::ProfileList;

use crate::{wire, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/profiles", get(profiles))
}

#[utoipa::path(get, path = "/v1/profiles", tag = "sandboxes",
    responses((status = 200, description = "The configured profiles", body = ProfileList)))]
pub async fn profiles(State(state): State<AppState>) -> Json<ProfileList> {
    Json(ProfileList {
        profiles: state
            .service
            .profiles()
            .into_iter()
            .map(wire::profile)
            .collect(),
    })
}
