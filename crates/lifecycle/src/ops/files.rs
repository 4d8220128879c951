//! Files: stat, list, read, write, make a directory, remove, move — in a running sandbox, by
//! its backend's [`sbx_backend::Files`], which resolves every path inside the sandbox's root
//! and acts as the sandbox's user (or the one asked for). A paused sandbox is resumed first
//! when its profile says `auto_resume`, else refused (409). Each call holds a place among the
//! commands its user and sandbox may run at once (as an exec does), for as long as it runs —
//! a download for as long as its bytes flow. Writes, removals and moves are audited.

use std::sync::Arc;

use futures::StreamExt;
use sbx_backend::{Backend, ByteStream, Extracted, FileInfo, Files, Handle, Listing, User};
use tokio::sync::OwnedMutexGuard;

use super::handle_of;
use crate::access::ExecPermit;
use crate::{deadline, Caller, Error, Service};

/// Who a file call acts as: the sandbox's user, `root`, or a uid.
pub fn user_named(name: Option<&str>) -> Result<User, Error> {
    match name {
        None | Some("user") => Ok(User::DEFAULT),
        Some("root") => Ok(User::ROOT),
        Some(other) => match other.parse::<u32>() {
            Ok(uid) if uid < 65536 => Ok(User { uid, gid: uid }),
            _ => Err(Error::Invalid(format!(
                "user {other:?} must be \"user\", \"root\" or a uid from 0 to 65535"
            ))),
        },
    }
}

/// The most a file's mode may be: permission bits (no set-id or sticky bits).
const MODE_MASK: u32 = 0o777;

/// A file call under way: the sandbox, its backend and handle, the call's place among those
/// running, and (until the call has started) the sandbox's lock.
struct FileCall {
    id: String,
    backend: Arc<dyn Backend>,
    handle: Handle,
    permit: ExecPermit,
    lock: Option<OwnedMutexGuard<()>>,
}

impl FileCall {
    /// `stream`, holding the call's place among those running for as long as it lasts.
    fn holding<T: Send + 'static>(
        self,
        stream: futures::stream::BoxStream<'static, T>,
    ) -> futures::stream::BoxStream<'static, T> {
        let permit = self.permit;
        stream
            .map(move |item| {
                let _held = &permit;
                item
            })
            .boxed()
    }

    fn files(&self) -> Result<&dyn Files, Error> {
        self.backend.files().ok_or_else(|| {
            Error::Unsupported(format!(
                "the {} backend has no files API",
                self.backend.kind()
            ))
        })
    }
}

impl Service {
    /// The running sandbox a file call is for, with the sandbox's lock held (a pause, destroy
    /// or recreate cannot come between the check and the call's start).
    async fn file_call_for(&self, caller: &Caller, id_or_name: &str) -> Result<FileCall, Error> {
        let (row, lock) = self.usable_locked(caller, id_or_name, "use files").await?;
        let backend = self.backend_of(&row)?.clone();
        if backend.files().is_none() {
            return Err(Error::Unsupported(format!(
                "the {} backend of sandbox {} has no files API",
                backend.kind(),
                row.id
            )));
        }
        let handle = handle_of(&row)?
            .ok_or_else(|| Error::internal(format!("running sandbox {} has no handle", row.id)))?;
        let permit =
            self.inner
                .access
                .admit_running(caller, &row.id, &self.profile_limits(&row.profile))?;
        self.touch(&row.id);
        Ok(FileCall {
            id: row.id,
            backend,
            handle,
            permit,
            lock: Some(lock),
        })
    }

    /// What `path` is: a symlink itself, or with `follow` what it points to.
    pub async fn file_stat(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        follow: bool,
        user: Option<&str>,
    ) -> Result<FileInfo, Error> {
        let user = user_named(user)?;
        let call = self.file_call_for(caller, id_or_name).await?;
        let stat = call.files()?.stat(&call.handle, path, follow, user);
        deadline::run_on(&call.id, deadline::FILES, "stat", stat).await
    }

    pub async fn file_list(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        depth: u32,
        user: Option<&str>,
    ) -> Result<Listing, Error> {
        if !(1..=32).contains(&depth) {
            return Err(Error::Invalid(format!(
                "depth must be from 1 to 32, got {depth}"
            )));
        }
        let user = user_named(user)?;
        let call = self.file_call_for(caller, id_or_name).await?;
        let list = call.files()?.list(&call.handle, path, depth, user);
        deadline::run_on(&call.id, deadline::FILES, "list", list).await
    }

    /// The file's bytes from `offset`, `length` of them at most. The stream holds the call's
    /// place among those running.
    pub async fn file_read(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
        user: Option<&str>,
    ) -> Result<(FileInfo, ByteStream), Error> {
        let user = user_named(user)?;
        let mut call = self.file_call_for(caller, id_or_name).await?;
        let read = call.files()?.read(&call.handle, path, offset, length, user);
        let (info, bytes) = deadline::run_on(&call.id, deadline::FILES, "read", read).await?;
        call.lock = None;
        Ok((info, call.holding(bytes)))
    }

