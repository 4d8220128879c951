//! Pause and resume through the binary: frozen processes use no CPU and keep their state,
//! commands are refused (or resume the sandbox, when the profile says so), a paused sandbox
//! survives a daemon crash paused, and leaves nothing behind when destroyed.

use std::time::Duration;

use sbx_protocol::{ExecRequest, SandboxState};

use crate::daemon::{text, Options, TestDaemon};

/// A counter in the sandbox's background: one increment every 20 ms, into /tmp/count.
const COUNTER: &str = "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done' >/dev/null 2>&1 &";

async fn count(d: &TestDaemon, id: &str) -> u64 {
    let out = d.sh(id, "cat /tmp/count").await;
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{out:?}"))
}

async fn cpu_seconds(d: &TestDaemon, id: &str) -> f64 {
    let status = d.client.status().await.unwrap();
    let sandbox = status.sandboxes.iter().find(|s| s.id == id).unwrap();
    sandbox
        .cpu_seconds
        .expect("the native backend reads CPU time")
}

#[tokio::test]
async fn a_paused_counter_stops_and_carries_on_where_it_was() {
    let d = TestDaemon::start().await;
    let sandbox = d.create().await;
    d.sh(&sandbox.id, COUNTER).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused = d.client.pause(&sandbox.id).await.unwrap();
    assert_eq!(paused.state, SandboxState::Paused);
    assert!(paused.paused_at.is_some(), "{paused:?}");
    // Frozen: no CPU at all while paused.
    let before = cpu_seconds(&d, &sandbox.id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cpu_seconds(&d, &sandbox.id).await, before);
    // Commands are refused while paused.
    let refused = d
        .client
        .exec(
            &sandbox.id,
            &ExecRequest {
                cmd: vec!["true".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("invalid_state"), "{refused}");
    // Resumed, it goes on from where it was: 1.3 s have passed, 65 increments' worth, but it
    // counted only while it ran.
    let resumed = d.client.resume(&sandbox.id).await.unwrap();
    assert_eq!(resumed.state, SandboxState::Running);
    let at_resume = count(&d, &sandbox.id).await;
    assert!((1..45).contains(&at_resume), "{at_resume}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(count(&d, &sandbox.id).await > at_resume);
    // The CLI, idempotent both ways.
    for verb in ["pause", "pause", "resume", "resume"] {
        let out = d.cli(&[verb, &sandbox.id]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // Another user's sandbox cannot be paused: for them it does not exist.
    let (_, mallory) = d.user("mallory").await;
    let hidden = mallory.pause(&sandbox.id).await.unwrap_err();
    assert_eq!(hidden.code(), Some("sandbox_not_found"), "{hidden}");
    // Destroyed while paused: at once, and nothing is left.
    d.client.pause(&sandbox.id).await.unwrap();
    let started = std::time::Instant::now();
    let gone = d.client.delete(&sandbox.id).await.unwrap();
    assert_eq!(gone.state, SandboxState::Destroyed);
    assert!(started.elapsed() < Duration::from_secs(5));
    d.assert_no_traces(&sandbox.id);
    d.finish().await;
}

#[tokio::test]
async fn a_paused_sandbox_survives_a_crash_paused_and_commands_can_resume_it() {
    let mut d = TestDaemon::start_with(Options {
        config: Some("[profiles.default]\nauto_resume = true\n"),
        ..Default::default()
    })
    .await;
    // The profile says so, for clients to know.
    let (status, body) = d
        .client
        .raw(reqwest::Method::GET, "/v1/profiles", None, Vec::new())
        .await
        .unwrap();
    assert_eq!(status, 200);
    let profiles: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(profiles["profiles"][0]["auto_resume"], true, "{profiles}");
    assert_eq!(
        profiles["profiles"][0]["idle_action"], "destroy",
        "{profiles}"
    );
    let sandbox = d.create().await;
    d.sh(&sandbox.id, "echo kept > /tmp/state").await;
    d.client.pause(&sandbox.id).await.unwrap();
    d.crash();
    d.restart().await;
    assert_eq!(
        d.client.get(&sandbox.id).await.unwrap().state,
        SandboxState::Paused
    );
    // With `auto_resume`, a command resumes it, and finds everything where it was.
    assert_eq!(d.sh(&sandbox.id, "cat /tmp/state").await.stdout, "kept\n");
    assert_eq!(
        d.client.get(&sandbox.id).await.unwrap().state,
        SandboxState::Running
    );
    d.finish().await;
}
