//! `sbx project ls|create|inspect|save|share|rm` and `sbx fragment ls|show|add|export|rm`:
//! projects and their fragments (immutable versions of their files). A project is named by
//! its id, the name of one of yours, or `owner/name`.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use crate::cli::output::{self, say};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct ProjectArgs {
    #[command(subcommand)]
    command: ProjectCommand,
}

#[derive(Debug, Subcommand)]
enum ProjectCommand {
    /// List the projects you own or were given.
    #[command(alias = "list")]
    Ls,
    /// Make a project; prints its id.
    Create {
        name: String,
        /// The directory of a sandbox its files live in (default /home/user).
        #[arg(long)]
        root: Option<String>,
        /// The port of its preview (a dev server the project runs).
        #[arg(long)]
        port: Option<u16>,
        /// The profile its sandboxes are made with.
        #[arg(long, short = 'p')]
        profile: Option<String>,
        /// A local directory whose files become its first fragment.
        #[arg(long)]
        from: Option<std::path::PathBuf>,
    },
    /// Show one project.
    Inspect { project: String },
    /// Save a running sandbox's project files as a new fragment; prints its id.
    Save {
        /// Sandbox id or name.
        sandbox: String,
        /// The project (default: the one the sandbox is your active sandbox for).
        #[arg(long)]
        project: Option<String>,
        /// Names of files or directories to leave out, at any depth (repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
    /// Share a project with a user (`--access read|write`), or stop (`--access none`).
    Share {
        project: String,
        user: String,
        #[arg(long, default_value = "read")]
        access: String,
    },
    /// Delete projects with their fragments.
    Rm {
        #[arg(required = true)]
        projects: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct FragmentArgs {
    #[command(subcommand)]
    command: FragmentCommand,
}

#[derive(Debug, Subcommand)]
enum FragmentCommand {
    /// List a project's fragments, oldest first.
    #[command(alias = "list")]
    Ls { project: String },
    /// Show a fragment and its files (default: the newest).
    Show {
        project: String,
        #[arg(default_value = "latest")]
        fragment: String,
    },
    /// Make a fragment from a local directory, or from a snapshot's files under the project's
    /// root (`--snapshot`); prints its id.
    Add {
        project: String,
        #[arg(required_unless_present = "snapshot", conflicts_with = "snapshot")]
        dir: Option<std::path::PathBuf>,
        #[arg(long)]
        snapshot: Option<String>,
        #[arg(long, short = 'm')]
        message: Option<String>,
    },
    /// Write a fragment's files as a tar stream (`-`: standard output).
    Export {
        project: String,
        fragment: String,
        file: String,
    },
    /// Delete fragments.
    Rm {
        project: String,
        #[arg(required = true)]
        fragments: Vec<String>,
    },
}

fn project_row(p: &sbx_protocol::Project) -> Vec<String> {
    vec![
        p.id.clone(),
        p.name.clone(),
        p.owner.clone(),
        p.access.clone(),
        p.fragments.to_string(),
        p.latest_fragment.clone().unwrap_or_else(|| "-".into()),
        p.created_at.clone(),
    ]
}

/// A local directory as a tar stream of paths relative to it, built on a blocking thread.
fn tar_of(
    dir: std::path::PathBuf,
) -> anyhow::Result<(reqwest::Body, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let (reader, writer) = tokio::io::duplex(1 << 20);
    let building = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let writer = tokio_util::io::SyncIoBridge::new(writer);
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        super::cp::append_tree(&mut builder, std::path::Path::new("."), &dir)
            .with_context(|| format!("cannot archive {}", dir.display()))?;
        builder.into_inner()?.shutdown()?;
        Ok(())
    });
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(reader));
    Ok((body, building))
}

async fn upload_dir(
    context: &Context,
    project: &str,
    dir: std::path::PathBuf,
    message: Option<&str>,
) -> anyhow::Result<sbx_protocol::Fragment> {
    let (body, building) = tar_of(dir)?;
    let sent = context.client.upload_fragment(project, body, message).await;
    let built = building.await.context("the archiving task failed")?;
    let fragment = sent?;
    built?;
    Ok(fragment)
}

