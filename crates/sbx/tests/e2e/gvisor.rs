//! The OCI backend under gVisor (`runsc`, installed by `scripts/setup --test`) through the
//! binary: a profile on it (`backend = "oci"`) reported as gVisor in status, `sbx create
//! --profile gvisor` from the host template and from an image template, commands (in gVisor's
//! kernel, with no network), a terminal, pause and resume, destroy — and nothing of it left: no runtime
//! process, bundle, mount or cgroup.

use sbx_protocol::CreateSandboxRequest;

use crate::daemon::{text, Options, TestDaemon};

/// No warm pool: the sandboxes here are built by their create (`warm.rs` tests the pool).
const CONFIG: &str = "[profiles.gvisor]\nbackend = \"oci\"\nwarm_pool = 0\n";

fn runtime_processes(data: &std::path::Path) -> Vec<String> {
    let needle = data.display().to_string();
    crate::daemon::processes_mentioning(&needle)
        .into_iter()
        .map(|(_, line)| line)
        .filter(|line| line.contains("runsc"))
        .collect()
}

#[tokio::test]
async fn a_gvisor_profile_runs_sandboxes_under_runsc_end_to_end() {
    let d = TestDaemon::start_with(Options {
        config: Some(CONFIG),
        ..Default::default()
    })
    .await;
    let status = d.client.status().await.unwrap();
    let oci = status.backends.iter().find(|b| b.name == "oci").unwrap();
    assert!(oci.healthy, "{}", oci.detail);
    assert_eq!(oci.isolation, "gvisor");
    assert!(oci.detail.contains("runsc"), "{}", oci.detail);
    let gvisor = status.profiles.iter().find(|p| p.name == "gvisor").unwrap();
    assert!(gvisor.gvisor.requested && gvisor.gvisor.available);
    let default = status
        .profiles
        .iter()
        .find(|p| p.name == "default")
        .unwrap();
    assert!(!default.gvisor.requested);
    let shown = d.cli(&["status"]);
    assert!(text(&shown.stdout)
        .contains("profile gvisor: backend oci, isolation gvisor, gVisor in use"));

    // From the host template, through the CLI.
    let created = d.cli(&["create", "--profile", "gvisor"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let id = text(&created.stdout).trim().to_owned();
    let sandbox = d.client.get(&id).await.unwrap();
    assert_eq!(sandbox.backend, "oci");
    let out = d.cli(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "dmesg | head -1; id -u; pwd; echo kept > f && cat f; python3 -c 'print(6*7)'",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("gVisor"), "not gVisor's kernel: {stdout}");
    assert!(stdout.contains("1000\n/home/user\nkept\n42\n"), "{stdout}");
    // No network: nothing but loopback.
    let net = d
        .sh(
            &id,
            "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\"",
        )
        .await;
    assert_ne!(net.exit_code, 0, "a gVisor sandbox reached the network");
    // A background child holding the pipes does not keep a command running.
    let started = std::time::Instant::now();
    let background = d.sh(&id, "sleep 100 & echo started").await;
    assert_eq!(background.stdout, "started\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // A command's environment is on no host command line.
    let running = {
        let client = d.client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .exec(
                    &id,
                    &sbx_protocol::ExecRequest {
                        cmd: vec!["sh".into(), "-c".into(), "sleep 2; echo $TOKEN".into()],
                        env: [("TOKEN".to_owned(), "s3cr3t-value".to_owned())].into(),
                        ..Default::default()
                    },
                )
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let visible = crate::daemon::processes_mentioning("s3cr3t-value");
    assert!(visible.is_empty(), "{visible:?}");
    let out = running.await.unwrap().unwrap();
    assert_eq!(out.stdout, "s3cr3t-value\n");
    // Root inside, exit codes, stdin.
    let root = d.sh_as(&id, Some("root"), "id -u; exit 3").await;
    assert_eq!((root.stdout.as_str(), root.exit_code), ("0\n", 3));
    let image = terminal_pause_and_an_image(&d, &id, "gvisor").await;

    // Destroyed: nothing left.
    for sandbox in [&id, &image] {
        let removed = d.cli(&["rm", sandbox]);
        assert!(removed.status.success(), "{}", text(&removed.stderr));
    }
    // A signal on its way when the sandbox went (the watch's end) ends on its own, at once.
    let mut left = runtime_processes(d.data_dir());
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = runtime_processes(d.data_dir());
    }
    assert!(left.is_empty(), "{left:?}");
    let bundles = std::fs::read_dir(d.data_dir().join("oci/bundles"))
        .unwrap()
        .count();
    assert_eq!(bundles, 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&d.data_dir().display().to_string()));
    let instance = std::fs::read_to_string(d.data_dir().join("oci/instance-id")).unwrap();
    d.finish().await;
    // The daemon's own cgroup parent goes with it.
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let parent = hierarchy.path().join("sbx-oci").join(instance.trim());
        assert!(!parent.exists(), "{} left behind", parent.display());
    }
}

/// What every runtime's end-to-end test checks the same way, through the binary, on sandbox
/// `id` of `profile`: a terminal (its size, a resize, its exit status), pause and resume
/// through the CLI, files, and a sandbox of `profile` from an imported image (its working
/// directory, environment and files, and files through the API on an image that has none of
/// the host's libraries); that sandbox's id.
pub(crate) async fn terminal_pause_and_an_image(d: &TestDaemon, id: &str, profile: &str) -> String {
    let id = id.to_owned();
    // A terminal: its size, a resize, its exit status.
    {
        use crate::terminal::{control, read_to_end, read_until, send_text, shell, started};
        let mut terminal = d.client.terminal(&id, &shell()).await.unwrap();
        assert!(started(&mut terminal).await > 1);
        let mut output = String::new();
        send_text(&mut terminal, "stty size\n").await;
        read_until(&mut terminal, &mut output, "24 80").await;
        control(
            &mut terminal,
            sbx_protocol::TerminalControl::Resize {
                rows: 30,
                cols: 100,
            },
        )
        .await;
        send_text(&mut terminal, "stty size\n").await;
        read_until(&mut terminal, &mut output, "30 100").await;
        send_text(&mut terminal, "exit 7\n").await;
        let (exit, _) = read_to_end(&mut terminal).await;
        match exit {
            Some(sbx_protocol::TerminalEvent::Exit(info)) => assert_eq!(info.exit_code, 7),
            other => panic!("expected exit, got {other:?}"),
        }
    }
    // Pause and resume.
    let paused = d.cli(&["pause", &id]);
    assert!(paused.status.success(), "{}", text(&paused.stderr));
    assert_eq!(
        d.client.get(&id).await.unwrap().state,
        sbx_protocol::SandboxState::Paused
    );
    let resumed = d.cli(&["resume", &id]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(d.sh(&id, "echo back").await.stdout, "back\n");

    // From an image template.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    std::fs::write(
        &archive,
        crate::templates::docker_save(&[&crate::templates::base_layer()]),
    )
    .unwrap();
    let name = format!("busy-{profile}");
    let imported = d.cli(&["template", "import", &name, archive.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let image = d
        .create_with(CreateSandboxRequest {
            profile: Some(profile.into()),
            template: Some(name.clone()),
            ..Default::default()
        })
        .await;
    let out = d
        .sh(&image.id, "pwd; echo $FROM_IMAGE; cat /etc/hello")
        .await;
    assert_eq!(
        out.stdout, "/opt/app\nyes\nhello from the image\n",
        "{}",
        out.stderr
    );
    // The image's files are the sandbox's own: root's are its root's, which may change them
    // (Docker's sandboxes have a read-only root: there, only the owner is checked).
    let change = if profile.starts_with("docker") {
        ""
    } else {
        "echo more >> /etc/hello && echo changed"
    };
    let owned = d
        .sh_as(
            &image.id,
            Some("root"),
            &format!("stat -c '%u %g' /etc/hello; {change}"),
        )
        .await;
    let expected = if change.is_empty() {
        "0 0\n"
    } else {
        "0 0\nchanged\n"
    };
    assert_eq!(owned.stdout, expected, "{}", owned.stderr);
    files_through_the_cli(d, &id, "/home/user").await;
    files_through_the_cli(d, &image.id, "/tmp").await;

    image.id
}

/// Files of sandbox `id` through the CLI, under directory `under`: a file copied in and out,
/// listed, moved, a directory made, removed; a directory archived and extracted elsewhere
/// through the API; what the sandbox's own commands see of them; a missing path is a clear
/// error.
async fn files_through_the_cli(d: &TestDaemon, id: &str, under: &str) {
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("in.txt");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    let target = format!("{id}:{under}/work/in.bin");
    let made = d.cli(&["files", "mkdir", id, &format!("{under}/work")]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let copied = d.cli(&["cp", source.to_str().unwrap(), &target]);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    let seen = d
        .sh(id, &format!("cd {under}/work && wc -c < in.bin && id -u"))
        .await;
    assert_eq!(
        seen.stdout.lines().next(),
        Some("300000"),
        "{}",
        seen.stderr
    );
    let moved = d.cli(&[
        "files",
        "mv",
        id,
        &format!("{under}/work/in.bin"),
        &format!("{under}/work/moved.bin"),
    ]);
    assert!(moved.status.success(), "{}", text(&moved.stderr));
    let listed = d.cli(&["--json", "files", "ls", id, &format!("{under}/work")]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed = text(&listed.stdout);
    assert!(
        listed.contains("moved.bin") && !listed.contains("in.bin"),
        "{listed}"
    );
    let back = local.path().join("back.bin");
    let copied = d.cli(&[
        "cp",
        &format!("{id}:{under}/work/moved.bin"),
        back.to_str().unwrap(),
    ]);
    assert!(copied.status.success(), "{}", text(&copied.stderr));
    assert!(
        std::fs::read(&back).unwrap() == bytes,
        "the bytes came back changed"
    );
    // A directory as a tar stream, and back in elsewhere.
    let archive = crate::archives::archive_of(d, id, &format!("{under}/work")).await;
    let extracted = d
        .client
        .extract(id, &format!("{under}/copy"), None, archive)
        .await
        .unwrap();
    assert!(extracted.entries >= 2, "{extracted:?}");
    let seen = d
        .sh(
            id,
            &format!("cmp {under}/work/moved.bin {under}/copy/work/moved.bin && echo same"),
        )
        .await;
    assert_eq!(seen.stdout, "same\n", "{}", seen.stderr);
    // A watch tells what the sandbox's commands change.
    let mut watch = crate::archives::recursive_watch(d, id, &format!("{under}/copy")).await;
    d.sh(
        id,
        &format!("echo x > {under}/copy/work/new && touch {under}/copy/done"),
    )
    .await;
    let seen = crate::archives::watch_events(&mut watch, "/done").await;
    assert!(
        seen.iter()
            .any(|(k, p)| k == "create" && p == &format!("{under}/copy/work/new")),
        "{seen:?}"
    );
    drop(watch);
    let removed = d.cli(&["files", "rm", "-r", id, &format!("{under}/work")]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let missing = d.cli(&["files", "stat", id, &format!("{under}/work")]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("No such file"),
        "{}",
        text(&missing.stderr)
    );
}

/// Hibernation through the CLI: a Python process's memory (a random number it drew, a count
/// it keeps) and working directory survive a checkpoint, a daemon restart and a restore; a
/// native sandbox cannot hibernate (501) and is left running.
#[tokio::test]
async fn a_hibernated_gvisor_sandbox_survives_a_restart_and_carries_on() {
    let mut d = TestDaemon::start_with(Options {
        config: Some(CONFIG),
        ..Default::default()
    })
    .await;
    let status = d.client.status().await.unwrap();
    let oci = status.backends.iter().find(|b| b.name == "oci").unwrap();
    assert!(oci.capabilities.iter().any(|c| c == "hibernate"));

    // Native: 501, untouched.
    let native = d.create().await;
    let refused = d.client.hibernate(&native.id).await.unwrap_err();
    match &refused {
        sbx_api_client::ClientError::Api {
            status, message, ..
        } => {
            assert_eq!(*status, 501, "{message}");
            assert!(message.contains("cannot hibernate"), "{message}");
        }
        other => panic!("{other}"),
    }
    let cli = d.cli(&["hibernate", &native.id]);
    assert!(!cli.status.success());
    assert!(text(&cli.stderr).contains("cannot hibernate"));
    assert_eq!(
        d.client.get(&native.id).await.unwrap().state,
        sbx_protocol::SandboxState::Running
    );
    assert_eq!(d.sh(&native.id, "echo still").await.stdout, "still\n");

    let created = d.cli(&["create", "--profile", "gvisor"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let id = text(&created.stdout).trim().to_owned();
    let program = "import os, time\n\
                   secret = int.from_bytes(os.urandom(4), 'big')\n\
                   n = 0\n\
                   while True:\n    \
                       n += 1\n    \
                       open('state.tmp', 'w').write(f'{secret} {n}')\n    \
                       os.rename('state.tmp', 'state')\n    \
                       time.sleep(0.05)\n";
    let started = d
        .sh(
            &id,
            &format!(
                "mkdir -p /tmp/work && cd /tmp/work && \
                 (python3 -c \"{program}\" </dev/null >/dev/null 2>&1 &)"
            ),
        )
        .await;
    assert_eq!(started.exit_code, 0, "{}", started.stderr);
    let read = |d: &TestDaemon, id: &str| {
        let out = d.cli(&["exec", id, "--", "cat", "/tmp/work/state"]);
        let line = text(&out.stdout);
        let mut parts = line.split_whitespace().map(|p| p.parse::<u64>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let mut before = (0, 0);
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let out = d.cli(&["exec", &id, "--", "cat", "/tmp/work/state"]);
        if out.status.success() {
            before = read(&d, &id);
            break;
        }
    }
    assert!(before.1 > 0, "the program runs");

    let hibernated = d.cli(&["hibernate", &id]);
    assert!(hibernated.status.success(), "{}", text(&hibernated.stderr));
    assert!(text(&hibernated.stdout).contains("hibernated"));
    let sandbox = d.client.get(&id).await.unwrap();
    assert_eq!(sandbox.state, sbx_protocol::SandboxState::Hibernated);
    // The sandbox's runtime processes end just after the call that checkpointed it returns.
    let left = crate::daemon::processes_left(&d.data_dir().display().to_string(), |line| {
        line.contains("runsc")
    })
    .await;
    assert!(left.is_empty(), "host processes are gone");
    let refused = d.cli(&["exec", &id, "--", "true"]);
    assert!(
        !refused.status.success(),
        "a hibernated sandbox runs nothing"
    );

    d.stop().await;
    d.restart().await;
    assert_eq!(
        d.client.get(&id).await.unwrap().state,
        sbx_protocol::SandboxState::Hibernated
    );
    // A fork: a new sandbox restored from the checkpoint, the same process and memory in it;
    // the source stays hibernated. Forking a running sandbox is refused.
    let forked = d.cli(&["create", "--fork-of", &id]);
    assert!(forked.status.success(), "{}", text(&forked.stderr));
    let fork = text(&forked.stdout).trim().to_owned();
    assert_ne!(fork, id);
    let in_fork = read(&d, &fork);
    assert_eq!(in_fork.0, before.0, "the fork holds the source's memory");
    assert!(in_fork.1 >= before.1, "{before:?} then {in_fork:?}");
    assert_eq!(
        d.client.get(&id).await.unwrap().state,
        sbx_protocol::SandboxState::Hibernated
    );
    let refused = d.cli(&["create", "--fork-of", &fork]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("running"),
        "{}",
        text(&refused.stderr)
    );

    let resumed = d.cli(&["resume", &id]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let after = read(&d, &id);
    assert_eq!(after.0, before.0, "the same process, with the same memory");
    assert!(
        after.1 >= before.1,
        "it counts on from {before:?}: {after:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let later = read(&d, &id);
    assert!(
        later.1 > after.1,
        "and keeps counting: {after:?} then {later:?}"
    );
    let events = d.client.sandbox_events(&id).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.reason.as_deref() == Some("hibernated")));

    // Each its own: the fork counts on too.
    assert!(read(&d, &fork).1 > in_fork.1);
    for sandbox in [&id, &fork, &native.id] {
        let removed = d.cli(&["rm", sandbox]);
        assert!(removed.status.success(), "{}", text(&removed.stderr));
    }
    let left = runtime_processes(d.data_dir());
    assert!(left.is_empty(), "{left:#?}\n{}", d.log());
    d.finish().await;
}
