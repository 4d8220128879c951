//! `sbx snapshot create|ls|inspect|rm|export|import`: filesystem snapshots. A snapshot starts
//! new sandboxes (`sbx create --from-snapshot`) and recreates (`sbx recreate --snapshot`).

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::cli::{output, Context};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Snapshot a running or paused sandbox's files; prints the snapshot's id.
    Create {
        /// Sandbox id or name.
        id: String,
        /// A label for the snapshot.
        #[arg(long)]
        name: Option<String>,
    },
    /// List your snapshots.
    #[command(alias = "list")]
    Ls,
    /// Show one snapshot.
    Inspect { snapshot: String },
    /// Delete snapshots.
    Rm {
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
    /// Write a snapshot to a file (`.tar.zst`; `-` is standard output).
    Export { snapshot: String, file: String },
    /// Make a snapshot from an exported file (`-` is standard input); prints its id.
    Import {
        file: String,
        /// A name for it (default: the file's).
        #[arg(long)]
        name: Option<String>,
        /// The profile whose backend stores it.
        #[arg(long, short = 'p')]
        profile: Option<String>,
    },
}

fn show(context: &Context, snapshot: &sbx_protocol::Snapshot) {
    if context.json {
        output::print_json(snapshot);
    } else {
        println!("{}", snapshot.id);
    }
}

pub async fn run(context: &Context, args: SnapshotArgs) -> anyhow::Result<u8> {
    let client = &context.client;
    match args.command {
        SnapshotCommand::Create { id, name } => {
            show(
                context,
                &client.create_snapshot(&id, name.as_deref()).await?,
            );
        }
        SnapshotCommand::Ls => {
            let snapshots = client.snapshots().await?;
            if context.json {
                output::print_json(&snapshots);
            } else {
                let rows: Vec<Vec<String>> = snapshots
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            s.name.clone().unwrap_or_default(),
                            s.template.clone(),
                            s.sandbox_id.clone().unwrap_or_else(|| "(imported)".into()),
                            format!("{:.1} MiB", s.size_bytes as f64 / 1048576.0),
                            s.created_at.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "NAME", "TEMPLATE", "FROM", "SIZE", "CREATED"],
                    &rows,
                );
            }
        }
        SnapshotCommand::Inspect { snapshot } => {
            output::print_json(&client.snapshot(&snapshot).await?);
        }
        SnapshotCommand::Rm { snapshots } => {
            let mut failed = false;
            for snapshot in snapshots {
                match client.delete_snapshot(&snapshot).await {
                    Ok(()) => println!("{snapshot}"),
                    Err(e) => {
                        output::say_err!("sbx: {snapshot}: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(u8::from(failed));
        }
        SnapshotCommand::Export { snapshot, file } => {
            output::write_stream(&file, client.export_snapshot(&snapshot).await?).await?;
        }
        SnapshotCommand::Import {
            file,
            name,
            profile,
        } => {
            let body = if file == "-" {
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
            } else {
                let opened = tokio::fs::File::open(&file)
                    .await
                    .with_context(|| format!("cannot open {file}"))?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(opened))
            };
            let snapshot = client
                .import_snapshot(body, name.as_deref(), profile.as_deref())
                .await?;
            show(context, &snapshot);
        }
    }
    Ok(0)
}
