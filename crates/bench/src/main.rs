//! `sbx-bench`: starts its own `sbx serve` (the `sbx` binary next to this one), measures the
//! latency of create, create+first exec, exec and destroy against two process-isolation
//! baselines (`unshare`, `bwrap`), creates many sandboxes at once to read the daemon's memory,
//! and prints a Markdown report. The daemon is stopped and its data directory removed in every
//! path.
//!
//! Owns: the measurements. The daemon's start/stop is in [`daemon`], statistics in [`stats`],
//! the report's layout in [`report`].

mod daemon;
mod e2b;
mod files;
mod flood;
mod images;
mod oci;
mod projects;
mod report;
mod runtimes;
mod stats;
mod terminal;

use std::collections::HashSet;
use std::fs;
use std::future::Future;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use clap::Parser;
use futures::{stream, StreamExt as _};
use sbx_api_client::{Client, ClientError};
use sbx_protocol::{CreateSandboxRequest, ExecRequest, SandboxState};
use tokio::signal::unix::{signal, SignalKind};

use crate::daemon::Daemon;
use crate::report::{status_kib, Host, Report, Row, Scale};
use crate::stats::{Stat, Summary, Target};

/// Untimed create+exec+delete rounds before the first measurement.
const WARMUP: usize = 10;
/// Pause before each create of the "idle" create+first-exec row: back-to-back creates share
/// kernel work (an RCU grace period when a process joins a cgroup, see docs/BENCHMARKS.md)
/// that a create arriving at an idle daemon pays alone.
const IDLE_GAP: Duration = Duration::from_millis(50);
/// Requests in flight at once in the scale phase.
const CONCURRENCY: usize = 8;
/// No single API call may take longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

const CREATE_EXEC_TARGET: Target = Target(&[(Stat::P50, 10.0), (Stat::P99, 30.0)]);
const EXEC_TARGET: Target = Target(&[(Stat::P50, 3.0)]);
const DESTROY_TARGET: Target = Target(&[(Stat::P50, 10.0)]);
const PAUSE_TARGET: Target = Target(&[(Stat::P50, 10.0)]);
const FILE_CALL_TARGET: Target = Target(&[(Stat::P50, 2.0)]);
const SNAPSHOT_TARGET: Target = Target(&[(Stat::P50, 1000.0)]);
const FROM_SNAPSHOT_TARGET: Target = Target(&[(Stat::P50, 50.0)]);
/// How many snapshots of the 100 MB sandbox are taken (each is 100 MB on the host's disk
/// until it is deleted, right after).
const SNAPSHOTS: usize = 5;
const ECHO_TARGET: Target = Target(&[(Stat::P50, 2.0)]);
const AUTH_OVERHEAD_TARGET: Target = Target(&[(Stat::P50, AUTH_OVERHEAD_TARGET_MS)]);
/// Terminal output throughput to reach, MB/s (10^6 bytes).
pub const THROUGHPUT_TARGET_MB_S: f64 = 100.0;
/// Size of the file `cat` writes to the terminal in the throughput measurement.
const THROUGHPUT_BYTES: u64 = 256 << 20;
/// What authentication and limits may add to an API call's p50, ms.
pub const AUTH_OVERHEAD_TARGET_MS: f64 = 0.050;
/// The measured daemon: authentication on, the default limits but the hourly creation cap
/// (this run creates more than its 1000 sandboxes in an hour) and the admin's process quota;
/// and a `bulk` profile for the phases that hold hundreds of sandboxes at once: the host's
/// capacity admits 16384 processes' worth of `pids` limits here (half of `pid_max`), so 1000
/// sandboxes get 16 each, and disks of 64 MiB; 1000 of them promise 62.5 GiB, which never get
/// written: the disk may be promised 4 times over (`capacity.disk_overcommit`).
const MEASURED_CONFIG: &str =
    "[limits]\ncreates_per_hour = 0\nconcurrent_sandboxes = 0\npids = 0\n\
                               [capacity]\ndisk_overcommit = 4\n\
                               [profiles.bulk]\nresources = { pids = 16, disk_mb = 64 }\n";
