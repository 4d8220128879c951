//! The E2B-compatible API: what E2B's unmodified SDKs (Python and JS) call, served by the sbx
//! daemon on its own port (see docs/e2b.md).
//!
//! Owns three surfaces, each a router the API layer dispatches to:
//! - the control plane ([`control`]): `/sandboxes`, `/v2/sandboxes` — create, connect, list,
//!   info, kill, timeout, pause, metrics — over lifecycle's own operations, with E2B's
//!   statuses and `{code, message}` errors;
//! - the in-sandbox API, "envd" ([`process`], [`filesystem`], [`files`]): the Connect services
//!   `process.Process` and `filesystem.Filesystem` and the `/files` and `/health` routes, for a
//!   request addressed to a sandbox ([`Target`]: the `E2b-Sandbox-Id` and `E2b-Sandbox-Port`
//!   headers, or a `{port}-{id}.{domain}` host);
//!
//! - the code interpreter ([`interpreter`]) on port 49999: `/execute`, `/contexts`.
//!
//! Who a request acts for is the API layer's [`Caller`] (an sbx key, or — for a request
//! addressed to a sandbox — that sandbox's access token, see [`tokens`]): every operation goes
//! through lifecycle, which checks ownership, quotas and states, and audits. What envd keeps
//! between calls (processes started through it and their exits, polled watchers, the code
//! interpreter's contexts) lives here, in memory, bounded per sandbox, and ends with the sandbox.
//!
//! Must never: touch the store or a backend (lifecycle does); hold a sandbox's bytes or output
//! beyond one chunk per subscriber.

#![allow(refining_impl_trait_internal, refining_impl_trait_reachable)]
// Handlers answer their refusals as ready responses; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

pub mod control;
mod errors;
pub mod files;
pub mod filesystem;
pub mod interpreter;
pub mod process;
pub mod tokens;

use std::sync::Arc;

use axum::http::HeaderMap;
use sbx_lifecycle::{Caller, Service};

pub use errors::rewrite_control_error;

/// The port of envd inside an E2B sandbox; SDKs name it in `E2b-Sandbox-Port`.
pub const ENVD_PORT: u16 = 49983;
/// The port of the code interpreter.
pub const INTERPRETER_PORT: u16 = 49999;
/// The envd version sbx answers with: the highest whose features (gated by the SDKs on this
/// number) sbx serves — octet-stream and gzip uploads, `CloseStdin`, the default user. File
/// metadata (0.6.2) and watch events with entries (0.6.3) are not served.
pub const ENVD_VERSION: &str = "0.5.7";

/// The E2B-compatible surfaces and what envd keeps between calls.
#[derive(Clone)]
pub struct E2b {
    inner: Arc<Inner>,
}

struct Inner {
    service: Service,
    config: sbx_config::E2b,
    tokens: tokens::Tokens,
    processes: process::Registry,
    watchers: filesystem::Watchers,
    interpreters: interpreter::Contexts,
    /// The largest file one upload may write (`files.max_upload_bytes`).
    max_upload_bytes: u64,
}

/// A request addressed to a port of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub sandbox: String,
    pub port: u16,
}

