//! envd's `filesystem.Filesystem`, over lifecycle's files API: every path resolved inside the
//! sandbox's root, as the user the call names (`Authorization: Basic`) or the sandbox's user —
//! sbx acts as that user where envd acts as root, so a user's permissions hold.
//!
//! Watches are lifecycle's (inotify inside the sandbox): `WatchDir` streams them; a watcher
//! made by `CreateWatcher` collects events until `GetWatcherEvents` takes them, at most
//! [`MAX_PENDING`] (then it reports the overflow as its error), [`MAX_WATCHERS`] per sandbox.
//! Each watch holds a place among the calls its user and sandbox may run at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use connectrpc::{
    ConnectError, ErrorCode, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use futures::StreamExt;
use sbx_e2b_proto::filesystem as pb;
use sbx_e2b_proto::filesystem::__buffa::oneof;
use sbx_lifecycle::{Error, FileEvent, FileEventKind, FileInfo, FileKind};

use crate::errors::connect_error;
use crate::process::{absolute, context, keepalive_of, reached, user_of};
use crate::E2b;

/// Polled watchers per sandbox at most.
pub const MAX_WATCHERS: usize = 16;
/// Events a polled watcher keeps until they are taken, and their bytes (names) at most.
pub const MAX_PENDING: usize = 10_000;
pub const MAX_PENDING_BYTES: usize = 256 << 10;

/// The polled watchers of every sandbox.
#[derive(Default)]
pub(crate) struct Watchers {
    by_sandbox: Mutex<HashMap<String, HashMap<String, Arc<Watcher>>>>,
}

struct Watcher {
    /// Shared with the task collecting its events.
    state: Arc<Mutex<Pending>>,
    task: tokio::task::AbortHandle,
}

impl Watcher {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().expect("never poisoned")
    }
}

#[derive(Default)]
struct Pending {
    events: Vec<pb::FilesystemEvent>,
    bytes: usize,
    error: Option<String>,
}

impl Watchers {
    fn get(&self, sandbox: &str, id: &str) -> Option<Arc<Watcher>> {
        self.by_sandbox
            .lock()
            .expect("never poisoned")
            .get(sandbox)
            .and_then(|w| w.get(id))
            .cloned()
    }

    fn remove(&self, sandbox: &str, id: &str) -> Option<Arc<Watcher>> {
        let mut all = self.by_sandbox.lock().expect("never poisoned");
        let watchers = all.get_mut(sandbox)?;
        let removed = watchers.remove(id);
        if watchers.is_empty() {
            all.remove(sandbox);
        }
        removed
    }

