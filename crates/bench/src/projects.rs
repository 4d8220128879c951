//! Projects (issue 14): a switch of a user's active sandbox — destroy the old one, create a
//! new one, restore a fragment of 1,000 small files (10 MB) — and a preview URL's round trip
//! (a small GET through `/v1/sandboxes/{id}/ports/{port}/`), next to the same server reached
//! directly on the sandbox's own loopback (from inside it: the figure without the daemon).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use sbx_protocol::{CreateProjectRequest, FileContent, SwitchRequest};

use crate::daemon::Daemon;
use crate::report::Row;
use crate::stats::{Stat, Summary, Target};
use crate::Api;

const SWITCH: Target = Target(&[(Stat::P50, 100.0)]);
const FILES: usize = 1000;
const FILE_BYTES: usize = 10_000;

/// Times `n` small GETs from inside the sandbox, each on a new connection (as the daemon's
/// are), and prints them in ms, one per line.
const DIRECT: &str = r#"
import socket, sys, time
n = int(sys.argv[1])
request = b'GET /small.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
for _ in range(n):
    started = time.perf_counter()
    s = socket.create_connection(('127.0.0.1', 8000))
    s.sendall(request)
    while s.recv(65536):
        pass
    s.close()
    print((time.perf_counter() - started) * 1000)
"#;

pub async fn rows(daemon: &Daemon, n: usize) -> Vec<Row> {
    eprintln!(
        "projects: switch with {FILES} files ({} MB) ×{n}…",
        FILES * FILE_BYTES / 1_000_000
    );
    let switch = switches(daemon, n).await;
    let mut rows = vec![Row {
        name: format!(
            "switch a user's active sandbox: destroy + create + restore {FILES} files ({} MB)",
            FILES * FILE_BYTES / 1_000_000
        ),
        result: switch.map_err(|e| format!("{e:#}")),
        target: Some(SWITCH),
    }];
    eprintln!("preview URL: small GET through the daemon ×{n}, and directly inside…");
    match preview(daemon, n).await {
        Ok((proxied, direct)) => {
            // The target is relative to the direct figure of the same run: ≤ direct + 2 ms.
            let target = Target(Box::leak(Box::new([(Stat::P50, direct.p50 + 2.0)])));
            rows.push(Row {
                name: "preview URL: small GET through `/v1/sandboxes/{id}/ports/8000/` (target: direct p50 + 2 ms)".into(),
                result: Ok(proxied),
                target: Some(target),
            });
            rows.push(Row {
                name:
                    "baseline: the same GET on the sandbox's own loopback (a new connection each)"
                        .into(),
                result: Ok(direct),
                target: None,
            });
        }
        Err(e) => rows.push(Row {
            name: "preview URL: small GET through the daemon".into(),
            result: Err(format!("{e:#}")),
            target: Some(SWITCH),
        }),
    }
    rows
}

async fn switches(daemon: &Daemon, n: usize) -> Result<Summary> {
    let client = &daemon.client;
    let content = "x".repeat(FILE_BYTES);
    let files: BTreeMap<String, FileContent> = (0..FILES)
        .map(|i| {
            (
                format!("src/d{}/f{i}.txt", i % 20),
                FileContent::Text(format!("{i:08}{}", &content[8..])),
            )
        })
        .collect();
    let project = client
        .create_project(&CreateProjectRequest {
            name: "bench-switch".into(),
            files: Some(files),
            ..CreateProjectRequest::default()
        })
        .await
        .context("create the project")?;
    let request = SwitchRequest {
        project: project.id.clone(),
        ..SwitchRequest::default()
    };
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let active = client.switch("bench", &request).await.context("switch")?;
        times.push(started.elapsed());
        if active.restored_files != FILES as u64 {
            bail!("restored {} files", active.restored_files);
        }
    }
    client.deactivate("bench").await.context("deactivate")?;
    client
        .delete_project(&project.id)
        .await
        .context("delete the project")?;
    Summary::of(&times).context("no samples")
}

async fn preview(daemon: &Daemon, n: usize) -> Result<(Summary, Summary)> {
    let api = Api(&daemon.client);
    let id = api.create().await?;
    let measured = async {
        api.sh(
            &id,
            "cd /tmp && echo small > small.txt && setsid nohup python3 -m http.server 8000 \
             --bind 127.0.0.1 >/dev/null 2>&1 < /dev/null & sleep 0.5",
        )
        .await?;
        let key = daemon.admin_key().context("no admin key")?;
        let url = format!("{}/v1/sandboxes/{id}/ports/8000/small.txt", daemon.url());
        let http = reqwest::Client::new();
        let mut through = Vec::with_capacity(n);
        for i in 0..n + 5 {
            let started = Instant::now();
            let answer = http.get(&url).bearer_auth(&key).send().await?;
            let status = answer.status();
            answer.bytes().await?;
            if !status.is_success() {
                bail!("the preview answered {status}");
            }
            // The first few warm the connection and the server up.
            if i >= 5 {
                through.push(started.elapsed());
            }
        }
        let script = format!(
            "cat > /tmp/direct.py <<'EOF'\n{DIRECT}\nEOF\npython3 /tmp/direct.py {}",
            n + 5
        );
        let output = daemon
            .client
            .exec(
                &id,
                &sbx_protocol::ExecRequest {
                    cmd: vec!["sh".into(), "-c".into(), script],
                    ..Default::default()
                },
            )
            .await
            .context("direct GETs")?;
        let direct: Vec<Duration> = output
            .stdout
            .lines()
            .skip(5)
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .collect();
        if direct.len() != n {
            bail!(
                "the direct GETs printed {} times: {}",
                direct.len(),
                output.stderr
            );
        }
        Ok((
            Summary::of(&through).context("no samples")?,
            Summary::of(&direct).context("no samples")?,
        ))
    }
    .await;
    api.delete(&id).await?;
    measured
}
