//! The HTTP surface against hostile clients: request ids, body limits, slow and greedy
//! clients, sanitised errors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::Method;
use sbx_protocol::ErrorBody;

use crate::auth::call;
use crate::daemon::{Options, TestDaemon};

#[tokio::test]
async fn every_response_carries_a_request_id_that_errors_repeat() {
    let d = TestDaemon::start().await;
    let (status, headers, body) = call(
        &d,
        Method::GET,
        "/v1/sandboxes/sb-aaaaaaaaaaaaaaaaaaaaaaaaaa",
        Some(&d.admin_key),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.starts_with("req_") && id.len() == 20, "{id}");
    let error: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(error.error.request_id.as_deref(), Some(id.as_str()));
    // Successes carry one too, each its own, with the hardening headers.
    let (_, first, _) = call(&d, Method::GET, "/healthz", None, None).await;
    let (_, second, _) = call(&d, Method::GET, "/healthz", None, None).await;
    assert_ne!(first["x-request-id"], second["x-request-id"]);
    assert_eq!(first["x-content-type-options"], "nosniff");
    assert_eq!(first["x-frame-options"], "DENY");
    // The daemon's log has the request under the same id.
    assert!(d.log().contains(&id), "the log does not name {id}");
    d.finish().await;
}

#[tokio::test]
async fn errors_never_carry_host_paths_or_internals() {
    let d = TestDaemon::start().await;
    let sandbox = d.create().await.id;
    let data_dir = d.data_dir().to_string_lossy().into_owned();
    let probes = [
        (
            Method::POST,
            format!("/v1/sandboxes/{sandbox}/exec"),
            Some(r#"{"cmd":["/no/such/program"]}"#),
        ),
        (
            Method::POST,
            format!("/v1/sandboxes/{sandbox}/exec"),
            Some(r#"{"cmd":["true"],"cwd":"/etc/passwd"}"#),
        ),
        (
            Method::POST,
            "/v1/sandboxes".to_string(),
            Some(r#"{"template":"../../etc"}"#),
        ),
        (
            Method::POST,
            "/v1/sandboxes".to_string(),
            Some(r#"{"resources":{"memory_mb":99999999}}"#),
        ),
        (Method::GET, "/v1/sandboxes/..%2F..%2Fetc".to_string(), None),
        (Method::GET, "/v1/audit?since=%00".to_string(), None),
    ];
    for (method, path, body) in probes {
        let (status, _, text) = call(&d, method.clone(), &path, Some(&d.admin_key), body).await;
        assert!(status.is_client_error(), "{method} {path}: {status} {text}");
        for leak in [
            data_dir.as_str(),
            "/var/lib/sbx",
            "panicked",
            "backtrace",
            "stage1",
            "sqlite",
        ] {
            assert!(
                !text.contains(leak),
                "{method} {path} leaks {leak:?}: {text}"
            );
        }
    }
    d.finish().await;
}

/// Reads until the server closes the connection (or `limit` passes); true when it closed.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buffer = [0u8; 4096];
    let start = Instant::now();
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return start.elapsed() < limit,
        }
    }
}

/// What the daemon at `address` answers to `request` sent raw (a body it leaves unfinished, say),
/// read until it closes the connection or for 5 s.
fn answer_to(address: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[tokio::test]
async fn slow_and_greedy_clients_are_cut_off() {
    let config =
        "[daemon]\nheader_timeout = \"1s\"\nbody_timeout = \"1s\"\nmax_connections_per_ip = 8\n";
    let d = TestDaemon::start_with(Options {
        config: Some(config),
        ..Default::default()
    })
    .await;
    let address = format!("127.0.0.1:{}", d.port);
    // Slow loris: headers that never end are dropped after the header timeout.
    let mut loris = TcpStream::connect(&address).unwrap();
    loris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let start = Instant::now();
    assert!(
        closed_within(&mut loris, Duration::from_secs(5)),
        "slow headers kept open"
    );
    assert!(start.elapsed() < Duration::from_secs(4));
    // A body that never comes: the request fails after the body timeout.
    let answer = answer_to(
        &address,
        &format!(
            "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            d.admin_key
        ),
    );
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "slow body answered: {answer:?}"
    );
    // An upload whose body stops half-way: 408 after the body timeout (the stream the
    // sandbox's file agent read failed because of the client, not the daemon).
    // (Made by a client of its own: a connection kept by `d.client` would be closed by the
    // 1 s header timeout under its next request.)
    let sandbox = d
        .client_with(&d.admin_key)
        .create(&Default::default())
        .await
        .unwrap();
    let answer = answer_to(
        &address,
        &format!(
            "PUT /v1/sandboxes/{}/files?path=/tmp/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\nabc",
            sandbox.id, d.admin_key
        ),
    );
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "slow upload answered: {answer:?}"
    );
    // Too many connections from one address: the extra ones are closed at once.
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(&address).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)),
        "the connection cap let one more in"
    );
    held.clear();
    // Once they are gone the daemon serves normally.
    std::thread::sleep(Duration::from_millis(200));
    assert!(d.client.health().await.is_ok());
    assert!(
        d.log().contains("connection refused"),
        "the refusal is logged"
    );
    d.finish().await;
}
