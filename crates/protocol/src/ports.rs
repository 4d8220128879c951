//! A sandbox's TCP services: what `/v1/sandboxes/{id}/ports` answers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `GET /v1/sandboxes/{id}/ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"ports": [8000]}))]
pub struct PortList {
    /// TCP ports something listens on inside the sandbox, in order; each is reachable at
    /// `/v1/sandboxes/{id}/ports/{port}/`.
    pub ports: Vec<u16>,
}
