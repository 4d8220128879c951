//! Lifecycle's rules, one test each: deadlines, idleness, death and recreation, restarts,
//! admission and capacity, the registry of backends, and backends that misbehave.

use std::sync::Arc;
use std::time::Duration;

use sbx_backend::{Backend, SandboxId, SandboxSpec, SharedResource, Storage};
use sbx_backend_fake::{Engine, Failure, FakeBackend, Fault, Op};

use super::{config, settles, user, with_ttl, Harness};
use crate::model::{ExecRequest, NewSandbox, ResourceRequest, Span, TerminalRequest};
use crate::{Caller, Error, ExecOutput, ListFilter, State};

fn with_resources(resources: ResourceRequest) -> NewSandbox {
    NewSandbox {
        resources,
        ..Default::default()
    }
}

/// The test configuration with a second profile, `alt`, on the backend `other`.
fn with_alt_profile() -> crate::Config {
    let mut two = config();
    let mut alt = two.profiles["default"].clone();
    alt.name = "alt".into();
    alt.backend = "other".into();
    two.profiles.insert("alt".into(), alt);
    two
}

/// A harness over the fake backend on `engine` and `other`, with [`with_alt_profile`].
fn two_backends(engine: &Arc<Engine>, other: FakeBackend) -> Harness {
    Harness::with_backends(
        with_alt_profile(),
        engine.clone(),
        vec![Arc::new(FakeBackend::on(engine.clone())), Arc::new(other)],
    )
}

