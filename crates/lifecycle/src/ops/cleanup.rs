//! `cleanup`: remove every trace this daemon's sandboxes left on the host — every live sandbox
//! (reason `daemon-cleanup`) and every host trace no record owns. Idempotent; `dry_run` only
//! reports.

use std::collections::BTreeSet;

use crate::model::CleanupReport;

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
        for row in &live {
            if !dry_run {
                self.destroy(caller, &row.id, crate::reason::DAEMON_CLEANUP)
                    .await?;
            }
            report.sandboxes.push(row.id.clone());
        }
        for backend in inner.backends.iter() {
            let owned = deadline::run(deadline::LIST, "list", backend.list_owned()).await?;
            // Read after the listing: a sandbox created meanwhile has its record by the time
            // the backend shows its resources (the record comes first), so it is not taken
            // for an orphan. (Resources still being built are left out of the listing by the
            // backend.)
            let known: BTreeSet<String> = inner
                .store
                .list_sandboxes(&State::names_where(State::may_have_host_traces))?
                .into_iter()
                .map(|row| row.id)
                .collect();
            for id in owned {
                if known.contains(id.as_str()) {
                    continue;
                }
                if !dry_run {
                    deadline::run(deadline::DESTROY, "destroy", backend.destroy(&id, None)).await?;
                }
                report.orphans.push(id.to_string());
            }
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