pub async fn run_project(context: &Context, args: ProjectArgs) -> anyhow::Result<u8> {
    let client = &context.client;
    match args.command {
        ProjectCommand::Ls => {
            let projects = client.projects().await?;
            if context.json {
                output::print_json(&projects);
            } else {
                let rows: Vec<_> = projects.iter().map(project_row).collect();
                output::table(
                    &[
                        "ID",
                        "NAME",
                        "OWNER",
                        "ACCESS",
                        "FRAGMENTS",
                        "LATEST",
                        "CREATED",
                    ],
                    &rows,
                );
            }
        }
        ProjectCommand::Create {
            name,
            root,
            port,
            profile,
            from,
        } => {
            let request = sbx_protocol::CreateProjectRequest {
                name,
                root,
                port,
                profile,
                files: None,
            };
            let project = client.create_project(&request).await?;
            if let Some(dir) = from {
                if let Err(e) = upload_dir(context, &project.id, dir, None).await {
                    let _ = client.delete_project(&project.id).await;
                    return Err(e);
                }
            }
            let project = client.project(&project.id).await?;
            if context.json {
                output::print_json(&project);
            } else {
                say!("{}", project.id);
            }
        }
        ProjectCommand::Inspect { project } => {
            output::print_json(&client.project(&project).await?);
        }
        ProjectCommand::Save {
            sandbox,
            project,
            exclude,
            message,
        } => {
            let project = match project {
                Some(project) => project,
                None => {
                    let sandbox_id = client.get(&sandbox).await?.id;
                    let users = client.users().await?;
                    let Some(active) = users.iter().find(|a| a.sandbox.id == sandbox_id) else {
                        bail!("sandbox {sandbox} is nobody's active sandbox: name the project with --project");
                    };
                    active.project_id.clone()
                }
            };
            let request = sbx_protocol::CreateFragmentRequest {
                sandbox: Some(sandbox),
                exclude,
                message,
                ..Default::default()
            };
            let fragment = client.create_fragment(&project, &request).await?;
            if context.json {
                output::print_json(&fragment);
            } else {
                say!("{}", fragment.id);
            }
        }
        ProjectCommand::Share {
            project,
            user,
            access,
        } => {
            let access = (access != "none").then_some(access.as_str());
            let project = client.share_project(&project, &user, access).await?;
            if context.json {
                output::print_json(&project);
            } else {
                for share in &project.shares {
                    say!("{}  {}", share.user, share.access);
                }
            }
        }
        ProjectCommand::Rm { projects } => {
            let mut failed = false;
            for project in projects {
                match client.delete_project(&project).await {
                    Ok(()) => say!("{project}"),
                    Err(e) => {
                        output::say_err!("sbx: {project}: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(u8::from(failed));
        }
    }
    Ok(0)
}

pub async fn run_fragment(context: &Context, args: FragmentArgs) -> anyhow::Result<u8> {
    let client = &context.client;
    match args.command {
        FragmentCommand::Ls { project } => {
            let fragments = client.fragments(&project).await?;
            if context.json {
                output::print_json(&fragments);
            } else {
                let rows: Vec<Vec<String>> = fragments
                    .iter()
                    .map(|f| {
                        vec![
                            format!("{}{}", f.id, if f.latest { " *" } else { "" }),
                            f.files.to_string(),
                            format!("{:.1} KiB", f.bytes as f64 / 1024.0),
                            f.source.clone(),
                            f.created_by.clone(),
                            f.created_at.clone(),
                            f.message.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "FILES", "SIZE", "SOURCE", "BY", "CREATED", "MESSAGE"],
                    &rows,
                );
            }
        }
        FragmentCommand::Show { project, fragment } => {
            let detail = client.fragment(&project, &fragment).await?;
            if context.json {
                output::print_json(&detail);
            } else {
                let f = &detail.fragment;
                say!(
                    "{}  {} files, {} bytes, {}{}",
                    f.id,
                    f.files,
                    f.bytes,
                    f.created_at,
                    if f.latest { " (latest)" } else { "" }
                );
                let rows: Vec<Vec<String>> = detail
                    .entries
                    .iter()
                    .map(|e| {
                        let name = match &e.target {
                            Some(target) => format!("{} -> {target}", e.path),
                            None => e.path.clone(),
                        };
                        vec![
                            e.kind.clone(),
                            format!("{:o}", e.mode),
                            e.size.to_string(),
                            name,
                        ]
                    })
                    .collect();
                output::table(&["KIND", "MODE", "SIZE", "PATH"], &rows);
            }
        }
        FragmentCommand::Add {
            project,
            dir,
            snapshot,
            message,
        } => {
            let fragment = match (dir, snapshot) {
                (Some(dir), _) => upload_dir(context, &project, dir, message.as_deref()).await?,
                (None, snapshot) => {
                    let request = sbx_protocol::CreateFragmentRequest {
                        snapshot,
                        message,
                        ..Default::default()
                    };
                    client.create_fragment(&project, &request).await?
                }
            };
            if context.json {
                output::print_json(&fragment);
            } else {
                say!("{}", fragment.id);
            }
        }
        FragmentCommand::Export {
            project,
            fragment,
            file,
        } => {
            output::write_stream(&file, client.fragment_archive(&project, &fragment).await?)
                .await?;
        }
        FragmentCommand::Rm { project, fragments } => {
            let mut failed = false;
            for fragment in fragments {
                match client.delete_fragment(&project, &fragment).await {
                    Ok(()) => say!("{fragment}"),
                    Err(e) => {
                        output::say_err!("sbx: {fragment}: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(u8::from(failed));
        }
    }
    Ok(0)
}
