//! Exec: collected and streamed output, binary safety, stdin, env, cwd, users, timeouts, and
//! state that persists between execs.

use futures::StreamExt;
use sbx_protocol::{decode_data, Encoding, ExecEvent, ExecRequest};

use crate::daemon::TestDaemon;

fn cmd(args: &[&str]) -> ExecRequest {
    ExecRequest {
        cmd: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn collected_output_exit_codes_and_binary_safety() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let result = d.sh(&id, "echo out; echo err >&2; exit 7").await;
    assert_eq!(
        (result.exit_code, result.signal, result.timed_out),
        (7, None, false)
    );
    assert_eq!(
        (result.stdout.as_str(), result.stderr.as_str()),
        ("out\n", "err\n")
    );
    assert_eq!(result.stdout_encoding, Encoding::Utf8);
    assert!(result.duration_ms > 0.0);

    // Bytes that are not UTF-8 come back base64-encoded, exactly.
    let result = d.sh(&id, "printf '\\377\\000\\376'").await;
    assert_eq!(result.stdout_encoding, Encoding::Base64);
    assert_eq!(
        decode_data(&result.stdout, result.stdout_encoding).unwrap(),
        vec![0xff, 0x00, 0xfe]
    );

    // A signal ends it: reported as the signal and 128 + signal.
    let result = d.sh(&id, "kill -TERM $$").await;
    assert_eq!((result.exit_code, result.signal), (143, Some(15)));

    // Larger output arrives whole.
    let result = d.sh(&id, "head -c 3000000 /dev/zero | tr '\\0' x").await;
    assert_eq!(result.stdout.len(), 3_000_000);
    assert!(!result.stdout_truncated);
    d.finish().await;
}

#[tokio::test]
async fn stdin_env_cwd_and_user() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let mut request = cmd(&["cat"]);
    request.stdin = Some("hello\n".into());
    assert_eq!(
        d.client.exec(&id, &request).await.unwrap().stdout,
        "hello\n"
    );
    request.stdin = Some("AP8K".into()); // 0x00 0xff \n
    request.stdin_encoding = Some(Encoding::Base64);
    let result = d.client.exec(&id, &request).await.unwrap();
    assert_eq!(
        decode_data(&result.stdout, result.stdout_encoding).unwrap(),
        vec![0, 0xff, b'\n']
    );
    // Without stdin the command reads /dev/null.
    assert_eq!(d.client.exec(&id, &cmd(&["cat"])).await.unwrap().stdout, "");

    let mut request = cmd(&[
        "sh",
        "-c",
        "echo $COLOUR:$HOME:$TMPDIR:$USER:$(pwd):$(id -u)",
    ]);
    request.env = [("COLOUR".to_string(), "red".to_string())].into();
    assert_eq!(
        d.client.exec(&id, &request).await.unwrap().stdout,
        "red:/home/user:/tmp:user:/home/user:1000\n"
    );
    request.user = Some("root".into());
    request.cwd = Some("/tmp".into());
    assert_eq!(
        d.client.exec(&id, &request).await.unwrap().stdout,
        "red:/root:/tmp:root:/tmp:0\n"
    );
    request.user = Some("4242".into());
    assert!(d
        .client
        .exec(&id, &request)
        .await
        .unwrap()
        .stdout
        .ends_with(":/tmp:4242\n"));
    // PATH lookup, and a program given by path.
    assert_eq!(
        d.client
            .exec(&id, &cmd(&["/bin/echo", "a b"]))
            .await
            .unwrap()
            .stdout,
        "a b\n"
    );
    // Arguments are not interpreted by a shell.
    assert_eq!(
        d.client
            .exec(&id, &cmd(&["echo", "$HOME;", "*"]))
            .await
            .unwrap()
            .stdout,
        "$HOME; *\n"
    );
    d.finish().await;
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let mut request = cmd(&["sh", "-c", "sleep 300 & echo started; sleep 300"]);
    request.timeout = Some(0.5.into());
    let result = d.client.exec(&id, &request).await.unwrap();
    assert!(result.timed_out);
    assert_eq!((result.exit_code, result.signal), (137, Some(9)));
    assert_eq!(result.stdout, "started\n");
    assert!(result.duration_ms >= 500.0, "{}", result.duration_ms);
    // The background sleep of the same group is gone too.
    let ps = d.sh(&id, "ps -eo comm= | grep -c '^sleep$' || true").await;
    assert_eq!(ps.stdout.trim(), "0", "{}", ps.stdout);
    // A command that ends in time is not marked.
    request.cmd = vec!["true".into()];
    assert!(!d.client.exec(&id, &request).await.unwrap().timed_out);
    d.finish().await;
}

