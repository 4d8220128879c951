//! Decoding JSON request bodies with errors in the API's shape.
//!
//! Lenient where it costs nothing (no `Content-Type`, or an empty body for a request whose
//! fields are all optional, as `curl -X POST` sends), strict where it matters (unknown fields,
//! wrong types, oversized bodies — each answered with the field and what was wrong).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::ApiError;

pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let content_type = content_type
                .to_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let essence = content_type.split(';').next().unwrap_or_default().trim();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("expected Content-Type application/json, got {essence:?}"),
                ));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!(
                            "request body exceeds this route's limit ({} bytes; {} for exec)",
                            crate::MAX_BODY_BYTES,
                            crate::MAX_EXEC_BODY_BYTES
                        ),
                    )
                } else {
                    ApiError::invalid(format!(
                        "cannot read the request body: {}",
                        rejection.body_text()
                    ))
                }
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        decode(text).map(JsonBody)
    }
}

/// Parses JSON, naming the offending field in the error (`resources.memory_mb: invalid type…`).
fn decode<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    // Every request body is an object (serde would also read a struct from an array).
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid(
            "invalid request body: expected a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            json_error(&inner, format!("invalid request body: {inner}"))
        } else {
            json_error(&inner, format!("invalid request body: {path}: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| json_error(&e, format!("invalid request body: {e}")))?;
    Ok(value)
}

fn json_error(error: &serde_json::Error, message: String) -> ApiError {
    let code = if error.is_syntax() || error.is_eof() {
        "invalid_json"
    } else {
        "invalid_request"
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let error = decode::<sbx_protocol::CreateSandboxRequest>(br#"{"resources":{"pids":"x"}}"#)
            .err()
            .unwrap();
        assert!(
            error.message.contains("resources.pids: invalid type"),
            "{}",
            error.message
        );
        let error = decode::<sbx_protocol::CreateSandboxRequest>(b"{} x")
            .err()
            .unwrap();
        assert_eq!(error.code, "invalid_json");
        let error = decode::<sbx_protocol::CreateSandboxRequest>(b"[]")
            .err()
            .unwrap();
        assert_eq!(error.code, "invalid_request");
    }
}
