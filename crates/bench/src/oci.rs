//! The OCI backend under gVisor: create + first exec of a `gvisor` profile's sandbox through
//! sbx's API, next to raw `runsc run` of `true` in a bundle written here (a static busybox
//! root), in the same run; then hibernate and resume of a sandbox whose Python process holds
//! 100 MB. A daemon of its own (the measured one has no `oci` profile).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use sbx_protocol::CreateSandboxRequest;

use crate::daemon::Daemon;
use crate::report::Row;
use crate::stats::{Stat, Summary, Target};
use crate::Api;

const HIBERNATE: Target = Target(&[(Stat::P50, 3000.0)]);

const CONFIG: &str = "[limits]\ncreates_per_hour = 0\n[profiles.gvisor]\nbackend = \"oci\"\n";

/// A bundle that runs `/bin/true` of a static busybox, in a fresh temporary directory.
pub fn busybox_bundle() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("sbx-bench-bundle-")
        .tempdir_in("/tmp")?;
    let rootfs = dir.path().join("rootfs");
    for sub in ["bin", "proc", "dev", "tmp", "sys", "etc"] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("a static busybox (apt-get install busybox-static)")?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true"))?;
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
                    "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "bench",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                                  {"type": "uts"}, {"type": "mount"}]}
    });
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&config)?)?;
    Ok(dir)
}