    /// Replaces the file at `path` with `data` (parents made as needed), with `mode`, as
    /// `user` (the sandbox's user by default) — whole or not at all.
    pub async fn file_write(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        mode: u32,
        user: Option<&str>,
        data: ByteStream,
    ) -> Result<FileInfo, Error> {
        let owner = user_named(user)?;
        if mode & !MODE_MASK != 0 {
            return Err(Error::Invalid(format!(
                "mode {mode:o} must be permission bits (at most 777; no set-id or sticky bits)"
            )));
        }
        let mut call = self.file_call_for(caller, id_or_name).await?;
        // The upload runs at the client's pace: the sandbox's lock is not held for it (the
        // backend gives up on a write that stalls).
        call.lock = None;
        let written = match call
            .files()?
            .write(&call.handle, path, mode, owner, data)
            .await
        {
            Ok(info) => info,
            Err(sbx_backend::BackendError::NotFound(_)) => return Err(Error::SandboxGone(call.id)),
            Err(other) => return Err(other.into()),
        };
        self.touch(&call.id);
        self.inner.access.audit(
            caller,
            "file.written",
            serde_json::json!({ "sandbox_id": call.id, "path": written.path, "size": written.size }),
        );
        Ok(written)
    }

    pub async fn file_make_dir(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<FileInfo, Error> {
        let owner = user_named(user)?;
        let call = self.file_call_for(caller, id_or_name).await?;
        let files = call.files()?;
        deadline::run_on(
            &call.id,
            deadline::FILES,
            "mkdir",
            files.make_dir(&call.handle, path, owner),
        )
        .await?;
        let stat = files.stat(&call.handle, path, false, owner);
        let info = deadline::run_on(&call.id, deadline::FILES, "stat", stat).await?;
        self.inner.access.audit(
            caller,
            "file.dir_made",
            serde_json::json!({ "sandbox_id": call.id, "path": info.path }),
        );
        Ok(info)
    }

    pub async fn file_remove(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        recursive: bool,
        user: Option<&str>,
    ) -> Result<(), Error> {
        let user = user_named(user)?;
        let call = self.file_call_for(caller, id_or_name).await?;
        let remove = call.files()?.remove(&call.handle, path, recursive, user);
        deadline::run_on(&call.id, deadline::FILES, "remove", remove).await?;
        self.inner.access.audit(
            caller,
            "file.removed",
            serde_json::json!({ "sandbox_id": call.id, "path": path, "recursive": recursive }),
        );
        Ok(())
    }

    pub async fn file_rename(
        &self,
        caller: &Caller,
        id_or_name: &str,
        from: &str,
        to: &str,
        user: Option<&str>,
    ) -> Result<FileInfo, Error> {
        let user = user_named(user)?;
        let call = self.file_call_for(caller, id_or_name).await?;
        let files = call.files()?;
        deadline::run_on(
            &call.id,
            deadline::FILES,
            "move",
            files.rename(&call.handle, from, to, user),
        )
        .await?;
        let stat = files.stat(&call.handle, to, false, user);
        let info = deadline::run_on(&call.id, deadline::FILES, "stat", stat).await?;
        self.inner.access.audit(
            caller,
            "file.moved",
            serde_json::json!({ "sandbox_id": call.id, "from": from, "to": info.path }),
        );
        Ok(info)
    }

    /// The directory (or file) at `path` as a tar stream; the stream holds the call's place
    /// among those running.
    pub async fn file_archive(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<ByteStream, Error> {
        let user = user_named(user)?;
        let mut call = self.file_call_for(caller, id_or_name).await?;
        let archive = call.files()?.archive(&call.handle, path, user);
        let bytes = deadline::run_on(&call.id, deadline::FILES, "archive", archive).await?;
        call.lock = None;
        Ok(call.holding(bytes))
    }

    /// Extracts the tar stream `data` under the directory `path` (made if missing), as
    /// `user`; see [`sbx_backend::Files::extract`] for what an archive may not do.
    pub async fn file_extract(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        user: Option<&str>,
        data: ByteStream,
    ) -> Result<Extracted, Error> {
        let user = user_named(user)?;
        let mut call = self.file_call_for(caller, id_or_name).await?;
        // At the client's pace, as a write.
        call.lock = None;
        let extracted = match call.files()?.extract(&call.handle, path, user, data).await {
            Ok(extracted) => extracted,
            Err(failure) => {
                // What went in before the refusal stays: the trail says so.
                self.inner.access.audit(
                    caller,
                    "file.extract_failed",
                    serde_json::json!({ "sandbox_id": call.id, "path": path }),
                );
                return Err(match failure {
                    sbx_backend::BackendError::NotFound(_) => Error::SandboxGone(call.id),
                    other => other.into(),
                });
            }
        };
        self.touch(&call.id);
        self.inner.access.audit(
            caller,
            "file.extracted",
            serde_json::json!({
                "sandbox_id": call.id,
                "path": extracted.directory.path,
                "entries": extracted.entries,
            }),
        );
        Ok(extracted)
    }

    /// Changes under the directory `path`, as they happen, until the stream is dropped or the
    /// directory or sandbox goes. The stream holds the call's place among those running.
    pub async fn file_watch(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        recursive: bool,
        user: Option<&str>,
    ) -> Result<sbx_backend::FileEvents, Error> {
        let user = user_named(user)?;
        let mut call = self.file_call_for(caller, id_or_name).await?;
        let watch = call.files()?.watch(&call.handle, path, recursive, user);
        let events = deadline::run_on(&call.id, deadline::FILES, "watch", watch).await?;
        call.lock = None;
        Ok(call.holding(events))
    }
}
