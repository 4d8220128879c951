//! `sbx status`: the daemon, its backends, and every live sandbox with its usage.

use clap::Args;

use crate::cli::output::{self, say};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct StatusArgs {}

pub async fn run(context: &Context, _args: StatusArgs) -> anyhow::Result<u8> {
    let status = context.client.status().await?;
    if context.json {
        output::print_json(&status);
        return Ok(0);
    }
    say!(
        "sbx {}, up {}s (since {})",
        status.version,
        status.uptime_seconds,
        status.started_at
    );
    for backend in &status.backends {
        say!(
            "backend {}: {} ({}); can: {}",
            backend.name,
            if backend.healthy {
                "healthy"
            } else {
                "UNHEALTHY"
            },
            backend.detail,
            backend.capabilities.join(", ")
        );
    }
    for profile in &status.profiles {
        say!(
            "profile {}: backend {}, isolation {}{}",
            profile.name,
            profile.backend,
            profile.isolation,
            match (profile.gvisor.requested, profile.gvisor.available) {
                (true, true) => ", gVisor in use",
                (true, false) => ", gVisor UNAVAILABLE",
                _ => "",
            }
        );
    }
    let counts: Vec<String> = status
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    say!(
        "sandboxes: {}",
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(", ")
        }
    );
    if status.sandboxes.is_empty() {
        return Ok(0);
    }
    println!();
    let rows: Vec<Vec<String>> = status
        .sandboxes
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.profile.clone(),
                s.state.to_string(),
                s.init_pid.map_or("-".into(), |p| p.to_string()),
                if s.alive { "yes".into() } else { "no".into() },
                s.expires_at.clone(),
                s.memory_bytes
                    .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
                s.cpu_seconds.map_or("-".into(), |c| format!("{c:.2}s")),
                s.pids.map_or("-".into(), |p| p.to_string()),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "PROFILE", "STATE", "INIT PID", "ALIVE", "EXPIRES", "MEMORY", "CPU", "PIDS",
        ],
        &rows,
    );
    Ok(0)
}
