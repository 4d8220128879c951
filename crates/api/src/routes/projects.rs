//! `/v1/projects…`: projects (made, listed, inspected, shared, deleted) and their fragments
//! (made from a JSON map of files, a tar stream or a running sandbox; listed, inspected with
//! their entries, downloaded as tar, deleted). A project the caller may not see is 404.

use axum::body::Body;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use sbx_lifecycle::model::{FragmentSource, NewProject};
use sbx_protocol::{
    CreateFragmentRequest, CreateProjectRequest, ErrorBody, Fragment, FragmentDetail, FragmentList,
    Project, ProjectList, ShareRequest,
};
use serde::Deserialize;

use crate::body::JsonBody;
use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    // A project's files may come as JSON: as large a body as an exec's.
    let large = || axum::extract::DefaultBodyLimit::max(crate::MAX_EXEC_BODY_BYTES);
    Router::new()
        .route("/v1/projects", post(create).layer(large()).get(list))
        .route("/v1/projects/{project}", get(fetch).delete(delete))
        .route(
            "/v1/projects/{project}/shares/{user}",
            put(share).delete(unshare),
        )
        .route(
            "/v1/projects/{project}/fragments",
            post(create_fragment).layer(large()).get(fragments),
        )
        .route(
            "/v1/projects/{project}/fragments/{fragment}",
            get(fragment).delete(delete_fragment),
        )
        .route(
            "/v1/projects/{project}/fragments/{fragment}/archive",
            get(archive),
        )
}

