//! `shutdown`: stop the reaper; unless told to keep them, destroy every sandbox this daemon
//! runs (reason `daemon-shutdown`); stop the watchers. Kept sandboxes go on running and the
//! next daemon adopts them. A hibernated sandbox is always kept: it runs nothing, and its
//! checkpoint is there for a later daemon to restore (what hibernating is for).

use crate::{Caller, Error, Service, State};

impl Service {
    pub async fn shutdown(&self, keep_sandboxes: bool) -> Result<(), Error> {
        self.inner.closing.send_replace(true);
        self.stop_reaper().await;
        let mut first_error = None;
        if !keep_sandboxes {
            let rows = self
                .inner
                .store
                .list_sandboxes(&State::names_where(State::may_have_host_traces))?;
            let mut tasks = tokio::task::JoinSet::new();
            for row in rows {
                if row.state == State::Hibernated.as_str() {
                    continue;
                }
                let service = self.clone();
                tasks.spawn(async move {
                    let result = service
                        .destroy(&Caller::system(), &row.id, crate::reason::DAEMON_SHUTDOWN)
                        .await;
                    (row.id, result)
                });
            }
            while let Some(result) = tasks.join_next().await {
                match result {
                    Ok((_, Ok(_))) => {}
                    Ok((id, Err(e))) => {
                        tracing::error!(sandbox = %id, error = %e.detail(), "cannot destroy at shutdown");
                        first_error.get_or_insert(e);
                    }
                    Err(e) => {
                        first_error.get_or_insert(Error::internal(e.to_string()));
                    }
                }
            }
        }
        self.inner
            .watchers
            .lock()
            .expect("watcher set is never poisoned")
            .abort_all();
        first_error.map_or(Ok(()), Err)
    }
}
