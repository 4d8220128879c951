//! The OCI backend over `crun` and `runc` (installed by `scripts/setup --test`) through the
//! binary: profiles on them (`backend = "crun"`, `backend = "runc"`) reported in status with
//! namespaces isolation, `sbx create --profile` from the host template and from an image,
//! commands on the host's kernel inside a user namespace of the sandbox's own (its ids a host
//! range no one else has), behind the seccomp filter, with no network; a writable root bounded
//! by the sandbox's disk size; a terminal, pause and resume, destroy — and nothing left: no
//! runtime process, bundle, mount, cgroup or uid range claim.

use crate::daemon::{text, Options, TestDaemon};

/// No warm pool: the sandboxes here are built by their create (`warm.rs` tests the pool).
const CONFIG: &str = "[profiles.crun]\nbackend = \"crun\"\nwarm_pool = 0\n\
                      [profiles.runc]\nbackend = \"runc\"\nwarm_pool = 0\n";

#[tokio::test]
async fn crun_and_runc_profiles_run_sandboxes_end_to_end() {
    let d = TestDaemon::start_with(Options {
        config: Some(CONFIG),
        ..Default::default()
    })
    .await;
    let status = d.client.status().await.unwrap();
    let mut ids = Vec::new();
    for runtime in ["crun", "runc"] {
        let backend = status.backends.iter().find(|b| b.name == runtime).unwrap();
        assert!(backend.healthy, "{}", backend.detail);
        assert_eq!(backend.isolation, "namespaces");
        assert!(!backend.capabilities.iter().any(|c| c == "hibernate"));
        let profile = status.profiles.iter().find(|p| p.name == runtime).unwrap();
        assert!(!profile.gvisor.requested);

        let created = d.cli(&["create", "--profile", runtime, "--disk", "64"]);
        assert!(created.status.success(), "{}", text(&created.stderr));
        let id = text(&created.stdout).trim().to_owned();
        assert_eq!(d.client.get(&id).await.unwrap().backend, runtime);
        let out = d.cli(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "id -u; pwd; echo kept > f && cat f; python3 -c 'print(6*7)'; \
             grep -c '^Seccomp:.*2' /proc/self/status; cat /proc/self/uid_map",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with("1000\n/home/user\nkept\n42\n1\n"),
            "{stdout}"
        );
        // The sandbox's ids are a host range of its own, far from the host's users.
        let map: Vec<u64> = stdout
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(map[0], 0);
        assert!(map[1] >= 0x7000_0000, "{map:?}");
        assert_eq!(map[2], 65536);
        assert_no_network_but_loopback(&d, &id, runtime).await;
        // Root inside writes the root's own files, not the template's (host-owned: nobody),
        // and cannot mount, make namespaces or change the host's clock.
        let root = d
            .sh_as(
                &id,
                Some("root"),
                "id -u; touch /made && echo made; touch /etc/x 2>/dev/null || echo etc-refused; \
                 mount -t tmpfs t /mnt 2>/dev/null || echo mount-refused; \
                 unshare -U true 2>/dev/null || echo unshare-refused; \
                 date -s 2000-01-01 >/dev/null 2>&1 || echo clock-refused",
            )
            .await;
        assert_eq!(
            root.stdout, "0\nmade\netc-refused\nmount-refused\nunshare-refused\nclock-refused\n",
            "{}",
            root.stderr
        );
        // The writable layer is bounded by the sandbox's disk size (64 MiB).
        assert_64_mib_of_writes_at_most(&d, &id).await;

        // A runtime's exec client that dies before its command hands the command to the
        // daemon (a subreaper): when it ends, it is reaped, not left a zombie (which would
        // also keep the sandbox's init from ever ending, and so the sandbox from going).
        let sleeper = {
            let d = &d;
            let id = id.clone();
            tokio::spawn({
                let url = d.url.clone();
                let key = d.admin_key.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        crate::daemon::cli_as(
                            &url,
                            Some(&key),
                            &["exec", &id, "--", "sleep", "30"],
                            None,
                        )
                    })
                    .await
                    .unwrap()
                }
            })
        };
        let mut client = None;
        for _ in 0..200 {
            client = crate::daemon::processes_mentioning(&id)
                .into_iter()
                .find(|(_, line)| {
                    let program = line.split_whitespace().next().unwrap_or_default();
                    program.ends_with(runtime) && line.contains(" exec ")
                })
                .map(|(pid, _)| pid);
            if client.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let client = client.expect("the runtime's exec client runs");
        // SAFETY: kill(2) of one pid.
        unsafe { libc::kill(client as i32, libc::SIGKILL) };
        let _ = sleeper.await;
        let killed = d.sh(&id, "pkill -x sleep; echo done").await;
        assert_eq!(killed.stdout, "done\n", "{}", killed.stderr);
        let mut zombies = Vec::new();
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            zombies = zombies_of(d.pid());
            if zombies.is_empty() {
                break;
            }
        }
        assert!(zombies.is_empty(), "zombies under the daemon: {zombies:?}");

        let image = crate::gvisor::terminal_pause_and_an_image(&d, &id, runtime).await;
        ids.push((runtime, id, image));
    }

    // Destroyed: nothing left.
    let instances: Vec<String> = ["crun", "runc"]
        .iter()
        .map(|kind| {
            std::fs::read_to_string(d.data_dir().join(kind).join("instance-id"))
                .unwrap()
                .trim()
                .to_owned()
        })
        .collect();
    for (runtime, id, image) in &ids {
        for sandbox in [id, image] {
            let removed = d.cli(&["rm", sandbox]);
            assert!(removed.status.success(), "{}", text(&removed.stderr));
        }
        let bundles = std::fs::read_dir(d.data_dir().join(runtime).join("bundles"))
            .unwrap()
            .count();
        assert_eq!(bundles, 0);
    }
    let runtimes = crate::daemon::processes_left(&d.data_dir().display().to_string(), |line| {
        line.contains("crun") || line.contains("runc")
    })
    .await;
    assert!(runtimes.is_empty(), "{runtimes:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for instance in &instances {
        assert!(!mounts.contains(instance.as_str()), "a root left mounted");
        let claims: Vec<_> = std::fs::read_dir("/run/sbx/uid-slots")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.starts_with(instance.as_str()))
            })
            .collect();
        assert!(claims.is_empty(), "uid ranges still claimed: {claims:?}");
    }
    assert!(!mounts.contains(&d.data_dir().display().to_string()));
    d.finish().await;
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for instance in &instances {
            let parent = hierarchy.path().join("sbx-oci").join(instance);
            assert!(!parent.exists(), "{} left behind", parent.display());
        }
    }
}

