//! The control plane E2B's SDKs call (`E2B_API_URL`): sandboxes created, connected to (and
//! resumed), listed, inspected, killed, given a new timeout, paused, measured — each one
//! lifecycle operation for the caller's key, answered in E2B's JSON with E2B's statuses.
//!
//! SDKs up to 2.50 create with `POST /sandboxes` and connect with `POST
//! /sandboxes/{id}/connect`; later ones use the `/v2/` forms; both are served. A sandbox that
//! is neither running nor paused does not exist for E2B (404).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sbx_lifecycle::model::{NewSandbox, Sandbox, Span};
use sbx_lifecycle::{Caller, ListFilter, State as SandboxState};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::errors::{e2b_error, from_lifecycle};
use crate::tokens::{form_pairs, percent_decode};
use crate::{caller_of, E2b, ENVD_VERSION};

/// E2B's default sandbox lifetime, when a create names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Most sandboxes one list page holds.
const MAX_PAGE: usize = 100;
/// Largest control-plane request body.
const MAX_BODY: usize = 256 << 10;

/// E2B's control-plane resources: sandboxes (served), and those sbx does not serve (answered
/// 501 in E2B's shape, so that an SDK says what is missing rather than "not found").
const CONTROL_ROOTS: [&str; 5] = ["sandboxes", "snapshots", "templates", "volumes", "secrets"];

pub(crate) fn is_control_path(path: &str) -> bool {
    let path = path.strip_prefix("/v2").unwrap_or(path);
    let root = path
        .strip_prefix('/')
        .map(|p| p.split('/').next().unwrap_or(""));
    root.is_some_and(|root| CONTROL_ROOTS.contains(&root))
}