/// How long the daemon's CPU time is watched while nothing happens.
const QUIET_WINDOW: Duration = Duration::from_secs(10);
/// The reference for the overhead of authentication and limits: neither.
const OPEN_CONFIG: &str = "[limits]\ncreates_per_hour = 0\ncreates_per_hour_per_ip = 0\n\
                           concurrent_sandboxes = 0\nexec_per_second = 0\nmemory_mb = 0\ncpus = 0\n\
                           pids = 0\nconcurrent_execs = 0\nconcurrent_execs_per_sandbox = 0\n";

const UNSHARE: &[&str] = &[
    "unshare",
    "--user",
    "--map-root-user",
    "--pid",
    "--fork",
    "--mount",
    "--uts",
    "--ipc",
    "--net",
    "--cgroup",
    "true",
];
const BWRAP: &[&str] = &[
    "bwrap",
    "--unshare-all",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "true",
];

/// Benchmark the sbx daemon (needs root; run `cargo build --release -p sbx -p sbx-bench` first).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Timed iterations of each latency measurement and baseline.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Sandboxes alive at once in the scale phase.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    sandboxes: u32,
    /// Sandboxes alive (with far deadlines) while the daemon's idle CPU is measured; the scale
    /// phase's are topped up to this many.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    idle_sandboxes: u32,
    /// Also write the report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Snapshots of a sandbox holding 100 MB of changes, and creates from one: their latencies.
