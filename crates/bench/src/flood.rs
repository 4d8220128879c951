//! Exhaustion under load (the hardening issue's targets): another user's create+first-exec
//! while one sandbox floods the host (processes, disk writes, AIO, output, stdin), the daemon's
//! RSS while ten clients collect 16 MiB of binary output each, and what a 0.1-CPU sandbox's
//! output flood costs the daemon's CPU.
//!
//! Each flood comes from a sandbox of its own user ("flooder"); the probe is another user's
//! ("probe"). Between floods the flooder's sandbox is recreated, which ends whatever the last
//! flood left running.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::StreamExt as _;
use sbx_api_client::Client;
use sbx_protocol::{CreateSandboxRequest, DurationValue, ExecRequest, ResourcesRequest};
use tokio::task::JoinSet;

use crate::stats::Summary;
use crate::Api;

/// During a flood, another user's create+first-exec p50 stays within this factor of its p50
/// with no flood (measured just before).
pub const FLOOD_RATIO_TARGET: f64 = 2.0;
/// Daemon RSS while ten clients collect 16 MiB of binary output each.
pub const COLLECT_RSS_TARGET_MIB: u64 = 150;
/// The daemon's CPU time for a sandbox's output flood, per CPU-second of the sandbox's limit.
pub const OUTPUT_CPU_TARGET: f64 = 1.0;
/// Create+first-exec samples per flood (and per idle reference).
const PROBES: usize = 40;

pub struct FloodRow {
    pub name: &'static str,
    pub idle: Option<Summary>,
    pub during: Option<Summary>,
}

impl FloodRow {
    /// `during.p50 / idle.p50`.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.during?.p50 / self.idle?.p50)
    }
}

pub struct Exhaustion {
    pub floods: Vec<FloodRow>,
    /// Peak VmRSS of the daemon (sampled every 20 ms) while ten clients collect 16 MiB of
    /// random bytes each, and its VmRSS before.
    pub collect_rss_kib: Option<(u64, u64)>,
    /// The output flood of a 0.1-CPU sandbox: the daemon's CPU time, the sandbox's own, its
    /// CPU allowance over the window, and the bytes that reached the client.
    pub output_cost: Option<OutputCost>,
    pub errors: Vec<String>,
}

pub struct OutputCost {
    pub daemon_s: f64,
    pub sandbox_s: Option<f64>,
    pub allowance_s: f64,
    pub bytes: u64,
}

