//! The command line: one file per verb under `commands/`, all of them API clients except
//! `serve`. Human-readable output by default, `--json` everywhere.
//!
//! Every client verb sends an API key: `SBX_API_KEY`, else the file `SBX_API_KEY_FILE` names,
//! else the admin key the daemon wrote to its data directory (`admin.key`, readable only by
//! the daemon's user — so the CLI finds it on the same host, as the same user).
//!
//! Exit codes: 0 success; 1 an sbx error (daemon unreachable, unknown id, bad input);
//! `exec`/`run` pass the command's own code through, 124 when it timed out, 125 for sbx
//! errors, 126/127 when the command could not run (as shells do).

mod commands;
mod output;

use clap::{Parser, Subcommand};
use commands::pause::Verb;
use sbx_api_client::{Client, ClientError};

#[derive(Debug, Parser)]
#[command(
    name = "sbx",
    version,
    about = "Self-hosted sandboxes for untrusted code"
)]
pub struct Cli {
    /// The daemon's URL.
    #[arg(long, global = true, env = "SBX_URL", default_value = sbx_api_client::DEFAULT_URL)]
    url: String,
    /// Print JSON instead of tables and text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (HTTP API, store, native backend).
    Serve(crate::serve::ServeArgs),
    /// Create a sandbox and print its id.
    Create(commands::create::CreateArgs),
    /// List sandboxes.
    #[command(alias = "list")]
    Ls(commands::ls::LsArgs),
    /// Show one sandbox.
    Inspect(commands::inspect::InspectArgs),
    /// Run a command in a sandbox, streaming its output; exits with its exit code.
    Exec(commands::exec::ExecArgs),
    /// Open an interactive terminal in a sandbox (a login shell, or CMD).
    Shell(commands::shell::ShellArgs),
    /// Create a sandbox, run one command in it, destroy it.
    Run(commands::run::RunArgs),
    /// Destroy sandboxes.
    #[command(alias = "destroy")]
    Rm(commands::rm::RmArgs),
    /// Give a sandbox a new deadline, counted from now.
    Extend(commands::extend::ExtendArgs),
    /// List the sandboxes past their deadline; destroy them with --apply.
    Expire(commands::expire::ExpireArgs),
    /// Replace a sandbox's instance with a fresh one (same id and spec, fresh TTL).
    Recreate(commands::recreate::RecreateArgs),
    /// Copy a file into or out of a sandbox: `sbx cp SRC ID:DST`, `sbx cp ID:SRC DST`.
    Cp(commands::cp::CpArgs),
    /// A sandbox's files: ls, stat, rm, mv, mkdir.
    Files(commands::files::FilesArgs),
    /// Freeze a sandbox's processes where they are (no CPU) until it is resumed.
    Pause(commands::pause::PauseArgs),
    /// Let a paused sandbox's processes carry on (a hibernated one's are restored first).
    Resume(commands::pause::PauseArgs),
    /// Save a sandbox's processes and memory to disk and free them (gVisor sandboxes);
    /// `sbx resume` restores them, also after a daemon restart.
    Hibernate(commands::pause::PauseArgs),
    /// List the TCP ports a sandbox listens on, with the URL each is reached at through the
    /// daemon.
    Ports(commands::ports::PortsArgs),
    /// Projects: ls, create, inspect, save (a sandbox's files as a fragment), share, rm.
    Project(commands::project::ProjectArgs),
    /// A project's fragments (versions of its files): ls, show, add, export, rm.
    Fragment(commands::project::FragmentArgs),
    /// Switch a user's one active sandbox to a project (`PROJECT[@FRAGMENT]`): the old one
    /// is destroyed, a new one made with the fragment's files.
    Switch(commands::users::SwitchArgs),
    /// Users' active sandboxes; `sbx users cleanup USER|--all` ends them.
    Users(commands::users::UsersArgs),
    /// Filesystem snapshots: create, ls, inspect, rm, export, import.
    Snapshot(commands::snapshot::SnapshotArgs),
    /// Templates from container images: pull, import, ls, inspect, rm.
    Template(commands::template::TemplateArgs),
    /// Show the daemon, its backends and every live sandbox.
    Status(commands::status::StatusArgs),
    /// Follow lifecycle events.
    Events(commands::events::EventsArgs),
    /// Remove every trace sbx left on the host (with or without a running daemon).
    Cleanup(commands::cleanup::CleanupArgs),
    /// Check the configuration file.
    Config(commands::config::ConfigArgs),
    /// Manage API keys.
    Keys(commands::keys::KeysArgs),
    /// Read the audit log.
    Audit(commands::audit::AuditArgs),
    /// Show the user and key the CLI acts as.
    Whoami(commands::whoami::WhoamiArgs),
}