impl E2b {
    /// `secret` keys the sandboxes' access tokens (it must outlive daemon restarts, so that
    /// clients keep their tokens).
    pub fn new(
        service: Service,
        config: sbx_config::E2b,
        secret: [u8; 32],
        max_upload_bytes: u64,
    ) -> E2b {
        let e2b = E2b {
            inner: Arc::new(Inner {
                service,
                config,
                tokens: tokens::Tokens::new(secret),
                processes: process::Registry::default(),
                watchers: filesystem::Watchers::default(),
                interpreters: interpreter::Contexts::default(),
                max_upload_bytes,
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(forget_ended(Arc::downgrade(&e2b.inner)));
        }
        e2b
    }

    pub(crate) fn service(&self) -> &Service {
        &self.inner.service
    }

    /// A share link's token for `port` of `sandbox` until `expires` (Unix ms), signed with
    /// the daemon's secret and the sandbox's share generation `epoch`.
    pub fn share_token(&self, sandbox: &str, port: u16, expires: i64, epoch: i64) -> String {
        self.inner.tokens.share_token(sandbox, port, expires, epoch)
    }

    /// The sandbox a share link's token names (its signature not checked yet).
    pub fn share_sandbox(token: &str) -> Option<&str> {
        crate::tokens::Tokens::share_sandbox(token)
    }

    /// The sandbox, port and expiry (Unix ms) of a share link's token whose signature holds
    /// for the sandbox's share generation `epoch`.
    pub fn share_of(&self, token: &str, epoch: i64) -> Option<(String, u16, i64)> {
        self.inner.tokens.share_of(token, epoch)
    }

    /// The domain of host-based routing, when one is configured.
    pub fn domain(&self) -> Option<&str> {
        self.inner.config.domain.as_deref()
    }

    /// The sandbox port a request is addressed to: the `E2b-Sandbox-Id` header (with
    /// `E2b-Sandbox-Port`, envd's by default), or a `{port}-{id}.{domain}` host under the
    /// configured domain.
    pub fn target(&self, headers: &HeaderMap) -> Option<Target> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(sandbox) = text("e2b-sandbox-id") {
            let port = match text("e2b-sandbox-port") {
                None => ENVD_PORT,
                Some(port) => port.trim().parse().unwrap_or(0),
            };
            return Some(Target {
                sandbox: sandbox.trim().to_owned(),
                port,
            });
        }
        let domain = self.inner.config.domain.as_deref()?;
        let host = text("host")?;
        let host = host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        });
        let label = host
            .to_ascii_lowercase()
            .strip_suffix(domain)?
            .strip_suffix('.')?
            .to_owned();
        // `api.{domain}` is E2B's control plane (where the SDKs given only `E2B_DOMAIN` send
        // it): sbx's own routes, as any host outside the domain.
        if label == "api" {
            return None;
        }
        // Every other name under the domain is a sandbox's port's: one that names none (no
        // port, a port past 65535, a deeper name) is port 0 of no sandbox, refused as such,
        // never the API or the page served on the preview domain.
        let named = label
            .split_once('-')
            .filter(|(_, sandbox)| !sandbox.is_empty() && !sandbox.contains('.'))
            .and_then(|(port, sandbox)| Some((port.parse::<u16>().ok()?, sandbox)));
        Some(match named {
            Some((port, sandbox)) => Target {
                sandbox: sandbox.to_owned(),
                port,
            },
            None => Target {
                sandbox: String::new(),
                port: 0,
            },
        })
    }

    /// Whether `path` is one of the control plane's.
    pub fn is_control_path(path: &str) -> bool {
        control::is_control_path(path)
    }

    /// The caller a request addressed to `target` stands for by the sandbox's own credentials;
    /// `None` when it carries none of them, or they are not this sandbox's. envd takes the
    /// access token (`X-Access-Token`), or on `/files` a signed URL for that method's
    /// operation; the code interpreter takes the access token, or on `/contexts` the traffic
    /// token (the only credential E2B's SDKs send there).
    pub fn identify(
        &self,
        target: &Target,
        method: &axum::http::Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Caller> {
        let sandbox = self
            .inner
            .service
            .get(&Caller::system(), &target.sandbox)
            .ok()?;
        // A name resolves too, but a token is for an id only.
        if sandbox.id != target.sandbox {
            return None;
        }
        let tokens = &self.inner.tokens;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let access =
            header("x-access-token").is_some_and(|t| tokens.is_access_token(&sandbox.id, t));
        let proven = match target.port {
            ENVD_PORT => {
                access
                    || (path == "/files" && {
                        let operation = match *method {
                            axum::http::Method::GET | axum::http::Method::HEAD => "read",
                            axum::http::Method::POST => "write",
                            _ => return None,
                        };
                        tokens.signed(&sandbox.id, query, operation)
                    })
            }
            INTERPRETER_PORT => {
                access
                    || ((path == "/contexts" || path.starts_with("/contexts/"))
                        && header("e2b-traffic-access-token")
                            .is_some_and(|t| tokens.is_traffic_token(&sandbox.id, t)))
            }
            _ => false,
        };
        proven.then(|| Caller {
            user: sandbox
                .owner
                .clone()
                .unwrap_or_else(|| sbx_lifecycle::access::ADMIN_USER.to_owned()),
            admin: false,
            key_id: None,
            ip: None,
            request_id: None,
            session: None,
        })
    }

    /// `target` as its sandbox's id (a name resolved for the caller, once: what envd keeps is
    /// keyed by id). A request to envd or the code interpreter of a sandbox that is gone for
    /// the caller (ended — killed, expired, failed — or never the caller's) gets what E2B's
    /// proxy answers instead: a 502 saying the sandbox "was not found", which the SDKs raise
    /// as the sandbox not running (a timeout). `/health` answers for itself, and a sandbox's
    /// other ports are the proxy's.
    pub fn resolve(
        &self,
        caller: &Caller,
        target: &Target,
        path: &str,
    ) -> Result<Target, axum::response::Response> {
        use sbx_lifecycle::State;
        let found = self.inner.service.get(caller, &target.sandbox);
        let envd =
            path != "/health" && (target.port == ENVD_PORT || target.port == INTERPRETER_PORT);
        match found {
            Ok(sandbox)
                if !envd
                    || matches!(
                        sandbox.state,
                        State::Running | State::Paused | State::Hibernated
                    ) =>
            {
                Ok(Target {
                    sandbox: sandbox.id,
                    port: target.port,
                })
            }
            Err(_) if !envd => Ok(target.clone()),
            _ => {
                let message = format!("the sandbox {} was not found", target.sandbox);
                let status = axum::http::StatusCode::BAD_GATEWAY;
                Err(
                    if path.starts_with("/process.") || path.starts_with("/filesystem.") {
                        // A Connect client reads the code from the body (the status alone says
                        // `unavailable` too).
                        use axum::response::IntoResponse;
                        let body = serde_json::json!({ "code": "unavailable", "message": message });
                        (status, axum::Json(body)).into_response()
                    } else {
                        errors::e2b_error(status, message)
                    },
                )
            }
        }
    }

    /// The control plane's routes.
    pub fn control_router(&self) -> axum::Router {
        control::router(self.clone())
    }

    /// The routes of requests addressed to envd (Connect services, `/files`, `/health`).
    pub fn envd_router(&self) -> axum::Router {
        files::envd_router(self.clone())
    }

    /// Forgets what envd kept for a sandbox that was destroyed.
    pub(crate) fn forget(&self, sandbox: &str) {
        self.inner.processes.forget(sandbox);
        self.inner.watchers.forget(sandbox);
        self.inner.interpreters.forget(sandbox);
    }

    /// The routes of requests addressed to the code interpreter's port.
    pub fn interpreter_router(&self) -> axum::Router {
        interpreter::router(self.clone())
    }
}

