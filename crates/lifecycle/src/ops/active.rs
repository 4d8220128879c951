//! The one active sandbox of a user. A switch saves the user's active sandbox's files as a
//! new fragment of its project first (when asked), then destroys that sandbox while it
//! creates a new one for the user (the project's profile, or the one asked for; its TTL),
//! restores a fragment's files under the project's root, and records the new one as the
//! user's active sandbox; it answers once the old one is gone. Switches of one user run one
//! at a time (a lock per user), so however many arrive together, one sandbox is active at the
//! end and every other one made meanwhile was destroyed by the switch after it. At most
//! [`MAX_QUEUED`] of one user's switches and ends are under way or waiting; more are refused
//! (429) before they act, and one that waits does so in its caller's request (a caller that
//! leaves stops waiting).
//!
//! The record comes first: the active record names the new sandbox before its files are
//! restored, so a crash mid-switch leaves a record whose sandbox reconciliation settles, and a
//! restore that fails destroys the sandbox and forgets the record before answering.
//!
//! A caller acts for itself; an admin acts for any user name (an application with an admin
//! key managing its own users), and the sandboxes it makes then belong to that user, while
//! projects are reached (and saved into) with the caller's own rights. Another user is "not
//! found".

use std::collections::BTreeMap;
use std::sync::Arc;

use sbx_store::ActiveRow;

use super::projects::{check_exclude, Need};
use crate::model::{Active, FragmentSource, NewSandbox, Switch};
use crate::{now_ms, reason, view, Caller, Error, Service, State};

/// Most switches and ends of one user's active sandbox under way or waiting at once: they run
/// one at a time, so more would only queue.
const MAX_QUEUED: usize = 32;
/// The metadata a switch marks the sandboxes it makes with: the project, the user.
const PROJECT_LABEL: &str = "sbx.project";
const USER_LABEL: &str = "sbx.active-user";
/// `restored` of a record whose files are being restored: a record still saying so at start
/// belongs to a switch a crash cut off.
const RESTORING: i64 = -1;

impl Service {
    /// The caller `caller` acts as for `user`'s active sandbox.
    fn acting_for(&self, caller: &Caller, user: &str) -> Result<Caller, Error> {
        if caller.user == user {
            return Ok(caller.clone());
        }
        if !caller.admin {
            return Err(Error::UserNotFound(format!("no user {user:?}")));
        }
        if !sbx_config::limits::valid_user(user) {
            // No such user can exist, let alone have an active sandbox.
            return Err(Error::UserNotFound(format!(
                "no user {user:?}: a user name is 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
            )));
        }
        Ok(Caller {
            user: user.to_owned(),
            admin: false,
            session: None,
            ..caller.clone()
        })
    }

    /// `user`'s lock, held by one switch or end at a time; refused once [`MAX_QUEUED`] of them
    /// are under way or waiting for it.
    fn user_lock(&self, user: &str) -> Result<Arc<tokio::sync::Mutex<()>>, Error> {
        let mut locks = self
            .inner
            .user_locks
            .lock()
            .expect("lock map is never poisoned");
        // Locks nobody holds or waits for go, so the map stays as small as the switches
        // under way.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        let lock = locks.entry(user.to_owned()).or_default().clone();
        // The map's reference, this one, and one per switch or end under way or waiting.
        if Arc::strong_count(&lock) >= MAX_QUEUED + 2 {
            return Err(Error::Limited(crate::Limited {
                code: "rate_limited",
                limit: "switches_per_user",
                message: format!(
                    "{MAX_QUEUED} switches or ends of user {user:?}'s active sandbox are under way or waiting"
                ),
                retry_after: std::time::Duration::from_secs(1),
            }));
        }
        Ok(lock)
    }

    fn active_of(&self, row: &ActiveRow, saved: Option<String>) -> Result<Active, Error> {
        let sandbox_row = self
            .inner
            .store
            .get_sandbox(&row.sandbox_id)?
            .ok_or_else(|| {
                Error::internal(format!("active sandbox {} has no record", row.sandbox_id))
            })?;
        let state = view::effective_state(&sandbox_row)?;
        let project_name = self
            .inner
            .store
            .get_project(&row.project_id)?
            .map(|p| p.name);
        Ok(Active {
            user: row.user.clone(),
            project_id: row.project_id.clone(),
            project_name,
            fragment_id: row.fragment_id.clone(),
            alive: alive(state),
            last_used_at: self.last_activity(&sandbox_row),
            sandbox: view::sandbox(&sandbox_row)?,
            port: row.port.and_then(|p| u16::try_from(p).ok()),
            restored_files: u64::try_from(row.restored).unwrap_or(0),
            created_at: row.created_at,
            saved_fragment: saved,
        })
    }

