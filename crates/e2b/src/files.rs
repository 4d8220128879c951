//! envd's HTTP routes and the router of requests addressed to envd: `GET /health`, `GET
//! /files` (a download), `POST /files` (uploads: multipart with one or more `file` parts, or
//! one raw `application/octet-stream` body; either gzip-encoded), and the Connect services.
//!
//! Bytes stream through lifecycle's files API a chunk at a time, as the user the query names
//! (`username`) or the sandbox's user; an upload counts against `files.max_upload_bytes`
//! after decompression, so a gzip bomb stops at the limit. Errors are envd's
//! `{"code", "message"}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{StreamExt, TryStreamExt};
use sbx_lifecycle::{ByteStream, Caller, Error};
use serde_json::json;

use crate::errors::{e2b_error, status_of};
use crate::filesystem::FilesystemService;
use crate::process::{absolute, user_named, ProcessService};
use crate::tokens::unique_pairs;
use crate::{E2b, Target};

/// Largest Connect message (a `SendInput` of stdin, a large listing): what the daemon may
/// hold of one request.
const MAX_MESSAGE: usize = 4 << 20;
/// Most files one multipart upload writes.
const MAX_PARTS: usize = 1000;
/// Mode of an uploaded file (what envd's 0666 less the usual umask gives).
const UPLOAD_MODE: u32 = 0o644;

pub(crate) fn envd_router(e2b: E2b) -> Router {
    let connect = connectrpc::Router::new()
        .add_service(Arc::new(ProcessService(e2b.clone())))
        .add_service(Arc::new(FilesystemService(e2b.clone())));
    let rpc = connectrpc::ConnectRpcService::new(connect).with_limits(
        connectrpc::Limits::default()
            .with_max_message_size(MAX_MESSAGE)
            .with_max_request_body_size(MAX_MESSAGE + (1 << 20)),
    );
    Router::new()
        .route_service("/process.Process/{method}", rpc.clone())
        .route_service("/filesystem.Filesystem/{method}", rpc)
        .route("/health", get(health))
        .route("/files", get(download).post(upload))
        .fallback(|| async { e2b_error(StatusCode::NOT_FOUND, "no such envd route") })
        .with_state(e2b)
}

/// The sandbox and caller of an envd HTTP call.
fn addressed(request: &Request) -> Result<(Target, Caller), Response> {
    crate::addressed(request.extensions()).ok_or_else(|| {
        e2b_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized access, please provide a valid access token or method signing if supported",
        )
    })
}

/// The sandbox, caller and query of a `/files` call.
fn files_call(request: &Request) -> Result<(Target, Caller, FilesQuery), Response> {
    let (target, caller) = addressed(request)?;
    Ok((target, caller, files_query(request)?))
}

/// 204 while the sandbox runs; 502 otherwise (or when the caller may not know it), which the
/// SDKs read as "not running".
async fn health(State(e2b): State<E2b>, request: Request) -> Response {
    let running = addressed(&request).ok().is_some_and(|(target, caller)| {
        e2b.service()
            .get(&caller, &target.sandbox)
            .is_ok_and(|s| s.state == sbx_lifecycle::State::Running)
    });
    if running {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    } else {
        e2b_error(StatusCode::BAD_GATEWAY, "the sandbox was not found")
    }
}

/// `path` and `username` of a `/files` query.
struct FilesQuery {
    path: Option<String>,
    user: Option<String>,
}

fn files_query(request: &Request) -> Result<FilesQuery, Response> {
    let mut query = FilesQuery {
        path: None,
        user: None,
    };
    let pairs = unique_pairs(request.uri().query().unwrap_or("")).map_err(|name| {
        e2b_error(
            StatusCode::BAD_REQUEST,
            format!(
                "the query names {} more than once",
                name.chars().take(32).collect::<String>()
            ),
        )
    })?;
    for (key, value) in pairs {
        match key.as_str() {
            "path" => query.path = Some(value),
            "username" => {
                query.user = user_named(&value).map_err(|e| {
                    e2b_error(StatusCode::UNAUTHORIZED, e.message.unwrap_or_default())
                })?
            }
            _ => {}
        }
    }
    Ok(query)
}

fn file_error(error: Error, path: &str) -> Response {
    match error {
        Error::FileNotFound(_) => e2b_error(
            StatusCode::NOT_FOUND,
            format!("path '{path}' does not exist"),
        ),
        Error::Conflict(message) => e2b_error(StatusCode::BAD_REQUEST, message),
        other => e2b_error(status_of(&other), other.to_string()),
    }
}

