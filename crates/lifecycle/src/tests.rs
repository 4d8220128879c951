//! Lifecycle against a backend that misbehaves on purpose: what no real backend can be made
//! to do on demand in an end-to-end test.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sbx_backend::{
    Backend, BackendError, ExecSession, ExecSpec, Handle, Health, Observed, SandboxId, SandboxSpec,
};
use sbx_protocol::{CreateSandboxRequest, SandboxState};

use crate::{Bounds, Caller, Config, Error, Service};

/// Creates instantly; never finishes a destroy.
struct HungDestroy;

#[async_trait]
impl Backend for HungDestroy {
    fn kind(&self) -> &'static str {
        "hung"
    }
    async fn health(&self) -> Health {
        Health {
            healthy: true,
            detail: String::new(),
        }
    }
    fn has_template(&self, _: &str) -> bool {
        true
    }
    async fn create(&self, spec: &SandboxSpec) -> Result<Handle, BackendError> {
        Ok(Handle {
            backend: "hung".into(),
            data: serde_json::json!({ "id": spec.id.as_str() }),
        })
    }
    async fn inspect(&self, _: &Handle) -> Result<Observed, BackendError> {
        Ok(Observed::default())
    }
    async fn adopt(&self, _: &Handle) -> Result<(), BackendError> {
        Ok(())
    }
    fn capabilities(&self) -> Vec<&'static str> {
        Vec::new()
    }
    async fn list_owned(&self) -> Result<Vec<SandboxId>, BackendError> {
        Ok(Vec::new())
    }
    async fn destroy(&self, _: &SandboxId, _: Option<&Handle>) -> Result<(), BackendError> {
        std::future::pending().await
    }
    async fn exec(&self, _: &Handle, _: ExecSpec) -> Result<ExecSession, BackendError> {
        Err(BackendError::NotRunning)
    }
    async fn wait_exit(&self, _: &Handle) -> Result<(), BackendError> {
        std::future::pending().await
    }
}

fn service() -> Service {
    let defaults = sbx_config::Config::default();
    let config = Config {
        profiles: defaults.profiles,
        reaper: defaults.reaper,
        bounds: Bounds::for_host(4096, 2.0, 32768, 10_000, &sbx_config::Capacity::default()),
        limits: defaults.limits,
        audit: None,
        exec: defaults.exec,
    };
    let store = sbx_store::Store::open_in_memory().unwrap();
    Service::new(store, Arc::new(HungDestroy), config).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hung_destroy_cannot_hang_the_api() {
    let service = service();
    let caller = Caller::system();
    let sandbox = service
        .create(&caller, &CreateSandboxRequest::default())
        .await
        .unwrap();
    let destroying = {
        let service = service.clone();
        let caller = caller.clone();
        let id = sandbox.id.clone();
        tokio::spawn(async move { service.destroy(&caller, &id, "deleted").await })
    };
    // While the backend hangs, the rest of the API answers…
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = service.get(&caller, &sandbox.id).unwrap();
    assert_eq!(seen.state, SandboxState::Destroying);
    assert_eq!(service.list(&caller, &Default::default()).unwrap().len(), 1);
    // …and the destroy itself gives up at its deadline, leaving a record that says so.
    let result = destroying.await.unwrap();
    assert!(
        matches!(
            result,
            Err(Error::Timeout {
                operation: "destroy"
            })
        ),
        "{result:?}"
    );
    let after = service.get(&caller, &sandbox.id).unwrap();
    assert_eq!(after.state, SandboxState::Destroying);
}
