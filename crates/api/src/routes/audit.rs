//! `GET /v1/audit`: the audit log, filtered (admins only).

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use sbx_lifecycle::AuditQuery;
use sbx_protocol::{AuditList, ErrorBody};
use serde::Deserialize;

use crate::context::Auth;
use crate::{wire, ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(audit))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Entries at or after this time: RFC 3339 (`2026-01-02T03:04:05Z`) or an age (`15m`).
    since: Option<String>,
    /// An event name (`exec`), or a prefix ending in `.` (`sandbox.`).
    event: Option<String>,
    /// The acting user.
    user: Option<String>,
    /// The sandbox's id.
    sandbox: Option<String>,
    /// The key's id.
    key: Option<String>,
    /// The newest this many (default 100, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "auth",
    params(AuditParams),
    responses(
        (status = 200, description = "Matching audit entries, oldest first", body = AuditList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
    ))]
pub async fn audit(
    State(state): State<AppState>,
    Auth(caller): Auth,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let since = params.since.as_deref().map(parse_since).transpose()?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=sbx_lifecycle::MAX_AUDIT_QUERY).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit: {limit} is not between 1 and {}",
            sbx_lifecycle::MAX_AUDIT_QUERY
        )));
    }
    let query = AuditQuery {
        since,
        event: params.event,
        user: params.user,
        sandbox_id: params.sandbox,
        key_id: params.key,
        limit,
    };
    let service = state.service.clone();
    let entries =
        tokio::task::spawn_blocking(move || service.access().audit_query(&caller, &query))
            .await
            .map_err(|e| ApiError::from(sbx_lifecycle::Error::internal(e.to_string())))??;
    let entries = entries.into_iter().map(wire::audit_entry).collect();
    Ok(Json(AuditList { entries }))
}

/// Unix ms from an RFC 3339 time or an age before now.
fn parse_since(text: &str) -> Result<i64, ApiError> {
    let now = std::time::SystemTime::now();
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(at) => at,
        Err(_) => {
            let age = sbx_config::duration::parse(text).map_err(|e| {
                ApiError::invalid(format!(
                    "since: {text:?} is neither an RFC 3339 time nor an age like 15m ({e})"
                ))
            })?;
            now.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH)
        }
    };
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}
