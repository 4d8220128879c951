//! `/v1/snapshots…` and `POST /v1/sandboxes/{id}/snapshots`: filesystem snapshots — taken,
//! listed, inspected, deleted, exported as one `.tar.zst` file and imported from one. Another
//! user's snapshot is 404, like one that does not exist.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use sbx_protocol::{CreateSnapshotRequest, ErrorBody, Snapshot, SnapshotList};
use serde::Deserialize;

use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sandboxes/{id}/snapshots", post(create))
        .route("/v1/snapshots", get(list))
        .route("/v1/snapshots/import", post(import))
        .route("/v1/snapshots/{id}", get(fetch).delete(delete))
        .route("/v1/snapshots/{id}/export", get(export))
}

/// An optional JSON object body: none (or empty) is the default. Anything but an object is
/// refused (serde would otherwise read an array as a struct's fields in order).
pub(crate) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    request_body(content = CreateSnapshotRequest, description = "Optional"),
    responses(
        (status = 201, description = "The snapshot: the sandbox's files at one instant (its processes did not run meanwhile; a paused sandbox stays paused)", body = Snapshot),
        (status = 400, description = "Invalid name or body", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running or paused", body = ErrorBody),
        (status = 429, description = "The user keeps `snapshots.max_per_user` snapshots already", body = ErrorBody),
        (status = 501, description = "The sandbox's backend has no snapshots", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    let request: CreateSnapshotRequest = optional_json(&body)?;
    let snapshot = state
        .service
        .snapshot_create(&caller, &id, request.name)
        .await?;
    Ok((StatusCode::CREATED, Json(wire::snapshot(snapshot))))
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots",
    responses(
        (status = 200, description = "The caller's snapshots (an admin's: everyone's), oldest first", body = SnapshotList),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<SnapshotList>, ApiError> {
    let snapshots = state.service.snapshots(&caller)?;
    Ok(Json(SnapshotList {
        snapshots: snapshots.into_iter().map(wire::snapshot).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id")),
    responses(
        (status = 200, description = "The snapshot", body = Snapshot),
        (status = 404, description = "No such snapshot (or another user's)", body = ErrorBody),
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(wire::snapshot(state.service.snapshot(&caller, &id)?)))
}

#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id")),
    responses(
        (status = 204, description = "Deleted (its stored files go once no sandbox started from it is left)"),
        (status = 404, description = "No such snapshot (or another user's)", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.snapshot_delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/snapshots/{id}/export", tag = "snapshots",
    params(("id" = String, Path, description = "Snapshot id")),
    responses(
        (status = 200, description = "The snapshot as one file: a zstd-compressed tar of a manifest and the snapshot's files (OCI whiteout convention), to import on another host", content_type = "application/zstd", body = Vec<u8>),
        (status = 404, description = "No such snapshot (or another user's)", body = ErrorBody),
        (status = 501, description = "The snapshot's backend cannot export", body = ErrorBody),
    ))]
pub async fn export(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stream = state.service.snapshot_export(&caller, &id).await?;
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zstd"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.tar.zst\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// A name for the imported snapshot (default: the file's).
    #[serde(default)]
    name: Option<String>,
    /// The profile whose backend stores it (default: `default`).
    #[serde(default)]
    profile: Option<String>,
}

#[utoipa::path(post, path = "/v1/snapshots/import", tag = "snapshots",
    params(ImportQuery),
    request_body(content = Vec<u8>, content_type = "application/zstd", description = "A file from `GET /v1/snapshots/{id}/export`, streamed"),
    responses(
        (status = 201, description = "A new snapshot of the caller's, with the file's files", body = Snapshot),
        (status = 400, description = "Not a snapshot file, or a hostile one (a path out of it, a device node, …); an unknown profile", body = ErrorBody),
        (status = 413, description = "Larger than `files.max_upload_bytes`, or unpacking to more than the profile's largest disk", body = ErrorBody),
        (status = 429, description = "The user keeps `snapshots.max_per_user` snapshots already", body = ErrorBody),
        (status = 501, description = "The profile's backend has no snapshots", body = ErrorBody),
    ))]
pub async fn import(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    params: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let imported = async {
        let Query(params) = params.map_err(|e| ApiError::invalid(e.body_text()))?;
        let counted = super::files::Counted::new(&state, &headers, body)?;
        let status = counted.status.clone();
        let imported = state
            .service
            .snapshot_import(
                &caller,
                counted.stream.boxed(),
                params.name,
                params.profile.as_deref(),
            )
            .await;
        if let Some(failure) = status.failure(&state) {
            return Err(failure);
        }
        Ok::<_, ApiError>(imported?)
    }
    .await;
    match imported {
        Ok(snapshot) => (StatusCode::CREATED, Json(wire::snapshot(snapshot))).into_response(),
        Err(error) => super::files::closing(error),
    }
}
