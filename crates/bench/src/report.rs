//! The Markdown report: host facts, the latency table with its targets, and the scale results.

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use crate::stats::{mib, ms, pass, Summary, Target};

/// Daemon RSS with every scale sandbox alive must stay under this.
pub const RSS_TARGET_MIB: u64 = 100;

/// The machine the benchmark ran on.
pub struct Host {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_kib: u64,
}

impl Host {
    pub fn read() -> Host {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Host {
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|t| t.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            cpu: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib: status_kib(&meminfo, "MemTotal:").unwrap_or(0),
        }
    }
}

/// The `<key> <n> kB` value of a `/proc` status-like text.
pub fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One latency row: its samples' summary, or why there is none (e.g. a tool not installed).
pub struct Row {
    pub name: String,
    pub result: Result<Summary, String>,
    pub target: Option<Target>,
}

/// What the scale phase saw.
pub struct Scale {
    pub requested: usize,
    pub concurrency: usize,
    pub created: usize,
    pub running: usize,
    pub exec_ok: usize,
    pub deleted: usize,
    pub errors: Vec<String>,
    pub create_wall_s: f64,
    pub delete_wall_s: f64,
    pub rss_idle_kib: Option<u64>,
    pub rss_alive_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    /// PSS total (KiB) and process count of everything in the sandboxes' cgroups.
    pub sandbox_pss: Option<(u64, usize)>,
    /// Terminal output throughput, MB/s (`cat` of a large file to a local WebSocket client).
    /// And the ceiling: the same `cat` on a host pty with a minimal reader (MB/s).
    pub terminal_mb_s: Option<(f64, Option<f64>)>,
    /// A 1 GiB file up and down through the API.
    pub files: Option<crate::files::FilesReport>,
    /// From the `kill -9` of the daemon (with every scale sandbox alive) to its successor's
    /// first answer; and how many sandboxes ran `true` after that.
    pub restart: Duration,
    pub adopted_ok: usize,
    /// The daemon's CPU time over the quiet window with no sandbox, and with `idle_alive`.
    pub cpu_empty: Option<Duration>,
    pub cpu_alive: Option<Duration>,
    pub idle_alive: usize,
    /// Floods, collected output and output cost (see `flood.rs`).
    pub exhaustion: Option<crate::flood::Exhaustion>,
}

pub struct Report {
    pub date: String,
    pub host: Host,
    pub version: String,
    pub sbx_path: String,
    /// WARN/ERROR lines of the daemon's log.
    pub log_warnings: Vec<String>,
    pub iterations: usize,
    pub rows: Vec<Row>,
    pub scale: Scale,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let host = &self.host;
        let _ = writeln!(out, "# sbx benchmark\n");
        let _ = writeln!(out, "- date: {}", self.date);
        let _ = writeln!(
            out,
            "- host: Linux {}, {} × {} CPUs, {:.1} GiB memory",
            host.kernel,
            host.cpu,
            host.cpus,
            host.memory_kib as f64 / (1024.0 * 1024.0)
        );
        let _ = writeln!(out, "- sbx: {} ({})", self.version, self.sbx_path);
        let _ = writeln!(
            out,
            "- iterations N = {}, scale M = {} ({} concurrent requests)\n",
            self.iterations, self.scale.requested, self.scale.concurrency
        );

        let _ = writeln!(out, "## Latency\n");
        let _ = writeln!(
            out,
            "| measurement | p50 ms | p95 ms | p99 ms | mean ms | target |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
        for row in &self.rows {
            match &row.result {
                Ok(s) => {
                    let target = row.target.map_or("—".into(), |t| t.verdict(s));
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {target} |",
                        row.name,
                        ms(s.p50),
                        ms(s.p95),
                        ms(s.p99),
                        ms(s.mean)
                    );
                }
                Err(why) => {
                    let target = if row.target.is_some() { "FAIL" } else { "—" };
                    let _ = writeln!(out, "| {} | {why} | | | | {target} |", row.name);
                }
            }
        }

