//! `/v1/sandboxes/{id}/files…`: a running sandbox's files. Bytes stream both ways (the daemon
//! holds a chunk at a time, whatever the size); downloads honour a single `Range`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use sbx_protocol::{
    ErrorBody, ExtractResult, FileInfo, FileList, MakeDirRequest, MoveRequest, UploadResult,
};
use serde::Deserialize;

use crate::body::JsonBody;
use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/sandboxes/{id}/files",
            get(download).put(upload).post(upload_many).delete(remove),
        )
        .route(
            "/v1/sandboxes/{id}/files/archive",
            get(archive).put(extract),
        )
        .route("/v1/sandboxes/{id}/files/stat", get(stat))
        .route("/v1/sandboxes/{id}/files/watch", get(watch))
        .route("/v1/sandboxes/{id}/files/list", get(list))
        .route("/v1/sandboxes/{id}/files/mkdir", post(make_dir))
        .route("/v1/sandboxes/{id}/files/move", post(rename))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Absolute, or relative to the sandbox user's home (`/home/user`).
    path: String,
    /// Acting as: `user` (default), `root`, or a uid (the sandbox's permissions apply).
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    path: String,
    /// Levels to list (1: the directory's own entries; at most 32).
    #[serde(default)]
    depth: Option<u32>,
    /// Acting as: `user` (default), `root`, or a uid.
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    path: String,
    /// Permission bits in octal (default `644`).
    #[serde(default)]
    mode: Option<String>,
    /// Owner: `user` (default), `root`, or a uid.
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    path: String,
    /// Remove a directory with everything in it.
    #[serde(default)]
    recursive: Option<bool>,
    /// Acting as: `user` (default), `root`, or a uid.
    #[serde(default)]
    user: Option<String>,
}

fn query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"), PathQuery),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The bytes of the `Range` asked for", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Invalid path", body = ErrorBody),
        (status = 404, description = "No such sandbox, or no such file", body = ErrorBody),
        (status = 409, description = "The path is a directory, a FIFO or a device; or the sandbox is not running", body = ErrorBody),
        (status = 416, description = "The range is outside the file", body = ErrorBody),
    ))]
