//! `sbx extend ID DURATION`: a new deadline, DURATION from now (capped by the profile).

use clap::Args;

use crate::cli::output::{self, say, say_err};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct ExtendArgs {
    /// Sandbox id or name.
    id: String,
    /// New lifetime from now: 90s, 30m, 4h, 1d, 1h30m, …
    duration: String,
}

pub async fn run(context: &Context, args: ExtendArgs) -> anyhow::Result<u8> {
    let sandbox = context.client.extend(&args.id, &args.duration).await?;
    for warning in &sandbox.warnings {
        say_err!("sbx: warning: {warning}");
    }
    if context.json {
        output::print_json(&sandbox);
    } else {
        say!(
            "{} expires at {} (in {})",
            sandbox.id,
            sandbox.expires_at,
            output::remaining(&sandbox)
        );
    }
    Ok(0)
}