pub(crate) fn router(e2b: E2b) -> Router {
    Router::new()
        .route("/sandboxes", post(create).get(list_v1))
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes/{id}", get(info).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/metrics", get(metrics))
        // E2B's other routes (templates, snapshots, volumes, forks, network rules, …): a
        // clear refusal (`Should-Retry: false`), never "not found", which the SDKs read as
        // "no such sandbox".
        .fallback(|request: Request| async move {
            e2b_error(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "{} {} is not supported by sbx (docs/e2b.md lists what is)",
                    request.method(),
                    request.uri().path()
                ),
            )
        })
        .method_not_allowed_fallback(|| async {
            e2b_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .with_state(e2b)
}

/// The caller and the JSON body of a request (an absent or empty body is `{}`).
async fn read<T: serde::de::DeserializeOwned + Default>(
    request: Request,
) -> Result<(Caller, T), Response> {
    let caller = caller_of(request.extensions())
        .ok_or_else(|| e2b_error(StatusCode::UNAUTHORIZED, "an API key is required"))?;
    let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| {
            e2b_error(
                StatusCode::BAD_REQUEST,
                format!("the request body is unreadable or larger than {MAX_BODY} bytes"),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((caller, T::default()));
    }
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return Err(e2b_error(
            StatusCode::BAD_REQUEST,
            "invalid body: a JSON object is expected",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    let body = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| e2b_error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?;
    Ok((caller, body))
}

fn caller(request: &Request) -> Result<Caller, Response> {
    caller_of(request.extensions())
        .ok_or_else(|| e2b_error(StatusCode::UNAUTHORIZED, "an API key is required"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandboxBody {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<u64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    // Accepted and not applied (docs/e2b.md says why): sbx sandboxes have no network, every
    // sandbox gets an access token, and idle pausing is a profile's setting.
    #[serde(default)]
    #[allow(dead_code)]
    secure: Option<bool>,
    #[serde(default, rename = "allow_internet_access")]
    #[allow(dead_code)]
    allow_internet_access: Option<bool>,
    /// `lifecycle={"on_timeout": "pause"}`: refused (a sandbox is destroyed at its timeout),
    /// never silently destroyed instead of paused.
    #[serde(default)]
    auto_pause: Option<bool>,
    /// Volumes: refused when any is asked for.
    #[serde(default)]
    volume_mounts: Option<Vec<Value>>,
}

#[derive(Debug, Default, Deserialize)]
struct TimeoutBody {
    timeout: Option<u64>,
}

impl E2b {
    /// The sbx profile an E2B template name stands for.
    fn profile_for(&self, template: &str) -> String {
        if let Some(profile) = self.inner.config.templates.get(template) {
            return profile.clone();
        }
        match template {
            "base" | "code-interpreter-v1" | "code-interpreter" => {
                sbx_config::DEFAULT_PROFILE.to_owned()
            }
            other => other.to_owned(),
        }
    }

    /// The E2B template name a profile is shown as.
    fn template_for(&self, profile: &str) -> String {
        if let Some((template, _)) = self
            .inner
            .config
            .templates
            .iter()
            .find(|(_, p)| p.as_str() == profile)
        {
            return template.clone();
        }
        if profile == sbx_config::DEFAULT_PROFILE {
            "base".to_owned()
        } else {
            profile.to_owned()
        }
    }

    /// What create and connect answer: the sandbox and how to reach its envd.
    fn sandbox_json(&self, sandbox: &Sandbox) -> Value {
        let mut body = json!({
            "sandboxID": sandbox.id,
            "templateID": self.template_for(&sandbox.profile),
            "clientID": "sbx",
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": self.inner.tokens.access_token(&sandbox.id),
            "trafficAccessToken": self.inner.tokens.traffic_token(&sandbox.id),
            "domain": self.inner.config.domain,
        });
        if let Some(name) = &sandbox.name {
            body["alias"] = json!(name);
        }
        body
    }

    /// What info and list answer.
    fn detail_json(&self, sandbox: &Sandbox, with_token: bool) -> Value {
        let state = if sandbox.state.is_suspended() {
            "paused"
        } else {
            "running"
        };
        let mut body = json!({
            "sandboxID": sandbox.id,
            "templateID": self.template_for(&sandbox.profile),
            "clientID": "sbx",
            "envdVersion": ENVD_VERSION,
            "cpuCount": sandbox.resources.cpus.ceil().max(1.0) as u64,
            "memoryMB": sandbox.resources.memory_mb,
            "diskSizeMB": sandbox.resources.disk_mb,
            "startedAt": rfc3339(sandbox.started_at),
            "endAt": rfc3339(sandbox.expires_at),
            "state": state,
            "metadata": sandbox.metadata,
            "domain": self.inner.config.domain,
            "allowInternetAccess": false,
        });
        if let Some(name) = &sandbox.name {
            body["alias"] = json!(name);
        }
        if with_token {
            body["envdAccessToken"] = json!(self.inner.tokens.access_token(&sandbox.id));
        }
        body
    }

    /// The caller's sandbox as E2B sees it: running or paused, else not found.
    fn visible(&self, caller: &Caller, id: &str) -> Result<Sandbox, Response> {
        match self.service().get(caller, id) {
            Ok(s)
                if matches!(
                    s.state,
                    SandboxState::Running | SandboxState::Paused | SandboxState::Hibernated
                ) =>
            {
                Ok(s)
            }
            Ok(_) | Err(sbx_lifecycle::Error::NotFound(_)) => Err(not_found(id)),
            Err(e) => Err(from_lifecycle(e)),
        }
    }
}

fn not_found(id: &str) -> Response {
    e2b_error(
        StatusCode::NOT_FOUND,
        format!("sandbox {id:?} was not found"),
    )
}

/// Unix ms as RFC 3339 (UTC, milliseconds).
fn rfc3339(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

async fn create(State(e2b): State<E2b>, request: Request) -> Response {
    let (caller, body): (Caller, NewSandboxBody) = match read(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    if body.auto_pause == Some(true) {
        return e2b_error(
            StatusCode::BAD_REQUEST,
            "autoPause (on_timeout \"pause\") is not supported by sbx: a sandbox is destroyed at its timeout; pause it before, or extend it with set_timeout",
        );
    }
    if body.volume_mounts.as_ref().is_some_and(|v| !v.is_empty()) {
        return e2b_error(
            StatusCode::BAD_REQUEST,
            "volumeMounts are not supported by sbx",
        );
    }
    let template = body.template_id.as_deref().unwrap_or("base");
    let timeout = body
        .timeout
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return e2b_error(StatusCode::BAD_REQUEST, "timeout must be above 0 seconds");
    }
    let request = NewSandbox {
        profile: Some(e2b.profile_for(template)),
        ttl: Some(Span::new(timeout)),
        env: body.env_vars.unwrap_or_default(),
        metadata: body.metadata.unwrap_or_default(),
        ..NewSandbox::default()
    };
    match e2b.service().create(&caller, &request).await {
        Ok(sandbox) => (StatusCode::CREATED, Json(e2b.sandbox_json(&sandbox))).into_response(),
        Err(sbx_lifecycle::Error::ProfileNotFound(_)) => e2b_error(
            StatusCode::BAD_REQUEST,
            format!(
                "template {template:?} was not found (see e2b.templates in sbx's configuration)"
            ),
        ),
        Err(e) => from_lifecycle(e),
    }
}

/// A list query: lifecycle's filter (`state`, comma-separated `running`, `paused`, or
/// repeated; `metadata`, a form-encoded query of its own with keys and values encoded once
/// more by the SDKs), E2B's own filters, the order and the page.
struct ListQuery {
    filter: ListFilter,
    /// `template`: sandboxes of the profile it stands for.
    template: Option<String>,
    /// `startedAfter` (RFC 3339): sandboxes created after it, Unix ms.
    started_after: Option<i64>,
    /// `order`: newest first (`desc`, E2B's default) or oldest first (`asc`).
    newest_first: bool,
    limit: usize,
    /// `nextToken`: the last sandbox of the page before, as `<created ms>_<id>`; the page
    /// goes on after it in the list's order, whatever went meanwhile (a cursor, not an
    /// offset: killing a page's sandboxes skips none of the next).
    after: Option<(i64, String)>,
}

fn list_filter(query: Option<&str>) -> Result<ListQuery, Response> {
    let pairs = form_pairs(query.unwrap_or(""));
    let mut filter = ListFilter::default();
    let mut list = ListQuery {
        filter: ListFilter::default(),
        template: None,
        started_after: None,
        newest_first: true,
        limit: MAX_PAGE,
        after: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "state" => {
                for state in value.split(',').filter(|s| !s.is_empty()) {
                    match state {
                        "running" => filter.states.push(SandboxState::Running),
                        // A hibernated sandbox is paused to E2B's clients.
                        "paused" => filter
                            .states
                            .extend([SandboxState::Paused, SandboxState::Hibernated]),
                        other => {
                            return Err(e2b_error(
                                StatusCode::BAD_REQUEST,
                                format!("state {other:?} is not running or paused"),
                            ))
                        }
                    }
                }
            }
            "metadata" => {
                for (k, v) in form_pairs(&value) {
                    filter
                        .metadata
                        .insert(percent_decode(&k), percent_decode(&v));
                }
            }
            "limit" => {
                list.limit = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                    _ => {
                        return Err(e2b_error(
                            StatusCode::BAD_REQUEST,
                            format!("limit must be from 1 to {MAX_PAGE}"),
                        ))
                    }
                }
            }
            "nextToken" if !value.is_empty() => {
                let cursor = value
                    .split_once('_')
                    .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_owned())));
                list.after = Some(cursor.ok_or_else(|| {
                    e2b_error(StatusCode::BAD_REQUEST, "nextToken is not one sbx gave")
                })?);
            }
            "order" => {
                list.newest_first = match value.to_ascii_lowercase().as_str() {
                    "desc" => true,
                    "asc" => false,
                    _ => {
                        return Err(e2b_error(
                            StatusCode::BAD_REQUEST,
                            format!("order {value:?} is not asc or desc"),
                        ))
                    }
                }
            }
            "template" if !value.is_empty() => list.template = Some(value),
            "startedAfter" if !value.is_empty() => {
                list.started_after = Some(rfc3339_ms(&value).ok_or_else(|| {
                    e2b_error(
                        StatusCode::BAD_REQUEST,
                        format!("startedAfter {value:?} is not an RFC 3339 time"),
                    )
                })?);
            }
            _ => {}
        }
    }
    if filter.states.is_empty() {
        filter.states = vec![
            SandboxState::Running,
            SandboxState::Paused,
            SandboxState::Hibernated,
        ];
    }
    list.filter = filter;
    Ok(list)
}

/// Unix ms of an RFC 3339 time (`Z` or a `±HH:MM` offset, any fraction of a second).
fn rfc3339_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let (local, offset_minutes) = match text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
        Some(local) => (local, 0i64),
        None => {
            let at = text.len().checked_sub(6)?;
            let (local, offset) = (text.get(..at)?, text.get(at..)?);
            let sign = match offset.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = offset[1..].split_once(':')?;
            let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
            (local, sign * (hours * 60 + minutes))
        }
    };
    let time = humantime::parse_rfc3339_weak(local).ok()?;
    let ms = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms)
        .ok()?
        .checked_sub(offset_minutes.checked_mul(60_000)?)
}

