//! Sandbox resources: create, get, list, delete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /v1/sandboxes`. Every field is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// Profile to create from (default `default`): backend, template, limits and TTL policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Lifetime: text (`30m`, `4h`, `1d`, `1h30m`) or whole seconds (`1800`) (default: the
    /// profile's `ttl.default`; capped at its `ttl.max`, with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "30m")]
    pub ttl: Option<crate::DurationValue>,
    /// Root filesystem to start from; default the profile's (`host`: a read-only view of the
    /// host's `/usr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A label, unique among live sandboxes: 1–63 of `[A-Za-z0-9_.-]`, starting alphanumeric.
    /// Routes taking `{id}` also accept the name of a live sandbox. Not starting with `sb-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", example = "web-1")]
    pub name: Option<String>,
    /// Environment variables given to every process in the sandbox.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Resource limits; each omitted field takes its default.
    #[serde(
        default,
        deserialize_with = "object_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub resources: Option<ResourcesRequest>,
    /// Free-form labels, filterable in `GET /v1/sandboxes`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// A snapshot of the caller's to start from: the sandbox's files are the snapshot's (its
    /// template is the snapshot's; the profile must use the backend that stores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// A hibernated sandbox of the caller's to fork: the new sandbox is restored from its
    /// checkpoint — the same processes and memory, carrying on in a sandbox of their own —
    /// with its profile, template and resources (asking for others is refused). Where the
    /// backend can hibernate (gVisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_of: Option<String>,
    /// Ports anyone may reach through the daemon without a key
    /// (`/v1/sandboxes/{id}/ports/{port}/…`, `{port}-{id}.{domain}`); every other port needs the
    /// owner's key or a share link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_ports: Vec<u16>,
}

/// A nested request object, or null. Serde's derived `Deserialize` would also read a struct
/// from an array, by field order (`"resources": [512]`), which no client means.
fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectOrNull<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOrNull<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object or null")
        }

        fn visit_none<E>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Option<T>, D::Error> {
            deserializer.deserialize_any(self)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_option(ObjectOrNull(std::marker::PhantomData))
}

/// Requested limits (defaults: the profile's; built in 512 MiB, 1 CPU, 256 processes).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesRequest {
    /// Memory limit in MiB (RAM; swap is not granted on top), at most the host's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 32)]
    pub memory_mb: Option<u64>,
    /// CPU quota in CPUs (fractions allowed, e.g. 0.5), at most the host's CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.01)]
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 8, maximum = 32768)]
    pub pids: Option<u64>,
    /// Disk the sandbox may fill (its writable root and home), in MiB, at most the data
    /// directory's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 64)]
    pub disk_mb: Option<u64>,
}

/// Effective limits of a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Resources {
    pub memory_mb: u64,
    pub cpus: f64,
    pub pids: u64,
    pub disk_mb: u64,
}

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// The backend is building it.
    Creating,
    /// Ready for exec.
    Running,
    /// Frozen: its processes keep their state and use no CPU until it is resumed.
    Paused,
    /// Checkpointed to disk (processes and memory) with no host process left; a resume
    /// restores it where it was.
    Hibernated,
    /// Past its deadline; about to be destroyed (reason `expired`).
    Expired,
    /// Being torn down.
    Destroying,
    /// Gone from the host; the record stays for history.
    Destroyed,
    /// Creation failed or the sandbox died on its own; see `state_reason`.
    Failed,
}

impl SandboxState {
    pub const ALL: [SandboxState; 8] = [
        SandboxState::Creating,
        SandboxState::Running,
        SandboxState::Paused,
        SandboxState::Hibernated,
        SandboxState::Expired,
        SandboxState::Destroying,
        SandboxState::Destroyed,
        SandboxState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Hibernated => "hibernated",
            SandboxState::Expired => "expired",
            SandboxState::Destroying => "destroying",
            SandboxState::Destroyed => "destroyed",
            SandboxState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<SandboxState> {
        SandboxState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    /// Unguessable id: `sb-` followed by 26 base32 characters (128 random bits).
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub state: SandboxState,
    /// Why the sandbox reached its state, a stable code: `created`, `deleted`, `expired`,
    /// `idle`, `extended`, `recreated`, `failed`, `daemon-shutdown`, `daemon-restart`,
    /// `daemon-cleanup`.
    #[serde(default)]
    pub state_reason: Option<String>,
    /// More about the reason, for people (e.g. what failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_detail: Option<String>,
    /// The isolation backend running it (`native`).
    pub backend: String,
    /// The profile it was created from.
    pub profile: String,
    /// The user whose key created it.
    #[serde(default)]
    pub owner: Option<String>,
    pub template: String,
    pub resources: Resources,
    /// Names of the sandbox's environment variables (values are not echoed back).
    pub env: Vec<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Ports anyone may reach through the daemon without a key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_ports: Vec<u16>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC; the last state change.
    pub updated_at: String,
    /// RFC 3339, UTC; set once destroyed.
    #[serde(default)]
    pub destroyed_at: Option<String>,
    /// RFC 3339, UTC; when the current instance started (create or recreate).
    pub started_at: String,
    /// RFC 3339, UTC; the deadline, after which the sandbox is destroyed (reason `expired`).
    pub expires_at: String,
    /// Whole seconds left before `expires_at` (0 when past); absent once the sandbox is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
    /// RFC 3339, UTC: when it was paused, while it is. (While a paused sandbox's clock is
    /// stopped, `expires_at` is the deadline it would have if resumed now.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    /// What the request asked for but did not get (e.g. a TTL capped at the profile's maximum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Body of `GET /v1/sandboxes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_must_be_an_object_or_null() {
        let parse = |json: &str| serde_json::from_str::<CreateSandboxRequest>(json);
        let request = parse(r#"{"resources":{"memory_mb":64}}"#).unwrap();
        assert_eq!(request.resources.unwrap().memory_mb, Some(64));
        assert!(parse(r#"{"resources":null}"#).unwrap().resources.is_none());
        assert!(parse("{}").unwrap().resources.is_none());
        for bad in [
            r#"{"resources":[null, null]}"#,
            r#"{"resources":[64]}"#,
            r#"{"resources":1}"#,
            r#"{"resources":{"memory":1}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
