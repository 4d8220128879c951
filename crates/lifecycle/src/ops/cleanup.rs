//! `cleanup`: remove every trace this daemon's sandboxes left on the host — every live sandbox
//! (reason `daemon-cleanup`) and every host trace no record owns. Idempotent; `dry_run` only
//! reports.

use std::collections::BTreeSet;

use sbx_protocol::CleanupReport;

use crate::{deadline, Caller, Error, Service, State};

impl Service {
    /// Admins only: it acts on every user's sandboxes and on the host.
    pub async fn cleanup(&self, caller: &Caller, dry_run: bool) -> Result<CleanupReport, Error> {
        caller.require_admin()?;
        let inner = &self.inner;
        let live = inner
            .store
            .list_sandboxes(&State::names_where(State::may_have_host_traces))?;
        let mut report = CleanupReport {
            dry_run,
            ..Default::default()
        };
        let known: BTreeSet<String> = live.iter().map(|row| row.id.clone()).collect();
        for row in &live {
            if !dry_run {
                self.destroy(caller, &row.id, crate::reason::DAEMON_CLEANUP)
                    .await?;
            }
            report.sandboxes.push(row.id.clone());
        }
        for id in deadline::run(deadline::LIST, "list", inner.backend.list_owned()).await? {
            if known.contains(id.as_str()) {
                continue;
            }
            if !dry_run {
                deadline::run(
                    deadline::DESTROY,
                    "destroy",
                    inner.backend.destroy(&id, None),
                )
                .await?;
            }
            report.orphans.push(id.to_string());
        }
        if !dry_run && (!report.sandboxes.is_empty() || !report.orphans.is_empty()) {
            tracing::warn!(
                sandboxes = report.sandboxes.len(),
                orphans = report.orphans.len(),
                "cleanup removed everything"
            );
        }
        Ok(report)
    }
}