pub async fn download(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    path: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let PathQuery { path, user } = query(path)?;
    let service = &state.service;
    let user = user.as_deref();
    // A range needs the size first; the whole file does not (one call inside the sandbox,
    // which reports the size it sends).
    let (range, offset, length, size, bytes) = match headers.get(header::RANGE) {
        None => {
            let (info, bytes) = service
                .file_read(&caller, &id, &path, 0, None, user)
                .await?;
            (None, 0, info.size, info.size, bytes)
        }
        Some(value) => {
            let info = service.file_stat(&caller, &id, &path, true, user).await?;
            if info.kind == sbx_lifecycle::FileKind::Directory {
                return Err(sbx_lifecycle::Error::Conflict(format!(
                    "{}: is a directory (list it, or download it as an archive)",
                    info.path
                ))
                .into());
            }
            let range = match parse_range(value.to_str().unwrap_or_default(), info.size) {
                Ok(range) => range,
                Err(unsatisfiable) => return Ok(unsatisfiable.into_response()),
            };
            let (offset, length) = range.unwrap_or((0, info.size));
            let (_, bytes) = service
                .file_read(&caller, &id, &path, offset, Some(length), user)
                .await?;
            (range, offset, length, info.size, bytes)
        }
    };
    let mut response = Response::new(Body::from_stream(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let last = (offset + length).saturating_sub(1);
        let value = format!("bytes {offset}-{last}/{size}");
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// One `bytes=` range of a file of `size` bytes: its offset and length. A header that is not
/// one well-formed byte range is ignored (the whole file is sent, as RFC 9110 allows); a range
/// outside the file is 416.
fn parse_range(text: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => match number(last) {
            Some(suffix) if suffix > 0 => (size - suffix.min(size), size),
            Some(_) => (size, size),
            None => return Ok(None),
        },
        (false, true) => match number(first) {
            Some(start) => (start, size),
            None => return Ok(None),
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(last)) if start <= last => (start, last.saturating_add(1).min(size)),
            _ => return Ok(None),
        },
        (true, true) => return Ok(None),
    };
    if start >= end {
        return Err(Unsatisfiable { size });
    }
    Ok(Some((start, end - start)))
}

/// A range outside a file of `size` bytes: 416, with `Content-Range: bytes */SIZE`.
#[derive(Debug)]
struct Unsatisfiable {
    size: u64,
}

impl IntoResponse for Unsatisfiable {
    fn into_response(self) -> Response {
        let size = self.size;
        let mut response = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            format!("the range asked for is not within the file's {size} bytes"),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    }
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's new bytes, streamed"),
    responses(
        (status = 200, description = "The file as written (missing parents were made)", body = FileInfo),
        (status = 400, description = "Invalid path, mode or user", body = ErrorBody),
        (status = 403, description = "The sandbox's user may not write there", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The path is a directory, a FIFO or a device; or the sandbox is not running", body = ErrorBody),
        (status = 413, description = "Larger than `files.max_upload_bytes`", body = ErrorBody),
        (status = 507, description = "The sandbox's disk is full", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    match write(state, caller, id, headers, params, body).await {
        Ok(info) => Json(info).into_response(),
        Err(error) => closing(error),
    }
}

async fn write(
    state: AppState,
    caller: sbx_lifecycle::Caller,
    id: String,
    headers: HeaderMap,
    params: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<FileInfo, ApiError> {
    let params = query(params)?;
    let mode = parse_mode(params.mode.as_deref())?;
    let counted = Counted::new(&state, &headers, body)?;
    let status = counted.status.clone();
    let data = counted.stream;
    let written = state
        .service
        .file_write(
            &caller,
            &id,
            &params.path,
            mode,
            params.user.as_deref(),
            data,
        )
        .await;
    if let Some(failure) = status.failure(&state) {
        return Err(failure);
    }
    Ok(wire::file_info(written?))
}

pub(crate) fn too_large(state: &AppState) -> sbx_lifecycle::Error {
    let limit = state.settings.max_upload_bytes;
    sbx_lifecycle::Error::TooLarge(format!(
        "the upload is larger than files.max_upload_bytes ({limit} bytes)"
    ))
}

/// An upload's body, counted as it comes against `files.max_upload_bytes`: past the limit
/// the stream fails and `over` is set (the answer is then 413). A declared length over the
/// limit is refused before anything is read.
pub(crate) struct Counted {
    pub(crate) stream: sbx_lifecycle::ByteStream,
    /// How the body ended, once the service is done with it: see [`BodyStatus::failure`].
    pub(crate) status: Arc<BodyStatus>,
}

/// What went wrong with an upload's body on its way in, if anything: the service that read it
/// sees only a failed stream, and the answer is the body's fault, not the service's.
#[derive(Default)]
pub(crate) struct BodyStatus {
    /// Past `files.max_upload_bytes`: 413.
    over: AtomicBool,
    /// Not all of it within the daemon's body deadline: 408.
    timed_out: AtomicBool,
    /// The client went away, or sent a body hyper could not read: 400.
    cut: AtomicBool,
}

impl BodyStatus {
    /// The answer the body's own failure calls for, when it failed.
    pub(crate) fn failure(&self, state: &AppState) -> Option<ApiError> {
        if self.over.load(Ordering::SeqCst) {
            return Some(too_large(state).into());
        }
        if self.timed_out.load(Ordering::SeqCst) {
            return Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            ));
        }
        if self.cut.load(Ordering::SeqCst) {
            return Some(ApiError::invalid("the request body ended before its end"));
        }
        None
    }
}

impl Counted {
    pub(crate) fn new(
        state: &AppState,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Counted, ApiError> {
        let limit = state.settings.max_upload_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(state).into());
        }
        let status = Arc::new(BodyStatus::default());
        let mut seen = 0u64;
        let flags = status.clone();
        let stream = body
            .into_data_stream()
            .map(move |chunk| {
                let chunk = chunk.map_err(|e| {
                    let e = e.into_inner();
                    if e.is::<tower_http::timeout::TimeoutError>() {
                        flags.timed_out.store(true, Ordering::SeqCst);
                    } else {
                        flags.cut.store(true, Ordering::SeqCst);
                    }
                    std::io::Error::other(e)
                })?;
                seen += chunk.len() as u64;
                if seen > limit {
                    flags.over.store(true, Ordering::SeqCst);
                    return Err(std::io::Error::other("upload over the limit"));
                }
                Ok(chunk)
            })
            .boxed();
        Ok(Counted { stream, status })
    }

    /// A counted body that must be an archive: an empty one (one that ends before its first
    /// byte, whatever its length says) is refused, where a tar reader would take it for
    /// an archive of nothing. The first bytes are awaited here, before the service acts on
    /// the upload at all (makes a directory, admits a fragment).
    pub(crate) async fn archive(
        state: &AppState,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Counted, ApiError> {
        const EMPTY: &str = "the body is empty: a tar stream was expected";
        let Counted { mut stream, status } = Counted::new(state, headers, body)?;
        let first = loop {
            match stream.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => break chunk,
                Some(Err(e)) => {
                    return Err(status.failure(state).unwrap_or_else(|| {
                        ApiError::invalid(format!("cannot read the body: {e}"))
                    }))
                }
                None => return Err(ApiError::invalid(EMPTY)),
            }
        };
        let stream = futures::stream::once(std::future::ready(Ok(first)))
            .chain(stream)
            .boxed();
        Ok(Counted { stream, status })
    }
}

/// An answer to an upload that failed: the body may not have been read to its end, so the
/// connection is not reused (a client sending the rest would find it closed under its next
/// request).
pub(crate) fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ManyQuery {
    /// The directory relative part names go under (default: the user's home).
    #[serde(default)]
    path: Option<String>,
    /// Permission bits in octal for every file (default `644`).
    #[serde(default)]
    mode: Option<String>,
    /// Owner: `user` (default), `root`, or a uid.
    #[serde(default)]
    user: Option<String>,
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"), ManyQuery),
    request_body(content = Vec<u8>, content_type = "multipart/form-data", description = "Several files, one part each: a part's `filename` is its path (absolute, or under `path`); each is written whole or not at all, in order"),
    responses(
        (status = 200, description = "The files as written", body = UploadResult),
        (status = 400, description = "Not multipart, a part without a filename, an invalid path, mode or user", body = ErrorBody),
        (status = 403, description = "The sandbox's user may not write there", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "A path is a directory, a FIFO or a device; or the sandbox is not running", body = ErrorBody),
        (status = 413, description = "The whole body is larger than `files.max_upload_bytes`", body = ErrorBody),
        (status = 507, description = "The sandbox's disk is full", body = ErrorBody),
    ))]
pub async fn upload_many(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<ManyQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    match write_many(state, caller, id, headers, params, body).await {
        Ok(files) => Json(UploadResult { files }).into_response(),
        Err(error) => closing(error),
    }
}

async fn write_many(
    state: AppState,
    caller: sbx_lifecycle::Caller,
    id: String,
    headers: HeaderMap,
    params: Result<Query<ManyQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Vec<FileInfo>, ApiError> {
    let params = query(params)?;
    let mode = parse_mode(params.mode.as_deref())?;
    // Whose sandbox first: another user's is 404 whatever the body.
    state.service.get(&caller, &id)?;
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| ApiError::invalid("the body must be multipart/form-data with a boundary"))?;
    let counted = Counted::new(&state, &headers, body)?;
    let status = counted.status.clone();
    // Between parts (the preamble, a part's headers) the parser buffers what it reads until
    // it finds the end: that much is bounded here, whatever the body's limit.
    let between = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let in_headers = Arc::new(AtomicBool::new(true));
    let (counter, reading_headers) = (between.clone(), in_headers.clone());
    let stream = counted.stream.map(move |chunk| {
        let chunk = chunk?;
        if reading_headers.load(Ordering::SeqCst) {
            let seen = counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            if seen + chunk.len() as u64 > MAX_PART_HEADERS {
                return Err(std::io::Error::other(
                    "a multipart part's headers are too long",
                ));
            }
        }
        Ok(chunk)
    });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut written = Vec::new();
    loop {
        between.store(0, Ordering::SeqCst);
        in_headers.store(true, Ordering::SeqCst);
        let next = parts.next_field().await;
        in_headers.store(false, Ordering::SeqCst);
        let part = match next {
            Ok(Some(part)) => part,
            Ok(None) => break,
            Err(e) => {
                return Err(status.failure(&state).unwrap_or_else(|| {
                    ApiError::invalid(format!("malformed multipart body: {e}"))
                }))
            }
        };
        if written.len() >= MAX_PARTS {
            return Err(ApiError::invalid(format!(
                "a multipart upload takes at most {MAX_PARTS} files"
            )));
        }
        let Some(name) = part
            .file_name()
            .map(str::to_owned)
            .filter(|n| !n.is_empty())
        else {
            return Err(ApiError::invalid(format!(
                "part {} has no filename (each part is a file, named by its path)",
                written.len() + 1
            )));
        };
        let path = match (&params.path, name.starts_with('/')) {
            (Some(dir), false) => format!("{}/{name}", dir.trim_end_matches('/')),
            _ => name,
        };
        // A part cut short (no closing boundary) is the client's error, not the daemon's.
        let malformed = Arc::new(AtomicBool::new(false));
        let flag = malformed.clone();
        let data = part
            .map(move |chunk| {
                chunk.map_err(|e| {
                    flag.store(true, Ordering::SeqCst);
                    std::io::Error::other(e)
                })
            })
            .boxed();
        let info = state
            .service
            .file_write(&caller, &id, &path, mode, params.user.as_deref(), data)
            .await;
        if let Some(failure) = status.failure(&state) {
            return Err(failure);
        }
        if malformed.load(Ordering::SeqCst) && info.is_err() {
            return Err(ApiError::invalid(format!(
                "malformed multipart body: part {} ({path}) ends early or its headers are too long",
                written.len() + 1
            )));
        }
        written.push(wire::file_info(info?));
    }
    if written.is_empty() {
        return Err(ApiError::invalid("the multipart body has no parts"));
    }
    Ok(written)
}

/// Most bytes of a multipart body between two parts' data (a preamble, a part's headers).
const MAX_PART_HEADERS: u64 = 64 << 10;
/// Most files one multipart upload writes.
const MAX_PARTS: usize = 1000;

fn parse_mode(mode: Option<&str>) -> Result<u32, ApiError> {
    match mode {
        None => Ok(0o644),
        Some(text) => u32::from_str_radix(text, 8).map_err(|_| {
            ApiError::invalid(format!(
                "mode {text:?} must be octal permission bits, like 644"
            ))
        }),
    }
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/archive", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"), PathQuery),
    responses(
        (status = 200, description = "A tar stream of the directory (or file), its entries named from its own name down; symlinks as symlinks, never followed; other file systems, FIFOs, devices and what the user may not read are left out", content_type = "application/x-tar", body = Vec<u8>),
        (status = 400, description = "Invalid path or user", body = ErrorBody),
        (status = 404, description = "No such sandbox, or no such path", body = ErrorBody),
        (status = 409, description = "Not a directory or regular file; or the sandbox is not running", body = ErrorBody),
    ))]
