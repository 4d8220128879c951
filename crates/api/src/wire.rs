//! sbx's wire format ⇄ lifecycle's own types: requests decoded (durations, base64 stdin) into
//! [`sbx_lifecycle::model`], answers encoded (RFC 3339 times, state names, duration text) from
//! it. The one place where the two meet; another API surface has a module like this of its
//! own and calls the same lifecycle operations.

use std::time::{Duration, UNIX_EPOCH};

use sbx_lifecycle::model;
use sbx_lifecycle::State;
use sbx_protocol as wire;

use crate::ApiError;

// ---- requests -------------------------------------------------------------------------------

pub fn new_sandbox(request: &wire::CreateSandboxRequest) -> Result<model::NewSandbox, ApiError> {
    let resources = request.resources.clone().unwrap_or_default();
    Ok(model::NewSandbox {
        profile: request.profile.clone(),
        ttl: request
            .ttl
            .as_ref()
            .map(|ttl| span(ttl, "ttl"))
            .transpose()?,
        template: request.template.clone(),
        name: request.name.clone(),
        env: request.env.clone(),
        resources: model::ResourceRequest {
            memory_mb: resources.memory_mb,
            cpus: resources.cpus,
            pids: resources.pids,
            disk_mb: resources.disk_mb,
        },
        metadata: request.metadata.clone(),
        snapshot: request.from_snapshot.clone(),
        fork_of: request.fork_of.clone(),
        public_ports: request.public_ports.clone(),
        // sbx's own keys are never a request's.
        labels: Default::default(),
    })
}

pub fn snapshot(snapshot: model::Snapshot) -> wire::Snapshot {
    wire::Snapshot {
        id: snapshot.id,
        name: snapshot.name,
        owner: snapshot.owner,
        backend: snapshot.backend,
        template: snapshot.template,
        profile: snapshot.profile,
        sandbox_id: snapshot.sandbox_id,
        parent: snapshot.parent,
        size_bytes: snapshot.size_bytes,
        created_at: rfc3339(snapshot.created_at),
    }
}

pub fn exec_request(request: &wire::ExecRequest) -> Result<model::ExecRequest, ApiError> {
    let stdin = match &request.stdin {
        None => None,
        Some(data) => Some(
            wire::decode_data(data, request.stdin_encoding.unwrap_or_default())
                .map_err(|e| ApiError::invalid(format!("stdin: {e}")))?,
        ),
    };
    Ok(model::ExecRequest {
        cmd: request.cmd.clone(),
        stdin,
        stdin_open: false,
        env: request.env.clone(),
        cwd: request.cwd.clone(),
        user: request.user.clone(),
        timeout: request
            .timeout
            .as_ref()
            .map(|timeout| span(timeout, "timeout"))
            .transpose()?,
    })
}

pub fn terminal_request(request: &wire::TerminalRequest) -> model::TerminalRequest {
    model::TerminalRequest {
        cmd: request.cmd.clone(),
        env: Default::default(),
        user: request.user.clone(),
        cwd: request.cwd.clone(),
        rows: request.rows,
        cols: request.cols,
    }
}

/// A duration with the caller's own words for it (messages repeat them).
pub fn span(value: &wire::DurationValue, field: &str) -> Result<model::Span, ApiError> {
    Ok(model::Span {
        value: duration(value, field)?,
        written: value.to_string(),
    })
}

/// A duration as the API takes it: seconds (a number above 0) or text (`1h30m`).
pub fn duration(value: &wire::DurationValue, field: &str) -> Result<Duration, ApiError> {
    match value {
        wire::DurationValue::Seconds(seconds) => Duration::try_from_secs_f64(*seconds)
            .ok()
            .filter(|d| !d.is_zero() && *seconds > 0.0)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "{field} must be a number of seconds above 0 (or text like \"30s\"), got {seconds}"
                ))
            }),
        wire::DurationValue::Text(text) => sbx_config::duration::parse(text)
            .map_err(|e| ApiError::invalid(format!("{field}: {e}"))),
    }
}

/// A state named in a query.
pub fn state_named(name: &str) -> Result<State, ApiError> {
    State::parse(name).ok_or_else(|| {
        ApiError::invalid(format!(
            "unknown state {name:?}; states are {}",
            State::names_where(|_| true).join(", ")
        ))
    })
}

