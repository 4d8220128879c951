//! `status`: the daemon, its backends, and every live sandbox as the host sees it.

use std::collections::BTreeMap;

use crate::model::{BackendStatus, ProfileStatus, SandboxStatus, Status};

use super::handle_of;
use crate::{deadline, now_ms, view, Caller, Error, Service, State};

impl Service {
    /// The daemon's health and the sandboxes the caller may see (counts included).
    pub async fn status(&self, caller: &Caller) -> Result<Status, Error> {
        let inner = &self.inner;
        let mut backends = Vec::new();
        for backend in inner.backends.iter() {
            let health = tokio::time::timeout(deadline::LIST, backend.health()).await;
            let (healthy, detail) = match health {
                Ok(health) => (health.healthy, health.detail),
                Err(_) => (false, "health check timed out".to_owned()),
            };
            backends.push(BackendStatus {
                name: backend.kind().into(),
                healthy,
                detail,
                capabilities: backend
                    .capabilities()
                    .names()
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                isolation: backend.isolation().into(),
            });
        }
        let profiles = inner
            .config
            .profiles
            .values()
            .map(|profile| {
                let backend = backends.iter().find(|b| b.name == profile.backend);
                let isolation = backend.map_or("unavailable", |b| b.isolation.as_str());
                let requested = isolation == "gvisor";
                ProfileStatus {
                    name: profile.name.clone(),
                    backend: profile.backend.clone(),
                    isolation: isolation.to_owned(),
                    gvisor_requested: requested,
                    gvisor_available: requested && backend.is_some_and(|b| b.healthy),
                }
            })
            .collect();
        let mut counts: BTreeMap<State, u64> = State::ALL.iter().map(|s| (*s, 0)).collect();
        match caller.scope() {
            None => {
                for (state, count) in inner.store.count_by_state()? {
                    if let Some(state) = State::parse(&state) {
                        counts.insert(state, count);
                    }
                }
            }
            Some(user) => {
                for row in inner
                    .store
                    .sandboxes_of(user, &State::names_where(|_| true))?
                {
                    *counts.entry(view::state_of(&row)?).or_default() += 1;
                }
            }
        }
        let traced = State::names_where(State::may_have_host_traces);
        let rows = match caller.scope() {
            None => inner.store.list_sandboxes(&traced)?,
            Some(user) => inner.store.sandboxes_of(user, &traced)?,
        };
        let mut sandboxes = Vec::new();
        for row in rows {
            let observed = match (handle_of(&row)?, self.backend_of(&row)) {
                (Some(handle), Ok(backend)) => {
                    deadline::run(deadline::LIST, "inspect", backend.inspect(&handle))
                        .await
                        .ok()
                }
                _ => None,
            };
            let init_pid = observed.as_ref().and_then(|o| o.main_pid);
            sandboxes.push(SandboxStatus {
                id: row.id.clone(),
                name: row.name.clone(),
                profile: row.profile.clone(),
                state: view::state_of(&row)?,
                owner: row.owner.clone(),
                init_pid,
                alive: observed.as_ref().is_some_and(|o| o.alive),
                expires_at: view::shown_deadline(&row),
                memory_bytes: observed.as_ref().and_then(|o| o.memory_bytes),
                cpu_seconds: observed
                    .as_ref()
                    .and_then(|o| o.cpu_usec)
                    .map(|us| us as f64 / 1e6),
                pids: observed.as_ref().and_then(|o| o.pids),
            });
        }
        Ok(Status {
            profiles,
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: inner.started_at,
            uptime_seconds: u64::try_from((now_ms() - inner.started_at) / 1000).unwrap_or(0),
            backends,
            counts,
            sandboxes,
        })
    }
}

/// What one sandbox uses now, as its backend observes it.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub pids: Option<u64>,
}

impl Service {
    /// The caller's sandbox's use of memory, CPU (over its life) and processes.
    pub async fn usage(&self, caller: &Caller, id_or_name: &str) -> Result<Usage, Error> {
        let row = self.resolve(caller, id_or_name)?;
        let Some(handle) = handle_of(&row)? else {
            return Ok(Usage::default());
        };
        let backend = self.backend_of(&row)?;
        let observed = deadline::run(deadline::LIST, "inspect", backend.inspect(&handle)).await?;
        Ok(Usage {
            memory_bytes: observed.memory_bytes,
            cpu_seconds: observed.cpu_usec.map(|us| us as f64 / 1e6),
            pids: observed.pids,
        })
    }
}
