//! Projects and their fragments. A project belongs to the user who made it, who may share it
//! with other users read-only (`read`: list, inspect, download, switch to it) or read-write
//! (`write`: also make and delete fragments); admins may do anything. A project the caller
//! may not see is "not found", like one that does not exist.
//!
//! A fragment is an immutable version of a project's files, made from a map of paths, a tar
//! stream or a running sandbox's project directory; its content is kept as blobs shared with
//! every other fragment holding the same bytes (`crate::fragments`). Its record is written
//! first (`writing`) and made `ready` in one transaction once every blob is in; a failed or
//! abandoned write gives its blobs back at once, and one a crash interrupted is collected at
//! the next start ([`Service::collect_fragments`]). Bounds: `[projects]` in the
//! configuration (projects per user, fragments per project, files and bytes per fragment,
//! bytes per user, and two fragments written at once per user).

use std::sync::Arc;
use std::time::Duration;

use sbx_backend::SandboxId;
use sbx_store::{FragmentRow, ProjectRow};

use crate::fragments::{self, Bounds, Ingest};
use crate::model::{Fragment, FragmentEntry, FragmentSource, NewProject, Project};
use crate::{now_ms, Caller, Error, Service};

const WRITING: &str = "writing";
const READY: &str = "ready";
/// Fragments one user may have being written at once.
const WRITES_AT_ONCE: u64 = 2;
/// Longest a fragment's message may be.
const MAX_MESSAGE: usize = 1024;

/// What an operation needs of a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Need {
    Read,
    Write,
    Own,
}

fn new_id(prefix: &str) -> String {
    let id = SandboxId::generate();
    let body = id.as_str().split_once('-').map_or(id.as_str(), |(_, b)| b);
    format!("{prefix}-{body}")
}

fn is_id(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|body| {
            !body.is_empty()
                && body.len() <= 40
                && body
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// A project's name: 1-64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit
/// (`sbx switch NAME@FRAGMENT` needs no quoting).
fn validate_name(name: &str) -> Result<(), Error> {
    let valid = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !is_id(name, "proj");
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "name: {name:?} is not a project name (1-64 of letters, digits, '.', '_', '-', starting with a letter or digit)"
        )))
    }
}

/// A project's root: an absolute path without `..`, normalized.
fn validate_root(root: &str) -> Result<String, Error> {
    let parts: Vec<&str> = root
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if !root.starts_with('/')
        || root.len() > 1024
        || root.contains('\0')
        || parts.contains(&"..")
        || parts.is_empty()
    {
        return Err(Error::Invalid(format!(
            "root: {root:?} must be an absolute directory below / without '..' (at most 1024 bytes)"
        )));
    }
    Ok(format!("/{}", parts.join("/")))
}

pub(crate) fn fragment_of(row: &FragmentRow, latest: Option<&str>) -> Fragment {
    Fragment {
        id: row.id.clone(),
        project_id: row.project_id.clone(),
        created_by: row.created_by.clone(),
        source: row.source.clone(),
        message: row.message.clone(),
        files: u64::try_from(row.files).unwrap_or(0),
        bytes: u64::try_from(row.bytes).unwrap_or(0),
        created_at: row.created_at,
        latest: latest == Some(row.id.as_str()),
    }
}

impl Service {
    /// The project `id_or_name` names for `caller` (an id, or the name of one of the caller's
    /// own), if the caller has `need` of it; else "not found" (or 403 when the caller may see
    /// it but not change it).
    pub(crate) fn project_for(
        &self,
        caller: &Caller,
        id_or_name: &str,
        need: Need,
    ) -> Result<(ProjectRow, &'static str), Error> {
        let store = &self.inner.store;
        let row = if is_id(id_or_name, "proj") {
            store.get_project(id_or_name)?
        } else if let Some((owner, name)) = id_or_name.split_once('/') {
            store.find_project(owner, name)?
        } else {
            store.find_project(&caller.user, id_or_name)?
        };
        let not_found = || Error::ProjectNotFound(id_or_name.to_owned());
        let row = row.ok_or_else(not_found)?;
        let access = if caller.admin || row.owner == caller.user {
            "owner"
        } else {
            match store
                .shares(&row.id)?
                .into_iter()
                .find(|(user, _)| *user == caller.user)
            {
                Some((_, access)) if access == "write" => "write",
                Some(_) => "read",
                None => return Err(not_found()),
            }
        };
        let has = match access {
            "owner" => Need::Own,
            "write" => Need::Write,
            _ => Need::Read,
        };
        if has < need {
            return Err(Error::ReadOnly(format!(
                "project {} is shared with {} {access}-only",
                row.name, caller.user
            )));
        }
        Ok((row, access))
    }