async fn snapshots(api: &Api<'_>, n: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let id = api.create().await?;
    api.sh(
        &id,
        "head -c 50000000 /dev/urandom > big && mkdir many && cd many && \
         for i in $(seq 500); do head -c 100000 /dev/urandom > f$i; done",
    )
    .await?;
    let mut taken = Vec::with_capacity(SNAPSHOTS);
    let mut kept = None;
    for i in 0..SNAPSHOTS {
        let start = Instant::now();
        let snapshot = call("snapshot", api.0.create_snapshot(&id, None)).await?;
        taken.push(start.elapsed());
        if i + 1 < SNAPSHOTS {
            call("delete snapshot", api.0.delete_snapshot(&snapshot.id)).await?;
        } else {
            kept = Some(snapshot.id);
        }
    }
    api.delete(&id).await?;
    let snapshot = kept.context("no snapshot")?;
    let mut created = Vec::with_capacity(n);
    for _ in 0..n {
        let request = CreateSandboxRequest {
            from_snapshot: Some(snapshot.clone()),
            ..Default::default()
        };
        let start = Instant::now();
        let id = api.create_from(&request).await?;
        created.push(start.elapsed());
        api.delete(&id).await?;
    }
    call("delete snapshot", api.0.delete_snapshot(&snapshot)).await?;
    Ok((taken, created))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("sbx-bench: the scale phase had errors (see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sbx-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs everything; `Ok(false)` when the report is complete but the scale phase saw errors.
async fn run(args: Args) -> Result<bool> {
    let n = args.iterations as usize;
    let m = args.sandboxes as usize;
    let k = (args.idle_sandboxes as usize).max(m);
    let sbx = locate_sbx()?;
    ensure!(
        is_root(),
        "sbx-bench needs root: the native backend of `sbx serve` does (try sudo)"
    );
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let host = Host::read();

    eprintln!("baselines ({n} iterations each)…");
    let unshare = baseline(UNSHARE, n, "not installed (apt-get install util-linux)");
    let bwrap = baseline(BWRAP, n, "not installed (apt-get install bubblewrap)");

    // From here on SIGINT/SIGTERM must not kill the bench before it has stopped the daemon
    // (which runs in its own process group, out of reach of a terminal's Ctrl-C).
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let interrupted = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    let mut interrupted = std::pin::pin!(interrupted);
    let mut daemon = tokio::select! {
        daemon = Daemon::start(&sbx, &[], MEASURED_CONFIG) => daemon?,
        () = &mut interrupted => bail!("interrupted"),
    };
    let measured = tokio::select! {
        result = measure(&mut daemon, n, m, k) => result,
        () = &mut interrupted => Err(anyhow!("interrupted")),
    };
    // Authentication and limits: the same calls against a second daemon without either.
    let overhead = match measured {
        Ok(_) => {
            eprintln!(
                "authentication and limits: {} calls each, with and without…",
                5 * n
            );
            let open = tokio::select! {
                open = Daemon::start(&sbx, &["--insecure-no-auth"], OPEN_CONFIG) => open,
                () = &mut interrupted => Err(anyhow!("interrupted")),
            };
            match open {
                Ok(mut open) => {
                    let result = tokio::select! {
                        result = auth_overhead(&daemon, &open, 5 * n) => result,
                        () = &mut interrupted => Err(anyhow!("interrupted")),
                    };
                    let stopped = open.stop();
                    result.and_then(|rows| stopped.map(|()| rows))
                }
                Err(e) => Err(e),
            }
        }
        Err(_) => Ok(Vec::new()),
    };
    let measured = match (measured, overhead) {
        (Ok((mut rows, scale)), Ok(overhead)) => {
            rows.extend(overhead);
            rows.extend(e2b::rows(&daemon, n).await);
            rows.extend(projects::rows(&daemon, n).await);
            rows.extend(images::rows(&daemon, n).await);
            rows.extend(oci::rows(&sbx, n).await);
            rows.extend(runtimes::rows(&sbx, n).await);
            Ok((rows, scale))
        }
        (Ok(_), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
    };
    if measured.is_err() {
        eprintln!("the end of the daemon's log:\n{}", daemon.log_tail(20));
    }
    eprintln!("stopping the daemon…");
    let (mut rows, scale) = match (measured, daemon.stop()) {
        (Ok(measured), Ok(())) => measured,
        (Err(e), Ok(())) => return Err(e),
        (Ok(_), Err(stop)) => return Err(stop.context("the daemon did not stop cleanly")),
        (Err(e), Err(stop)) => {
            bail!("{e:#}\nand the daemon did not stop cleanly: {stop:#}")
        }
    };

    rows.push(Row {
        name: format!("baseline: `{}`", UNSHARE.join(" ")),
        result: unshare,
        target: None,
    });
    rows.push(Row {
        name: format!("baseline: `{}`", BWRAP.join(" ")),
        result: bwrap,
        target: None,
    });
    let clean = scale.errors.is_empty()
        && scale
            .exhaustion
            .as_ref()
            .is_none_or(|e| e.errors.is_empty());
    let report = Report {
        date,
        host,
        version: daemon.version.clone(),
        log_warnings: daemon.log_warnings.clone(),
        sbx_path: sbx.display().to_string(),
        iterations: n,
        rows,
        scale,
    }
    .markdown();
    print!("{report}");
    if let Some(out) = &args.out {
        fs::write(out, &report).with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(clean)
}

/// The `sbx` binary built next to this one.
fn locate_sbx() -> Result<PathBuf> {
    let sbx = std::env::current_exe()
        .context("cannot find this executable's path")?
        .with_file_name("sbx");
    ensure!(
        sbx.is_file(),
        "{} does not exist: build it first with `cargo build --release -p sbx`",
        sbx.display()
    );
    Ok(sbx)
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Times `argv` (spawn and wait) `n` times after one untimed run that checks it works.
fn baseline(argv: &[&str], n: usize, missing: &str) -> Result<Summary, String> {
    let run = || {
        Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    match run() {
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(missing.into()),
        Err(e) => return Err(format!("cannot run: {e}")),
        Ok(out) if !out.status.success() => {
            return Err(format!(
                "fails: {} ({})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Ok(_) => {}
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let out = run().map_err(|e| format!("cannot run: {e}"))?;
        samples.push(start.elapsed());
        if !out.status.success() {
            return Err(format!("failed mid-run: {}", out.status));
        }
    }
    Ok(Summary::of(&samples).expect("n ≥ 1"))
}

/// Everything that needs the daemon: the latency rows and the scale phase.
async fn measure(daemon: &mut Daemon, n: usize, m: usize, k: usize) -> Result<(Vec<Row>, Scale)> {
    let client = daemon.client.clone();
    let api = Api(&client);
    let rss_idle = daemon_status_kib(daemon.pid(), "VmRSS:");
    eprintln!("daemon CPU with no sandbox ({QUIET_WINDOW:?})…");
    let cpu_empty = quiet_cpu(daemon.pid()).await;

    eprintln!("warm-up ({WARMUP} create+exec+delete)…");
    for _ in 0..WARMUP {
        let id = api.create().await?;
        api.exec_true(&id).await?;
        api.delete(&id).await?;
    }

    eprintln!("create ×{n}…");
    let mut create = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let id = api.create().await?;
        create.push(start.elapsed());
        api.delete(&id).await?;
    }

    eprintln!("create+first-exec ×{n}…");
    let mut create_exec = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let id = api.create().await?;
        api.exec_true(&id).await?;
        create_exec.push(start.elapsed());
        api.delete(&id).await?;
    }

    eprintln!("create+first-exec ×{n}, each after {IDLE_GAP:?} idle…");
    let mut create_exec_idle = Vec::with_capacity(n);
    for _ in 0..n {
        tokio::time::sleep(IDLE_GAP).await;
        let start = Instant::now();
        let id = api.create().await?;
        api.exec_true(&id).await?;
        create_exec_idle.push(start.elapsed());
        api.delete(&id).await?;
    }

    eprintln!("exec ×{n}…");
    let mut exec = Vec::with_capacity(n);
    let mut inside = Vec::with_capacity(n);
    let id = api.create().await?;
    for _ in 0..n {
        let start = Instant::now();
        let ran_ms = api.exec_true(&id).await?;
        exec.push(start.elapsed());
        inside.push(Duration::from_secs_f64(ran_ms / 1e3));
    }
    api.delete(&id).await?;

    eprintln!("pause and resume ×{n} (a sandbox with a busy process)…");
    let (mut pause, mut resume) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let id = api.create().await?;
    api.sh(&id, "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &")
        .await?;
    for _ in 0..n {
        let start = Instant::now();
        api.set_paused(&id, true).await?;
        pause.push(start.elapsed());
        let start = Instant::now();
        api.set_paused(&id, false).await?;
        resume.push(start.elapsed());
    }
    api.delete(&id).await?;

    eprintln!("files: stat, list, read of a small file ×{n}…");
    let [file_stat, file_list, file_read] = files::small(api.0, n).await?;

    eprintln!("snapshots: of a sandbox with 100 MB of changes ×{SNAPSHOTS}, create from one ×{n}…");
    let (snapshot, from_snapshot) = snapshots(&api, n).await?;

    eprintln!("destroy ×{n}…");
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(api.create_bulk().await?);
    }
    let mut destroy = Vec::with_capacity(n);
    for id in &ids {
        let start = Instant::now();
        api.delete(id).await?;
        destroy.push(start.elapsed());
    }

    eprintln!(
        "terminal: keystroke echo ×{n}, throughput of cat of {} MiB…",
        THROUGHPUT_BYTES >> 20
    );
    let (echo, throughput) = terminal::measure(&api, n, THROUGHPUT_BYTES).await?;
    let ceiling = terminal::pty_ceiling(THROUGHPUT_BYTES).ok();

    eprintln!("scale: {m} sandboxes…");
    let mut scale = scale(&api, daemon, m, k).await?;
    scale.rss_idle_kib = rss_idle;
    scale.cpu_empty = cpu_empty;

    eprintln!("exhaustion: floods, collected output, output cost…");
    scale.exhaustion = Some(flood::measure(&client, daemon.pid()).await?);

    let row = |name: &str, samples: &[Duration], target: Option<Target>| Row {
        name: name.into(),
        result: Summary::of(samples).ok_or_else(|| "no samples".to_owned()),
        target,
    };
    let rows = vec![
        row("create", &create, None),
        row("create+first-exec", &create_exec, Some(CREATE_EXEC_TARGET)),
        row(
            &format!(
                "create+first-exec, {} ms idle before each",
                IDLE_GAP.as_millis()
            ),
            &create_exec_idle,
            Some(CREATE_EXEC_TARGET),
        ),
        row("exec `true` (running sandbox)", &exec, Some(EXEC_TARGET)),
        row(
            "… of which `true` ran (the exec's `duration_ms`)",
            &inside,
            None,
        ),
        row(
            &format!("destroy ({n} running sandboxes at the start)"),
            &destroy,
            Some(DESTROY_TARGET),
        ),
        row(
            "pause (a sandbox spinning on its CPU)",
            &pause,
            Some(PAUSE_TARGET),
        ),
        row("resume", &resume, Some(PAUSE_TARGET)),
        row(
            "files: stat of a small file",
            &file_stat,
            Some(FILE_CALL_TARGET),
        ),
        row(
            "files: list of a small directory",
            &file_list,
            Some(FILE_CALL_TARGET),
        ),
        row(
            "files: read of a small file",
            &file_read,
            Some(FILE_CALL_TARGET),
        ),
        row(
            "snapshot of a sandbox with 100 MB of changes (50 MB file + 500 × 100 KB)",
            &snapshot,
            Some(SNAPSHOT_TARGET),
        ),
        row(
            "create from that snapshot",
            &from_snapshot,
            Some(FROM_SNAPSHOT_TARGET),
        ),
        row(
            "terminal keystroke echo round trip (WebSocket → shell's terminal → WebSocket)",
            &echo,
            Some(ECHO_TARGET),
        ),
    ];
    scale.terminal_mb_s = Some((throughput, ceiling));
    eprintln!(
        "files: upload and download of {} MiB…",
        files::FILE_BYTES >> 20
    );
    scale.files = Some(files::throughput(api.0, daemon.pid()).await?);
    Ok((rows, scale))
}

/// Times the same API calls against `measured` (a key, limits) and `open` (no authentication,
/// no limits), alternating between the two so that both see the same machine: a `GET` of a
/// sandbox (authentication alone) and an exec of `true` (authentication, the command rate
/// limit and an audit entry). Returns the four rows and, for each call, the difference of the
/// p50s against [`AUTH_OVERHEAD_TARGET_MS`].
async fn auth_overhead(measured: &Daemon, open: &Daemon, n: usize) -> Result<Vec<Row>> {
    let with = Api(&measured.client);
    let without = Api(&open.client);
    let with_id = with.create().await?;
    let without_id = without.create().await?;
    let (mut get_with, mut get_without) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut exec_with, mut exec_without) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + WARMUP {
        // Alternate which goes first, so neither always follows the other.
        let order = if i % 2 == 0 {
            [(&with, &with_id, true), (&without, &without_id, false)]
        } else {
            [(&without, &without_id, false), (&with, &with_id, true)]
        };
        for (api, id, authenticated) in order {
            let start = Instant::now();
            call("get", api.0.get(id)).await?;
            let got = start.elapsed();
            let start = Instant::now();
            api.exec_true(id).await?;
            let ran = start.elapsed();
            if i < WARMUP {
                continue;
            }
            if authenticated {
                get_with.push(got);
                exec_with.push(ran);
            } else {
                get_without.push(got);
                exec_without.push(ran);
            }
        }
    }
    with.delete(&with_id).await?;
    without.delete(&without_id).await?;
    let summary = |samples: &[Duration]| Summary::of(samples).expect("n ≥ 1");
    let mut rows = Vec::new();
    for (call, with, without) in [
        ("`GET /v1/sandboxes/{id}`", &get_with, &get_without),
        ("exec `true`", &exec_with, &exec_without),
    ] {
        let (with, without) = (summary(with), summary(without));
        rows.push(Row {
            name: format!("{call} with a key and the default limits"),
            result: Ok(with),
            target: None,
        });
        rows.push(Row {
            name: format!("{call} on a daemon without either (`--insecure-no-auth`, no limits)"),
            result: Ok(without),
            target: None,
        });
        let added = with.p50 - without.p50;
        rows.push(Row {
            name: format!("… authentication and limits added to {call}: p50 difference"),
            result: Ok(Summary {
                samples: with.samples,
                p50: added,
                p95: with.p95 - without.p95,
                p99: with.p99 - without.p99,
                mean: with.mean - without.mean,
            }),
            target: Some(AUTH_OVERHEAD_TARGET),
        });
    }
    Ok(rows)
}

/// Creates `m` sandboxes ([`CONCURRENCY`] requests at a time), checks each is running and
/// runs `true` in it, reads the memory of the daemon and of the sandboxes, then deletes all.
/// Failures are counted, not fatal.
async fn scale(api: &Api<'_>, daemon: &mut Daemon, m: usize, k: usize) -> Result<Scale> {
    let mut errors = Vec::new();
    let start = Instant::now();
    let ids = each(0..m, "create", &mut errors, |_| api.create_bulk()).await;
    let create_wall_s = start.elapsed().as_secs_f64();

    let listed = running_ids(api).await?;
    let running = ids.iter().filter(|id| listed.contains(*id)).count();
    if running < ids.len() {
        errors.push(format!(
            "{} of {} created sandboxes are not listed as running",
            ids.len() - running,
            ids.len()
        ));
    }

    let exec_ok = each(&ids, "exec", &mut errors, |id| api.exec_true(id))
        .await
        .len();

    let rss_alive_kib = daemon_status_kib(daemon.pid(), "VmRSS:");
    let sandbox_pss = daemon.instance().map(|instance| {
        let pids = daemon::pids_in_instance(instance);
        let total = pids
            .iter()
            .filter_map(|pid| {
                let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
                status_kib(&text, "Pss:")
            })
            .sum();
        (total, pids.len())
    });

    // A crashed daemon's successor re-adopts every sandbox before it answers.
    eprintln!(
        "kill -9 of the daemon with {} alive, and a restart…",
        ids.len()
    );
    let restart = daemon.crash_and_restart().await?;
    let listed = running_ids(api).await?;
    let adopted = ids.iter().filter(|id| listed.contains(*id));
    let adopted_ok = each(adopted, "exec after the restart", &mut errors, |id| {
        api.exec_true(id)
    })
    .await
    .len();

    // The reaper with many far deadlines: the daemon's CPU while nothing happens.
    eprintln!("{} sandboxes alive, daemon CPU ({QUIET_WINDOW:?})…", k);
    let extra_ids = each(ids.len()..k, "create (idle phase)", &mut errors, |_| {
        api.create_bulk()
    })
    .await;
    let idle_alive = ids.len() + extra_ids.len();
    let cpu_alive = quiet_cpu(daemon.pid()).await;
    each(&extra_ids, "delete (idle phase)", &mut errors, |id| {
        api.delete(id)
    })
    .await;

    let start = Instant::now();
    let deleted = each(&ids, "delete", &mut errors, |id| api.delete(id))
        .await
        .len();
    let delete_wall_s = start.elapsed().as_secs_f64();

    Ok(Scale {
        requested: m,
        concurrency: CONCURRENCY,
        created: ids.len(),
        running,
        exec_ok,
        deleted,
        errors,
        create_wall_s,
        delete_wall_s,
        rss_idle_kib: None,
        rss_alive_kib,
        rss_after_kib: daemon_status_kib(daemon.pid(), "VmRSS:"),
        hwm_kib: daemon_status_kib(daemon.pid(), "VmHWM:"),
        sandbox_pss,
        terminal_mb_s: None,
        files: None,
        restart,
        adopted_ok,
        cpu_empty: None,
        cpu_alive,
        idle_alive,
        exhaustion: None,
    })
}

/// Calls `call` on every item, [`CONCURRENCY`] at a time; what succeeded, each failure going
/// to `errors` as `what: error`.
async fn each<I, T, F, Fut>(items: I, what: &str, errors: &mut Vec<String>, call: F) -> Vec<T>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let results: Vec<Result<T>> = stream::iter(items)
        .map(call)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut done = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(value) => done.push(value),
            Err(e) => errors.push(format!("{what}: {e:#}")),
        }
    }
    done
}

/// Ids the daemon lists as running.
async fn running_ids(api: &Api<'_>) -> Result<HashSet<String>> {
    Ok(call("list", api.0.list(&["running"], &[]))
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

/// CPU time (user + system) the process `pid` used during [`QUIET_WINDOW`], from
/// `/proc/<pid>/stat` (clock ticks, 10 ms each at the usual USER_HZ of 100).
async fn quiet_cpu(pid: u32) -> Option<Duration> {
    let ticks = || -> Option<u64> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    // Let what the last requests started (watchers, pool refills) settle first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = ticks()?;
    tokio::time::sleep(QUIET_WINDOW).await;
    let after = ticks()?;
    Some(Duration::from_millis((after - before) * 10))
}

pub fn daemon_status_kib(pid: u32, key: &str) -> Option<u64> {
    status_kib(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

/// The API calls the benchmark makes, each checked for the answer it must give.
pub struct Api<'a>(pub &'a Client);

impl Api<'_> {
    /// Creates a default sandbox; its id.
    pub async fn create(&self) -> Result<String> {
        self.create_from(&CreateSandboxRequest::default()).await
    }

    /// Creates a sandbox of the `bulk` profile (few processes, a small disk); its id.
    pub async fn create_bulk(&self) -> Result<String> {
        let request = CreateSandboxRequest {
            profile: Some("bulk".into()),
            ..Default::default()
        };
        self.create_from(&request).await
    }

    /// Creates a sandbox with `cpus` CPUs; its id.
    pub async fn create_with_cpus(&self, cpus: f64) -> Result<String> {
        let request = CreateSandboxRequest {
            resources: Some(sbx_protocol::ResourcesRequest {
                cpus: Some(cpus),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_from(&request).await
    }

    pub async fn create_from(&self, request: &CreateSandboxRequest) -> Result<String> {
        let sandbox = call("create", self.0.create(request)).await?;
        ensure!(
            sandbox.state == SandboxState::Running,
            "create answered {} ({})",
            sandbox.state,
            sandbox.state_reason.unwrap_or_default()
        );
        Ok(sandbox.id)
    }

    /// Runs `true`; the time it ran as the daemon reports it (ms).
    pub async fn exec_true(&self, id: &str) -> Result<f64> {
        let request = ExecRequest {
            cmd: vec!["true".into()],
            ..ExecRequest::default()
        };
        let result = call("exec", self.0.exec(id, &request)).await?;
        if result.exit_code != 0 {
            bail!(
                "`true` in {id} exited with {} (stderr: {})",
                result.exit_code,
                result.stderr.trim()
            );
        }
        Ok(result.duration_ms)
    }

    /// Runs `sh -c script`, which must succeed.
    pub async fn sh(&self, id: &str, script: &str) -> Result<()> {
        let request = ExecRequest {
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            ..ExecRequest::default()
        };
        let result = call("exec", self.0.exec(id, &request)).await?;
        ensure!(
            result.exit_code == 0,
            "{script} failed: {}",
            result.stderr.trim()
        );
        Ok(())
    }

    /// Pauses or resumes a sandbox, checking the state it answers.
    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        let (sandbox, want) = if paused {
            (call("pause", self.0.pause(id)).await?, SandboxState::Paused)
        } else {
            (
                call("resume", self.0.resume(id)).await?,
                SandboxState::Running,
            )
        };
        ensure!(sandbox.state == want, "{id} answered {}", sandbox.state);
        Ok(())
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        let sandbox = call("delete", self.0.delete(id)).await?;
        ensure!(
            sandbox.state == SandboxState::Destroyed,
            "delete of {id} answered {}",
            sandbox.state
        );
        Ok(())
    }
}

/// Awaits one API call with [`CALL_TIMEOUT`].
async fn call<T>(what: &str, request: impl Future<Output = Result<T, ClientError>>) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(result) => result.with_context(|| format!("{what} failed")),
        Err(_) => bail!("{what}: no answer within {CALL_TIMEOUT:?}"),
    }
}
