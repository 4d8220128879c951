//! The audit log: each event type with its fields, filters, `sbx audit`, rotation, and no
//! secret in any log.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use sbx_protocol::{AuditEntry, CreateSandboxRequest, ExecRequest, TerminalRequest};

use crate::auth::call;
use crate::daemon::{text, Options, TestDaemon};

async fn entries(d: &TestDaemon, event: &str) -> Vec<AuditEntry> {
    d.client
        .audit(&[("event", event.to_owned()), ("limit", "10000".into())])
        .await
        .unwrap()
}

/// The newest entry of `event` (waiting a little for events that end in the background).
async fn latest(d: &TestDaemon, event: &str) -> AuditEntry {
    for _ in 0..100 {
        if let Some(entry) = entries(d, event).await.pop() {
            return entry;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {event} entry in the audit log");
}

#[tokio::test]
async fn every_security_event_is_audited_with_its_fields() {
    let d = TestDaemon::start_with(Options {
        config: Some("[limits.users.alice]\nconcurrent_sandboxes = 1\n"),
        ..Default::default()
    })
    .await;
    let admin_key_id = d.client.whoami().await.unwrap().key_id.unwrap();
    let (alice_key, alice) = d.user("alice").await;
    let alice_key_id = alice.whoami().await.unwrap().key_id.unwrap();

    let created = latest(&d, "key.created").await;
    assert_eq!(created.key_id.as_deref(), Some(admin_key_id.as_str()));
    assert_eq!(created.details["for_user"], "alice");
    assert_eq!(created.details["target_key_id"], alice_key_id.as_str());
    assert_eq!(created.ip.as_deref(), Some("127.0.0.1"));
    assert!(created.request_id.as_deref().unwrap().starts_with("req_"));

    // Authentication failures: missing and wrong keys (the wrong one by id, never the key).
    let (status, headers, _) = call(&d, Method::GET, "/v1/sandboxes", None, None).await;
    assert_eq!(status, 401);
    let failed = latest(&d, "auth.failed").await;
    assert_eq!(failed.details["reason"], "missing");
    assert_eq!(failed.details["path"], "/v1/sandboxes");
    assert_eq!(
        failed.request_id.as_deref(),
        headers["x-request-id"].to_str().ok()
    );
    let wrong = format!("sbx_{alice_key_id}_{}", "b".repeat(32));
    call(&d, Method::GET, "/v1/sandboxes", Some(&wrong), None).await;
    let failed = latest(&d, "auth.failed").await;
    assert_eq!(failed.details["reason"], "wrong_secret");
    assert_eq!(failed.key_id.as_deref(), Some(alice_key_id.as_str()));

    // Sandbox created, exec (argv, exit code, duration), terminal opened and closed.
    let sandbox = alice
        .create(&CreateSandboxRequest {
            ttl: Some("1s".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let entry = latest(&d, "sandbox.created").await;
    assert_eq!(entry.sandbox_id.as_deref(), Some(sandbox.id.as_str()));
    assert_eq!(entry.user.as_deref(), Some("alice"));
    assert_eq!(entry.key_id.as_deref(), Some(alice_key_id.as_str()));
    assert_eq!(entry.details["profile"], "default");
    let request = ExecRequest {
        cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
        env: [("TOKEN".to_string(), "env-value-never-logged".to_string())].into(),
        ..Default::default()
    };
    alice.exec(&sandbox.id, &request).await.unwrap();
    let exec = latest(&d, "exec").await;
    assert_eq!(exec.sandbox_id.as_deref(), Some(sandbox.id.as_str()));
    assert_eq!(
        exec.details["argv"],
        serde_json::json!(["sh", "-c", "exit 3"])
    );
    assert_eq!(exec.details["exit_code"], 3);
    assert!(exec.details["duration_ms"].as_u64().is_some());
    assert_eq!(exec.user.as_deref(), Some("alice"));
    let mut terminal = alice
        .terminal(&sandbox.id, &TerminalRequest::default())
        .await
        .unwrap();
    let _started = terminal.next().await;
    let opened = latest(&d, "terminal.opened").await;
    assert_eq!(opened.sandbox_id.as_deref(), Some(sandbox.id.as_str()));
    drop(terminal);
    let closed = latest(&d, "terminal.closed").await;
    assert_eq!(closed.sandbox_id.as_deref(), Some(sandbox.id.as_str()));
    assert!(closed.details["duration_ms"].as_u64().is_some());

    // A rate limit or quota hit names the limit; rejected input names its code.
    let error = alice
        .create(&CreateSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("quota_exceeded"));
    let limited = latest(&d, "rate_limited").await;
    assert_eq!(limited.details["limit"], "concurrent_sandboxes");
    assert_eq!(limited.user.as_deref(), Some("alice"));
    call(
        &d,
        Method::POST,
        "/v1/sandboxes",
        Some(&alice_key),
        Some(r#"{"colour":"red"}"#),
    )
    .await;
    let rejected = latest(&d, "input.rejected").await;
    assert_eq!(rejected.details["code"], "invalid_request");
    assert!(rejected.details["message"]
        .as_str()
        .unwrap()
        .contains("colour"));
    call(&d, Method::POST, "/v1/expire", Some(&alice_key), Some("{}")).await;
    assert_eq!(
        latest(&d, "access.denied").await.details["code"],
        "admin_required"
    );

    // The deadline passes: expired, then destroyed by the daemon.
    d.wait_for(&sandbox.id, Duration::from_secs(20), |s| {
        s.state == sbx_protocol::SandboxState::Destroyed
    })
    .await;
    let expired = latest(&d, "sandbox.expired").await;
    assert_eq!(expired.sandbox_id.as_deref(), Some(sandbox.id.as_str()));
    assert_eq!(expired.user.as_deref(), Some("sbx"));
    assert_eq!(expired.details["owner"], "alice");
    let destroyed = latest(&d, "sandbox.destroyed").await;
    assert_eq!(destroyed.details["reason"], "expired");

    // A delete by its owner, and a revoked key.
    let second = alice
        .create(&CreateSandboxRequest::default())
        .await
        .unwrap();
    alice.delete(&second.id).await.unwrap();
    let destroyed = latest(&d, "sandbox.destroyed").await;
    assert_eq!(
        (destroyed.sandbox_id.as_deref(), destroyed.user.as_deref()),
        (Some(second.id.as_str()), Some("alice"))
    );
    assert_eq!(destroyed.details["reason"], "deleted");
    d.client.revoke_key(&alice_key_id).await.unwrap();
    assert_eq!(
        latest(&d, "key.revoked").await.details["target_key_id"],
        alice_key_id.as_str()
    );

    // Filters: by user, by sandbox, by family; `sbx audit` reads the same.
    let mine = d
        .client
        .audit(&[("user", "alice".into()), ("sandbox", sandbox.id.clone())])
        .await
        .unwrap();
    assert!(mine.len() >= 4 && mine.iter().all(|e| e.user.as_deref() == Some("alice")));
    let family = entries(&d, "sandbox.").await;
    assert!(family.iter().all(|e| e.event.starts_with("sandbox.")));
    let out = d.cli(&["audit", "--event", "exec", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line: AuditEntry = serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(line.event, "exec");
    let out = d.cli(&["audit", "--since", "1h", "--user", "alice"]);
    assert!(
        text(&out.stdout).contains("sandbox.created"),
        "{}",
        text(&out.stdout)
    );
    let out = d.cli(&["audit", "--since", "yesterday-ish"]);
    assert_eq!(out.status.code(), Some(1));

    // Nothing secret in any log: no key, no session token, no environment value.
    let login = reqwest::Client::new()
        .post(format!("{}/v1/login", d.url))
        .json(&serde_json::json!({ "key": d.admin_key }))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_owned();
    let secrets = [d.admin_key.clone(), alice_key.clone(), wrong.clone(), token];
    // A query flushes the audit writer; then every log is read as it is on disk.
    entries(&d, "auth.login").await;
    let mut logs = String::new();
    for entry in std::fs::read_dir(d.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("audit.log") || name == "daemon.log" {
            logs.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    d.finish().await;
    assert!(logs.contains("sandbox.created") && logs.contains("exec"));
    for secret in &secrets {
        let secret_part = secret.rsplit('_').next().unwrap();
        assert!(!logs.contains(secret_part), "a secret is in the logs");
    }
    assert!(!logs.contains("env-value-never-logged"));
}

#[tokio::test]
async fn the_audit_log_rotates_by_size() {
    let d = TestDaemon::start_with(Options {
        // Files younger than keep_for stay beyond `keep` unless the total cap says otherwise:
        // here the cap allows two rotated files.
        config: Some("[audit]\nmax_bytes = 4096\nkeep = 2\nmax_total_bytes = 12288\n"),
        ..Default::default()
    })
    .await;
    // Each command of a key is one line of a few hundred bytes.
    let (alice, alice_client) = d.user("alice").await;
    let id = alice_client
        .create(&sbx_protocol::CreateSandboxRequest::default())
        .await
        .unwrap()
        .id;
    let path = format!("/v1/sandboxes/{id}/exec");
    for _ in 0..60 {
        let body = r#"{"cmd":["true"]}"#;
        call(&d, Method::POST, &path, Some(&alice), Some(body)).await;
    }
    let read = |name: &str| std::fs::read_to_string(d.data_dir().join(name)).unwrap_or_default();
    // The writer is asynchronous: a query flushes it.
    let all = d
        .client
        .audit(&[("event", "exec".into()), ("limit", "10000".into())])
        .await
        .unwrap();
    assert!(!read("audit.log.1").is_empty() && !read("audit.log.2").is_empty());
    assert!(
        !d.data_dir().join("audit.log.3").exists(),
        "only `keep` rotated files"
    );
    for name in ["audit.log", "audit.log.1", "audit.log.2"] {
        let content = read(name);
        assert!(content.len() <= 4096, "{name} is {} bytes", content.len());
        for line in content.lines() {
            serde_json::from_str::<AuditEntry>(line).expect("whole lines only");
        }
    }
    // Queries read across the rotated files, oldest first; older lines are gone.
    assert!(all.len() > 10 && all.len() < 60, "{}", all.len());
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    d.finish().await;
}
