//! `sbx cleanup [--dry-run]`: remove every trace sbx left on the host. Asks the daemon when one
//! answers; otherwise does the same itself on the data directory (which no daemon then holds).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cli::{output, Context};

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Only list what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Data directory to clean when no daemon answers.
    #[arg(long, env = "SBX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (for its data directory) when no daemon answers.
    #[arg(long, env = "SBX_CONFIG")]
    config: Option<PathBuf>,
}

pub async fn run(context: &Context, args: CleanupArgs) -> anyhow::Result<u8> {
    let daemon_up = tokio::time::timeout(Duration::from_secs(5), context.client.health())
        .await
        .is_ok_and(|health| health.is_ok());
    let report = if daemon_up {
        context.client.cleanup(args.dry_run).await?
    } else {
        crate::maintenance::offline_cleanup(args.config, args.data_dir, args.dry_run).await?
    };
    if context.json {
        output::print_json(&report);
        return Ok(0);
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for id in &report.sandboxes {
        println!("{verb} sandbox {id}");
    }
    for id in &report.orphans {
        println!("{verb} orphaned traces of {id}");
    }
    if report.sandboxes.is_empty() && report.orphans.is_empty() {
        println!("nothing to clean up");
    }
    Ok(0)
}
