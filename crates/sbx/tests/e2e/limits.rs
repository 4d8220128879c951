//! Rate limits and quotas: each limit refuses with 429, a `Retry-After` that says when room
//! comes, and a message naming the limit; other users and addresses are not affected.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sbx_protocol::{CreateSandboxRequest, ErrorBody};

use crate::auth::call;
use crate::daemon::{Options, TestDaemon};

/// A 429's code, message and `Retry-After` seconds.
fn refusal(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> (String, String, u64) {
    assert_eq!(status, 429, "{body}");
    let error: ErrorBody = serde_json::from_str(body).unwrap();
    let retry = headers["retry-after"].to_str().unwrap().parse().unwrap();
    (error.error.code, error.error.message, retry)
}

async fn create(
    d: &TestDaemon,
    key: &str,
    body: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    call(d, Method::POST, "/v1/sandboxes", Some(key), Some(body)).await
}

#[tokio::test]
async fn creations_per_hour_per_user_and_per_address() {
    let d = TestDaemon::start_with(Options {
        config: Some("[limits]\ncreates_per_hour = 2\ncreates_per_hour_per_ip = 3\n"),
        ..Default::default()
    })
    .await;
    let (alice, _) = d.user("alice").await;
    let (bob, _) = d.user("bob").await;
    let started = Instant::now();
    for _ in 0..2 {
        let (status, _, body) = create(&d, &alice, r#"{"ttl":"5m"}"#).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, headers, body) = create(&d, &alice, "{}").await;
    let (code, message, retry) = refusal(status, &headers, &body);
    assert_eq!(code, "rate_limited");
    assert!(
        message.contains("creates_per_hour") && message.contains("alice"),
        "{message}"
    );
    // Room comes when the first creation leaves the hour.
    let elapsed = started.elapsed().as_secs();
    assert!(
        (3600 - elapsed - 2..=3600).contains(&retry),
        "Retry-After {retry}"
    );
    // Refused creations do not count; bob has his own allowance — until the address's runs out.
    let (status, _, body) = create(&d, &bob, r#"{"ttl":"5m"}"#).await;
    assert_eq!(status, 201, "{body}");
    let (status, headers, body) = create(&d, &bob, "{}").await;
    let (code, message, retry) = refusal(status, &headers, &body);
    assert_eq!(code, "rate_limited");
    assert!(
        message.contains("creates_per_hour_per_ip") && message.contains("127.0.0.1"),
        "{message}"
    );
    assert!(retry > 3500, "Retry-After {retry}");
    d.finish().await;
}

#[tokio::test]
async fn the_client_address_comes_from_trusted_proxies_only() {
    let config =
        "[daemon]\ntrusted_proxies = [\"127.0.0.1\"]\n[limits]\ncreates_per_hour_per_ip = 1\n";
    let d = TestDaemon::start_with(Options {
        config: Some(config),
        ..Default::default()
    })
    .await;
    let create_from = |forwarded: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/v1/sandboxes", d.url))
            .bearer_auth(&d.admin_key)
            .header("x-forwarded-for", forwarded)
            .json(&serde_json::json!({ "ttl": "5m" }))
            .send()
    };
    assert_eq!(create_from("203.0.113.7").await.unwrap().status(), 201);
    let second = create_from("203.0.113.7").await.unwrap();
    assert_eq!(second.status(), 429);
    assert!(second.text().await.unwrap().contains("203.0.113.7"));
    // Another client behind the same proxy has its own allowance; a spoofed hop in front of it
    // does not change who it is.
    assert_eq!(create_from("198.51.100.9").await.unwrap().status(), 201);
    assert_eq!(
        create_from("203.0.113.7, 198.51.100.9")
            .await
            .unwrap()
            .status(),
        429
    );
    // The audit trail names the client, not the proxy.
    let entries = d
        .client
        .audit(&[("event", "rate_limited".to_string())])
        .await
        .unwrap();
    assert!(entries
        .iter()
        .any(|e| e.ip.as_deref() == Some("203.0.113.7")));
    d.finish().await;

    // Without trusted proxies the header is ignored: everyone is the peer.
    let d = TestDaemon::start_with(Options {
        config: Some("[limits]\ncreates_per_hour_per_ip = 1\n"),
        ..Default::default()
    })
    .await;
    for (forwarded, expected) in [("203.0.113.7", 201), ("198.51.100.9", 429)] {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/sandboxes", d.url))
            .bearer_auth(&d.admin_key)
            .header("x-forwarded-for", forwarded)
            .json(&serde_json::json!({ "ttl": "5m" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "{forwarded}");
    }
    d.finish().await;
}

#[tokio::test]
async fn concurrent_sandboxes_memory_and_cpus_per_user() {
    let config = r#"
[limits]
concurrent_sandboxes = 2
memory_mb = 768
cpus = 1.5

[limits.users.ci]
concurrent_sandboxes = 3
memory_mb = 0
cpus = 0
"#;
    let d = TestDaemon::start_with(Options {
        config: Some(config),
        ..Default::default()
    })
    .await;
    let (alice, alice_client) = d.user("alice").await;
    let small = r#"{"ttl":"120s","resources":{"memory_mb":256,"cpus":0.5}}"#;
    let (status, _, first) = create(&d, &alice, small).await;
    assert_eq!(status, 201, "{first}");
    let first: sbx_protocol::Sandbox = serde_json::from_str(&first).unwrap();
    let (status, _, body) = create(
        &d,
        &alice,
        r#"{"ttl":"10m","resources":{"memory_mb":256,"cpus":0.5}}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // A third: the concurrency quota; room comes at the soonest deadline (the 120 s one).
    let (status, headers, body) = create(&d, &alice, small).await;
    let (code, message, retry) = refusal(status, &headers, &body);
    assert_eq!(code, "quota_exceeded");
    assert!(message.contains("concurrent_sandboxes"), "{message}");
    assert!((100..=120).contains(&retry), "Retry-After {retry}");
    // Destroying one makes room; memory is then the limit (256 in use + 600 > 768).
    alice_client.delete(&first.id).await.unwrap();
    let (status, headers, body) =
        create(&d, &alice, r#"{"resources":{"memory_mb":600,"cpus":0.5}}"#).await;
    let (code, message, _) = refusal(status, &headers, &body);
    assert_eq!(code, "quota_exceeded");
    assert!(message.contains("memory_mb"), "{message}");
    // CPUs (0.5 in use + 1.25 > 1.5).
    let (status, headers, body) =
        create(&d, &alice, r#"{"resources":{"memory_mb":64,"cpus":1.25}}"#).await;
    let (_, message, _) = refusal(status, &headers, &body);
    assert!(message.contains("cpus"), "{message}");
    // More than the whole quota can never fit: no wait helps.
    let (status, _, body) = create(&d, &alice, r#"{"resources":{"memory_mb":1024}}"#).await;
    assert_eq!(status, 422, "{body}");
    // A user with their own limits: three, any size.
    let (ci, _) = d.user("ci").await;
    for _ in 0..3 {
        let (status, _, body) =
            create(&d, &ci, r#"{"resources":{"memory_mb":1024,"cpus":1}}"#).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, headers, body) = create(&d, &ci, "{}").await;
    assert_eq!(refusal(status, &headers, &body).0, "quota_exceeded");
    d.finish().await;
}

#[tokio::test]
async fn a_profile_has_its_own_limits() {
    let config = r#"
[profiles.tutorial]
ttl = { default = "15m", max = "1h" }
limits = { concurrent_sandboxes = 1, creates_per_hour_per_ip = 5 }
"#;
    let d = TestDaemon::start_with(Options {
        config: Some(config),
        ..Default::default()
    })
    .await;
    let tutorial = CreateSandboxRequest {
        profile: Some("tutorial".into()),
        ..Default::default()
    };
    d.client.create(&tutorial).await.unwrap();
    let error = d.client.create(&tutorial).await.unwrap_err();
    assert_eq!(error.code(), Some("quota_exceeded"));
    assert!(
        error.to_string().contains("profile \"tutorial\""),
        "{error}"
    );
    // Other profiles are not counted against it.
    d.create().await;
    d.finish().await;
}

#[tokio::test]
async fn commands_per_second() {
    let d = TestDaemon::start_with(Options {
        config: Some("[limits]\nexec_per_second = 3\n"),
        ..Default::default()
    })
    .await;
    let id = d.create().await.id;
    let path = format!("/v1/sandboxes/{id}/exec");
    let body = r#"{"cmd":["true"]}"#;
    let mut refused = None;
    for _ in 0..6 {
        let (status, headers, text) =
            call(&d, Method::POST, &path, Some(&d.admin_key), Some(body)).await;
        if status == 429 {
            refused = Some(refusal(status, &headers, &text));
            break;
        }
        assert_eq!(status, 200, "{text}");
    }
    let (code, message, retry) = refused.expect("the burst of 3 ran out");
    assert_eq!(code, "rate_limited");
    assert!(message.contains("exec_per_second"), "{message}");
    assert_eq!(retry, 1);
    // After Retry-After, commands run again; terminals count against the same rate.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, _, text) = call(&d, Method::POST, &path, Some(&d.admin_key), Some(body)).await;
    assert_eq!(status, 200, "{text}");
    d.finish().await;
}

#[tokio::test]
async fn the_documented_public_site_settings_are_valid() {
    // docs/security.md shows these settings; they must load as written.
    let toml = crate::daemon::public_site_config();
    let config = sbx_config::Config::parse(&toml, "docs/security.md").unwrap();
    assert_eq!(config.limits.default.creates_per_hour_per_ip, Some(10));
    assert_eq!(config.limits.default.creates_per_hour, None);
    assert!(config.terminals.filter_escape_sequences);
    assert_eq!(config.terminals.max_per_ip, 3);
}