/// Runs `argv` and returns its stdout and shell exit code (`None`: it did not finish).
async fn run(h: &Harness, id: &str, argv: &[&str]) -> (String, Option<i32>) {
    let request = ExecRequest {
        cmd: argv.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    let mut stream = h
        .service
        .exec(&Caller::system(), id, request)
        .await
        .unwrap_or_else(|e| panic!("exec: {}", e.detail()));
    let mut stdout = Vec::new();
    while let Some(output) = stream.output.recv().await {
        match output {
            ExecOutput::Stdout(bytes) => stdout.extend_from_slice(&bytes),
            ExecOutput::Stderr(_) => {}
            ExecOutput::Exit { status, .. } => {
                return (
                    String::from_utf8(stdout).unwrap(),
                    Some(status.shell_code()),
                )
            }
            ExecOutput::Failed(error) => panic!("exec failed: {}", error.detail()),
        }
    }
    (String::from_utf8(stdout).unwrap(), None)
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_is_destroyed_at_its_deadline() {
    let h = Harness::new();
    h.service.start_reaper();
    let sandbox = h.create(with_ttl(60)).await;
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(h.get(&sandbox.id).state, State::Running);
    let gone = settles(&h, &sandbox.id, State::Destroyed).await;
    assert_eq!(gone.state_reason.as_deref(), Some("expired"));
    assert!(h.engine.traces().is_empty(), "{:?}", h.engine.traces());
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn extend_moves_the_deadline_within_the_profiles_maximum() {
    let h = Harness::new();
    h.service.start_reaper();
    let caller = Caller::system();
    let sandbox = h.create(with_ttl(60)).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    h.service
        .extend(&caller, &sandbox.id, &Span::new(Duration::from_secs(120)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(h.get(&sandbox.id).state, State::Running);
    settles(&h, &sandbox.id, State::Destroyed).await;
    // Past the profile's maximum lifetime: capped, and the answer says so.
    let other = h.create(with_ttl(60)).await;
    let extended = h
        .service
        .extend(
            &caller,
            &other.id,
            &Span::new(Duration::from_secs(100 * 86_400)),
        )
        .await
        .unwrap();
    assert!(!extended.warnings.is_empty(), "{extended:?}");
    assert_eq!(extended.state, State::Running);
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn idle_sandboxes_are_reaped_and_busy_ones_are_not() {
    let mut config = config();
    for profile in config.profiles.values_mut() {
        profile.ttl.idle = Some(Duration::from_secs(30));
    }
    let h = Harness::with(config, Engine::new());
    h.service.start_reaper();
    let idle = h.create(NewSandbox::default()).await;
    let busy = h.create(NewSandbox::default()).await;
    // A command left running in the background (its caller went away) keeps it busy.
    let request = ExecRequest {
        cmd: vec!["sleep".into(), "100000".into()],
        ..Default::default()
    };
    drop(
        h.service
            .exec(&Caller::system(), &busy.id, request)
            .await
            .unwrap(),
    );
    let reaped = settles(&h, &idle.id, State::Destroyed).await;
    assert_eq!(reaped.state_reason.as_deref(), Some("idle"));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(h.get(&busy.id).state, State::Running);
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_that_dies_becomes_failed_and_recreate_brings_it_back() {
    let h = Harness::new();
    let sandbox = h.create(NewSandbox::default()).await;
    h.engine.kill(&SandboxId::parse(&sandbox.id).unwrap());
    let failed = settles(&h, &sandbox.id, State::Failed).await;
    assert_eq!(failed.state_reason.as_deref(), Some("failed"));
    assert_eq!(
        failed.state_detail.as_deref(),
        Some("sandbox exited unexpectedly")
    );
    assert!(h.engine.traces().is_empty(), "its remains are removed");
    let again = h
        .service
        .recreate(&Caller::system(), &sandbox.id)
        .await
        .unwrap();
    assert_eq!(again.id, sandbox.id);
    assert_eq!(again.state, State::Running);
    assert_eq!(run(&h, &sandbox.id, &["echo", "back"]).await.0, "back\n");
    // A running sandbox recreated gets a fresh instance; the old one's watcher does not fire.
    let fresh = h
        .service
        .recreate(&Caller::system(), &sandbox.id)
        .await
        .unwrap();
    assert_eq!(fresh.state, State::Running);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.get(&sandbox.id).state, State::Running);
    assert_eq!(h.engine.traces().len(), 1);
    h.service.shutdown(false).await.unwrap();
    assert!(h.engine.traces().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_restart_adopts_settles_and_removes_orphans() {
    let h = Harness::new();
    let kept = h.create(NewSandbox::default()).await;
    let dies = h.create(NewSandbox::default()).await;
    let expires = h.create(with_ttl(10)).await;
    // Host traces no record names: a create the crashed daemon never recorded.
    let orphan = SandboxId::generate();
    FakeBackend::on(h.engine.clone())
        .create(&SandboxSpec {
            id: orphan.clone(),
            template: "host".into(),
            limits: sbx_backend::Limits {
                memory_bytes: 1 << 28,
                cpu_millis: 1000,
                pids: 64,
                disk_bytes: 1 << 28,
            },
            snapshot: None,
            fork_of: None,
        })
        .await
        .unwrap();
    let engine = h.engine.clone();
    // While the daemon is down: one sandbox dies, one passes its deadline.
    let down = async {
        engine.kill(&SandboxId::parse(&dies.id).unwrap());
        tokio::time::sleep(Duration::from_secs(20)).await;
    };
    let h = {
        let stopped = h.service.shutdown(true);
        stopped.await.unwrap();
        down.await;
        h.restart(config()).await
    };
    let report = h.service.reconcile().await.unwrap();
    assert_eq!(report.adopted.len(), 2, "{report:?}");
    assert!(report.adopted.contains(&kept.id) && report.adopted.contains(&expires.id));
    assert_eq!(report.failed, vec![dies.id.clone()]);
    assert_eq!(report.orphans_removed, vec![orphan.to_string()]);
    let failed = h.get(&dies.id);
    assert_eq!(failed.state, State::Failed);
    assert_eq!(failed.state_reason.as_deref(), Some("daemon-restart"));
    // The deadline that passed while it was down applies at once.
    h.service.start_reaper();
    let expired = settles(&h, &expires.id, State::Destroyed).await;
    assert_eq!(expired.state_reason.as_deref(), Some("expired"));
    // The adopted one is usable.
    assert_eq!(run(&h, &kept.id, &["echo", "still"]).await.0, "still\n");
    assert_eq!(h.engine.traces(), vec![SandboxId::parse(&kept.id).unwrap()]);
    h.service.shutdown(false).await.unwrap();
    assert!(h.engine.traces().is_empty());
}

#[tokio::test(start_paused = true)]
async fn sandboxes_of_a_backend_no_longer_running_are_marked_failed() {
    let engine = Engine::new();
    let other = Engine::new();
    let h = two_backends(&engine, FakeBackend::on(other.clone()).with_kind("other"));
    let elsewhere = h
        .create(NewSandbox {
            profile: Some("alt".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(elsewhere.backend, "other");
    // Restarted with the "other" backend gone from the configuration.
    let h = h.restart(config()).await;
    let report = h.service.reconcile().await.unwrap();
    assert_eq!(report.failed, vec![elsewhere.id.clone()]);
    let failed = h.get(&elsewhere.id);
    assert_eq!(failed.state, State::Failed);
    assert_eq!(
        failed.state_detail.as_deref(),
        Some("the other backend is not running")
    );
    // Its record can still be deleted: there is nothing to ask of its backend.
    let deleted = h
        .service
        .destroy(&Caller::system(), &elsewhere.id, crate::reason::DELETED)
        .await
        .unwrap();
    assert_eq!(deleted.state, State::Destroyed);
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cleanup_without_reconciliation_passes_over_a_backend_that_is_not_running() {
    let engine = Engine::new();
    let other = Engine::new();
    let h = two_backends(&engine, FakeBackend::on(other.clone()).with_kind("other"));
    let here = h.create(NewSandbox::default()).await;
    let elsewhere = h
        .create(NewSandbox {
            profile: Some("alt".into()),
            ..Default::default()
        })
        .await;
    // As `sbx cleanup` does without a daemon: no reconciliation first.
    let h = h.restart(config()).await;
    let report = h.service.cleanup(&Caller::system(), false).await.unwrap();
    assert_eq!(report.sandboxes.len(), 2, "{report:?}");
    for id in [&here.id, &elsewhere.id] {
        assert_eq!(h.get(id).state, State::Destroyed);
    }
    assert!(h.engine.traces().is_empty());
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn profiles_choose_the_backend_and_every_later_call_follows_the_record() {
    let two = with_alt_profile();
    let engine = Engine::new();
    let other = Engine::new();
    let h = two_backends(
        &engine,
        FakeBackend::on(other.clone())
            .with_kind("other")
            .without_terminals(),
    );
    let here = h.create(NewSandbox::default()).await;
    let there = h
        .create(NewSandbox {
            profile: Some("alt".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(
        (here.backend.as_str(), there.backend.as_str()),
        ("fake", "other")
    );
    assert_eq!(engine.traces(), vec![SandboxId::parse(&here.id).unwrap()]);
    assert_eq!(other.traces(), vec![SandboxId::parse(&there.id).unwrap()]);
    assert_eq!(run(&h, &there.id, &["echo", "there"]).await.0, "there\n");
    assert_eq!(other.calls(Op::Exec), 1);
    assert_eq!(engine.calls(Op::Exec), 0);
    // What one backend lacks is unsupported there only.
    let terminal = TerminalRequest::default();
    let refused = h
        .service
        .terminal(&Caller::system(), &there.id, &terminal)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Unsupported(_)), "{refused:?}");
    assert!(refused.to_string().contains("other"), "{refused}");
    h.service
        .terminal(&Caller::system(), &here.id, &terminal)
        .await
        .unwrap();
    // Status shows each backend.
    let status = h.service.status(&Caller::system()).await.unwrap();
    let names: Vec<&str> = status.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, vec!["fake", "other"]);
    assert!(status.backends[0]
        .capabilities
        .contains(&"terminal".to_owned()));
    assert!(!status.backends[1]
        .capabilities
        .contains(&"terminal".to_owned()));
    h.service
        .destroy(&Caller::system(), &there.id, "deleted")
        .await
        .unwrap();
    assert!(other.traces().is_empty());
    assert_eq!(other.calls(Op::Destroy), 1);
    assert_eq!(engine.calls(Op::Destroy), 0);
    h.service.shutdown(false).await.unwrap();
    // A profile naming a backend the daemon does not run is refused at start.
    let store = sbx_store::Store::open_in_memory().unwrap();
    let error = crate::Service::new(store, vec![Arc::new(FakeBackend::new())], two)
        .err()
        .expect("a profile on a missing backend");
    assert!(
        error.to_string().contains("profiles.alt.backend"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_users_live_sandboxes_are_capped() {
    let mut config = config();
    config.limits.default.concurrent_sandboxes = Some(2);
    let h = Harness::with(config, Engine::new());
    let alice = user("alice");
    let request = NewSandbox::default();
    let first = h.service.create(&alice, &request).await.unwrap();
    h.service.create(&alice, &request).await.unwrap();
    let refused = h.service.create(&alice, &request).await.unwrap_err();
    assert!(matches!(refused, Error::Limited(_)), "{refused:?}");
    // Someone else is not affected; and one ended makes room.
    h.service.create(&user("bob"), &request).await.unwrap();
    h.service
        .destroy(&alice, &first.id, "deleted")
        .await
        .unwrap();
    h.service.create(&alice, &request).await.unwrap();
    assert_eq!(h.engine.traces().len(), 3);
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_hosts_process_capacity_is_shared_by_every_local_backend() {
    let engine = Engine::new();
    let other = Engine::new();
    for engine in [&engine, &other] {
        let mut bounds = FakeBackend::on(engine.clone()).bounds();
        bounds.host_tasks = Some(1000);
        engine.set_bounds(bounds);
    }
    let h = two_backends(&engine, FakeBackend::on(other.clone()).with_kind("other"));
    // Half of a 1000-task table: 500 processes' worth of `pids` limits for both together.
    let pids = |pids| {
        with_resources(ResourceRequest {
            pids: Some(pids),
            ..Default::default()
        })
    };
    let too_big = h
        .service
        .create(&Caller::system(), &pids(600))
        .await
        .unwrap_err();
    assert!(matches!(too_big, Error::OverLimit(_)), "{too_big:?}");
    h.create(pids(200)).await;
    let mut alt = pids(200);
    alt.profile = Some("alt".into());
    h.create(alt.clone()).await;
    let full = h.service.create(&Caller::system(), &alt).await.unwrap_err();
    assert!(matches!(full, Error::AtCapacity { .. }), "{full:?}");
    h.create(pids(100)).await;
    h.service.shutdown(false).await.unwrap();
}

/// A runtime's own tasks in each sandbox (`tasks_per_sandbox`) count against the host's
/// capacity with the sandboxes' `pids`.
#[tokio::test(start_paused = true)]
async fn a_runtimes_own_tasks_count_against_the_hosts_capacity() {
    let engine = Engine::new();
    let mut bounds = FakeBackend::on(engine.clone()).bounds();
    bounds.host_tasks = Some(1000);
    bounds.tasks_per_sandbox = 100;
    engine.set_bounds(bounds);
    let h = Harness::with(config(), engine.clone());
    let pids = |pids| {
        with_resources(ResourceRequest {
            pids: Some(pids),
            ..Default::default()
        })
    };
    // 500 to share: (100 + 100) twice fits, a third does not, though its pids alone would.
    h.create(pids(100)).await;
    h.create(pids(100)).await;
    let full = h
        .service
        .create(&Caller::system(), &pids(50))
        .await
        .unwrap_err();
    assert!(matches!(full, Error::AtCapacity { .. }), "{full:?}");
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn disks_promised_stay_within_the_free_space_even_while_being_made() {
    let engine = Engine::new();
    let mut bounds = FakeBackend::on(engine.clone()).bounds();
    bounds.disk_bytes = Some(100 << 30);
    engine.set_bounds(bounds);
    // 10 GiB free, 4 GiB of it the reserve: 6 GiB to promise.
    engine.set_storage(Some(Storage {
        total_bytes: 100 << 30,
        free_bytes: 10 << 30,
        promised_bytes: 0,
    }));
    let h = Harness::with(config(), engine.clone());
    let disk = |mb| {
        with_resources(ResourceRequest {
            disk_mb: Some(mb),
            ..Default::default()
        })
    };
    let refused = h
        .service
        .create(&Caller::system(), &disk(7000))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::InsufficientStorage(_)),
        "{refused:?}"
    );
    // A create in flight holds its promise until its disk exists.
    engine.inject(Op::Create, Fault::Delay(Duration::from_secs(5)), Some(1));
    let slow = {
        let service = h.service.clone();
        tokio::spawn(async move { service.create(&Caller::system(), &disk(4000)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let meanwhile = h
        .service
        .create(&Caller::system(), &disk(4000))
        .await
        .unwrap_err();
    assert!(
        matches!(meanwhile, Error::InsufficientStorage(_)),
        "{meanwhile:?}"
    );
    slow.await.unwrap().unwrap();
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hung_create_times_out_and_leaves_nothing() {
    let h = Harness::new();
    h.engine.inject(Op::Create, Fault::Hang, Some(1));
    let error = h
        .service
        .create(&Caller::system(), &NewSandbox::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Timeout {
                operation: "create"
            }
        ),
        "{error:?}"
    );
    let all = ListFilter {
        states: vec![],
        ..Default::default()
    };
    let failed = h.service.list(&Caller::system(), &all).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state, State::Failed);
    assert!(h.engine.traces().is_empty(), "{:?}", h.engine.traces());
    // The next create works.
    h.create(NewSandbox::default()).await;
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backend_failures_become_the_right_answers() {
    let h = Harness::new();
    let cases = [
        (Failure::Capacity(SharedResource::Processes), "at capacity"),
        (Failure::Capacity(SharedResource::Engine), "at capacity"),
        (
            Failure::Capacity(SharedResource::Disk),
            "insufficient storage",
        ),
        (Failure::Unavailable, "unavailable"),
        (Failure::Other, "internal"),
    ];
    for (failure, expected) in cases {
        h.engine.inject(Op::Create, Fault::Fail(failure), Some(1));
        let error = h
            .service
            .create(&Caller::system(), &NewSandbox::default())
            .await
            .unwrap_err();
        let seen = match error {
            Error::AtCapacity { .. } => "at capacity",
            Error::InsufficientStorage(_) => "insufficient storage",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
            ref other => panic!("{failure:?} became {other:?}"),
        };
        assert_eq!(seen, expected, "{failure:?}: {}", error.detail());
    }
    assert!(h.engine.traces().is_empty());
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_command_past_its_timeout_is_killed() {
    let h = Harness::new();
    let sandbox = h.create(NewSandbox::default()).await;
    let request = ExecRequest {
        cmd: vec!["sleep".into(), "1000".into()],
        timeout: Some(Span::new(Duration::from_secs(2))),
        ..Default::default()
    };
    let mut stream = h
        .service
        .exec(&Caller::system(), &sandbox.id, request)
        .await
        .unwrap();
    let mut end = None;
    while let Some(output) = stream.output.recv().await {
        if let ExecOutput::Exit {
            status,
            timed_out,
            duration,
        } = output
        {
            end = Some((status, timed_out, duration));
        }
    }
    let (status, timed_out, duration) = end.expect("an exit");
    assert!(timed_out);
    assert_eq!(status, sbx_backend::ExitStatus::Signal(9));
    assert!(duration >= Duration::from_secs(2) && duration < Duration::from_secs(3));
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_dying_under_a_command_ends_it_as_gone() {
    let h = Harness::new();
    let sandbox = h.create(NewSandbox::default()).await;
    h.engine.inject(Op::Exec, Fault::Crash, Some(1));
    let request = ExecRequest {
        cmd: vec!["sleep".into(), "10".into()],
        ..Default::default()
    };
    let mut stream = h
        .service
        .exec(&Caller::system(), &sandbox.id, request)
        .await
        .unwrap();
    match stream.output.recv().await {
        Some(ExecOutput::Failed(Error::SandboxGone(id))) => assert_eq!(id, sandbox.id),
        other => panic!("{other:?}"),
    }
    settles(&h, &sandbox.id, State::Failed).await;
    h.service.shutdown(false).await.unwrap();
    assert!(h.engine.traces().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hung_destroy_cannot_hang_the_api() {
    let h = Harness::new();
    h.engine.inject(Op::Destroy, Fault::Hang, None);
    let caller = Caller::system();
    let sandbox = h.create(NewSandbox::default()).await;
    let destroying = {
        let service = h.service.clone();
        let caller = caller.clone();
        let id = sandbox.id.clone();
        tokio::spawn(async move { service.destroy(&caller, &id, "deleted").await })
    };
    // While the backend hangs, the rest of the API answers…
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.get(&sandbox.id).state, State::Destroying);
    assert_eq!(
        h.service.list(&caller, &Default::default()).unwrap().len(),
        1
    );
    // …and the destroy itself gives up at its deadline, leaving a record that says so.
    let result = destroying.await.unwrap();
    assert!(
        matches!(
            result,
            Err(Error::Timeout {
                operation: "destroy"
            })
        ),
        "{result:?}"
    );
    assert_eq!(h.get(&sandbox.id).state, State::Destroying);
    // Once the backend answers again, a retry finishes it.
    h.engine.heal();
    h.service
        .destroy(&caller, &sandbox.id, "deleted")
        .await
        .unwrap();
    assert!(h.engine.traces().is_empty());
    h.service.shutdown(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn what_a_cut_off_switch_left_is_settled_at_start() {
    let h = Harness::new();
    // sbx's own metadata keys are never a request's.
    let claimed = NewSandbox {
        metadata: [("sbx.active-user".to_owned(), "bob".to_owned())].into(),
        ..with_ttl(3600)
    };
    assert!(matches!(
        h.service.create(&user("bob"), &claimed).await,
        Err(Error::Invalid(_))
    ));
    let made_for = |who: &str| NewSandbox {
        labels: [("sbx.active-user".to_owned(), who.to_owned())].into(),
        ..with_ttl(3600)
    };
    // A switch cut off between its sandbox and its record: no record names the sandbox.
    let unnamed = h.create(made_for("carol")).await;
    // One cut off while it restored the files.
    let restoring = h.create(made_for("dave")).await;
    // One that finished, and a sandbox of no switch: both kept.
    let done = h.create(made_for("erin")).await;
    let plain = h.create(with_ttl(3600)).await;
    let record = |user: &str, sandbox: &str, restored: i64| sbx_store::ActiveRow {
        user: user.into(),
        project_id: "p".into(),
        fragment_id: None,
        sandbox_id: sandbox.into(),
        port: None,
        restored,
        created_at: 0,
    };
    let store = &h.service.inner.store;
    store
        .set_active(&record("dave", &restoring.id, -1))
        .unwrap();
    store.set_active(&record("erin", &done.id, 3)).unwrap();

    let h = h.restart(config()).await;
    h.service.reconcile().await.unwrap();
    assert_eq!(h.get(&unnamed.id).state, State::Destroyed);
    assert_eq!(h.get(&restoring.id).state, State::Destroyed);
    assert!(h.service.inner.store.get_active("dave").unwrap().is_none());
    assert_eq!(h.get(&done.id).state, State::Running);
    assert!(h.service.inner.store.get_active("erin").unwrap().is_some());
    assert_eq!(h.get(&plain.id).state, State::Running);
    h.service.shutdown(false).await.unwrap();
    assert!(h.engine.traces().is_empty());
}
