//! `sbx cp SRC ID:DST` and `sbx cp ID:SRC DST`: a file or a directory into or out of a
//! sandbox, streamed, in docker's idiom. A path with no `ID:` is local; `-` is standard input
//! or output (a file's bytes; a directory goes to standard output as a tar stream, and
//! `--archive` reads one from standard input).
//!
//! Directories travel as tar streams, built and unpacked here as they flow. A directory
//! copied to a destination that is a directory goes inside it (`DST/NAME`); to one that does
//! not exist, it becomes it. Unpacking a sandbox's archive locally refuses what would land
//! outside the destination (`..`, absolute paths, through symlinks: the `tar` crate's checks)
//! and keeps no set-id bits.

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
    /// With `-` as SRC: standard input is a tar stream to extract under ID:DST.
    #[arg(long, short = 'a')]
    archive: bool,
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
        (None, Some((id, path))) if args.src == "-" && args.archive => {
            let body =
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()));
            let result = context
                .client
                .extract(id, path, args.user.as_deref(), body)
                .await?;
            if context.json {
                crate::cli::output::print_json(&result);
            }
            Ok(0)
        }
        (None, Some((id, path)))
            if args.src != "-" && std::fs::metadata(&args.src).is_ok_and(|m| m.is_dir()) =>
        {
            upload_dir(context, &args, id, path).await
        }
        (Some((id, path)), None) if is_remote_dir(context, id, path).await? => {
            download_dir(context, &args, id, path).await
        }
        (None, Some((id, path))) => {
            let body = if args.src == "-" {
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
            } else {
                let file = tokio::fs::File::open(&args.src)
                    .await
                    .with_context(|| format!("cannot open {}", args.src))?;
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

async fn is_remote_dir(context: &Context, id: &str, path: &str) -> anyhow::Result<bool> {
    match context.client.stat(id, path).await {
        Ok(info) => Ok(info.kind == sbx_protocol::FileKind::Directory),
        // A symlink to a directory, or not there: the download says which.
        Err(e) if e.code() == Some("file_not_found") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A local directory into the sandbox: inside `path` when it is a directory there, else as
/// `path` itself.
async fn upload_dir(context: &Context, args: &CpArgs, id: &str, path: &str) -> anyhow::Result<u8> {
    let source = std::path::PathBuf::from(&args.src);
    let name = source
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(std::ffi::OsStr::to_owned))
        .unwrap_or_else(|| "dir".into());
    let inside = match context.client.stat(id, path).await {
        Ok(info) if info.kind == sbx_protocol::FileKind::Directory => true,
        Ok(_) => bail!("{path} in the sandbox is not a directory"),
        Err(e) if e.code() == Some("file_not_found") => false,
        Err(e) => return Err(e.into()),
    };
    // Entries named NAME/… go inside; named from the top (`.`) they become `path`.
    let prefix = if inside {
        std::path::PathBuf::from(name)
    } else {
        std::path::PathBuf::from(".")
    };
    let (reader, writer) = tokio::io::duplex(1 << 20);
    let building = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let writer = tokio_util::io::SyncIoBridge::new(writer);
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        append_tree(&mut builder, &prefix, &source)
            .with_context(|| format!("cannot archive {}", source.display()))?;
        builder.into_inner()?.shutdown()?;
        Ok(())
    });
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(reader));
    let sent = context
        .client
        .extract(id, path, args.user.as_deref(), body)
        .await;
    let built = building.await.context("the archiving task failed")?;
    let result = sent?;
    built?;
    if context.json {
        crate::cli::output::print_json(&result);
    }
    Ok(0)
}

/// A sandbox's directory out: a tar stream to standard output with `-`; else unpacked inside
/// DST when it is a directory, or as DST itself.
async fn download_dir(
    context: &Context,
    args: &CpArgs,
    id: &str,
    path: &str,
) -> anyhow::Result<u8> {
    if args.dst != "-" && path.trim_end_matches('/').is_empty() {
        bail!("copy a sandbox's whole root as a tar stream: sbx cp {id}:/ - > root.tar");
    }
    let bytes = context.client.archive(id, path).await?;
    let reader =
        tokio_util::io::StreamReader::new(bytes.map(|chunk| chunk.map_err(std::io::Error::other)));
    if args.dst == "-" {
        let mut reader = reader;
        let mut out = tokio::io::stdout();
        tokio::io::copy(&mut reader, &mut out).await?;
        out.flush().await?;
        return Ok(0);
    }
    let dst = std::path::PathBuf::from(&args.dst);
    let unpacking = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let reader = tokio_util::io::SyncIoBridge::new(reader);
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(false);
        // Modes as the sandbox had them, less this process's umask (as `tar` does for a user).
        let umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        nix::sys::stat::umask(umask);
        archive.set_mask(umask.bits());
        archive.set_overwrite(true);
        if dst.is_dir() {
            return archive
                .unpack(&dst)
                .with_context(|| format!("cannot unpack into {}", dst.display()));
        }
        // Unpacked beside DST, then renamed to it.
        let parent = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let staging = tempfile::Builder::new()
            .prefix(".sbx-cp-")
            .tempdir_in(&parent)
            .with_context(|| format!("cannot write in {}", parent.display()))?;
        archive
            .unpack(staging.path())
            .with_context(|| format!("cannot unpack into {}", parent.display()))?;
        let mut top = std::fs::read_dir(staging.path())?.flatten();
        let (Some(only), None) = (top.next(), top.next()) else {
            bail!("the sandbox's archive does not hold one directory");
        };
        std::fs::rename(only.path(), &dst)
            .with_context(|| format!("cannot create {}", dst.display()))?;
        Ok(())
    });
    unpacking.await.context("the unpacking task failed")??;
    Ok(0)
}

/// `dir` into `builder` as `name/…`: directories, regular files and symlinks (never
/// followed); FIFOs, sockets and devices are passed over with a word on stderr (a sandbox
/// refuses them in an archive).
pub(crate) fn append_tree<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    name: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    builder.append_dir(name, dir)?;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let inside = name.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            append_tree(builder, &inside, &path)?;
        } else if kind.is_file() || kind.is_symlink() {
            builder.append_path_with_name(&path, &inside)?;
        } else {
            crate::cli::output::say_err!(
                "sbx: skipping {} (not a file, directory or symlink)",
                path.display()
            );
        }
    }
    Ok(())
}
