//! Binary-safe text encoding of process input and output.
//!
//! JSON strings cannot carry arbitrary bytes, so every data field travels with an encoding:
//! `utf-8` when the bytes are valid UTF-8 (the common case, readable as is), `base64`
//! (standard alphabet, padded) otherwise. A client decodes with [`decode_data`].

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a data string encodes its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub enum Encoding {
    /// The string is the bytes themselves (they were valid UTF-8).
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// The string is the standard, padded base64 of the bytes.
    #[serde(rename = "base64")]
    Base64,
}

/// Encodes bytes as UTF-8 text when they are valid UTF-8, as base64 otherwise.
pub fn encode_data(bytes: &[u8]) -> (String, Encoding) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), Encoding::Utf8),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Encoding::Base64,
        ),
    }
}

/// Decodes a data string sent with `encoding`.
pub fn decode_data(data: &str, encoding: Encoding) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Utf8 => Ok(data.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("invalid base64: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text_and_binary() {
        for bytes in [&b"hello\n"[..], &[0xff, 0x00, 0xfe][..], &[][..]] {
            let (text, encoding) = encode_data(bytes);
            assert_eq!(decode_data(&text, encoding).unwrap(), bytes);
        }
        assert_eq!(encode_data(b"ok").1, Encoding::Utf8);
        assert_eq!(encode_data(&[0xff]).1, Encoding::Base64);
    }
}
