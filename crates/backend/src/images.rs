//! Templates made from container images: what the daemon's image store offers lifecycle.
//!
//! The store itself (layers unpacked once, content-addressed, shared by every template and
//! sandbox that uses them) is the `sbx-images` crate; backends that build roots from its layers
//! reach it directly, lifecycle through [`Images`].

use std::pin::Pin;

use async_trait::async_trait;

/// What an image says a process should start with (its `config` object).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageConfig {
    /// `KEY=value` entries.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
}

/// One layer of a template: its content digest (of the uncompressed tar, the image's
/// `diff_id`) and what it holds on the host's disk.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TemplateLayer {
    pub digest: String,
    pub bytes: u64,
}

/// A template made from an image.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageTemplate {
    pub name: String,
    /// Where it came from: a registry reference pinned to its digest, or the kind of archive.
    pub source: String,
    /// The image manifest's digest, when the source had one.
    pub digest: Option<String>,
    /// Bottom layer first.
    pub layers: Vec<TemplateLayer>,
    pub config: ImageConfig,
    pub created_ms: i64,
    /// Set-user-id and set-group-id bits the unpacking removed.
    #[serde(default)]
    pub setid_cleared: u64,
    /// The image's `User` as ids (names looked up in its `/etc/passwd` and `/etc/group`):
    /// who commands run as when they do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<(u32, u32)>,
}

impl ImageTemplate {
    /// What the image runs by default (`Entrypoint` then `Cmd`); empty when it says nothing.
    pub fn command(&self) -> Vec<String> {
        self.config
            .entrypoint
            .iter()
            .chain(&self.config.cmd)
            .cloned()
            .collect()
    }
}

/// Where a new template's image comes from.
pub enum ImageSource {
    /// A registry reference (`python:3.12`, `localhost:5000/team/tool@sha256:…`), with
    /// credentials when the registry asks for them.
    Registry {
        reference: String,
        username: Option<String>,
        password: Option<String>,
    },
    /// An archive streamed in: a root file system tarball, a `docker save` archive or an OCI
    /// image layout as a tar (plain, gzip or zstd).
    Archive(Pin<Box<dyn tokio::io::AsyncRead + Send>>),
}

/// How far a pull or an import has come (sent as it goes; a slow reader misses some).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageProgress {
    /// `receive` (bytes of an archive or a layer arriving), `unpack`, `reuse` (a layer
    /// already stored), `done`.
    pub step: String,
    pub layer: Option<String>,
    pub done: u64,
    pub total: Option<u64>,
}

pub type ProgressSender = tokio::sync::mpsc::Sender<ImageProgress>;

/// Why the image store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("template {0:?} does not exist")]
    NotFound(String),
    #[error("template {0:?} already exists")]
    Exists(String),
    /// The image or archive is malformed or hostile; the message names the entry.
    #[error("{0}")]
    Invalid(String),
    /// The registry refused or could not be reached; the message says which.
    #[error("{0}")]
    Registry(String),
    /// More than the store takes (the message names the limit).
    #[error("{0}")]
    TooLarge(String),
    /// Too many pulls and imports at once.
    #[error("{0}")]
    Busy(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> ImageError {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The image store as lifecycle uses it.
#[async_trait]
pub trait Images: Send + Sync {
    async fn list(&self) -> Result<Vec<ImageTemplate>, ImageError>;
    async fn get(&self, name: &str) -> Result<Option<ImageTemplate>, ImageError>;
    /// Makes template `name` from `source` (refused when the name is taken).
    async fn make(
        &self,
        name: &str,
        source: ImageSource,
        progress: ProgressSender,
    ) -> Result<ImageTemplate, ImageError>;
    /// Removes template `name` and every layer no other template uses.
    async fn remove(&self, name: &str) -> Result<(), ImageError>;
}