pub async fn measure(admin: &Client, daemon_pid: u32) -> Result<Exhaustion> {
    let flooder = admin
        .clone()
        .with_key(&admin.create_key("flooder", false).await?.key);
    let probe = admin
        .clone()
        .with_key(&admin.create_key("probe", false).await?.key);
    let flood_api = Api(&flooder);
    let probe_api = Api(&probe);
    let target = flood_api
        .create_from(&CreateSandboxRequest {
            resources: Some(ResourcesRequest {
                pids: Some(1024),
                disk_mb: Some(1024),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    let mut errors = Vec::new();
    let mut floods = Vec::new();
    for kind in Flood::ALL {
        eprintln!("flood: {}…", kind.name());
        let idle = probes(&probe_api, &mut errors).await;
        let running = match kind.start(&flooder, &target).await {
            Ok(running) => running,
            Err(e) => {
                errors.push(format!("{}: {e:#}", kind.name()));
                floods.push(FloodRow {
                    name: kind.name(),
                    idle,
                    during: None,
                });
                continue;
            }
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let during = probes(&probe_api, &mut errors).await;
        drop(running);
        if let Err(e) = flooder.recreate(&target).await {
            errors.push(format!("recreate after {}: {e}", kind.name()));
        }
        floods.push(FloodRow {
            name: kind.name(),
            idle,
            during,
        });
    }
    let _ = flooder.delete(&target).await;

    eprintln!("daemon RSS while 10 clients collect 16 MiB of binary output…");
    let collect_rss_kib = match collect_rss(&probe, daemon_pid).await {
        Ok(kib) => Some(kib),
        Err(e) => {
            errors.push(format!("collect: {e:#}"));
            None
        }
    };
    eprintln!("the daemon's CPU for a 0.1-CPU sandbox's output flood…");
    let output_cost = match output_cost(&probe, daemon_pid).await {
        Ok(cost) => Some(cost),
        Err(e) => {
            errors.push(format!("output cost: {e:#}"));
            None
        }
    };
    Ok(Exhaustion {
        floods,
        collect_rss_kib,
        output_cost,
        errors,
    })
}

/// Create+first-exec of a fresh sandbox, [`PROBES`] times (each deleted, untimed).
async fn probes(api: &Api<'_>, errors: &mut Vec<String>) -> Option<Summary> {
    let mut samples = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let start = Instant::now();
        let made = async {
            let id = api.create().await?;
            api.exec_true(&id).await?;
            Ok::<_, anyhow::Error>(id)
        }
        .await;
        match made {
            Ok(id) => {
                samples.push(start.elapsed());
                if let Err(e) = api.delete(&id).await {
                    errors.push(format!("probe delete: {e:#}"));
                }
            }
            Err(e) => errors.push(format!("probe: {e:#}")),
        }
    }
    Summary::of(&samples)
}

#[derive(Clone, Copy)]
enum Flood {
    Pids,
    Disk,
    Aio,
    Output,
    Stdin,
}

/// Whatever keeps a flood going from the bench's side; dropping it stops that side.
struct Running {
    _tasks: JoinSet<()>,
}

impl Flood {
    const ALL: [Flood; 5] = [
        Flood::Pids,
        Flood::Disk,
        Flood::Aio,
        Flood::Output,
        Flood::Stdin,
    ];

    fn name(self) -> &'static str {
        match self {
            Flood::Pids => "processes: a fork bomb to the sandbox's limit (1024)",
            Flood::Disk => "disk: writing and removing 256 MiB files in a loop",
            Flood::Aio => "AIO: `io_setup` in a loop",
            Flood::Output => "output: NULs on 4 exec streams, read as fast as possible",
            Flood::Stdin => {
                "stdin: 20 MiB to `sleep` on 10 execs at a time, callers leaving after 2 s"
            }
        }
    }

    async fn start(self, client: &Client, id: &str) -> Result<Running> {
        let mut tasks = JoinSet::new();
        let background = |script: &str| ExecRequest {
            cmd: vec![
                "sh".into(),
                "-c".into(),
                format!("nohup sh -c '{script}' >/dev/null 2>&1 &"),
            ],
            ..Default::default()
        };
        match self {
            Flood::Pids => {
                let bomb = "import os\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        os.execv('/bin/sleep', ['sleep', '600'])\n";
                let request = ExecRequest {
                    cmd: vec!["python3".into(), "-c".into(), bomb.into()],
                    ..Default::default()
                };
                client.exec(id, &request).await.context("the fork bomb")?;
            }
            Flood::Disk => {
                let script = "while :; do dd if=/dev/zero of=$HOME/f bs=1M count=256 conv=fsync; rm -f $HOME/f; done";
                client.exec(id, &background(script)).await?;
            }
            Flood::Aio => {
                let script = "python3 -c \"import ctypes\nlibc = ctypes.CDLL(None)\nctx = ctypes.c_ulong(0)\nwhile True:\n    ctx.value = 0\n    libc.syscall(206, 64, ctypes.byref(ctx))\"";
                client.exec(id, &background(script)).await?;
            }
            Flood::Output => {
                for _ in 0..4 {
                    let client = client.clone();
                    let id = id.to_owned();
                    tasks.spawn(async move {
                        let request = ExecRequest {
                            cmd: vec!["cat".into(), "/dev/zero".into()],
                            ..Default::default()
                        };
                        if let Ok(mut stream) = client.exec_stream(&id, &request).await {
                            while stream.next().await.is_some() {}
                        }
                    });
                }
            }
            Flood::Stdin => {
                let stdin = "x".repeat(20 << 20);
                for _ in 0..10 {
                    let client = client.clone();
                    let id = id.to_owned();
                    let stdin = stdin.clone();
                    tasks.spawn(async move {
                        loop {
                            let request = ExecRequest {
                                cmd: vec!["sleep".into(), "600".into()],
                                stdin: Some(stdin.clone()),
                                ..Default::default()
                            };
                            let started = Instant::now();
                            let _ = tokio::time::timeout(
                                Duration::from_secs(2),
                                client.exec(&id, &request),
                            )
                            .await;
                            // Refused (the user's share of the body budget is full): no spin.
                            if started.elapsed() < Duration::from_millis(500) {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    });
                }
            }
        }
        Ok(Running { _tasks: tasks })
    }
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    crate::report::status_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmRSS:",
    )
}

/// Ten collected execs of 16 MiB from `/dev/urandom` at once: (peak VmRSS, VmRSS before).
async fn collect_rss(client: &Client, pid: u32) -> Result<(u64, u64)> {
    let api = Api(client);
    let id = api.create().await?;
    // What the floods freed goes back to the host within a second or two (`api::body`).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = rss_kib(pid).context("no VmRSS")?;
    let mut clients = JoinSet::new();
    for _ in 0..10 {
        let client = client.clone();
        let id = id.clone();
        clients.spawn(async move {
            let request = ExecRequest {
                cmd: vec![
                    "head".into(),
                    "-c".into(),
                    "16777216".into(),
                    "/dev/urandom".into(),
                ],
                ..Default::default()
            };
            client.exec(&id, &request).await
        });
    }
    let mut peak = before;
    let mut results = Vec::new();
    loop {
        tokio::select! {
            joined = clients.join_next() => match joined {
                Some(result) => results.push(result),
                None => break,
            },
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        peak = peak.max(rss_kib(pid).unwrap_or(0));
    }
    api.delete(&id).await?;
    for result in results {
        let result = result.context("a client panicked")??;
        let bytes = sbx_protocol::decode_data(&result.stdout, result.stdout_encoding)
            .map_err(|e| anyhow::anyhow!(e))?;
        if bytes.len() != 16 << 20 || result.stdout_truncated {
            bail!("collected {} bytes", bytes.len());
        }
    }
    Ok((peak, before))
}

/// A 0.1-CPU sandbox writes NULs on 4 exec streams for 10 s; the client reads them all.
async fn output_cost(client: &Client, pid: u32) -> Result<OutputCost> {
    const WINDOW: Duration = Duration::from_secs(10);
    let api = Api(client);
    let id = api
        .create_from(&CreateSandboxRequest {
            resources: Some(ResourcesRequest {
                cpus: Some(0.1),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    let daemon_before = cpu_seconds(pid).context("no CPU time")?;
    let sandbox_before = sandbox_cpu(client, &id).await;
    let mut streams = JoinSet::new();
    for _ in 0..4 {
        let client = client.clone();
        let id = id.clone();
        streams.spawn(async move {
            let request = ExecRequest {
                cmd: vec!["cat".into(), "/dev/zero".into()],
                timeout: Some(DurationValue::Seconds(WINDOW.as_secs_f64())),
                ..Default::default()
            };
            let mut bytes = 0u64;
            if let Ok(mut stream) = client.exec_stream(&id, &request).await {
                while let Some(Ok(event)) = stream.next().await {
                    if let sbx_protocol::ExecEvent::Stdout { data, encoding } = event {
                        bytes += sbx_protocol::decode_data(&data, encoding)
                            .map_or(0, |b| b.len() as u64);
                    }
                }
            }
            bytes
        });
    }
    let mut bytes = 0;
    while let Some(received) = streams.join_next().await {
        bytes += received.unwrap_or(0);
    }
    let daemon_s = cpu_seconds(pid).context("no CPU time")? - daemon_before;
    let sandbox_s = match (sandbox_before, sandbox_cpu(client, &id).await) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    api.delete(&id).await?;
    Ok(OutputCost {
        daemon_s,
        sandbox_s,
        allowance_s: 0.1 * WINDOW.as_secs_f64(),
        bytes,
    })
}

/// The sandbox's CPU time as `/v1/status` reports it (its cgroup's).
async fn sandbox_cpu(client: &Client, id: &str) -> Option<f64> {
    let status = client.status().await.ok()?;
    status
        .sandboxes
        .iter()
        .find(|s| s.id == id)
        .and_then(|s| s.cpu_seconds)
}

/// CPU time (user + system) of process `pid`, seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks as f64 / 100.0)
}
