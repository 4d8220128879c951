//! `/v1/templates…`: templates from container images — listed and inspected by anyone,
//! pulled from a registry, imported from an archive and removed by admins. A pull or an
//! import answers its template (201), or, for a client that accepts `application/x-ndjson`,
//! a line per step as it goes and then the template or the error.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use sbx_lifecycle::{Caller, ImageSource};
use sbx_protocol::{
    ErrorBody, ErrorDetail, PullTemplateRequest, Template, TemplateEvent, TemplateList,
};

use crate::body::JsonBody;
use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/templates", get(list).post(pull))
        .route("/v1/templates/{name}", get(fetch).delete(delete))
        .route("/v1/templates/{name}/import", post(import))
}

#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses(
        (status = 200, description = "Templates made from images, by name (the built-in `host` template and directory templates are not listed)", body = TemplateList),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<TemplateList>, ApiError> {
    let templates = state.service.templates(&caller).await?;
    Ok(Json(TemplateList {
        templates: templates.into_iter().map(wire::template).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 200, description = "The template", body = Template),
        (status = 404, description = "No such template", body = ErrorBody),
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<Json<Template>, ApiError> {
    match state.service.template(&caller, &name).await {
        Ok(template) => Ok(Json(wire::template(template))),
        Err(error) => Err(not_found(error)),
    }
}

#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 204, description = "Removed, with every layer no other template has"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "A live sandbox was made from it", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .remove_template(&caller, &name)
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A template named in the path that does not exist is 404 (named in a create, it is 400).
fn not_found(error: sbx_lifecycle::Error) -> ApiError {
    match error {
        sbx_lifecycle::Error::TemplateNotFound(name) => ApiError::new(
            StatusCode::NOT_FOUND,
            "template_not_found",
            format!("template {name:?} does not exist"),
        ),
        other => other.into(),
    }
}

#[utoipa::path(post, path = "/v1/templates", tag = "templates",
    request_body = PullTemplateRequest,
    responses(
        (status = 201, description = "The template, its layers unpacked (those already stored are shared, not fetched again)", body = Template),
        (status = 200, description = "With `Accept: application/x-ndjson`: progress lines, then the template or an error", content_type = "application/x-ndjson", body = TemplateEvent),
        (status = 400, description = "Invalid name or reference; a malformed or hostile image (the entry is named)", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "Larger than `images.max_image_mb`", body = ErrorBody),
        (status = 502, description = "The registry refused or could not be reached (`upstream_error`, its reason said)", body = ErrorBody),
        (status = 503, description = "Two pulls and imports are running already", body = ErrorBody),
    ))]
pub async fn pull(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    JsonBody(request): JsonBody<PullTemplateRequest>,
) -> Response {
    if let Err(error) = state.service.may_make_template(&caller, &request.name) {
        return ApiError::from(error).into_response();
    }
    let source = ImageSource::Registry {
        reference: request.image,
        username: request.username,
        password: request.password,
    };
    make(state, caller, &headers, request.name, source).await
}

#[utoipa::path(post, path = "/v1/templates/{name}/import", tag = "templates",
    params(("name" = String, Path, description = "The new template's name")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A root file system tarball, a `docker save` archive or an OCI image layout as a tar; plain, gzip or zstd; streamed"),
    responses(
        (status = 201, description = "The template", body = Template),
        (status = 200, description = "With `Accept: application/x-ndjson`: progress lines, then the template or an error", content_type = "application/x-ndjson", body = TemplateEvent),
        (status = 400, description = "A malformed or hostile archive (a path out of it, through a symlink, a device node, …: the entry is named)", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "Larger than `images.max_image_mb`", body = ErrorBody),
    ))]
pub async fn import(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(error) = state.service.may_import_template(&caller, &name).await {
        return super::files::closing(error.into());
    }
    let stream = body
        .into_data_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let reader = tokio_util::io::StreamReader::new(stream);
    make(
        state,
        caller,
        &headers,
        name,
        ImageSource::Archive(Box::pin(reader)),
    )
    .await
}

/// Runs a pull or an import to its end in a task of its own (a client that hangs up leaves
/// nothing half-made) and answers it, as one JSON body or as NDJSON lines.
async fn make(
    state: AppState,
    caller: Caller,
    headers: &HeaderMap,
    name: String,
    source: ImageSource,
) -> Response {
    let streamed = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let (progress, mut updates) = tokio::sync::mpsc::channel(64);
    let service = state.service.clone();
    let task = tokio::spawn(async move {
        service
            .make_template(&caller, &name, source, progress)
            .await
    });
    if !streamed {
        while updates.recv().await.is_some() {}
        return match task.await {
            Ok(Ok(template)) => {
                (StatusCode::CREATED, Json(wire::template(template))).into_response()
            }
            Ok(Err(error)) => super::files::closing(error.into()),
            Err(_) => super::files::closing(ApiError::from(sbx_lifecycle::Error::internal(
                "the template task failed",
            ))),
        };
    }
    let lines = async_stream(updates, task);
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

type Made = tokio::task::JoinHandle<Result<sbx_lifecycle::ImageTemplate, sbx_lifecycle::Error>>;

/// Progress lines as they come, then the outcome's line.
fn async_stream(
    updates: tokio::sync::mpsc::Receiver<sbx_lifecycle::ImageProgress>,
    task: Made,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let progress = tokio_stream::wrappers::ReceiverStream::new(updates)
        .map(|p| TemplateEvent::Progress(wire::template_progress(p)));
    let outcome = futures::stream::once(async move {
        match task.await {
            Ok(Ok(template)) => TemplateEvent::Template(wire::template(template)),
            Ok(Err(error)) => {
                let error = ApiError::from(error);
                TemplateEvent::Error(ErrorDetail {
                    code: error.code.to_owned(),
                    message: error.message,
                    request_id: None,
                })
            }
            Err(_) => TemplateEvent::Error(ErrorDetail {
                code: "internal".into(),
                message: "the template task failed".into(),
                request_id: None,
            }),
        }
    });
    progress.chain(outcome).map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Ok(Bytes::from(line))
    })
}
