//! `sbx recreate ID`: a fresh instance of the sandbox — same id and spec, fresh TTL.

use clap::Args;

use crate::cli::{output, Context};

#[derive(Debug, Args)]
pub struct RecreateArgs {
    /// Sandbox id or name.
    id: String,
}

pub async fn run(context: &Context, args: RecreateArgs) -> anyhow::Result<u8> {
    let sandbox = context.client.recreate(&args.id).await?;
    if context.json {
        output::print_json(&sandbox);
    } else {
        println!("{}", sandbox.id);
    }
    Ok(0)
}
