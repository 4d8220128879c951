//! `/v1/users…`: each user's one active sandbox — switched to a project's fragment, shown,
//! ended — and the list of them. A caller acts for itself; an admin for any user. Another
//! user is 404.

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use sbx_protocol::{ActiveList, ActiveSandbox, Deactivated, ErrorBody, SwitchRequest};

use crate::body::JsonBody;
use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/users", get(list)).route(
        "/v1/users/{user}/active",
        put(switch).get(fetch).delete(deactivate),
    )
}

#[utoipa::path(get, path = "/v1/users", tag = "projects",
    responses(
        (status = 200, description = "Users' active sandboxes: the caller's, or every user's for an admin", body = ActiveList),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<ActiveList>, ApiError> {
    let domain = state.e2b.e2b.domain();
    let users = state.service.actives(&caller)?;
    Ok(Json(ActiveList {
        users: users.into_iter().map(|a| wire::active(a, domain)).collect(),
    }))
}

#[utoipa::path(put, path = "/v1/users/{user}/active", tag = "projects",
    params(("user" = String, Path, description = "The caller's own user name (an admin: any)")),
    request_body = SwitchRequest,
    responses(
        (status = 200, description = "The user's new active sandbox: the old one destroyed, a new one made, the fragment's files restored under the project's root", body = ActiveSandbox),
        (status = 400, description = "Invalid request, unknown profile", body = ErrorBody),
        (status = 404, description = "No such user (another user's), project or fragment", body = ErrorBody),
        (status = 409, description = "The new sandbox stopped while its files were restored", body = ErrorBody),
        (status = 413, description = "The fragment does not fit the sandbox's limits", body = ErrorBody),
        (status = 422, description = "The profile's resources exceed what the host can give one sandbox", body = ErrorBody),
        (status = 429, description = "A quota of the user's", body = ErrorBody),
        (status = 501, description = "The profile's backend has no files API", body = ErrorBody),
        (status = 503, description = "The host has no room for another sandbox now", body = ErrorBody),
        (status = 504, description = "The backend did not answer in time", body = ErrorBody),
        (status = 507, description = "The host's disk cannot take the sandbox or its files", body = ErrorBody),
    ))]
pub async fn switch(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(user): Path<String>,
    JsonBody(request): JsonBody<SwitchRequest>,
) -> Result<Json<ActiveSandbox>, ApiError> {
    let active = state
        .service
        .switch(&caller, &user, &wire::switch(request))
        .await?;
    Ok(Json(wire::active(active, state.e2b.e2b.domain())))
}

#[utoipa::path(get, path = "/v1/users/{user}/active", tag = "projects",
    params(("user" = String, Path, description = "The caller's own user name (an admin: any)")),
    responses(
        (status = 200, description = "The user's active project, fragment and sandbox (`alive: false` once it died or expired)", body = ActiveSandbox),
        (status = 404, description = "No active sandbox (or another user's)", body = ErrorBody),
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(user): Path<String>,
) -> Result<Json<ActiveSandbox>, ApiError> {
    let active = state.service.active(&caller, &user)?;
    Ok(Json(wire::active(active, state.e2b.e2b.domain())))
}

#[utoipa::path(delete, path = "/v1/users/{user}/active", tag = "projects",
    params(("user" = String, Path, description = "The caller's own user name (an admin: any)")),
    responses(
        (status = 200, description = "The active sandbox is destroyed and forgotten", body = Deactivated),
        (status = 404, description = "No active sandbox (or another user's)", body = ErrorBody),
        (status = 504, description = "The backend did not finish the destroy in time", body = ErrorBody),
    ))]
pub async fn deactivate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(user): Path<String>,
) -> Result<Json<Deactivated>, ApiError> {
    let (sandbox_id, killed) = state.service.deactivate(&caller, &user).await?;
    Ok(Json(Deactivated {
        user,
        sandbox_id,
        killed,
    }))
}