/// No network: nothing but loopback, which works.
pub(crate) async fn assert_no_network_but_loopback(d: &TestDaemon, id: &str, kind: &str) {
    let net = d
        .sh(
            id,
            "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\"",
        )
        .await;
    assert_ne!(net.exit_code, 0, "a {kind} sandbox reached the network");
    let loopback = d
        .sh(
            id,
            "python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); \
             c=socket.create_connection(s.getsockname()); print('loopback')\"",
        )
        .await;
    assert_eq!(loopback.stdout, "loopback\n", "{}", loopback.stderr);
}

/// Writing 100 MiB to the home of a sandbox with a 64 MiB disk fails, with 64 MiB written at
/// most; the file is removed after.
pub(crate) async fn assert_64_mib_of_writes_at_most(d: &TestDaemon, id: &str) {
    let fill = d
        .sh(
            id,
            "head -c 100M /dev/zero > ~/big; echo $?; du -sm ~/big | cut -f1",
        )
        .await;
    let mut lines = fill.stdout.lines();
    assert_ne!(lines.next(), Some("0"), "{}", fill.stdout);
    let written: u64 = lines.next().unwrap().parse().unwrap();
    assert!(written <= 64, "{written} MiB written");
    let _ = d.sh(id, "rm -f ~/big").await;
}

/// The zombie children of process `parent` that were sandbox processes (in another pid
/// namespace than the host's): what the daemon inherits from a runtime's exec client.
fn zombies_of(parent: u32) -> Vec<u32> {
    let host = std::fs::read_link("/proc/self/ns/pid").unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            fields.first() == Some(&"Z")
                && fields.get(1) == Some(&parent.to_string().as_str())
                && std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|ns| ns != host)
        })
        .collect()
}