/// A streamed command whose client stops reading (its output queue full, the daemon waiting
/// to hand it more) is still killed at its timeout.
#[tokio::test]
async fn timeout_fires_while_the_client_does_not_read() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let mut request = cmd(&["sh", "-c", "exec yes flood-of-output"]);
    request.timeout = Some(1.0.into());
    let stream = d.client.exec_stream(&id, &request).await.unwrap();
    // Held, never read.
    let running = || async {
        d.sh(&id, "pgrep -x yes >/dev/null && echo running || echo gone")
            .await
            .stdout
    };
    assert_eq!(running().await, "running\n");
    let started = std::time::Instant::now();
    while running().await != "gone\n" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the command outlived its timeout while its client did not read"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(stream);
    d.finish().await;
}

#[tokio::test]
async fn state_persists_across_execs() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    // A background process outlives the exec that started it, and does not hold it open.
    let result = d
        .sh(
            &id,
            "echo data > /home/user/file; sleep 600 > /dev/null 2>&1 & echo $! > /tmp/pid",
        )
        .await;
    assert_eq!(result.exit_code, 0);
    // Even one that keeps the output pipe open.
    let result = d.sh(&id, "sleep 500 & echo bg").await;
    assert_eq!(result.stdout, "bg\n");
    let result = d
        .sh(
            &id,
            "cat /home/user/file; kill -0 $(cat /tmp/pid) && echo alive; pgrep -c sleep",
        )
        .await;
    assert_eq!(result.stdout, "data\nalive\n2\n");
    // Zombies are reaped by the sandbox's init.
    d.sh(&id, "sh -c 'sleep 0.1 &' ; sleep 0.3").await;
    let zombies = d.sh(&id, "ps -eo stat= | grep -c Z || true").await;
    assert_eq!(zombies.stdout.trim(), "0");
    d.finish().await;
}

#[tokio::test]
async fn streamed_output_arrives_as_it_is_produced() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    // The command waits for a file that only appears after the test has seen its first line:
    // the first line must be delivered while the command still runs.
    let script = "echo first; echo warn >&2; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo second; exit 4";
    let mut events = d
        .client
        .exec_stream(&id, &cmd(&["sh", "-c", script]))
        .await
        .unwrap();
    assert!(matches!(events.next().await.unwrap().unwrap(), ExecEvent::Started { pid } if pid > 1));
    let mut stdout = String::new();
    let mut stderr = String::new();
    while !stdout.contains("first") {
        match events.next().await.unwrap().unwrap() {
            ExecEvent::Stdout { data, .. } => stdout.push_str(&data),
            ExecEvent::Stderr { data, .. } => stderr.push_str(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(d.sh(&id, "touch /tmp/go").await.exit_code, 0);
    let mut exit = None;
    while let Some(event) = events.next().await {
        match event.unwrap() {
            ExecEvent::Stdout { data, .. } => stdout.push_str(&data),
            ExecEvent::Stderr { data, .. } => stderr.push_str(&data),
            ExecEvent::Exit(info) => exit = Some(info),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(stdout, "first\nsecond\n");
    assert_eq!(stderr, "warn\n");
    assert_eq!(exit.expect("exit is the last event").exit_code, 4);
    // A start failure is an HTTP error, not a stream.
    let error = d
        .client
        .exec_stream(&id, &cmd(&["no-such-program"]))
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), Some("exec_failed"));
    d.finish().await;
}

#[tokio::test]
async fn destroying_a_sandbox_ends_its_running_exec() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let mut events = d
        .client
        .exec_stream(&id, &cmd(&["sleep", "600"]))
        .await
        .unwrap();
    assert!(matches!(
        events.next().await.unwrap().unwrap(),
        ExecEvent::Started { .. }
    ));
    d.client.delete(&id).await.unwrap();
    match events.next().await.unwrap().unwrap() {
        ExecEvent::Error { error } => assert_eq!(error.code, "sandbox_gone"),
        other => panic!("expected an error event, got {other:?}"),
    }
    d.finish().await;
}
