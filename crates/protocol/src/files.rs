//! Files of a sandbox: what `/v1/sandboxes/{id}/files…` takes and answers. The bytes of a
//! file travel raw (`application/octet-stream`), never in JSON.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// A FIFO, a socket or a device.
    Other,
}

/// One entry of a sandbox's filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileInfo {
    /// Absolute path inside the sandbox.
    pub path: String,
    pub kind: FileKind,
    /// Bytes.
    pub size: u64,
    /// Permission bits (`420` is `0644`).
    pub mode: u32,
    /// `user`, `root`, or the uid.
    pub owner: String,
    pub uid: u32,
    pub gid: u32,
    /// RFC 3339, UTC.
    pub modified_at: String,
    /// Where a symlink points (as written; resolved inside the sandbox only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

/// Body of `GET /v1/sandboxes/{id}/files/list`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    pub entries: Vec<FileInfo>,
    /// The listing stopped at its limit (10,000 entries, or 2 MiB of paths): there is more.
    #[serde(default)]
    pub truncated: bool,
}

/// Body of `POST /v1/sandboxes/{id}/files/mkdir`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MakeDirRequest {
    /// Absolute, or relative to the sandbox user's home. Missing parents are made.
    pub path: String,
    /// Owner: `user` (default), `root`, or a uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Body of `POST /v1/sandboxes/{id}/files/move`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub from: String,
    pub to: String,
    /// Acting as: `user` (default), `root`, or a uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Body of `PUT /v1/sandboxes/{id}/files/archive`: what the archive made.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExtractResult {
    /// The directory it was extracted under.
    pub directory: FileInfo,
    /// How many entries (files, directories, links) went in.
    pub entries: u64,
}

/// Body of a multipart `POST /v1/sandboxes/{id}/files`: the files as written, in the order
/// of the parts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadResult {
    pub files: Vec<FileInfo>,
}

/// One change under a watched directory (`GET /v1/sandboxes/{id}/files/watch`): the SSE
/// event's name is `type`, its data this object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileEvent {
    /// `create`, `write`, `remove`, `rename` (moved away), `chmod`, or `overflow` (some changes
    /// were not told).
    #[serde(rename = "type")]
    pub kind: String,
    /// Absolute path inside the sandbox.
    pub path: String,
    pub is_dir: bool,
}
