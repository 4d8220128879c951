//! `sbx ports ID`: the TCP ports a sandbox listens on, each with the URL that reaches it
//! through the daemon (the sandbox itself has no network).

use clap::Args;

use crate::cli::output::{self, say};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct PortsArgs {
    /// Sandbox id or name.
    pub id: String,
}

pub async fn run(context: &Context, args: PortsArgs) -> anyhow::Result<u8> {
    let listed = context.client.ports(&args.id).await?;
    if context.json {
        output::print_json(&listed);
        return Ok(0);
    }
    let base = context.client.base_url().trim_end_matches('/');
    for port in &listed.ports {
        say!("{port:<5}  {base}/v1/sandboxes/{}/ports/{port}/", args.id);
    }
    Ok(0)
}
