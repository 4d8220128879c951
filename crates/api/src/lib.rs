//! The HTTP API (`/v1`, `/healthz`).
//!
//! Owns: the axum router (one file per resource under `routes/`), each request's context —
//! request id, client address, authentication ([`context`]) — request decoding
//! ([`body::JsonBody`]), the OpenAPI document, the one mapping from lifecycle errors to HTTP
//! ([`error`]), and the HTTP server with its connection limits ([`server`]).
//! Must never: hold state rules. A handler decodes, calls lifecycle once, encodes.
//!
//! Invariant: every route but `/healthz`, the web page's assets and login/logout runs with a
//! [`sbx_lifecycle::Caller`] established by the context middleware; handlers get it through
//! the [`context::Auth`] extractor and pass it to lifecycle, which scopes what it may see.

mod body;
mod context;
mod error;
mod openapi;
mod routes;
pub mod server;
pub mod spool;
mod wire;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use sbx_lifecycle::Service;

pub use error::ApiError;
pub use openapi::document as openapi_document;

/// Largest request body of most routes.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest request body of the exec routes (stdin travels in the body, base64 at worst), and
/// of a project's files given as JSON.
pub const MAX_EXEC_BODY_BYTES: usize = 32 << 20;

/// Request bodies the daemon holds at once, all clients together (see [`body`]).
pub const BODY_BUDGET_BYTES: u64 = 256 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub settings: Arc<Settings>,
    pub terminal_slots: Arc<routes::pty::TerminalSlots>,
    pub body_budget: body::BodyBudget,
    pub e2b: E2bRoutes,
}

/// The E2B-compatible surfaces (see `sbx-e2b`), their routers built once.
#[derive(Clone)]
pub struct E2bRoutes {
    pub e2b: sbx_e2b::E2b,
    pub control: Router,
    pub envd: Router,
    pub interpreter: Router,
}

/// The HTTP surface's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Web origins allowed besides the daemon's own (CORS and terminal `Origin` checks).
    pub allowed_origins: Vec<String>,
    pub terminals: sbx_config::Terminals,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<sbx_config::IpRange>,
    /// Every request acts as the admin, without a key (`--insecure-no-auth`).
    pub no_auth: bool,
    /// Longest a client may take to send a request body.
    pub body_timeout: std::time::Duration,
    /// Where collected execs keep their output until it is sent, and how much.
    pub spool: spool::SpoolSettings,
    /// The largest file one upload may write.
    pub max_upload_bytes: u64,
}

impl AppState {
    pub fn new(service: Service, settings: Settings, e2b: sbx_e2b::E2b) -> AppState {
        let settings_body_timeout = settings.body_timeout;
        AppState {
            service,
            settings: Arc::new(settings),
            terminal_slots: Arc::default(),
            body_budget: body::BodyBudget::new(BODY_BUDGET_BYTES, settings_body_timeout),
            e2b: E2bRoutes {
                control: e2b.control_router(),
                envd: e2b.envd_router(),
                interpreter: e2b.interpreter_router(),
                e2b,
            },
        }
    }
}

/// Whether a browser page from `origin` may use the API: its own origin (the `Host` it
/// called), or one on the allow-list.
pub fn origin_allowed(origin: &str, host: &str, allowed: &[String]) -> bool {
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    authority == Some(host) || allowed.iter().any(|a| a.trim_end_matches('/') == origin)
}

/// The complete router of the daemon.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::openapi::router())
        .merge(routes::sandboxes::router())
        .merge(routes::exec::router())
        .merge(routes::files::router())
        .merge(routes::snapshots::router())
        .merge(routes::projects::router())
        .merge(routes::users::router())
        .merge(routes::templates::router())
        .merge(routes::events::router())
        .merge(routes::maintenance::router())
        .merge(routes::status::router())
        .merge(routes::pty::router())
        .merge(routes::ports::router())
        .merge(routes::profiles::router())
        .merge(routes::auth::router())
        .merge(routes::audit::router())
        .merge(routes::web::router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // The E2B-compatible surfaces: a request addressed to a sandbox, or on E2B's control
        // plane, goes to their routers (after the context, which authenticated it).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::dispatch_e2b,
        ))
        // A slow body is cut off (the timeout wraps the body; axum wants its own body type).
        .layer(tower_http::map_request_body::MapRequestBodyLayer::new(
            axum::body::Body::new,
        ))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.settings.body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::middleware,
        ))
        .layer(cors(&state.settings.allowed_origins))
        .with_state(state)
}

/// CORS for the allowed origins only; with none, browsers may only call from the daemon's own
/// origin (which needs no CORS).
fn cors(allowed: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderValue, Method};
    let origins: Vec<HeaderValue> = allowed
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-api-key"),
        ])
}
