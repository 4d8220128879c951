//! A typed client of the sbx API.
//!
//! Owns: URLs, request encoding, turning error bodies back into [`ClientError::Api`], and the
//! NDJSON framing of streamed exec.
//! Must never: know anything the API does not say (no store, no backend).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sbx_protocol::{
    AuditEntry, AuditList, CleanupReport, CleanupRequest, CreateKeyRequest, CreateSandboxRequest,
    CreatedKey, ErrorBody, Event, EventList, ExecEvent, ExecRequest, ExecResult, ExpireRequest,
    ExpireResult, ExtendRequest, Health, Identity, KeyInfo, KeyList, Sandbox, SandboxList, Status,
    TerminalRequest,
};

/// An open terminal: a WebSocket (see [`Client::terminal`]).
pub type Terminal =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
use serde::de::DeserializeOwned;
pub use tokio_tungstenite::tungstenite::Message;

/// Where the CLI finds the daemon unless `SBX_URL` says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the sbx daemon at {url} (is `sbx serve` running?)")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The daemon answered with an error body.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The API's error code, when the daemon answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// Sent as `Authorization: Bearer …` with every request.
    key: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("key", &self.key.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Client {
    /// A client without a key (enough for `/healthz`, or a daemon without authentication).
    pub fn new(base_url: &str) -> Client {
        Client {
            http: http_client(None),
            base: base_url.trim_end_matches('/').to_owned(),
            key: None,
        }
    }

    /// The same client, sending `key` with every request.
    pub fn with_key(mut self, key: &str) -> Client {
        let key = key.trim().to_owned();
        self.http = http_client(Some(&key));
        self.key = Some(key);
        self
    }

    /// A client for `SBX_URL`, or [`DEFAULT_URL`].
    pub fn from_env() -> Client {
        Client::new(&std::env::var("SBX_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()))
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.send(self.http.get(self.url("/healthz"))).await
    }

    pub async fn create(&self, request: &CreateSandboxRequest) -> Result<Sandbox, ClientError> {
        self.send(self.http.post(self.url("/v1/sandboxes")).json(request))
            .await
    }

    /// Lists sandboxes; empty `states` means the daemon's default (all but destroyed).
    pub async fn list(
        &self,
        states: &[&str],
        metadata: &[(&str, &str)],
    ) -> Result<Vec<Sandbox>, ClientError> {
        let mut query: Vec<(String, String)> = Vec::new();
        if !states.is_empty() {
            query.push(("state".into(), states.join(",")));
        }
        for (key, value) in metadata {
            query.push((format!("metadata.{key}"), (*value).to_owned()));
        }
        let list: SandboxList = self
            .send(self.http.get(self.url("/v1/sandboxes")).query(&query))
            .await?;
        Ok(list.sandboxes)
    }

    pub async fn get(&self, id: &str) -> Result<Sandbox, ClientError> {
        self.send(
            self.http
                .get(self.url(&format!("/v1/sandboxes/{}", segment(id)))),
        )
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<Sandbox, ClientError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/sandboxes/{}", segment(id)))),
        )
        .await
    }

    pub async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecResult, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/exec", segment(id)));
        self.send(self.http.post(url).json(request)).await
    }

    /// Starts a command and yields its events as they come; `exit` or `error` is last.
    pub async fn exec_stream(
        &self,
        id: &str,
        request: &ExecRequest,
    ) -> Result<impl Stream<Item = Result<ExecEvent, ClientError>> + Unpin, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/exec/stream", segment(id)));
        let response = self.checked(self.http.post(url).json(request)).await?;
        Ok(ndjson(response.bytes_stream()))
    }

    pub async fn extend(&self, id: &str, duration: &str) -> Result<Sandbox, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/ttl", segment(id)));
        let body = ExtendRequest {
            duration: duration.into(),
        };
        self.send(self.http.patch(url).json(&body)).await
    }

    pub async fn recreate(&self, id: &str) -> Result<Sandbox, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/recreate", segment(id)));
        self.send(self.http.post(url)).await
    }

    /// Writes a file from `body` (streamed); `mode` in octal text (`"644"`).
    pub async fn upload(
        &self,
        id: &str,
        path: &str,
        mode: Option<&str>,
        user: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Result<sbx_protocol::FileInfo, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files", segment(id)));
        let mut query = vec![("path", path)];
        query.extend(mode.map(|m| ("mode", m)));
        query.extend(user.map(|u| ("user", u)));
        let request = self
            .http
            .put(url)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.send(request).await
    }

    /// A file's bytes, as they come (`range`: a `Range` header's value).
    pub async fn download(
        &self,
        id: &str,
        path: &str,
        range: Option<&str>,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>>, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files", segment(id)));
        let mut request = self.http.get(url).query(&[("path", path)]);
        if let Some(range) = range {
            request = request.header(reqwest::header::RANGE, range);
        }
        let response = self.checked(request).await?;
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| ClientError::Protocol(e.to_string()))))
    }

    pub async fn stat(&self, id: &str, path: &str) -> Result<sbx_protocol::FileInfo, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files/stat", segment(id)));
        self.send(self.http.get(url).query(&[("path", path)])).await
    }

    pub async fn list_files(
        &self,
        id: &str,
        path: &str,
        depth: u32,
    ) -> Result<Vec<sbx_protocol::FileInfo>, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files/list", segment(id)));
        let depth = depth.to_string();
        let list: sbx_protocol::FileList = self
            .send(
                self.http
                    .get(url)
                    .query(&[("path", path), ("depth", &depth)]),
            )
            .await?;
        Ok(list.entries)
    }

    pub async fn make_dir(
        &self,
        id: &str,
        path: &str,
        user: Option<&str>,
    ) -> Result<sbx_protocol::FileInfo, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files/mkdir", segment(id)));
        let request = sbx_protocol::MakeDirRequest {
            path: path.into(),
            user: user.map(Into::into),
        };
        self.send(self.http.post(url).json(&request)).await
    }

    pub async fn move_file(
        &self,
        id: &str,
        from: &str,
        to: &str,
    ) -> Result<sbx_protocol::FileInfo, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files/move", segment(id)));
        let request = sbx_protocol::MoveRequest {
            from: from.into(),
            to: to.into(),
            user: None,
        };
        self.send(self.http.post(url).json(&request)).await
    }

    pub async fn remove_file(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files", segment(id)));
        let recursive = recursive.to_string();
        self.checked(
            self.http
                .delete(url)
                .query(&[("path", path), ("recursive", &recursive)]),
        )
        .await?;
        Ok(())
    }

    /// A directory (or file) of the sandbox as a tar stream, entries named from its own name.
    pub async fn archive(
        &self,
        id: &str,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>>, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files/archive", segment(id)));
        let response = self
            .checked(self.http.get(url).query(&[("path", path)]))
            .await?;
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| ClientError::Protocol(e.to_string()))))
    }

    /// Extracts a tar stream under the sandbox's directory `path` (made if missing).
    pub async fn extract(
        &self,
        id: &str,
        path: &str,
        user: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Result<sbx_protocol::ExtractResult, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files/archive", segment(id)));
        let mut query = vec![("path", path)];
        query.extend(user.map(|u| ("user", u)));
        let request = self
            .http
            .put(url)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .body(body);
        self.send(request).await
    }

    /// Writes several files in one multipart request: each (path, bytes), a relative path
    /// going under `dir` (the user's home when `None`).
    pub async fn upload_many(
        &self,
        id: &str,
        dir: Option<&str>,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<sbx_protocol::FileInfo>, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/files", segment(id)));
        // File names are paths, sent as they are (not percent-encoded).
        let mut form = reqwest::multipart::Form::new().percent_encode_noop();
        for (path, bytes) in files {
            form = form.part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(path),
            );
        }
        let mut request = self.http.post(url).multipart(form);
        if let Some(dir) = dir {
            request = request.query(&[("path", dir)]);
        }
        let result: sbx_protocol::UploadResult = self.send(request).await?;
        Ok(result.files)
    }

    /// A fresh instance, its files from `snapshot` when given.
    pub async fn recreate_from(
        &self,
        id: &str,
        snapshot: Option<&str>,
    ) -> Result<Sandbox, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/recreate", segment(id)));
        let request = sbx_protocol::RecreateRequest {
            snapshot: snapshot.map(Into::into),
        };
        self.send(self.http.post(url).json(&request)).await
    }

    pub async fn create_snapshot(
        &self,
        id: &str,
        name: Option<&str>,
    ) -> Result<sbx_protocol::Snapshot, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/snapshots", segment(id)));
        let request = sbx_protocol::CreateSnapshotRequest {
            name: name.map(Into::into),
        };
        self.send(self.http.post(url).json(&request)).await
    }

    pub async fn snapshots(&self) -> Result<Vec<sbx_protocol::Snapshot>, ClientError> {
        let list: sbx_protocol::SnapshotList =
            self.send(self.http.get(self.url("/v1/snapshots"))).await?;
        Ok(list.snapshots)
    }

    pub async fn snapshot(&self, id: &str) -> Result<sbx_protocol::Snapshot, ClientError> {
        let url = self.url(&format!("/v1/snapshots/{}", segment(id)));
        self.send(self.http.get(url)).await
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/snapshots/{}", segment(id)));
        self.checked(self.http.delete(url)).await?;
        Ok(())
    }

    /// The snapshot as one `.tar.zst` file, as it comes.
    pub async fn export_snapshot(
        &self,
        id: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>>, ClientError> {
        let url = self.url(&format!("/v1/snapshots/{}/export", segment(id)));
        let response = self.checked(self.http.get(url)).await?;
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| ClientError::Protocol(e.to_string()))))
    }

    pub async fn import_snapshot(
        &self,
        body: impl Into<reqwest::Body>,
        name: Option<&str>,
        profile: Option<&str>,
    ) -> Result<sbx_protocol::Snapshot, ClientError> {
        let mut query = Vec::new();
        query.extend(name.map(|n| ("name", n)));
        query.extend(profile.map(|p| ("profile", p)));
        let request = self
            .http
            .post(self.url("/v1/snapshots/import"))
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/zstd")
            .body(body);
        self.send(request).await
    }

    pub async fn create_project(
        &self,
        request: &sbx_protocol::CreateProjectRequest,
    ) -> Result<sbx_protocol::Project, ClientError> {
        self.send(self.http.post(self.url("/v1/projects")).json(request))
            .await
    }

    pub async fn projects(&self) -> Result<Vec<sbx_protocol::Project>, ClientError> {
        let list: sbx_protocol::ProjectList =
            self.send(self.http.get(self.url("/v1/projects"))).await?;
        Ok(list.projects)
    }

    pub async fn project(&self, project: &str) -> Result<sbx_protocol::Project, ClientError> {
        let url = self.url(&format!("/v1/projects/{}", segment(project)));
        self.send(self.http.get(url)).await
    }

    pub async fn delete_project(&self, project: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/projects/{}", segment(project)));
        self.checked(self.http.delete(url)).await?;
        Ok(())
    }

    /// Shares a project with `user` (`read`, `write`), or stops sharing it (`None`).
    pub async fn share_project(
        &self,
        project: &str,
        user: &str,
        access: Option<&str>,
    ) -> Result<sbx_protocol::Project, ClientError> {
        let url = self.url(&format!(
            "/v1/projects/{}/shares/{}",
            segment(project),
            segment(user)
        ));
        match access {
            Some(access) => {
                let request = sbx_protocol::ShareRequest {
                    access: access.into(),
                };
                self.send(self.http.put(url).json(&request)).await
            }
            None => self.send(self.http.delete(url)).await,
        }
    }

    pub async fn create_fragment(
        &self,
        project: &str,
        request: &sbx_protocol::CreateFragmentRequest,
    ) -> Result<sbx_protocol::Fragment, ClientError> {
        let url = self.url(&format!("/v1/projects/{}/fragments", segment(project)));
        self.send(self.http.post(url).json(request)).await
    }

    /// A fragment from a tar stream of paths relative to the project's root.
    pub async fn upload_fragment(
        &self,
        project: &str,
        tar: impl Into<reqwest::Body>,
        message: Option<&str>,
    ) -> Result<sbx_protocol::Fragment, ClientError> {
        let url = self.url(&format!("/v1/projects/{}/fragments", segment(project)));
        let query: Vec<_> = message.map(|m| ("message", m)).into_iter().collect();
        let request = self
            .http
            .post(url)
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .body(tar);
        self.send(request).await
    }

    pub async fn fragments(
        &self,
        project: &str,
    ) -> Result<Vec<sbx_protocol::Fragment>, ClientError> {
        let url = self.url(&format!("/v1/projects/{}/fragments", segment(project)));
        let list: sbx_protocol::FragmentList = self.send(self.http.get(url)).await?;
        Ok(list.fragments)
    }

    pub async fn fragment(
        &self,
        project: &str,
        fragment: &str,
    ) -> Result<sbx_protocol::FragmentDetail, ClientError> {
        let url = self.url(&format!(
            "/v1/projects/{}/fragments/{}",
            segment(project),
            segment(fragment)
        ));
        self.send(self.http.get(url)).await
    }

    pub async fn delete_fragment(&self, project: &str, fragment: &str) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "/v1/projects/{}/fragments/{}",
            segment(project),
            segment(fragment)
        ));
        self.checked(self.http.delete(url)).await?;
        Ok(())
    }

    /// A fragment's files as a tar stream.
    pub async fn fragment_archive(
        &self,
        project: &str,
        fragment: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>>, ClientError> {
        let url = self.url(&format!(
            "/v1/projects/{}/fragments/{}/archive",
            segment(project),
            segment(fragment)
        ));
        let response = self.checked(self.http.get(url)).await?;
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| ClientError::Protocol(e.to_string()))))
    }

    /// Switches `user`'s active sandbox to a project (`PUT /v1/users/{user}/active`).
    pub async fn switch(
        &self,
        user: &str,
        request: &sbx_protocol::SwitchRequest,
    ) -> Result<sbx_protocol::ActiveSandbox, ClientError> {
        let url = self.url(&format!("/v1/users/{}/active", segment(user)));
        self.send(self.http.put(url).json(request)).await
    }

    pub async fn active(&self, user: &str) -> Result<sbx_protocol::ActiveSandbox, ClientError> {
        let url = self.url(&format!("/v1/users/{}/active", segment(user)));
        self.send(self.http.get(url)).await
    }

    pub async fn deactivate(&self, user: &str) -> Result<sbx_protocol::Deactivated, ClientError> {
        let url = self.url(&format!("/v1/users/{}/active", segment(user)));
        self.send(self.http.delete(url)).await
    }

    /// Users' active sandboxes (the caller's; an admin's: everyone's).
    pub async fn users(&self) -> Result<Vec<sbx_protocol::ActiveSandbox>, ClientError> {
        let list: sbx_protocol::ActiveList =
            self.send(self.http.get(self.url("/v1/users"))).await?;
        Ok(list.users)
    }

    pub async fn templates(&self) -> Result<Vec<sbx_protocol::Template>, ClientError> {
        let list: sbx_protocol::TemplateList =
            self.send(self.http.get(self.url("/v1/templates"))).await?;
        Ok(list.templates)
    }

    pub async fn template(&self, name: &str) -> Result<sbx_protocol::Template, ClientError> {
        let url = self.url(&format!("/v1/templates/{}", segment(name)));
        self.send(self.http.get(url)).await
    }

    pub async fn delete_template(&self, name: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/templates/{}", segment(name)));
        self.checked(self.http.delete(url)).await?;
        Ok(())
    }

    /// Pulls an image into template `request.name`: progress lines, then the template or an
    /// error.
    pub async fn pull_template(
        &self,
        request: &sbx_protocol::PullTemplateRequest,
    ) -> Result<
        impl Stream<Item = Result<sbx_protocol::TemplateEvent, ClientError>> + Unpin,
        ClientError,
    > {
        let request = self
            .http
            .post(self.url("/v1/templates"))
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .json(request);
        let response = self.checked(request).await?;
        Ok(ndjson(response.bytes_stream()))
    }

    /// Imports an archive (streamed) into template `name`: progress lines, then the template
    /// or an error.
    pub async fn import_template(
        &self,
        name: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<
        impl Stream<Item = Result<sbx_protocol::TemplateEvent, ClientError>> + Unpin,
        ClientError,
    > {
        let url = self.url(&format!("/v1/templates/{}/import", segment(name)));
        let request = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let response = self.checked(request).await?;
        Ok(ndjson(response.bytes_stream()))
    }

    pub async fn pause(&self, id: &str) -> Result<Sandbox, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/pause", segment(id)));
        self.send(self.http.post(url)).await
    }

    pub async fn resume(&self, id: &str) -> Result<Sandbox, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/resume", segment(id)));
        self.send(self.http.post(url)).await
    }

    /// Checkpoints the sandbox's processes and memory to disk (`resume` restores them).
    pub async fn hibernate(&self, id: &str) -> Result<Sandbox, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/hibernate", segment(id)));
        self.send(self.http.post(url)).await
    }

    /// The recorded history of one sandbox.
    pub async fn sandbox_events(&self, id: &str) -> Result<Vec<Event>, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/events", segment(id)));
        let list: EventList = self.send(self.http.get(url)).await?;
        Ok(list.events)
    }

    pub async fn expire(&self, apply: bool) -> Result<ExpireResult, ClientError> {
        let body = ExpireRequest { apply };
        self.send(self.http.post(self.url("/v1/expire")).json(&body))
            .await
    }

    pub async fn cleanup(&self, dry_run: bool) -> Result<CleanupReport, ClientError> {
        let body = CleanupRequest { dry_run };
        self.send(self.http.post(self.url("/v1/cleanup")).json(&body))
            .await
    }

    /// The TCP ports something listens on inside sandbox `id`.
    pub async fn ports(&self, id: &str) -> Result<sbx_protocol::PortList, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/ports", segment(id)));
        self.send(self.http.get(url)).await
    }

    /// A share link to `port` of sandbox `id` for `ttl` (text such as `"1h"`; 1 h by default).
    pub async fn share_port(
        &self,
        id: &str,
        port: u16,
        ttl: Option<&str>,
    ) -> Result<sbx_protocol::PortShare, ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/shares", segment(id)));
        let request = sbx_protocol::PortShareRequest {
            port,
            ttl: ttl.map(|t| sbx_protocol::DurationValue::Text(t.into())),
        };
        self.send(self.http.post(url).json(&request)).await
    }

    /// Revokes every share link made so far to the ports of sandbox `id`.
    pub async fn revoke_shares(&self, id: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/sandboxes/{}/shares", segment(id)));
        self.checked(self.http.delete(url)).await?;
        Ok(())
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.send(self.http.get(self.url("/v1/status"))).await
    }

    /// Follows `GET /v1/events` (Server-Sent Events): recorded events after `since` first,
    /// then new ones as they happen, until the daemon stops.
    pub async fn events(
        &self,
        since: Option<i64>,
        sandbox: Option<&str>,
    ) -> Result<impl Stream<Item = Result<Event, ClientError>> + Unpin, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(since) = since {
            query.push(("since", since.to_string()));
        }
        if let Some(sandbox) = sandbox {
            query.push(("sandbox", sandbox.to_owned()));
        }
        let response = self
            .checked(self.http.get(self.url("/v1/events")).query(&query))
            .await?;
        Ok(sse_events(response.bytes_stream()))
    }

    /// Opens a terminal (`GET /v1/sandboxes/{id}/pty`, a WebSocket). Binary messages carry
    /// terminal bytes both ways; text messages carry [`sbx_protocol::TerminalControl`] out and
    /// [`sbx_protocol::TerminalEvent`] in. A refusal before the upgrade (unknown sandbox, too
    /// many terminals, …) is returned as the daemon's error.
    pub async fn terminal(
        &self,
        id: &str,
        request: &TerminalRequest,
    ) -> Result<Terminal, ClientError> {
        let mut query: Vec<(&str, String)> =
            request.cmd.iter().map(|a| ("cmd", a.clone())).collect();
        if let Some(user) = &request.user {
            query.push(("user", user.clone()));
        }
        if let Some(cwd) = &request.cwd {
            query.push(("cwd", cwd.clone()));
        }
        if let Some(rows) = request.rows {
            query.push(("rows", rows.to_string()));
        }
        if let Some(cols) = request.cols {
            query.push(("cols", cols.to_string()));
        }
        let mut url = reqwest::Url::parse(&self.url(&format!("/v1/sandboxes/{}/pty", segment(id))))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        url.query_pairs_mut().extend_pairs(query);
        let ws_url = url.as_str().replacen("http", "ws", 1);
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut upgrade = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Some(key) = &self.key {
            let value = format!("Bearer {key}")
                .parse()
                .map_err(|_| ClientError::Protocol("the API key is not a valid header".into()))?;
            upgrade.headers_mut().insert("authorization", value);
        }
        match tokio_tungstenite::connect_async(upgrade).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response.into_body().unwrap_or_default();
                Err(match serde_json::from_slice::<ErrorBody>(&body) {
                    Ok(error) => ClientError::Api {
                        status,
                        code: error.error.code,
                        message: error.error.message,
                    },
                    Err(_) => ClientError::Protocol(format!("HTTP {status}")),
                })
            }
            Err(tokio_tungstenite::tungstenite::Error::Io(source)) => {
                Err(ClientError::Protocol(format!(
                    "cannot reach the sbx daemon at {} (is `sbx serve` running?): {source}",
                    self.base
                )))
            }
            Err(e) => Err(ClientError::Protocol(e.to_string())),
        }
    }

    pub async fn whoami(&self) -> Result<Identity, ClientError> {
        self.send(self.http.get(self.url("/v1/whoami"))).await
    }

    pub async fn create_key(&self, user: &str, admin: bool) -> Result<CreatedKey, ClientError> {
        let request = CreateKeyRequest {
            user: user.to_owned(),
            admin,
        };
        self.send(self.http.post(self.url("/v1/keys")).json(&request))
            .await
    }

    pub async fn keys(&self) -> Result<Vec<KeyInfo>, ClientError> {
        let list: KeyList = self.send(self.http.get(self.url("/v1/keys"))).await?;
        Ok(list.keys)
    }

    pub async fn revoke_key(&self, id: &str) -> Result<KeyInfo, ClientError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/keys/{}", segment(id)))),
        )
        .await
    }

    /// `GET /v1/audit` with `query` (`since`, `event`, `user`, `sandbox`, `key`, `limit`).
    pub async fn audit(&self, query: &[(&str, String)]) -> Result<Vec<AuditEntry>, ClientError> {
        let list: AuditList = self
            .send(self.http.get(self.url("/v1/audit")).query(query))
            .await?;
        Ok(list.entries)
    }

    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.send(self.http.get(self.url("/v1/openapi.json"))).await
    }

    /// Sends anything and returns the raw status and body (for tests of bad input).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Result<(u16, Bytes), ClientError> {
        let mut request = self.http.request(method, self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok((status, bytes))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    async fn checked(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                self.unreachable(e)
            } else {
                ClientError::Protocol(e.to_string())
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => ClientError::Api {
                status,
                code: error.error.code,
                message: error.error.message,
            },
            Err(_) => ClientError::Protocol(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )),
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.checked(request).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

fn http_client(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = key.and_then(|k| {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {k}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }) {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        // Well inside the daemon's keep-alive limit (`daemon.header_timeout`, 15 s): a
        // connection the daemon is about to close is not reused, whose request would fail.
        .pool_idle_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .default_headers(headers)
        .build()
        .expect("a client without TLS or proxies always builds")
}

/// Percent-encodes a path segment (ids and names are plain, but a user may type anything).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Parses each line of a byte stream as an exec event.
fn ndjson<T: DeserializeOwned>(
    body: impl Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
) -> impl Stream<Item = Result<T, ClientError>> + Unpin {
    lines(body).map(|line| {
        line.and_then(|text| {
            serde_json::from_str::<T>(&text)
                .map_err(|e| ClientError::Protocol(format!("bad event line: {e}")))
        })
    })
}

/// Parses a Server-Sent Events stream, yielding the JSON `data:` of each message.
fn sse_events(
    body: impl Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
) -> impl Stream<Item = Result<Event, ClientError>> + Unpin {
    let lines = lines(body);
    Box::pin(futures::stream::unfold(
        (lines, String::new()),
        |(mut lines, mut data)| async move {
            loop {
                match lines.next().await? {
                    Err(e) => return Some((Err(e), (lines, data))),
                    // A blank line ends a message.
                    Ok(line) if line.is_empty() => {
                        if data.is_empty() {
                            continue;
                        }
                        let event = serde_json::from_str::<Event>(&data)
                            .map_err(|e| ClientError::Protocol(format!("bad event: {e}")));
                        data.clear();
                        return Some((event, (lines, data)));
                    }
                    Ok(line) => {
                        if let Some(value) = line.strip_prefix("data:") {
                            if !data.is_empty() {
                                data.push('\n');
                            }
                            data.push_str(value.strip_prefix(' ').unwrap_or(value));
                        }
                    }
                }
            }
        },
    ))
}

/// Splits a byte stream into text lines (without their `\n`).
fn lines(
    body: impl Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
) -> impl Stream<Item = Result<String, ClientError>> + Unpin {
    Box::pin(futures::stream::unfold(
        (body, BytesMut::new(), false),
        |(mut body, mut buffer, done)| async move {
            loop {
                if let Some(newline) = buffer.iter().position(|&b| b == b'\n') {
                    let line = buffer.split_to(newline + 1);
                    let text = String::from_utf8_lossy(&line[..newline])
                        .trim_end_matches('\r')
                        .to_owned();
                    return Some((Ok(text), (body, buffer, done)));
                }
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        return Some((
                            Err(ClientError::Protocol(e.to_string())),
                            (body, BytesMut::new(), true),
                        ))
                    }
                    None => return None,
                }
            }
        },
    ))
}