fn list_sandboxes(
    e2b: &E2b,
    request: &Request,
    paged: bool,
) -> Result<(Vec<Value>, Option<String>), Response> {
    let caller = caller(request)?;
    let query = list_filter(request.uri().query())?;
    let mut sandboxes = e2b
        .service()
        .list(&caller, &query.filter)
        .map_err(from_lifecycle)?;
    if let Some(template) = &query.template {
        let profile = e2b.profile_for(template);
        sandboxes.retain(|s| s.profile == profile);
    }
    if let Some(after) = query.started_after {
        sandboxes.retain(|s| s.created_at > after);
    }
    sandboxes.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    if query.newest_first {
        sandboxes.reverse();
    }
    if let (Some((ms, id)), true) = (&query.after, paged) {
        let cursor = (*ms, id.as_str());
        sandboxes.retain(|s| {
            let key = (s.created_at, s.id.as_str());
            if query.newest_first {
                key < cursor
            } else {
                key > cursor
            }
        });
    }
    let limit = if paged { query.limit } else { usize::MAX };
    let next = (sandboxes.len() > limit)
        .then(|| sandboxes.get(limit - 1))
        .flatten()
        .map(|last| format!("{}_{}", last.created_at, last.id));
    let page: Vec<Value> = sandboxes
        .iter()
        .take(limit)
        .map(|s| e2b.detail_json(s, false))
        .collect();
    Ok((page, next))
}

