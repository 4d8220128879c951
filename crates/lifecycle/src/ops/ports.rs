//! Ports: the TCP services a running sandbox listens on, reached by the daemon from inside the
//! sandbox (its backend's [`sbx_backend::Ports`]: a connection made in the sandbox's own
//! network namespace) — the sandbox itself gets no network. Only its owner (or an admin) may:
//! another user's sandbox is "not found". A paused sandbox is resumed first when its profile
//! says `auto_resume`, else refused (409). A connection counts as the sandbox being used.
//!
//! Without a key: a port the sandbox was created with in `public_ports` is anyone's, and a
//! share link (signed by the API for the owner, with an expiry) reaches the one port it names;
//! either acts as the sandbox's owner for that connection alone ([`Service::port_owner`]).

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

    /// The owner of sandbox `id` (an id, not a name), for a request without a key to `port`:
    /// when the port is public, or `shared` (the request carries a valid share link for it).
    /// `None` when neither holds, or the sandbox does not exist or is destroyed.
    pub fn port_owner(&self, id: &str, port: u16, shared: bool) -> Option<Caller> {
        let row = self.inner.store.get_sandbox(id).ok()??;
        let state = crate::view::state_of(&row).ok()?;
        if state.is_destroyed() {
            return None;
        }
        let public = crate::view::StoredSpec::parse(&row)
            .ok()?
            .public_ports
            .contains(&port);
        if !(public || shared) {
            return None;
        }
        Some(Caller {
            user: row.owner?,
            admin: false,
            key_id: None,
            ip: None,
            request_id: None,
            session: None,
        })
    }

    /// The generation of sandbox `id`'s share links, which their tokens are signed with;
    /// `None` when the store cannot say (no link is then taken).
    pub fn share_epoch(&self, id: &str) -> Option<i64> {
        self.inner.store.share_epoch(id).ok()
    }

    /// Revokes every share link made so far to the ports of sandbox `id_or_name` (the
    /// caller's): links made after it work. Answers the sandbox's id.
    pub fn revoke_shares(&self, caller: &Caller, id_or_name: &str) -> Result<String, Error> {
        let row = self.resolve(caller, id_or_name)?;
        let epoch = self.inner.store.revoke_shares(&row.id)?;
        self.inner.access.audit(
            caller,
            "port.shares_revoked",
            serde_json::json!({ "sandbox_id": row.id, "generation": epoch }),
        );
        Ok(row.id)
    }

    /// A share link's terms: sandbox `id_or_name` (the caller's), `port`, for `ttl` (at most
    /// [`MAX_SHARE`]). Answers the sandbox's id, when the link expires (Unix ms) and the
    /// sandbox's share generation; the API signs them.
    pub fn share_port(
        &self,
        caller: &Caller,
        id_or_name: &str,
        port: u16,
        ttl: std::time::Duration,
    ) -> Result<(String, i64, i64), Error> {
        if port == 0 {
            return Err(Error::Invalid("port must be from 1 to 65535".into()));
        }
        if ttl.is_zero() || ttl > MAX_SHARE {
            return Err(Error::Invalid(format!(
                "ttl: a share link lasts from 1 s to {} s",
                MAX_SHARE.as_secs()
            )));
        }
        let row = self.resolve(caller, id_or_name)?;
        if crate::view::state_of(&row)?.is_destroyed() {
            return Err(Error::WrongState {
                id: row.id,
                state: crate::State::Destroyed,
                operation: "share its ports",
            });
        }
        let expires_at = crate::now_ms() + crate::view::millis(ttl);
        let epoch = self.inner.store.share_epoch(&row.id)?;
        self.inner.access.audit(
            caller,
            "port.shared",
            serde_json::json!({ "sandbox_id": row.id, "port": port, "expires_at": expires_at }),
        );
        Ok((row.id, expires_at, epoch))
    }
}

/// The longest a share link lasts.
pub const MAX_SHARE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
