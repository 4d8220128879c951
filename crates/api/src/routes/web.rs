//! The web page (`/`, `/app.js`, `/vendor/…`), from the assets embedded by `sbx-web`, with the
//! headers a page that runs code in strangers' browsers should carry: a strict
//! Content-Security-Policy (scripts and connections to this origin only), no framing, no
//! sniffing, no referrer.

use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// xterm.js sets inline styles (and a `<style>` element) for its grid, hence `'unsafe-inline'`
/// for styles only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for path in sbx_web::paths() {
        router = router.route(path, get(asset));
    }
    router
}

async fn asset(uri: Uri) -> Response {
    let Some(asset) = sbx_web::asset(uri.path()) else {
        return crate::error::not_found(uri).await.into_response();
    };
    let cache = if uri.path().starts_with("/vendor/") {
        "public, max-age=3600"
    } else {
        "no-cache"
    };
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
