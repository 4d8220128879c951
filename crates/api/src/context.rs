//! Every request's context, set up by one middleware before any handler runs:
//!
//! - a request id (`X-Request-Id` on every response, `request_id` in every error body, a field
//!   of every log line and audit entry of the request);
//! - the client's address: the connection's peer, or — only when that peer is a configured
//!   trusted proxy — the nearest untrusted address of `X-Forwarded-For`;
//! - who it acts for ([`Caller`]): from `Authorization: Bearer <key>`, `X-API-Key: <key>`, or
//!   the web page's session cookie. Only `/healthz`, the web page's assets and login/logout
//!   are open without one. A cookie-authenticated request that changes something must come
//!   from an allowed `Origin` (CSRF), on top of the cookie's `SameSite=Strict`.
//!
//! After the handler, refusals are written to the audit log: `auth.failed`, `access.denied`,
//! `rate_limited`, `input.rejected`.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sbx_config::IpRange;
use sbx_lifecycle::{AuthFailure, Caller};
use tracing::Instrument as _;

use crate::error::ErrorInfo;
use crate::{ApiError, AppState};

/// The web page's session cookie.
pub const SESSION_COOKIE: &str = "sbx_session";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled (in its task), if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Whether the client reached the daemon over HTTPS (said by a trusted proxy).
#[derive(Debug, Clone, Copy)]
pub struct Https(pub bool);

/// The caller of an authenticated route.
pub struct Auth(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Auth, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Auth)
            .ok_or_else(|| unauthorized("an API key is required"))
    }
}

/// The client's address as the context resolved it.
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(
            parts.extensions.get::<ClientIp>().and_then(|c| c.0),
        ))
    }
}

impl Clone for ClientIp {
    fn clone(&self) -> ClientIp {
        ClientIp(self.0)
    }
}

/// `path` with a share link's token replaced by `…` (`/v1/shares/…/rest`).
fn without_share_token(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/v1/shares/") {
        Some(rest) => {
            let after = rest.find('/').map_or("", |i| &rest[i..]);
            format!("/v1/shares/…{after}").into()
        }
        None => path.into(),
    }
}

/// Paths open without a key: the health check, the web page, and the page's login; and the
/// paths whose handler decides for itself — a sandbox's ports (a public port needs no key)
/// and share links (their signed token is the credential).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/v1/login" | "/v1/logout")
        || sbx_web::asset(path).is_some()
        || path.starts_with("/v1/shares/")
        || crate::routes::ports::is_port_path(path)
}

