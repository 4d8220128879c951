//! `sbx users [cleanup USER|--all]` and `sbx switch PROJECT[@FRAGMENT]`: each user's one
//! active sandbox.

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::cli::output::{self, say};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    command: Option<UsersCommand>,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// End users' active sandboxes (destroyed, and forgotten).
    Cleanup {
        /// The users (an admin: any; anyone else: themselves).
        users: Vec<String>,
        /// Every user with an active sandbox.
        #[arg(long, conflicts_with = "users")]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// A project (id, your project's name, or owner/name), and optionally `@FRAGMENT`.
    pub target: String,
    /// Whose active sandbox (default: yours; an admin may name anyone).
    #[arg(long)]
    pub user: Option<String>,
    /// The new sandbox's profile.
    #[arg(long, short = 'p')]
    pub profile: Option<String>,
    /// First save the old active sandbox's files as a new fragment of its project.
    #[arg(long)]
    pub save: bool,
    /// With --save: names of files or directories to leave out (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
}

pub async fn run_users(context: &Context, args: UsersArgs) -> anyhow::Result<u8> {
    let client = &context.client;
    match args.command {
        None => {
            let users = client.users().await?;
            if context.json {
                output::print_json(&users);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|a| {
                    vec![
                        a.user.clone(),
                        a.project_name
                            .clone()
                            .unwrap_or_else(|| a.project_id.clone()),
                        a.fragment_id.clone().unwrap_or_else(|| "-".into()),
                        a.sandbox.id.clone(),
                        if a.alive {
                            format!("{:?}", a.sandbox.state).to_lowercase()
                        } else {
                            format!("{:?} (dead)", a.sandbox.state).to_lowercase()
                        },
                        a.created_at.clone(),
                        a.last_used_at.clone(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "USER",
                    "PROJECT",
                    "FRAGMENT",
                    "SANDBOX",
                    "STATE",
                    "CREATED",
                    "LAST USED",
                ],
                &rows,
            );
        }
        Some(UsersCommand::Cleanup { users, all }) => {
            let users = if all {
                client.users().await?.into_iter().map(|a| a.user).collect()
            } else if users.is_empty() {
                bail!("name the users to clean up, or --all");
            } else {
                users
            };
            let mut failed = false;
            for user in users {
                match client.deactivate(&user).await {
                    Ok(ended) => {
                        if context.json {
                            output::print_json(&ended);
                        } else {
                            say!(
                                "{}  {}{}",
                                ended.user,
                                ended.sandbox_id,
                                if ended.killed { "  killed" } else { "" }
                            );
                        }
                    }
                    Err(e) => {
                        output::say_err!("sbx: {user}: {e}");
                        failed = true;
                    }
                }
            }
            return Ok(u8::from(failed));
        }
    }
    Ok(0)
}

pub async fn run_switch(context: &Context, args: SwitchArgs) -> anyhow::Result<u8> {
    let client = &context.client;
    let (project, fragment) = match args.target.split_once('@') {
        Some((project, fragment)) if !fragment.is_empty() => {
            (project.to_owned(), Some(fragment.to_owned()))
        }
        Some(_) => bail!("{}: no fragment after '@'", args.target),
        None => (args.target.clone(), None),
    };
    let user = match args.user {
        Some(user) => user,
        None => client.whoami().await?.user,
    };
    let request = sbx_protocol::SwitchRequest {
        project,
        fragment,
        profile: args.profile,
        save_on_switch: args.save,
        exclude: args.exclude,
    };
    let active = client.switch(&user, &request).await?;
    if context.json {
        output::print_json(&active);
        return Ok(0);
    }
    say!("{}", active.sandbox.id);
    output::say_err!(
        "{} restored file(s){}{}",
        active.restored_files,
        active
            .fragment_id
            .as_ref()
            .map(|f| format!(" from {f}"))
            .unwrap_or_default(),
        active
            .saved_fragment
            .as_ref()
            .map(|f| format!("; the old sandbox's files saved as {f}"))
            .unwrap_or_default(),
    );
    if let Some(path) = &active.preview_path {
        let base = client.base_url().trim_end_matches('/');
        output::say_err!("preview: {base}{path}");
    }
    Ok(0)
}
