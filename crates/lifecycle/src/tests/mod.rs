//! Lifecycle's rules against the fake backend: no root, no processes, tokio's paused clock —
//! a day of TTLs passes in milliseconds. What the end-to-end suite shows on a real backend
//! (create, exec, expiry, adoption, admission), here with faults no real backend shows on
//! demand: hangs, crashes, errors, slow calls.

mod pausing;
mod rules;

use std::sync::Arc;

use crate::model::{NewSandbox, Sandbox};
use sbx_backend::Backend;
use sbx_backend_fake::{Engine, FakeBackend};

use crate::{Caller, Config, Service};

/// Lifecycle's clock in its tests: the wall clock when the process started, moved on by
/// tokio's clock (which a paused runtime advances whenever every task waits).
pub mod clock {
    use std::sync::OnceLock;

    static START: OnceLock<(i64, std::time::Instant)> = OnceLock::new();

    pub fn now_ms() -> i64 {
        let (wall, instant) =
            *START.get_or_init(|| (super::super::wall_clock_ms(), std::time::Instant::now()));
        let elapsed = tokio::time::Instant::now()
            .into_std()
            .saturating_duration_since(instant);
        wall + elapsed.as_millis() as i64
    }
}

/// A daemon's lifecycle over fake backends, with what a test changes in its configuration.
pub struct Harness {
    pub service: Service,
    pub engine: Arc<Engine>,
    pub store_path: std::path::PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

/// The daemon's defaults, every profile on the fake backend.
pub fn config() -> Config {
    let defaults = sbx_config::Config::default();
    let mut profiles = defaults.profiles;
    for profile in profiles.values_mut() {
        profile.backend = "fake".into();
    }
    Config {
        profiles,
        reaper: defaults.reaper,
        capacity: sbx_config::Capacity::default(),
        limits: defaults.limits,
        audit: None,
        exec: defaults.exec,
        snapshots: defaults.snapshots,
        projects: defaults.projects,
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(config(), Engine::new())
    }

    /// A service with `config` over one fake backend on `engine`.
    pub fn with(config: Config, engine: Arc<Engine>) -> Harness {
        let backend: Arc<dyn Backend> = Arc::new(FakeBackend::on(engine.clone()));
        Harness::with_backends(config, engine, vec![backend])
    }

    pub fn with_backends(
        config: Config,
        engine: Arc<Engine>,
        backends: Vec<Arc<dyn Backend>>,
    ) -> Harness {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let store_path = dir.path().join("sbx.db");
        let store = sbx_store::Store::open(&store_path).unwrap();
        let service = Service::new(store, backends, config).unwrap();
        Harness {
            service,
            engine,
            store_path,
            _dir: dir,
        }
    }

    /// The daemon stopped (sandboxes kept) and started again on the same store and engine,
    /// with `config`: reconciled, reaper running.
    pub async fn restart(self, config: Config) -> Harness {
        self.service.shutdown(true).await.unwrap();
        let backend: Arc<dyn Backend> = Arc::new(FakeBackend::on(self.engine.clone()));
        let store = sbx_store::Store::open(&self.store_path).unwrap();
        let service = Service::new(store, vec![backend], config).unwrap();
        Harness {
            service,
            engine: self.engine,
            store_path: self.store_path,
            _dir: self._dir,
        }
    }

    pub async fn create(&self, request: NewSandbox) -> Sandbox {
        self.service
            .create(&Caller::system(), &request)
            .await
            .unwrap_or_else(|e| panic!("create: {}", e.detail()))
    }

    pub fn get(&self, id: &str) -> Sandbox {
        self.service.get(&Caller::system(), id).unwrap()
    }
}

/// A caller acting with a user key.
pub fn user(name: &str) -> Caller {
    Caller {
        user: name.into(),
        admin: false,
        key_id: Some(format!("key-{name}")),
        ip: None,
        request_id: None,
        session: None,
    }
}

pub fn with_ttl(seconds: u64) -> NewSandbox {
    NewSandbox {
        ttl: Some(crate::model::Span::new(std::time::Duration::from_secs(
            seconds,
        ))),
        ..Default::default()
    }
}

/// Waits (on the test clock) until sandbox `id` is in `state`.
pub async fn settles(h: &Harness, id: &str, state: crate::State) -> Sandbox {
    for _ in 0..600 {
        let sandbox = h.get(id);
        if sandbox.state == state {
            return sandbox;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{id} never became {state:?}: {:?}", h.get(id));
}