pub async fn middleware(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = new_request_id();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let trusted = &state.settings.trusted_proxies;
    let ip = client_ip(peer, request.headers(), trusted);
    let https = peer.is_some_and(|p| trusted.iter().any(|r| r.contains(p)))
        && request
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let method = request.method().clone();
    // A refusal answered before the body was read leaves the client writing it: the connection
    // is drained before it closes, or the client gets a broken pipe instead of the answer.
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|l| l.as_bytes() != b"0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let drain = request
        .extensions()
        .get::<crate::server::DrainOnClose>()
        .cloned();
    // A path as long as the request line allows would be written, whole, to the log and the
    // audit trail by every refusal: anonymous clients once rotated the audit history away
    // with 60 KB paths. No route is longer than a few hundred bytes.
    if request.uri().to_string().len() > MAX_URI_BYTES {
        let response = ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request's URI is longer than {MAX_URI_BYTES} bytes"),
        );
        return REQUEST_ID
            .scope(id, async { response.into_response() })
            .await;
    }
    let path = request.uri().path().to_owned();
    // A request addressed to a sandbox's port (E2B's envd or code interpreter), and whether
    // the path is E2B's control plane: both answer errors in E2B's shape.
    let target = state.e2b.e2b.target(request.headers());
    let e2b_shaped = target.is_some() || sbx_e2b::E2b::is_control_path(&path);
    // A share link's token is a credential: the log and the audit trail get the path without it.
    let shown_path = without_share_token(&path).into_owned();
    let logged_path = truncated(&shown_path, LOGGED_PATH_BYTES);
    let span = tracing::info_span!("request", id = %id, %method, path = %logged_path);
    let work = async move {
        request.extensions_mut().insert(ClientIp(ip));
        request.extensions_mut().insert(Https(https));
        request.extensions_mut().insert(state.body_budget.clone());
        // A sandbox's health is open: it says 502 to whoever may not see the sandbox.
        // Any other port of a sandbox is its own service: public ports need no key (the
        // dispatch decides).
        let public = match &target {
            Some(t) if t.port == sbx_e2b::ENVD_PORT => path == "/health",
            Some(t) => t.port != sbx_e2b::INTERPRETER_PORT,
            None => is_public(&path),
        };
        if let Some(target) = &target {
            request.extensions_mut().insert(target.clone());
        }
        let identified = match &target {
            Some(target) => identify_for_sandbox(&state, &request, &method, target, &path),
            None => identify(&state, &request, &method),
        };
        let (caller, refusal) = match identified {
            Ok(found) => (found, None),
            Err((failure, key_id, error)) => {
                audit_auth_failure(&state, ip, &method, &shown_path, failure.as_str(), key_id);
                (None, Some(error))
            }
        };
        let caller = caller.map(|found| Caller {
            ip,
            request_id: request_id(),
            ..found
        });
        let mut response = match (&caller, refusal) {
            (Some(caller), _) => {
                request.extensions_mut().insert(caller.clone());
                next.run(request).await
            }
            // Public routes work without (valid) credentials.
            (None, _) if public => next.run(request).await,
            (None, Some(error)) => error.into_response(),
            (None, None) => {
                audit_auth_failure(&state, ip, &method, &shown_path, "missing", None);
                unauthorized(
                    "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                )
                .into_response()
            }
        };
        audit_refusal(&state, caller.as_ref(), ip, &method, &shown_path, &response);
        let status = response.status();
        if has_body && (status.is_client_error() || status.is_server_error()) {
            if let Some(drain) = &drain {
                drain.request();
            }
        }
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let capacity = matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE
        );
        if status.is_server_error() && !capacity {
            tracing::error!(status = status.as_u16(), elapsed_ms, "request failed");
        } else if status.is_client_error() || capacity {
            tracing::info!(status = status.as_u16(), elapsed_ms, "request refused");
        } else {
            tracing::debug!(status = status.as_u16(), elapsed_ms, "request");
        }
        if e2b_shaped {
            response = sbx_e2b::rewrite_control_error(response).await;
        }
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&request_id().unwrap_or_default()) {
            headers.insert("x-request-id", value);
        }
        headers
            .entry(header::X_CONTENT_TYPE_OPTIONS)
            .or_insert(HeaderValue::from_static("nosniff"));
        headers
            .entry(header::X_FRAME_OPTIONS)
            .or_insert(HeaderValue::from_static("DENY"));
        response
    };
    REQUEST_ID.scope(id, work.instrument(span)).await
}

/// Longest request URI served (414 above).
const MAX_URI_BYTES: usize = 8192;
/// Longest path written to the log or the audit trail.
pub const LOGGED_PATH_BYTES: usize = 256;
/// Longest error message written to the audit trail (messages may quote the request).
const LOGGED_MESSAGE_BYTES: usize = 512;

/// `text` cut to at most `max` bytes (on a character boundary), marked when cut.
pub fn truncated(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

type Refusal = (AuthFailure, Option<String>, ApiError);

/// The caller of a request addressed to a sandbox: an sbx key (`X-API-Key`, or a `Bearer`
/// authorization: E2B's SDKs use `Authorization: Basic` to name the sandbox's user, which is
/// no credential), else the sandbox's own credentials (its access token, a signed `/files`
/// URL, its traffic token).
fn identify_for_sandbox(
    state: &AppState,
    request: &Request,
    method: &Method,
    target: &sbx_e2b::Target,
    path: &str,
) -> Result<Option<Caller>, Refusal> {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .split_once(' ')
                .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        });
    if state.settings.no_auth || bearer || headers.contains_key("x-api-key") {
        return identify(state, request, method);
    }
    Ok(state
        .e2b
        .e2b
        .identify(target, method, path, request.uri().query(), headers))
}

