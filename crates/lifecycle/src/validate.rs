//! Parse, then trust: requests ([`crate::model`]) become validated backend specs here, at
//! lifecycle's door.
//! Every rejection names the field and the rule it broke.

use std::collections::BTreeMap;

use std::time::Duration;

#[cfg(test)]
use crate::model::Span;
use crate::model::{ExecRequest, NewSandbox, ResourceRequest, Resources, TerminalRequest};
use sbx_backend::{ExecSpec, Limits, StdinMode, TerminalSpec, TtySize, User};
use sbx_config::Profile;

use crate::Error;

/// What a backend can give sandboxes under the operator's capacity settings: one at most, and
/// all together (the capacity that admission promises out; see `limits`).
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Memory of the machine the sandboxes run on, MiB: no one sandbox may have more.
    pub max_memory_mb: u64,
    /// Its CPUs.
    pub max_cpus: f64,
    /// What live sandboxes' `pids` limits may add up to: `capacity.pids_share` of the host's
    /// task table (the smaller of `kernel.pid_max` and `kernel.threads-max`), for backends
    /// whose sandboxes share this host's (`None`: a remote engine's are not this host's).
    pub pids_capacity: Option<u64>,
    /// Size of the file system that holds sandbox disks, MiB, when it is this host's.
    pub disk_total_mb: Option<u64>,
    /// Free space on it that sandbox disks may never promise away, MiB.
    pub disk_reserve_mb: u64,
    /// How far disk promises may exceed the free space (1: not at all).
    pub disk_overcommit: f64,
    /// argv and environment of one command together, at most.
    pub max_command_bytes: usize,
    /// Host tasks each sandbox takes beyond its `pids` limit.
    pub tasks_per_sandbox: u64,
}

pub const MIN_MEMORY_MB: u64 = 32;
pub const MIN_CPUS: f64 = 0.01;
pub const MIN_PIDS: u64 = 8;
pub const MIN_DISK_MB: u64 = 64;
/// The prefix of metadata keys sbx's own operations set ([`crate::model::NewSandbox::labels`]).
pub const RESERVED_PREFIX: &str = "sbx.";
/// Most ports one sandbox may make public.
const MAX_PUBLIC_PORTS: usize = 16;
const MAX_ENV: usize = 256;
const MAX_METADATA: usize = 64;
/// Longest metadata key.
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 4096;
const MAX_TIMEOUT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

impl Bounds {
    /// The backend's facts with the operator's `capacity` settings applied.
    pub fn new(backend: &sbx_backend::Bounds, capacity: &sbx_config::Capacity) -> Bounds {
        Bounds {
            max_memory_mb: backend.memory_bytes >> 20,
            max_cpus: backend.cpu_millis as f64 / 1000.0,
            pids_capacity: backend
                .host_tasks
                .map(|tasks| (tasks as f64 * capacity.pids_share) as u64),
            disk_total_mb: backend.disk_bytes.map(|bytes| bytes >> 20),
            disk_reserve_mb: capacity.disk_reserve_mb,
            disk_overcommit: capacity.disk_overcommit,
            max_command_bytes: backend.max_command_bytes,
            tasks_per_sandbox: backend.tasks_per_sandbox,
        }
    }

    /// The largest disk one sandbox could ever get here.
    fn max_disk_mb(&self) -> Option<u64> {
        let total = self.disk_total_mb?;
        let room = total.saturating_sub(self.disk_reserve_mb) as f64;
        Some((room * self.disk_overcommit) as u64)
    }
}

/// A validated create request.
#[derive(Debug, Clone)]
pub struct CreateParams {
    pub profile: String,
    /// The backend the profile names.
    pub backend: String,
    pub template: String,
    pub name: Option<String>,
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
    pub metadata: BTreeMap<String, String>,
    pub ttl: Duration,
    pub ttl_max: Duration,
    pub idle: Option<Duration>,
    /// The profile's pausing policy, kept with the sandbox.
    pub idle_action: sbx_config::IdleAction,
    pub pause_stops_clock: bool,
    pub auto_resume: bool,
    /// The snapshot it starts from (checked by the create).
    pub snapshot: Option<String>,
    /// What was asked for but not granted.
    pub warnings: Vec<String>,
    /// The image template's `User` as ids, and its `Entrypoint` + `Cmd` (set by the create
    /// once it has looked the template up).
    pub image_user: Option<(u32, u32)>,
    pub image_command: Vec<String>,
    /// Ports anyone may reach through the daemon without a key.
    pub public_ports: Vec<u16>,
    /// The hibernated sandbox it is forked from (set by the create once it checked it).
    pub fork_of: Option<sbx_backend::Handle>,
}

