//! `sbx_protocol::encode_data` / `decode_data`, the binary-safe encoding of process input and
//! output. Properties: for any bytes, `decode(encode(b)) == b`, also after the encoded string
//! has crossed the wire inside an `ExecEvent` (JSON); the encoding is `utf-8` only for valid
//! UTF-8, and whichever it is, the data costs JSON at most twice its size (or base64's 4/3,
//! padded); `DataShape` fed the bytes in two chunks, cut anywhere, picks the same encoding.
//! And `decode_data` on arbitrary text never panics: `utf-8` text decodes to its own bytes, and
//! base64 that decodes re-encodes to the same text (canonical, padded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbx_protocol::{decode_data, encode_data, DataShape, Encoding, ExecEvent};

fuzz_target!(|data: &[u8]| {
    let (text, encoding) = encode_data(data);
    if encoding == Encoding::Utf8 {
        assert!(std::str::from_utf8(data).is_ok());
    }
    assert_eq!(decode_data(&text, encoding).as_deref(), Ok(data));
    let json = serde_json::to_string(&text).expect("a string serializes");
    assert!(
        json.len() <= (2 * data.len()).max(data.len().div_ceil(3) * 4) + 2,
        "{} bytes cost {} in JSON",
        data.len(),
        json.len()
    );
    let cut = data.first().map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let mut shape = DataShape::default();
    shape.feed(&data[..cut]);
    shape.feed(&data[cut..]);
    assert_eq!(shape.encoding(), encoding, "cut at {cut}");

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
            let (again, encoding) = encode_data(&bytes);
            if encoding == Encoding::Base64 {
                assert_eq!(again, text);
            }
        }
    }
});
