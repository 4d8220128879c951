//! `GET /healthz`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Liveness of the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: String,
    /// The daemon's version.
    pub version: String,
}
