//! Pause and resume: what a paused sandbox refuses, its clock, idle pausing, auto-resume, and
//! a restart while paused.

use std::time::Duration;

use sbx_backend_fake::Engine;

use super::{config, settles, with_ttl, Harness};
use crate::model::{ExecRequest, NewSandbox, Span};
use crate::{Caller, Error, ExecOutput, State};

fn command(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        cmd: argv.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_paused_sandbox_does_nothing_refuses_commands_and_carries_on_when_resumed() {
    let h = Harness::new();
    let caller = Caller::system();
    let sandbox = h.create(NewSandbox::default()).await;
    let mut speaker = h
        .service
        .exec(
            &caller,
            &sandbox.id,
            command(&["sh", "-c", "sleep 1; echo after"]),
        )
        .await
        .unwrap();
    let paused = h.service.pause(&caller, &sandbox.id).await.unwrap();
    assert_eq!(paused.state, State::Paused);
    assert!(paused.paused_at.is_some());
    // Idempotent.
    assert_eq!(
        h.service.pause(&caller, &sandbox.id).await.unwrap().state,
        State::Paused
    );
    // Commands are refused while paused (the profile does not auto-resume).
    let refused = h
        .service
        .exec(&caller, &sandbox.id, command(&["true"]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            Error::WrongState {
                state: State::Paused,
                ..
            }
        ),
        "{refused:?}"
    );
    // Nothing comes out while paused, well past the command's sleep.
    let early = tokio::time::timeout(Duration::from_secs(10), speaker.output.recv()).await;
    assert!(early.is_err(), "{early:?}");
    let resumed = h.service.resume(&caller, &sandbox.id).await.unwrap();
    assert_eq!(resumed.state, State::Running);
    assert_eq!(resumed.paused_at, None);
    match speaker.output.recv().await {
        Some(ExecOutput::Stdout(bytes)) => assert_eq!(&bytes[..], b"after\n"),
        other => panic!("{other:?}"),
    }
    let reasons: Vec<Option<String>> = h
        .service
        .sandbox_events(&caller, &sandbox.id)
        .unwrap()
        .into_iter()
        .map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&Some("paused".into())) && reasons.contains(&Some("resumed".into())));
    // Another user's sandbox cannot be paused: it does not exist for them.
    let other = super::user("mallory");
    assert!(matches!(
        h.service.pause(&other, &sandbox.id).await,
        Err(Error::NotFound(_))
    ));
    h.service.shutdown(false).await.unwrap();
    assert!(h.engine.traces().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_clock_runs_while_paused_unless_the_profile_stops_it() {
    // By default a paused sandbox expires at its deadline and is destroyed.
    let h = Harness::new();
    h.service.start_reaper();
    let caller = Caller::system();
    let runs = h.create(with_ttl(60)).await;
    h.service.pause(&caller, &runs.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(h.get(&runs.id).state, State::Paused);
    let gone = settles(&h, &runs.id, State::Destroyed).await;
    assert_eq!(gone.state_reason.as_deref(), Some("expired"));
    assert!(h.engine.traces().is_empty());
    h.service.shutdown(false).await.unwrap();

    let mut stopped = config();
    stopped
        .profiles
        .get_mut("default")
        .unwrap()
        .ttl
        .pause_stops_clock = true;
    let h = Harness::with(stopped, Engine::new());
    h.service.start_reaper();
    let keeps = h.create(with_ttl(60)).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    h.service.pause(&caller, &keeps.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let paused = h.get(&keeps.id);
    assert_eq!(paused.state, State::Paused);
    // It shows the 40 s it has left, as if resumed now.
    assert_eq!(paused.expires_in_seconds, Some(40));
    // An extend while paused sets what it will have left.
    let extended = h
        .service
        .extend(&caller, &keeps.id, &Span::new(Duration::from_secs(100)))
        .await
        .unwrap();
    assert_eq!(extended.state, State::Paused);
    assert_eq!(extended.expires_in_seconds, Some(100));
    h.service.resume(&caller, &keeps.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert_eq!(h.get(&keeps.id).state, State::Running);
    settles(&h, &keeps.id, State::Destroyed).await;
    // A stopped clock holds a paused sandbox at most `ttl.max` of wall time (24 h here).
    let held = h.create(with_ttl(60)).await;
    h.service.pause(&caller, &held.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(23 * 3600)).await;
    assert_eq!(h.get(&held.id).state, State::Paused);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let ended = settles(&h, &held.id, State::Destroyed).await;
    assert_eq!(ended.state_reason.as_deref(), Some("expired"));
    // E2B's pause stops the clock whatever the profile says.
    let mut running = config();
    running
        .profiles
        .get_mut("default")
        .unwrap()
        .ttl
        .pause_stops_clock = false;
    h.service.shutdown(false).await.unwrap();
    let h = Harness::with(running, Engine::new());
    h.service.start_reaper();
    let e2bs = h.create(with_ttl(60)).await;
    h.service
        .pause_stopping_clock(&caller, &e2bs.id)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.get(&e2bs.id).state, State::Paused);
    let back = h.service.resume(&caller, &e2bs.id).await.unwrap();
    assert_eq!(back.expires_in_seconds, Some(60));
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_sandboxes_can_be_paused_and_commands_resume_them() {
    let mut config = config();
    let profile = config.profiles.get_mut("default").unwrap();
    profile.ttl.idle = Some(Duration::from_secs(30));
    profile.ttl.idle_action = sbx_config::IdleAction::Pause;
    profile.auto_resume = true;
    let h = Harness::with(config, Engine::new());
    h.service.start_reaper();
    let sandbox = h.create(NewSandbox::default()).await;
    let paused = settles(&h, &sandbox.id, State::Paused).await;
    assert_eq!(paused.state_reason.as_deref(), Some("idle"));
    // A command resumes it first, and runs.
    let mut echo = h
        .service
        .exec(&Caller::system(), &sandbox.id, command(&["echo", "awake"]))
        .await
        .unwrap();
    match echo.output.recv().await {
        Some(ExecOutput::Stdout(bytes)) => assert_eq!(&bytes[..], b"awake\n"),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.get(&sandbox.id).state, State::Running);
    // And it is paused again once idle again, never destroyed.
    settles(&h, &sandbox.id, State::Paused).await;
    assert_eq!(h.engine.traces().len(), 1);
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_restart_adopts_a_paused_sandbox_paused() {
    let h = Harness::new();
    let caller = Caller::system();
    let sandbox = h.create(NewSandbox::default()).await;
    h.service.pause(&caller, &sandbox.id).await.unwrap();
    let h = h.restart(config()).await;
    let report = h.service.reconcile().await.unwrap();
    assert_eq!(report.adopted, vec![sandbox.id.clone()]);
    assert_eq!(h.get(&sandbox.id).state, State::Paused);
    h.service.resume(&caller, &sandbox.id).await.unwrap();
    assert_eq!(h.get(&sandbox.id).state, State::Running);
    // A paused sandbox is destroyed like any other.
    h.service.pause(&caller, &sandbox.id).await.unwrap();
    let gone = h
        .service
        .destroy(&caller, &sandbox.id, crate::reason::DELETED)
        .await
        .unwrap();
    assert_eq!(gone.state, State::Destroyed);
    assert!(h.engine.traces().is_empty());
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn pausing_does_not_keep_a_sandbox_from_its_idle_reaping() {
    let mut config = config();
    let profile = config.profiles.get_mut("default").unwrap();
    profile.ttl.idle = Some(Duration::from_secs(30));
    profile.ttl.pause_stops_clock = true;
    let h = Harness::with(config, Engine::new());
    h.service.start_reaper();
    let sandbox = h.create(NewSandbox::default()).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    h.service
        .pause(&Caller::system(), &sandbox.id)
        .await
        .unwrap();
    // Idle since it was paused: reaped 30 s later, its stopped clock notwithstanding.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(h.get(&sandbox.id).state, State::Paused);
    let gone = settles(&h, &sandbox.id, State::Destroyed).await;
    assert_eq!(gone.state_reason.as_deref(), Some("idle"));
    assert!(h.engine.traces().is_empty());
    h.service.shutdown(false).await.unwrap();
}
