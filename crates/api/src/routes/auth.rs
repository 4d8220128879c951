//! Who am I, API keys, and the web page's login.
//!
//! `POST /v1/login` trades a key for a session cookie (`HttpOnly`, `SameSite=Strict`, `Secure`
//! behind HTTPS), so the page's JavaScript never holds the key and no URL carries it.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use sbx_protocol::{
    CreateKeyRequest, CreatedKey, ErrorBody, Identity, KeyInfo, KeyList, LoginRequest,
};

use crate::body::JsonBody;
use crate::context::{self, Auth, ClientIp, Https, SESSION_COOKIE};
use crate::{wire, ApiError, AppState};

/// Largest body of `POST /v1/login`.
const LOGIN_BODY_BYTES: usize = 4096;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/whoami", get(whoami))
        // A login body is a key: no more than this is ever read for anyone without one.
        .route(
            "/v1/login",
            post(login).layer(axum::extract::DefaultBodyLimit::max(LOGIN_BODY_BYTES)),
        )
        .route("/v1/logout", post(logout))
        .route("/v1/keys", get(list).post(create))
        .route("/v1/keys/{id}", delete(revoke))
}

fn identity(caller: &sbx_lifecycle::Caller) -> Identity {
    Identity {
        user: caller.user.clone(),
        admin: caller.admin,
        key_id: caller.key_id.clone(),
    }
}

#[utoipa::path(get, path = "/v1/whoami", tag = "auth",
    responses(
        (status = 200, description = "The user and key this request acts as", body = Identity),
        (status = 401, description = "No valid key", body = ErrorBody),
    ))]
pub async fn whoami(Auth(caller): Auth) -> Json<Identity> {
    Json(identity(&caller))
}

#[utoipa::path(post, path = "/v1/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in: the `sbx_session` cookie is set", body = Identity),
        (status = 401, description = "The key is invalid or revoked", body = ErrorBody),
        (status = 403, description = "The request came from a page of another origin", body = ErrorBody),
        (status = 429, description = "Too many login attempts from this address", body = ErrorBody),
        (status = 503, description = "The daemon holds as many sessions as it may", body = ErrorBody),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Extension(Https(https)): Extension<Https>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !crate::origin_allowed(origin, host, &state.settings.allowed_origins) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!("origin {origin:?} may not log in here"),
            ));
        }
    }
    state.service.access().admit_login(ip)?;
    let (token, mut caller) = state.service.access().login(&request.key).map_err(|refusal| {
        let failure = match refusal {
            sbx_lifecycle::LoginRefusal::Auth(failure) => failure,
            sbx_lifecycle::LoginRefusal::Full => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "at_capacity",
                    "the daemon holds as many web sessions as it may; try again later",
                )
                .retry_after(std::time::Duration::from_secs(60))
            }
        };
        let caller = sbx_lifecycle::Caller {
            user: "anonymous".into(),
            admin: false,
            key_id: None,
            ip,
            request_id: context::request_id(),
            session: None,
        };
        state.service.access().audit_anonymous(
            &caller,
            "auth.failed",
            serde_json::json!({ "reason": failure.as_str(), "method": "POST", "path": "/v1/login" }),
        );
        context::unauthorized("the API key is invalid or revoked")
    })?;
    caller.ip = ip;
    caller.request_id = context::request_id();
    state
        .service
        .access()
        .audit(&caller, "auth.login", serde_json::json!({}));
    let max_age = sbx_lifecycle::SESSION_LIFETIME_MS / 1000;
    let secure = if https { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    let mut response = Json(identity(&caller)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a session cookie is a valid header"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(post, path = "/v1/logout", tag = "auth",
    responses((status = 204, description = "The session (if any) is over and its cookie cleared")))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = context::cookie(&headers, SESSION_COOKIE) {
        state.service.access().logout(token);
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie is a valid header"),
    );
    response
}

#[utoipa::path(get, path = "/v1/keys", tag = "auth",
    responses(
        (status = 200, description = "Keys (never their secrets): every key for admins, the user's own otherwise", body = KeyList),
        (status = 401, description = "No valid key", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> Result<Json<KeyList>, ApiError> {
    Ok(Json(KeyList {
        keys: state
            .service
            .access()
            .keys(&caller)?
            .into_iter()
            .map(wire::key_info)
            .collect(),
    }))
}

#[utoipa::path(post, path = "/v1/keys", tag = "auth",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The new key; its secret is shown only here", body = CreatedKey),
        (status = 400, description = "Invalid user name", body = ErrorBody),
        (status = 403, description = "Not an admin key, or authentication is off", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    JsonBody(request): JsonBody<CreateKeyRequest>,
) -> Result<Response, ApiError> {
    // A key made while anyone on this host may act as the admin would outlive that mode: it
    // still works once authentication is back on.
    if state.settings.no_auth {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "authentication_off",
            "keys cannot be created while authentication is off (--insecure-no-auth)",
        ));
    }
    let created = state
        .service
        .access()
        .create_key(&caller, &request.user, request.admin)?;
    let mut response = (StatusCode::CREATED, Json(wire::created_key(created))).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "auth",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key is revoked (also when it already was); it is refused from now on", body = KeyInfo),
        (status = 404, description = "No such key (or not one of the user's own)", body = ErrorBody),
        (status = 409, description = "It is the last admin key", body = ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(wire::key_info(
        state.service.access().revoke_key(&caller, &id)?,
    )))
}
