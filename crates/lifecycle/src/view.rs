//! Store rows ⇄ lifecycle's own types ([`crate::model`]). The spec column is lifecycle's own
//! JSON ([`StoredSpec`]).

use std::collections::BTreeMap;
use std::time::Duration;

use sbx_store::{EventRow, SandboxRow};
use serde::{Deserialize, Serialize};

use crate::model::{Event, Resources, Sandbox};
use crate::{now_ms, Error, State};

/// The `spec` column: what the sandbox was created with, including its profile's TTL policy at
/// that time (so a later change of the configuration does not change a running sandbox).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSpec {
    pub memory_mb: u64,
    pub cpus: f64,
    pub pids: u64,
    /// Older records had no disk of their own.
    #[serde(default)]
    pub disk_mb: u64,
    pub env: BTreeMap<String, String>,
    /// Longest lifetime of one instance, extensions included.
    pub ttl_max_ms: i64,
    /// Idle time after which the sandbox is reaped.
    #[serde(default)]
    pub idle_ms: Option<i64>,
    /// Reaping an idle sandbox pauses it (rather than destroying it).
    #[serde(default)]
    pub idle_pauses: bool,
    /// Its lifetime does not run while it is paused.
    #[serde(default)]
    pub pause_stops_clock: bool,
    /// An exec, terminal or files call resumes it when paused.
    #[serde(default)]
    pub auto_resume: bool,
    /// The snapshot its files start from (a recreate starts from it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Who commands run as when they do not say: its image's `User`, else `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_user: Option<(u32, u32)>,
    /// What an exec without a command runs: its image's `Entrypoint` + `Cmd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_command: Vec<String>,
    /// Ports anyone may reach through the daemon without a key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_ports: Vec<u16>,
}

/// A paused sandbox whose clock stopped: the lifetime it had left is in its pause mark (it
/// comes back with its resume), and the deadline in its record is its hold, the longest it
/// waits for that resume (`ttl.max` from its pause).
pub fn clock_stopped(row: &SandboxRow) -> bool {
    row.paused_remaining_ms.is_some() && state_of(row).is_ok_and(State::is_suspended)
}

impl StoredSpec {
    pub fn parse(row: &SandboxRow) -> Result<StoredSpec, Error> {
        serde_json::from_str(&row.spec)
            .map_err(|e| Error::internal(format!("sandbox {} has a malformed spec: {e}", row.id)))
    }

    /// Who a command that does not say runs as.
    pub fn default_user(&self) -> sbx_backend::User {
        self.image_user
            .map_or(sbx_backend::User::DEFAULT, |(uid, gid)| sbx_backend::User {
                uid,
                gid,
            })
    }

    pub fn resources(&self) -> Resources {
        Resources {
            memory_mb: self.memory_mb,
            cpus: self.cpus,
            pids: self.pids,
            disk_mb: self.disk_mb,
        }
    }
}

pub fn state_of(row: &SandboxRow) -> Result<State, Error> {
    State::parse(&row.state).ok_or_else(|| {
        Error::internal(format!(
            "sandbox {} has unknown state {:?}",
            row.id, row.state
        ))
    })
}

/// The state as the API shows and enforces it: a running sandbox past its deadline is
/// `expired` even before the reaper (or `expire --apply`, when the reaper is off) records it.
pub fn effective_state(row: &SandboxRow) -> Result<State, Error> {
    let state = state_of(row)?;
    if matches!(state, State::Running | State::Paused | State::Hibernated)
        && row.expires_at <= now_ms()
    {
        return Ok(State::Expired);
    }
    Ok(state)
}

/// The deadline as clients see it: a paused sandbox whose clock stopped shows the one it would
/// have if resumed now.
pub fn shown_deadline(row: &SandboxRow) -> i64 {
    let now = now_ms();
    match row.paused_remaining_ms {
        // Past its hold it is expired: its deadline is the hold's.
        Some(remaining) if clock_stopped(row) && row.expires_at > now => {
            now.saturating_add(remaining).min(row.expires_at.max(now))
        }
        _ => row.expires_at,
    }
}

pub fn sandbox(row: &SandboxRow) -> Result<Sandbox, Error> {
    let spec = StoredSpec::parse(row)?;
    let state = effective_state(row)?;
    let metadata: BTreeMap<String, String> = serde_json::from_str(&row.metadata)
        .map_err(|e| Error::internal(format!("sandbox {} has malformed metadata: {e}", row.id)))?;
    let reason = row
        .state_reason
        .as_deref()
        .map(crate::reason::split)
        .map_or((None, None), |(code, detail)| (Some(code), detail));
    let expires_at = shown_deadline(row);
    let expires_in_seconds = state
        .may_have_host_traces()
        .then(|| u64::try_from((expires_at - now_ms()) / 1000).unwrap_or(0));
    Ok(Sandbox {
        id: row.id.clone(),
        name: row.name.clone(),
        state,
        state_reason: reason.0,
        state_detail: reason.1,
        backend: row.backend.clone(),
        profile: row.profile.clone(),
        owner: row.owner.clone(),
        template: row.template.clone(),
        resources: spec.resources(),
        env: spec.env.keys().cloned().collect(),
        metadata,
        public_ports: spec.public_ports.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
        destroyed_at: row.destroyed_at,
        started_at: row.started_at,
        expires_at,
        paused_at: row.paused_at.filter(|_| state.is_suspended()),
        expires_in_seconds,
        warnings: Vec::new(),
    })
}

pub fn event(row: &EventRow) -> Event {
    let state = |text: &str| State::parse(text).unwrap_or(State::Failed);
    let (reason, detail) = row
        .reason
        .as_deref()
        .map(crate::reason::split)
        .map_or((None, None), |(code, detail)| (Some(code), detail));
    Event {
        seq: row.seq,
        sandbox_id: row.sandbox_id.clone(),
        at: row.at,
        from_state: row.from_state.as_deref().map(state),
        to_state: state(&row.to_state),
        reason,
        detail,
    }
}

/// Times in the audit log's own lines.
pub fn rfc3339(unix_ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
