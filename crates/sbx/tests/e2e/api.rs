//! The HTTP API: lifecycle of a sandbox, filters, ids, the error shape of every bad request.

use reqwest::Method;
use sbx_protocol::{CreateSandboxRequest, ErrorBody, ResourcesRequest, SandboxState};

use crate::daemon::TestDaemon;

#[tokio::test]
async fn health_and_openapi_document() {
    let d = TestDaemon::start().await;
    assert_eq!(d.client.health().await.unwrap().status, "ok");
    let doc = d.client.openapi().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/healthz",
        "/v1/sandboxes",
        "/v1/sandboxes/{id}",
        "/v1/sandboxes/{id}/exec",
        "/v1/sandboxes/{id}/exec/stream",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    for schema in [
        "CreateSandboxRequest",
        "Sandbox",
        "ExecRequest",
        "ExecResult",
        "ExecEvent",
        "ErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "openapi lacks {schema}"
        );
    }
    d.finish().await;
}

#[tokio::test]
async fn create_get_list_delete() {
    let d = TestDaemon::start().await;
    let request = CreateSandboxRequest {
        name: Some("web-1".into()),
        env: [("GREETING".to_string(), "hi".to_string())].into(),
        metadata: [("team".to_string(), "blue".to_string())].into(),
        resources: Some(ResourcesRequest {
            memory_mb: Some(256),
            cpus: Some(0.5),
            pids: Some(100),
            disk_mb: Some(256),
        }),
        ..Default::default()
    };
    let created = d.client.create(&request).await.unwrap();
    assert_eq!(created.state, SandboxState::Running);
    assert_eq!(created.template, "host");
    assert_eq!(created.backend, "native");
    assert_eq!(created.name.as_deref(), Some("web-1"));
    assert_eq!(created.resources.memory_mb, 256);
    assert_eq!(created.resources.cpus, 0.5);
    assert_eq!(created.resources.pids, 100);
    assert_eq!(created.env, vec!["GREETING".to_string()]);
    assert_eq!(created.metadata["team"], "blue");
    assert!(created.created_at.ends_with('Z'));
    let other = d.create().await;

    // Status code of create is 201.
    let (status, _) = d
        .client
        .raw(
            Method::POST,
            "/v1/sandboxes",
            Some("application/json"),
            "{}",
        )
        .await
        .unwrap();
    assert_eq!(status, 201);

    // By id and by name.
    assert_eq!(d.client.get(&created.id).await.unwrap().id, created.id);
    assert_eq!(d.client.get("web-1").await.unwrap().id, created.id);
    // The sandbox's environment is there for every command.
    assert_eq!(d.sh("web-1", "echo $GREETING").await.stdout, "hi\n");

    // Filters.
    let blue = d.client.list(&[], &[("team", "blue")]).await.unwrap();
    assert_eq!(
        blue.iter().map(|s| &s.id).collect::<Vec<_>>(),
        vec![&created.id]
    );
    assert_eq!(d.client.list(&["running"], &[]).await.unwrap().len(), 3);
    assert!(d.client.list(&["failed"], &[]).await.unwrap().is_empty());

    // A live name is unique.
    let taken = d
        .client
        .create(&CreateSandboxRequest {
            name: Some("web-1".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(taken.unwrap_err().code(), Some("name_taken"));

    // Delete is idempotent; unknown ids are 404.
    let deleted = d.client.delete(&created.id).await.unwrap();
    assert_eq!(deleted.state, SandboxState::Destroyed);
    assert_eq!(deleted.state_reason.as_deref(), Some("deleted"));
    assert!(deleted.destroyed_at.is_some());
    let again = d.client.delete(&created.id).await.unwrap();
    assert_eq!(again.state, SandboxState::Destroyed);
    assert_eq!(
        d.client.get(&created.id).await.unwrap().state,
        SandboxState::Destroyed
    );
    let unknown = "sb-aaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        d.client.delete(unknown).await.unwrap_err().code(),
        Some("sandbox_not_found")
    );
    assert_eq!(
        d.client.get(unknown).await.unwrap_err().code(),
        Some("sandbox_not_found")
    );
    assert_eq!(
        d.client.get("no-such-name").await.unwrap_err().code(),
        Some("sandbox_not_found")
    );

    // The default listing hides destroyed sandboxes; asking for them shows them.
    let live = d.client.list(&[], &[]).await.unwrap();
    assert!(live.iter().all(|s| s.id != created.id));
    assert!(live.iter().any(|s| s.id == other.id));
    let destroyed = d.client.list(&["destroyed"], &[]).await.unwrap();
    assert_eq!(destroyed.len(), 1);
    // The name is free again.
    d.client
        .create(&CreateSandboxRequest {
            name: Some("web-1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    d.finish().await;
}

#[tokio::test]
async fn ids_are_unguessable() {
    let d = TestDaemon::start().await;
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let sandbox = d.create().await;
        let body = sandbox.id.strip_prefix("sb-").unwrap();
        // 26 base32 characters: 128 bits (the first character carries 3 of them).
        assert_eq!(body.len(), 26);
        assert!(body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert!(ids.insert(sandbox.id.clone()));
        d.client.delete(&sandbox.id).await.unwrap();
    }
    d.finish().await;
}

/// One row per bad request: what is sent, the status and code expected, a word of the message.
struct Bad {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    code: &'static str,
    mentions: &'static str,
}

fn bad(
    method: Method,
    path: &str,
    body: &str,
    status: u16,
    code: &'static str,
    mentions: &'static str,
) -> Bad {
    Bad {
        method,
        path: path.into(),
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
        mentions,
    }
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_errors() {
    let d = TestDaemon::start().await;
    let running = d.create().await.id;
    let deleted = d.create().await.id;
    d.client.delete(&deleted).await.unwrap();
    let exec = |id: &str| format!("/v1/sandboxes/{id}/exec");
    let post = Method::POST;
    let mut cases = vec![
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{not json",
            400,
            "invalid_json",
            "invalid request body",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"colour\":\"red\"}",
            400,
            "invalid_request",
            "colour",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"resources\":{\"gpus\":1}}",
            400,
            "invalid_request",
            "gpus",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"template\":7}",
            400,
            "invalid_request",
            "template",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "[]",
            400,
            "invalid_request",
            "invalid request body",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"resources\":{\"memory_mb\":10000000000}}",
            422,
            "over_limit",
            "memory_mb",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"resources\":{\"memory_mb\":-1}}",
            400,
            "invalid_request",
            "memory_mb",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"resources\":{\"cpus\":1000}}",
            422,
            "over_limit",
            "cpus",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"resources\":{\"pids\":0}}",
            400,
            "invalid_request",
            "pids",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"template\":\"nope\"}",
            400,
            "template_not_found",
            "nope",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"template\":\"../etc\"}",
            400,
            "invalid_request",
            "template",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"name\":\"bad name\"}",
            400,
            "invalid_request",
            "name",
        ),
        bad(
            post.clone(),
            "/v1/sandboxes",
            "{\"env\":{\"1X\":\"y\"}}",
            400,
            "invalid_request",
            "env",
        ),
        bad(
            post.clone(),
            &exec(&deleted),
            "{\"cmd\":[\"true\"]}",
            409,
            "invalid_state",
            "destroyed",
        ),
        bad(
            post.clone(),
            &exec(&running),
            "{\"cmd\":[]}",
            400,
            "invalid_request",
            "cmd",
        ),
        bad(
            post.clone(),
            &exec(&running),
            "{}",
            400,
            "invalid_request",
            "cmd",
        ),
        bad(
            post.clone(),
            &exec(&running),
            "{\"cmd\":[\"true\"],\"timeout\":-5}",
            400,
            "invalid_request",
            "timeout",
        ),
        bad(
            post.clone(),
            &exec(&running),
            "{\"cmd\":[\"true\"],\"user\":\"mallory\"}",
            400,
            "invalid_request",
            "user",
        ),
        bad(
            post.clone(),
            &exec(&running),
            "{\"cmd\":[\"true\"],\"cwd\":\"relative\"}",
            400,
            "invalid_request",
            "cwd",
        ),
        bad(
            post.clone(),
            &exec(&running),
            "{\"cmd\":[\"cat\"],\"stdin\":\"!!\",\"stdin_encoding\":\"base64\"}",
            400,
            "invalid_request",
            "base64",
        ),
        bad(
            post.clone(),
            &exec(&running),
            "{\"cmd\":[\"no-such-program\"]}",
            400,
            "exec_failed",
            "command not found",
        ),
        bad(
            post.clone(),
            &exec(&running),
            "{\"cmd\":[\"true\"],\"cwd\":\"/nowhere\"}",
            400,
            "exec_failed",
            "/nowhere",
        ),
        bad(
            post.clone(),
            &exec("sb-aaaaaaaaaaaaaaaaaaaaaaaaaa"),
            "{\"cmd\":[\"true\"]}",
            404,
            "sandbox_not_found",
            "sb-",
        ),
        bad(
            post.clone(),
            &exec("../../etc"),
            "{\"cmd\":[\"true\"]}",
            404,
            "route_not_found",
            "no route",
        ),
        bad(
            Method::GET,
            "/v1/sandboxes?state=sleeping",
            "",
            400,
            "invalid_request",
            "sleeping",
        ),
        bad(
            Method::GET,
            "/v1/sandboxes?colour=red",
            "",
            400,
            "invalid_request",
            "colour",
        ),
        bad(
            Method::GET,
            "/v1/nothing",
            "",
            404,
            "route_not_found",
            "/v1/nothing",
        ),
        bad(
            Method::PUT,
            "/v1/sandboxes",
            "",
            405,
            "method_not_allowed",
            "PUT",
        ),
    ];
    cases.push(Bad {
        content_type: Some("text/plain"),
        ..bad(
            post.clone(),
            "/v1/sandboxes",
            "{}",
            415,
            "unsupported_media_type",
            "application/json",
        )
    });
    // Exec takes large bodies (stdin), up to its own limit; other routes much less.
    let huge = format!(
        "{{\"cmd\":[\"true\"],\"stdin\":\"{}\"}}",
        "a".repeat(sbx_api::MAX_EXEC_BODY_BYTES)
    );
    let large = format!(
        "{{\"metadata\":{{\"a\":\"{}\"}}}}",
        "a".repeat(sbx_api::MAX_BODY_BYTES)
    );
    cases.push(bad(
        post.clone(),
        "/v1/sandboxes",
        &large,
        413,
        "payload_too_large",
        "exceeds",
    ));
    cases.push(bad(
        post.clone(),
        &exec(&running),
        &huge,
        413,
        "payload_too_large",
        "exceeds",
    ));
    for case in cases {
        let (status, body) = d
            .client
            .raw(
                case.method.clone(),
                &case.path,
                case.content_type,
                case.body.clone(),
            )
            .await
            .unwrap();
        let shown = &case.body[..case.body.len().min(80)];
        let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{} {} {shown}: body is not an error JSON ({e}): {}",
                case.method,
                case.path,
                String::from_utf8_lossy(&body)
            )
        });
        assert_eq!(
            (status, error.error.code.as_str()),
            (case.status, case.code),
            "{} {} {shown}: {}",
            case.method,
            case.path,
            error.error.message
        );
        assert!(
            error.error.message.contains(case.mentions),
            "{} {} {shown}: message {:?} should mention {:?}",
            case.method,
            case.path,
            error.error.message,
            case.mentions
        );
        assert!(
            !error
                .error
                .message
                .contains(&*d.data_dir().to_string_lossy()),
            "message leaks a host path"
        );
    }
    // Nothing above changed the running sandbox.
    assert_eq!(d.sh(&running, "echo ok").await.stdout, "ok\n");
    d.finish().await;
}