pub async fn archive(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let PathQuery { path, user } = query(path)?;
    let bytes = state
        .service
        .file_archive(&caller, &id, &path, user.as_deref())
        .await?;
    let mut response = Response::new(Body::from_stream(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files/archive", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar", description = "A tar stream, extracted under `path` (made if missing). Refused: absolute paths, `..`, paths through a symlink, hard links out of the archive, device nodes and FIFOs; set-id bits are dropped and files belong to the user the call acts as"),
    responses(
        (status = 200, description = "Extracted", body = ExtractResult),
        (status = 400, description = "Invalid path or user; not a tar stream; an entry refused (what went in before it stays)", body = ErrorBody),
        (status = 403, description = "The sandbox's user may not write there", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "A file or a symlink is in the way; or the sandbox is not running", body = ErrorBody),
        (status = 413, description = "Larger than `files.max_upload_bytes`", body = ErrorBody),
        (status = 507, description = "The sandbox's disk is full", body = ErrorBody),
    ))]
pub async fn extract(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let extracted = async {
        let PathQuery { path, user } = query(params)?;
        // Whose sandbox first: another user's is 404 whatever the body.
        state.service.get(&caller, &id)?;
        let counted = Counted::archive(&state, &headers, body).await?;
        let extracted = state
            .service
            .file_extract(&caller, &id, &path, user.as_deref(), counted.stream)
            .await;
        if let Some(failure) = counted.status.failure(&state) {
            return Err(failure);
        }
        Ok::<_, ApiError>(extracted?)
    }
    .await;
    match extracted {
        Ok(extracted) => Json(ExtractResult {
            directory: wire::file_info(extracted.directory),
            entries: extracted.entries,
        })
        .into_response(),
        Err(error) => closing(error),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// The directory to watch.
    path: String,
    /// Its subdirectories too (new ones as they appear; 10,000 directories at most).
    #[serde(default)]
    recursive: Option<bool>,
    /// Acting as: `user` (default), `root`, or a uid.
    #[serde(default)]
    user: Option<String>,
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/watch", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"), WatchQuery),
    responses(
        (status = 200, description = "A `text/event-stream`: one event per change (`event:` its type, `data:` a `FileEvent`), until the directory or the sandbox goes", content_type = "text/event-stream", body = sbx_protocol::FileEvent),
        (status = 400, description = "Invalid path or user", body = ErrorBody),
        (status = 404, description = "No such sandbox, or no such directory", body = ErrorBody),
        (status = 409, description = "Not a directory (or under /proc); or the sandbox is not running", body = ErrorBody),
    ))]
