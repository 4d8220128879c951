//! `sbx config check [--config FILE]`: the resolved configuration, or exactly what is wrong.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::Context;

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print it resolved, every default filled in.
    Check {
        /// The file [default: none, i.e. the embedded defaults].
        #[arg(long, env = "SBX_CONFIG")]
        config: Option<PathBuf>,
    },
}

pub async fn run(context: &Context, args: ConfigArgs) -> anyhow::Result<u8> {
    let ConfigCommand::Check { config } = args.command;
    let resolved = sbx_config::Config::load(config.as_deref())?;
    crate::backends::check(&resolved).map_err(|e| match &config {
        Some(file) => anyhow::anyhow!("{}: {e}", file.display()),
        None => e,
    })?;
    if context.json {
        println!(
            "{}",
            serde_json::json!({ "valid": true, "resolved": resolved.to_toml() })
        );
    } else {
        print!("{}", resolved.to_toml());
    }
    Ok(0)
}
