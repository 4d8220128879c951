//! `/v1/sandboxes/{id}/ports…`: a sandbox's TCP services through the daemon (preview URLs).
//! The daemon connects inside the sandbox (lifecycle's `connect_port`): the sandbox gets no
//! network.
//!
//! - `GET /v1/sandboxes/{id}/ports`: the ports something listens on.
//! - any request to `/v1/sandboxes/{id}/ports/{port}/{path}` is passed to that port as HTTP/1.1
//!   for `/{path}` (the path as sent, not decoded, and the query), WebSocket upgrades
//!   included. The caller's credentials (`Authorization`, `X-API-Key`), every cookie and
//!   hop-by-hop headers stay here: a service can set no cookie (below), so any cookie the
//!   browser sends is another site's of the same host, never the service's. The answer comes
//!   back as the service gave it but for `Set-Cookie` (a service may not set cookies on the
//!   daemon's origin), `Clear-Site-Data` and `Strict-Transport-Security` (which act on the
//!   daemon's whole origin or host), and with `Content-Security-Policy: sandbox …`, so that a
//!   page it serves runs in an origin of its own, not the daemon's (its scripts cannot use the
//!   visitor's session).
//!
//! Bounds: a request's headers within `HEADERS_DEADLINE` of being sent (else 504); bodies
//! stream both ways (a request body ≤ the API's body limit); an upgraded connection lasts as
//! long as both ends keep it, counted among the daemon's connections.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use sbx_protocol::{ErrorBody, PortList, PortShare, PortShareRequest};

use crate::body::JsonBody;
use crate::context::Auth;
use crate::{wire, ApiError, AppState};

/// Longest a sandbox's service may take to answer a request's headers.
const HEADERS_DEADLINE: Duration = Duration::from_secs(60);

/// What a proxied page may do in its own (opaque) origin.
const PAGE_POLICY: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads; frame-ancestors 'self'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sandboxes/{id}/ports", get(list))
        .route("/v1/sandboxes/{id}/ports/{port}", any(proxy_root))
        .route("/v1/sandboxes/{id}/ports/{port}/", any(proxy_root))
        .route("/v1/sandboxes/{id}/ports/{port}/{*path}", any(proxy))
        .route(
            "/v1/sandboxes/{id}/shares",
            axum::routing::post(share).delete(revoke),
        )
        .route("/v1/shares/{token}", any(shared_root))
        .route("/v1/shares/{token}/", any(shared_root))
        .route("/v1/shares/{token}/{*path}", any(shared))
}

/// Whether a path is one of a sandbox's ports' (where a request without a key may reach a
/// public port): `/v1/sandboxes/{id}/ports/{port}` and below, not the list itself.
pub(crate) fn is_port_path(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("v1"), Some("sandboxes"), Some(_), Some("ports"), Some(port)) if !port.is_empty()
    )
}

