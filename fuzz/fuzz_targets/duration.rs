//! `sbx_config::duration::parse` on arbitrary text (config files, `ttl` of a create, the
//! `duration` of an extend). Properties: a parsed duration is longer than zero and whole
//! seconds; `format` writes it so that `parse` reads back the same duration, and the formatted
//! text is a fixed point; an error names the text it was given. A second property runs the
//! other way: whatever `format` writes for a number of seconds never parses to another value.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sbx_config::duration::{format, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match parse(text) {
            Ok(duration) => {
                assert!(duration > Duration::ZERO, "{text:?} parsed to zero");
                assert_eq!(duration.subsec_nanos(), 0, "{text:?}: sub-second part");
                let formatted = format(duration);
                assert_eq!(
                    parse(&formatted),
                    Ok(duration),
                    "{text:?} parsed to {duration:?}, formatted as {formatted:?}"
                );
                assert_eq!(format(parse(&formatted).unwrap()), formatted);
            }
            Err(error) => {
                assert_eq!(error.text, text);
                let _ = error.to_string();
            }
        }
    }

    // format → parse, from any number of seconds (the first 8 bytes, little-endian).
    if let Some(bytes) = data.get(..8) {
        let seconds = u64::from_le_bytes(bytes.try_into().unwrap());
        let formatted = format(Duration::from_secs(seconds));
        if let Ok(back) = parse(&formatted) {
            assert_eq!(back, Duration::from_secs(seconds), "{formatted:?}");
        }
    }
});
