//! `sbx cleanup` without a daemon: the daemon-side cleanup run in this process, on a data
//! directory no daemon holds (the data-directory lock guarantees it).

use std::path::PathBuf;

use sbx_protocol::CleanupReport;

use crate::daemon;

pub async fn offline_cleanup(
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    dry_run: bool,
) -> anyhow::Result<CleanupReport> {
    let config = sbx_config::Config::load(config_file.as_deref())?;
    let data_dir = daemon::data_dir(data_dir, &config)?;
    let _lock = daemon::DataDirLock::acquire(&data_dir, "sbx cleanup")?;
    let service = daemon::open(&config, &data_dir, 0)?;
    // Root on the daemon's host, holding its data directory: the operator.
    let operator = sbx_lifecycle::Caller::system();
    let report = service.cleanup(&operator, dry_run).await;
    service.shutdown_backends().await;
    service.access().close();
    let report = report.map_err(|e| anyhow::anyhow!(e.detail()))?;
    Ok(CleanupReport {
        dry_run: report.dry_run,
        sandboxes: report.sandboxes,
        orphans: report.orphans,
    })
}
