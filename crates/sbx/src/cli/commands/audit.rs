//! `sbx audit`: read the audit log (admin key needed), newest last.

use clap::Args;

use crate::cli::{output, Context};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Entries at or after this: an RFC 3339 time, or an age (`15m`, `2h`, `1d`).
    #[arg(long)]
    since: Option<String>,
    /// An event (`exec`, `auth.failed`, …) or a family ending in '.' (`sandbox.`).
    #[arg(long)]
    event: Option<String>,
    /// Entries of this acting user.
    #[arg(long)]
    user: Option<String>,
    /// Entries about this sandbox (its id).
    #[arg(long)]
    sandbox: Option<String>,
    /// Entries of this key (its id).
    #[arg(long)]
    key: Option<String>,
    /// The newest this many.
    #[arg(long, short = 'n', default_value_t = 100)]
    limit: usize,
}

pub async fn run(context: &Context, args: AuditArgs) -> anyhow::Result<u8> {
    let mut query = vec![("limit", args.limit.to_string())];
    for (name, value) in [
        ("since", args.since),
        ("event", args.event),
        ("user", args.user),
        ("sandbox", args.sandbox),
        ("key", args.key),
    ] {
        if let Some(value) = value {
            query.push((name, value));
        }
    }
    let entries = context.client.audit(&query).await?;
    if context.json {
        // One entry per line, as the log itself: easy to pipe into jq or grep.
        for entry in &entries {
            println!(
                "{}",
                serde_json::to_string(entry).expect("entries serialise")
            );
        }
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let details = if e.details.is_empty() {
                String::new()
            } else {
                serde_json::Value::Object(e.details.clone()).to_string()
            };
            vec![
                e.at.clone(),
                e.event.clone(),
                e.user.clone().unwrap_or_else(|| "-".into()),
                e.key_id.clone().unwrap_or_else(|| "-".into()),
                e.ip.clone().unwrap_or_else(|| "-".into()),
                e.sandbox_id.clone().unwrap_or_else(|| "-".into()),
                details,
            ]
        })
        .collect();
    output::table(
        &["TIME", "EVENT", "USER", "KEY", "IP", "SANDBOX", "DETAILS"],
        &rows,
    );
    Ok(0)
}
