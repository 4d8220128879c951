//! Lifecycle: profiles, TTL and extend, the reaper (expiry and idleness), expire on demand,
//! recreate, the event log and stream, status, configuration checking.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use sbx_protocol::{CreateSandboxRequest, SandboxState};

use crate::daemon::{text, Options, TestDaemon, SBX};

/// A profile with a short maximum, to see caps; one that reaps idle sandboxes quickly.
const CONFIG: &str = r#"
[reaper]
interval = "1s"

[profiles.short]
ttl = { default = "10m", max = "1h" }
resources = { memory_mb = 128, pids = 64 }

[profiles.idle]
ttl = { default = "1h", max = "2h", idle = "2s" }
"#;

fn seconds_until(rfc3339: &str) -> f64 {
    let at = humantime::parse_rfc3339(rfc3339).unwrap();
    match at.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn create(profile: Option<&str>, ttl: Option<&str>) -> CreateSandboxRequest {
    CreateSandboxRequest {
        profile: profile.map(Into::into),
        ttl: ttl.map(Into::into),
        ..Default::default()
    }
}

#[tokio::test]
async fn ttl_is_parsed_capped_and_extended() {
    let d = TestDaemon::start_with(Options {
        config: Some(CONFIG),
        ..Default::default()
    })
    .await;
    // Valid lifetimes set the deadline from now.
    for (ttl, seconds) in [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("0h45m30s", 2730.0),
    ] {
        let sandbox = d
            .client
            .create(&create(Some("short"), Some(ttl)))
            .await
            .unwrap();
        let left = seconds_until(&sandbox.expires_at);
        assert!((seconds - 5.0..=seconds).contains(&left), "{ttl}: {left}");
        assert!(sandbox.warnings.is_empty());
        assert_eq!(sandbox.profile, "short");
        d.client.delete(&sandbox.id).await.unwrap();
    }
    // Invalid ones are 400 and name the value.
    for ttl in ["", "10", "5x", "1.5h", "-1m", "1m1h", "0s", "forever"] {
        let error = d
            .client
            .create(&create(Some("short"), Some(ttl)))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some("invalid_request"), "{ttl}: {error}");
        assert!(
            error.to_string().contains(&format!("{ttl:?}")),
            "{ttl}: {error}"
        );
    }
    // Above the profile's maximum: capped, and the response says so.
    let capped = d
        .client
        .create(&create(Some("short"), Some("1d")))
        .await
        .unwrap();
    assert!(seconds_until(&capped.expires_at) <= 3600.0);
    assert!(
        capped.warnings[0].contains("capped at 1h"),
        "{:?}",
        capped.warnings
    );
    // The profile's default applies without a ttl; its resources too.
    let default = d.client.create(&create(Some("short"), None)).await.unwrap();
    assert!((590.0..=600.0).contains(&seconds_until(&default.expires_at)));
    assert_eq!(
        (default.resources.memory_mb, default.resources.pids),
        (128, 64)
    );
    assert!(default.expires_in_seconds.unwrap() > 590);

    // Extend: from now, capped by the maximum lifetime, with the reason recorded.
    let extended = d.client.extend(&default.id, "20m").await.unwrap();
    assert!((1190.0..=1200.0).contains(&seconds_until(&extended.expires_at)));
    let capped = d.client.extend(&default.id, "5h").await.unwrap();
    assert!(
        capped.warnings[0].contains("capped"),
        "{:?}",
        capped.warnings
    );
    let left = seconds_until(&capped.expires_at);
    assert!((3500.0..=3600.0).contains(&left), "{left}");
    let error = d.client.extend(&default.id, "soon").await.unwrap_err();
    assert_eq!(error.code(), Some("invalid_request"));
    let history = d.client.sandbox_events(&default.id).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.reason.as_deref() == Some("extended") && e.detail.as_deref() == Some("20m")),
        "{history:?}"
    );
    // Destroyed: 409.
    d.client.delete(&default.id).await.unwrap();
    let error = d.client.extend(&default.id, "1h").await.unwrap_err();
    assert_eq!(error.code(), Some("invalid_state"));
    // Profiles that do not exist.
    let error = d
        .client
        .create(&create(Some("gpu"), None))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("profile_not_found"));
    assert!(error.to_string().contains("short"), "{error}");
    d.finish().await;
}

