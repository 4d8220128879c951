//! The E2B SDK's latencies against sbx: the unmodified Python SDK (the venv the e2e suite
//! makes, `target/e2b-sdks/python-2.63.0`) runs `tests/e2b/bench.py` against the measured
//! daemon, next to the same sequence through sbx's own API in the same run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::daemon::Daemon;
use crate::report::Row;
use crate::stats::{Stat, Summary, Target};
use crate::Api;

const CREATE_RUN_KILL: Target = Target(&[(Stat::P50, 25.0)]);
const RUN: Target = Target(&[(Stat::P50, 5.0)]);

fn workspace() -> Option<PathBuf> {
    // target/release/sbx-bench → the workspace.
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.to_path_buf())
}

/// Rows: sbx's own create → exec → delete, then the SDK's create → run → kill and run.
pub async fn rows(daemon: &Daemon, n: usize) -> Vec<Row> {
    let api = Api(&daemon.client);
    eprintln!("sbx API: create → exec `true` → delete ×{n}…");
    let mut own = Vec::with_capacity(n);
    let mut own_error = None;
    for _ in 0..n {
        let started = Instant::now();
        let done = async {
            let id = api.create().await?;
            api.exec_true(&id).await?;
            api.delete(&id).await
        }
        .await;
        if let Err(e) = done {
            own_error = Some(format!("{e:#}"));
            break;
        }
        own.push(started.elapsed());
    }
    let mut rows = vec![Row {
        name: "sbx API: create → exec `true` → delete (same run, for the E2B rows)".into(),
        result: match own_error {
            Some(e) => Err(e),
            None => Summary::of(&own).ok_or_else(|| "no samples".to_owned()),
        },
        target: None,
    }];
    eprintln!("E2B Python SDK: create → run → kill ×{n}, run ×{n}…");
    let measured = sdk(daemon, n).await;
    let (create_run_kill, run) = match measured {
        Ok((a, b)) => (
            Summary::of(&a).ok_or_else(|| "no samples".to_owned()),
            Summary::of(&b).ok_or_else(|| "no samples".to_owned()),
        ),
        Err(e) => (Err(format!("{e:#}")), Err(format!("{e:#}"))),
    };
    rows.push(Row {
        name: "E2B Python SDK 2.63.0: `Sandbox.create()` → `commands.run(\"true\")` → `kill()`"
            .into(),
        result: create_run_kill,
        target: Some(CREATE_RUN_KILL),
    });
    rows.push(Row {
        name: "E2B Python SDK 2.63.0: `commands.run(\"true\")` on a running sandbox".into(),
        result: run,
        target: Some(RUN),
    });
    rows
}

async fn sdk(daemon: &Daemon, n: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let root = workspace().context("cannot find the workspace")?;
    let python = root.join("target/e2b-sdks/python-2.63.0/bin/python");
    if !python.exists() {
        bail!(
            "no E2B SDK venv at {} (the e2e suite makes it: cargo nextest run -E 'test(e2b)')",
            python.display()
        );
    }
    let key = daemon.admin_key().context("no admin key")?;
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    let url = daemon.url();
    let output = tokio::process::Command::new(python)
        .arg(root.join("tests/e2b/bench.py"))
        .arg(n.to_string())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .env("E2B_API_KEY", format!("e2b_{hex}"))
        .output()
        .await
        .context("cannot run the SDK's bench")?;
    if !output.status.success() {
        bail!(
            "the SDK's bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the SDK's bench printed no JSON")?;
    let samples = |name: &str| -> Vec<Duration> {
        parsed[name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_f64())
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok((samples("create_run_kill"), samples("run")))
}