    /// The sandboxes with watchers.
    pub(crate) fn sandboxes(&self) -> Vec<String> {
        self.by_sandbox
            .lock()
            .expect("never poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Forgets a sandbox's watchers (it was destroyed).
    pub(crate) fn forget(&self, sandbox: &str) {
        if let Some(watchers) = self
            .by_sandbox
            .lock()
            .expect("never poisoned")
            .remove(sandbox)
        {
            for watcher in watchers.values() {
                watcher.task.abort();
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn file_type(kind: FileKind) -> pb::FileType {
    match kind {
        FileKind::File => pb::FileType::FILE_TYPE_FILE,
        FileKind::Directory => pb::FileType::FILE_TYPE_DIRECTORY,
        FileKind::Symlink => pb::FileType::FILE_TYPE_SYMLINK,
        FileKind::Other => pb::FileType::FILE_TYPE_UNSPECIFIED,
    }
}

/// A mode as Go's `FileMode.String()` writes it (what envd reports as `permissions`).
fn permissions(kind: FileKind, mode: u32) -> String {
    let mut text = String::new();
    if kind == FileKind::Directory {
        text.push('d');
    }
    if kind == FileKind::Symlink {
        text.push('L');
    }
    if mode & 0o4000 != 0 {
        text.push('u');
    }
    if mode & 0o2000 != 0 {
        text.push('g');
    }
    if mode & 0o1000 != 0 {
        text.push('t');
    }
    if text.is_empty() {
        text.push('-');
    }
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    text
}

fn name_of_id(id: u32) -> String {
    match id {
        0 => "root".into(),
        1000 => "user".into(),
        other => other.to_string(),
    }
}

pub(crate) fn entry(info: &FileInfo) -> pb::EntryInfo {
    let name = info
        .path
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("/")
        .to_owned();
    let seconds = info.modified_ms.div_euclid(1000);
    let nanos = (info.modified_ms.rem_euclid(1000) * 1_000_000) as i32;
    pb::EntryInfo {
        name,
        r#type: file_type(info.kind).into(),
        path: info.path.clone(),
        size: info.size as i64,
        mode: info.mode & 0o777,
        permissions: permissions(info.kind, info.mode),
        owner: name_of_id(info.owner.uid),
        group: name_of_id(info.owner.gid),
        modified_time: buffa_types::google::protobuf::Timestamp {
            seconds,
            nanos,
            ..Default::default()
        }
        .into(),
        symlink_target: info.symlink_target.clone(),
        is_symlink: info.kind == FileKind::Symlink,
        ..Default::default()
    }
}

fn event_type(kind: FileEventKind) -> pb::EventType {
    match kind {
        FileEventKind::Create => pb::EventType::EVENT_TYPE_CREATE,
        FileEventKind::Write => pb::EventType::EVENT_TYPE_WRITE,
        FileEventKind::Remove => pb::EventType::EVENT_TYPE_REMOVE,
        FileEventKind::Rename => pb::EventType::EVENT_TYPE_RENAME,
        FileEventKind::Chmod => pb::EventType::EVENT_TYPE_CHMOD,
        FileEventKind::Overflow => pb::EventType::EVENT_TYPE_UNSPECIFIED,
    }
}

/// An event's path relative to the watched directory (`.` for the directory itself).
fn relative(root: &str, path: &str) -> String {
    let root = root.trim_end_matches('/');
    match path.strip_prefix(root) {
        Some("") => ".".into(),
        Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/').to_owned(),
        _ => path.to_owned(),
    }
}

fn fs_event(root: &str, event: &FileEvent) -> pb::FilesystemEvent {
    pb::FilesystemEvent {
        name: relative(root, &event.path),
        r#type: event_type(event.kind).into(),
        ..Default::default()
    }
}

/// `filesystem.Filesystem`, for the sandbox each call is addressed to.
pub struct FilesystemService(pub(crate) E2b);

impl FilesystemService {
    async fn stat(
        &self,
        ctx: &RequestContext,
        path: &str,
    ) -> Result<(pb::EntryInfo, FileInfo), ConnectError> {
        let (target, caller) = context(ctx)?;
        let user = user_of(ctx)?;
        let path = absolute(path, user.as_deref());
        let info = self
            .0
            .service()
            .file_stat(&caller, &target.sandbox, &path, false, user.as_deref())
            .await
            .map_err(fs_error)?;
        Ok((entry(&info), info))
    }

    /// Starts a watch: the resolved directory and its events.
    async fn watch(
        &self,
        ctx: &RequestContext,
        path: &str,
        recursive: bool,
        include_entry: bool,
    ) -> Result<(String, sbx_lifecycle::FileEvents), ConnectError> {
        if include_entry {
            return Err(ConnectError::new(
                ErrorCode::Unimplemented,
                "watch events with entries are not served by sbx",
            ));
        }
        let (target, caller) = context(ctx)?;
        let user = user_of(ctx)?;
        let path = absolute(path, user.as_deref());
        let events = self
            .0
            .service()
            .file_watch(&caller, &target.sandbox, &path, recursive, user.as_deref())
            .await
            .map_err(fs_error)?;
        Ok((path, events))
    }
}

/// File errors as envd words them (the SDKs branch on `not_found`).
fn fs_error(error: Error) -> ConnectError {
    match error {
        Error::Conflict(message) => ConnectError::new(ErrorCode::InvalidArgument, message),
        other => connect_error(other),
    }
}

impl pb::Filesystem for FilesystemService {
    async fn stat(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::StatRequest>,
    ) -> ServiceResult<pb::StatResponse> {
        let path = request.to_owned_message().path;
        let (entry, _) = FilesystemService::stat(self, &ctx, &path).await?;
        Response::ok(pb::StatResponse {
            entry: entry.into(),
            ..Default::default()
        })
    }

    async fn make_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::MakeDirRequest>,
    ) -> ServiceResult<pb::MakeDirResponse> {
        let path = request.to_owned_message().path;
        match FilesystemService::stat(self, &ctx, &path).await {
            Ok((_, info)) if info.kind == FileKind::Directory => {
                return Err(ConnectError::new(
                    ErrorCode::AlreadyExists,
                    format!("directory already exists: {}", info.path),
                ))
            }
            Ok((_, info)) => {
                return Err(ConnectError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "path already exists but it is not a directory: {}",
                        info.path
                    ),
                ))
            }
            Err(e) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
        }
        let (target, caller) = context(&ctx)?;
        let user = user_of(&ctx)?;
        let path = absolute(&path, user.as_deref());
        let info = self
            .0
            .service()
            .file_make_dir(&caller, &target.sandbox, &path, user.as_deref())
            .await
            .map_err(fs_error)?;
        Response::ok(pb::MakeDirResponse {
            entry: entry(&info).into(),
            ..Default::default()
        })
    }

    async fn r#move(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::MoveRequest>,
    ) -> ServiceResult<pb::MoveResponse> {
        let request = request.to_owned_message();
        let (target, caller) = context(&ctx)?;
        let user = user_of(&ctx)?;
        let from = absolute(&request.source, user.as_deref());
        let to = absolute(&request.destination, user.as_deref());
        let info = self
            .0
            .service()
            .file_rename(&caller, &target.sandbox, &from, &to, user.as_deref())
            .await
            .map_err(fs_error)?;
        Response::ok(pb::MoveResponse {
            entry: entry(&info).into(),
            ..Default::default()
        })
    }

    async fn list_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::ListDirRequest>,
    ) -> ServiceResult<pb::ListDirResponse> {
        let request = request.to_owned_message();
        let (target, caller) = context(&ctx)?;
        let user = user_of(&ctx)?;
        let path = absolute(&request.path, user.as_deref());
        let depth = request.depth.max(1);
        let listing = self
            .0
            .service()
            .file_list(&caller, &target.sandbox, &path, depth, user.as_deref())
            .await
            .map_err(fs_error)?;
        Response::ok(pb::ListDirResponse {
            entries: listing.entries.iter().map(entry).collect(),
            ..Default::default()
        })
    }

    async fn remove(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::RemoveRequest>,
    ) -> ServiceResult<pb::RemoveResponse> {
        let path = request.to_owned_message().path;
        let (target, caller) = context(&ctx)?;
        let user = user_of(&ctx)?;
        let path = absolute(&path, user.as_deref());
        match self
            .0
            .service()
            .file_remove(&caller, &target.sandbox, &path, true, user.as_deref())
            .await
        {
            // Removing what is not there succeeds, as envd's does.
            Ok(()) | Err(Error::FileNotFound(_)) => Response::ok(pb::RemoveResponse::default()),
            Err(e) => Err(fs_error(e)),
        }
    }

    async fn watch_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::WatchDirRequest>,
    ) -> ServiceResult<ServiceStream<pb::WatchDirResponse>> {
        let request = request.to_owned_message();
        let keepalive = keepalive_of(&ctx);
        let (root, events) = self
            .watch(
                &ctx,
                &request.path,
                request.recursive,
                request.include_entry,
            )
            .await?;
        let wrap = |event: oneof::watch_dir_response::Event| pb::WatchDirResponse {
            event: Some(event),
            ..Default::default()
        };
        let start = futures::stream::once(async move {
            Ok(wrap(pb::watch_dir_response::StartEvent::default().into()))
        });
        let rest = futures::stream::unfold(Some(events), move |events| {
            let root = root.clone();
            async move {
                let mut events = events?;
                let next = tokio::select! {
                    next = events.next() => Some(next),
                    () = tokio::time::sleep(keepalive) => None,
                };
                let item = match next {
                    None => Ok(wrap(pb::watch_dir_response::KeepAlive::default().into())),
                    Some(Some(Ok(event))) if event.kind == FileEventKind::Overflow => {
                        return Some((
                            Err(ConnectError::new(
                                ErrorCode::Internal,
                                "watcher error: too many changes at once; some were not told",
                            )),
                            None,
                        ))
                    }
                    Some(Some(Ok(event))) => Ok(wrap(fs_event(&root, &event).into())),
                    Some(Some(Err(_))) | Some(None) => return None,
                };
                Some((item, Some(events)))
            }
        });
        Response::stream_ok(start.chain(rest))
    }

