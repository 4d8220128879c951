//! E2B's code interpreter, on a sandbox's port 49999: `POST /execute` runs code in a context
//! and streams its outcome as NDJSON (`number_of_executions`, `stdout`, `stderr`, `result`,
//! `error`, `end_of_execution`); `/contexts` creates, lists, restarts and removes contexts.
//!
//! A context is a Python process inside the sandbox (`kernel.py`, run by lifecycle's exec as
//! the sandbox's user, its stdin kept open), started on first use and kept between requests:
//! variables persist. Its requests run one at a time (a lock per context). A client that
//! leaves interrupts its request (SIGINT to the kernel, which carries on); a kernel that dies
//! answers an error and is started afresh by the next request. Bounds: [`MAX_CONTEXTS`] per
//! sandbox, each kernel a place among the commands its user and sandbox may run at once, and
//! [`MAX_LINE`] bytes per line of its answers (a kernel past it is ended).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use sbx_lifecycle::model::ExecRequest;
use sbx_lifecycle::{Caller, ExecInput, ExecOutput, ExecStream, Signal, SignalTarget};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::errors::status_of;
use crate::{E2b, Target};

/// The kernel each context runs.
const KERNEL: &str = include_str!("kernel.py");
/// Contexts per sandbox at most.
pub const MAX_CONTEXTS: usize = 8;
/// Longest line of a kernel's answer (a result's PNG included).
pub const MAX_LINE: usize = 16 << 20;
/// Largest `/execute` body.
const MAX_BODY: usize = 16 << 20;
/// How long an interrupted request may take to end before its kernel is ended.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);

/// The contexts of every sandbox, in creation order.
#[derive(Default)]
pub(crate) struct Contexts {
    by_sandbox: Mutex<BTreeMap<String, Vec<Arc<Context>>>>,
}

pub(crate) struct Context {
    id: String,
    language: String,
    cwd: String,
    /// Whether the sandbox's default context (the one `language` names).
    default: bool,
    kernel: Arc<tokio::sync::Mutex<Option<Kernel>>>,
}

struct Kernel {
    stream: ExecStream,
    /// Bytes of its answer after the last whole line.
    pending: Vec<u8>,
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.stream.kill.kill();
    }
}

impl Contexts {
    fn list(&self, sandbox: &str) -> Vec<Arc<Context>> {
        self.by_sandbox
            .lock()
            .expect("never poisoned")
            .get(sandbox)
            .cloned()
            .unwrap_or_default()
    }

    fn find(&self, sandbox: &str, id: &str) -> Option<Arc<Context>> {
        self.list(sandbox).into_iter().find(|c| c.id == id)
    }

    fn add(&self, sandbox: &str, context: Context) -> Result<Arc<Context>, Response> {
        let mut all = self.by_sandbox.lock().expect("never poisoned");
        let contexts = all.entry(sandbox.to_owned()).or_default();
        if context.default {
            if let Some(found) = contexts.iter().find(|c| c.default) {
                return Ok(found.clone());
            }
        }
        if contexts.len() >= MAX_CONTEXTS {
            return Err(text(
                StatusCode::TOO_MANY_REQUESTS,
                format!("a sandbox has at most {MAX_CONTEXTS} contexts: remove one first"),
            ));
        }
        let context = Arc::new(context);
        contexts.push(context.clone());
        Ok(context)
    }

    /// The sandbox's default (python) context, made on first use.
    fn default_for(&self, sandbox: &str) -> Result<Arc<Context>, Response> {
        self.add(
            sandbox,
            Context {
                id: random_id(),
                language: "python".into(),
                cwd: "/home/user".into(),
                default: true,
                kernel: Arc::default(),
            },
        )
    }

    fn remove(&self, sandbox: &str, id: &str) -> Option<Arc<Context>> {
        let mut all = self.by_sandbox.lock().expect("never poisoned");
        let contexts = all.get_mut(sandbox)?;
        let at = contexts.iter().position(|c| c.id == id)?;
        let removed = contexts.remove(at);
        if contexts.is_empty() {
            all.remove(sandbox);
        }
        Some(removed)
    }

    /// The sandboxes with contexts.
    pub(crate) fn sandboxes(&self) -> Vec<String> {
        self.by_sandbox
            .lock()
            .expect("never poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Forgets a sandbox's contexts (it was destroyed; their kernels went with it).
    pub(crate) fn forget(&self, sandbox: &str) {
        self.by_sandbox
            .lock()
            .expect("never poisoned")
            .remove(sandbox);
    }
}

pub(crate) fn router(e2b: E2b) -> Router {
    Router::new()
        .route("/execute", post(execute))
        .route("/contexts", get(list).post(create))
        .route("/contexts/{id}", delete(remove))
        .route("/contexts/{id}/restart", post(restart))
        .route("/health", get(|| async { Json("OK") }))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "no such route") })
        .with_state(e2b)
}

