//! Isolation, attacked from inside: each property of a native sandbox is probed by a hostile
//! command, as the default user and (where it matters) as root inside the sandbox.

use sbx_protocol::{CreateSandboxRequest, ResourcesRequest};

use crate::daemon::{assert_host_healthy, TestDaemon};

const USERS: [Option<&str>; 2] = [None, Some("root")];

#[tokio::test]
async fn only_the_sandbox_processes_are_visible() {
    let d = TestDaemon::start().await;
    let sandbox = d.create().await;
    let result = d.sh(&sandbox.id, "ps -eo pid=,comm=").await;
    let comms: Vec<&str> = result
        .stdout
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(comms, vec!["sbx-init", "sh", "ps"], "{}", result.stdout);
    assert!(
        result.stdout.trim_start().starts_with("1 "),
        "init is pid 1: {}",
        result.stdout
    );
    assert_eq!(
        d.sh(&sandbox.id, "hostname").await.stdout.trim(),
        sandbox.id
    );
    // No descriptor of the daemon reaches a command.
    assert_eq!(
        d.sh(&sandbox.id, "ls /proc/self/fd | tr '\\n' ' '")
            .await
            .stdout,
        "0 1 2 3 "
    );
    d.finish().await;
}

#[tokio::test]
async fn no_network_but_loopback_and_no_way_to_the_daemon() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let interfaces = d
        .sh(&id, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
        .await;
    assert_eq!(interfaces.stdout, "lo\n");
    let host_addresses = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .unwrap();
    let mut targets = vec![format!("127.0.0.1:{}", d.port)];
    for address in String::from_utf8_lossy(&host_addresses.stdout).split_whitespace() {
        if !address.contains(':') {
            targets.push(format!("{address}:{}", d.port));
        }
    }
    for target in targets {
        let (host, port) = target.split_once(':').unwrap();
        let script = format!(
            "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('{host}', {port}))\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)\n"
        );
        let request = sbx_protocol::ExecRequest {
            cmd: vec!["python3".into(), "-c".into(), script],
            ..Default::default()
        };
        let result = d.client.exec(&id, &request).await.unwrap();
        assert!(
            result.stdout.starts_with("refused"),
            "{target}: {} {}",
            result.stdout,
            result.stderr
        );
    }
    d.finish().await;
}

#[tokio::test]
async fn filesystem_is_private_and_system_dirs_are_read_only() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    let marker = format!("/tmp/sbx-host-marker-{}", std::process::id());
    std::fs::write(&marker, "host secret").unwrap();
    let data_dir = d.data_dir().to_string_lossy().into_owned();
    for user in USERS {
        let checks = [
            ("touch /usr/bin/evil", false),
            ("echo x >> /etc/passwd", false),
            ("rm -f /usr/bin/env", false),
            ("mount -o remount,rw /usr", false),
            (&*format!("test -e {marker}"), false),
            (&*format!("test -e {data_dir}"), false),
            ("test -e /etc/shadow", false),
            ("ls /var/lib | grep -q .", false),
            ("echo x > /proc/sys/kernel/hostname", false),
            ("echo '|/tmp/x' > /proc/sys/kernel/core_pattern", false),
            ("echo b > /proc/sysrq-trigger", false),
            ("readlink /proc/1/exe", false),
            ("cat /proc/1/environ", false),
            ("test -s /proc/kcore", false),
            ("echo ok > /tmp/t && cat /tmp/t", true),
            ("test \"$(stat -f -c %T /tmp)\" = tmpfs", true),
            ("sh -c 'echo ok > $HOME/f'", true),
        ];
        for (script, should_succeed) in checks {
            let result = d.sh_as(&id, user, script).await;
            assert_eq!(
                result.exit_code == 0,
                should_succeed,
                "as {user:?}: `{script}` exited {}: {}{}",
                result.exit_code,
                result.stdout,
                result.stderr
            );
        }
    }
    std::fs::remove_file(&marker).unwrap();
    let home = d
        .sh(
            &id,
            "stat -c '%a %U' /home/user; ls -A /root 2>&1 | head -1",
        )
        .await;
    assert!(home.stdout.starts_with("700 user\n"), "{}", home.stdout);
    let devices = d.sh(&id, "ls /dev | tr '\\n' ' '").await.stdout;
    assert_eq!(
        devices,
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero "
    );
    assert_eq!(
        d.sh(&id, "head -c 4 /dev/zero | od -An -tx1")
            .await
            .stdout
            .trim(),
        "00 00 00 00"
    );
    d.finish().await;
}