    async fn create_watcher(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::CreateWatcherRequest>,
    ) -> ServiceResult<pb::CreateWatcherResponse> {
        let request = request.to_owned_message();
        let (target, _) = context(&ctx)?;
        let watchers = &self.0.inner.watchers;
        let count = watchers
            .by_sandbox
            .lock()
            .expect("never poisoned")
            .get(&target.sandbox)
            .map_or(0, HashMap::len);
        if count >= MAX_WATCHERS {
            return Err(ConnectError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "sandbox {} already has {MAX_WATCHERS} watchers",
                    target.sandbox
                ),
            ));
        }
        let (root, mut events) = self
            .watch(
                &ctx,
                &request.path,
                request.recursive,
                request.include_entry,
            )
            .await?;
        let state = Arc::new(Mutex::new(Pending::default()));
        let collected = state.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let mut pending = collected.lock().expect("never poisoned");
                match event {
                    Ok(event) if event.kind != FileEventKind::Overflow => {
                        let event = fs_event(&root, &event);
                        let bytes = event.name.len() + 16;
                        if pending.events.len() < MAX_PENDING
                            && pending.bytes + bytes <= MAX_PENDING_BYTES
                        {
                            pending.bytes += bytes;
                            pending.events.push(event);
                            continue;
                        }
                        pending.error = Some(format!(
                            "watcher error: more than {MAX_PENDING} events (or {MAX_PENDING_BYTES} bytes of them) were not taken"
                        ));
                    }
                    Ok(_) => {
                        pending.error = Some(
                            "watcher error: too many changes at once; some were not told".into(),
                        )
                    }
                    Err(_) => pending.error = Some("watcher error: the watch ended".into()),
                }
                return;
            }
            let mut pending = collected.lock().expect("never poisoned");
            pending
                .error
                .get_or_insert_with(|| "watcher error: the watched directory is gone".into());
        });
        let id = watcher_id();
        let watcher = Arc::new(Watcher {
            state,
            task: task.abort_handle(),
        });
        {
            // Counted again where it is added: two creates may have raced past the first check.
            let mut all = watchers.by_sandbox.lock().expect("never poisoned");
            let of_sandbox = all.entry(target.sandbox.clone()).or_default();
            if of_sandbox.len() >= MAX_WATCHERS {
                return Err(ConnectError::new(
                    ErrorCode::ResourceExhausted,
                    format!(
                        "sandbox {} already has {MAX_WATCHERS} watchers",
                        target.sandbox
                    ),
                ));
            }
            of_sandbox.insert(id.clone(), watcher);
        }
        Response::ok(pb::CreateWatcherResponse {
            watcher_id: id,
            ..Default::default()
        })
    }

    async fn get_watcher_events(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::GetWatcherEventsRequest>,
    ) -> ServiceResult<pb::GetWatcherEventsResponse> {
        let id = request.to_owned_message().watcher_id;
        let (target, _) = reached(&self.0, &ctx)?;
        let watcher = self
            .0
            .inner
            .watchers
            .get(&target.sandbox, &id)
            .ok_or_else(|| watcher_not_found(&id))?;
        let mut pending = watcher.pending();
        if pending.events.is_empty() {
            if let Some(error) = pending.error.take() {
                return Err(ConnectError::new(ErrorCode::Internal, error));
            }
        }
        pending.bytes = 0;
        Response::ok(pb::GetWatcherEventsResponse {
            events: std::mem::take(&mut pending.events),
            ..Default::default()
        })
    }

    async fn remove_watcher(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, pb::RemoveWatcherRequest>,
    ) -> ServiceResult<pb::RemoveWatcherResponse> {
        let id = request.to_owned_message().watcher_id;
        let (target, _) = reached(&self.0, &ctx)?;
        self.0
            .inner
            .watchers
            .remove(&target.sandbox, &id)
            .ok_or_else(|| watcher_not_found(&id))?;
        Response::ok(pb::RemoveWatcherResponse::default())
    }
}

fn watcher_not_found(id: &str) -> ConnectError {
    ConnectError::new(
        ErrorCode::NotFound,
        format!(
            "watcher with id {} not found",
            id.chars().take(64).collect::<String>()
        ),
    )
}

/// `w` and 20 random characters of `[a-z0-9]`.
fn watcher_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    let mut id = String::from("w");
    id.extend(
        bytes
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char),
    );
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_are_gos() {
        assert_eq!(permissions(FileKind::File, 0o644), "-rw-r--r--");
        assert_eq!(permissions(FileKind::Directory, 0o755), "drwxr-xr-x");
        assert_eq!(permissions(FileKind::Directory, 0o1777), "dtrwxrwxrwx");
        assert_eq!(permissions(FileKind::Symlink, 0o777), "Lrwxrwxrwx");
        assert_eq!(permissions(FileKind::File, 0o4755), "urwxr-xr-x");
    }

    #[test]
    fn event_names_are_relative() {
        assert_eq!(relative("/home/user", "/home/user/a/b"), "a/b");
        assert_eq!(relative("/home/user/", "/home/user"), ".");
        assert_eq!(relative("/home/user", "/home/username"), "/home/username");
    }
}