    /// Switches `user`'s active sandbox to a project's fragment.
    pub async fn switch(
        &self,
        caller: &Caller,
        user: &str,
        request: &Switch,
    ) -> Result<Active, Error> {
        let subject = self.acting_for(caller, user)?;
        // The project as the caller may see it: an admin switching a user reaches any.
        let (project, _) = self.project_for(caller, &request.project, Need::Read)?;
        // A fragment named is checked now; the latest is the one latest once the switches of
        // the user before this one are done (one of them may save a new one).
        let named = match &request.fragment {
            Some(fragment) => Some(self.fragment_row(&project, fragment)?),
            None => None,
        };
        let profile = request.profile.clone().or_else(|| project.profile.clone());
        if let Some(profile) = &profile {
            self.known_profile(profile)?;
        }
        check_exclude(&request.exclude)?;
        // The wait for the user's earlier switches is the request's own: a caller that leaves
        // while it waits leaves nothing behind. Once the lock is held, the switch runs to its
        // end whatever the caller does.
        let switching = self.user_lock(user)?.lock_owned().await;
        let (service, request, user) = (self.clone(), request.clone(), user.to_owned());
        let caller = caller.clone();
        self.to_completion("switch", async move {
            let _switching = switching;
            let mut saved = None;
            let old = service.inner.store.get_active(&user)?;
            if let (Some(old), true) = (&old, request.save_on_switch) {
                saved = service.save_active(&caller, old, &request.exclude).await?;
            }
            let fragment = match named {
                // Deleted while this switch waited: not restored as if empty.
                Some(fragment) => Some(
                    service
                        .inner
                        .store
                        .get_fragment(&fragment.id)?
                        .filter(|f| f.state == "ready")
                        .ok_or_else(|| Error::FragmentNotFound(fragment.id.clone()))?,
                ),
                None => service
                    .inner
                    .store
                    .fragments(Some(&project.id), "ready")?
                    .pop(),
            };
            // The old sandbox goes while the new one is made: both are the user's for a
            // moment, never both active (the record names the old one until it names the
            // new one). Every path below waits for the old one's end before answering.
            let ending = old.clone().map(|old| {
                let service = service.clone();
                tokio::spawn(async move { service.destroy_sandbox(&old.sandbox_id).await })
            });
            let ending = async move {
                match ending {
                    Some(task) => task
                        .await
                        .map_err(|e| Error::internal_from("ending the old sandbox failed", e))?,
                    None => Ok(false),
                }
            };
            tokio::pin!(ending);
            let mut ended = None;
            let mut labels = BTreeMap::new();
            labels.insert(PROJECT_LABEL.to_owned(), project.id.clone());
            labels.insert(USER_LABEL.to_owned(), user.clone());
            let new = NewSandbox {
                profile,
                labels,
                ..NewSandbox::default()
            };
            let mut created = service.create(&subject, &new).await;
            if matches!(created, Err(Error::Limited(_))) && old.is_some() {
                // The user's quota may count the old one: once it is gone, again.
                ended = Some((&mut ending).await);
                created = service.create(&subject, &new).await;
            }
            let sandbox = match created {
                Ok(sandbox) => sandbox,
                Err(error) => {
                    if ended.is_none() {
                        (&mut ending).await?;
                    }
                    service.inner.store.remove_active(&user)?;
                    return Err(error);
                }
            };
            let mut row = ActiveRow {
                user: user.clone(),
                project_id: project.id.clone(),
                fragment_id: fragment.as_ref().map(|f| f.id.clone()),
                sandbox_id: sandbox.id.clone(),
                port: project.port,
                restored: RESTORING,
                created_at: now_ms(),
            };
            service.inner.store.set_active(&row)?;
            let restored = match &fragment {
                Some(fragment) => {
                    let stream = service.fragment_stream(fragment);
                    service
                        .file_extract(&subject, &sandbox.id, &project.root, None, stream)
                        .await
                        .map(|_| fragment.files)
                }
                None => Ok(0),
            };
            let ended = match ended {
                Some(ended) => ended,
                None => (&mut ending).await,
            };
            let restored = match (restored, ended) {
                (Ok(restored), Ok(_)) => restored,
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(sandbox = %sandbox.id, error = %error.detail(), "a switch failed; its new sandbox goes");
                    service.end_active(&subject, &row).await?;
                    return Err(error);
                }
            };
            if let Some(old) = &old {
                service.inner.access.audit(
                    &subject,
                    "active.ended",
                    serde_json::json!({ "user": user, "sandbox_id": old.sandbox_id }),
                );
            }
            row.restored = restored;
            service.inner.store.set_active(&row)?;
            service.inner.access.audit(
                &subject,
                "active.switched",
                serde_json::json!({
                    "user": user,
                    "project_id": project.id,
                    "fragment_id": row.fragment_id,
                    "sandbox_id": sandbox.id,
                    "restored": row.restored,
                }),
            );
            service.active_of(&row, saved)
        })
        .await
    }

    /// Saves an active sandbox's project files as a new fragment, if it still runs and its
    /// project is there.
    async fn save_active(
        &self,
        caller: &Caller,
        old: &ActiveRow,
        exclude: &[String],
    ) -> Result<Option<String>, Error> {
        // A sandbox whose restore never finished holds no work worth a fragment.
        if old.restored == RESTORING {
            return Ok(None);
        }
        let Some(row) = self.inner.store.get_sandbox(&old.sandbox_id)? else {
            return Ok(None);
        };
        if !alive(view::effective_state(&row)?) {
            return Ok(None);
        }
        if self.inner.store.get_project(&old.project_id)?.is_none() {
            return Ok(None);
        }
        let fragment = self
            .fragment_create(
                caller,
                &old.project_id,
                FragmentSource::Sandbox {
                    sandbox: old.sandbox_id.clone(),
                    exclude: exclude.to_vec(),
                },
                Some("saved on switch".into()),
            )
            .await?;
        Ok(Some(fragment.id))
    }

    /// Destroys a sandbox that was (or is) a user's active one, unless it is gone already;
    /// whether it was still alive.
    async fn destroy_sandbox(&self, id: &str) -> Result<bool, Error> {
        let state = self
            .inner
            .store
            .get_sandbox(id)?
            .as_ref()
            .map(view::effective_state)
            .transpose()?;
        if state.is_some_and(|s| !s.is_destroyed()) {
            match self.destroy(&Caller::system(), id, reason::SWITCHED).await {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(state.is_some_and(alive))
    }

    /// Destroys an active sandbox (if it is not gone already) and forgets the record.
    async fn end_active(&self, subject: &Caller, old: &ActiveRow) -> Result<bool, Error> {
        let live = self.destroy_sandbox(&old.sandbox_id).await?;
        self.inner.store.remove_active(&old.user)?;
        self.inner.access.audit(
            subject,
            "active.ended",
            serde_json::json!({ "user": old.user, "sandbox_id": old.sandbox_id }),
        );
        Ok(live)
    }

    /// At start, what switches a crash cut off left: a record whose files were still being
    /// restored is ended (its sandbox destroyed, the record forgotten: the user's next switch
    /// makes a new one), and a sandbox a switch made that no record names (made before its
    /// record was written, or being replaced) is destroyed.
    pub(crate) async fn settle_actives(&self) {
        if let Err(error) = self.try_settle_actives().await {
            tracing::warn!(error = %error.detail(), "cannot settle the active sandboxes a crash left");
        }
    }

    /// One user's or sandbox's failure is logged and the others are settled still.
    async fn try_settle_actives(&self) -> Result<(), Error> {
        for row in self.inner.store.actives(None)? {
            if row.restored == RESTORING {
                tracing::warn!(user = %row.user, sandbox = %row.sandbox_id, "ending an active sandbox whose restore a crash cut off");
                if let Err(error) = self.end_active(&Caller::system(), &row).await {
                    tracing::warn!(user = %row.user, error = %error.detail(), "cannot end it");
                }
            }
        }
        for row in self
            .inner
            .store
            .list_sandboxes(&State::names_where(State::may_have_host_traces))?
        {
            let metadata: BTreeMap<String, String> =
                serde_json::from_str(&row.metadata).unwrap_or_default();
            let Some(user) = metadata.get(USER_LABEL) else {
                continue;
            };
            let named = self
                .inner
                .store
                .get_active(user)?
                .is_some_and(|active| active.sandbox_id == row.id);
            if !named {
                tracing::warn!(user = %user, sandbox = %row.id, "destroying a sandbox a cut-off switch made or was replacing");
                if let Err(error) = self.destroy_sandbox(&row.id).await {
                    tracing::warn!(sandbox = %row.id, error = %error.detail(), "cannot destroy it");
                }
            }
        }
        Ok(())
    }

    /// `user`'s active sandbox.
    pub fn active(&self, caller: &Caller, user: &str) -> Result<Active, Error> {
        let subject = self.acting_for(caller, user)?;
        let row =
            self.inner.store.get_active(&subject.user)?.ok_or_else(|| {
                Error::UserNotFound(format!("user {user:?} has no active sandbox"))
            })?;
        self.active_of(&row, None)
    }

    /// Ends `user`'s active sandbox: destroyed, and the record forgotten. Answers the
    /// sandbox's id and whether it was still alive.
    pub async fn deactivate(&self, caller: &Caller, user: &str) -> Result<(String, bool), Error> {
        let subject = self.acting_for(caller, user)?;
        let (service, user) = (self.clone(), user.to_owned());
        let switching = self.user_lock(&user)?.lock_owned().await;
        self.to_completion("deactivate", async move {
            let _switching = switching;
            let row = service.inner.store.get_active(&user)?.ok_or_else(|| {
                Error::UserNotFound(format!("user {user:?} has no active sandbox"))
            })?;
            let killed = service.end_active(&subject, &row).await?;
            Ok((row.sandbox_id, killed))
        })
        .await
    }

    /// Users' active sandboxes: the caller's, or every user's for an admin.
    pub fn actives(&self, caller: &Caller) -> Result<Vec<Active>, Error> {
        self.inner
            .store
            .actives(caller.scope())?
            .iter()
            .map(|row| self.active_of(row, None))
            .collect()
    }
}

/// Whether a sandbox in `state` still runs (or can, once resumed).
fn alive(state: State) -> bool {
    state == State::Running || state.is_suspended()
}