        let s = &self.scale;
        if let Some((rate, ceiling)) = s.terminal_mb_s {
            let target = crate::THROUGHPUT_TARGET_MB_S;
            let _ = writeln!(out, "\n## Terminal throughput\n");
            let _ = writeln!(out, "| measurement | MB/s | target |");
            let _ = writeln!(out, "|---|---:|---|");
            let _ = writeln!(
                out,
                "| `cat` of a 256 MiB file in a sandbox terminal (raw mode) → local WebSocket client | {rate:.0} | ≥ {target}: {} |",
                crate::stats::pass(rate >= target)
            );
            if let Some(ceiling) = ceiling {
                let _ = writeln!(
                    out,
                    "| baseline: the same `cat` on a host pty, minimal reader (no sandbox, no WebSocket) | {ceiling:.0} | — |"
                );
            }
        }
        if let Some(files) = &s.files {
            use crate::files::{RSS_GROWTH_TARGET_MIB, THROUGHPUT_TARGET_MB_S};
            let _ = writeln!(out, "\n## Files\n");
            let _ = writeln!(out, "| measurement | value | target |");
            let _ = writeln!(out, "|---|---|---|");
            for (what, rate) in [
                ("upload", files.upload_mb_s),
                ("download", files.download_mb_s),
            ] {
                let _ = writeln!(
                    out,
                    "| {what} of a 1 GiB file (streamed through the API), MB/s | {rate:.0} | ≥ {THROUGHPUT_TARGET_MB_S}: {} |",
                    crate::stats::pass(rate >= THROUGHPUT_TARGET_MB_S)
                );
            }
            if let Some(rate) = files.pipe_mb_s {
                let _ = writeln!(
                    out,
                    "| baseline: the same bytes through one pipe on the host (`head -c 1G /dev/zero \\| cat`), MB/s | {rate:.0} | — |"
                );
            }
            let growth = files.rss_peak_kib.saturating_sub(files.rss_before_kib) / 1024;
            let _ = writeln!(
                out,
                "| daemon VmRSS growth during them (peak, sampled every 10 ms; before) | {growth} MiB ({} MiB) | ≤ {RSS_GROWTH_TARGET_MIB} MiB: {} |",
                files.rss_before_kib / 1024,
                crate::stats::pass(growth <= RSS_GROWTH_TARGET_MIB)
            );
        }
        let _ = writeln!(out, "\n## Scale: {} sandboxes\n", s.requested);
        let _ = writeln!(out, "| measurement | value | target |");
        let _ = writeln!(out, "|---|---|---|");
        let _ = writeln!(
            out,
            "| created / running / `true` exited 0 | {} / {} / {} | all {}: {} |",
            s.created,
            s.running,
            s.exec_ok,
            s.requested,
            pass(s.created == s.requested && s.running == s.requested && s.exec_ok == s.requested)
        );
        let _ = writeln!(
            out,
            "| errors | {} | 0: {} |",
            s.errors.len(),
            pass(s.errors.is_empty())
        );
        let rss_target = match s.rss_alive_kib {
            Some(kib) => format!(
                "< {RSS_TARGET_MIB} MiB: {}",
                pass(kib < RSS_TARGET_MIB * 1024)
            ),
            None => "FAIL (unreadable)".into(),
        };
        let _ = writeln!(
            out,
            "| daemon VmRSS, {} alive | {} | {rss_target} |",
            s.running,
            opt_mib(s.rss_alive_kib)
        );
        let _ = writeln!(
            out,
            "| daemon VmRSS idle (before the run) / after deleting all / peak (VmHWM) | {} / {} / {} | — |",
            opt_mib(s.rss_idle_kib),
            opt_mib(s.rss_after_kib),
            opt_mib(s.hwm_kib)
        );
        match s.sandbox_pss {
            Some((kib, processes)) if s.running > 0 => {
                let _ = writeln!(
                    out,
                    "| PSS of the sandboxes' processes ({processes} processes) | {} total, {:.2} MiB per sandbox | — |",
                    mib(kib),
                    kib as f64 / 1024.0 / s.running as f64
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "| PSS of the sandboxes' processes | not measured | — |"
                );
            }
        }
        let _ = writeln!(
            out,
            "| wall time: create {} / delete {} ({} concurrent) | {:.2} s ({:.0}/s) / {:.2} s ({:.0}/s) | — |",
            s.requested,
            s.deleted,
            s.concurrency,
            s.create_wall_s,
            rate(s.created, s.create_wall_s),
            s.delete_wall_s,
            rate(s.deleted, s.delete_wall_s)
        );
        let _ = writeln!(
            out,
            "| `kill -9` of the daemon with {} alive → restarted daemon answers (store and host reconciled, all re-adopted) | {:.0} ms | < 1000 ms: {} |",
            s.running,
            s.restart.as_secs_f64() * 1000.0,
            pass(s.restart < Duration::from_secs(1))
        );
        let _ = writeln!(
            out,
            "| … then running and `true` exited 0 | {} of {} | all: {} |",
            s.adopted_ok,
            s.running,
            pass(s.adopted_ok == s.running)
        );
        let cpu = |d: Option<Duration>| {
            d.map_or("unreadable".to_owned(), |d| format!("{} ms", d.as_millis()))
        };
        let _ = writeln!(
            out,
            "| daemon CPU time over {} s with nothing happening: no sandbox / {} alive (far deadlines) | {} / {} | flat: {} |",
            crate::QUIET_WINDOW.as_secs(),
            s.idle_alive,
            cpu(s.cpu_empty),
            cpu(s.cpu_alive),
            // The same as with none, within two clock ticks (the measurement's resolution).
            pass(matches!((s.cpu_empty, s.cpu_alive), (Some(empty), Some(alive))
                if alive <= empty + Duration::from_millis(20)))
        );
        let _ = writeln!(
            out,
            "| WARN/ERROR lines in the daemon's log (whole run) | {} | — |",
            self.log_warnings.len()
        );
        if let Some(e) = &s.exhaustion {
            exhaustion(&mut out, e);
        }
        if !s.errors.is_empty() {
            let _ = writeln!(out, "\nFirst errors:\n");
            for error in s.errors.iter().take(10) {
                let _ = writeln!(out, "- {error}");
            }
        }
        if !self.log_warnings.is_empty() {
            let _ = writeln!(out, "\nFirst WARN/ERROR lines of the daemon's log:\n");
            for line in self.log_warnings.iter().take(10) {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }
}

fn exhaustion(out: &mut String, e: &crate::flood::Exhaustion) {
    use crate::flood::{COLLECT_RSS_TARGET_MIB, FLOOD_RATIO_TARGET, OUTPUT_CPU_TARGET};
    let _ = writeln!(out, "\n## Exhaustion\n");
    let _ = writeln!(
        out,
        "Another user's create+first-exec while one sandbox floods (p50 ms, idle just before → during):\n"
    );
    let _ = writeln!(
        out,
        "| flood | idle p50 | during p50 | during p99 | ratio | target |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
    for row in &e.floods {
        let p = |s: Option<Summary>, f: fn(&Summary) -> f64| s.map_or("—".into(), |s| ms(f(&s)));
        let ratio = row.ratio();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | ≤ {FLOOD_RATIO_TARGET}×: {} |",
            row.name,
            p(row.idle, |s| s.p50),
            p(row.during, |s| s.p50),
            p(row.during, |s| s.p99),
            ratio.map_or("—".into(), |r| format!("{r:.2}×")),
            pass(ratio.is_some_and(|r| r <= FLOOD_RATIO_TARGET))
        );
    }
    let _ = writeln!(out, "\n| measurement | value | target |");
    let _ = writeln!(out, "|---|---|---|");
    match e.collect_rss_kib {
        Some((peak, before)) => {
            let _ = writeln!(
                out,
                "| daemon VmRSS while 10 clients collect 16 MiB of random bytes each (peak, sampled every 20 ms; before) | {} ({}) | < {COLLECT_RSS_TARGET_MIB} MiB: {} |",
                mib(peak),
                mib(before),
                pass(peak < COLLECT_RSS_TARGET_MIB * 1024)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "| daemon VmRSS while 10 clients collect 16 MiB | not measured | FAIL |"
            );
        }
    }
    match &e.output_cost {
        Some(cost) => {
            let _ = writeln!(
                out,
                "| a 0.1-CPU sandbox's NULs on 4 exec streams for 10 s: daemon CPU (sandbox's own CPU; its allowance; output delivered) | {:.2} s ({}; {:.1} s; {}) | ≤ {OUTPUT_CPU_TARGET}× the allowance: {} |",
                cost.daemon_s,
                cost.sandbox_s.map_or("unread".into(), |s| format!("{s:.2} s")),
                cost.allowance_s,
                mib(cost.bytes / 1024),
                pass(cost.daemon_s <= OUTPUT_CPU_TARGET * cost.allowance_s)
            );
        }
        None => {
            let _ = writeln!(out, "| output flood cost | not measured | FAIL |");
        }
    }
    if !e.errors.is_empty() {
        let _ = writeln!(out, "\nErrors of the exhaustion phase:\n");
        for error in e.errors.iter().take(10) {
            let _ = writeln!(out, "- {error}");
        }
    }
}

fn opt_mib(kib: Option<u64>) -> String {
    kib.map_or("unreadable".into(), mib)
}

fn rate(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}
