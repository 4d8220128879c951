//! `sbx events [--since SEQ] [--sandbox ID]`: follow lifecycle events as they happen.

use clap::Args;
use futures::StreamExt;

use crate::cli::output::say;
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Replay recorded events after this sequence number first (0: all).
    #[arg(long)]
    since: Option<i64>,
    /// Only this sandbox's events (its id).
    #[arg(long)]
    sandbox: Option<String>,
}

pub async fn run(context: &Context, args: EventsArgs) -> anyhow::Result<u8> {
    let mut events = context
        .client
        .events(args.since, args.sandbox.as_deref())
        .await?;
    while let Some(event) = events.next().await {
        let event = event?;
        if context.json {
            println!("{}", serde_json::to_string(&event)?);
        } else {
            let from = event.from_state.map_or("-".into(), |s| s.to_string());
            let reason = event.reason.as_deref().unwrap_or("-");
            say!(
                "{:>6}  {}  {}  {from} -> {}  ({reason})",
                event.seq,
                event.at,
                event.sandbox_id,
                event.to_state
            );
        }
    }
    Ok(0)
}
