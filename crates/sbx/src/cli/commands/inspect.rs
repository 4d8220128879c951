//! `sbx inspect ID`: one sandbox in detail.

use clap::Args;

use crate::cli::output::{self, say};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Sandbox id or name.
    id: String,
}

pub async fn run(context: &Context, args: InspectArgs) -> anyhow::Result<u8> {
    let s = context.client.get(&args.id).await?;
    if context.json {
        output::print_json(&s);
        return Ok(0);
    }
    let metadata: Vec<String> = s.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let none = || "-".to_owned();
    let fields = [
        ("ID", s.id.clone()),
        ("Name", s.name.clone().unwrap_or_else(none)),
        ("State", s.state.to_string()),
        (
            "Reason",
            match (&s.state_reason, &s.state_detail) {
                (Some(code), Some(detail)) => format!("{code} ({detail})"),
                (Some(code), None) => code.clone(),
                _ => none(),
            },
        ),
        ("Profile", s.profile.clone()),
        (
            "Expires",
            format!("{} ({})", s.expires_at, output::remaining(&s)),
        ),
        ("Backend", s.backend.clone()),
        ("Template", s.template.clone()),
        (
            "Resources",
            format!(
                "{} MiB memory, {} CPU, {} processes",
                s.resources.memory_mb, s.resources.cpus, s.resources.pids
            ),
        ),
        (
            "Env",
            if s.env.is_empty() {
                none()
            } else {
                s.env.join(", ")
            },
        ),
        (
            "Metadata",
            if metadata.is_empty() {
                none()
            } else {
                metadata.join(", ")
            },
        ),
        ("Created", s.created_at.clone()),
        ("Updated", s.updated_at.clone()),
        ("Destroyed", s.destroyed_at.clone().unwrap_or_else(none)),
    ];
    for (key, value) in fields {
        say!("{:<10} {value}", format!("{key}:"));
    }
    Ok(0)
}
