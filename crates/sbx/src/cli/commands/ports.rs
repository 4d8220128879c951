//! `sbx ports ID`: the TCP ports a sandbox listens on, each with the URL that reaches it
//! through the daemon (the sandbox itself has no network); `--share PORT` makes a link that
//! reaches one port without a key until it expires; `--revoke` ends every link made so far.

use clap::Args;

use crate::cli::output::{self, say};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct PortsArgs {
    /// Sandbox id or name.
    pub id: String,
    /// Print a share link to this port instead: it works without a key until it expires.
    #[arg(long, value_name = "PORT")]
    pub share: Option<u16>,
    /// How long the share link works (default 1h, at most 7d).
    #[arg(long, requires = "share")]
    pub ttl: Option<String>,
    /// Revoke every share link made so far to the sandbox's ports.
    #[arg(long, conflicts_with = "share")]
    pub revoke: bool,
}

pub async fn run(context: &Context, args: PortsArgs) -> anyhow::Result<u8> {
    if args.revoke {
        context.client.revoke_shares(&args.id).await?;
        output::say_err!("share links to {} revoked", args.id);
        return Ok(0);
    }
    if let Some(port) = args.share {
        let link = context
            .client
            .share_port(&args.id, port, args.ttl.as_deref())
            .await?;
        if context.json {
            output::print_json(&link);
        } else {
            let base = context.client.base_url().trim_end_matches('/');
            say!("{base}{}", link.path);
            output::say_err!("expires at {}", link.expires_at);
        }
        return Ok(0);
    }
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
