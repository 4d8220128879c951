//! Authentication and ownership, through the real API: every route of the OpenAPI document
//! without a key, with a bad one, with a revoked one; every sandbox route with another user's
//! sandbox; the admin-only routes with a user's key; the web session cookie; the CLI finding the
//! admin key; `--insecure-no-auth`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use sbx_api_client::ClientError;
use sbx_protocol::{CreateSandboxRequest, ErrorBody, ExecRequest, TerminalRequest};

use crate::daemon::{cli_as, text, TestDaemon, SBX};

/// A tar stream of no entries: its two zero end blocks.
const EMPTY_TAR: &str = match std::str::from_utf8(&[0u8; 1024]) {
    Ok(text) => text,
    Err(_) => panic!(),
};

/// A request with an optional key, answered as (status, headers, body text).
pub async fn call(
    d: &TestDaemon,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", d.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        let content_type = if body.starts_with("--b\r\n") {
            "multipart/form-data; boundary=b"
        } else {
            "application/json"
        };
        request = request
            .header("content-type", content_type)
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {body}"))
        .error
        .code
}

/// Every (method, path) of the OpenAPI document.
async fn routes(d: &TestDaemon) -> Vec<(Method, String)> {
    let doc = d.client.openapi().await.unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.push((method.to_uppercase().parse().unwrap(), path.clone()));
        }
    }
    out
}

const PUBLIC: [&str; 3] = ["/healthz", "/v1/login", "/v1/logout"];

