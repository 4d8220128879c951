//! `sbx whoami`: the user and key the CLI acts as.

use clap::Args;

use crate::cli::output::{self, say};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct WhoamiArgs {}

pub async fn run(context: &Context, _args: WhoamiArgs) -> anyhow::Result<u8> {
    let identity = context.client.whoami().await?;
    if context.json {
        output::print_json(&identity);
    } else {
        say!(
            "{}{}{}",
            identity.user,
            if identity.admin { " (admin)" } else { "" },
            identity
                .key_id
                .map(|k| format!(", key {k}"))
                .unwrap_or_default()
        );
    }
    Ok(0)
}
