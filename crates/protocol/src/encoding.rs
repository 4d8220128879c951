//! Binary-safe text encoding of process input and output.
//!
//! JSON strings cannot carry arbitrary bytes, so every data field travels with an encoding:
//! `utf-8` when the bytes are valid UTF-8 that JSON carries in at most twice their size (the
//! common case, readable as is), `base64` (standard alphabet, padded) otherwise. JSON escapes
//! most control characters in six bytes (`\u0000`): output full of them would cost the daemon
//! up to 6× its size in memory and CPU, where base64 costs 4/3. So whatever a command writes,
//! its encoded form is at most twice its size (4/3 for base64, plus padding). A client decodes
//! with [`decode_data`].

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

/// Encodes bytes as UTF-8 text when they are valid UTF-8 that JSON carries cheaply, as
/// base64 otherwise (see the module's documentation).
pub fn encode_data(bytes: &[u8]) -> (String, Encoding) {
    let mut shape = DataShape::default();
    shape.feed(bytes);
    match (shape.encoding(), std::str::from_utf8(bytes)) {
        (Encoding::Utf8, Ok(text)) => (text.to_owned(), Encoding::Utf8),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Encoding::Base64,
        ),
    }
}

/// Standard, padded base64 of `bytes`, appended to `out`.
pub fn encode_base64_into(bytes: &[u8], out: &mut String) {
    base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
}

/// Which encoding [`encode_data`] picks for data seen a chunk at a time (chunks may split a
/// UTF-8 sequence anywhere), without keeping the data.
#[derive(Debug, Clone, Default)]
pub struct DataShape {
    /// Bytes seen.
    len: u64,
    /// Length of the bytes as the inside of a JSON string.
    escaped_len: u64,
    /// Not UTF-8 (so far).
    invalid: bool,
    /// The start of a UTF-8 sequence the last chunk ended in the middle of.
    pending: Vec<u8>,
}

impl DataShape {
    pub fn feed(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.escaped_len += chunk.iter().map(|&b| escaped_len(b)).sum::<u64>();
        if self.invalid {
            return;
        }
        let mut rest = chunk;
        if !self.pending.is_empty() {
            // Complete the split sequence with as many bytes as it still needs.
            let need = utf8_width(self.pending[0]).saturating_sub(self.pending.len());
            let take = need.min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() < utf8_width(self.pending[0]) {
                // Still short, and `rest` is empty: wait for more.
                self.invalid = self.pending.iter().skip(1).any(|&b| b & 0xc0 != 0x80);
                return;
            }
            if std::str::from_utf8(&self.pending).is_err() {
                self.invalid = true;
                return;
            }
            self.pending.clear();
        }
        match std::str::from_utf8(rest) {
            Ok(_) => {}
            Err(error) if error.error_len().is_none() => {
                // Ends inside a sequence that may yet complete.
                self.pending.extend_from_slice(&rest[error.valid_up_to()..]);
            }
            Err(_) => self.invalid = true,
        }
    }

    /// The encoding of everything fed so far.
    pub fn encoding(&self) -> Encoding {
        if self.invalid || !self.pending.is_empty() || self.escaped_len > 2 * self.len {
            Encoding::Base64
        } else {
            Encoding::Utf8
        }
    }
}

/// How many bytes a UTF-8 sequence starting with `lead` has (1 for a byte that cannot lead
/// one, which then fails validation).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// Bytes `byte` takes inside a JSON string as serde_json writes it.
fn escaped_len(byte: u8) -> u64 {
    match byte {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        0x00..=0x1f => 6,
        _ => 1,
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

    #[test]
    fn escape_heavy_text_travels_as_base64() {
        // NULs would cost six bytes each in JSON.
        let nuls = vec![0u8; 3000];
        let (text, encoding) = encode_data(&nuls);
        assert_eq!(encoding, Encoding::Base64);
        assert_eq!(text.len(), 4000);
        // Ordinary output with newlines and tabs stays readable.
        assert_eq!(encode_data(b"a\tb\nc\n").1, Encoding::Utf8);
        assert_eq!(encode_data("héllo ✓\n".as_bytes()).1, Encoding::Utf8);
    }

    #[test]
    fn the_shape_of_chunked_data_is_that_of_the_whole() {
        let samples: [&[u8]; 5] = [
            "héllo ✓ 𝄞 done\n".as_bytes(),
            &[0xe2, 0x9c],
            &[b'a', 0xf0, 0x9d, 0x84, 0x9e, b'b'],
            &[0xff, b'a'],
            &[0u8; 10],
        ];
        for sample in samples {
            let whole = encode_data(sample).1;
            for cut in 0..=sample.len() {
                let mut shape = DataShape::default();
                shape.feed(&sample[..cut]);
                shape.feed(&sample[cut..]);
                assert_eq!(shape.encoding(), whole, "{sample:?} cut at {cut}");
            }
            let mut bytewise = DataShape::default();
            for byte in sample {
                bytewise.feed(std::slice::from_ref(byte));
            }
            assert_eq!(bytewise.encoding(), whole, "{sample:?} byte by byte");
        }
    }
}
