//! `/v1/sandboxes`: create, list, get, delete.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use sbx_lifecycle::ListFilter;

use sbx_protocol::{
    CreateSandboxRequest, ErrorBody, EventList, ExtendRequest, Sandbox, SandboxList,
};

use crate::body::JsonBody;
use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sandboxes", get(list).post(create))
        .route("/v1/sandboxes/{id}", get(fetch).delete(delete))
        .route("/v1/sandboxes/{id}/ttl", patch(extend))
        .route("/v1/sandboxes/{id}/recreate", post(recreate))
        .route("/v1/sandboxes/{id}/pause", post(pause))
        .route("/v1/sandboxes/{id}/resume", post(resume))
        .route("/v1/sandboxes/{id}/hibernate", post(hibernate))
        .route("/v1/sandboxes/{id}/events", get(history))
}

#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes",
    request_body = CreateSandboxRequest,
    responses(
        (status = 201, description = "The sandbox is running", body = Sandbox),
        (status = 400, description = "Invalid request, unknown template or profile, or limits below their minimum", body = ErrorBody),
        (status = 404, description = "No such snapshot (`from_snapshot`)", body = ErrorBody),
        (status = 409, description = "The name is taken by a live sandbox", body = ErrorBody),
        (status = 422, description = "A resource above its cap: the profile's maximum, the host's bound for one sandbox, or the user's whole quota (the message names the field and the cap)", body = ErrorBody),
        (status = 503, description = "The host is at capacity (its process table is promised to live sandboxes, or it cannot start a process now); `Retry-After` says when to try again", body = ErrorBody),
        (status = 507, description = "The host's disk cannot take the sandbox's disk beside its reserve", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    JsonBody(request): JsonBody<CreateSandboxRequest>,
) -> Result<(StatusCode, Json<Sandbox>), ApiError> {
    let request = wire::new_sandbox(&request)?;
    let sandbox = state.service.create(&caller, &request).await?;
    Ok((StatusCode::CREATED, Json(wire::sandbox(sandbox))))
}

#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    params(
        ("state" = Option<String>, Query, description = "Comma-separated states to list (default: all but destroyed)"),
    ),
    responses(
        (status = 200, description = "Sandboxes, oldest first. Also filter by metadata with `metadata.KEY=VALUE` parameters.", body = SandboxList),
        (status = 400, description = "Unknown state or parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> Result<Json<SandboxList>, ApiError> {
    let filter = parse_filter(query.as_deref().unwrap_or(""))?;
    let sandboxes = wire::sandboxes(state.service.list(&caller, &filter)?);
    Ok(Json(SandboxList { sandboxes }))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    responses(
        (status = 200, description = "The sandbox", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    Ok(Json(wire::sandbox(state.service.get(&caller, &id)?)))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    responses(
        (status = 200, description = "The sandbox is destroyed (also when it already was)", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let reason = sbx_lifecycle::reason::DELETED;
    let sandbox = state.service.destroy(&caller, &id, reason).await?;
    Ok(Json(wire::sandbox(sandbox)))
}

#[utoipa::path(patch, path = "/v1/sandboxes/{id}/ttl", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    request_body = ExtendRequest,
    responses(
        (status = 200, description = "The new deadline (`warnings` says when it was capped)", body = Sandbox),
        (status = 400, description = "Invalid duration", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is expired, destroyed or being destroyed", body = ErrorBody),
    ))]
pub async fn extend(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<ExtendRequest>,
) -> Result<Json<Sandbox>, ApiError> {
    let duration = wire::span(&request.duration, "duration")?;
    let sandbox = state.service.extend(&caller, &id, &duration).await?;
    Ok(Json(wire::sandbox(sandbox)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/recreate", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    request_body(content = sbx_protocol::RecreateRequest, description = "Optional"),
    responses(
        (status = 200, description = "A fresh instance with the same id, spec and a fresh TTL", body = Sandbox),
        (status = 400, description = "Invalid body, or a snapshot of another template or backend", body = ErrorBody),
        (status = 404, description = "No such sandbox, or no such snapshot", body = ErrorBody),
        (status = 409, description = "The sandbox is destroyed", body = ErrorBody),
        (status = 422, description = "A failed sandbox no longer fits the user's whole quota", body = ErrorBody),
        (status = 429, description = "A failed sandbox does not fit the user's quotas now", body = ErrorBody),
        (status = 503, description = "The host is at capacity; `Retry-After` says when to try again", body = ErrorBody),
        (status = 507, description = "The host's disk cannot take the sandbox's disk beside its reserve", body = ErrorBody),
    ))]
pub async fn recreate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Sandbox>, ApiError> {
    let request: sbx_protocol::RecreateRequest = super::snapshots::optional_json(&body)?;
    Ok(Json(wire::sandbox(
        state
            .service
            .recreate_from(&caller, &id, request.snapshot.as_deref())
            .await?,
    )))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    responses(
        (status = 200, description = "The sandbox is paused: its processes are frozen where they are (also when it already was)", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running (expired, destroyed, failed), or stopped meanwhile", body = ErrorBody),
        (status = 501, description = "The sandbox's backend cannot pause", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    Ok(Json(wire::sandbox(
        state.service.pause(&caller, &id).await?,
    )))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    responses(
        (status = 200, description = "The sandbox runs again, every process where it was: thawed when paused, restored from its checkpoint when hibernated (also when it was neither)", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is expired, destroyed or failed", body = ErrorBody),
        (status = 501, description = "The sandbox's backend cannot pause", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    Ok(Json(wire::sandbox(
        state.service.resume(&caller, &id).await?,
    )))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/hibernate", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    responses(
        (status = 200, description = "The sandbox is hibernated: its processes and memory are on disk, its host processes gone; `resume` restores them (also when it already was). Commands attached to a client and terminals end first", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running (expired, destroyed, failed), or stopped meanwhile", body = ErrorBody),
        (status = 501, description = "The sandbox's backend cannot hibernate (only the oci backend under gVisor can)", body = ErrorBody),
    ))]
pub async fn hibernate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    Ok(Json(wire::sandbox(
        state.service.hibernate(&caller, &id).await?,
    )))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/events", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    responses(
        (status = 200, description = "Every state change of the sandbox, with its reason, oldest first", body = EventList),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    ))]
pub async fn history(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<EventList>, ApiError> {
    Ok(Json(EventList {
        events: state
            .service
            .sandbox_events(&caller, &id)?
            .iter()
            .map(wire::event)
            .collect(),
    }))
}

/// `state=a,b` (repeatable) and `metadata.KEY=VALUE` (repeatable); anything else is an error.
fn parse_filter(query: &str) -> Result<ListFilter, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::invalid(format!("malformed query string: {e}")))?;
    let mut filter = ListFilter {
        states: Vec::new(),
        metadata: BTreeMap::new(),
    };
    for (key, value) in pairs {
        if key == "state" {
            for name in value.split(',').filter(|s| !s.is_empty()) {
                filter.states.push(wire::state_named(name)?);
            }
        } else if let Some(label) = key.strip_prefix("metadata.") {
            filter.metadata.insert(label.to_owned(), value);
        } else {
            return Err(ApiError::invalid(format!(
                "unknown query parameter {key:?}; use state=… or metadata.KEY=VALUE"
            )));
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        let filter = parse_filter("state=running,failed&metadata.team=a%20b").unwrap();
        assert_eq!(
            filter.states,
            vec![sbx_lifecycle::State::Running, sbx_lifecycle::State::Failed]
        );
        assert_eq!(filter.metadata["team"], "a b");
        assert!(parse_filter("state=sleeping").is_err());
        assert!(parse_filter("colour=red").is_err());
        assert!(parse_filter("").unwrap().states.is_empty());
    }
}
