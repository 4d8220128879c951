//! `sbx recreate ID`: a fresh instance of the sandbox — same id and spec, fresh TTL.

use clap::Args;

use crate::cli::{output, Context};

#[derive(Debug, Args)]
pub struct RecreateArgs {
    /// Sandbox id or name.
    id: String,
    /// Start the new instance's files from this snapshot (and from it on later recreates).
    #[arg(long, value_name = "SNAPSHOT")]
    snapshot: Option<String>,
}

pub async fn run(context: &Context, args: RecreateArgs) -> anyhow::Result<u8> {
    let sandbox = context
        .client
        .recreate_from(&args.id, args.snapshot.as_deref())
        .await?;
    if context.json {
        output::print_json(&sandbox);
    } else {
        println!("{}", sandbox.id);
    }
    Ok(0)
}
