//! Projects, their fragments and users' active sandboxes: what `/v1/projects…` and
//! `/v1/users…` take and answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Sandbox;

/// A project: files kept as fragments (immutable versions), owned by a user and shared with
/// others read-only or read-write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    /// `proj-` and 26 lowercase letters and digits.
    pub id: String,
    pub owner: String,
    /// Unique among its owner's projects.
    pub name: String,
    /// The directory of a sandbox its fragments' paths are relative to.
    pub root: String,
    /// The port its preview URL names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The profile its sandboxes are made with (absent: the daemon's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// What the caller may do with it: `owner`, `write` or `read`.
    pub access: String,
    /// Users it is shared with (shown to its owner and admins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<Share>,
    /// How many fragments it keeps.
    pub fragments: u64,
    /// Its newest fragment: what a switch restores unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_fragment: Option<String>,
}

/// A user a project is shared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Share {
    pub user: String,
    /// `read` or `write`.
    pub access: String,
}

/// Body of `GET /v1/projects`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}

/// One file of a fragment given as JSON: its text, or `{"base64": …}` for bytes, with an
/// optional mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FileContent {
    Text(String),
    Data {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
        /// Permission bits, `0o644` when absent (set-id bits are cleared).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
}

/// Most files a JSON map may hold: it is decoded whole before anything else looks at it, so
/// the count is bounded while it is read (a tar upload, read as a stream, holds more).
pub const MAX_JSON_FILES: usize = 100_000;

/// A map of files, refused as soon as it holds more than [`MAX_JSON_FILES`].
fn bounded_files<'de, D>(deserializer: D) -> Result<Option<BTreeMap<String, FileContent>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::{Error, MapAccess, Visitor};
    struct Files;
    impl<'de> Visitor<'de> for Files {
        type Value = Option<BTreeMap<String, FileContent>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a map of at most {MAX_JSON_FILES} paths to contents")
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut files = BTreeMap::new();
            while let Some((path, content)) = map.next_entry::<String, FileContent>()? {
                if files.len() >= MAX_JSON_FILES {
                    return Err(A::Error::custom(format!(
                        "more than {MAX_JSON_FILES} files: send a tar archive instead"
                    )));
                }
                files.insert(path, content);
            }
            Ok(Some(files))
        }
    }
    deserializer.deserialize_option(Files)
}

/// Body of `POST /v1/projects`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectRequest {
    /// 1-64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit.
    pub name: String,
    /// The directory of a sandbox its files live in (default `/home/user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The port its preview URL names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The profile its sandboxes are made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Files of a first fragment: relative path → content (at most 100,000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_files"
    )]
    pub files: Option<BTreeMap<String, FileContent>>,
}

/// Body of `PUT /v1/projects/{project}/shares/{user}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// `read` (list, inspect, download, switch to it) or `write` (also make and delete
    /// fragments).
    pub access: String,
}

/// A fragment: one immutable version of a project's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Fragment {
    /// `frag-` and 26 lowercase letters and digits.
    pub id: String,
    pub project_id: String,
    pub created_by: String,
    /// Where its files came from: `files`, `tar`, or `sandbox:<id>`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Regular files in it.
    pub files: u64,
    /// Bytes of their content (blobs shared with other fragments are stored once).
    pub bytes: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Whether it is its project's newest.
    pub latest: bool,
}

/// Body of `GET /v1/projects/{project}/fragments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FragmentList {
    pub fragments: Vec<Fragment>,
}

/// One entry of a fragment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FragmentEntry {
    /// Relative to the project's root.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub mode: u32,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Body of `GET /v1/projects/{project}/fragments/{fragment}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FragmentDetail {
    #[serde(flatten)]
    pub fragment: Fragment,
    pub entries: Vec<FragmentEntry>,
}

/// Body of `POST /v1/projects/{project}/fragments` as JSON (a tar stream is sent as
/// `application/x-tar` instead): exactly one of `files`, `sandbox` and `snapshot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFragmentRequest {
    /// Relative path → content (at most 100,000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_files"
    )]
    pub files: Option<BTreeMap<String, FileContent>>,
    /// A running sandbox (the caller's) whose files under the project's root become the
    /// fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// A filesystem snapshot (the caller's) whose files under the project's root become the
    /// fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// With `sandbox` or `snapshot`: names of files or directories to leave out, at any depth
    /// (such as `node_modules`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Body of `PUT /v1/users/{user}/active`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    /// A project id, the name of one of the user's own, or `owner/name`.
    pub project: String,
    /// A fragment id of that project, or `latest` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragment: Option<String>,
    /// The new sandbox's profile (default: the project's, else the daemon's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// First save the old active sandbox's files as a new fragment of its project.
    #[serde(default)]
    pub save_on_switch: bool,
    /// What that save leaves out (names of files or directories, at any depth).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// A user's active sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActiveSandbox {
    pub user: String,
    pub project_id: String,
    /// Absent once the project was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    /// The fragment restored into it (absent: the project had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragment_id: Option<String>,
    pub sandbox: Sandbox,
    /// Whether the sandbox still runs; a dead or expired one is replaced by the next switch.
    pub alive: bool,
    /// How many files the switch restored.
    pub restored_files: u64,
    /// The port of the project's preview, and its URL's path on this daemon
    /// (`/v1/sandboxes/{id}/ports/{port}/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_path: Option<String>,
    /// The host of host-based routing (`{port}-{id}.{domain}`), when a domain is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_host: Option<String>,
    /// RFC 3339, UTC: when the switch made it, and its last use through the API.
    pub created_at: String,
    pub last_used_at: String,
    /// The fragment the switch saved the old sandbox's files as (`save_on_switch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_fragment: Option<String>,
}

/// Body of `GET /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActiveList {
    pub users: Vec<ActiveSandbox>,
}

/// Body of `DELETE /v1/users/{user}/active`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deactivated {
    pub user: String,
    pub sandbox_id: String,
    /// Whether it was still alive (and was destroyed now).
    pub killed: bool,
}

#[cfg(test)]
mod bounded_tests {
    use super::*;

    #[test]
    fn a_map_of_files_is_bounded_while_it_is_read() {
        let few: CreateFragmentRequest =
            serde_json::from_str(r#"{"files": {"a": "1", "b": {"base64": "Mg=="}}}"#).unwrap();
        assert_eq!(few.files.unwrap().len(), 2);
        let none: CreateFragmentRequest = serde_json::from_str(r#"{"files": null}"#).unwrap();
        assert!(none.files.is_none());
        let absent: CreateFragmentRequest = serde_json::from_str("{}").unwrap();
        assert!(absent.files.is_none());
        let many: String = (0..=MAX_JSON_FILES)
            .map(|n| format!("\"f{n}\":\"\""))
            .collect::<Vec<_>>()
            .join(",");
        let error =
            serde_json::from_str::<CreateFragmentRequest>(&format!("{{\"files\":{{{many}}}}}"))
                .unwrap_err();
        assert!(error.to_string().contains("send a tar archive"), "{error}");
    }
}