#[utoipa::path(post, path = "/v1/projects", tag = "projects",
    request_body = CreateProjectRequest,
    responses(
        (status = 201, description = "The project; with `files`, its first fragment is made from them", body = Project),
        (status = 400, description = "Invalid name, root, port, profile or files", body = ErrorBody),
        (status = 409, description = "The caller has a project of that name", body = ErrorBody),
        (status = 413, description = "More files or bytes than a fragment holds", body = ErrorBody),
        (status = 429, description = "The caller owns `projects.max_per_user` projects already", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    JsonBody(request): JsonBody<CreateProjectRequest>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let files = request.files.map(wire::new_files).transpose()?;
    let service = &state.service;
    let project = service.project_create(
        &caller,
        &NewProject {
            name: request.name,
            root: request.root,
            port: request.port,
            profile: request.profile,
        },
    )?;
    let Some(files) = files else {
        return Ok((StatusCode::CREATED, Json(wire::project(project))));
    };
    if let Err(error) = service
        .fragment_create(&caller, &project.id, FragmentSource::Files(files), None)
        .await
    {
        // The project goes with its files: a retry starts from nothing.
        if let Err(e) = service.project_delete(&caller, &project.id).await {
            tracing::warn!(project = %project.id, error = %e.detail(), "cannot remove a project whose files were refused");
        }
        return Err(error.into());
    }
    let project = service.project(&caller, &project.id)?;
    Ok((StatusCode::CREATED, Json(wire::project(project))))
}

#[utoipa::path(get, path = "/v1/projects", tag = "projects",
    responses(
        (status = 200, description = "Projects the caller owns or was given (an admin's: all), oldest first", body = ProjectList),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<ProjectList>, ApiError> {
    let projects = state.service.projects(&caller)?;
    Ok(Json(ProjectList {
        projects: projects.into_iter().map(wire::project).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project id, the name of one of the caller's, or `owner/name`")),
    responses(
        (status = 200, description = "The project", body = Project),
        (status = 404, description = "No such project (or one the caller may not see)", body = ErrorBody),
    ))]
pub async fn fetch(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> Result<Json<Project>, ApiError> {
    Ok(Json(wire::project(
        state.service.project(&caller, &project)?,
    )))
}

#[utoipa::path(delete, path = "/v1/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project id or name")),
    responses(
        (status = 204, description = "Deleted, with its fragments"),
        (status = 403, description = "Shared with the caller, not theirs", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
        (status = 409, description = "It is a user's active project", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.project_delete(&caller, &project).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/v1/projects/{project}/shares/{user}", tag = "projects",
    params(
        ("project" = String, Path, description = "Project id or name"),
        ("user" = String, Path, description = "The user to share it with"),
    ),
    request_body = ShareRequest,
    responses(
        (status = 200, description = "The project with its shares", body = Project),
        (status = 400, description = "Not a user name, or not `read`/`write`", body = ErrorBody),
        (status = 403, description = "Shared with the caller, not theirs", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    ))]
pub async fn share(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((project, user)): Path<(String, String)>,
    JsonBody(request): JsonBody<ShareRequest>,
) -> Result<Json<Project>, ApiError> {
    let project = state
        .service
        .project_share(&caller, &project, &user, Some(&request.access))?;
    Ok(Json(wire::project(project)))
}

#[utoipa::path(delete, path = "/v1/projects/{project}/shares/{user}", tag = "projects",
    params(
        ("project" = String, Path, description = "Project id or name"),
        ("user" = String, Path, description = "The user to take it from"),
    ),
    responses(
        (status = 200, description = "The project with its shares", body = Project),
        (status = 400, description = "Not a user name other than the owner's", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
    ))]
pub async fn unshare(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((project, user)): Path<(String, String)>,
) -> Result<Json<Project>, ApiError> {
    let project = state
        .service
        .project_share(&caller, &project, &user, None)?;
    Ok(Json(wire::project(project)))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TarQuery {
    /// With a tar body: the fragment's message.
    #[serde(default)]
    message: Option<String>,
}

#[utoipa::path(post, path = "/v1/projects/{project}/fragments", tag = "projects",
    params(("project" = String, Path, description = "Project id or name"), TarQuery),
    request_body(content(
        (CreateFragmentRequest = "application/json"),
        (Vec<u8> = "application/x-tar"),
    ), description = "A JSON map of files, a running sandbox or a snapshot, or a tar stream of paths relative to the project's root"),
    responses(
        (status = 201, description = "The new fragment, now the project's newest", body = Fragment),
        (status = 400, description = "An invalid path (`..`, absolute), an unreadable archive, or not exactly one of `files`, `sandbox` and `snapshot`", body = ErrorBody),
        (status = 403, description = "Shared with the caller read-only", body = ErrorBody),
        (status = 404, description = "No such project (or sandbox, or snapshot)", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 413, description = "More files or bytes than a fragment holds", body = ErrorBody),
        (status = 429, description = "The project keeps `projects.max_fragments_per_project` fragments, its owner's fragments hold `projects.max_bytes_per_user`, or two are being written", body = ErrorBody),
        (status = 501, description = "The sandbox's backend has no files API", body = ErrorBody),
        (status = 504, description = "The sandbox's backend did not answer in time", body = ErrorBody),
    ))]
pub async fn create_fragment(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
    params: Result<Query<TarQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Response {
    let is_tar = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().unwrap_or_default().trim() == "application/x-tar");
    let made = async {
        let Query(params) = params.map_err(|e| ApiError::invalid(e.body_text()))?;
        if is_tar {
            let (parts, body) = request.into_parts();
            // Whose project first: a project the caller cannot write is its 404 or 403
            // whatever the body.
            state.service.project_writable(&caller, &project)?;
            let counted = super::files::Counted::archive(&state, &parts.headers, body).await?;
            let status = counted.status.clone();
            let made = state
                .service
                .fragment_create(
                    &caller,
                    &project,
                    FragmentSource::Tar(counted.stream.boxed()),
                    params.message,
                )
                .await;
            if let Some(failure) = status.failure(&state) {
                return Err(failure);
            }
            return Ok::<_, ApiError>(made?);
        }
        if params.message.is_some() {
            return Err(ApiError::invalid(
                "message: give it in the JSON body (the query's is for a tar body)",
            ));
        }
        let JsonBody(body): JsonBody<CreateFragmentRequest> =
            JsonBody::from_request(request, &state).await?;
        let source = match (body.files, body.sandbox, body.snapshot) {
            (Some(files), None, None) if body.exclude.is_empty() => {
                FragmentSource::Files(wire::new_files(files)?)
            }
            (None, Some(sandbox), None) => FragmentSource::Sandbox {
                sandbox,
                exclude: body.exclude,
            },
            (None, None, Some(snapshot)) => FragmentSource::Snapshot {
                snapshot,
                exclude: body.exclude,
            },
            _ => return Err(ApiError::invalid(
                "give exactly one of \"files\", \"sandbox\" and \"snapshot\" (\"exclude\" goes with the last two)",
            )),
        };
        Ok(state
            .service
            .fragment_create(&caller, &project, source, body.message)
            .await?)
    }
    .await;
    match made {
        Ok(fragment) => (StatusCode::CREATED, Json(wire::fragment(fragment))).into_response(),
        Err(error) => super::files::closing(error),
    }
}

#[utoipa::path(get, path = "/v1/projects/{project}/fragments", tag = "projects",
    params(("project" = String, Path, description = "Project id or name")),
    responses(
        (status = 200, description = "The project's fragments, oldest first", body = FragmentList),
        (status = 404, description = "No such project", body = ErrorBody),
    ))]
pub async fn fragments(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(project): Path<String>,
) -> Result<Json<FragmentList>, ApiError> {
    let fragments = state.service.fragments(&caller, &project)?;
    Ok(Json(FragmentList {
        fragments: fragments.into_iter().map(wire::fragment).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/projects/{project}/fragments/{fragment}", tag = "projects",
    params(
        ("project" = String, Path, description = "Project id or name"),
        ("fragment" = String, Path, description = "Fragment id, or `latest`"),
    ),
    responses(
        (status = 200, description = "The fragment and its entries, by path", body = FragmentDetail),
        (status = 404, description = "No such project or fragment", body = ErrorBody),
    ))]
pub async fn fragment(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((project, fragment)): Path<(String, String)>,
) -> Result<Json<FragmentDetail>, ApiError> {
    let (fragment, entries) = state.service.fragment(&caller, &project, &fragment).await?;
    Ok(Json(FragmentDetail {
        fragment: wire::fragment(fragment),
        entries: entries.into_iter().map(wire::fragment_entry).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/projects/{project}/fragments/{fragment}", tag = "projects",
    params(
        ("project" = String, Path, description = "Project id or name"),
        ("fragment" = String, Path, description = "Fragment id, or `latest`"),
    ),
    responses(
        (status = 204, description = "Deleted (content it shared with other fragments stays for them)"),
        (status = 403, description = "Shared with the caller read-only", body = ErrorBody),
        (status = 404, description = "No such project or fragment", body = ErrorBody),
    ))]
pub async fn delete_fragment(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((project, fragment)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .fragment_delete(&caller, &project, &fragment)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/projects/{project}/fragments/{fragment}/archive", tag = "projects",
    params(
        ("project" = String, Path, description = "Project id or name"),
        ("fragment" = String, Path, description = "Fragment id, or `latest`"),
    ),
    responses(
        (status = 200, description = "The fragment's files as a tar stream, paths relative to the project's root", content_type = "application/x-tar", body = Vec<u8>),
        (status = 404, description = "No such project or fragment", body = ErrorBody),
    ))]
pub async fn archive(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((project, fragment)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let stream = state
        .service
        .fragment_archive(&caller, &project, &fragment)?;
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}
