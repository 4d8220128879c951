//! `sbx ls`: a table of sandboxes (live ones unless asked otherwise).

use clap::Args;
use sbx_protocol::SandboxState;

use super::key_value;
use crate::cli::{output, Context};

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Include destroyed sandboxes.
    #[arg(long, short = 'a')]
    all: bool,
    /// Only these states (repeatable): creating, running, paused, hibernated, expired, destroying, destroyed, failed.
    #[arg(long)]
    state: Vec<String>,
    /// Only sandboxes with this metadata label (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = key_value)]
    labels: Vec<(String, String)>,
    /// Print ids only.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub async fn run(context: &Context, args: LsArgs) -> anyhow::Result<u8> {
    let mut states: Vec<&str> = args.state.iter().map(String::as_str).collect();
    if args.all && states.is_empty() {
        states = SandboxState::ALL.map(SandboxState::as_str).to_vec();
    }
    let labels: Vec<(&str, &str)> = args
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sandboxes = context.client.list(&states, &labels).await?;
    if context.json {
        output::print_json(&sandboxes);
    } else if args.quiet {
        for sandbox in &sandboxes {
            println!("{}", sandbox.id);
        }
    } else {
        let rows: Vec<Vec<String>> = sandboxes
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.name.clone().unwrap_or_else(|| "-".into()),
                    s.state.to_string(),
                    s.profile.clone(),
                    s.template.clone(),
                    output::age(&s.created_at),
                    match s.expires_in_seconds {
                        Some(_) => output::remaining(s),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        output::table(
            &[
                "ID",
                "NAME",
                "STATE",
                "PROFILE",
                "TEMPLATE",
                "CREATED",
                "EXPIRES IN",
            ],
            &rows,
        );
    }
    Ok(0)
}