/// The interpreter's errors are plain text, as its SDKs read them.
fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn addressed(request: &Request) -> Result<(Target, Caller), Response> {
    crate::addressed(request.extensions()).ok_or_else(|| {
        text(
            StatusCode::UNAUTHORIZED,
            "the sandbox's access or traffic token is required",
        )
    })
}

/// The language a request names, as the interpreter knows it (`python` only).
fn language_of(asked: Option<&str>) -> Result<String, Response> {
    let language = asked.map(|l| l.trim().to_ascii_lowercase());
    match language.as_deref() {
        None | Some("") | Some("python") | Some("python3") => Ok("python".to_owned()),
        Some(other) => Err(text(
            StatusCode::BAD_REQUEST,
            format!(
                "language {:?} is not served by sbx's code interpreter (python only)",
                other.chars().take(32).collect::<String>()
            ),
        )),
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn context_json(context: &Context) -> serde_json::Value {
    json!({ "id": context.id, "language": context.language, "cwd": context.cwd })
}

/// The caller may reach the sandbox (and it runs).
fn reachable(e2b: &E2b, caller: &Caller, target: &Target) -> Result<(), Response> {
    e2b.service()
        .get(caller, &target.sandbox)
        .map(|_| ())
        .map_err(|e| text(status_of(&e), e.to_string()))
}

async fn body_of<T: serde::de::DeserializeOwned + Default>(
    request: Request,
) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            text(
                StatusCode::BAD_REQUEST,
                format!("the body is unreadable or larger than {MAX_BODY} bytes"),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid body: {e}"),
        )
    })
}

