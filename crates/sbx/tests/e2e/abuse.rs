//! Abuse of the API surface (issue 9, findings 9–14): flooding the audit trail without a key,
//! driving a daemon without authentication from a web page, evicting others' web sessions,
//! names that fall through to another user's sandbox, terminal escapes in CLI output, and
//! streams that outlive their key. Each test mounts the attack through the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use sbx_api_client::Message;
use sbx_protocol::{CreateSandboxRequest, ExecEvent, ExecRequest, TerminalRequest};

use crate::auth::call;
use crate::daemon::{text, Options, TestDaemon};

/// Sends `request` (a whole HTTP/1.1 request, any headers) to the daemon; the status code.
fn raw_status(d: &TestDaemon, request: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let answer = text(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn audit_lines(d: &TestDaemon, file: &str) -> Vec<String> {
    std::fs::read_to_string(d.data_dir().join(file))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn issue_9_anonymous_floods_cannot_erase_the_audit_trail() {
    let d = TestDaemon::start_with(Options {
        config: Some("[audit]\nmax_bytes = 65536\nkeep = 1\nmax_total_bytes = 262144\n"),
        ..Default::default()
    })
    .await;
    let id = d.create().await.id;
    let log_before = d.log().len();
    // 2,000 anonymous requests with 60 KB paths, then 2,000 with 4 KB ones, 64 at a time
    // (within the connections one address may have): every one is answered.
    let flood = |path: String, expected: u16| {
        let url = format!("{}{path}", d.url);
        async move {
            let client = reqwest::Client::new();
            let answers: Vec<u16> = futures::stream::iter(0..2000)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
                })
                .buffer_unordered(64)
                .filter_map(|answer| async move { answer.ok() })
                .collect()
                .await;
            assert_eq!(answers.len(), 2000, "requests went unanswered");
            assert!(answers.iter().all(|s| *s == expected), "{answers:?}");
        }
    };
    flood(format!("/v1/sandboxes/{}", "x".repeat(60_000)), 414).await;
    flood(format!("/v1/sandboxes/{}", "y".repeat(4000)), 401).await;
    // What the admin did is still there, and the trail of keys did not rotate.
    let created = d
        .client
        .audit(&[("event", "sandbox.created".into())])
        .await
        .unwrap();
    assert!(
        created.iter().any(|e| e.sandbox_id.as_deref() == Some(&id)),
        "{created:?}"
    );
    assert!(
        !d.data_dir().join("audit.log.1").exists(),
        "the main trail rotated"
    );
    assert!(
        audit_lines(&d, "audit.log")
            .iter()
            .all(|l| !l.contains("auth.failed")),
        "anonymous refusals went to the main trail"
    );
    // The anonymous trail holds a burst from this address, with short paths.
    let anonymous = audit_lines(&d, "audit-anonymous.log");
    assert!(
        (1..=20).contains(&anonymous.len()),
        "{} anonymous entries",
        anonymous.len()
    );
    assert!(anonymous.iter().all(|l| l.len() < 2048), "long lines");
    // The daemon's own log grew by little.
    let grown = d.log().len() - log_before;
    assert!(grown < 2 << 20, "the daemon log grew by {grown} bytes");
    d.finish().await;
}

#[tokio::test]
async fn issue_9_without_authentication_only_this_hosts_own_pages_may_act() {
    let d = TestDaemon::start_with(Options {
        args: &["--insecure-no-auth"],
        ..Default::default()
    })
    .await;
    let local = format!("127.0.0.1:{}", d.port);
    let post = |host: &str, extra: &str, body: &str| {
        format!(
            "POST /v1/sandboxes HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    // DNS rebinding: the browser sends the attacker's name as Host (and Origin).
    assert_eq!(raw_status(&d, &post("evil.example", "", "")), 403);
    assert_eq!(
        raw_status(
            &d,
            &post(
                "evil.example:7070",
                "Origin: http://evil.example:7070\r\nContent-Type: application/json\r\n",
                "{}"
            )
        ),
        403
    );
    // A page of another site, through the loopback name: its Origin gives it away.
    assert_eq!(
        raw_status(&d, &post(&local, "Origin: https://evil.example\r\n", "")),
        403
    );
    // fetch(…, {mode: "no-cors", body: new Blob([…])}) sends no Content-Type.
    assert_eq!(raw_status(&d, &post(&local, "", r#"{"ttl":"5m"}"#)), 415);
    // No key can be made to outlive this mode.
    let (status, _, body) = call(
        &d,
        Method::POST,
        "/v1/keys",
        None,
        Some(r#"{"user":"mallory","admin":true}"#),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // This host's own tools work: the CLI, curl, the daemon's own page.
    assert_eq!(
        raw_status(
            &d,
            &post(
                &local,
                &format!("Origin: http://{local}\r\nContent-Type: application/json\r\n"),
                "{}"
            )
        ),
        201
    );
    let id = d.create().await.id;
    assert_eq!(d.sh(&id, "echo ok").await.stdout, "ok\n");
    d.finish().await;
}

#[tokio::test]
async fn issue_9_one_key_cannot_log_everyone_else_out() {
    let d = TestDaemon::start().await;
    let (alice, _) = d.user("alice").await;
    let (bob, _) = d.user("bob").await;
    let login = |key: String| {
        let url = format!("{}/v1/login", d.url);
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&serde_json::json!({ "key": key }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let cookie = response
                .headers()
                .get("set-cookie")
                .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned());
            (status, cookie)
        }
    };
    let whoami = |cookie: String| {
        let url = format!("{}/v1/whoami", d.url);
        async move {
            reqwest::Client::new()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (status, bob_session) = login(bob).await;
    assert_eq!(status, 200);
    let bob_session = bob_session.unwrap();
    // Alice logs in as fast as she can: the address's allowance runs out, and of her own
    // sessions only the newest 16 stay.
    let mut sessions = Vec::new();
    let mut refused = 0;
    for _ in 0..100 {
        match login(alice.clone()).await {
            (200, Some(cookie)) => sessions.push(cookie),
            (429, _) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(refused >= 69, "only {refused} logins refused");
    assert_eq!(whoami(bob_session).await, 200, "bob was logged out");
    let mut live = 0;
    for cookie in &sessions {
        if whoami(cookie.clone()).await == 200 {
            live += 1;
        }
    }
    assert_eq!(
        live,
        sbx_lifecycle::MAX_SESSIONS_PER_KEY.min(sessions.len())
    );
    d.finish().await;
}

#[tokio::test]
async fn issue_9_names_resolve_within_the_callers_own_sandboxes() {
    let d = TestDaemon::start().await;
    let (alice_key, alice) = d.user("alice").await;
    let named = CreateSandboxRequest {
        name: Some("build".into()),
        ..Default::default()
    };
    let mine = d.client.create(&named).await.unwrap();
    let hers = alice.create(&named).await.unwrap();
    d.client.delete(&mine.id).await.unwrap();
    // The admin's own `build` is gone: the name does not fall through to alice's.
    let exec = d.cli_with_stdin(&["exec", "-i", "build", "--", "cat"], Some(b"secret"));
    assert_eq!(exec.status.code(), Some(125), "{}", text(&exec.stdout));
    assert!(
        text(&exec.stderr).contains("no sandbox"),
        "{}",
        text(&exec.stderr)
    );
    // By owner/name (or id) the admin reaches it on purpose.
    let exec = d.cli(&["exec", "alice/build", "--", "hostname"]);
    assert_eq!(text(&exec.stdout), format!("{}\n", hers.id));
    // A user may write her own name before it; never someone else's.
    let (_, bob) = d.user("bob").await;
    assert!(bob.get("alice/build").await.is_err());
    let own = crate::daemon::cli_as(&d.url, Some(&alice_key), &["inspect", "alice/build"], None);
    assert!(own.status.success(), "{}", text(&own.stderr));
    d.finish().await;
}

#[tokio::test]
async fn issue_9_cli_output_shows_control_characters_instead_of_obeying_them() {
    let d = TestDaemon::start().await;
    let (_, alice) = d.user("alice").await;
    // OSC 52 (write the reader's clipboard), a line erase and a bidi override.
    let hostile = "x\u{1b}]52;c;ZWNobyBvd25lZA==\u{7}\u{1b}[2K\r\u{202e}gnp.exe";
    let sandbox = alice
        .create(&CreateSandboxRequest {
            metadata: [("note".to_owned(), hostile.to_owned())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for args in [
        vec!["inspect", sandbox.id.as_str()],
        vec!["ls"],
        vec!["audit", "--event", "sandbox."],
    ] {
        let output = d.cli(&args);
        let printed = text(&output.stdout);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        for forbidden in ['\u{1b}', '\u{7}', '\r', '\u{202e}'] {
            assert!(
                !printed.contains(forbidden),
                "{args:?} printed {forbidden:?}: {printed:?}"
            );
        }
    }
    let inspect = text(&d.cli(&["inspect", sandbox.id.as_str()]).stdout);
    assert!(inspect.contains("\\x1b]52;c;"), "{inspect}");
    d.finish().await;
}

#[tokio::test]
async fn issue_9_revoking_a_key_closes_its_terminals_streams_and_feeds() {
    let d = TestDaemon::start().await;
    let (alice_key, alice) = d.user("alice").await;
    let id = alice
        .create(&CreateSandboxRequest::default())
        .await
        .unwrap()
        .id;
    let mut terminal = alice
        .terminal(
            &id,
            &TerminalRequest {
                // Immune to the hangup a closed terminal sends: only a kill ends it.
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "trap '' HUP; sleep 300 & wait".into(),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut stream = alice
        .exec_stream(
            &id,
            &ExecRequest {
                cmd: vec!["sh".into(), "-c".into(), "echo go; sleep 301".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Ok(ExecEvent::Started { .. }))
    ));
    // The command is past its `echo` (which a detach would otherwise break) and in `sleep`.
    assert!(matches!(
        stream.next().await,
        Some(Ok(ExecEvent::Stdout { .. }))
    ));
    let mut events = alice.events(None, None).await.unwrap();
    let key_id = alice_key.split('_').nth(1).unwrap().to_owned();
    d.client.revoke_key(&key_id).await.unwrap();
    let revoked_at = Instant::now();
    let within = Duration::from_secs(5);
    // The terminal closes (its processes with it)…
    let closed = tokio::time::timeout(within, async {
        while let Some(message) = terminal.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|f| u16::from(f.code));
            }
            if message.is_err() {
                return None;
            }
        }
        None
    })
    .await
    .expect("the terminal stays open");
    assert_eq!(closed, Some(1008));
    // …the exec stream ends with an error line…
    let ended = tokio::time::timeout(within, async {
        let mut last = None;
        while let Some(event) = stream.next().await {
            last = Some(event);
        }
        last
    })
    .await
    .expect("the exec stream stays open");
    assert!(
        matches!(&ended, Some(Ok(ExecEvent::Error { error })) if error.code == "credential_ended"),
        "{ended:?}"
    );
    // …and the event feed ends.
    let feed = tokio::time::timeout(within, async { while events.next().await.is_some() {} }).await;
    assert!(feed.is_ok(), "the event feed stays open");
    assert!(revoked_at.elapsed() < within);
    // The terminal's processes are gone; the exec's command was only detached from (its
    // `sleep` may still be on its way: a loaded machine can be slow to start it).
    let left = d
        .sh(
            &id,
            "for i in $(seq 100); do \
               pgrep -f '^sleep 30[1]$' >/dev/null && ! pgrep -f '^sleep 30[0]$' >/dev/null && break; \
               sleep 0.05; \
             done; \
             echo \"$(pgrep -c -f '^sleep 30[1]$') $(pgrep -c -f '^sleep 30[0]$')\"",
        )
        .await
        .stdout;
    assert_eq!(left.trim(), "1 0", "exec's, terminal's: {left}");
    d.finish().await;
}

#[tokio::test]
async fn issue_9_durations_are_seconds_or_text_everywhere() {
    let d = TestDaemon::start().await;
    for (ttl, seconds) in [
        (serde_json::json!(600), 600),
        (serde_json::json!("10m"), 600),
    ] {
        let body = serde_json::json!({ "ttl": ttl }).to_string();
        let (status, _, body) = call(
            &d,
            Method::POST,
            "/v1/sandboxes",
            Some(&d.admin_key),
            Some(&body),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let sandbox: sbx_protocol::Sandbox = serde_json::from_str(&body).unwrap();
        let left = sandbox.expires_in_seconds.unwrap();
        assert!((seconds - 5..=seconds).contains(&left), "{left}");
        let extend = format!("/v1/sandboxes/{}/ttl", sandbox.id);
        for duration in [serde_json::json!(1200), serde_json::json!("20m")] {
            let body = serde_json::json!({ "duration": duration }).to_string();
            let (status, _, body) =
                call(&d, Method::PATCH, &extend, Some(&d.admin_key), Some(&body)).await;
            assert_eq!(status, 200, "{body}");
        }
        let exec = format!("/v1/sandboxes/{}/exec", sandbox.id);
        for timeout in [serde_json::json!(0.5), serde_json::json!("1s")] {
            let body =
                serde_json::json!({ "cmd": ["sleep", "10"], "timeout": timeout }).to_string();
            let (status, _, body) =
                call(&d, Method::POST, &exec, Some(&d.admin_key), Some(&body)).await;
            assert_eq!(status, 200, "{body}");
            assert!(body.contains("\"timed_out\":true"), "{body}");
        }
        for bad in [
            serde_json::json!(-1),
            serde_json::json!("soon"),
            serde_json::json!(true),
        ] {
            let body = serde_json::json!({ "cmd": ["true"], "timeout": bad }).to_string();
            let (status, _, body) =
                call(&d, Method::POST, &exec, Some(&d.admin_key), Some(&body)).await;
            assert_eq!(status, 400, "{body}");
        }
    }
    let cli = d.cli(&["exec", "--timeout", "1s", "x", "--", "true"]);
    assert!(
        text(&cli.stderr).contains("no sandbox"),
        "{}",
        text(&cli.stderr)
    );
    d.finish().await;
}
