//! `sbx exec ID -- CMD…`: streams the command's output as it comes and exits with its code.

use std::io::Write;

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt;
use sbx_api_client::ClientError;
use sbx_protocol::{decode_data, encode_data, ExecEvent, ExecRequest};
use tokio::io::AsyncReadExt;

use super::key_value;
use crate::cli::{output, Context};

/// Exit code when sbx itself fails during `exec`/`run` (as docker does).
pub const SBX_FAILED: u8 = 125;

/// Options shared by `exec` and `run` (which takes `-e` as the sandbox's environment).
#[derive(Debug, Args, Clone)]
pub struct ExecOptions {
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// `user` (default), `root`, or a uid.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Send this process's standard input to the command.
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Kill the command (and its process group) after this long: seconds (`2`, `0.5`) or text
    /// (`30s`, `1h`).
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::duration_value)]
    timeout: Option<sbx_protocol::DurationValue>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox id or name.
    id: String,
    /// Environment variable for this command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    #[command(flatten)]
    options: ExecOptions,
    /// The command and its arguments (none: the template's default, its image's Entrypoint
    /// and Cmd).
    #[arg(last = true)]
    cmd: Vec<String>,
}

pub async fn run(context: &Context, args: ExecArgs) -> anyhow::Result<u8> {
    let mut request = args.options.request(args.cmd).await?;
    request.env = args.env.into_iter().collect();
    Ok(run_command(context, &args.id, &request).await)
}

impl ExecOptions {
    pub async fn request(&self, cmd: Vec<String>) -> anyhow::Result<ExecRequest> {
        let (stdin, stdin_encoding) = if self.interactive {
            let mut bytes = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut bytes)
                .await
                .context("cannot read standard input")?;
            let (text, encoding) = encode_data(&bytes);
            (Some(text), Some(encoding))
        } else {
            (None, None)
        };
        Ok(ExecRequest {
            cmd,
            stdin,
            stdin_encoding,
            env: Default::default(),
            cwd: self.workdir.clone(),
            user: self.user.clone(),
            timeout: self.timeout.clone(),
        })
    }
}

/// Runs the command and returns the exit code the CLI should end with.
pub async fn run_command(context: &Context, id: &str, request: &ExecRequest) -> u8 {
    let result = if context.json {
        collected(context, id, request).await
    } else {
        streamed(context, id, request).await
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            output::say_err!("sbx: {error}");
            match error.code() {
                Some("exec_failed") if error.to_string().contains("command not found") => 127,
                Some("exec_failed") => 126,
                _ => SBX_FAILED,
            }
        }
    }
}

async fn collected(context: &Context, id: &str, request: &ExecRequest) -> Result<u8, ClientError> {
    let result = context.client.exec(id, request).await?;
    output::print_json(&result);
    Ok(exit_code(result.exit_code, result.timed_out))
}

async fn streamed(context: &Context, id: &str, request: &ExecRequest) -> Result<u8, ClientError> {
    let mut events = context.client.exec_stream(id, request).await?;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(event) = events.next().await {
        match event? {
            ExecEvent::Started { .. } => {}
            ExecEvent::Stdout { data, encoding } => {
                let bytes = decode_data(&data, encoding).map_err(ClientError::Protocol)?;
                let _ = stdout.write_all(&bytes);
                let _ = stdout.flush();
            }
            ExecEvent::Stderr { data, encoding } => {
                let bytes = decode_data(&data, encoding).map_err(ClientError::Protocol)?;
                let _ = stderr.write_all(&bytes);
                let _ = stderr.flush();
            }
            ExecEvent::Exit(exit) => {
                if exit.timed_out {
                    eprintln!("sbx: command timed out and was killed");
                }
                return Ok(exit_code(exit.exit_code, exit.timed_out));
            }
            ExecEvent::Error { error } => {
                return Err(ClientError::Api {
                    status: 0,
                    code: error.code,
                    message: error.message,
                })
            }
        }
    }
    Err(ClientError::Protocol(
        "the output stream ended without an exit status".into(),
    ))
}

/// 124 for a timeout (as `timeout(1)`), otherwise the command's code.
fn exit_code(code: i32, timed_out: bool) -> u8 {
    if timed_out {
        124
    } else {
        u8::try_from(code).unwrap_or(255)
    }
}
