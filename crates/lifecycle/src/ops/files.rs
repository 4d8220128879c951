//! Files: stat, list, read, write, make a directory, remove, move — in a running sandbox, by
//! its backend's [`sbx_backend::Files`], which resolves every path inside the sandbox's root.
//! A paused sandbox is resumed first when its profile says `auto_resume`, else refused (409).
//! Writes, removals and moves are audited.

use std::sync::Arc;

use sbx_backend::{Backend, ByteStream, FileInfo, Files, Handle, User};

use super::handle_of;
use crate::{deadline, view, Caller, Error, Service};

/// Who a file is written as: the sandbox's user, `root`, or a uid.
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

/// The most a file's mode may be (permission bits and sticky; never set-id).
const MODE_MASK: u32 = 0o1777;

impl Service {
    /// The running sandbox a file call is for, its backend and its handle.
    async fn files_of(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<(String, Arc<dyn Backend>, Handle), Error> {
        self.resume_for_command(caller, id_or_name).await?;
        let row = self.resolve(caller, id_or_name)?;
        let state = view::effective_state(&row)?;
        if !state.can_exec() {
            return Err(Error::WrongState {
                id: row.id.clone(),
                state,
                operation: "use files",
            });
        }
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
        self.touch(&row.id);
        Ok((row.id, backend, handle))
    }

    async fn file_call<T>(
        &self,
        id: &str,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, sbx_backend::BackendError>>,
    ) -> Result<T, Error> {
        match deadline::run_raw(deadline::FILES, operation, call).await? {
            Ok(value) => Ok(value),
            Err(sbx_backend::BackendError::NotFound(_)) => Err(Error::SandboxGone(id.to_owned())),
            Err(other) => Err(other.into()),
        }
    }

    /// What `path` is: a symlink itself, or with `follow` what it points to.
    pub async fn file_stat(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        follow: bool,
    ) -> Result<FileInfo, Error> {
        let (id, backend, handle) = self.files_of(caller, id_or_name).await?;
        let files = files(&*backend)?;
        self.file_call(&id, "stat", files.stat(&handle, path, follow))
            .await
    }

    pub async fn file_list(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        depth: u32,
    ) -> Result<Vec<FileInfo>, Error> {
        if !(1..=32).contains(&depth) {
            return Err(Error::Invalid(format!(
                "depth must be from 1 to 32, got {depth}"
            )));
        }
        let (id, backend, handle) = self.files_of(caller, id_or_name).await?;
        let files = files(&*backend)?;
        self.file_call(&id, "list", files.list(&handle, path, depth))
            .await
    }

    /// The file's bytes from `offset`, `length` of them at most.
    pub async fn file_read(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<ByteStream, Error> {
        let (id, backend, handle) = self.files_of(caller, id_or_name).await?;
        let files = files(&*backend)?;
        self.file_call(&id, "read", files.read(&handle, path, offset, length))
            .await
    }

    /// Replaces the file at `path` with `data` (parents made as needed), with `mode`, owned
    /// by `user` (the sandbox's user by default).
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
                "mode {mode:o} must be permission bits (at most 1777; no set-id bits)"
            )));
        }
        let (id, backend, handle) = self.files_of(caller, id_or_name).await?;
        let files = files(&*backend)?;
        // The upload runs at the client's pace: no deadline on it beyond the connection's own.
        let written = match files.write(&handle, path, mode, owner, data).await {
            Ok(info) => info,
            Err(sbx_backend::BackendError::NotFound(_)) => return Err(Error::SandboxGone(id)),
            Err(other) => return Err(other.into()),
        };
        self.touch(&id);
        self.inner.access.audit(
            caller,
            "file.written",
            serde_json::json!({ "sandbox_id": id, "path": written.path, "size": written.size }),
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
        let (id, backend, handle) = self.files_of(caller, id_or_name).await?;
        let files = files(&*backend)?;
        self.file_call(&id, "mkdir", files.make_dir(&handle, path, owner))
            .await?;
        let info = self
            .file_call(&id, "stat", files.stat(&handle, path, false))
            .await?;
        self.inner.access.audit(
            caller,
            "file.dir_made",
            serde_json::json!({ "sandbox_id": id, "path": info.path }),
        );
        Ok(info)
    }

    pub async fn file_remove(
        &self,
        caller: &Caller,
        id_or_name: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), Error> {
        let (id, backend, handle) = self.files_of(caller, id_or_name).await?;
        let files = files(&*backend)?;
        self.file_call(&id, "remove", files.remove(&handle, path, recursive))
            .await?;
        self.inner.access.audit(
            caller,
            "file.removed",
            serde_json::json!({ "sandbox_id": id, "path": path, "recursive": recursive }),
        );
        Ok(())
    }

    pub async fn file_rename(
        &self,
        caller: &Caller,
        id_or_name: &str,
        from: &str,
        to: &str,
    ) -> Result<FileInfo, Error> {
        let (id, backend, handle) = self.files_of(caller, id_or_name).await?;
        let files = files(&*backend)?;
        self.file_call(&id, "move", files.rename(&handle, from, to))
            .await?;
        let info = self
            .file_call(&id, "stat", files.stat(&handle, to, false))
            .await?;
        self.inner.access.audit(
            caller,
            "file.moved",
            serde_json::json!({ "sandbox_id": id, "from": from, "to": info.path }),
        );
        Ok(info)
    }
}

fn files(backend: &dyn Backend) -> Result<&dyn Files, Error> {
    backend.files().ok_or_else(|| {
        Error::Unsupported(format!("the {} backend has no files API", backend.kind()))
    })
}
