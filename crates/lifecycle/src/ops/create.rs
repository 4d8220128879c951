//! `create`: validate against the profile, record (`creating`), build through the backend,
//! record (`running`, with its deadline), start watching. On failure the backend has rolled
//! back; the record says `failed`.

use crate::model::{NewSandbox, Sandbox};
use sbx_backend::{SandboxId, SandboxSpec};
use sbx_store::{EventRow, Lifetime, SandboxRow, StoreError};

use crate::transition::Change;

use crate::admission::DiskPromise;
use crate::view::{millis, StoredSpec};
use crate::{deadline, now_ms, reason, validate, view, Caller, Error, Service, State};

impl Service {
    /// The hibernated sandbox a fork is made from (the caller's), its shape made the fork's:
    /// the same profile, template, resources and environment (a checkpoint restores into the
    /// sandbox it came from). Its handle.
    fn fork_source(
        &self,
        caller: &Caller,
        source: &str,
        request: &mut crate::model::NewSandbox,
    ) -> Result<sbx_backend::Handle, Error> {
        if request.snapshot.is_some() {
            return Err(Error::Invalid(
                "fork_of and from_snapshot cannot go together: a fork's files are its source's"
                    .into(),
            ));
        }
        let row = self.resolve(caller, source)?;
        let state = view::effective_state(&row)?;
        if state != State::Hibernated {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "fork",
            });
        }
        let backend = self.backend_of(&row)?;
        if backend.hibernation().is_none() {
            return Err(Error::Unsupported(format!(
                "the {} backend of sandbox {} cannot fork sandboxes",
                backend.kind(),
                row.id
            )));
        }
        for (asked, theirs, what) in [
            (&request.profile, &row.profile, "profile"),
            (&request.template, &row.template, "template"),
        ] {
            if let Some(asked) = asked {
                if asked != theirs {
                    return Err(Error::Invalid(format!(
                        "fork_of: sandbox {} has {what} {theirs:?}, not {asked:?}",
                        row.id
                    )));
                }
            }
        }
        let asked = &request.resources;
        if asked.memory_mb.is_some()
            || asked.cpus.is_some()
            || asked.pids.is_some()
            || asked.disk_mb.is_some()
        {
            return Err(Error::Invalid(format!(
                "fork_of: a fork has the resources of sandbox {}; resources cannot be asked",
                row.id
            )));
        }
        let spec = StoredSpec::parse(&row)?;
        request.profile = Some(row.profile.clone());
        request.template = Some(row.template.clone());
        request.resources = crate::model::ResourceRequest {
            memory_mb: Some(spec.memory_mb),
            cpus: Some(spec.cpus),
            pids: Some(spec.pids),
            disk_mb: Some(spec.disk_mb),
        };
        if request.env.is_empty() {
            request.env = spec.env.clone();
        }
        super::handle_of(&row)?
            .ok_or_else(|| Error::internal(format!("live sandbox {} has no handle", row.id)))
    }

    /// Creates a sandbox owned by the caller's user, within the caller's limits.
    pub async fn create(&self, caller: &Caller, request: &NewSandbox) -> Result<Sandbox, Error> {
        let inner = &self.inner;
        let backends = &inner.backends;
        let snapshot = match &request.snapshot {
            None => None,
            Some(id) => Some(self.snapshot_row_for(caller, id)?),
        };
        let mut request = request.clone();
        // A fork holds its source's lock until it is built: a resume, a destroy or another
        // hibernation of the source cannot come between the check and the restore.
        let source_guard = match &request.fork_of {
            Some(source) => {
                let row = self.resolve(caller, source)?;
                Some(self.lock_for(&row.id).lock_owned().await)
            }
            None => None,
        };
        let fork = match request.fork_of.clone() {
            None => None,
            Some(source) => Some(self.fork_source(caller, &source, &mut request)?),
        };
        if let Some(snapshot) = &snapshot {
            // The snapshot's template unless another is asked for (which is refused).
            match &request.template {
                None => request.template = Some(snapshot.template.clone()),
                Some(template) if *template != snapshot.template => {
                    return Err(Error::Invalid(format!(
                        "snapshot {} was taken from a sandbox of template {:?}, not {template:?}",
                        snapshot.id, snapshot.template
                    )))
                }
                Some(_) => {}
            }
            request.snapshot = Some(snapshot.id.clone());
        }
        let request = &request;
        let mut params = validate::create(request, &inner.config.profiles, |kind| {
            backends.bounds(kind).cloned()
        })?;
        if let Some(snapshot) = &snapshot {
            if snapshot.backend != params.backend {
                return Err(Error::Invalid(format!(
                    "snapshot {} is stored by the {} backend; profile {:?} uses {}",
                    snapshot.id, snapshot.backend, params.profile, params.backend
                )));
            }
        }
        let backend = backends.get(&params.backend)?;
        let known = deadline::run(
            deadline::LIST,
            "template lookup",
            backend.has_template(&params.template),
        )
        .await?;
        if !known {
            return Err(Error::TemplateNotFound(params.template));
        }
        // An image's defaults go with the sandbox (its user, its command).
        if let Some(images) = self.inner.images.get() {
            if let Ok(Some(image)) = images.get(&params.template).await {
                params.image_user = image.user_ids;
                params.image_command = image.command();
            }
        }
        if let Some(source) = &fork {
            if source.backend != params.backend {
                return Err(Error::Invalid(format!(
                    "fork_of: the sandbox runs on the {} backend; profile {:?} now uses {}",
                    source.backend, params.profile, params.backend
                )));
            }
        }
        params.fork_of = fork;
        let (id, row, inserted, promise) = self.admit_and_record(caller, &params)?;
        let event = inserted?;
        self.publish(event);
        // From here the create runs to its end in a task of its own, whatever becomes of the
        // request: a client that hangs up mid-create must not leave a `creating` record and
        // half a sandbox behind, and a panic below (the runtime could not start a thread, say)
        // must end as a recorded failure with nothing left on the host.
        let service = self.clone();
        let task_caller = caller.clone();
        let task_id = id.clone();
        let task_backend = row.backend.clone();
        let built = tokio::spawn(async move {
            // Held until the fork is built, whatever becomes of the request.
            let _source_guard = source_guard;
            // The build runs in a task of its own, so a panic in it ends only that task; the
            // failure is then settled here, in this task, which outlives any caller.
            let build = {
                let service = service.clone();
                let (caller, id) = (task_caller.clone(), task_id.clone());
                tokio::spawn(async move { service.build(&caller, id, row, params).await })
            };
            let result = match build.await {
                Ok(result) => result,
                Err(panic) => {
                    tracing::error!(sandbox = %task_id, error = %panic, "create panicked");
                    let error = Error::internal(format!("create of {task_id} panicked: {panic}"));
                    service
                        .settle_failed_create(&task_caller, &task_id, &task_backend, &error)
                        .await;
                    Err(error)
                }
            };
            drop(promise);
            result
        })
        .await;
        built.unwrap_or_else(|e| Err(Error::internal(format!("create of {id} failed: {e}"))))
    }

    /// Builds the recorded sandbox through the backend and records the outcome.
    async fn build(
        &self,
        caller: &Caller,
        id: SandboxId,
        row: SandboxRow,
        params: validate::CreateParams,
    ) -> Result<Sandbox, Error> {
        let inner = &self.inner;
        let lock = self.lock_for(id.as_str());
        let _guard = lock.lock().await;

        let backend_spec = SandboxSpec {
            id: id.clone(),
            template: params.template.clone(),
            limits: params.limits(),
            snapshot: params.snapshot.clone(),
            fork_of: params.fork_of.clone(),
        };
        let backend = inner.backends.get(&row.backend)?;
        // A fork reads a whole checkpoint back: a restore's deadline.
        let limit = if backend_spec.fork_of.is_some() {
            deadline::HIBERNATE
        } else {
            deadline::CREATE
        };
        let built = deadline::run(limit, "create", backend.create(&backend_spec)).await;
        match built {
            Ok(handle) => {
                let handle_json = serde_json::to_string(&handle).expect("handle serialises");
                // The deadline counts from when the sandbox is usable.
                let started = now_ms();
                self.record(
                    Change::to(id.as_str(), State::Running, reason::CREATED)
                        .at(started)
                        .handle(&handle_json)
                        .lifetime(Lifetime {
                            started_at: started,
                            ttl_ms: row.ttl_ms,
                            expires_at: started + row.ttl_ms,
                        }),
                )?;
                self.touch(id.as_str());
                self.watch(id.clone(), handle);
                self.inner.reaper_wake.notify_one();
                tracing::info!(sandbox = %id, profile = %params.profile, template = %params.template, "sandbox created");
                self.inner.access.audit(
                    caller,
                    "sandbox.created",
                    serde_json::json!({
                        "sandbox_id": id.as_str(),
                        "profile": params.profile,
                        "template": params.template,
                        "memory_mb": params.resources.memory_mb,
                        "cpus": params.resources.cpus,
                        "pids": params.resources.pids,
                        "disk_mb": params.resources.disk_mb,
                    }),
                );
                let mut sandbox = view::sandbox(&self.reread(id.as_str())?)?;
                sandbox.warnings = params.warnings;
                Ok(sandbox)
            }
            Err(error) => {
                tracing::error!(sandbox = %id, error = %error.detail(), "create failed");
                self.settle_failed_create(caller, &id, &row.backend, &error)
                    .await;
                Err(error)
            }
        }
    }

    /// After a failed create: removes whatever the backend may still have made (it rolls back
    /// by itself, unless it was cut off by a deadline or a panic) and records `failed`.
    async fn settle_failed_create(
        &self,
        caller: &Caller,
        id: &SandboxId,
        backend: &str,
        error: &Error,
    ) {
        if matches!(error, Error::Timeout { .. } | Error::Internal(_)) {
            if let Ok(backend) = self.inner.backends.get(backend) {
                let _ =
                    deadline::run(deadline::DESTROY, "destroy", backend.destroy(id, None)).await;
            }
        }
        let why = match error {
            Error::TemplateNotFound(_)
            | Error::Invalid(_)
            | Error::AtCapacity { .. }
            | Error::InsufficientStorage(_) => error.to_string(),
            _ => "create failed".to_owned(),
        };
        let why = reason::with_detail(reason::FAILED, &why);
        let recorded = self.record(Change::to(id.as_str(), State::Failed, &why));
        if let Err(e) = recorded {
            tracing::error!(sandbox = %id, error = %e.detail(), "cannot record a failed create");
        }
        self.forget(id.as_str());
        self.inner.access.audit(
            caller,
            "sandbox.create_failed",
            serde_json::json!({ "sandbox_id": id.as_str(), "error": error.to_string() }),
        );
    }

    /// Admission: limits checked, id reserved, row recorded and the creation counted, all
    /// under one lock (see `limits`). The row exists before the sandbox is built: a crash from
    /// here on leaves a `creating` row that names what reconciliation must look for. (A
    /// backend may have prepared host traces for a reserved id already; unrecorded, they are
    /// orphans.)
    fn admit_and_record(
        &self,
        caller: &Caller,
        params: &validate::CreateParams,
    ) -> Result<
        (
            SandboxId,
            SandboxRow,
            Result<EventRow, StoreError>,
            DiskPromise,
        ),
        Error,
    > {
        let inner = &self.inner;
        let mut admission = inner.access.admission();
        self.admit_create(&mut admission, caller, params)?;
        // Not a template being removed (its removal checked for users under this lock).
        if inner
            .images_removing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&params.template)
        {
            return Err(Error::TemplateNotFound(params.template.clone()));
        }
        // Still there, under the lock the collection of deleted snapshots takes too.
        if let Some(snapshot) = &params.snapshot {
            let ready = inner
                .store
                .get_snapshot(snapshot)?
                .is_some_and(|row| row.state == "ready");
            if !ready {
                return Err(Error::SnapshotNotFound(snapshot.clone()));
            }
        }
        let id = SandboxId::generate();
        let now = now_ms();
        let spec = StoredSpec {
            memory_mb: params.resources.memory_mb,
            cpus: params.resources.cpus,
            pids: params.resources.pids,
            disk_mb: params.resources.disk_mb,
            env: params.env.clone(),
            ttl_max_ms: millis(params.ttl_max),
            idle_ms: params.idle.map(millis),
            idle_pauses: params.idle_action == sbx_config::IdleAction::Pause,
            pause_stops_clock: params.pause_stops_clock,
            auto_resume: params.auto_resume,
            snapshot: params.snapshot.clone(),
            image_user: params.image_user,
            image_command: params.image_command.clone(),
            public_ports: params.public_ports.clone(),
        };
        let row = SandboxRow {
            id: id.to_string(),
            name: params.name.clone(),
            state: State::Creating.as_str().into(),
            state_reason: Some(reason::CREATED.into()),
            backend: params.backend.clone(),
            template: params.template.clone(),
            spec: serde_json::to_string(&spec).expect("plain struct serialises"),
            metadata: serde_json::to_string(&params.metadata).expect("string map serialises"),
            handle: None,
            created_at: now,
            updated_at: now,
            destroyed_at: None,
            profile: params.profile.clone(),
            ttl_ms: millis(params.ttl),
            started_at: now,
            expires_at: now + millis(params.ttl),
            owner: Some(caller.user.clone()),
            paused_at: None,
            paused_remaining_ms: None,
        };
        let inserted = inner.store.insert_sandbox(&row);
        let promise = DiskPromise::new(
            self,
            &params.backend,
            if inserted.is_ok() {
                params.resources.disk_mb << 20
            } else {
                0
            },
        );
        if inserted.is_ok() {
            inner
                .access
                .count_create(&mut admission, caller, &params.profile);
        }
        Ok((id, row, inserted, promise))
    }
}