#[derive(Debug, Default, Deserialize)]
struct NewContext {
    language: Option<String>,
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Execute {
    #[serde(default)]
    code: Option<String>,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<BTreeMap<String, String>>,
}

async fn list(State(e2b): State<E2b>, request: Request) -> Response {
    let (target, caller) = match addressed(&request) {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Err(response) = reachable(&e2b, &caller, &target) {
        return response;
    }
    if let Err(response) = e2b.inner.interpreters.default_for(&target.sandbox) {
        return response;
    }
    let contexts = e2b.inner.interpreters.list(&target.sandbox);
    Json(contexts.iter().map(|c| context_json(c)).collect::<Vec<_>>()).into_response()
}

async fn create(State(e2b): State<E2b>, request: Request) -> Response {
    let (target, caller) = match addressed(&request) {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Err(response) = reachable(&e2b, &caller, &target) {
        return response;
    }
    let asked: NewContext = match body_of(request).await {
        Ok(asked) => asked,
        Err(response) => return response,
    };
    let language = match language_of(asked.language.as_deref()) {
        Ok(language) => language,
        Err(response) => return response,
    };
    let cwd = crate::process::absolute(asked.cwd.as_deref().unwrap_or(""), None);
    let context = Context {
        id: random_id(),
        language,
        cwd,
        default: false,
        kernel: Arc::default(),
    };
    match e2b.inner.interpreters.add(&target.sandbox, context) {
        Ok(context) => Json(context_json(&context)).into_response(),
        Err(response) => response,
    }
}

async fn remove(State(e2b): State<E2b>, Path(id): Path<String>, request: Request) -> Response {
    let (target, caller) = match addressed(&request) {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Err(response) = reachable(&e2b, &caller, &target) {
        return response;
    }
    match e2b.inner.interpreters.remove(&target.sandbox, &id) {
        // Its kernel ends when the last request using it does.
        Some(context) => {
            if let Ok(mut kernel) = context.kernel.try_lock() {
                kernel.take();
            }
            Json(serde_json::Value::Null).into_response()
        }
        None => not_found(&id),
    }
}

async fn restart(State(e2b): State<E2b>, Path(id): Path<String>, request: Request) -> Response {
    let (target, caller) = match addressed(&request) {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Err(response) = reachable(&e2b, &caller, &target) {
        return response;
    }
    let Some(context) = e2b.inner.interpreters.find(&target.sandbox, &id) else {
        return not_found(&id);
    };
    // A request under way is interrupted; the next one starts a new kernel.
    let mut kernel = context.kernel.lock().await;
    kernel.take();
    Json(serde_json::Value::Null).into_response()
}

fn not_found(id: &str) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "Context {} not found",
            id.chars().take(64).collect::<String>()
        ),
    )
}

/// Starts a context's kernel.
async fn start_kernel(
    e2b: &E2b,
    caller: &Caller,
    sandbox: &str,
    cwd: &str,
) -> Result<Kernel, String> {
    let request = ExecRequest {
        cmd: vec!["python3".into(), "-u".into(), "-c".into(), KERNEL.into()],
        stdin: None,
        stdin_open: true,
        env: [("SBX_KERNEL_CWD".to_owned(), cwd.to_owned())].into(),
        cwd: None,
        user: None,
        timeout: None,
    };
    let stream = e2b
        .service()
        .exec(caller, sandbox, request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Kernel {
        stream,
        pending: Vec::new(),
    })
}

/// One line of NDJSON from a value.
fn line(value: serde_json::Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn error_line(name: &str, value: &str) -> Bytes {
    line(json!({ "type": "error", "name": name, "value": value, "traceback": "" }))
}

async fn execute(State(e2b): State<E2b>, request: Request) -> Response {
    let (target, caller) = match addressed(&request) {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Err(response) = reachable(&e2b, &caller, &target) {
        return response;
    }
    let asked: Execute = match body_of(request).await {
        Ok(asked) => asked,
        Err(response) => return response,
    };
    let Some(code) = asked.code else {
        return text(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid body: code is required",
        );
    };
    if asked.context_id.is_some() && asked.language.is_some() {
        return text(
            StatusCode::BAD_REQUEST,
            "Only one of context_id or language can be provided",
        );
    }
    let context = match &asked.context_id {
        Some(id) => match e2b.inner.interpreters.find(&target.sandbox, id) {
            Some(context) => context,
            None => return not_found(id),
        },
        None => {
            if let Err(response) = language_of(asked.language.as_deref()) {
                return response;
            }
            match e2b.inner.interpreters.default_for(&target.sandbox) {
                Ok(context) => context,
                Err(response) => return response,
            }
        }
    };
    let env = asked.env_vars.unwrap_or_default();
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(run(e2b, caller, target.sandbox, context, code, env, sender));
    let mut response = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
    ));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Runs one request in its context's kernel, sending the kernel's answer line by line; when
/// the client leaves, the request is interrupted and its answer drained (the kernel stays in
/// step for the next one).
async fn run(
    e2b: E2b,
    caller: Caller,
    sandbox: String,
    context: Arc<Context>,
    code: String,
    env: BTreeMap<String, String>,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut slot = context.kernel.clone().lock_owned().await;
    if slot.is_none() {
        match start_kernel(&e2b, &caller, &sandbox, &context.cwd).await {
            Ok(kernel) => *slot = Some(kernel),
            Err(message) => {
                let _ = sender
                    .send(Ok(error_line("ContextStartFailed", &message)))
                    .await;
                let _ = sender
                    .send(Ok(line(json!({ "type": "end_of_execution" }))))
                    .await;
                return;
            }
        }
    }
    let Some(kernel) = slot.as_mut() else { return };
    let mut request = serde_json::to_vec(&json!({ "code": code, "env": env })).unwrap_or_default();
    request.push(b'\n');
    if kernel
        .stream
        .input
        .send(ExecInput::Stdin(Bytes::from(request)))
        .await
        .is_err()
    {
        slot.take();
        let _ = sender
            .send(Ok(error_line(
                "ContextRestarting",
                "the context's kernel ended; run the code again",
            )))
            .await;
        return;
    }
    let mut interrupted_at: Option<tokio::time::Instant> = None;
    loop {
        // A whole line already received?
        if let Some(at) = kernel.pending.iter().position(|b| *b == b'\n') {
            let whole: Vec<u8> = kernel.pending.drain(..=at).collect();
            if whole.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let last = whole.starts_with(br#"{"type": "end_of_execution""#);
            if interrupted_at.is_none() && sender.send(Ok(Bytes::from(whole))).await.is_err() {
                interrupted_at = Some(interrupt(kernel).await);
            }
            if last {
                return;
            }
            continue;
        }
        if kernel.pending.len() > MAX_LINE {
            slot.take();
            let _ = sender
                .send(Ok(error_line(
                    "OutputTooLarge",
                    &format!("a single output was larger than {MAX_LINE} bytes; the context was restarted"),
                )))
                .await;
            return;
        }
        let grace = interrupted_at.map(|at| at + INTERRUPT_GRACE);
        let output = tokio::select! {
            output = kernel.stream.output.recv() => output,
            () = sender.closed(), if interrupted_at.is_none() => {
                interrupted_at = Some(interrupt(kernel).await);
                continue;
            }
            () = async {
                match grace {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                // It did not stop: a new kernel for the next request.
                slot.take();
                return;
            }
        };
        match output {
            Some(ExecOutput::Stdout(bytes)) => kernel.pending.extend_from_slice(&bytes),
            Some(ExecOutput::Stderr(_)) => {}
            Some(ExecOutput::Exit { .. }) | Some(ExecOutput::Failed(_)) | None => {
                slot.take();
                let _ = sender
                    .send(Ok(error_line(
                        "ContextRestarting",
                        "the context's kernel ended (it is started again on the next request)",
                    )))
                    .await;
                let _ = sender
                    .send(Ok(line(json!({ "type": "end_of_execution" }))))
                    .await;
                return;
            }
        }
    }
}

async fn interrupt(kernel: &Kernel) -> tokio::time::Instant {
    let _ = kernel
        .stream
        .input
        .send(ExecInput::Signal {
            signal: Signal::Interrupt,
            target: SignalTarget::Process,
        })
        .await;
    tokio::time::Instant::now()
}
