//! `POST /v1/sandboxes/{id}/exec` (collected) and `…/exec/stream` (NDJSON, live).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use sbx_lifecycle::ExecOutput;
use sbx_protocol::{encode_data, ErrorBody, ExecEvent, ExecRequest, ExecResult, ExitInfo};

use crate::spool::Spool;

use crate::body::BudgetedJsonBody;
use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sandboxes/{id}/exec", post(exec))
        .route("/v1/sandboxes/{id}/exec/stream", post(exec_stream))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::MAX_EXEC_BODY_BYTES,
        ))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "The command ran to its end (or was killed at its timeout)", body = ExecResult),
        (status = 400, description = "Invalid request, or the command could not start", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running, or stopped during the command", body = ErrorBody),
    ))]
pub async fn exec(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    BudgetedJsonBody(request, held): BudgetedJsonBody<ExecRequest>,
) -> Result<Response, ApiError> {
    // Decoded, the request's text goes at once: the stdin is the command's (`held` counts it
    // until the command ends).
    let decoded = wire::exec_request(&request)?;
    drop(request);
    let mut stream = state.service.exec(&caller, &id, decoded).await?;
    let settings = &state.settings.spool;
    let mut stdout = Spool::new(settings, &caller.user);
    let mut stderr = Spool::new(settings, &caller.user);
    while let Some(output) = stream.output.recv().await {
        match output {
            ExecOutput::Stdout(bytes) => stdout.push(&bytes),
            ExecOutput::Stderr(bytes) => stderr.push(&bytes),
            ExecOutput::Failed(error) => return Err(error.into()),
            ExecOutput::Exit {
                status,
                timed_out,
                duration,
            } => {
                let exit = exit_info(status, timed_out, duration);
                // The command's place among those running is held until the body is sent.
                drop(held);
                let body = crate::spool::exec_result_body(exit, stdout, stderr, stream.permit);
                return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
            }
        }
    }
    Err(sbx_lifecycle::Error::SandboxGone(id).into())
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "One JSON ExecEvent per line, as the command runs; `exit` or `error` comes last",
            content_type = "application/x-ndjson", body = ExecEvent),
        (status = 400, description = "Invalid request, or the command could not start", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
    ))]
pub async fn exec_stream(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    BudgetedJsonBody(request, held): BudgetedJsonBody<ExecRequest>,
) -> Result<Response, ApiError> {
    let decoded = wire::exec_request(&request)?;
    drop(request);
    let stream = state.service.exec(&caller, &id, decoded).await?;
    let started = line(&ExecEvent::Started { pid: stream.pid });
    // The stream holds the command's share of the body budget until it ends.
    let events = futures::stream::unfold(Some((stream, held)), |state| async move {
        let (mut stream, held) = state?;
        let event = match stream.output.recv().await {
            Some(ExecOutput::Stdout(bytes)) => {
                let (data, encoding) = encode_data(&bytes);
                ExecEvent::Stdout { data, encoding }
            }
            Some(ExecOutput::Stderr(bytes)) => {
                let (data, encoding) = encode_data(&bytes);
                ExecEvent::Stderr { data, encoding }
            }
            Some(ExecOutput::Exit {
                status,
                timed_out,
                duration,
            }) => {
                return Some((
                    Ok::<_, std::convert::Infallible>(line(&ExecEvent::Exit(exit_info(
                        status, timed_out, duration,
                    )))),
                    None,
                ))
            }
            Some(ExecOutput::Failed(error)) => return Some((Ok(error_line(error)), None)),
            None => {
                let gone = sbx_lifecycle::Error::SandboxGone(stream.sandbox_id.clone());
                return Some((Ok(error_line(gone)), None));
            }
        };
        Some((Ok(line(&event)), Some((stream, held))))
    });
    let body = futures::StreamExt::chain(futures::stream::iter([Ok(started)]), events);
    Ok((
        [
            (header::CONTENT_TYPE, sbx_protocol::NDJSON),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn line(event: &ExecEvent) -> Bytes {
    let mut bytes = serde_json::to_vec(event).expect("events serialise");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn error_line(error: sbx_lifecycle::Error) -> Bytes {
    let api: ApiError = error.into();
    line(&ExecEvent::Error {
        error: sbx_protocol::ErrorDetail {
            code: api.code.into(),
            message: api.message,
            request_id: None,
        },
    })
}

fn exit_info(
    status: sbx_lifecycle::ExitStatus,
    timed_out: bool,
    duration: std::time::Duration,
) -> ExitInfo {
    ExitInfo {
        exit_code: status.shell_code(),
        signal: match status {
            sbx_lifecycle::ExitStatus::Signal(signal) => Some(signal),
            sbx_lifecycle::ExitStatus::Code(_) => None,
        },
        timed_out,
        duration_ms: duration.as_secs_f64() * 1000.0,
    }
}
