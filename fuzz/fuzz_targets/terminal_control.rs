//! The JSON request types of the API on arbitrary bytes: `TerminalControl` (the terminal
//! WebSocket's text frames), `CreateSandboxRequest`, `ExecRequest`, `ExtendRequest`,
//! `TerminalRequest` (the API reads it from the query string; here as JSON, as the type
//! allows), and the small bodies `ExpireRequest`, `CleanupRequest`, `CreateKeyRequest` and
//! `LoginRequest`. Properties: whatever deserializes serializes again; what it serializes
//! to deserializes again (what sbx's own client sends, sbx accepts) and serializes to the same
//! JSON; for `TerminalControl` (PartialEq) the value itself survives the round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbx_protocol::{
    CleanupRequest, CreateKeyRequest, CreateSandboxRequest, ExecRequest, ExpireRequest,
    ExtendRequest, LoginRequest, TerminalControl, TerminalRequest,
};
use serde::{de::DeserializeOwned, Serialize};

/// Deserializes `data` as `T`; when it does, checks the round trip and returns the value.
fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let name = std::any::type_name::<T>();
    let json = serde_json::to_vec(&value)
        .unwrap_or_else(|e| panic!("{name} does not serialize: {e}"));
    let again: T = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!("{name}: its own JSON does not deserialize: {e}\n{}", String::from_utf8_lossy(&json))
    });
    let json_again = serde_json::to_vec(&again).expect("serialized once");
    assert_eq!(
        String::from_utf8_lossy(&json),
        String::from_utf8_lossy(&json_again),
        "{name}: JSON changed in a round trip"
    );
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    if let Some(control) = round_trip::<TerminalControl>(data) {
        let json = serde_json::to_vec(&control).unwrap();
        assert_eq!(serde_json::from_slice::<TerminalControl>(&json).unwrap(), control);
    }
    round_trip::<CreateSandboxRequest>(data);
    round_trip::<ExecRequest>(data);
    round_trip::<ExtendRequest>(data);
    round_trip::<TerminalRequest>(data);
    round_trip::<ExpireRequest>(data);
    round_trip::<CleanupRequest>(data);
    round_trip::<CreateKeyRequest>(data);
    round_trip::<LoginRequest>(data);
});