// ---- answers --------------------------------------------------------------------------------

pub fn rfc3339(unix_ms: model::UnixMs) -> String {
    // RFC 3339 ends at year 9999 (a file's mtime may be set past it).
    const LAST: i64 = 253_402_300_799_999;
    let time = UNIX_EPOCH + Duration::from_millis(unix_ms.clamp(0, LAST) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

pub fn state(state: State) -> wire::SandboxState {
    match state {
        State::Creating => wire::SandboxState::Creating,
        State::Running => wire::SandboxState::Running,
        State::Paused => wire::SandboxState::Paused,
        State::Hibernated => wire::SandboxState::Hibernated,
        State::Expired => wire::SandboxState::Expired,
        State::Destroying => wire::SandboxState::Destroying,
        State::Destroyed => wire::SandboxState::Destroyed,
        State::Failed => wire::SandboxState::Failed,
    }
}

pub fn resources(r: &model::Resources) -> wire::Resources {
    wire::Resources {
        memory_mb: r.memory_mb,
        cpus: r.cpus,
        pids: r.pids,
        disk_mb: r.disk_mb,
    }
}

pub fn sandbox(s: model::Sandbox) -> wire::Sandbox {
    wire::Sandbox {
        id: s.id,
        name: s.name,
        state: state(s.state),
        state_reason: s.state_reason,
        state_detail: s.state_detail,
        backend: s.backend,
        profile: s.profile,
        owner: s.owner,
        template: s.template,
        resources: resources(&s.resources),
        env: s.env,
        metadata: s.metadata,
        public_ports: s.public_ports,
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
        destroyed_at: s.destroyed_at.map(rfc3339),
        started_at: rfc3339(s.started_at),
        expires_at: rfc3339(s.expires_at),
        expires_in_seconds: s.expires_in_seconds,
        paused_at: s.paused_at.map(rfc3339),
        warnings: s.warnings,
    }
}

pub fn sandboxes(list: Vec<model::Sandbox>) -> Vec<wire::Sandbox> {
    list.into_iter().map(sandbox).collect()
}

pub fn event(e: &model::Event) -> wire::Event {
    wire::Event {
        seq: e.seq,
        sandbox_id: e.sandbox_id.clone(),
        at: rfc3339(e.at),
        from_state: e.from_state.map(state),
        to_state: state(e.to_state),
        reason: e.reason.clone(),
        detail: e.detail.clone(),
    }
}

pub fn status(s: model::Status) -> wire::Status {
    wire::Status {
        version: s.version,
        started_at: rfc3339(s.started_at),
        uptime_seconds: s.uptime_seconds,
        backends: s
            .backends
            .into_iter()
            .map(|b| wire::BackendStatus {
                name: b.name,
                healthy: b.healthy,
                detail: b.detail,
                capabilities: b.capabilities,
                isolation: b.isolation,
            })
            .collect(),
        profiles: s
            .profiles
            .into_iter()
            .map(|p| wire::ProfileStatus {
                name: p.name,
                backend: p.backend,
                isolation: p.isolation,
                gvisor: wire::GvisorStatus {
                    requested: p.gvisor_requested,
                    available: p.gvisor_available,
                },
            })
            .collect(),
        counts: s
            .counts
            .into_iter()
            .map(|(state, count)| (state.as_str().to_owned(), count))
            .collect(),
        sandboxes: s
            .sandboxes
            .into_iter()
            .map(|s| wire::SandboxStatus {
                id: s.id,
                name: s.name,
                profile: s.profile,
                state: state(s.state),
                owner: s.owner,
                init_pid: s.init_pid,
                alive: s.alive,
                expires_at: rfc3339(s.expires_at),
                memory_bytes: s.memory_bytes,
                cpu_seconds: s.cpu_seconds,
                pids: s.pids,
            })
            .collect(),
    }
}

pub fn cleanup_report(r: model::CleanupReport) -> wire::CleanupReport {
    wire::CleanupReport {
        dry_run: r.dry_run,
        sandboxes: r.sandboxes,
        orphans: r.orphans,
    }
}

pub fn expire_result(r: model::ExpireResult) -> wire::ExpireResult {
    wire::ExpireResult {
        applied: r.applied,
        sandboxes: sandboxes(r.sandboxes),
    }
}

pub fn profile(p: model::ProfileInfo) -> wire::ProfileInfo {
    use sbx_config::duration::format;
    wire::ProfileInfo {
        name: p.name,
        backend: p.backend,
        template: p.template,
        network: p.network,
        resources: resources(&p.resources),
        max_resources: resources(&p.max_resources),
        ttl_default: format(p.ttl_default),
        ttl_max: format(p.ttl_max),
        ttl_idle: p.ttl_idle.map(format),
        idle_action: p.idle_action.as_str().into(),
        pause_stops_clock: p.pause_stops_clock,
        auto_resume: p.auto_resume,
    }
}

pub fn file_info(f: sbx_lifecycle::FileInfo) -> wire::FileInfo {
    let owner = match f.owner.uid {
        0 => "root".to_owned(),
        1000 => "user".to_owned(),
        uid => uid.to_string(),
    };
    wire::FileInfo {
        path: f.path,
        kind: match f.kind {
            sbx_lifecycle::FileKind::File => wire::FileKind::File,
            sbx_lifecycle::FileKind::Directory => wire::FileKind::Directory,
            sbx_lifecycle::FileKind::Symlink => wire::FileKind::Symlink,
            sbx_lifecycle::FileKind::Other => wire::FileKind::Other,
        },
        size: f.size,
        mode: f.mode,
        owner,
        uid: f.owner.uid,
        gid: f.owner.gid,
        modified_at: rfc3339(f.modified_ms),
        symlink_target: f.symlink_target,
    }
}

pub fn key_info(k: model::KeyInfo) -> wire::KeyInfo {
    wire::KeyInfo {
        id: k.id,
        user: k.user,
        admin: k.admin,
        created_at: rfc3339(k.created_at),
        revoked_at: k.revoked_at.map(rfc3339),
    }
}

pub fn created_key(k: model::CreatedKey) -> wire::CreatedKey {
    wire::CreatedKey {
        e2b_key: sbx_lifecycle::access::e2b_form(&k.key),
        key: k.key,
        info: key_info(k.info),
    }
}

pub fn audit_entry(e: sbx_lifecycle::AuditEntry) -> wire::AuditEntry {
    wire::AuditEntry {
        at: e.at,
        event: e.event,
        user: e.user,
        key_id: e.key_id,
        ip: e.ip,
        request_id: e.request_id,
        sandbox_id: e.sandbox_id,
        details: e.details,
    }
}

pub fn template(template: sbx_lifecycle::ImageTemplate) -> wire::Template {
    wire::Template {
        size_bytes: template.layers.iter().map(|l| l.bytes).sum(),
        layers: template
            .layers
            .into_iter()
            .map(|l| wire::TemplateLayer {
                digest: l.digest,
                size_bytes: l.bytes,
            })
            .collect(),
        name: template.name,
        source: template.source,
        digest: template.digest,
        env: template.config.env,
        working_dir: template.config.working_dir,
        user: template.config.user,
        entrypoint: template.config.entrypoint,
        cmd: template.config.cmd,
        setid_cleared: template.setid_cleared,
        created_at: rfc3339(template.created_ms),
    }
}

pub fn template_progress(progress: sbx_lifecycle::ImageProgress) -> wire::TemplateProgress {
    wire::TemplateProgress {
        step: progress.step,
        layer: progress.layer,
        done: progress.done,
        total: progress.total,
    }
}

pub fn project(p: model::Project) -> wire::Project {
    wire::Project {
        id: p.id,
        owner: p.owner,
        name: p.name,
        root: p.root,
        port: p.port,
        profile: p.profile,
        created_at: rfc3339(p.created_at),
        access: p.access.to_owned(),
        shares: p
            .shares
            .into_iter()
            .map(|(user, access)| wire::Share { user, access })
            .collect(),
        fragments: p.fragments,
        latest_fragment: p.latest_fragment,
    }
}

pub fn fragment(f: model::Fragment) -> wire::Fragment {
    wire::Fragment {
        id: f.id,
        project_id: f.project_id,
        created_by: f.created_by,
        source: f.source,
        message: f.message,
        files: f.files,
        bytes: f.bytes,
        created_at: rfc3339(f.created_at),
        latest: f.latest,
    }
}

pub fn fragment_entry(e: model::FragmentEntry) -> wire::FragmentEntry {
    wire::FragmentEntry {
        path: e.path,
        kind: e.kind,
        mode: e.mode,
        size: e.size,
        target: e.target,
    }
}

/// A JSON map of files: each content as text or base64.
pub fn new_files(
    files: std::collections::BTreeMap<String, wire::FileContent>,
) -> Result<Vec<model::NewFile>, ApiError> {
    files
        .into_iter()
        .map(|(path, content)| {
            let (content, mode) = match content {
                wire::FileContent::Text(text) => (text.into_bytes(), None),
                wire::FileContent::Data { text, base64, mode } => {
                    let content = match (text, base64) {
                        (Some(text), None) => text.into_bytes(),
                        (None, Some(data)) => wire::decode_data(&data, wire::Encoding::Base64)
                            .map_err(|e| ApiError::invalid(format!("files: {path:?}: {e}")))?,
                        _ => {
                            return Err(ApiError::invalid(format!(
                                "files: {path:?}: give its content as a string, or exactly one of \"text\" and \"base64\""
                            )))
                        }
                    };
                    if mode.is_some_and(|m| m > 0o7777) {
                        return Err(ApiError::invalid(format!(
                            "files: {path:?}: mode must be at most 0o7777"
                        )));
                    }
                    (content, mode)
                }
            };
            Ok(model::NewFile {
                path,
                content,
                mode,
            })
        })
        .collect()
}

pub fn switch(request: wire::SwitchRequest) -> model::Switch {
    model::Switch {
        project: request.project,
        fragment: request.fragment,
        profile: request.profile,
        save_on_switch: request.save_on_switch,
        exclude: request.exclude,
    }
}

pub fn active(a: model::Active, domain: Option<&str>) -> wire::ActiveSandbox {
    let preview_path = a
        .port
        .map(|port| format!("/v1/sandboxes/{}/ports/{port}/", a.sandbox.id));
    let preview_host = a
        .port
        .zip(domain)
        .map(|(port, domain)| format!("{port}-{}.{domain}", a.sandbox.id));
    wire::ActiveSandbox {
        user: a.user,
        project_id: a.project_id,
        project_name: a.project_name,
        fragment_id: a.fragment_id,
        sandbox: sandbox(a.sandbox),
        alive: a.alive,
        restored_files: a.restored_files,
        port: a.port,
        preview_path,
        preview_host,
        created_at: rfc3339(a.created_at),
        last_used_at: rfc3339(a.last_used_at),
        saved_fragment: a.saved_fragment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_above_zero_or_text() {
        let parse = |value: wire::DurationValue| duration(&value, "ttl");
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN, 1e300] {
            assert!(parse(bad.into()).is_err(), "{bad}");
        }
        for bad in ["", "soon", "0s"] {
            assert!(parse(bad.into()).is_err(), "{bad}");
        }
        assert_eq!(parse(0.5.into()).unwrap(), Duration::from_millis(500));
        assert_eq!(parse("90s".into()).unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1h".into()).unwrap(), Duration::from_secs(3600));
        let error = parse("forever".into()).unwrap_err().message;
        assert!(
            error.starts_with("ttl: invalid duration \"forever\""),
            "{error}"
        );
    }

    #[test]
    fn stdin_is_decoded_as_its_encoding_says() {
        let request = wire::ExecRequest {
            cmd: vec!["cat".into()],
            stdin: Some("AP8=".into()),
            stdin_encoding: Some(wire::Encoding::Base64),
            ..Default::default()
        };
        assert_eq!(exec_request(&request).unwrap().stdin.unwrap(), [0, 0xff]);
        let bad = wire::ExecRequest {
            stdin: Some("!!".into()),
            ..request
        };
        assert!(exec_request(&bad)
            .unwrap_err()
            .message
            .starts_with("stdin: "));
    }

    #[test]
    fn every_state_has_its_wire_name() {
        for s in State::ALL {
            assert_eq!(state(s).as_str(), s.as_str());
            assert_eq!(wire::SandboxState::parse(s.as_str()), Some(state(s)));
        }
        assert_eq!(wire::SandboxState::ALL.len(), State::ALL.len());
    }
}
