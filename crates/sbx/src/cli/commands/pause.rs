//! `sbx pause ID…`, `sbx hibernate ID…` and `sbx resume ID…`: freeze sandboxes' processes,
//! or save them to disk, and let them carry on.

use clap::Args;

use crate::cli::output::{self, say_err};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Sandbox ids or names.
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub enum Verb {
    Pause,
    Resume,
    Hibernate,
}

pub async fn run(context: &Context, args: PauseArgs, verb: Verb) -> anyhow::Result<u8> {
    let mut failed = false;
    let mut done = Vec::new();
    for id in &args.ids {
        let result = match verb {
            Verb::Pause => context.client.pause(id).await,
            Verb::Resume => context.client.resume(id).await,
            Verb::Hibernate => context.client.hibernate(id).await,
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
