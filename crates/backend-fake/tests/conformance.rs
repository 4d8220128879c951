//! The backend contract, on the fake backend (no privilege, milliseconds).

use std::sync::Arc;

use async_trait::async_trait;
use sbx_backend::Backend;
use sbx_backend_fake::{Engine, FakeBackend};

struct Fake {
    engine: Arc<Engine>,
}

#[async_trait]
impl sbx_backend_conformance::Subject for Fake {
    async fn instance(&self) -> Arc<dyn Backend> {
        Arc::new(FakeBackend::on(self.engine.clone()))
    }

    async fn finish(&self) {
        assert!(
            self.engine.traces().is_empty(),
            "{:?}",
            self.engine.traces()
        );
    }
}

sbx_backend_conformance::suite!(Fake {
    engine: Engine::new()
});

/// Without terminals, the backend says so, and the suite's terminal test sees it.
mod without_terminals {
    use super::*;

    struct NoTerminals {
        engine: Arc<Engine>,
    }

    #[async_trait]
    impl sbx_backend_conformance::Subject for NoTerminals {
        async fn instance(&self) -> Arc<dyn Backend> {
            Arc::new(FakeBackend::on(self.engine.clone()).without_terminals())
        }
    }

    sbx_backend_conformance::suite!(NoTerminals {
        engine: Engine::new()
    });
}