async fn list_v1(State(e2b): State<E2b>, request: Request) -> Response {
    match list_sandboxes(&e2b, &request, false) {
        Ok((page, _)) => Json(page).into_response(),
        Err(response) => response,
    }
}

async fn list_v2(State(e2b): State<E2b>, request: Request) -> Response {
    match list_sandboxes(&e2b, &request, true) {
        Ok((page, next)) => {
            let mut response = Json(page).into_response();
            if let Some(next) = next {
                if let Ok(value) = HeaderValue::from_str(&next) {
                    response.headers_mut().insert("x-next-token", value);
                }
            }
            response
        }
        Err(response) => response,
    }
}

async fn info(State(e2b): State<E2b>, Path(id): Path<String>, request: Request) -> Response {
    let caller = match caller(&request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match e2b.visible(&caller, &id) {
        Ok(sandbox) => Json(e2b.detail_json(&sandbox, true)).into_response(),
        Err(response) => response,
    }
}

async fn kill(State(e2b): State<E2b>, Path(id): Path<String>, request: Request) -> Response {
    let caller = match caller(&request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let sandbox = match e2b.visible(&caller, &id) {
        Ok(sandbox) => sandbox,
        Err(response) => return response,
    };
    // The answer comes once the sandbox is being destroyed (no longer usable, listed or
    // reachable): its teardown runs to its end in lifecycle's own task, as every destroy does.
    let destroy = tokio::spawn({
        let (service, caller, id) = (e2b.service().clone(), caller.clone(), sandbox.id.clone());
        async move {
            service
                .destroy(&caller, &id, sbx_lifecycle::reason::DELETED)
                .await
        }
    });
    let patience = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        if destroy.is_finished() || tokio::time::Instant::now() > patience {
            return match destroy.await {
                Ok(Ok(_)) => {
                    e2b.forget(&sandbox.id);
                    StatusCode::NO_CONTENT.into_response()
                }
                Ok(Err(sbx_lifecycle::Error::NotFound(_))) => not_found(&id),
                Ok(Err(e)) => from_lifecycle(e),
                Err(_) => e2b_error(StatusCode::INTERNAL_SERVER_ERROR, "the destroy failed"),
            };
        }
        let usable = e2b.service().get(&caller, &sandbox.id).is_ok_and(|s| {
            matches!(
                s.state,
                SandboxState::Running | SandboxState::Paused | SandboxState::Hibernated
            )
        });
        if !usable {
            return StatusCode::NO_CONTENT.into_response();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn set_timeout(State(e2b): State<E2b>, Path(id): Path<String>, request: Request) -> Response {
    let (caller, body): (Caller, TimeoutBody) = match read(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let Some(seconds) = body.timeout.filter(|s| *s > 0) else {
        return e2b_error(StatusCode::BAD_REQUEST, "timeout must be above 0 seconds");
    };
    if let Err(response) = e2b.visible(&caller, &id) {
        return response;
    }
    let span = Span::new(Duration::from_secs(seconds));
    match e2b.service().extend(&caller, &id, &span).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(sbx_lifecycle::Error::NotFound(_)) => not_found(&id),
        Err(e) => from_lifecycle(e),
    }
}

/// Connect: resumes a paused sandbox (201), and extends a running one's timeout, never
/// shortening it (200).
async fn connect(State(e2b): State<E2b>, Path(id): Path<String>, request: Request) -> Response {
    let (caller, body): (Caller, TimeoutBody) = match read(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let sandbox = match e2b.visible(&caller, &id) {
        Ok(s) => s,
        Err(response) => return response,
    };
    let mut status = StatusCode::OK;
    let mut sandbox = sandbox;
    if sandbox.state.is_suspended() {
        sandbox = match e2b.service().resume(&caller, &id).await {
            Ok(s) => s,
            Err(e) => return from_lifecycle(e),
        };
        status = StatusCode::CREATED;
    }
    if let Some(seconds) = body.timeout.filter(|s| *s > 0) {
        let wanted = sbx_lifecycle::now_ms().saturating_add(
            i64::try_from(seconds)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        );
        if wanted > sandbox.expires_at {
            let span = Span::new(Duration::from_secs(seconds));
            sandbox = match e2b.service().extend(&caller, &id, &span).await {
                Ok(s) => s,
                Err(e) => return from_lifecycle(e),
            };
        }
    }
    (status, Json(e2b.sandbox_json(&sandbox))).into_response()
}

async fn pause(State(e2b): State<E2b>, Path(id): Path<String>, request: Request) -> Response {
    let caller = match caller(&request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match e2b.visible(&caller, &id) {
        Ok(s) if s.state.is_suspended() => {
            return e2b_error(
                StatusCode::CONFLICT,
                format!("sandbox {id:?} is already paused"),
            )
        }
        Ok(_) => {}
        Err(response) => return response,
    }
    // E2B's paused sandbox waits for its resume, however long: its timeout stops while paused
    // (a resume gives back what was left, and a connect's timeout extends that).
    match e2b.service().pause_stopping_clock(&caller, &id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => from_lifecycle(e),
    }
}

async fn resume(State(e2b): State<E2b>, Path(id): Path<String>, request: Request) -> Response {
    let (caller, body): (Caller, TimeoutBody) = match read(request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    match e2b.visible(&caller, &id) {
        Ok(s) if !s.state.is_suspended() => {
            return e2b_error(
                StatusCode::CONFLICT,
                format!("sandbox {id:?} is not paused"),
            )
        }
        Ok(_) => {}
        Err(response) => return response,
    }
    let mut sandbox = match e2b.service().resume(&caller, &id).await {
        Ok(s) => s,
        Err(e) => return from_lifecycle(e),
    };
    if let Some(seconds) = body.timeout.filter(|s| *s > 0) {
        let span = Span::new(Duration::from_secs(seconds));
        sandbox = match e2b.service().extend(&caller, &id, &span).await {
            Ok(s) => s,
            Err(e) => return from_lifecycle(e),
        };
    }
    (StatusCode::CREATED, Json(e2b.sandbox_json(&sandbox))).into_response()
}

/// One sample, now: the sandbox's memory and its CPU use over its life so far.
async fn metrics(State(e2b): State<E2b>, Path(id): Path<String>, request: Request) -> Response {
    let caller = match caller(&request) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let sandbox = match e2b.visible(&caller, &id) {
        Ok(s) => s,
        Err(response) => return response,
    };
    let usage = match e2b.service().usage(&caller, &id).await {
        Ok(usage) => usage,
        Err(e) => return from_lifecycle(e),
    };
    let now = sbx_lifecycle::now_ms();
    let lived = ((now - sandbox.started_at).max(1) as f64) / 1000.0;
    let cpus = sandbox.resources.cpus.max(0.01);
    let cpu_pct = usage
        .cpu_seconds
        .map_or(0.0, |s| (s / lived / cpus * 100.0).clamp(0.0, 100.0));
    let sample = json!({
        "timestamp": rfc3339(now),
        "timestampUnix": now / 1000,
        "cpuCount": sandbox.resources.cpus.ceil().max(1.0) as u64,
        "cpuUsedPct": (cpu_pct * 100.0).round() / 100.0,
        "memUsed": usage.memory_bytes.unwrap_or(0),
        "memTotal": sandbox.resources.memory_mb << 20,
        "memCache": 0,
        "diskUsed": 0,
        "diskTotal": sandbox.resources.disk_mb << 20,
    });
    Json(vec![sample]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_offsets_are_read() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5+00:00"), Some(1500));
        assert_eq!(rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00-00:30"), Some(1_800_000));
        assert_eq!(rfc3339_ms("yesterday"), None);
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00+0x:00"), None);
    }

    #[test]
    fn e2bs_control_plane_is_its_roots() {
        for path in [
            "/sandboxes",
            "/v2/sandboxes/x/connect",
            "/templates/aliases/a",
            "/snapshots",
        ] {
            assert!(is_control_path(path), "{path}");
        }
        for path in ["/", "/v1/sandboxes", "/sandboxesx", "/healthz", "/v2"] {
            assert!(!is_control_path(path), "{path}");
        }
    }
}
