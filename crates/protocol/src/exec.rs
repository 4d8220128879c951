//! Running a command in a sandbox: collected (`POST …/exec`) and streamed (`POST …/exec/stream`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Encoding, ErrorDetail};

/// Body of `POST /v1/sandboxes/{id}/exec` and `…/exec/stream`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"cmd": ["sh", "-c", "echo hello; echo oops >&2"], "timeout": 10}))]
pub struct ExecRequest {
    /// The argv; `cmd[0]` is looked up in `PATH` unless it contains a `/`. Not run by a shell.
    #[schema(min_items = 1)]
    pub cmd: Vec<String>,
    /// Bytes written to the command's standard input, then closed. Omitted: `/dev/null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Encoding of `stdin` (default `utf-8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_encoding: Option<Encoding>,
    /// Extra environment for this command, over the sandbox's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute); default the user's home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// `user` (uid 1000, the default), `root` (root inside the sandbox only), or a numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Time before the command and its whole process group are killed (default: none): seconds
    /// (`10`, `0.5`) or text (`"30s"`, `"1h"`), at most 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<crate::DurationValue>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExitInfo {
    /// The exit status; `128 + signal` when a signal ended it (as shells report).
    pub exit_code: i32,
    /// The signal that ended it, if any.
    #[serde(default)]
    pub signal: Option<i32>,
    /// True when `timeout` elapsed and sbx killed the process group.
    pub timed_out: bool,
    /// Wall time from start to exit, in milliseconds.
    pub duration_ms: f64,
}

/// Response of the collected exec. Outputs larger than the collection limit (16 MiB per
/// stream) are cut and flagged `*_truncated`; use the streaming form for more.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    pub exit_code: i32,
    #[serde(default)]
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: f64,
    pub stdout: String,
    pub stdout_encoding: Encoding,
    pub stdout_truncated: bool,
    pub stderr: String,
    pub stderr_encoding: Encoding,
    pub stderr_truncated: bool,
}

/// One line of the streaming exec response (`application/x-ndjson`). The last line is
/// always `exit` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    /// The process is running; `pid` is its pid inside the sandbox.
    Started { pid: u32 },
    /// A chunk of standard output, in order.
    Stdout { data: String, encoding: Encoding },
    /// A chunk of standard error, in order.
    Stderr { data: String, encoding: Encoding },
    /// The process ended.
    Exit(ExitInfo),
    /// The exec failed after the response began (e.g. the sandbox was destroyed).
    Error { error: ErrorDetail },
}

/// Query of `GET /v1/sandboxes/{id}/pty` (a WebSocket upgrade).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminalRequest {
    /// The program and arguments (repeat `cmd=` per argument); default a login shell.
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Initial size (default 24 × 80).
    #[serde(default)]
    pub rows: Option<u16>,
    #[serde(default)]
    pub cols: Option<u16>,
}

/// A control message from the client, in a WebSocket text frame. Terminal input itself goes in
/// binary frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TerminalControl {
    /// The window changed size.
    Resize { rows: u16, cols: u16 },
    /// Deliver a signal (`INT`, `TERM`, `KILL`, `HUP`, `QUIT`, `TSTP`, `CONT`, `WINCH`, `USR1`,
    /// `USR2`, or a number) to the terminal's process group.
    Signal { signal: String },
}

/// A control message from the server, in a WebSocket text frame. Terminal output itself comes
/// in binary frames; `exit` (or `error`) is the last message before the server closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalEvent {
    Started { pid: u32 },
    Exit(ExitInfo),
    Error { error: ErrorDetail },
}