pub async fn watch(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    params: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let params = query(params)?;
    let events = state
        .service
        .file_watch(
            &caller,
            &id,
            &params.path,
            params.recursive.unwrap_or(false),
            params.user.as_deref(),
        )
        .await?;
    let mut ended = state.service.access().credential_ended(&caller);
    let mut closing = state.service.closing();
    let events = events
        .take_while(|event| std::future::ready(event.is_ok()))
        .filter_map(|event| std::future::ready(event.ok()))
        .map(|event| {
            let wire = sbx_protocol::FileEvent {
                kind: event.kind.as_str().into(),
                path: event.path,
                is_dir: event.is_dir,
            };
            let data = serde_json::to_string(&wire).unwrap_or_default();
            Ok::<_, std::convert::Infallible>(
                SseEvent::default().event(event.kind.as_str()).data(data),
            )
        });
    // Ends with a revoked key or a daemon going down, as the event stream does.
    let events = futures::stream::StreamExt::take_until(events, async move {
        tokio::select! {
            _ = ended.wait_for(|ended| *ended) => {}
            _ = closing.wait_for(|closing| *closing) => {}
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"), PathQuery),
    responses(
        (status = 200, description = "The path (a symlink itself, not what it points to)", body = FileInfo),
        (status = 400, description = "Invalid path or user", body = ErrorBody),
        (status = 404, description = "No such sandbox, or no such path", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
    ))]
pub async fn stat(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    path: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FileInfo>, ApiError> {
    let PathQuery { path, user } = query(path)?;
    let info = state
        .service
        .file_stat(&caller, &id, &path, false, user.as_deref())
        .await?;
    Ok(Json(wire::file_info(info)))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"), ListQuery),
    responses(
        (status = 200, description = "The directory's entries, by name, `depth` levels down (symlinks listed, not followed; 10,000 at most)", body = FileList),
        (status = 400, description = "Invalid path or depth", body = ErrorBody),
        (status = 404, description = "No such sandbox, or no such directory", body = ErrorBody),
        (status = 409, description = "Not a directory; or the sandbox is not running", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    params: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FileList>, ApiError> {
    let params = query(params)?;
    let listing = state
        .service
        .file_list(
            &caller,
            &id,
            &params.path,
            params.depth.unwrap_or(1),
            params.user.as_deref(),
        )
        .await?;
    Ok(Json(FileList {
        entries: listing.entries.into_iter().map(wire::file_info).collect(),
        truncated: listing.truncated,
    }))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    request_body = MakeDirRequest,
    responses(
        (status = 200, description = "The directory (made with its missing parents, or already there)", body = FileInfo),
        (status = 400, description = "Invalid path or user", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "A file is in the way; or the sandbox is not running", body = ErrorBody),
    ))]
pub async fn make_dir(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<MakeDirRequest>,
) -> Result<Json<FileInfo>, ApiError> {
    let info = state
        .service
        .file_make_dir(&caller, &id, &request.path, request.user.as_deref())
        .await?;
    Ok(Json(wire::file_info(info)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/move", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    request_body = MoveRequest,
    responses(
        (status = 200, description = "The path at its new place", body = FileInfo),
        (status = 400, description = "Invalid path or user", body = ErrorBody),
        (status = 404, description = "No such sandbox, or nothing at `from`", body = ErrorBody),
        (status = 409, description = "Something is in the way, or across file systems; or the sandbox is not running", body = ErrorBody),
    ))]
pub async fn rename(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<MoveRequest>,
) -> Result<Json<FileInfo>, ApiError> {
    let info = state
        .service
        .file_rename(
            &caller,
            &id,
            &request.from,
            &request.to,
            request.user.as_deref(),
        )
        .await?;
    Ok(Json(wire::file_info(info)))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox"), RemoveQuery),
    responses(
        (status = 204, description = "Removed (a symlink itself, never what it points to)"),
        (status = 400, description = "Invalid path or user", body = ErrorBody),
        (status = 404, description = "No such sandbox, or no such path", body = ErrorBody),
        (status = 409, description = "A directory that is not empty (ask `recursive=true`); or the sandbox is not running", body = ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    params: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    state
        .service
        .file_remove(
            &caller,
            &id,
            &params.path,
            params.recursive.unwrap_or(false),
            params.user.as_deref(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 10)));
        assert_eq!(parse_range("bytes=-5", 100).unwrap(), Some((95, 5)));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some((50, 50)));
        for ignored in [
            "bytes=-",
            "items=0-1",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=0-1,3-4",
        ] {
            assert_eq!(parse_range(ignored, 100).unwrap(), None, "{ignored}");
        }
        for outside in ["bytes=100-", "bytes=200-300", "bytes=-0"] {
            let response = parse_range(outside, 100).unwrap_err().into_response();
            assert_eq!(
                response.status(),
                StatusCode::RANGE_NOT_SATISFIABLE,
                "{outside}"
            );
            assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes */100");
        }
    }
}
