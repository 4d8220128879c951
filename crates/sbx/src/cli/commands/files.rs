//! `sbx files ls|stat|rm|mv|mkdir`: a sandbox's files.

use clap::{Args, Subcommand};

use crate::cli::output::{self, clean};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct FilesArgs {
    #[command(subcommand)]
    command: FilesCommand,
}

#[derive(Debug, Subcommand)]
enum FilesCommand {
    /// List a directory.
    Ls {
        id: String,
        #[arg(default_value = ".")]
        path: String,
        /// Levels down to list.
        #[arg(long, default_value_t = 1)]
        depth: u32,
    },
    /// Show what a path is.
    Stat { id: String, path: String },
    /// Remove a file (a directory with -r).
    Rm {
        id: String,
        path: String,
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Move or rename.
    Mv {
        id: String,
        from: String,
        to: String,
    },
    /// Make a directory and its missing parents.
    Mkdir {
        id: String,
        path: String,
        /// Owner: `user` (default), `root`, or a uid.
        #[arg(long, short = 'u')]
        user: Option<String>,
    },
}

fn row(info: &sbx_protocol::FileInfo) -> Vec<String> {
    let kind = match info.kind {
        sbx_protocol::FileKind::File => "file",
        sbx_protocol::FileKind::Directory => "dir",
        sbx_protocol::FileKind::Symlink => "link",
        sbx_protocol::FileKind::Other => "other",
    };
    let name = match &info.symlink_target {
        Some(target) => format!("{} -> {}", info.path, target),
        None => info.path.clone(),
    };
    vec![
        kind.into(),
        format!("{:o}", info.mode),
        info.owner.clone(),
        info.size.to_string(),
        info.modified_at.clone(),
        clean(&name).into_owned(),
    ]
}

const HEADER: [&str; 6] = ["KIND", "MODE", "OWNER", "SIZE", "MODIFIED", "PATH"];

pub async fn run(context: &Context, args: FilesArgs) -> anyhow::Result<u8> {
    let client = &context.client;
    match args.command {
        FilesCommand::Ls { id, path, depth } => {
            let entries = client.list_files(&id, &path, depth).await?;
            if context.json {
                output::print_json(&entries);
            } else {
                let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
                output::table(&HEADER, &rows);
            }
        }
        FilesCommand::Stat { id, path } => {
            let info = client.stat(&id, &path).await?;
            if context.json {
                output::print_json(&info);
            } else {
                output::table(&HEADER, &[row(&info)]);
            }
        }
        FilesCommand::Rm {
            id,
            path,
            recursive,
        } => client.remove_file(&id, &path, recursive).await?,
        FilesCommand::Mv { id, from, to } => {
            let info = client.move_file(&id, &from, &to).await?;
            if context.json {
                output::print_json(&info);
            }
        }
        FilesCommand::Mkdir { id, path, user } => {
            let info = client.make_dir(&id, &path, user.as_deref()).await?;
            if context.json {
                output::print_json(&info);
            }
        }
    }
    Ok(0)
}
