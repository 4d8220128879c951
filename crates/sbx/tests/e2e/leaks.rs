//! Nothing leaks: failed creates roll back, a crashed daemon's sandboxes are cleaned up by the
//! next one, a sandbox killed from the host is noticed, a graceful stop destroys everything.

use std::time::{Duration, Instant};

use sbx_protocol::{CreateSandboxRequest, SandboxState};

use crate::daemon::{
    all_states, cli_at, instance_cgroups, processes_mentioning, signal, text, Options, TestDaemon,
};

#[tokio::test]
async fn a_failed_create_rolls_back_everything() {
    let d = TestDaemon::start().await;
    // A template without the mount points a root needs: stage 1 fails half-way.
    std::fs::create_dir_all(d.data_dir().join("templates/broken/rootfs")).unwrap();
    let request = CreateSandboxRequest {
        template: Some("broken".into()),
        ..Default::default()
    };
    let error = d.client.create(&request).await.unwrap_err();
    assert_eq!(error.code(), Some("internal"), "{error}");
    assert!(
        !error.to_string().contains(&*d.data_dir().to_string_lossy()),
        "{error}"
    );
    let failed = d.client.list(&["failed"], &[]).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state_reason.as_deref(), Some("failed"));
    assert_eq!(failed[0].state_detail.as_deref(), Some("create failed"));
    let id = &failed[0].id;
    assert!(processes_mentioning(id).is_empty());
    // Nothing but the warm pool's prepared sandboxes is on the host.
    assert_eq!(
        unowned(&d, &[]).await,
        Vec::<String>::new(),
        "left on the host"
    );
    // The daemon is fine afterwards.
    let ok = d.create().await;
    assert_eq!(d.sh(&ok.id, "echo ok").await.stdout, "ok\n");
    d.finish().await;
}