/// The caller a request to a port acts as: the sandbox's owner when the port is public, else
/// its own (none: 401).
fn caller_for_port(
    state: &AppState,
    caller: Option<axum::Extension<sbx_lifecycle::Caller>>,
    id: &str,
    port: u16,
) -> Result<sbx_lifecycle::Caller, ApiError> {
    // A public port is anyone's, with a key of another user's too (the page's preview frame
    // sends its session): it is reached as its owner.
    if let Some(owner) = state.service.port_owner(id, port, false) {
        return Ok(owner);
    }
    match caller {
        Some(axum::Extension(caller)) => Ok(caller),
        None => Err(crate::context::unauthorized(
            "an API key is required: this port is not public (a share link reaches it without one)",
        )),
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/shares", tag = "ports",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    request_body = PortShareRequest,
    responses(
        (status = 201, description = "A link that reaches the port without a key until it expires: `/v1/shares/{token}/…` (signed; it dies with the sandbox)", body = PortShare),
        (status = 400, description = "A port outside 1-65535, a ttl outside 1 s - 7 days", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is destroyed", body = ErrorBody),
    ))]
pub async fn share(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<PortShareRequest>,
) -> Result<(StatusCode, Json<PortShare>), ApiError> {
    let ttl = match &request.ttl {
        Some(ttl) => wire::duration(ttl, "ttl")?,
        None => Duration::from_secs(3600),
    };
    let (sandbox_id, expires_at, epoch) =
        state.service.share_port(&caller, &id, request.port, ttl)?;
    let token = state
        .e2b
        .e2b
        .share_token(&sandbox_id, request.port, expires_at, epoch);
    Ok((
        StatusCode::CREATED,
        Json(PortShare {
            path: format!("/v1/shares/{token}/"),
            sandbox_id,
            port: request.port,
            token,
            expires_at: wire::rfc3339(expires_at),
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/shares", tag = "ports",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    responses(
        (status = 204, description = "Every share link made so far to the sandbox's ports stops working (`401 share_invalid`); links made afterwards work"),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.revoke_shares(&caller, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn shared_root(
    State(state): State<AppState>,
    Path(token): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    through_share(state, token, "", request).await
}

async fn shared(
    State(state): State<AppState>,
    Path((token, _)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    // `/v1/shares/{token}/…`: the rest as sent.
    let path = raw_rest(request.uri().path(), 3).to_owned();
    through_share(state, token, &path, request).await
}

/// A request through a share link: its signature, its expiry, then the port as the owner.
async fn through_share(
    state: AppState,
    token: String,
    path: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "share_invalid",
            "this share link is not valid (or its sandbox is gone)",
        )
    };
    let epoch = sbx_e2b::E2b::share_sandbox(&token)
        .and_then(|sandbox| state.service.share_epoch(sandbox))
        .ok_or_else(invalid)?;
    let (id, port, expires_at) = state.e2b.e2b.share_of(&token, epoch).ok_or_else(invalid)?;
    if expires_at <= sbx_lifecycle::now_ms() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "share_expired",
            "this share link has expired",
        ));
    }
    let owner = state
        .service
        .port_owner(&id, port, true)
        .ok_or_else(invalid)?;
    forward(state, owner, id, port, path, request).await
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports", tag = "ports",
    params(("id" = String, Path, description = "Sandbox id, or the name of a live sandbox")),
    responses(
        (status = 200, description = "The TCP ports something listens on inside the sandbox; each is reachable at `/v1/sandboxes/{id}/ports/{port}/`", body = PortList),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 501, description = "The sandbox's backend cannot reach its ports", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<PortList>, ApiError> {
    let ports = state.service.listening_ports(&caller, &id).await?;
    Ok(Json(PortList { ports }))
}

async fn proxy_root(
    State(state): State<AppState>,
    caller: Option<axum::Extension<sbx_lifecycle::Caller>>,
    Path((id, port)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let port = port_number(&port)?;
    let caller = caller_for_port(&state, caller, &id, port)?;
    forward(state, caller, id, port, "", request).await
}

async fn proxy(
    State(state): State<AppState>,
    caller: Option<axum::Extension<sbx_lifecycle::Caller>>,
    Path((id, port, _)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let port = port_number(&port)?;
    let caller = caller_for_port(&state, caller, &id, port)?;
    // `/v1/sandboxes/{id}/ports/{port}/…`: the rest as sent (decoding it would turn `%3F`
    // into the start of a query, and `%20` into a path no URI can hold).
    let path = raw_rest(request.uri().path(), 5).to_owned();
    forward(state, caller, id, port, &path, request).await
}

/// What follows the first `segments` segments of a path (and the `/` after them), undecoded.
fn raw_rest(path: &str, segments: usize) -> &str {
    let mut rest = path.trim_start_matches('/');
    for _ in 0..segments {
        rest = rest.split_once('/').map_or("", |(_, after)| after);
    }
    rest
}

fn port_number(port: &str) -> Result<u16, ApiError> {
    port.parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::invalid(format!("port {port:?} must be from 1 to 65535")))
}

/// A request addressed by its host to a port of a sandbox (`{port}-{id}.{domain}`, E2B's
/// `get_host`) that is neither envd's nor the code interpreter's: the whole path goes to the
/// port.
pub async fn forward_host(
    state: AppState,
    caller: sbx_lifecycle::Caller,
    id: String,
    port: u16,
    request: Request,
) -> Response {
    let path = request.uri().path().trim_start_matches('/').to_owned();
    if port == 0 {
        return ApiError::invalid("the port must be from 1 to 65535").into_response();
    }
    forward(state, caller, id, port, &path, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), which describe one connection, not the request.
const HOP_BY_HOP: [&str; 7] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

async fn forward(
    state: AppState,
    caller: sbx_lifecycle::Caller,
    id: String,
    port: u16,
    path: &str,
    mut request: Request,
) -> Result<Response, ApiError> {
    let stream = state.service.connect_port(&caller, &id, port).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| upstream(port, e))?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });

    let upgrade = is_upgrade(request.headers());
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    *request.uri_mut() = Uri::try_from(format!("/{path}{query}"))
        .map_err(|_| ApiError::invalid("the path cannot be passed on"))?;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    headers.remove(header::AUTHORIZATION);
    headers.remove(HeaderName::from_static("x-api-key"));
    // The service set none of them (`Set-Cookie` never reaches the browser): a cookie here is
    // the daemon's session or another site's on the same host.
    headers.remove(header::COOKIE);
    // The service sees itself addressed as on its own loopback (dev servers check the host).
    if let Ok(host) = HeaderValue::from_str(&format!("localhost:{port}")) {
        headers.insert(header::HOST, host);
    }
    *request.version_mut() = axum::http::Version::HTTP_11;

    let mut response = tokio::time::timeout(HEADERS_DEADLINE, sender.send_request(request))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("the service on port {port} did not answer within {HEADERS_DEADLINE:?}"),
            )
        })?
        .map_err(|e| upstream(port, e))?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let service_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(client), Ok(service)) = (client_upgrade.await, service_upgrade.await) {
                    let mut client = TokioIo::new(client);
                    let mut service = TokioIo::new(service);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut service).await;
                }
            });
        }
    }
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    strip_hop_by_hop(headers, upgraded);
    // Headers that act on the daemon's whole origin or host, not the page: a visitor of a
    // preview must not be logged out of the daemon's page, nor its host pinned to HTTPS.
    for name in ["set-cookie", "clear-site-data", "strict-transport-security"] {
        headers.remove(name);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    // The daemon's own page may frame a preview (beside its terminal); no other site may.
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    Ok(response.map(Body::new).into_response())
}

