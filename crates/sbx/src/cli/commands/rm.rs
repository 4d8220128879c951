//! `sbx rm ID…`: destroy sandboxes; goes on past failures and reports each.

use clap::Args;

use crate::cli::output::{self, say_err};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Sandbox ids or names.
    #[arg(required = true)]
    ids: Vec<String>,
}

pub async fn run(context: &Context, args: RmArgs) -> anyhow::Result<u8> {
    let mut failed = false;
    let mut removed = Vec::new();
    for id in &args.ids {
        match context.client.delete(id).await {
            Ok(sandbox) => {
                if !context.json {
                    println!("{}", sandbox.id);
                }
                removed.push(sandbox);
            }
            Err(error) => {
                say_err!("sbx: {id}: {error}");
                failed = true;
            }
        }
    }
    if context.json {
        output::print_json(&removed);
    }
    Ok(u8::from(failed))
}