/// Shared by every client verb.
pub struct Context {
    pub client: Client,
    pub json: bool,
}

pub async fn run(cli: Cli) -> u8 {
    let mut client = Client::new(&cli.url);
    if !matches!(cli.command, Command::Serve(_)) {
        if let Some(key) = find_key() {
            client = client.with_key(&key);
        }
    }
    let context = Context {
        client,
        json: cli.json,
    };
    let result = match cli.command {
        Command::Serve(args) => crate::serve::run(args).await.map(|()| 0),
        Command::Create(args) => commands::create::run(&context, args).await,
        Command::Ls(args) => commands::ls::run(&context, args).await,
        Command::Inspect(args) => commands::inspect::run(&context, args).await,
        Command::Exec(args) => commands::exec::run(&context, args).await,
        Command::Run(args) => commands::run::run(&context, args).await,
        Command::Shell(args) => commands::shell::run(&context, args).await,
        Command::Rm(args) => commands::rm::run(&context, args).await,
        Command::Extend(args) => commands::extend::run(&context, args).await,
        Command::Expire(args) => commands::expire::run(&context, args).await,
        Command::Recreate(args) => commands::recreate::run(&context, args).await,
        Command::Cp(args) => commands::cp::run(&context, args).await,
        Command::Files(args) => commands::files::run(&context, args).await,
        Command::Pause(args) => commands::pause::run(&context, args, Verb::Pause).await,
        Command::Resume(args) => commands::pause::run(&context, args, Verb::Resume).await,
        Command::Hibernate(args) => commands::pause::run(&context, args, Verb::Hibernate).await,
        Command::Ports(args) => commands::ports::run(&context, args).await,
        Command::Snapshot(args) => commands::snapshot::run(&context, args).await,
        Command::Project(args) => commands::project::run_project(&context, args).await,
        Command::Fragment(args) => commands::project::run_fragment(&context, args).await,
        Command::Switch(args) => commands::users::run_switch(&context, args).await,
        Command::Users(args) => commands::users::run_users(&context, args).await,
        Command::Template(args) => commands::template::run(&context, args).await,
        Command::Status(args) => commands::status::run(&context, args).await,
        Command::Events(args) => commands::events::run(&context, args).await,
        Command::Cleanup(args) => commands::cleanup::run(&context, args).await,
        Command::Config(args) => commands::config::run(&context, args).await,
        Command::Keys(args) => commands::keys::run(&context, args).await,
        Command::Audit(args) => commands::audit::run(&context, args).await,
        Command::Whoami(args) => commands::whoami::run(&context, args).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            output::say_err!("sbx: {}", error_text(&error));
            1
        }
    }
}

/// A duration as typed: a number is seconds, anything else is text for the daemon to parse.
pub fn duration_value(text: &str) -> Result<sbx_protocol::DurationValue, String> {
    Ok(match text.parse::<f64>() {
        Ok(seconds) => sbx_protocol::DurationValue::Seconds(seconds),
        Err(_) => sbx_protocol::DurationValue::Text(text.to_owned()),
    })
}

/// The error and its causes, one line; a daemon's own message as it said it.
pub fn error_text(error: &anyhow::Error) -> String {
    if let Some(client) = error.downcast_ref::<ClientError>() {
        if client.code() == Some("unauthorized") {
            return format!(
                "{client} (set SBX_API_KEY, or run on the daemon's host as its user so that its admin key file can be read)"
            );
        }
        return client.to_string();
    }
    format!("{error:#}")
}

/// The API key to send: `SBX_API_KEY`, else `SBX_API_KEY_FILE`'s contents, else the admin key
/// file in the data directory (`SBX_DATA_DIR`, the configuration's, or the default).
fn find_key() -> Option<String> {
    let non_empty = |text: String| {
        let text = text.trim().to_owned();
        (!text.is_empty()).then_some(text)
    };
    if let Some(key) = std::env::var("SBX_API_KEY").ok().and_then(non_empty) {
        return Some(key);
    }
    if let Some(file) = std::env::var_os("SBX_API_KEY_FILE") {
        return std::fs::read_to_string(file).ok().and_then(non_empty);
    }
    let data_dir = std::env::var_os("SBX_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let file = std::env::var_os("SBX_CONFIG")?;
            sbx_config::Config::load(Some(std::path::Path::new(&file)))
                .ok()?
                .daemon
                .data_dir
        })
        .or_else(|| crate::daemon::default_data_dir().ok())?;
    std::fs::read_to_string(data_dir.join(crate::daemon::ADMIN_KEY_FILE))
        .ok()
        .and_then(non_empty)
}