/// Forgets what envd kept for each sandbox that ends, however it ends (E2B's kill, sbx's own
/// API, the reaper, a failure), until the service closes. A missed event (the broadcast
/// lagged) is made up by a sweep of every sandbox envd keeps something for.
async fn forget_ended(inner: std::sync::Weak<Inner>) {
    use tokio::sync::broadcast::error::RecvError;
    let (mut events, mut closing) = match inner.upgrade() {
        Some(inner) => (inner.service.subscribe(), inner.service.closing()),
        None => return,
    };
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = closing.wait_for(|closed| *closed) => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        let e2b = E2b { inner };
        match event {
            Ok(event) => {
                if !matches!(
                    event.to_state,
                    sbx_lifecycle::State::Running
                        | sbx_lifecycle::State::Paused
                        | sbx_lifecycle::State::Hibernated
                        | sbx_lifecycle::State::Creating
                ) {
                    e2b.forget(&event.sandbox_id);
                }
            }
            Err(RecvError::Lagged(_)) => {
                let mut kept = e2b.inner.processes.sandboxes();
                kept.extend(e2b.inner.watchers.sandboxes());
                kept.extend(e2b.inner.interpreters.sandboxes());
                for sandbox in kept {
                    let live = e2b
                        .service()
                        .get(&Caller::system(), &sandbox)
                        .is_ok_and(|s| {
                            matches!(
                                s.state,
                                sbx_lifecycle::State::Running
                                    | sbx_lifecycle::State::Paused
                                    | sbx_lifecycle::State::Hibernated
                            )
                        });
                    if !live {
                        e2b.forget(&sandbox);
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// The caller the API layer established for this request.
pub(crate) fn caller_of(extensions: &axum::http::Extensions) -> Option<Caller> {
    extensions.get::<Caller>().cloned()
}

/// The sandbox a request is addressed to, and the caller the API layer established for it.
pub(crate) fn addressed(extensions: &axum::http::Extensions) -> Option<(Target, Caller)> {
    Some((extensions.get::<Target>()?.clone(), caller_of(extensions)?))
}