/// Times `<runtime> <flags> run` of `true` in a fresh bundle, `n` times (after one unmeasured).
pub fn raw_run(runtime: &str, flags: &[&str], n: usize) -> Result<Vec<std::time::Duration>> {
    let dir = busybox_bundle()?;
    let state = dir.path().join("state");
    let run = |i: usize| -> Result<()> {
        let status = Command::new(runtime)
            .arg(format!("--root={}", state.display()))
            .args(flags)
            .args(["run", "--bundle"])
            .arg(dir.path())
            .arg(format!("bench-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {runtime} (apt-get install {runtime})"))?;
        if !status.success() {
            bail!("{runtime} run failed: {status}");
        }
        Ok(())
    };
    run(usize::MAX)?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        run(i)?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// Waits (up to 10 s) until backend `kind`'s warm pool is full, when it has one (its status
/// detail ends `; N/N warm`).
pub async fn pool_full(daemon: &Daemon, kind: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let status = crate::call("status", daemon.client.status()).await?;
        let detail = status
            .backends
            .iter()
            .find(|b| b.name == kind)
            .map(|b| b.detail.clone())
            .unwrap_or_default();
        let full = match detail.rsplit_once("; ") {
            Some((_, warm)) if warm.ends_with(" warm") => warm
                .trim_end_matches(" warm")
                .split_once('/')
                .is_some_and(|(ready, kept)| ready == kept),
            _ => true,
        };
        if full {
            return Ok(());
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            bail!("the {kind} warm pool did not fill in 10 s: {detail}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Times create + first exec of `true` in a sandbox of `profile`, `n` times (after one
/// unmeasured). With `pool` (a backend's name), each create waits until that backend's warm
/// pool is full again (unmeasured): the latency of a create that finds a warm container.
/// Without, creates follow each other at once.
pub async fn create_and_exec(
    daemon: &Daemon,
    profile: &str,
    n: usize,
    pool: Option<&str>,
) -> Result<Vec<std::time::Duration>> {
    let api = Api(&daemon.client);
    let request = CreateSandboxRequest {
        profile: Some(profile.into()),
        ..Default::default()
    };
    let warm = api.create_from(&request).await?;
    api.exec_true(&warm).await?;
    api.delete(&warm).await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        if let Some(kind) = pool {
            pool_full(daemon, kind).await?;
        }
        let started = Instant::now();
        let id = api.create_from(&request).await?;
        api.exec_true(&id).await?;
        samples.push(started.elapsed());
        api.delete(&id).await?;
    }
    Ok(samples)
}

/// A target of `factor` × the p50 of `baseline`, when it was measured.
pub fn relative(
    baseline: &Result<Vec<std::time::Duration>, String>,
    factor: f64,
) -> Option<Target> {
    let p50 = baseline
        .as_ref()
        .ok()
        .and_then(|s| Summary::of(s))
        .map(|s| s.p50)?;
    // Targets are static; this one is made once per run.
    Some(Target(Box::leak(
        vec![(Stat::P50, (p50 * factor * 10.0).round() / 10.0)].into_boxed_slice(),
    )))
}

/// A row of samples.
pub fn row(
    name: impl Into<String>,
    samples: Result<Vec<std::time::Duration>, String>,
    target: Option<Target>,
) -> Row {
    Row {
        name: name.into(),
        result: samples.and_then(|s| Summary::of(&s).ok_or_else(|| "no samples".into())),
        target,
    }
}

/// A Python process that holds 100 MB (every page touched) and keeps counting, detached from
/// the command's pipes (what hibernation keeps).
const RESIDENT: &str = "cd /tmp && (python3 -c \"
import time
block = bytearray(100 << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
open('ready', 'w').write('1')
n = 0
while True:
    n += 1
    time.sleep(0.05)
\" </dev/null >/dev/null 2>&1 &); \
for i in $(seq 200); do [ -e ready ] && exit 0; sleep 0.1; done; exit 1";

/// Times `n` hibernations and resumes of one sandbox running [`RESIDENT`].
async fn hibernations(
    daemon: &Daemon,
    n: usize,
) -> Result<(Vec<std::time::Duration>, Vec<std::time::Duration>)> {
    let api = Api(&daemon.client);
    let request = CreateSandboxRequest {
        profile: Some("gvisor".into()),
        resources: Some(sbx_protocol::ResourcesRequest {
            memory_mb: Some(512),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = api.create_from(&request).await?;
    let measured = async {
        api.sh(&id, RESIDENT).await?;
        let (mut down, mut up) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let started = Instant::now();
            let sandbox = crate::call("hibernate", daemon.client.hibernate(&id)).await?;
            down.push(started.elapsed());
            anyhow::ensure!(
                sandbox.state == sbx_protocol::SandboxState::Hibernated,
                "hibernate answered {}",
                sandbox.state
            );
            let started = Instant::now();
            crate::call("resume", daemon.client.resume(&id)).await?;
            up.push(started.elapsed());
            // Still the same process, still counting.
            api.sh(&id, "grep -qs bytearray /proc/[0-9]*/cmdline")
                .await?;
        }
        Ok((down, up))
    }
    .await;
    api.delete(&id).await?;
    measured
}

pub async fn rows(sbx: &Path, n: usize) -> Vec<Row> {
    let n = n.clamp(1, 20);
    eprintln!("gVisor: raw `runsc run true` ×{n}, then sbx create + first exec ×{n}…");
    let raw =
        raw_run("runsc", &["--network=none", "--platform=ptrace"], n).map_err(|e| format!("{e:#}"));
    let target = relative(&raw, 1.2);
    let measured = async {
        let mut daemon = Daemon::start(sbx, &[], CONFIG).await?;
        let samples = create_and_exec(&daemon, "gvisor", n, Some("oci")).await;
        eprintln!("gVisor: create + first exec ×{n}, back to back…");
        let back_to_back = create_and_exec(&daemon, "gvisor", n, None).await;
        eprintln!(
            "gVisor: hibernate and resume of 100 MB of Python ×{}…",
            n.min(5)
        );
        let hibernated = hibernations(&daemon, n.min(5)).await;
        daemon.stop()?;
        Ok::<_, anyhow::Error>((samples?, back_to_back, hibernated))
    }
    .await
    .map_err(|e| format!("{e:#}"));
    let (measured, back_to_back, hibernated) = match measured {
        Ok((samples, back_to_back, hibernated)) => (
            Ok(samples),
            back_to_back.map_err(|e| format!("{e:#}")),
            hibernated.map_err(|e| format!("{e:#}")),
        ),
        Err(e) => (Err(e.clone()), Err(e.clone()), Err(e)),
    };
    let (down, up) = match hibernated {
        Ok((down, up)) => (Ok(down), Ok(up)),
        Err(e) => (Err(e.clone()), Err(e)),
    };
    vec![
        row(
            "baseline: `runsc run` of `true` (ptrace platform, a busybox bundle)",
            raw,
            None,
        ),
        row(
            "oci (gVisor): create + first exec `true`, a warm container ready (target ≤ 1.2 × \
             raw runsc run)",
            measured,
            target,
        ),
        row(
            "oci (gVisor): create + first exec `true`, back to back (the pool of 2 drained)",
            back_to_back,
            None,
        ),
        Row {
            name: "oci (gVisor): hibernate, a Python process with 100 MB resident (target ≤ 3 s)"
                .into(),
            result: down.and_then(|s| Summary::of(&s).ok_or_else(|| "no samples".into())),
            target: Some(HIBERNATE),
        },
        Row {
            name: "oci (gVisor): resume from hibernation, the same (target ≤ 3 s)".into(),
            result: up.and_then(|s| Summary::of(&s).ok_or_else(|| "no samples".into())),
            target: Some(HIBERNATE),
        },
    ]
}