    fn project_of(&self, row: ProjectRow, access: &'static str) -> Result<Project, Error> {
        let fragments = self.inner.store.fragments(Some(&row.id), READY)?;
        let shares = if access == "owner" {
            self.inner.store.shares(&row.id)?
        } else {
            Vec::new()
        };
        Ok(Project {
            port: row.port.and_then(|p| u16::try_from(p).ok()),
            fragments: fragments.len() as u64,
            latest_fragment: fragments.last().map(|f| f.id.clone()),
            id: row.id,
            owner: row.owner,
            name: row.name,
            root: row.root,
            profile: row.profile,
            created_at: row.created_at,
            access,
            shares,
        })
    }

    pub fn project_create(&self, caller: &Caller, request: &NewProject) -> Result<Project, Error> {
        validate_name(&request.name)?;
        let root = validate_root(request.root.as_deref().unwrap_or("/home/user"))?;
        if request.port == Some(0) {
            return Err(Error::Invalid("port: must be 1-65535".into()));
        }
        if let Some(profile) = &request.profile {
            self.known_profile(profile)?;
        }
        let most = self.inner.config.projects.max_per_user;
        if self.inner.store.count_projects(&caller.user)? >= u64::from(most) {
            return Err(crate::access::quota_exceeded(
                "projects.max_per_user",
                format!(
                    "{} owns {most} projects already: delete one first",
                    caller.user
                ),
                Duration::from_secs(60),
            ));
        }
        let row = ProjectRow {
            id: new_id("proj"),
            owner: caller.user.clone(),
            name: request.name.clone(),
            root,
            port: request.port.map(i64::from),
            profile: request.profile.clone(),
            created_at: now_ms(),
        };
        self.inner.store.insert_project(&row)?;
        self.inner.access.audit(
            caller,
            "project.created",
            serde_json::json!({ "project_id": row.id, "name": row.name }),
        );
        self.project_of(row, "owner")
    }

