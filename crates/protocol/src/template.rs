//! Templates from container images: what `/v1/templates…` takes and answers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One layer of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateLayer {
    /// `sha256:` and the digest of the layer's uncompressed tar (the image's `diff_id`).
    pub digest: String,
    /// What the unpacked layer holds on the host's disk (shared by every template with it).
    pub size_bytes: u64,
}

/// A template made from an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub name: String,
    /// A registry reference pinned to its digest, or the kind of archive it was imported from.
    pub source: String,
    /// The image's manifest digest (a `docker save` archive: its image id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Bottom layer first.
    pub layers: Vec<TemplateLayer>,
    /// The sum of its layers' sizes.
    pub size_bytes: u64,
    /// The image's environment (`KEY=value`): every command's, under the request's own.
    pub env: Vec<String>,
    /// The image's working directory: commands start there unless they say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The image's user: commands that name none run as it (looked up in the image's
    /// `/etc/passwd` when the template was made); `user` when the image has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// With `cmd`, what an exec that gives no `cmd` runs.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Set-user-id and set-group-id bits removed from the image's files while unpacking.
    pub setid_cleared: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// Body of `GET /v1/templates`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}

/// Body of `POST /v1/templates`: pull an image from a registry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullTemplateRequest {
    /// The template's name (1-63 letters, digits, '.', '_' or '-').
    pub name: String,
    /// A reference: `python:3.12`, `registry.example.com:5000/team/tool:1`, `…@sha256:…`.
    pub image: String,
    /// Credentials for the registry, when it asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// How far a pull or an import has come: one line of the `application/x-ndjson` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateProgress {
    /// `receive`, `unpack`, `reuse` (a layer already stored) or `done`.
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    pub done: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// One line of a pull's or an import's `application/x-ndjson` answer: progress lines, then
/// the template or an error.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateEvent {
    Progress(TemplateProgress),
    Template(Template),
    Error(crate::ErrorDetail),
}