fn upstream(port: u16, e: hyper::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!("the service on port {port} broke off the exchange: {e}"),
    )
}

/// A WebSocket (or other) upgrade: `Connection: upgrade` with an `Upgrade` header.
fn is_upgrade(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, and those `Connection` names; an upgrade keeps `Connection:
/// upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut axum::http::HeaderMap, upgrade: bool) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty() && token != "upgrade")
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_here() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        assert!(!headers.contains_key("x-secret"));
        assert!(!headers.contains_key("keep-alive"));
        assert!(!headers.contains_key(header::CONNECTION));
        assert!(headers.contains_key("x-kept"));

        let mut upgrade = axum::http::HeaderMap::new();
        upgrade.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        upgrade.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&upgrade));
        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(upgrade[header::CONNECTION], "upgrade");
        assert_eq!(upgrade[header::UPGRADE], "websocket");
    }

    #[test]
    fn the_rest_of_a_path_is_passed_on_as_sent() {
        assert_eq!(
            raw_rest("/v1/sandboxes/s/ports/80/a%3Fb/c%20d", 5),
            "a%3Fb/c%20d"
        );
        assert_eq!(raw_rest("/v1/sandboxes/s/ports/80/", 5), "");
        assert_eq!(raw_rest("/v1/sandboxes/s/ports/80", 5), "");
        assert_eq!(raw_rest("/v1/shares/t/x//y", 3), "x//y");
    }
}