async fn download(State(e2b): State<E2b>, request: Request) -> Response {
    let (target, caller, query) = match files_call(&request) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(path) = query.path.as_deref() else {
        return e2b_error(
            StatusCode::BAD_REQUEST,
            "the path query parameter is required",
        );
    };
    let path = absolute(path, query.user.as_deref());
    let read = e2b
        .service()
        .file_read(
            &caller,
            &target.sandbox,
            &path,
            0,
            None,
            query.user.as_deref(),
        )
        .await;
    let (info, bytes) = match read {
        Ok(read) => read,
        Err(e) => return file_error(e, &path),
    };
    let name = path.rsplit('/').next().unwrap_or("file").to_owned();
    let mut response = Response::new(Body::from_stream(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    if name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        if let Ok(value) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
    response
}

/// A body (decoded from gzip when it says so), counted against `limit` as it comes: past it
/// the stream fails and `over` is set.
fn counted_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    over: Arc<AtomicBool>,
) -> Result<ByteStream, Response> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let raw = body.into_data_stream().map_err(std::io::Error::other);
    let decoded: ByteStream = match encoding.as_str() {
        "" | "identity" => raw.boxed(),
        "gzip" | "x-gzip" => {
            let reader = tokio_util::io::StreamReader::new(raw);
            let decoder = async_compression::tokio::bufread::GzipDecoder::new(reader);
            tokio_util::io::ReaderStream::new(decoder).boxed()
        }
        other => {
            return Err(e2b_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "error decompressing request body: unsupported Content-Encoding: {}, supported: [gzip]",
                    other.chars().take(32).collect::<String>()
                ),
            ))
        }
    };
    let mut seen = 0u64;
    Ok(decoded
        .map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len() as u64;
            if seen > limit {
                over.store(true, Ordering::SeqCst);
                return Err(std::io::Error::other("upload over the limit"));
            }
            Ok(chunk)
        })
        .boxed())
}

fn written(path: &str) -> serde_json::Value {
    json!({
        "name": path.rsplit('/').next().unwrap_or_default(),
        "type": "file",
        "path": path,
    })
}

/// An upload that failed: the rest of its body is not read, so the connection closes.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn upload(State(e2b): State<E2b>, request: Request) -> Response {
    let (target, caller, query) = match files_call(&request) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let limit = e2b.inner.max_upload_bytes;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let headers = request.headers().clone();
    let over = Arc::new(AtomicBool::new(false));
    let too_large = || {
        closing(e2b_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the upload is larger than files.max_upload_bytes ({limit} bytes)"),
        ))
    };
    let body = match counted_body(&headers, request.into_body(), limit, over.clone()) {
        Ok(body) => body,
        Err(response) => return closing(response),
    };
    let user = query.user.as_deref();
    let write = |path: String, data: ByteStream| {
        let (e2b, caller, sandbox) = (e2b.clone(), caller.clone(), target.sandbox.clone());
        let user = query.user.clone();
        async move {
            e2b.service()
                .file_write(&caller, &sandbox, &path, UPLOAD_MODE, user.as_deref(), data)
                .await
                .map(|info| info.path)
                .map_err(|e| file_error(e, &path))
        }
    };
    if content_type.starts_with("application/octet-stream") {
        let Some(path) = query.path.as_deref() else {
            return closing(e2b_error(
                StatusCode::BAD_REQUEST,
                "path query parameter is required for raw body upload",
            ));
        };
        let path = absolute(path, user);
        return match write(path, body).await {
            Ok(path) => axum::Json(vec![written(&path)]).into_response(),
            Err(_) if over.load(Ordering::SeqCst) => too_large(),
            Err(response) => closing(response),
        };
    }
    let Some(boundary) = content_type
        .starts_with("multipart/")
        .then(|| multer::parse_boundary(&content_type).ok())
        .flatten()
    else {
        return closing(e2b_error(
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported content type: {}, expected multipart/form-data or application/octet-stream",
                content_type.chars().take(64).collect::<String>()
            ),
        ));
    };
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit)
            .per_field(limit),
    );
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    let mut done: Vec<serde_json::Value> = Vec::new();
    let mut paths = std::collections::HashSet::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) if over.load(Ordering::SeqCst) => return too_large(),
            Err(e) => {
                return closing(e2b_error(
                    StatusCode::BAD_REQUEST,
                    format!("the multipart body is malformed: {e}"),
                ))
            }
        };
        if field.name() != Some("file") {
            continue;
        }
        if done.len() >= MAX_PARTS {
            return closing(e2b_error(
                StatusCode::BAD_REQUEST,
                format!("one upload writes at most {MAX_PARTS} files"),
            ));
        }
        let named = query
            .path
            .clone()
            .or_else(|| field.file_name().map(str::to_owned));
        let Some(named) = named.filter(|p| !p.is_empty()) else {
            return closing(e2b_error(
                StatusCode::BAD_REQUEST,
                "a file part has no filename and the query no path",
            ));
        };
        let path = absolute(&named, user);
        if !paths.insert(path.clone()) {
            return closing(e2b_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "you cannot upload multiple files to the same path '{path}' in one upload request"
                ),
            ));
        }
        let data = field.map_err(std::io::Error::other).boxed();
        match write(path, data).await {
            Ok(path) => done.push(written(&path)),
            Err(_) if over.load(Ordering::SeqCst) => return too_large(),
            Err(response) => return closing(response),
        }
    }
    axum::Json(done).into_response()
}