/// Sends a request addressed to a sandbox, or on E2B's control plane, to the E2B-compatible
/// routers; every other request goes on to sbx's own.
pub async fn dispatch_e2b(State(state): State<AppState>, request: Request, next: Next) -> Response {
    use tower::ServiceExt as _;
    let mut request = request;
    // What envd keeps is keyed by sandbox id: a name (a key may use its own sandbox's) is
    // resolved here, for the caller, once.
    if let (Some(target), Some(caller)) = (
        request.extensions().get::<sbx_e2b::Target>().cloned(),
        request.extensions().get::<Caller>().cloned(),
    ) {
        let resolved = match state
            .e2b
            .e2b
            .resolve(&caller, &target, request.uri().path())
        {
            Ok(resolved) => resolved,
            Err(gone) => return gone,
        };
        request.extensions_mut().insert(resolved);
        // Bodies read whole before they are handled (Connect messages, code to run) count
        // against the daemon's budget of request bodies; file uploads stream and do not.
        if request.uri().path() != "/files" {
            let (parts, body) = request.into_parts();
            let body = state.body_budget.charged(&caller.user, body);
            request = Request::from_parts(parts, body);
        }
    }
    let router = match request.extensions().get::<sbx_e2b::Target>() {
        Some(target) if target.port == sbx_e2b::ENVD_PORT => state.e2b.envd.clone(),
        Some(target) if target.port == sbx_e2b::INTERPRETER_PORT => state.e2b.interpreter.clone(),
        // Any other port: the sandbox's own service, through the ports proxy.
        Some(target) => {
            let target = target.clone();
            // A public port is anyone's, with another user's key too, as by path: it is
            // reached as its owner.
            let public = state
                .service
                .port_owner(&target.sandbox, target.port, false);
            let caller = match public.or_else(|| request.extensions().get::<Caller>().cloned()) {
                Some(caller) => caller,
                None => return unauthorized(
                    "credentials are required for this sandbox's ports (this one is not public)",
                )
                .into_response(),
            };
            return crate::routes::ports::forward_host(
                state,
                caller,
                target.sandbox,
                target.port,
                request,
            )
            .await;
        }
        None if sbx_e2b::E2b::is_control_path(request.uri().path()) => state.e2b.control.clone(),
        None => return next.run(request).await,
    };
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The caller the request's credentials stand for; `None` when it carries none.
fn identify(
    state: &AppState,
    request: &Request,
    method: &Method,
) -> Result<Option<Caller>, Refusal> {
    let service = &state.service;
    if state.settings.no_auth {
        no_auth_allows(request.headers())?;
        return Ok(Some(Caller::unauthenticated()));
    }
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            let text = v.to_str().unwrap_or_default().trim();
            match text.split_once(' ') {
                Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => Ok(key.trim()),
                _ => Err(()),
            }
        })
        .transpose()
        .map_err(|()| {
            (
                AuthFailure::Malformed,
                None,
                unauthorized("the Authorization header must be `Bearer <key>`"),
            )
        })?;
    let key = bearer.or_else(|| {
        headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap_or_default().trim())
    });
    if let Some(key) = key {
        return service
            .access()
            .authenticate(key)
            .map(Some)
            .map_err(|failure| {
                (
                    failure,
                    known_key_id(failure, key),
                    unauthorized("the API key is invalid or revoked"),
                )
            });
    }
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let caller = service.access().session(token).map_err(|failure| {
        (
            failure,
            None,
            unauthorized("the session has ended: log in again"),
        )
    })?;
    // A browser sends `Origin` with every request that can change something; a page of another
    // site must not be able to act with this page's cookie.
    if !matches!(*method, Method::GET | Method::HEAD) {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let allowed =
            origin.is_some_and(|o| crate::origin_allowed(o, host, &state.settings.allowed_origins));
        if !allowed {
            return Err((
                AuthFailure::CrossOrigin,
                caller.key_id,
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    "a session cookie may only be used from this daemon's page (or an allowed origin)",
                ),
            ));
        }
    }
    Ok(Some(caller))
}