#[tokio::test]
async fn another_sandbox_is_invisible() {
    let d = TestDaemon::start().await;
    let a = d.create().await.id;
    let b = d.create().await.id;
    d.sh(
        &a,
        "echo a > /tmp/secret-a; echo a > $HOME/secret-a; sleep 777 > /dev/null 2>&1 &",
    )
    .await;
    let seen = d
        .sh_as(&b, Some("root"), "ls -A /tmp /home/user /root; ps -eo args= | grep -c '[s]leep 777' ; ls /proc/*/root/tmp 2>/dev/null | grep -c secret")
        .await;
    assert!(!seen.stdout.contains("secret-a"), "{}", seen.stdout);
    assert!(seen.stdout.ends_with("0\n0\n"), "{:?}", seen);
    // Distinct user ranges: the same uid inside maps to different host uids.
    let map_a = d.sh(&a, "cat /proc/self/uid_map").await.stdout;
    let map_b = d.sh(&b, "cat /proc/self/uid_map").await.stdout;
    assert_ne!(map_a, map_b);
    assert!(!map_a.split_whitespace().nth(1).unwrap().starts_with('0'));
    d.finish().await;
}

/// Each line: name, then a Python expression run by `python3`; every call must fail.
const DENIED_CALLS: &str = r#"
import ctypes, errno, os, json
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return ret, ctypes.get_errno()
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
calls = {
    "mount": (165, 0, 0, 0, 0, 0),
    "umount2": (166, 0, 0),
    "pivot_root": (155, 0, 0),
    "chroot": (161, 0),
    "unshare(user)": (272, CLONE_NEWUSER),
    "unshare(mount)": (272, CLONE_NEWNS),
    "setns": (308, 0, 0),
    "clone(newuser)": (56, CLONE_NEWUSER | 17, 0, 0, 0, 0),
    "keyctl": (250, 0, 0, 0, 0, 0),
    "add_key": (248, 0, 0, 0, 0, 0),
    "bpf": (321, 0, 0, 0),
    "perf_event_open": (298, 0, 0, 0, 0, 0),
    "userfaultfd": (323, 0),
    "io_uring_setup": (425, 1, 0),
    "open_by_handle_at": (304, 0, 0, 0),
    "name_to_handle_at": (303, 0, 0, 0, 0, 0),
    "ptrace(attach init)": (101, 16, 1, 0, 0),
    "kexec_load": (246, 0, 0, 0, 0),
    "init_module": (175, 0, 0, 0),
    "reboot": (169, 0, 0, 0, 0),
    "swapon": (167, 0, 0),
    "syslog": (103, 3, 0, 0),
    "settimeofday": (164, 0, 0),
    "acct": (163, 0),
    "quotactl": (179, 0, 0, 0, 0),
}
results = {name: call(*args) for name, args in calls.items()}
# Raw and packet sockets.
import socket
for name, args in {"raw socket": (socket.AF_INET, socket.SOCK_RAW, 1), "packet socket": (17, socket.SOCK_RAW, 0)}.items():
    try:
        socket.socket(*args).close()
        results[name] = (0, 0)
    except OSError as e:
        results[name] = (-1, e.errno)
print(json.dumps(results))
"#;

#[tokio::test]
async fn privileged_kernel_interfaces_are_denied() {
    let d = TestDaemon::start().await;
    let id = d.create().await.id;
    for user in USERS {
        let request = sbx_protocol::ExecRequest {
            cmd: vec!["python3".into(), "-c".into(), DENIED_CALLS.into()],
            user: user.map(Into::into),
            ..Default::default()
        };
        let result = d.client.exec(&id, &request).await.unwrap();
        assert_eq!(result.exit_code, 0, "{}", result.stderr);
        let results: std::collections::BTreeMap<String, (i64, i32)> =
            serde_json::from_str(result.stdout.trim()).unwrap();
        for (name, (ret, errno)) in results {
            assert_eq!(ret, -1, "as {user:?}: {name} succeeded");
            assert!(
                [libc::EPERM, libc::EACCES, libc::ENOSYS].contains(&errno),
                "as {user:?}: {name} failed with errno {errno}, not a denial"
            );
        }
        for command in [
            "unshare -U true",
            "unshare -m true",
            "mount -t tmpfs none /mnt",
            "chroot / true",
        ] {
            let result = d.sh_as(&id, user, command).await;
            assert_ne!(result.exit_code, 0, "as {user:?}: `{command}` worked");
        }
    }
    // Identity and capabilities.
    let status = d
        .sh(
            &id,
            "id -u; grep -E '^(CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status",
        )
        .await;
    assert_eq!(
        status.stdout,
        "1000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n"
    );
    let root = d
        .sh_as(
            &id,
            Some("root"),
            "id -u; grep '^CapEff:' /proc/self/status",
        )
        .await;
    let effective = u64::from_str_radix(
        root.stdout
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap(),
        16,
    )
    .unwrap();
    assert_eq!(root.stdout.lines().next(), Some("0"));
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_NET_RAW: u64 = 1 << 13;
    const CAP_SYS_PTRACE: u64 = 1 << 19;
    assert_eq!(
        effective & (CAP_SYS_ADMIN | CAP_NET_RAW | CAP_SYS_PTRACE),
        0,
        "{effective:x}"
    );
    d.finish().await;
}

