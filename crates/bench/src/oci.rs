//! The OCI backend under gVisor: create + first exec of a `gvisor` profile's sandbox through
//! sbx's API, next to raw `runsc run` of `true` in a bundle written here (a static busybox
//! root), in the same run. A daemon of its own (the measured one has no `oci` profile).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use sbx_protocol::CreateSandboxRequest;

use crate::daemon::Daemon;
use crate::report::Row;
use crate::stats::{Stat, Summary, Target};
use crate::Api;

const CONFIG: &str = "[limits]\ncreates_per_hour = 0\n[profiles.gvisor]\nbackend = \"oci\"\n";

/// Times `runsc run` of `true` in a fresh bundle, `n` times.
fn raw_runsc(n: usize) -> Result<Vec<std::time::Duration>> {
    let dir = tempfile::Builder::new()
        .prefix("sbx-bench-runsc-")
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
    let state = dir.path().join("state");
    let run = |i: usize| -> Result<()> {
        let status = Command::new("runsc")
            .arg(format!("--root={}", state.display()))
            .args(["--network=none", "--platform=ptrace", "run", "--bundle"])
            .arg(dir.path())
            .arg(format!("bench-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run runsc (apt-get install runsc)")?;
        if !status.success() {
            bail!("runsc run failed: {status}");
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

async fn sbx_runs(daemon: &Daemon, n: usize) -> Result<Vec<std::time::Duration>> {
    let api = Api(&daemon.client);
    let request = CreateSandboxRequest {
        profile: Some("gvisor".into()),
        ..Default::default()
    };
    let warm = api.create_from(&request).await?;
    api.exec_true(&warm).await?;
    api.delete(&warm).await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let id = api.create_from(&request).await?;
        api.exec_true(&id).await?;
        samples.push(started.elapsed());
        api.delete(&id).await?;
    }
    Ok(samples)
}

pub async fn rows(sbx: &Path, n: usize) -> Vec<Row> {
    let n = n.clamp(1, 20);
    eprintln!("gVisor: raw `runsc run true` ×{n}, then sbx create + first exec ×{n}…");
    let raw = raw_runsc(n).map_err(|e| format!("{e:#}"));
    let raw_p50 = raw
        .as_ref()
        .ok()
        .and_then(|s| Summary::of(s))
        .map(|s| s.p50);
    let measured = async {
        let mut daemon = Daemon::start(sbx, &[], CONFIG).await?;
        let samples = sbx_runs(&daemon, n).await;
        daemon.stop()?;
        samples
    }
    .await
    .map_err(|e| format!("{e:#}"));
    // The target is relative: 1.2 × raw runsc run, measured just before.
    // (Targets are static; this one is made once per run.)
    let target = raw_p50.map(|p50| {
        Target(Box::leak(
            vec![(Stat::P50, (p50 * 12.0).round() / 10.0)].into_boxed_slice(),
        ))
    });
    vec![
        Row {
            name: "baseline: `runsc run` of `true` (ptrace platform, a busybox bundle)".into(),
            result: raw.and_then(|s| Summary::of(&s).ok_or_else(|| "no samples".into())),
            target: None,
        },
        Row {
            name: "oci (gVisor): create + first exec `true` (target ≤ 1.2 × raw runsc run)".into(),
            result: measured.and_then(|s| Summary::of(&s).ok_or_else(|| "no samples".into())),
            target,
        },
    ]
}
