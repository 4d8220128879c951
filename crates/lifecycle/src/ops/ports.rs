//! Ports: the TCP services a running sandbox listens on, reached by the daemon from inside the
//! sandbox (its backend's [`sbx_backend::Ports`]: a connection made in the sandbox's own
//! network namespace) — the sandbox itself gets no network. Only its owner (or an admin) may:
//! another user's sandbox is "not found". A paused sandbox is resumed first when its profile
//! says `auto_resume`, else refused (409). A connection counts as the sandbox being used.

use std::sync::Arc;

use sbx_backend::{Backend, Duplex, Handle};

use super::handle_of;
use crate::{deadline, Caller, Error, Service};

impl Service {
    /// The running sandbox whose ports a call reaches: its id, backend and handle.
    async fn ports_of(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<(String, Arc<dyn Backend>, Handle), Error> {
        let (row, lock) = self
            .usable_locked(caller, id_or_name, "reach its ports")
            .await?;
        drop(lock);
        let backend = self.backend_of(&row)?.clone();
        if backend.ports().is_none() {
            return Err(Error::Unsupported(format!(
                "the {} backend of sandbox {} cannot reach its ports",
                backend.kind(),
                row.id
            )));
        }
        let handle = handle_of(&row)?
            .ok_or_else(|| Error::internal(format!("running sandbox {} has no handle", row.id)))?;
        self.touch(&row.id);
        Ok((row.id, backend, handle))
    }

    /// A connection to TCP `port` (1–65535) on the sandbox's own loopback.
    pub async fn connect_port(
        &self,
        caller: &Caller,
        id_or_name: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, Error> {
        if port == 0 {
            return Err(Error::Invalid("port must be from 1 to 65535".into()));
        }
        let (id, backend, handle) = self.ports_of(caller, id_or_name).await?;
        let ports = backend
            .ports()
            .ok_or_else(|| Error::internal("ports vanished from a backend"))?;
        deadline::run_on(
            &id,
            deadline::FILES,
            "connect",
            ports.connect(&handle, port),
        )
        .await
    }

    /// The TCP ports something listens on inside the sandbox.
    pub async fn listening_ports(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<Vec<u16>, Error> {
        let (id, backend, handle) = self.ports_of(caller, id_or_name).await?;
        let ports = backend
            .ports()
            .ok_or_else(|| Error::internal("ports vanished from a backend"))?;
        deadline::run_on(&id, deadline::FILES, "ports", ports.listening(&handle)).await
    }
}