impl CreateParams {
    pub fn limits(&self) -> Limits {
        limits(&self.resources)
    }
}

pub fn limits(resources: &Resources) -> Limits {
    Limits {
        memory_bytes: resources.memory_mb << 20,
        cpu_millis: (resources.cpus * 1000.0).round() as u64,
        pids: resources.pids,
        disk_bytes: resources.disk_mb << 20,
    }
}

/// `bounds` gives what the backend of a profile can give one sandbox.
pub fn create(
    request: &NewSandbox,
    profiles: &BTreeMap<String, Profile>,
    bounds: impl Fn(&str) -> Result<Bounds, Error>,
) -> Result<CreateParams, Error> {
    let profile_name = request
        .profile
        .as_deref()
        .unwrap_or(sbx_config::DEFAULT_PROFILE);
    let profile = profiles.get(profile_name).ok_or_else(|| {
        Error::ProfileNotFound(format!(
            "profile {profile_name:?} does not exist (profiles: {})",
            profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let template = request
        .template
        .clone()
        .unwrap_or_else(|| profile.template.clone());
    if !sbx_backend::valid_template_name(&template) {
        return Err(invalid(format!(
            "template {template:?} is not a valid template name (lowercase letters, digits, '.', '_', '-')"
        )));
    }
    if let Some(name) = &request.name {
        validate_name(name)?;
    }
    validate_env(&request.env, "env")?;
    if request.metadata.len() > MAX_METADATA {
        return Err(invalid(format!(
            "metadata has more than {MAX_METADATA} entries"
        )));
    }
    for (key, value) in &request.metadata {
        // As free as E2B's (`app:env`, `owner@example.com`), short of what would garble a
        // listing or a filter: control characters, `=` (the filters' `KEY=VALUE`).
        let key_ok = !key.is_empty()
            && key.len() <= MAX_KEY
            && !key.chars().any(|c| c.is_control() || c == '=');
        if !key_ok {
            return Err(invalid(format!(
                "metadata key {key:?} must be 1-{MAX_KEY} bytes without control characters or '='"
            )));
        }
        if key.starts_with(RESERVED_PREFIX) {
            return Err(invalid(format!(
                "metadata key {key:?}: keys starting with {RESERVED_PREFIX:?} are sbx's own"
            )));
        }
        if value.len() > MAX_VALUE {
            return Err(invalid(format!(
                "metadata {key:?} is longer than {MAX_VALUE} bytes"
            )));
        }
    }
    let mut public_ports = request.public_ports.clone();
    public_ports.sort_unstable();
    public_ports.dedup();
    if public_ports.len() > MAX_PUBLIC_PORTS || public_ports.contains(&0) {
        return Err(invalid(format!(
            "public_ports: at most {MAX_PUBLIC_PORTS} ports from 1 to 65535"
        )));
    }
    let resources = resources(&request.resources, profile, &bounds(&profile.backend)?)?;
    let mut warnings = Vec::new();
    let ttl = match &request.ttl {
        None => profile.ttl.default,
        Some(span) => {
            let asked = span.value;
            if asked.is_zero() {
                return Err(invalid("ttl must be above 0".into()));
            }
            if asked > profile.ttl.max {
                warnings.push(format!(
                    "ttl {span} is longer than profile {profile_name:?} allows; capped at {}",
                    sbx_config::duration::format(profile.ttl.max)
                ));
                profile.ttl.max
            } else {
                asked
            }
        }
    };
    Ok(CreateParams {
        profile: profile_name.to_owned(),
        backend: profile.backend.clone(),
        template,
        name: request.name.clone(),
        env: request.env.clone(),
        resources,
        metadata: request
            .metadata
            .iter()
            .chain(&request.labels)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ttl,
        ttl_max: profile.ttl.max,
        idle: profile.ttl.idle,
        idle_action: profile.ttl.idle_action,
        pause_stops_clock: profile.ttl.pause_stops_clock,
        auto_resume: profile.auto_resume,
        snapshot: request.snapshot.clone(),
        warnings,
        image_user: None,
        image_command: Vec::new(),
        fork_of: None,
        public_ports,
    })
}

/// The resources a create gets: what it asked for, else the profile's defaults; each at least
/// its minimum (400 below) and at most the profile's maximum and the host's bound for one
/// sandbox (422 above, naming the cap).
fn resources(
    wanted: &ResourceRequest,
    profile: &Profile,
    bounds: &Bounds,
) -> Result<Resources, Error> {
    let (default, max) = (&profile.resources, &profile.max_resources);
    let check = |field: &str,
                 asked: Option<f64>,
                 default: f64,
                 min: f64,
                 profile_max: f64,
                 host: Option<(f64, &str)>|
     -> Result<f64, Error> {
        let value = asked.unwrap_or(default);
        let from = if asked.is_some() {
            ""
        } else {
            " (the profile's default)"
        };
        if !value.is_finite() || value < min {
            return Err(invalid(format!(
                "resources.{field} must be at least {min}, got {value}{from}"
            )));
        }
        if value > profile_max + 1e-9 {
            return Err(Error::OverLimit(format!(
                "resources.{field}: {value} is more than profile {:?} allows (at most {profile_max})",
                profile.name
            )));
        }
        let Some((host_max, host_what)) = host else {
            return Ok(value);
        };
        if value > host_max + 1e-9 {
            return Err(Error::OverLimit(format!(
                "resources.{field}: {value}{from} is more than {host_what} (at most {host_max})"
            )));
        }
        Ok(value)
    };
    let whole = |value: Option<u64>| value.map(|v| v as f64);
    let memory_mb = check(
        "memory_mb",
        whole(wanted.memory_mb),
        default.memory_mb as f64,
        MIN_MEMORY_MB as f64,
        max.memory_mb as f64,
        Some((bounds.max_memory_mb as f64, "this host's memory")),
    )?;
    let cpus = check(
        "cpus",
        wanted.cpus,
        default.cpus,
        MIN_CPUS,
        max.cpus,
        Some((bounds.max_cpus, "this host's CPUs")),
    )?;
    let pids = check(
        "pids",
        whole(wanted.pids),
        default.pids as f64,
        MIN_PIDS as f64,
        max.pids as f64,
        bounds.pids_capacity.map(|cap| {
            // The runtime's own tasks in the sandbox count against the capacity too.
            (
                cap.saturating_sub(bounds.tasks_per_sandbox) as f64,
                "this host's capacity for sandbox processes",
            )
        }),
    )?;
    let disk_mb = check(
        "disk_mb",
        whole(wanted.disk_mb),
        default.disk_mb as f64,
        MIN_DISK_MB as f64,
        max.disk_mb as f64,
        bounds.max_disk_mb().map(|max| {
            (
                max as f64,
                "the data directory's disk can hold beside its reserve",
            )
        }),
    )?;
    Ok(Resources {
        memory_mb: memory_mb as u64,
        cpus,
        pids: pids as u64,
        disk_mb: disk_mb as u64,
    })
}

/// A validated command, for an exec or a terminal.
#[derive(Debug)]
pub struct Command {
    pub argv: Vec<String>,
    /// The sandbox's environment with the request's over it.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub user: User,
}

/// A validated exec request: the command plus what lifecycle itself handles.
#[derive(Debug)]
pub struct ExecParams {
    pub command: Command,
    pub stdin: Option<Vec<u8>>,
    pub stdin_open: bool,
    pub timeout: Option<std::time::Duration>,
}

impl ExecParams {
    /// The backend's spec, the bytes for stdin, whether stdin then stays open, the timeout.
    pub fn spec(self) -> (ExecSpec, Option<Vec<u8>>, bool, Option<std::time::Duration>) {
        let Command {
            argv,
            env,
            cwd,
            user,
        } = self.command;
        let stdin = if self.stdin.is_some() || self.stdin_open {
            StdinMode::Pipe
        } else {
            StdinMode::Null
        };
        let spec = ExecSpec {
            argv,
            env,
            cwd,
            user,
            stdin,
        };
        (spec, self.stdin, self.stdin_open, self.timeout)
    }
}

/// A validated terminal request.
#[derive(Debug)]
pub struct TerminalParams {
    pub command: Command,
    pub size: TtySize,
}

impl TerminalParams {
    pub fn spec(self) -> TerminalSpec {
        let Command {
            argv,
            env,
            cwd,
            user,
        } = self.command;
        TerminalSpec {
            argv,
            env,
            cwd,
            user,
            size: self.size,
        }
    }
}

pub fn exec(
    mut request: ExecRequest,
    spec: &crate::view::StoredSpec,
    max_command_bytes: usize,
) -> Result<ExecParams, Error> {
    let sandbox_env = &spec.env;
    if request.cmd.is_empty() {
        if spec.image_command.is_empty() {
            return Err(invalid(
                "cmd must not be empty: give the program and its arguments (the sandbox's \
                 template has no default command)"
                    .into(),
            ));
        }
        request.cmd = spec.image_command.clone();
    }
    if request.cmd[0].is_empty() {
        return Err(invalid("cmd[0] must not be empty".into()));
    }
    if request.cmd.iter().any(|arg| arg.contains('\0')) {
        return Err(invalid("cmd must not contain NUL bytes".into()));
    }
    validate_env(&request.env, "env")?;
    let mut env = sandbox_env.clone();
    env.extend(request.env.clone());
    let size: usize = request.cmd.iter().map(|a| a.len() + 1).sum::<usize>()
        + env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    if size > max_command_bytes {
        return Err(invalid(format!(
            "cmd and env together exceed {max_command_bytes} bytes; pass large data on stdin"
        )));
    }
    if let Some(cwd) = &request.cwd {
        if !cwd.starts_with('/') || cwd.contains('\0') || cwd.len() > 4096 {
            return Err(invalid(format!("cwd {cwd:?} must be an absolute path")));
        }
    }
    let user = match request.user.as_deref() {
        None => spec.default_user(),
        Some("user") => User::DEFAULT,
        Some("root") => User::ROOT,
        Some(other) => match other.parse::<u32>() {
            Ok(uid) if uid < 65536 => User { uid, gid: uid },
            _ => {
                return Err(invalid(format!(
                    "user {other:?} must be \"user\", \"root\" or a uid from 0 to 65535"
                )))
            }
        },
    };
    let timeout = match &request.timeout {
        None => None,
        Some(span) => {
            let timeout = span.value;
            if timeout.is_zero() {
                return Err(invalid("timeout must be above 0".into()));
            }
            if timeout.as_secs_f64() > MAX_TIMEOUT_SECONDS {
                return Err(invalid(format!(
                    "timeout must be at most {} (7d), got {span}",
                    MAX_TIMEOUT_SECONDS
                )));
            }
            Some(timeout)
        }
    };
    Ok(ExecParams {
        command: Command {
            argv: request.cmd,
            env: env.into_iter().collect(),
            cwd: request.cwd,
            user,
        },
        stdin: request.stdin,
        stdin_open: request.stdin_open,
        timeout,
    })
}

/// The command a terminal runs when it names none: a login shell, bash where there is one.
const LOGIN_SHELL: &str = "command -v bash >/dev/null 2>&1 && exec bash -l; exec sh -l";
const MAX_TERMINAL_CELLS: u16 = 1000;

/// A terminal request: an exec on a pseudo-terminal, without a timeout or stdin bytes.
pub fn terminal(
    request: &TerminalRequest,
    spec: &crate::view::StoredSpec,
    max_command_bytes: usize,
) -> Result<TerminalParams, Error> {
    let cmd = if request.cmd.is_empty() {
        vec!["sh".into(), "-c".into(), LOGIN_SHELL.into()]
    } else {
        request.cmd.clone()
    };
    let as_exec = ExecRequest {
        cmd,
        env: request.env.clone(),
        cwd: request.cwd.clone(),
        user: request.user.clone(),
        ..Default::default()
    };
    let params = exec(as_exec, spec, max_command_bytes)?;
    let rows = request.rows.unwrap_or(24);
    let cols = request.cols.unwrap_or(80);
    for (name, value) in [("rows", rows), ("cols", cols)] {
        if value == 0 || value > MAX_TERMINAL_CELLS {
            return Err(invalid(format!(
                "{name} must be between 1 and {MAX_TERMINAL_CELLS}, got {value}"
            )));
        }
    }
    Ok(TerminalParams {
        command: params.command,
        size: TtySize { rows, cols },
    })
}

/// Sandbox names: 1–63 of `[A-Za-z0-9_.-]`, starting alphanumeric, not shaped like an id.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= 63
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        return Err(invalid(format!(
            "name {name:?} must be 1-63 of letters, digits, '_', '.', '-', starting with a letter or digit"
        )));
    }
    if name.starts_with("sb-") {
        return Err(invalid(format!(
            "name {name:?} must not start with \"sb-\" (reserved for ids)"
        )));
    }
    Ok(())
}

fn validate_env(env: &BTreeMap<String, String>, field: &str) -> Result<(), Error> {
    if env.len() > MAX_ENV {
        return Err(invalid(format!(
            "{field} has more than {MAX_ENV} variables"
        )));
    }
    for (key, value) in env {
        let mut bytes = key.bytes();
        let key_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(invalid(format!(
                "{field} name {key:?} must be letters, digits and '_', not starting with a digit"
            )));
        }
        if value.contains('\0') {
            return Err(invalid(format!("{field} {key:?} contains a NUL byte")));
        }
    }
    Ok(())
}

fn invalid(message: String) -> Error {
    Error::Invalid(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_COMMAND: usize = 128 * 1024;

    fn bounds() -> Bounds {
        let host = sbx_backend::Bounds {
            memory_bytes: 4096 << 20,
            cpu_millis: 2000,
            host_tasks: Some(32768),
            disk_bytes: Some(100_000 << 20),
            max_command_bytes: 128 * 1024,
            tasks_per_sandbox: 0,
        };
        Bounds::new(&host, &sbx_config::Capacity::default())
    }

    fn profiles() -> BTreeMap<String, Profile> {
        sbx_config::Config::default().profiles
    }

    fn create_with(resources: ResourceRequest) -> Result<CreateParams, Error> {
        let request = NewSandbox {
            resources,
            ..Default::default()
        };
        create(&request, &profiles(), |_| Ok(bounds()))
    }

    #[test]
    fn defaults_come_from_the_profile() {
        let params = create(&NewSandbox::default(), &profiles(), |_| Ok(bounds())).unwrap();
        assert_eq!(params.template, "host");
        assert_eq!(params.profile, "default");
        assert_eq!(
            params.resources,
            Resources {
                memory_mb: 512,
                cpus: 1.0,
                pids: 256,
                disk_mb: 2048
            }
        );
        assert_eq!(params.limits().cpu_millis, 1000);
        assert_eq!(params.ttl, Duration::from_secs(3600));
        assert!(params.warnings.is_empty());
    }

    #[test]
    fn ttl_is_capped() {
        let with_ttl = |seconds: u64| {
            let request = NewSandbox {
                ttl: Some(Span::new(Duration::from_secs(seconds))),
                ..Default::default()
            };
            create(&request, &profiles(), |_| Ok(bounds()))
        };
        assert_eq!(with_ttl(90).unwrap().ttl, Duration::from_secs(90));
        assert!(with_ttl(0).is_err());
        let capped = with_ttl(3 * 86_400).unwrap();
        assert_eq!(capped.ttl, Duration::from_secs(86_400));
        assert!(
            capped.warnings[0].contains("ttl 3d is longer")
                && capped.warnings[0].contains("capped at 1d"),
            "{:?}",
            capped.warnings
        );
        let unknown = NewSandbox {
            profile: Some("gpu".into()),
            ..Default::default()
        };
        assert!(matches!(
            create(&unknown, &profiles(), |_| Ok(bounds())),
            Err(Error::ProfileNotFound(_))
        ));
    }

    #[test]
    fn absurd_limits_are_rejected_with_the_field_named() {
        use ResourceRequest as R;
        let cases = [
            (
                R {
                    memory_mb: Some(1 << 40),
                    ..Default::default()
                },
                "resources.memory_mb",
            ),
            (
                R {
                    memory_mb: Some(1),
                    ..Default::default()
                },
                "resources.memory_mb",
            ),
            (
                R {
                    cpus: Some(f64::NAN),
                    ..Default::default()
                },
                "resources.cpus",
            ),
            (
                R {
                    cpus: Some(64.0),
                    ..Default::default()
                },
                "resources.cpus",
            ),
            (
                R {
                    cpus: Some(0.0),
                    ..Default::default()
                },
                "resources.cpus",
            ),
            (
                R {
                    pids: Some(0),
                    ..Default::default()
                },
                "resources.pids",
            ),
            (
                R {
                    pids: Some(10_000_000),
                    ..Default::default()
                },
                "resources.pids",
            ),
            (
                R {
                    disk_mb: Some(1),
                    ..Default::default()
                },
                "resources.disk_mb",
            ),
            (
                R {
                    disk_mb: Some(1 << 40),
                    ..Default::default()
                },
                "resources.disk_mb",
            ),
        ];
        for (resources, field) in cases {
            let error = create_with(resources).unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        }
    }

    #[test]
    fn names_and_env_are_checked() {
        for bad in ["", "-x", "a b", "sb-abc", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        validate_name("web-1.prod_a").unwrap();
        let mut env = BTreeMap::new();
        env.insert("1BAD".to_owned(), "x".to_owned());
        assert!(validate_env(&env, "env").is_err());
    }

    #[test]
    fn metadata_keys_are_as_free_as_e2bs_but_sbxs_own() {
        let with = |key: &str| {
            let request = NewSandbox {
                metadata: [(key.to_owned(), "v".to_owned())].into(),
                ..Default::default()
            };
            create(&request, &profiles(), |_| Ok(bounds()))
        };
        for good in ["team", "app:env", "owner@example.com", "a b/c", "ключ"] {
            assert!(with(good).is_ok(), "{good}");
        }
        for bad in ["", "a=b", "a\nb", "sbx.project", &"k".repeat(129)] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
        // sbx's own keys come as labels, past the check.
        let labelled = NewSandbox {
            labels: [("sbx.project".to_owned(), "p".to_owned())].into(),
            ..Default::default()
        };
        let params = create(&labelled, &profiles(), |_| Ok(bounds())).unwrap();
        assert_eq!(params.metadata["sbx.project"], "p");
    }

    #[test]
    fn exec_requests() {
        let none: crate::view::StoredSpec = serde_json::from_value(serde_json::json!({
            "memory_mb": 64, "cpus": 1.0, "pids": 64, "env": {}, "ttl_max_ms": 1000
        }))
        .unwrap();
        let request = |cmd: &[&str]| ExecRequest {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(exec(request(&[]), &none, MAX_COMMAND).is_err());
        // An image's defaults: its command when none is given, its user when none is named.
        let image = crate::view::StoredSpec {
            image_command: vec!["/bin/app".into(), "--serve".into()],
            image_user: Some((1234, 1240)),
            ..none.clone()
        };
        let defaulted = exec(request(&[]), &image, MAX_COMMAND).unwrap();
        assert_eq!(defaulted.command.argv, ["/bin/app", "--serve"]);
        assert_eq!(
            defaulted.command.user,
            User {
                uid: 1234,
                gid: 1240
            }
        );
        let named = ExecRequest {
            user: Some("user".into()),
            ..request(&["id"])
        };
        assert_eq!(
            exec(named, &image, MAX_COMMAND).unwrap().command.user,
            User::DEFAULT
        );
        assert!(exec(request(&[""]), &none, MAX_COMMAND).is_err());
        let ok = exec(request(&["true"]), &none, MAX_COMMAND).unwrap();
        assert_eq!(ok.command.user, User::DEFAULT);
        assert_eq!(ok.spec().0.stdin, StdinMode::Null);
        let mut rooted = request(&["id"]);
        rooted.user = Some("root".into());
        assert_eq!(
            exec(rooted.clone(), &none, MAX_COMMAND)
                .unwrap()
                .command
                .user,
            User::ROOT
        );
        rooted.user = Some("admin".into());
        assert!(exec(rooted.clone(), &none, MAX_COMMAND).is_err());
        let mut timed = request(&["sleep", "9"]);
        for bad in [0.0, 8.0 * 86_400.0, 1e12] {
            timed.timeout = Some(Span::new(Duration::from_secs_f64(bad)));
            assert!(exec(timed.clone(), &none, MAX_COMMAND).is_err(), "{bad}");
        }
        for seconds in [0.5, 90.0, 3600.0] {
            timed.timeout = Some(Span::new(Duration::from_secs_f64(seconds)));
            let timeout = exec(timed.clone(), &none, MAX_COMMAND)
                .unwrap()
                .timeout
                .unwrap();
            assert_eq!(timeout.as_secs_f64(), seconds);
        }
        let mut relative = request(&["pwd"]);
        relative.cwd = Some("tmp".into());
        assert!(exec(relative.clone(), &none, MAX_COMMAND).is_err());
        let mut binary = request(&["cat"]);
        binary.stdin = Some(vec![0, 0xff]);
        assert_eq!(
            exec(binary.clone(), &none, MAX_COMMAND)
                .unwrap()
                .stdin
                .unwrap(),
            vec![0, 0xff]
        );
    }
}