#[tokio::test]
async fn every_route_but_the_public_ones_needs_a_valid_key() {
    let d = TestDaemon::start().await;
    let sandbox = d.create().await.id;
    let (revoked, _) = d.user("mallory").await;
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    d.client.revoke_key(&revoked_id).await.unwrap();
    let wrong_secret = format!(
        "sbx_{}_{}",
        d.admin_key.split('_').nth(1).unwrap(),
        "a".repeat(32)
    );
    let routes = routes(&d).await;
    assert!(routes.len() >= 20, "{routes:?}");
    for (method, template) in &routes {
        let path = template
            .replace("/v1/keys/{id}", &format!("/v1/keys/{revoked_id}"))
            .replace("{id}", &sandbox);
        let body = matches!(method, &Method::POST | &Method::PATCH).then_some("{}");
        if PUBLIC.contains(&template.as_str()) {
            continue;
        }
        for key in [
            None,
            Some("not-a-key"),
            Some("sbx_nosuchkey000_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Some(wrong_secret.as_str()),
            Some(revoked.as_str()),
        ] {
            let (status, headers, body) = call(&d, method.clone(), &path, key, body).await;
            assert_eq!(status, 401, "{method} {path} with {key:?}: {body}");
            assert_eq!(error_code(&body), "unauthorized", "{method} {path}");
            assert_eq!(headers["www-authenticate"], "Bearer realm=\"sbx\"");
            assert!(!body.contains(&revoked) && !body.contains(&wrong_secret));
        }
        // `X-API-Key` works as well as `Authorization: Bearer`.
        let mut request = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", d.url))
            .header("x-api-key", &d.admin_key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let status = request.send().await.unwrap().status();
        assert_ne!(status, 401, "{method} {path} with X-API-Key");
    }
    // The health check and the web page need none.
    let (status, _, _) = call(&d, Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, headers, _) = call(&d, Method::GET, "/", None, None).await;
    assert_eq!(status, 200);
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    d.finish().await;
}

#[tokio::test]
async fn a_user_sees_and_touches_only_their_own_sandboxes() {
    let d = TestDaemon::start().await;
    let (alice_key, alice) = d.user("alice").await;
    let (bob_key, bob) = d.user("bob").await;
    let named = CreateSandboxRequest {
        name: Some("shared".into()),
        ..Default::default()
    };
    let theirs = alice.create(&named).await.unwrap();
    assert_eq!(theirs.owner.as_deref(), Some("alice"));
    // Names are per user: bob may use the same one, and gets his own.
    let his = bob.create(&named).await.unwrap();
    assert_ne!(his.id, theirs.id);
    assert_eq!(bob.get("shared").await.unwrap().id, his.id);
    assert_eq!(alice.get("shared").await.unwrap().id, theirs.id);

    // Every route on a sandbox, with alice's id (and name), as bob: "not found", as for an id
    // that does not exist — never "forbidden", which would confirm it exists.
    let routes = routes(&d).await;
    let sandbox_routes: BTreeSet<(String, String)> = routes
        .iter()
        .filter(|(_, p)| p.starts_with("/v1/sandboxes/{id}"))
        .map(|(m, p)| (m.to_string(), p.clone()))
        .collect();
    let covered: BTreeSet<(String, String)> = [
        ("GET", "/v1/sandboxes/{id}", None),
        ("DELETE", "/v1/sandboxes/{id}", None),
        (
            "PATCH",
            "/v1/sandboxes/{id}/ttl",
            Some(r#"{"duration":"2h"}"#),
        ),
        ("POST", "/v1/sandboxes/{id}/recreate", None),
        ("GET", "/v1/sandboxes/{id}/events", None),
        (
            "POST",
            "/v1/sandboxes/{id}/exec",
            Some(r#"{"cmd":["true"]}"#),
        ),
        (
            "POST",
            "/v1/sandboxes/{id}/exec/stream",
            Some(r#"{"cmd":["true"]}"#),
        ),
        ("GET", "/v1/sandboxes/{id}/pty", None),
        ("POST", "/v1/sandboxes/{id}/pause", None),
        ("POST", "/v1/sandboxes/{id}/resume", None),
        ("POST", "/v1/sandboxes/{id}/hibernate", None),
        ("GET", "/v1/sandboxes/{id}/files", None),
        ("PUT", "/v1/sandboxes/{id}/files", None),
        ("DELETE", "/v1/sandboxes/{id}/files", None),
        ("GET", "/v1/sandboxes/{id}/files/stat", None),
        ("GET", "/v1/sandboxes/{id}/files/list", None),
        ("POST", "/v1/sandboxes/{id}/files/mkdir", None),
        ("POST", "/v1/sandboxes/{id}/files/move", None),
        ("POST", "/v1/sandboxes/{id}/files", None),
        ("GET", "/v1/sandboxes/{id}/files/archive", None),
        ("PUT", "/v1/sandboxes/{id}/files/archive", None),
        ("POST", "/v1/sandboxes/{id}/snapshots", None),
        ("GET", "/v1/sandboxes/{id}/files/watch", None),
        ("GET", "/v1/sandboxes/{id}/ports", None),
        ("POST", "/v1/sandboxes/{id}/shares", None),
        ("DELETE", "/v1/sandboxes/{id}/shares", None),
    ]
    .iter()
    .map(|(m, p, _)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(
        sandbox_routes, covered,
        "a sandbox route is not in this matrix"
    );
    let http_routes = [
        (Method::GET, "", None),
        (Method::PATCH, "/ttl", Some(r#"{"duration":"2h"}"#)),
        (Method::POST, "/recreate", None),
        (Method::GET, "/events", None),
        (Method::POST, "/exec", Some(r#"{"cmd":["true"]}"#)),
        (Method::POST, "/exec/stream", Some(r#"{"cmd":["true"]}"#)),
        (Method::POST, "/pause", None),
        (Method::POST, "/resume", None),
        (Method::POST, "/hibernate", None),
        (Method::PUT, "/files?path=/tmp/x", Some("x")),
        (Method::GET, "/files?path=/tmp/x", None),
        (Method::GET, "/files/stat?path=/tmp/x", None),
        (Method::GET, "/files/list?path=/tmp", None),
        (Method::POST, "/files/mkdir", Some(r#"{"path":"/tmp/d"}"#)),
        (
            Method::POST,
            "/files/move",
            Some(r#"{"from":"/tmp/x","to":"/tmp/y"}"#),
        ),
        (Method::DELETE, "/files?path=/tmp/d&recursive=true", None),
        (
            Method::POST,
            "/files?path=/tmp/m",
            Some("--b\r\ncontent-disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\nx\r\n--b--\r\n"),
        ),
        (Method::GET, "/files/archive?path=/tmp/m", None),
        // An archive of nothing: its two end blocks.
        (Method::PUT, "/files/archive?path=/tmp/m", Some(EMPTY_TAR)),
        (Method::POST, "/snapshots", None),
        (Method::GET, "/ports", None),
        (Method::POST, "/shares", Some(r#"{"port":8000}"#)),
        (Method::DELETE, "/shares", None),
        // The proxy (not in the OpenAPI document: any method, any path under the port).
        (Method::GET, "/ports/8000/", None),
        (Method::POST, "/ports/8000/api/x", Some("x")),
        (Method::DELETE, "", None),
    ];
    for target in [theirs.id.as_str(), "sb-aaaaaaaaaaaaaaaaaaaaaaaaaa"] {
        for (method, suffix, body) in &http_routes {
            let path = format!("/v1/sandboxes/{target}{suffix}");
            let (status, _, text) = call(&d, method.clone(), &path, Some(&bob_key), *body).await;
            assert_eq!(status, 404, "bob: {method} {path}: {text}");
            assert_eq!(error_code(&text), "sandbox_not_found");
            assert!(!text.contains("alice"), "{text}");
        }
        // A watch is a stream: checked here, not among the calls that end.
        let path = format!("/v1/sandboxes/{target}/files/watch?path=/tmp");
        let (status, _, text) = call(&d, Method::GET, &path, Some(&bob_key), None).await;
        assert_eq!(status, 404, "bob: watch {path}: {text}");
        assert_eq!(error_code(&text), "sandbox_not_found");
        let pty = bob.terminal(target, &TerminalRequest::default()).await;
        assert!(
            matches!(&pty, Err(ClientError::Api { status: 404, .. })),
            "bob's terminal on {target}: {:?}",
            pty.err()
        );
    }
    // The owner and an admin can do all of it (the delete last).
    for (who, key) in [("alice", &alice_key), ("admin", &d.admin_key)] {
        for (method, suffix, body) in &http_routes[..http_routes.len() - 1] {
            let path = format!("/v1/sandboxes/{}{suffix}", theirs.id);
            let (status, _, text) = call(&d, method.clone(), &path, Some(key), *body).await;
            // The native backend cannot hibernate: reached, and refused as such.
            let unsupported = *suffix == "/hibernate" && status == 501;
            // Nothing listens on the port: reached, and said so.
            let nothing_there =
                suffix.starts_with("/ports/8000") && error_code(&text) == "upstream_error";
            assert!(
                status.is_success() || unsupported || nothing_there,
                "{who}: {method} {path}: {status} {text}"
            );
        }
        let client = d.client_with(key);
        let mut terminal = client
            .terminal(&theirs.id, &TerminalRequest::default())
            .await
            .unwrap();
        drop(terminal.next().await);
    }

    // Lists, status and the event history are scoped too.
    let ids = |list: Vec<sbx_protocol::Sandbox>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(bob.list(&[], &[]).await.unwrap()), vec![his.id.clone()]);
    assert_eq!(
        ids(alice.list(&[], &[]).await.unwrap()),
        vec![theirs.id.clone()]
    );
    assert_eq!(d.client.list(&[], &[]).await.unwrap().len(), 2);
    let status = bob.status().await.unwrap();
    assert_eq!(
        status
            .sandboxes
            .iter()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>(),
        vec![his.id.clone()]
    );
    assert_eq!(status.counts["running"], 1);
    assert_eq!(d.client.status().await.unwrap().counts["running"], 2);
    let mut feed = bob.events(Some(0), None).await.unwrap();
    let mut seen = BTreeSet::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), feed.next()).await
    {
        seen.insert(event.unwrap().sandbox_id);
    }
    assert_eq!(seen, BTreeSet::from([his.id.clone()]));
    // Live events of alice's sandbox do not reach bob's feed either.
    alice.extend(&theirs.id, "3h").await.unwrap();
    bob.extend(&his.id, "3h").await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.sandbox_id, his.id);

    // Admin-only routes.
    for (method, path, body) in [
        (Method::POST, "/v1/expire", Some("{}")),
        (Method::POST, "/v1/cleanup", Some(r#"{"dry_run":true}"#)),
        (Method::POST, "/v1/keys", Some(r#"{"user":"eve"}"#)),
        (Method::GET, "/v1/audit", None),
    ] {
        let (status, _, text) = call(&d, method.clone(), path, Some(&bob_key), body).await;
        assert_eq!(status, 403, "bob: {method} {path}: {text}");
        assert_eq!(error_code(&text), "admin_required");
    }
    // Keys: a user sees and revokes only their own.
    let bobs_keys = bob.keys().await.unwrap();
    assert!(bobs_keys.iter().all(|k| k.user == "bob") && bobs_keys.len() == 1);
    let alice_key_id = alice.whoami().await.unwrap().key_id.unwrap();
    let refused = bob.revoke_key(&alice_key_id).await.unwrap_err();
    assert_eq!(refused.code(), Some("key_not_found"));
    assert!(alice.whoami().await.is_ok());
    // The owner deletes; bob's sandbox is untouched.
    alice.delete(&theirs.id).await.unwrap();
    assert!(bob.get(&his.id).await.is_ok());
    d.finish().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_and_keys_are_stored_hashed() {
    let d = TestDaemon::start().await;
    let (key, client) = d.user("carol").await;
    let me = client.whoami().await.unwrap();
    assert_eq!((me.user.as_str(), me.admin), ("carol", false));
    // A web session made with the key ends with it too.
    let login = reqwest::Client::new()
        .post(format!("{}/v1/login", d.url))
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |method: Method, path: &str| {
        reqwest::Client::new()
            .request(method, format!("{}{path}", d.url))
            .header("cookie", session.clone())
    };
    assert_eq!(
        with_cookie(Method::GET, "/v1/whoami")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A cookie may change things only from this daemon's own page (CSRF).
    let create = |origin: Option<&str>| {
        let mut request = with_cookie(Method::POST, "/v1/sandboxes")
            .header("content-type", "application/json")
            .body("{}");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    assert_eq!(create(None).await.unwrap().status(), 403);
    assert_eq!(
        create(Some("https://evil.example")).await.unwrap().status(),
        403
    );
    let own_origin = format!("http://127.0.0.1:{}", d.port);
    let made = create(Some(&own_origin)).await.unwrap();
    assert_eq!(made.status(), 201);
    let made: sbx_protocol::Sandbox = made.json().await.unwrap();
    assert_eq!(made.owner.as_deref(), Some("carol"));

    let id = me.key_id.unwrap();
    let revoked = d.client.revoke_key(&id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    let error = client.whoami().await.unwrap_err();
    assert_eq!(error.code(), Some("unauthorized"));
    assert_eq!(
        with_cookie(Method::GET, "/v1/whoami")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Listed as revoked; revoking again is a no-op; the last admin key cannot go.
    let keys = d.client.keys().await.unwrap();
    assert!(keys.iter().any(|k| k.id == id && k.revoked_at.is_some()));
    d.client.revoke_key(&id).await.unwrap();
    let admin_id = d.client.whoami().await.unwrap().key_id.unwrap();
    let last = d.client.revoke_key(&admin_id).await.unwrap_err();
    assert_eq!(last.code(), Some("conflict"));
    // Bad user names are refused.
    for user in ["", "Alice", "a b", "-x", &"a".repeat(64)] {
        let error = d.client.create_key(user, false).await.unwrap_err();
        assert_eq!(error.code(), Some("invalid_request"), "{user:?}");
    }
    // Only a hash of each secret is stored: no key appears in the database files.
    d.client.delete(&made.id).await.unwrap();
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(d.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sbx.db")
        {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    for secret in [&key, &d.admin_key] {
        let secret_part = secret.rsplit('_').next().unwrap();
        assert!(
            !stored.contains(secret_part),
            "a key's secret is stored in the clear"
        );
    }
    d.finish().await;
}

#[tokio::test]
async fn the_cli_finds_the_admin_key_and_manages_keys() {
    let d = TestDaemon::start().await;
    use std::os::unix::fs::PermissionsExt as _;
    let file = d.data_dir().join("admin.key");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "admin.key must be readable by its owner only"
    );
    // On the daemon's host, as its user: the CLI reads the key file of the data directory.
    let run = |args: &[&str], data_dir: &std::path::Path| {
        std::process::Command::new(SBX)
            .args(args)
            .env("SBX_URL", &d.url)
            .env_remove("SBX_API_KEY")
            .env_remove("SBX_API_KEY_FILE")
            .env("SBX_DATA_DIR", data_dir)
            .output()
            .unwrap()
    };
    let out = run(&["whoami"], d.data_dir());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("admin (admin)"),
        "{}",
        text(&out.stdout)
    );
    // Elsewhere, without SBX_API_KEY: a clear error and a non-zero exit.
    let out = run(&["ls"], std::path::Path::new("/nonexistent"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("SBX_API_KEY"),
        "{}",
        text(&out.stderr)
    );

    let out = d.cli(&["keys", "create", "--user", "dave"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dave = text(&out.stdout).trim().to_owned();
    assert!(dave.starts_with("sbx_"), "{dave}");
    let out = cli_as(&d.url, Some(&dave), &["whoami"], None);
    assert!(
        text(&out.stdout).starts_with("dave"),
        "{}",
        text(&out.stdout)
    );
    let out = d.cli(&["keys", "ls"]);
    let listing = text(&out.stdout);
    assert!(
        listing.contains("dave") && listing.contains("active"),
        "{listing}"
    );
    assert!(!listing.contains(&dave), "the list shows a secret");
    let dave_id = dave.split('_').nth(1).unwrap();
    let out = d.cli(&["keys", "revoke", dave_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli_as(&d.url, Some(&dave), &["ls"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid or revoked"));
    // A user's key cannot create keys.
    let (erin, _) = d.user("erin").await;
    let out = cli_as(
        &d.url,
        Some(&erin),
        &["keys", "create", "--user", "x"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("admin"), "{}", text(&out.stderr));
    d.finish().await;
}

#[tokio::test]
async fn insecure_no_auth_is_loud_and_loopback_only() {
    let d = TestDaemon::start_with(crate::daemon::Options {
        args: &["--insecure-no-auth"],
        ..Default::default()
    })
    .await;
    assert!(
        d.admin_key.is_empty(),
        "no admin key without authentication"
    );
    let me = d.client.whoami().await.unwrap();
    assert!(me.admin && me.key_id.is_none());
    let sandbox = d.create().await;
    let result = d
        .client
        .exec(
            &sandbox.id,
            &ExecRequest {
                cmd: vec!["true".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(result.exit_code, 0);
    assert!(d.log().contains("AUTHENTICATION IS OFF"), "{}", d.log());
    d.finish().await;
    // Anywhere but loopback it is refused before anything starts.
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(SBX)
        .args([
            "serve",
            "--insecure-no-auth",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("loopback"),
        "{}",
        text(&out.stderr)
    );
}
