//! Several backends in one daemon: the profile chooses, the row remembers, status shows each.
//! The second backend is the in-memory fake, built in with the `backend-fake` feature (as the
//! test script does); without it these tests are left out.

use std::process::Command;

use sbx_protocol::{CreateSandboxRequest, ExecRequest, SandboxState};

use crate::daemon::{text, Options, TestDaemon, SBX};

const TWO_BACKENDS: &str = r#"
[profiles.mock]
backend = "fake"
"#;

#[tokio::test]
async fn profiles_choose_the_backend_and_each_call_follows_the_row() {
    let d = TestDaemon::start_with(Options {
        config: Some(TWO_BACKENDS),
        ..Default::default()
    })
    .await;

    let status = d.client.status().await.unwrap();
    let names: Vec<&str> = status.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["fake", "native"], "{status:?}");
    assert!(status.backends.iter().all(|b| b.healthy), "{status:?}");
    let native = status.backends.iter().find(|b| b.name == "native").unwrap();
    assert!(
        native.capabilities.iter().any(|c| c == "terminal"),
        "{native:?}"
    );

    let real = d.create().await;
    assert_eq!(real.backend, "native");
    let mock = d
        .create_with(CreateSandboxRequest {
            profile: Some("mock".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(mock.backend, "fake");
    assert_eq!(mock.profile, "mock");

    // Each exec goes to the backend that made the sandbox: the fake's interpreter answers
    // `echo`, and knows nothing of the host.
    let out = d.sh(&real.id, "echo $((6*7)); test -d /proc/self").await;
    assert_eq!(
        (out.exit_code, text(out.stdout.as_bytes()).trim()),
        (0, "42")
    );
    let out = d
        .client
        .exec(
            &mock.id,
            &ExecRequest {
                cmd: vec!["echo".into(), "from".into(), "the".into(), "fake".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.trim(), "from the fake");

    // Status lists both sandboxes with their backend's view.
    let status = d.client.status().await.unwrap();
    let ids: Vec<&str> = status.sandboxes.iter().map(|s| s.id.as_str()).collect();
    assert!(ids.contains(&real.id.as_str()) && ids.contains(&mock.id.as_str()));

    // After a crash, each backend is asked about its own sandboxes: native adopts its own.
    let mut d = d;
    d.crash();
    d.restart().await;
    assert_eq!(
        d.client.get(&real.id).await.unwrap().state,
        SandboxState::Running
    );
    // The fake's sandboxes live in the daemon's memory: after a restart they are gone, and
    // reconciliation says so rather than pretending.
    let after = d.client.get(&mock.id).await.unwrap();
    assert!(
        matches!(after.state, SandboxState::Failed | SandboxState::Destroyed),
        "{after:?}"
    );

    d.client.delete(&real.id).await.unwrap();
    d.client.delete(&mock.id).await.ok();
    d.finish().await;
}

#[test]
fn a_backend_this_build_lacks_is_refused_at_start_with_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sbx.toml");
    std::fs::write(&file, "[profiles.default]\nbackend = \"vmware\"\n").unwrap();
    // `config check` says so first, naming the file and the key.
    let out = Command::new(SBX)
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let error = text(&out.stderr);
    assert!(
        error.contains("sbx.toml")
            && error.contains("profiles.default.backend")
            && error.contains(
                "not available in this build of sbx (backends: native, oci, crun, runc, docker, docker-gvisor, fake)"
            ),
        "{error}"
    );
    let out = Command::new(SBX)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let error = text(&out.stderr);
    assert!(
        error.contains("\"vmware\" is not available in this build of sbx")
            && error.contains("native")
            && error.contains("fake"),
        "{error}"
    );
}