    pub(crate) fn known_profile(&self, profile: &str) -> Result<(), Error> {
        if self.inner.config.profiles.contains_key(profile) {
            return Ok(());
        }
        Err(Error::ProfileNotFound(format!(
            "profile {profile:?} does not exist (profiles: {})",
            self.inner
                .config
                .profiles
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Projects the caller owns or was given (an admin's: all), oldest first.
    pub fn projects(&self, caller: &Caller) -> Result<Vec<Project>, Error> {
        let rows = self.inner.store.projects_of(caller.scope())?;
        rows.into_iter()
            .map(|row| {
                let (row, access) = self.project_for(caller, &row.id, Need::Read)?;
                self.project_of(row, access)
            })
            .collect()
    }

    /// Whether `caller` may add fragments to the project: checked before an upload's body is
    /// read, so that a body for a project the caller cannot write is refused as such.
    pub fn project_writable(&self, caller: &Caller, id_or_name: &str) -> Result<(), Error> {
        self.project_for(caller, id_or_name, Need::Write)
            .map(|_| ())
    }

    pub fn project(&self, caller: &Caller, id_or_name: &str) -> Result<Project, Error> {
        let (row, access) = self.project_for(caller, id_or_name, Need::Read)?;
        self.project_of(row, access)
    }

    /// Deletes a project and its fragments (refused while one of them is being written). A
    /// user whose active sandbox is of it keeps the sandbox; the project is gone from its record.
    pub async fn project_delete(&self, caller: &Caller, id_or_name: &str) -> Result<(), Error> {
        let (row, _) = self.project_for(caller, id_or_name, Need::Own)?;
        {
            // Under the admission lock: no write starts between the check and the removal.
            let _held = self
                .inner
                .fragment_writes
                .lock()
                .expect("write map is never poisoned");
            if !self
                .inner
                .store
                .fragments(Some(&row.id), WRITING)?
                .is_empty()
            {
                return Err(Error::Conflict(format!(
                    "a fragment of project {} is being written: try again when it is done",
                    row.name
                )));
            }
            self.inner.store.remove_project(&row.id)?;
        }
        let store = self.inner.store.clone();
        let id = row.id.clone();
        blocking(move || {
            for fragment in store.fragments(Some(&id), READY)? {
                store.remove_fragment(&fragment.id)?;
            }
            Ok(())
        })
        .await?;
        self.inner.access.audit(
            caller,
            "project.deleted",
            serde_json::json!({ "project_id": row.id, "name": row.name }),
        );
        Ok(())
    }

    /// Gives `user` `access` (`read`, `write`) to a project, or takes it (`None`).
    pub fn project_share(
        &self,
        caller: &Caller,
        id_or_name: &str,
        user: &str,
        access: Option<&str>,
    ) -> Result<Project, Error> {
        let (row, _) = self.project_for(caller, id_or_name, Need::Own)?;
        if !sbx_config::limits::valid_user(user) || user == row.owner {
            return Err(Error::Invalid(format!(
                "user: {user:?} is not a user name other than the project's owner"
            )));
        }
        if let Some(access) = access {
            if access != "read" && access != "write" {
                return Err(Error::Invalid(format!(
                    "access: {access:?} must be \"read\" or \"write\""
                )));
            }
            if self.inner.store.shares(&row.id)?.len() >= 100 {
                return Err(Error::OverLimit(
                    "a project is shared with at most 100 users".into(),
                ));
            }
        }
        self.inner.store.set_share(&row.id, user, access)?;
        self.inner.access.audit(
            caller,
            "project.shared",
            serde_json::json!({ "project_id": row.id, "user": user, "access": access }),
        );
        self.project_of(row, "owner")
    }

    /// A ready fragment of a project: by id, or `latest`.
    pub(crate) fn fragment_row(
        &self,
        project: &ProjectRow,
        fragment: &str,
    ) -> Result<FragmentRow, Error> {
        let not_found = || Error::FragmentNotFound(fragment.to_owned());
        if fragment == "latest" {
            return self
                .inner
                .store
                .fragments(Some(&project.id), READY)?
                .pop()
                .ok_or_else(not_found);
        }
        if !is_id(fragment, "frag") {
            return Err(not_found());
        }
        self.inner
            .store
            .get_fragment(fragment)?
            .filter(|f| f.project_id == project.id && f.state == READY)
            .ok_or_else(not_found)
    }

    /// Makes a fragment of a project from `source`.
    pub async fn fragment_create(
        &self,
        caller: &Caller,
        project: &str,
        source: FragmentSource,
        message: Option<String>,
    ) -> Result<Fragment, Error> {
        let FragmentSource::Snapshot { snapshot, exclude } = source else {
            return self
                .fragment_from(caller, project, source, message, None)
                .await;
        };
        // A snapshot's files are read from a sandbox of the caller's made from it (its
        // profile's), which goes as soon as they are read, whatever happened: the whole runs
        // to its end even when the caller leaves, so that the sandbox never outlives it.
        self.project_for(caller, project, Need::Write)?;
        check_exclude(&exclude)?;
        let row = self.snapshot_row_for(caller, &snapshot)?;
        let (service, caller, project) = (self.clone(), caller.clone(), project.to_owned());
        self.to_completion("fragment from a snapshot", async move {
            let reader = service
                .create(
                    &caller,
                    &crate::model::NewSandbox {
                        profile: Some(row.profile.clone()),
                        snapshot: Some(row.id.clone()),
                        ..crate::model::NewSandbox::default()
                    },
                )
                .await?;
            let made = service
                .fragment_from(
                    &caller,
                    &project,
                    FragmentSource::Sandbox {
                        sandbox: reader.id.clone(),
                        exclude,
                    },
                    message,
                    Some(format!("snapshot:{}", row.id)),
                )
                .await;
            if let Err(e) = service
                .destroy(&Caller::system(), &reader.id, crate::reason::DELETED)
                .await
            {
                tracing::warn!(sandbox = %reader.id, error = %e.detail(), "cannot destroy the sandbox a snapshot was read from");
            }
            made
        })
        .await
    }

    /// [`Service::fragment_create`] from anything but a snapshot, its source recorded as
    /// `label` when given.
    async fn fragment_from(
        &self,
        caller: &Caller,
        project: &str,
        source: FragmentSource,
        message: Option<String>,
        label: Option<String>,
    ) -> Result<Fragment, Error> {
        let (project, _) = self.project_for(caller, project, Need::Write)?;
        if message
            .as_ref()
            .is_some_and(|m| m.len() > MAX_MESSAGE || m.contains('\0'))
        {
            return Err(Error::Invalid(format!(
                "message: at most {MAX_MESSAGE} bytes without NUL"
            )));
        }
        let (kind, exclude) = match &source {
            FragmentSource::Files(_) => ("files".to_owned(), Vec::new()),
            FragmentSource::Tar(_) => ("tar".to_owned(), Vec::new()),
            FragmentSource::Sandbox { sandbox, exclude }
            | FragmentSource::Snapshot {
                snapshot: sandbox,
                exclude,
            } => (format!("sandbox:{sandbox}"), exclude.clone()),
        };
        let kind = label.unwrap_or(kind);
        check_exclude(&exclude)?;
        // The sandbox's archive is opened before the fragment is admitted (that checks the
        // caller's right to the sandbox and that it runs).
        let (stream, strip) = match source {
            FragmentSource::Sandbox { sandbox, .. } => {
                let stream = self
                    .file_archive(caller, &sandbox, &project.root, None)
                    .await?;
                (Some(stream), 1)
            }
            FragmentSource::Tar(stream) => (Some(stream), 0),
            FragmentSource::Snapshot { .. } => {
                return Err(Error::internal("a snapshot's files come through a sandbox"))
            }
            FragmentSource::Files(files) => {
                let (row, slot) = self.admit_fragment(caller, &project, &kind, message)?;
                let (store, id, bounds) = (self.inner.store.clone(), row.id.clone(), slot.bounds);
                let fragment = blocking(move || {
                    let _slot = slot;
                    written(
                        &store,
                        &id,
                        |ingest| {
                            for file in files {
                                let Some(path) = ingest.path(&file.path, 0)? else {
                                    return Err(Error::Invalid(format!(
                                        "files: {:?} is not a file's path",
                                        file.path
                                    )));
                                };
                                let mode = file.mode.unwrap_or(0o644);
                                ingest.file(path, mode, &mut &file.content[..])?;
                            }
                            Ok(())
                        },
                        bounds,
                        Vec::new(),
                    )
                })
                .await?;
                return self.fragment_made(caller, &project, fragment);
            }
        };
        let stream = stream.expect("a stream for every other source");
        let (row, slot) = self.admit_fragment(caller, &project, &kind, message)?;
        let (store, id, bounds) = (self.inner.store.clone(), row.id.clone(), slot.bounds);
        let fragment = blocking(move || {
            let _slot = slot;
            let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(
                idle_bounded(stream),
            ));
            written(
                &store,
                &id,
                |ingest| ingest.tar(reader, strip),
                bounds,
                exclude,
            )
        })
        .await?;
        self.fragment_made(caller, &project, fragment)
    }

    /// Admits one more fragment of `project` and records it (`writing`), atomically with the
    /// checks: fragments per project, writes at once per owner, and the owner's room, of which
    /// this write holds a share (up to a fragment's size) until it ends.
    fn admit_fragment(
        &self,
        caller: &Caller,
        project: &ProjectRow,
        source: &str,
        message: Option<String>,
    ) -> Result<(FragmentRow, WriteSlot), Error> {
        let limits = self.inner.config.projects;
        let store = &self.inner.store;
        let writes = self.inner.fragment_writes.clone();
        let mut held = writes.lock().expect("write map is never poisoned");
        // The project may have gone while the caller waited (a delete holds this lock).
        if store.get_project(&project.id)?.is_none() {
            return Err(Error::ProjectNotFound(project.name.clone()));
        }
        let kept = store.fragments(Some(&project.id), READY)?.len()
            + store.fragments(Some(&project.id), WRITING)?.len();
        if kept as u64 >= u64::from(limits.max_fragments_per_project) {
            return Err(crate::access::quota_exceeded(
                "projects.max_fragments_per_project",
                format!(
                    "project {} keeps {kept} fragments already: delete old ones first",
                    project.name
                ),
                Duration::from_secs(60),
            ));
        }
        // Writes at once are the writer's (a user a project is shared with cannot take its
        // owner's); the room they hold is the owner's.
        let writing = held.get(&caller.user).map_or(0, |(writing, _)| *writing);
        let reserved = held
            .get(&project.owner)
            .map_or(0, |(_, reserved)| *reserved);
        if writing >= WRITES_AT_ONCE {
            return Err(crate::access::quota_exceeded(
                "projects.writes_at_once",
                format!("{} writes {writing} fragments already", caller.user),
                Duration::from_secs(5),
            ));
        }
        let used = store.fragment_bytes(&project.owner)?;
        let room = limits
            .max_bytes_per_user
            .saturating_sub(used)
            .saturating_sub(reserved);
        if room == 0 {
            return Err(crate::access::quota_exceeded(
                "projects.max_bytes_per_user",
                format!(
                    "{}'s fragments hold {used} bytes and writes under way hold {reserved} more, the most allowed: delete old fragments first, or wait for the writes",
                    project.owner
                ),
                Duration::from_secs(60),
            ));
        }
        let share = room.min(limits.max_fragment_bytes);
        let row = self.fragment_record(caller, project, source, message)?;
        held.entry(caller.user.clone()).or_default().0 += 1;
        held.entry(project.owner.clone()).or_default().1 += share;
        drop(held);
        let slot = WriteSlot {
            writes,
            writer: caller.user.clone(),
            owner: project.owner.clone(),
            share,
            bounds: Bounds {
                max_files: u64::from(limits.max_fragment_files),
                max_bytes: limits.max_fragment_bytes,
                owner_room: share,
            },
        };
        Ok((row, slot))
    }

    fn fragment_record(
        &self,
        caller: &Caller,
        project: &ProjectRow,
        source: &str,
        message: Option<String>,
    ) -> Result<FragmentRow, Error> {
        let row = FragmentRow {
            id: new_id("frag"),
            project_id: project.id.clone(),
            owner: project.owner.clone(),
            state: WRITING.into(),
            created_by: caller.user.clone(),
            source: source.to_owned(),
            message,
            files: 0,
            bytes: 0,
            created_at: now_ms(),
        };
        self.inner.store.insert_fragment(&row)?;
        Ok(row)
    }

    fn fragment_made(
        &self,
        caller: &Caller,
        project: &ProjectRow,
        row: FragmentRow,
    ) -> Result<Fragment, Error> {
        self.inner.access.audit(
            caller,
            "fragment.created",
            serde_json::json!({
                "project_id": project.id,
                "fragment_id": row.id,
                "source": row.source,
                "files": row.files,
                "bytes": row.bytes,
            }),
        );
        Ok(fragment_of(&row, Some(&row.id)))
    }

    /// A project's fragments, oldest first.
    pub fn fragments(&self, caller: &Caller, project: &str) -> Result<Vec<Fragment>, Error> {
        let (project, _) = self.project_for(caller, project, Need::Read)?;
        let rows = self.inner.store.fragments(Some(&project.id), READY)?;
        let latest = rows.last().map(|r| r.id.clone());
        Ok(rows
            .iter()
            .map(|r| fragment_of(r, latest.as_deref()))
            .collect())
    }

    /// A fragment and its entries, by path (read on a blocking thread: up to
    /// `projects.max_fragment_files` of them).
    pub async fn fragment(
        &self,
        caller: &Caller,
        project: &str,
        fragment: &str,
    ) -> Result<(Fragment, Vec<FragmentEntry>), Error> {
        let (project, _) = self.project_for(caller, project, Need::Read)?;
        let row = self.fragment_row(&project, fragment)?;
        let latest = self.inner.store.fragments(Some(&project.id), READY)?.pop();
        let store = self.inner.store.clone();
        let id = row.id.clone();
        let entries = blocking(move || Ok(store.fragment_entries(&id)?))
            .await?
            .into_iter()
            .map(|e| FragmentEntry {
                path: e.path,
                kind: e.kind,
                mode: u32::try_from(e.mode).unwrap_or(0),
                size: u64::try_from(e.size).unwrap_or(0),
                target: e.target,
            })
            .collect();
        Ok((fragment_of(&row, latest.map(|l| l.id).as_deref()), entries))
    }

    pub async fn fragment_delete(
        &self,
        caller: &Caller,
        project: &str,
        fragment: &str,
    ) -> Result<(), Error> {
        let (project, _) = self.project_for(caller, project, Need::Write)?;
        let row = self.fragment_row(&project, fragment)?;
        let store = self.inner.store.clone();
        let id = row.id.clone();
        blocking(move || Ok(store.remove_fragment(&id)?)).await?;
        self.inner.access.audit(
            caller,
            "fragment.deleted",
            serde_json::json!({ "project_id": project.id, "fragment_id": row.id }),
        );
        Ok(())
    }

    /// A fragment's files as a tar stream.
    pub fn fragment_archive(
        &self,
        caller: &Caller,
        project: &str,
        fragment: &str,
    ) -> Result<crate::ByteStream, Error> {
        let (project, _) = self.project_for(caller, project, Need::Read)?;
        let row = self.fragment_row(&project, fragment)?;
        let slot = ReadSlot::take(&self.inner.fragment_reads, &caller.user)?;
        Ok(self.stream_fragment(&row, Some(slot)))
    }

    /// A fragment's files as a tar stream (made on a blocking thread, a blob at a time).
    pub(crate) fn fragment_stream(&self, row: &FragmentRow) -> crate::ByteStream {
        self.stream_fragment(row, None)
    }

    /// The stream, holding `slot` (a user's download) until it ends. Its thread gives up on a
    /// reader that takes no piece for a minute.
    fn stream_fragment(&self, row: &FragmentRow, slot: Option<ReadSlot>) -> crate::ByteStream {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let store = self.inner.store.clone();
        let (id, mtime) = (row.id.clone(), (row.created_at / 1000).max(0) as u64);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let entries = match store.fragment_entries(&id) {
                Ok(entries) => entries,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                    return;
                }
            };
            if let Err(e) = fragments::emit(&store, &entries, mtime, tx.clone()) {
                match e.kind() {
                    // The reader went, or was too slow: nobody to tell.
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::TimedOut => {}
                    _ => {
                        tracing::warn!(fragment = %id, error = %e, "cannot read a fragment");
                        // The reader must see the stream fail, not end as if whole; it gets
                        // as long to take the error as it has for a piece.
                        let _ = fragments::send_within_deadline(&tx, Err(e));
                    }
                }
            }
        });
        Box::pin(tokio_stream_of(rx))
    }

    /// Gives back what fragments a crash left half-written took, and the fragments of a
    /// project whose removal was cut off after the project went.
    pub fn collect_fragments(&self) -> Result<(), Error> {
        for row in self.inner.store.fragments(None, WRITING)? {
            tracing::info!(fragment = %row.id, "removing a fragment a crash left half-written");
            self.inner.store.remove_fragment(&row.id)?;
        }
        for row in self.inner.store.orphan_fragments()? {
            tracing::info!(fragment = %row.id, project = %row.project_id, "removing a fragment of a removed project");
            self.inner.store.remove_fragment(&row.id)?;
        }
        Ok(())
    }
}

/// Downloads of fragments' archives under way, per user.
pub(crate) type Reads = std::sync::Mutex<std::collections::HashMap<String, usize>>;

/// Most downloads of fragments' archives one user has under way at once (each holds a
/// blocking thread while it streams).
const READS_AT_ONCE: usize = 4;

/// One user's download of a fragment's archive, given back when its stream ends.
struct ReadSlot {
    reads: Arc<Reads>,
    user: String,
}

impl ReadSlot {
    fn take(reads: &Arc<Reads>, user: &str) -> Result<ReadSlot, Error> {
        let mut held = reads.lock().expect("read map is never poisoned");
        let count = held.entry(user.to_owned()).or_default();
        if *count >= READS_AT_ONCE {
            return Err(Error::Limited(crate::Limited {
                code: "rate_limited",
                limit: "fragment_downloads_at_once",
                message: format!("{user} downloads {READS_AT_ONCE} fragments already"),
                retry_after: Duration::from_secs(5),
            }));
        }
        *count += 1;
        Ok(ReadSlot {
            reads: reads.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        let mut held = self.reads.lock().expect("read map is never poisoned");
        if let Some(count) = held.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

/// Fragments being written, per user: how many that user writes, and the bytes of that
/// user's room (as an owner) the writes into their projects hold.
pub(crate) type Writes = std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>;

/// One fragment's write: its place among its writer's writes and its share of the owner's
/// room, given back when it ends (however it ends).
struct WriteSlot {
    writes: Arc<Writes>,
    writer: String,
    owner: String,
    share: u64,
    bounds: Bounds,
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        let mut held = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((count, _)) = held.get_mut(&self.writer) {
            *count = count.saturating_sub(1);
        }
        if let Some((_, reserved)) = held.get_mut(&self.owner) {
            *reserved = reserved.saturating_sub(self.share);
        }
        held.retain(|_, held| *held != (0, 0));
    }
}

/// Longest a tar stream may go without a byte before its fragment is given up, and longest
/// it may last.
const IDLE: Duration = Duration::from_secs(60);
const WRITE_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// `stream`, failing once it stays silent for [`IDLE`] or lasts [`WRITE_DEADLINE`]: a client
/// that stops sending, or trickles, does not hold a write's place (and its share of the
/// owner's room) for ever.
fn idle_bounded(stream: crate::ByteStream) -> crate::ByteStream {
    use futures::StreamExt as _;
    let end = tokio::time::Instant::now() + WRITE_DEADLINE;
    Box::pin(futures::stream::unfold(
        Some(stream),
        move |stream| async move {
            let mut stream = stream?;
            let wait = IDLE.min(end.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, stream.next()).await {
                Ok(Some(item)) => Some((item, Some(stream))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no data for {} s, or {} min in all",
                            IDLE.as_secs(),
                            WRITE_DEADLINE.as_secs() / 60
                        ),
                    )),
                    None,
                )),
            }
        },
    ))
}

