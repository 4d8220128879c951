//! The warm pools of the OCI backend (gVisor, crun) through the binary: containers of a
//! profile's shape started ahead of time, reported in status; a create takes one, which then
//! carries the sandbox's name (host name, `$HOSTNAME`) and works like any other (commands,
//! files); the pool refills; a destroy leaves nothing of the container; a crashed daemon's pool
//! is removed by the next one, which adopts the pooled sandboxes that were live; and the
//! daemon's stop removes its pool.

use std::time::{Duration, Instant};

use crate::daemon::{text, Options, TestDaemon};

const CONFIG: &str = "[profiles.gvisor]\nbackend = \"oci\"\nwarm_pool = 1\n\
                      [profiles.crun]\nbackend = \"crun\"\nwarm_pool = 2\n\
                      [profiles.runc]\nbackend = \"runc\"\nwarm_pool = 0\n";

/// Waits until backend `kind` says `ready/kept warm` in status.
async fn wait_warm(d: &TestDaemon, kind: &str, want: &str) {
    let started = Instant::now();
    loop {
        let status = d.client.status().await.unwrap();
        let backend = status.backends.iter().find(|b| b.name == kind).unwrap();
        if backend.detail.ends_with(&format!("; {want} warm")) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the {kind} pool is not {want} warm: {}\n{}",
            backend.detail,
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bundles of backend `kind`: (key, the sandbox it serves if any).
fn bundles(d: &TestDaemon, kind: &str) -> Vec<(String, Option<String>)> {
    std::fs::read_dir(d.data_dir().join(kind).join("bundles"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| {
                    let serves = std::fs::read_to_string(entry.path().join("sandbox-id"))
                        .ok()
                        .map(|id| id.trim().to_owned());
                    (entry.file_name().to_string_lossy().into_owned(), serves)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The key of the warm container that serves sandbox `id`.
fn key_of(d: &TestDaemon, kind: &str, id: &str) -> String {
    bundles(d, kind)
        .into_iter()
        .find(|(_, serves)| serves.as_deref() == Some(id))
        .map(|(key, _)| key)
        .unwrap_or_else(|| panic!("sandbox {id} is not a warm container of {kind}"))
}

/// Nothing of container `key` is left: bundle, process, mount, cgroup.
async fn assert_key_gone(d: &TestDaemon, kind: &str, key: &str) {
    assert!(!d.data_dir().join(kind).join("bundles").join(key).exists());
    let left = crate::daemon::processes_left(key, |_| true).await;
    assert!(left.is_empty(), "processes of {key} left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(key), "a mount of {key} left");
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for parent in std::fs::read_dir(hierarchy.path().join("sbx-oci"))
            .into_iter()
            .flatten()
            .flatten()
        {
            assert!(!parent.path().join(key).exists(), "a cgroup of {key} left");
        }
    }
}

#[tokio::test]
async fn oci_warm_pools_hand_out_started_containers_under_the_sandboxes_names() {
    let mut d = TestDaemon::start_with(Options {
        config: Some(CONFIG),
        ..Default::default()
    })
    .await;
    let status = d.client.status().await.unwrap();
    for (kind, pooled) in [("oci", true), ("crun", true), ("runc", false)] {
        let backend = status.backends.iter().find(|b| b.name == kind).unwrap();
        assert_eq!(
            backend.capabilities.iter().any(|c| c == "warm-pool"),
            pooled,
            "{kind}: {:?}",
            backend.capabilities
        );
        assert_eq!(
            backend.detail.contains("warm"),
            pooled,
            "{}",
            backend.detail
        );
    }

    let mut kept = Vec::new();
    for (kind, profile, size) in [("oci", "gvisor", 1), ("crun", "crun", 2)] {
        let full = format!("{size}/{size}");
        wait_warm(&d, kind, &full).await;
        let warm: Vec<String> = bundles(&d, kind).into_iter().map(|(key, _)| key).collect();
        assert_eq!(warm.len(), size);

        let created = d.cli(&["create", "--profile", profile]);
        assert!(created.status.success(), "{}", text(&created.stderr));
        let id = text(&created.stdout).trim().to_owned();
        let key = key_of(&d, kind, &id);
        assert!(warm.contains(&key), "{key} was not warm: {warm:?}");
        assert_ne!(key, id);
        // It carries the sandbox's name, and works like any other.
        let out = d
            .sh(&id, "hostname; echo $HOSTNAME; id -u; echo kept > f; cat f")
            .await;
        assert_eq!(
            out.stdout,
            format!("{id}\n{id}\n1000\nkept\n"),
            "{}",
            out.stderr
        );
        let info = d.client.stat(&id, "/home/user/f").await.unwrap();
        assert_eq!(info.size, 5);
        let listed = d.cli(&["files", "ls", &id, "/home/user"]);
        assert!(
            text(&listed.stdout).contains('f'),
            "{}",
            text(&listed.stderr)
        );
        if kind == "oci" {
            // Hibernated and resumed under its key, as itself.
            let hibernated = d.client.hibernate(&id).await.unwrap();
            assert_eq!(hibernated.state, sbx_protocol::SandboxState::Hibernated);
            d.client.resume(&id).await.unwrap();
            let out = d.sh(&id, "hostname; cat f").await;
            assert_eq!(out.stdout, format!("{id}\nkept\n"), "{}", out.stderr);
        }
        // A sandbox asking for other resources is built, not taken.
        let other = d.cli(&["create", "--profile", profile, "--memory", "300"]);
        assert!(other.status.success(), "{}", text(&other.stderr));
        let other = text(&other.stdout).trim().to_owned();
        assert!(d
            .data_dir()
            .join(kind)
            .join("bundles")
            .join(&other)
            .exists());
        assert_eq!(d.sh(&other, "hostname").await.stdout, format!("{other}\n"));

        // A pooled sandbox whose processes die is seen to (it is watched by the process the
        // pool recorded).
        let doomed = d.cli(&["create", "--profile", profile]);
        assert!(doomed.status.success(), "{}", text(&doomed.stderr));
        let doomed = text(&doomed.stdout).trim().to_owned();
        let doomed_key = key_of(&d, kind, &doomed);
        let runtime = if kind == "oci" { "runsc" } else { kind };
        let state = std::process::Command::new(runtime)
            .arg(format!(
                "--root={}",
                d.data_dir().join(kind).join("state").display()
            ))
            .args(["state", &doomed_key])
            .output()
            .unwrap();
        let state: serde_json::Value = serde_json::from_slice(&state.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&state.stderr)));
        let pid = state["pid"].as_i64().unwrap();
        assert!(pid > 0, "{state}");
        crate::daemon::signal(pid as u32, libc::SIGKILL);
        d.wait_for(&doomed, Duration::from_secs(15), |s| {
            s.state == sbx_protocol::SandboxState::Failed
        })
        .await;
        let removed = d.cli(&["rm", &doomed]);
        assert!(removed.status.success(), "{}", text(&removed.stderr));
        assert_key_gone(&d, kind, &doomed_key).await;

        // The pool refills; a destroy leaves nothing of the container.
        wait_warm(&d, kind, &full).await;
        for sandbox in [&id, &other] {
            let removed = d.cli(&["rm", sandbox]);
            assert!(removed.status.success(), "{}", text(&removed.stderr));
        }
        assert_key_gone(&d, kind, &key).await;
        assert_key_gone(&d, kind, &other).await;

        // One stays for the crash below.
        let live = d.cli(&["create", "--profile", profile]);
        assert!(live.status.success(), "{}", text(&live.stderr));
        let live = text(&live.stdout).trim().to_owned();
        let live_key = key_of(&d, kind, &live);
        kept.push((kind, profile, live, live_key));
    }

    // A crash leaves the pool's containers: the next daemon removes them (orphans now) and
    // adopts the pooled sandboxes that were live.
    wait_warm(&d, "oci", "1/1").await;
    wait_warm(&d, "crun", "2/2").await;
    let old_pools: Vec<(&str, String)> = ["oci", "crun"]
        .into_iter()
        .flat_map(|kind| {
            bundles(&d, kind)
                .into_iter()
                .filter(|(_, serves)| serves.is_none())
                .map(move |(key, _)| (kind, key))
        })
        .collect();
    assert_eq!(old_pools.len(), 3, "{old_pools:?}");
    d.crash();
    d.restart().await;
    for (kind, key) in &old_pools {
        assert_key_gone(&d, kind, key).await;
    }
    for (kind, _, id, key) in &kept {
        assert_eq!(
            d.client.get(id).await.unwrap().state,
            sbx_protocol::SandboxState::Running
        );
        let out = d.sh(id, "hostname").await;
        assert_eq!(out.stdout, format!("{id}\n"), "{}", out.stderr);
        assert_eq!(key_of(&d, kind, id), *key);
    }
    wait_warm(&d, "oci", "1/1").await;
    wait_warm(&d, "crun", "2/2").await;

    // The daemon's stop removes its pool (and the sandboxes).
    d.stop().await;
    for kind in ["oci", "crun", "runc"] {
        assert_eq!(bundles(&d, kind), Vec::new(), "{kind}");
    }
    let runtimes = crate::daemon::processes_left(&d.data_dir().display().to_string(), |line| {
        line.contains("runsc") || line.contains("crun")
    })
    .await;
    assert!(runtimes.is_empty(), "{runtimes:?}");
    for (kind, _, _, key) in &kept {
        assert_key_gone(&d, kind, key).await;
    }
    d.restart().await;
    d.finish().await;
}
