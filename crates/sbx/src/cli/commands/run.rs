//! `sbx run -- CMD…`: create a sandbox, run one command, destroy it (even on Ctrl-C), like
//! `docker run --rm`.

use clap::Args;

use super::create::CreateArgs;
use super::exec::{run_command, ExecOptions, SBX_FAILED};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    create: CreateArgs,
    #[command(flatten)]
    options: ExecOptions,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

pub async fn run(context: &Context, args: RunArgs) -> anyhow::Result<u8> {
    let request = args.options.request(args.cmd).await?;
    let sandbox = context.client.create(&args.create.request()).await?;
    let code = tokio::select! {
        code = run_command(context, &sandbox.id, &request) => code,
        _ = tokio::signal::ctrl_c() => 130,
    };
    if let Err(error) = context.client.delete(&sandbox.id).await {
        crate::cli::output::say_err!("sbx: cannot destroy sandbox {}: {error}", sandbox.id);
        return Ok(if code == 0 { SBX_FAILED } else { code });
    }
    Ok(code)
}
