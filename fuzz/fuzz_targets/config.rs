//! `sbx_config::Config::parse` on arbitrary UTF-8 (a configuration file). Properties: an error
//! names the file; a configuration that parses is written by `to_toml` (what
//! `sbx config check` prints) as TOML that parses again, to an equal configuration, and
//! `to_toml` is then a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbx_config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text, "fuzz.toml") {
        Ok(config) => config,
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("fuzz.toml: "), "{message}");
            return;
        }
    };
    let written = config.to_toml();
    let again = match Config::parse(&written, "x") {
        Ok(again) => again,
        Err(error) => panic!("to_toml wrote what does not parse: {error}\n--- input\n{text}\n--- written\n{written}"),
    };
    assert_eq!(again, config, "\n--- input\n{text}\n--- written\n{written}");
    assert_eq!(again.to_toml(), written, "to_toml is not a fixed point");
});