/// Without authentication (`--insecure-no-auth`), only this host's own programs and pages may
/// act as the admin: the daemon listens on loopback, but a web page of any site can make a
/// browser send it requests (with DNS rebinding, as if from the same origin). So the `Host`
/// must be a loopback name or address — a rebound name is not — and a browser's `Origin`, if
/// any, must be that same host.
fn no_auth_allows(headers: &HeaderMap) -> Result<(), Refusal> {
    let refuse = |message: String| {
        (
            AuthFailure::CrossOrigin,
            None,
            ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed", message),
        )
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !is_loopback_host(host) {
        return Err(refuse(format!(
            "without authentication the daemon answers only requests for a loopback host, not {:?}",
            truncated(host, 64)
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        if authority != Some(host) {
            return Err(refuse(format!(
                "without authentication the daemon answers only its own pages, not {:?}",
                truncated(origin, 64)
            )));
        }
    }
    Ok(())
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(address, _)| address),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The key's id, when the key exists (its id part is public; a stranger's guess is not kept).
fn known_key_id(failure: AuthFailure, key: &str) -> Option<String> {
    matches!(failure, AuthFailure::WrongSecret | AuthFailure::Revoked)
        .then(|| {
            key.strip_prefix("sbx_")?
                .split_once('_')
                .map(|(id, _)| id.to_owned())
        })
        .flatten()
}

/// A cookie's value.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn anonymous(ip: Option<IpAddr>) -> Caller {
    Caller {
        user: "anonymous".into(),
        admin: false,
        key_id: None,
        ip,
        request_id: request_id(),
        session: None,
    }
}

fn audit_auth_failure(
    state: &AppState,
    ip: Option<IpAddr>,
    method: &Method,
    path: &str,
    reason: &str,
    key_id: Option<String>,
) {
    // The audit trail has it (aggregated per address); the log says no more than the status.
    tracing::debug!(reason, key = key_id.as_deref(), "authentication failed");
    let caller = Caller {
        key_id,
        ..anonymous(ip)
    };
    state.service.access().audit_anonymous(
        &caller,
        "auth.failed",
        serde_json::json!({
            "reason": reason,
            "method": method.as_str(),
            "path": truncated(path, LOGGED_PATH_BYTES),
        }),
    );
}

/// Audits a refused request by the error the handler answered with.
fn audit_refusal(
    state: &AppState,
    caller: Option<&Caller>,
    ip: Option<IpAddr>,
    method: &Method,
    path: &str,
    response: &Response,
) {
    let Some(info) = response.extensions().get::<ErrorInfo>() else {
        return;
    };
    let event = match response.status() {
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::FORBIDDEN => "access.denied",
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "input.rejected",
        _ => return,
    };
    // Authentication failures were audited as such.
    if info.code == "unauthorized" {
        return;
    }
    let fallback;
    let caller = match caller {
        Some(c) => c,
        None => {
            fallback = anonymous(ip);
            &fallback
        }
    };
    let mut details = serde_json::json!({
        "code": info.code,
        "message": truncated(&info.message, LOGGED_MESSAGE_BYTES),
        "method": method.as_str(),
        "path": truncated(path, LOGGED_PATH_BYTES),
    });
    if let Some(limit) = info.limit {
        details["limit"] = limit.into();
    }
    // Refusals are aggregated past a burst per key (or, without one, per address, in the
    // anonymous trail): no flood of refused requests rotates the trail away.
    state.service.access().audit_refusal(caller, event, details);
}

/// The client: the peer, or what trusted proxies say in `X-Forwarded-For` (read from the
/// right, skipping trusted hops; a malformed entry stops the walk at the last good one).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpRange]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    let peer = peer?;
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// `req_` and 16 hex digits from the OS's random source.
fn new_request_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = rand_fallback();
    }
    format!("req_{:016x}", u64::from_be_bytes(bytes))
}

/// Unique enough for a request id when the OS's random source fails.
fn rand_fallback() -> [u8; 8] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    n.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let trusted: Vec<IpRange> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        // An untrusted peer's header is ignored.
        assert_eq!(client_ip(peer("5.5.5.5"), &xff, &trusted), peer("5.5.5.5"));
        // Behind trusted hops, the nearest untrusted address; what it claims is not believed.
        assert_eq!(client_ip(peer("10.0.0.1"), &xff, &trusted), peer("1.2.3.4"));
        // No header: the proxy itself.
        assert_eq!(
            client_ip(peer("10.0.0.1"), &HeaderMap::new(), &trusted),
            peer("10.0.0.1")
        );
        // Garbage stops the walk.
        let bad = headers(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
        assert_eq!(
            client_ip(peer("10.0.0.1"), &bad, &trusted),
            peer("10.0.0.1")
        );
        // No proxies configured: never believed.
        assert_eq!(client_ip(peer("10.0.0.1"), &xff, &[]), peer("10.0.0.1"));
    }

    #[test]
    fn loopback_hosts() {
        for good in [
            "localhost",
            "localhost:7070",
            "127.0.0.1:7070",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(good), "{good}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:7070",
            "10.0.0.1:7070",
            "localhost.evil.example",
            "[::2]:1",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn long_text_is_cut_on_a_character() {
        assert_eq!(truncated("short", 10), "short");
        let cut = truncated("ééééé", 5);
        assert!(
            cut.starts_with("éé…") && cut.ends_with("(10 bytes)"),
            "{cut}"
        );
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = headers(&[("cookie", "a=1; sbx_session=tok; b=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn request_ids_look_alike_and_differ() {
        let a = new_request_id();
        assert!(a.starts_with("req_") && a.len() == 20, "{a}");
        assert_ne!(a, new_request_id());
    }
}
