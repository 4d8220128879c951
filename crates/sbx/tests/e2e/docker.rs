//! The Docker backend through the binary, on the host's Docker Engine (`scripts/setup --test`
//! installs and starts it, with gVisor's runsc registered): profiles `backend = "docker"` and
//! `backend = "docker-gvisor"` reported in status (the second as gVisor), `sbx create
//! --profile` from the host template and from an image, commands as the sandbox user with no
//! network, a read-only root and a home bounded by the sandbox's disk size, a terminal, pause
//! and resume, destroy — and nothing left: no container of the daemon's, no runtime process
//! naming one.

use crate::daemon::{text, Options, TestDaemon};

const CONFIG: &str =
    "[profiles.docker]\nbackend = \"docker\"\n[profiles.docker-gvisor]\nbackend = \"docker-gvisor\"\n";

/// The daemon's containers on the engine, by the instance label of `kind`.
fn containers_of(d: &TestDaemon, kind: &str) -> Vec<String> {
    let instance = std::fs::read_to_string(d.data_dir().join(kind).join("instance-id")).unwrap();
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label=sbx.instance={}", instance.trim()))
        .output()
        .unwrap();
    assert!(out.status.success(), "docker ps: {}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn docker_profiles_run_sandboxes_end_to_end() {
    let d = TestDaemon::start_with(Options {
        config: Some(CONFIG),
        ..Default::default()
    })
    .await;
    let status = d.client.status().await.unwrap();
    let mut made = Vec::new();
    for (kind, isolation) in [("docker", "namespaces"), ("docker-gvisor", "gvisor")] {
        let backend = status.backends.iter().find(|b| b.name == kind).unwrap();
        assert!(backend.healthy, "{}", backend.detail);
        assert!(
            backend.detail.contains("Docker Engine"),
            "{}",
            backend.detail
        );
        assert_eq!(backend.isolation, isolation);
        let profile = status.profiles.iter().find(|p| p.name == kind).unwrap();
        assert_eq!(profile.gvisor.requested, isolation == "gvisor");
        assert_eq!(profile.gvisor.available, isolation == "gvisor");

        let created = d.cli(&["create", "--profile", kind, "--disk", "64"]);
        assert!(created.status.success(), "{}", text(&created.stderr));
        let id = text(&created.stdout).trim().to_owned();
        assert_eq!(d.client.get(&id).await.unwrap().backend, kind);
        let containers = containers_of(&d, kind);
        assert_eq!(containers.len(), 1, "{containers:?}");
        let out = d.cli(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "id -u; pwd; echo kept > f && cat f; python3 -c 'print(6*7)'; hostname",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            format!("1000\n/home/user\nkept\n42\n{id}\n")
        );
        // A working directory that is not there: a clean refusal naming it.
        let request = sbx_protocol::ExecRequest {
            cmd: vec!["true".into()],
            cwd: Some("/nope".into()),
            ..Default::default()
        };
        match d.client.exec(&id, &request).await {
            Err(sbx_api_client::ClientError::Api {
                status, message, ..
            }) => assert!(
                status == 400 && message.contains("/nope"),
                "{status} {message}"
            ),
            other => panic!("exec in a missing directory: {other:?}"),
        }
        // gVisor's kernel is the one the sandbox sees.
        let dmesg = d.sh(&id, "dmesg 2>/dev/null | head -1").await;
        assert_eq!(
            dmesg.stdout.contains("gVisor"),
            isolation == "gvisor",
            "{}",
            dmesg.stdout
        );
        crate::runtimes::assert_no_network_but_loopback(&d, &id, kind).await;
        // Root inside has no capabilities: the root file system is read-only, mounts and the
        // clock are refused; /tmp is writable.
        let root = d
            .sh_as(
                &id,
                Some("root"),
                "id -u; touch /made 2>/dev/null || echo root-refused; \
                 touch /tmp/made && echo tmp-made; \
                 mount -t tmpfs t /mnt 2>/dev/null || echo mount-refused; \
                 date -s 2000-01-01 >/dev/null 2>&1 || echo clock-refused; \
                 cat /home/user/f 2>/dev/null || echo home-refused",
            )
            .await;
        assert_eq!(
            root.stdout, "0\nroot-refused\ntmp-made\nmount-refused\nclock-refused\nhome-refused\n",
            "{}",
            root.stderr
        );
        // The home is bounded by the sandbox's disk size (64 MiB).
        crate::runtimes::assert_64_mib_of_writes_at_most(&d, &id).await;

        let image = crate::gvisor::terminal_pause_and_an_image(&d, &id, kind).await;
        made.push((kind, id, image, containers_of(&d, kind)));
    }

    // Destroyed: no container, no runtime process naming one.
    for (kind, id, image, containers) in &made {
        for sandbox in [id, image] {
            let removed = d.cli(&["rm", sandbox]);
            assert!(removed.status.success(), "{}", text(&removed.stderr));
        }
        assert!(containers_of(&d, kind).is_empty());
        for container in containers {
            let left = crate::daemon::processes_mentioning(container);
            assert!(left.is_empty(), "{left:?}");
        }
        // The template's image goes from the engine with the template.
        let name = format!("busy-{kind}");
        let tags = || {
            let out = std::process::Command::new("docker")
                .args(["images", "sbx-template", "--format", "{{.Tag}}"])
                .output()
                .unwrap();
            text(&out.stdout)
                .lines()
                .filter(|tag| {
                    tag.strip_prefix(&format!("{name}-"))
                        .is_some_and(|hash| hash.len() == 16)
                })
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert!(!tags().is_empty(), "no image of {name} in the engine");
        let removed = d.cli(&["template", "rm", &name]);
        assert!(removed.status.success(), "{}", text(&removed.stderr));
        assert_eq!(tags(), Vec::<String>::new());
    }
    d.finish().await;
}
