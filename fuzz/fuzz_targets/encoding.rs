//! `sbx_protocol::encode_data` / `decode_data`, the binary-safe encoding of process input and
//! output. Properties: for any bytes, `decode(encode(b)) == b`, also after the encoded string
//! has crossed the wire inside an `ExecEvent` (JSON); the encoding is `utf-8` exactly when the
//! bytes are valid UTF-8. And `decode_data` on arbitrary text never panics: `utf-8` text decodes
//! to its own bytes, and base64 that decodes re-encodes to the same text (canonical, padded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbx_protocol::{decode_data, encode_data, Encoding, ExecEvent};

fuzz_target!(|data: &[u8]| {
    let (text, encoding) = encode_data(data);
    assert_eq!(encoding == Encoding::Utf8, std::str::from_utf8(data).is_ok());
    assert_eq!(decode_data(&text, encoding).as_deref(), Ok(data));

    let event = ExecEvent::Stdout { data: text, encoding };
    let line = serde_json::to_string(&event).expect("an event serializes");
    assert!(!line.contains('\n'), "an NDJSON line holds one event");
    let back: ExecEvent = serde_json::from_str(&line).expect("an event deserializes");
    assert_eq!(back, event);
    let ExecEvent::Stdout { data: text, encoding } = back else {
        unreachable!()
    };
    assert_eq!(decode_data(&text, encoding).as_deref(), Ok(data));

    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(decode_data(text, Encoding::Utf8).as_deref(), Ok(data));
        if let Ok(bytes) = decode_data(text, Encoding::Base64) {
            if std::str::from_utf8(&bytes).is_err() {
                assert_eq!(encode_data(&bytes), (text.to_owned(), Encoding::Base64));
            }
        }
    }
});
