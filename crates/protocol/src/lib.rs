//! Wire types of the sbx HTTP API (`/v1`).
//!
//! Owns: every JSON shape a client sends or receives, and the OpenAPI schema of each
//! (`utoipa::ToSchema`). Must never: hold behaviour beyond encoding helpers, or depend on
//! anything heavier than serde-level crates — the CLI, the daemon and outside SDKs all build on it.
//!
//! Request types reject unknown fields (`deny_unknown_fields`): a misspelt option is an error,
//! never silently ignored.

mod auth;
mod duration;
mod encoding;
mod error;
mod exec;
mod files;
mod health;
mod ops;
mod ports;
mod project;
mod sandbox;
mod snapshot;
mod template;

pub use auth::{
    AuditEntry, AuditList, CreateKeyRequest, CreatedKey, Identity, KeyInfo, KeyList, LoginRequest,
};
pub use duration::DurationValue;
pub use encoding::{decode_data, encode_base64_into, encode_data, DataShape, Encoding};
pub use error::{ErrorBody, ErrorDetail};
pub use exec::{
    ExecEvent, ExecRequest, ExecResult, ExitInfo, TerminalControl, TerminalEvent, TerminalRequest,
};
pub use files::{
    ExtractResult, FileEvent, FileInfo, FileKind, FileList, MakeDirRequest, MoveRequest,
    UploadResult,
};
pub use health::Health;
pub use ops::{
    BackendStatus, CleanupReport, CleanupRequest, Event, EventList, ExpireRequest, ExpireResult,
    ExtendRequest, GvisorStatus, ProfileInfo, ProfileList, ProfileStatus, SandboxStatus, Status,
};
pub use ports::{PortList, PortShare, PortShareRequest};
pub use project::{
    ActiveList, ActiveSandbox, CreateFragmentRequest, CreateProjectRequest, Deactivated,
    FileContent, Fragment, FragmentDetail, FragmentEntry, FragmentList, Project, ProjectList,
    Share, ShareRequest, SwitchRequest,
};
pub use sandbox::{
    CreateSandboxRequest, Resources, ResourcesRequest, Sandbox, SandboxList, SandboxState,
};
pub use snapshot::{CreateSnapshotRequest, RecreateRequest, Snapshot, SnapshotList};
pub use template::{
    PullTemplateRequest, Template, TemplateEvent, TemplateLayer, TemplateList, TemplateProgress,
};

/// Media type of the streaming exec response: one JSON `ExecEvent` per line.
pub const NDJSON: &str = "application/x-ndjson";