/// Runs `work` on a blocking thread; it runs to its end even if the caller goes away.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal_from("a blocking task failed", e))?
}

/// Writes the fragment `id` with `fill`, then makes it ready; on any failure removes it (and
/// what it took) before answering.
fn written(
    store: &Arc<sbx_store::Store>,
    id: &str,
    fill: impl FnOnce(&mut Ingest<'_>) -> Result<(), Error>,
    bounds: Bounds,
    exclude: Vec<String>,
) -> Result<FragmentRow, Error> {
    let mut ingest = Ingest::new(store, id, bounds, exclude);
    let outcome = fill(&mut ingest).and_then(|()| ingest.finish());
    match outcome {
        Ok(_) => store
            .get_fragment(id)?
            .ok_or_else(|| Error::internal("a fragment just written is gone")),
        Err(error) => {
            if let Err(e) = store.remove_fragment(id) {
                tracing::error!(fragment = %id, error = %e, "cannot remove a failed fragment");
            }
            Err(error)
        }
    }
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Most names a fragment made from a sandbox may leave out, and their longest.
const MAX_EXCLUDED: usize = 64;
const MAX_EXCLUDED_NAME: usize = 255;

/// `exclude` of a fragment made from a sandbox: at most 64 names of files or directories
/// (plain names, no `/` or NUL, up to 255 bytes each).
pub(crate) fn check_exclude(exclude: &[String]) -> Result<(), Error> {
    let bad = |e: &String| {
        e.is_empty() || e.len() > MAX_EXCLUDED_NAME || e.contains('/') || e.contains('\0')
    };
    if exclude.len() > MAX_EXCLUDED || exclude.iter().any(bad) {
        return Err(Error::Invalid(format!(
            "exclude: at most {MAX_EXCLUDED} names of files or directories, each 1-{MAX_EXCLUDED_NAME} bytes without '/' or NUL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_downloads_at_once_are_bounded() {
        let reads = Arc::new(Reads::default());
        let held: Vec<ReadSlot> = (0..READS_AT_ONCE)
            .map(|_| ReadSlot::take(&reads, "alice").unwrap())
            .collect();
        assert!(matches!(
            ReadSlot::take(&reads, "alice"),
            Err(Error::Limited(_))
        ));
        // Another user's are their own.
        let bobs = ReadSlot::take(&reads, "bob").unwrap();
        drop(held);
        drop(bobs);
        assert!(reads.lock().unwrap().is_empty(), "slots are given back");
        ReadSlot::take(&reads, "alice").unwrap();
    }

    #[test]
    fn excluded_names_are_bounded() {
        assert!(check_exclude(&["node_modules".into()]).is_ok());
        assert!(check_exclude(&["a/b".into()]).is_err());
        assert!(check_exclude(&["x".repeat(256)]).is_err());
        assert!(check_exclude(&vec!["a".into(); 65]).is_err());
    }
}
