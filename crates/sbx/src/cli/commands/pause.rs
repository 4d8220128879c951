//! `sbx pause ID…` and `sbx resume ID…`: freeze sandboxes' processes, and let them carry on.

use clap::Args;

use crate::cli::output::{self, say_err};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Sandbox ids or names.
    #[arg(required = true)]
    ids: Vec<String>,
}

pub async fn run(context: &Context, args: PauseArgs, pause: bool) -> anyhow::Result<u8> {
    let mut failed = false;
    let mut done = Vec::new();
    for id in &args.ids {
        let result = if pause {
            context.client.pause(id).await
        } else {
            context.client.resume(id).await
        };
        match result {
            Ok(sandbox) => {
                if !context.json {
                    println!("{}\t{}", sandbox.id, sandbox.state);
                }
                done.push(sandbox);
            }
            Err(error) => {
                say_err!("sbx: {id}: {error}");
                failed = true;
            }
        }
    }
    if context.json {
        output::print_json(&done);
    }
    Ok(u8::from(failed))
}