#[tokio::test]
async fn daemon_environment_never_reaches_a_sandbox() {
    let d = TestDaemon::start_with_env(&[
        ("SBX_TEST_SECRET", "hunter2"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
    ])
    .await;
    let id = d.create().await.id;
    let env = d.sh(&id, "env").await.stdout;
    assert!(
        !env.contains("hunter2") && !env.contains("AWS_SECRET"),
        "{env}"
    );
    let init_env = d
        .sh_as(
            &id,
            Some("root"),
            "cat /proc/1/environ 2>&1 | tr '\\0' '\\n'",
        )
        .await;
    assert!(!init_env.stdout.contains("hunter2"), "{}", init_env.stdout);
    d.finish().await;
}

fn limits(memory_mb: u64, pids: u64) -> CreateSandboxRequest {
    CreateSandboxRequest {
        resources: Some(ResourcesRequest {
            memory_mb: Some(memory_mb),
            cpus: Some(1.0),
            pids: Some(pids),
            disk_mb: None,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_memory_hog_is_killed_inside_the_sandbox_only() {
    let d = TestDaemon::start().await;
    let id = d.create_with(limits(64, 64)).await.id;
    let request = sbx_protocol::ExecRequest {
        cmd: vec![
            "python3".into(),
            "-c".into(),
            "b = bytearray(512 * 1024 * 1024); print('survived')".into(),
        ],
        ..Default::default()
    };
    let result = d.client.exec(&id, &request).await.unwrap();
    assert_eq!(result.signal, Some(9), "{result:?}");
    assert!(!result.stdout.contains("survived"));
    // tmpfs pages count against the same limit.
    let fill = d
        .sh(&id, "head -c 200000000 /dev/zero > /tmp/fill; echo $?")
        .await;
    assert_ne!(fill.stdout.trim(), "0", "{fill:?}");
    // The sandbox itself lives on.
    assert_eq!(
        d.sh(&id, "rm -f /tmp/fill; echo alive").await.stdout,
        "alive\n"
    );
    assert_eq!(
        d.client.get(&id).await.unwrap().state,
        sbx_protocol::SandboxState::Running
    );
    assert_host_healthy(&d).await;
    d.finish().await;
}

#[tokio::test]
async fn a_fork_bomb_is_stopped_by_the_pids_limit() {
    let d = TestDaemon::start().await;
    let bomb = d.create_with(limits(256, 64)).await.id;
    let bystander = d.create().await.id;
    let client = d.client.clone();
    let bomb_id = bomb.clone();
    let running = tokio::spawn(async move {
        let request = sbx_protocol::ExecRequest {
            cmd: vec![
                "bash".into(),
                "-c".into(),
                "b() { b | b & }; b; sleep 4".into(),
            ],
            timeout: Some(6.0.into()),
            ..Default::default()
        };
        client.exec(&bomb_id, &request).await
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // While it rages: the limit holds, the daemon answers, another sandbox works.
    let instance = std::fs::read_to_string(d.data_dir().join("instance-id")).unwrap();
    let current = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/sbx/{}/{bomb}/pids.current",
        instance.trim()
    ))
    .or_else(|_| {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/sbx/{}/{bomb}/pids.current",
            instance.trim()
        ))
    })
    .unwrap();
    assert!(current.trim().parse::<u64>().unwrap() <= 64, "{current}");
    assert_eq!(d.client.health().await.unwrap().status, "ok");
    assert_eq!(d.sh(&bystander, "echo fine").await.stdout, "fine\n");
    crate::daemon::assert_unprivileged_host_process_opens_files();
    let _ = running.await.unwrap();
    // Destroy reclaims everything even from a bombed sandbox.
    d.client.delete(&bomb).await.unwrap();
    assert_host_healthy(&d).await;
    d.finish().await;
}

#[tokio::test]
async fn the_disk_quota_stops_a_sandbox_filling_the_host_disk() {
    let d = TestDaemon::start().await;
    let request = CreateSandboxRequest {
        resources: Some(ResourcesRequest {
            disk_mb: Some(128),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = d.create_with(request).await.id;
    for user in USERS {
        let fill = d
            .sh_as(&id, user, "dd if=/dev/zero of=$HOME/fill bs=1M count=400 2>&1; sync; du -m $HOME/fill | cut -f1")
            .await;
        assert!(
            fill.stdout.contains("No space left"),
            "as {user:?}: {}",
            fill.stdout
        );
        let written: u64 = fill.stdout.lines().last().unwrap().trim().parse().unwrap();
        assert!(
            written <= 128,
            "as {user:?}: wrote {written} MiB past a 128 MiB quota"
        );
        // Many small files hit the same wall (inodes are part of the disk too).
        d.sh_as(&id, user, "rm -f $HOME/fill").await;
    }
    let image = d
        .data_dir()
        .join("sandboxes")
        .join(d.key(&id))
        .join("disk.img");
    let allocated = std::fs::metadata(&image)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap();
    assert!(
        allocated <= 140 << 20,
        "the image holds {allocated} bytes on the host"
    );
    // The sandbox carries on once space is freed.
    assert_eq!(
        d.sh(&id, "echo ok > $HOME/ok && cat $HOME/ok").await.stdout,
        "ok\n"
    );
    assert_host_healthy(&d).await;
    d.finish().await;
}