#[tokio::test]
async fn a_sandbox_is_destroyed_within_two_seconds_of_its_deadline() {
    let d = TestDaemon::start().await;
    let sandbox = d.client.create(&create(None, Some("2s"))).await.unwrap();
    d.sh(&sandbox.id, "sleep 600 > /dev/null 2>&1 &").await;
    let gone = d
        .wait_for(&sandbox.id, Duration::from_secs(10), |s| {
            s.state == SandboxState::Destroyed
        })
        .await;
    assert_eq!(gone.state_reason.as_deref(), Some("expired"));
    let deadline = humantime::parse_rfc3339(&gone.expires_at).unwrap();
    let destroyed = humantime::parse_rfc3339(gone.destroyed_at.as_deref().unwrap()).unwrap();
    let late = destroyed
        .duration_since(deadline)
        .expect("destroyed after its deadline");
    assert!(
        late <= Duration::from_secs(2),
        "destroyed {late:?} after its deadline"
    );
    d.assert_no_traces(&sandbox.id);
    let states: Vec<SandboxState> = d
        .client
        .sandbox_events(&sandbox.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.to_state)
        .collect();
    use SandboxState::*;
    assert_eq!(
        states,
        vec![Creating, Running, Expired, Destroying, Destroyed]
    );
    let error = d.client.extend(&sandbox.id, "1h").await.unwrap_err();
    assert_eq!(error.code(), Some("invalid_state"));
    d.finish().await;
}

#[tokio::test]
async fn expire_on_demand_when_the_reaper_is_off() {
    let config = "[reaper]\nenabled = false\n";
    let d = TestDaemon::start_with(Options {
        config: Some(config),
        ..Default::default()
    })
    .await;
    let short = d.client.create(&create(None, Some("1s"))).await.unwrap();
    let long = d.create().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Past its deadline it shows as expired and refuses exec and extend.
    let seen = d.client.get(&short.id).await.unwrap();
    assert_eq!(
        (seen.state, seen.expires_in_seconds),
        (SandboxState::Expired, Some(0))
    );
    assert_eq!(
        d.client.extend(&short.id, "1h").await.unwrap_err().code(),
        Some("invalid_state")
    );
    // Dry run lists it, and only it.
    let out = d.cli(&["expire"]);
    assert!(text(&out.stdout).contains(&short.id) && !text(&out.stdout).contains(&long.id));
    assert!(text(&out.stdout).contains("dry run"));
    assert_eq!(
        d.client.get(&short.id).await.unwrap().state,
        SandboxState::Expired
    );
    let applied = d.client.expire(true).await.unwrap();
    assert!(applied.applied);
    assert_eq!(applied.sandboxes.len(), 1);
    assert_eq!(applied.sandboxes[0].state, SandboxState::Destroyed);
    assert_eq!(
        applied.sandboxes[0].state_reason.as_deref(),
        Some("expired")
    );
    d.assert_no_traces(&short.id);
    // Idempotent.
    assert!(d.client.expire(true).await.unwrap().sandboxes.is_empty());
    assert_eq!(
        d.client.get(&long.id).await.unwrap().state,
        SandboxState::Running
    );
    d.finish().await;
}

#[tokio::test]
async fn idle_sandboxes_are_reaped_but_busy_ones_are_spared() {
    let d = TestDaemon::start_with(Options {
        config: Some(CONFIG),
        ..Default::default()
    })
    .await;
    let idle = d.client.create(&create(Some("idle"), None)).await.unwrap();
    let busy = d.client.create(&create(Some("idle"), None)).await.unwrap();
    d.sh(&busy.id, "sleep 600 > /dev/null 2>&1 & echo $! > /tmp/pid")
        .await;
    let reaped = d
        .wait_for(&idle.id, Duration::from_secs(15), |s| {
            s.state == SandboxState::Destroyed
        })
        .await;
    assert_eq!(reaped.state_reason.as_deref(), Some("idle"));
    d.assert_no_traces(&idle.id);
    // Well past the idle time, the busy one still runs (its background work counts).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        d.client.get(&busy.id).await.unwrap().state,
        SandboxState::Running
    );
    // Once its work ends, it becomes idle too.
    d.sh(&busy.id, "kill $(cat /tmp/pid)").await;
    let reaped = d
        .wait_for(&busy.id, Duration::from_secs(15), |s| {
            s.state == SandboxState::Destroyed
        })
        .await;
    assert_eq!(reaped.state_reason.as_deref(), Some("idle"));
    d.finish().await;
}