#[tokio::test]
async fn a_restarted_daemon_adopts_what_survived_and_settles_the_rest() {
    let mut d = TestDaemon::start().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = d.create().await.id;
        d.sh(&id, "echo kept > $HOME/file; sleep 900 > /dev/null 2>&1 &")
            .await;
        ids.push(id);
    }
    let short = d
        .client
        .create(&CreateSandboxRequest {
            ttl: Some("2s".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    d.crash();
    // Sandboxes outlive the daemon process.
    for id in ids.iter().chain([&short]) {
        assert!(
            !processes_mentioning(&d.key(id)).is_empty(),
            "sandbox {id} died with the daemon"
        );
    }
    // While it is down: one sandbox's init dies; the short one passes its deadline.
    let (init, _) = processes_mentioning(&d.key(&ids[2]))
        .into_iter()
        .next()
        .unwrap();
    signal(init, libc::SIGKILL);
    // An orphan: host traces of a sandbox the store never heard of.
    let orphan = "sb-aaaaaaaaaaaaaaaaaaaaaaaaaa";
    std::fs::create_dir_all(d.data_dir().join("sandboxes").join(orphan).join("upper")).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    d.restart().await;
    // Adopted: usable, with its files and processes.
    for id in &ids[..2] {
        let sandbox = d.client.get(id).await.unwrap();
        assert_eq!(sandbox.state, SandboxState::Running);
        let seen = d.sh(id, "cat $HOME/file; pgrep -c sleep").await;
        assert_eq!(seen.stdout, "kept\n1\n");
    }
    // Dead while the daemon was away: failed, remains removed.
    let dead = d.client.get(&ids[2]).await.unwrap();
    assert_eq!(dead.state, SandboxState::Failed);
    assert_eq!(dead.state_reason.as_deref(), Some("daemon-restart"));
    assert_eq!(
        dead.state_detail.as_deref(),
        Some("sandbox exited while the daemon was down")
    );
    d.assert_no_traces(&ids[2]);
    // Its TTL still applied.
    let expired = d
        .wait_for(&short, Duration::from_secs(5), |s| {
            s.state == SandboxState::Destroyed
        })
        .await;
    assert_eq!(expired.state_reason.as_deref(), Some("expired"));
    d.assert_no_traces(&short);
    assert!(!d.data_dir().join("sandboxes").join(orphan).exists());
    d.finish().await;
}

#[tokio::test]
async fn kill_9_with_sandboxes_running_and_creates_in_flight() {
    let mut d = TestDaemon::start().await;
    // Small disks: thirty of the default 2 GiB would ask more of the host's free space than a
    // busy CI disk may have beside its reserve (a 507 is not what this test is about).
    let small = || CreateSandboxRequest {
        resources: Some(sbx_protocol::ResourcesRequest {
            disk_mb: Some(256),
            ..Default::default()
        }),
        ..Default::default()
    };
    for _ in 0..20 {
        d.create_with(small()).await;
    }
    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let client = d.client.clone();
        let request = small();
        creates.spawn(async move { client.create(&request).await });
    }
    tokio::time::sleep(Duration::from_millis(15)).await;
    d.crash();
    while creates.join_next().await.is_some() {}
    d.restart().await;
    let all = all_states();
    let sandboxes = d.client.list(&all, &[]).await.unwrap();
    assert!(sandboxes.len() >= 20, "{}", sandboxes.len());
    let mut running = 0;
    for sandbox in &sandboxes {
        match sandbox.state {
            SandboxState::Running => {
                assert_eq!(d.sh(&sandbox.id, "echo ok").await.stdout, "ok\n");
                running += 1;
            }
            SandboxState::Failed | SandboxState::Destroyed => d.assert_no_traces(&sandbox.id),
            other => panic!("sandbox {} left {other:?}", sandbox.id),
        }
    }
    assert!(
        running >= 20,
        "the 20 created before the crash were adopted ({running})"
    );
    // The store agrees with the host: every directory and cgroup belongs to a running sandbox.
    let live: Vec<String> = sandboxes
        .iter()
        .filter(|s| s.state == SandboxState::Running)
        .map(|s| d.key(&s.id))
        .collect();
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    assert_eq!(unowned(&d, &live).await, Vec::<String>::new(), "unowned");
    d.finish().await;
}

/// Directories and cgroups of the daemon's that are neither `live` keys nor the warm pool's.
/// The pool may be refilling (a sandbox it prepares has its directory before its helper
/// runs), so what looks unowned is looked at again for a while before it counts.
async fn unowned(d: &TestDaemon, live: &[&str]) -> Vec<String> {
    let now = || {
        std::iter::once(d.data_dir().join("sandboxes"))
            .chain(instance_cgroups(d.data_dir()))
            .flat_map(|dir| {
                subdirectories(&dir)
                    .into_iter()
                    .filter(|name| !live.contains(&name.as_str()) && !is_warm(d, name))
                    .map(move |name| format!("{name} in {}", dir.display()))
            })
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !now().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    now()
}

/// A sandbox prepared ahead of time by the daemon's warm pool (not in the store, serving no
/// sandbox yet).
fn is_warm(d: &TestDaemon, key: &str) -> bool {
    let dir = d.data_dir().join("sandboxes").join(key);
    processes_mentioning(key)
        .iter()
        .any(|(_, cmdline)| cmdline.contains("__native-stage1"))
        && dir.exists()
        && !dir.join("sandbox-id").exists()
}

/// The names of the directories in `dir`.
fn subdirectories(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn keep_sandboxes_leaves_them_running_for_the_next_daemon() {
    let mut d = TestDaemon::start_with(Options {
        args: &["--keep-sandboxes"],
        ..Default::default()
    })
    .await;
    let id = d.create().await.id;
    d.sh(&id, "sleep 900 > /dev/null 2>&1 &").await;
    d.stop().await;
    assert!(
        !processes_mentioning(&d.key(&id)).is_empty(),
        "kept sandbox is gone"
    );
    d.args.clear();
    d.restart().await;
    assert_eq!(
        d.client.get(&id).await.unwrap().state,
        SandboxState::Running
    );
    assert_eq!(d.sh(&id, "pgrep -c sleep").await.stdout, "1\n");
    d.finish().await;
}

#[tokio::test]
async fn cleanup_removes_everything_with_or_without_a_daemon() {
    let mut d = TestDaemon::start().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = d.create().await.id;
        d.sh(&id, "sleep 900 > /dev/null 2>&1 &").await;
        ids.push(id);
    }
    d.crash();
    // Random inits die too.
    for id in &ids[..2] {
        let (init, _) = processes_mentioning(&d.key(id)).into_iter().next().unwrap();
        signal(init, libc::SIGKILL);
    }
    let data_dir = d.data_dir().to_string_lossy().into_owned();
    let offline = |args: &[&str]| {
        let mut all = vec!["cleanup", "--data-dir", &data_dir];
        all.extend_from_slice(args);
        cli_at("http://127.0.0.1:9", &all, None)
    };
    let dry = offline(&["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    for id in &ids {
        assert!(
            text(&dry.stdout).contains(&format!("would remove sandbox {id}")),
            "{}",
            text(&dry.stdout)
        );
    }
    assert!(
        !processes_mentioning(&d.key(&ids[3])).is_empty(),
        "a dry run removed something"
    );
    let done = offline(&[]);
    assert!(done.status.success(), "{}", text(&done.stderr));
    for id in &ids {
        d.assert_no_traces(id);
    }
    assert!(
        instance_cgroups(d.data_dir()).is_empty(),
        "{:?}",
        instance_cgroups(d.data_dir())
    );
    // Idempotent.
    let again = offline(&[]);
    assert!(
        text(&again.stdout).contains("nothing to clean up"),
        "{}",
        text(&again.stdout)
    );
    // The store says what happened.
    d.restart().await;
    for id in &ids {
        let sandbox = d.client.get(id).await.unwrap();
        assert_eq!(sandbox.state, SandboxState::Destroyed);
        assert_eq!(sandbox.state_reason.as_deref(), Some("daemon-cleanup"));
    }
    // With a daemon running, `sbx cleanup` asks it.
    let id = d.create().await.id;
    let online = d.cli(&["cleanup"]);
    assert!(
        text(&online.stdout).contains(&format!("removed sandbox {id}")),
        "{}{}",
        text(&online.stdout),
        text(&online.stderr)
    );
    d.assert_no_traces(&id);
    // And a second daemon, or an offline cleanup, cannot take its data directory.
    let out = offline(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("in use by the daemon at"),
        "{}",
        text(&out.stderr)
    );
    d.finish().await;
}

/// `POST /v1/cleanup` while creates are in flight and the warm pool refills: what cleanup did
/// not destroy is whole and usable, what it destroyed is gone, and it never takes a sandbox
/// being built for an orphan.
#[tokio::test]
async fn cleanup_racing_creates_and_the_warm_pool_leaves_no_half_sandbox() {
    let d = TestDaemon::start().await;
    for _ in 0..4 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let client = d.client.clone();
            tasks.spawn(async move {
                client
                    .create(&CreateSandboxRequest::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        }
        let client = d.client.clone();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            client
                .cleanup(false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        while let Some(outcome) = tasks.join_next().await {
            // A create whose sandbox the cleanup destroyed mid-way may fail, with a clear error.
            if let Err(e) = outcome.unwrap() {
                assert!(!e.contains("internal"), "{e}");
            }
        }
    }
    let all = all_states();
    for sandbox in d.client.list(&all, &[]).await.unwrap() {
        match sandbox.state {
            SandboxState::Running => {
                assert_eq!(d.sh(&sandbox.id, "echo ok").await.stdout, "ok\n")
            }
            SandboxState::Destroyed | SandboxState::Failed => d.assert_no_traces(&sandbox.id),
            other => panic!("sandbox {} left {other:?}", sandbox.id),
        }
    }
    // The warm pool still works: it was not destroyed from under the daemon.
    let id = d.create().await.id;
    assert_eq!(d.sh(&id, "echo ok").await.stdout, "ok\n");
    d.finish().await;
}

#[tokio::test]
async fn a_sandbox_killed_from_the_host_becomes_failed() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let key = d.key(&id);
    let (init, _) = processes_mentioning(&key)
        .into_iter()
        .next()
        .expect("init process");
    signal(init, libc::SIGKILL);
    let start = Instant::now();
    loop {
        let sandbox = d.client.get(&id).await.unwrap();
        if sandbox.state == SandboxState::Failed {
            assert_eq!(sandbox.state_reason.as_deref(), Some("failed"));
            assert_eq!(
                sandbox.state_detail.as_deref(),
                Some("sandbox exited unexpectedly")
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {:?}",
            sandbox.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = d
        .client
        .exec(
            &id,
            &sbx_protocol::ExecRequest {
                cmd: vec!["true".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("invalid_state"));
    assert!(!d.data_dir().join("sandboxes").join(&key).exists());
    // Deleting it afterwards is fine.
    assert_eq!(
        d.client.delete(&id).await.unwrap().state,
        SandboxState::Destroyed
    );
    d.finish().await;
}

#[tokio::test]
async fn a_graceful_stop_destroys_every_sandbox() {
    let mut d = TestDaemon::start().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = d.create().await.id;
        d.sh(&id, "sleep 900 > /dev/null 2>&1 &").await;
        ids.push(id);
    }
    d.stop().await;
    for id in &ids {
        assert!(processes_mentioning(&d.key(id)).is_empty());
    }
    crate::daemon::assert_no_leaks(d.data_dir(), &ids);
    d.restart().await;
    for id in &ids {
        let sandbox = d.client.get(id).await.unwrap();
        assert_eq!(sandbox.state, SandboxState::Destroyed);
        assert_eq!(sandbox.state_reason.as_deref(), Some("daemon-shutdown"));
    }
    d.finish().await;
}
