//! `sbx cp SRC ID:DST` and `sbx cp ID:SRC DST`: a file into or out of a sandbox, streamed
//! (`-` is standard input or output). A path with no `ID:` is local.

use anyhow::{bail, Context as _};
use clap::Args;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::cli::Context;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// `LOCAL` or `-`, or `ID:PATH`.
    src: String,
    /// `ID:PATH`, or `LOCAL` or `-`.
    dst: String,
    /// Permission bits of the file written in the sandbox, octal [default: 644].
    #[arg(long)]
    mode: Option<String>,
    /// Owner of the file written in the sandbox: `user` (default), `root`, or a uid.
    #[arg(long, short = 'u')]
    user: Option<String>,
}

/// `ID:PATH` → (id, path); anything else is local. (A local path with a colon: `./a:b`.)
fn remote(text: &str) -> Option<(&str, &str)> {
    if text.starts_with('/') || text.starts_with('.') || text == "-" {
        return None;
    }
    text.split_once(':')
        .filter(|(id, path)| !id.is_empty() && !path.is_empty())
}

pub async fn run(context: &Context, args: CpArgs) -> anyhow::Result<u8> {
    match (remote(&args.src), remote(&args.dst)) {
        (None, Some((id, path))) => {
            let body = if args.src == "-" {
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
            } else {
                let file = tokio::fs::File::open(&args.src)
                    .await
                    .with_context(|| format!("cannot open {}", args.src))?;
                if file.metadata().await?.is_dir() {
                    bail!("{} is a directory: sbx cp copies files", args.src);
                }
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file))
            };
            let info = context
                .client
                .upload(id, path, args.mode.as_deref(), args.user.as_deref(), body)
                .await?;
            if context.json {
                crate::cli::output::print_json(&info);
            }
            Ok(0)
        }
        (Some((id, path)), None) => {
            let mut bytes = context.client.download(id, path, None).await?;
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = if args.dst == "-" {
                Box::new(tokio::io::stdout())
            } else {
                Box::new(
                    tokio::fs::File::create(&args.dst)
                        .await
                        .with_context(|| format!("cannot create {}", args.dst))?,
                )
            };
            while let Some(chunk) = bytes.next().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await?;
            Ok(0)
        }
        (Some(_), Some(_)) => bail!("copy between two sandboxes through a local file"),
        (None, None) => bail!("one of SRC and DST must be ID:PATH"),
    }
}