#[tokio::test]
async fn recreate_gives_a_fresh_instance_with_the_same_id() {
    let d = TestDaemon::start_with(Options {
        config: Some(CONFIG),
        ..Default::default()
    })
    .await;
    let request = CreateSandboxRequest {
        profile: Some("short".into()),
        ttl: Some("5m".into()),
        name: Some("again".into()),
        env: [("KEEP".to_string(), "me".to_string())].into(),
        ..Default::default()
    };
    let first = d.client.create(&request).await.unwrap();
    d.sh(&first.id, "echo old > $HOME/file").await;
    d.client.extend(&first.id, "50m").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let out = d.cli(&["recreate", "again"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), first.id);
    let second = d.client.get(&first.id).await.unwrap();
    assert_eq!(second.state, SandboxState::Running);
    assert_eq!(second.name.as_deref(), Some("again"));
    assert!(second.started_at > first.started_at);
    // A fresh TTL: the original 5 minutes, not the extension.
    assert!((290.0..=300.0).contains(&seconds_until(&second.expires_at)));
    let result = d.sh(&first.id, "cat $HOME/file 2>&1; echo $KEEP").await;
    assert!(
        result.stdout.contains("No such file") && result.stdout.ends_with("me\n"),
        "{}",
        result.stdout
    );
    let reasons: Vec<Option<String>> = d
        .client
        .sandbox_events(&first.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&Some("recreated".into())), "{reasons:?}");
    d.client.delete(&first.id).await.unwrap();
    assert_eq!(
        d.client.recreate(&first.id).await.unwrap_err().code(),
        Some("invalid_state")
    );
    d.finish().await;
}

#[tokio::test]
async fn events_are_recorded_and_streamed() {
    let d = TestDaemon::start().await;
    let mut live = d.client.events(None, None).await.unwrap();
    let sandbox = d.create().await;
    d.client.delete(&sandbox.id).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        seen.push((event.to_state, event.reason.clone()));
    }
    use SandboxState::*;
    assert_eq!(
        seen,
        vec![
            (Creating, Some("created".into())),
            (Running, Some("created".into())),
            (Destroying, Some("deleted".into())),
            (Destroyed, Some("deleted".into())),
        ]
    );
    // Replay from the start, for one sandbox.
    let mut replay = d.client.events(Some(0), Some(&sandbox.id)).await.unwrap();
    let first = replay.next().await.unwrap().unwrap();
    assert_eq!(
        (first.sandbox_id.as_str(), first.to_state),
        (sandbox.id.as_str(), Creating)
    );
    // The CLI follows the same stream.
    let mut cli = tokio::process::Command::new(SBX)
        .args(["events", "--since", "0"])
        .env("SBX_URL", &d.url)
        .env("SBX_API_KEY", &d.admin_key)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(cli.stdout.take().unwrap()));
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        line.contains(&sandbox.id) && line.contains("creating"),
        "{line}"
    );
    cli.kill().await.unwrap();
    d.finish().await;
}

#[tokio::test]
async fn status_reports_backends_counts_and_live_sandboxes() {
    let d = TestDaemon::start().await;
    let a = d.create().await;
    let b = d.create().await;
    d.client.delete(&b.id).await.unwrap();
    let status = d.client.status().await.unwrap();
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.backends[0].name, "native");
    assert!(status.backends[0].healthy, "{:?}", status.backends);
    assert!(status.backends[0]
        .capabilities
        .contains(&"exec".to_string()));
    assert_eq!(
        (status.counts["running"], status.counts["destroyed"]),
        (1, 1)
    );
    assert_eq!(status.sandboxes.len(), 1);
    let live = &status.sandboxes[0];
    assert_eq!(
        (live.id.as_str(), live.profile.as_str()),
        (a.id.as_str(), "default")
    );
    assert!(live.alive && live.init_pid.unwrap() > 1);
    assert!(live.memory_bytes.unwrap() > 0 && live.pids.unwrap() >= 1);
    let out = d.cli(&["status"]);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("backend native: healthy") && shown.contains(&a.id),
        "{shown}"
    );
    d.finish().await;
}

#[tokio::test]
async fn config_check_resolves_or_says_exactly_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, CONFIG).unwrap();
    let out = std::process::Command::new(SBX)
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let resolved = text(&out.stdout);
    assert!(
        resolved.contains("[profiles.idle.ttl]") && resolved.contains("idle = \"2s\""),
        "{resolved}"
    );
    assert!(
        resolved.contains("[profiles.default"),
        "the built-in profile is listed: {resolved}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[profiles.x]\ntemplate = \"host\"\ncolour = \"red\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(SBX)
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = text(&out.stderr);
    assert!(
        error.contains("bad.toml") && error.contains("line 3") && error.contains("colour"),
        "{error}"
    );
    // The daemon refuses a bad file the same way.
    let out = std::process::Command::new(SBX)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("colour"));
}
