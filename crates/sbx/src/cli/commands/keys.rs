//! `sbx keys create|ls|revoke`: API keys. Creating one prints its secret once; the daemon
//! keeps only a hash of it.

use clap::{Args, Subcommand};

use crate::cli::output::{self, say};
use crate::cli::Context;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key for a user (admin key needed); prints the key, shown only this once.
    Create {
        /// The user the key acts for: 1-63 of a-z, 0-9, '.', '_', '-'.
        #[arg(long)]
        user: String,
        /// An admin key: sees and acts on every user's sandboxes, manages keys.
        #[arg(long)]
        admin: bool,
        /// Print the key in the form E2B's SDKs accept (`e2b_…`, for `E2B_API_KEY`); it is
        /// the same key.
        #[arg(long)]
        e2b: bool,
    },
    /// List keys (never their secrets): all for admins, your own otherwise.
    #[command(alias = "list")]
    Ls,
    /// Revoke a key by id; it is refused from the next request on.
    Revoke {
        /// The key's id (the part after `sbx_`, before the second `_`).
        id: String,
    },
}

pub async fn run(context: &Context, args: KeysArgs) -> anyhow::Result<u8> {
    match args.command {
        KeysCommand::Create { user, admin, e2b } => {
            let created = context.client.create_key(&user, admin).await?;
            if context.json {
                output::print_json(&created);
            } else {
                println!("{}", if e2b { &created.e2b_key } else { &created.key });
                eprintln!(
                    "key {} for user {}{}: store it now, it is not shown again",
                    created.info.id,
                    created.info.user,
                    if created.info.admin { " (admin)" } else { "" }
                );
            }
        }
        KeysCommand::Ls => {
            let keys = context.client.keys().await?;
            if context.json {
                output::print_json(&keys);
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.user.clone(),
                            if k.admin { "admin" } else { "user" }.into(),
                            output::age(&k.created_at),
                            k.revoked_at.as_deref().map_or_else(
                                || "active".into(),
                                |at| format!("revoked {}", output::age(at)),
                            ),
                        ]
                    })
                    .collect();
                output::table(&["ID", "USER", "ROLE", "CREATED", "STATUS"], &rows);
            }
        }
        KeysCommand::Revoke { id } => {
            let key = context.client.revoke_key(&id).await?;
            if context.json {
                output::print_json(&key);
            } else {
                say!("revoked {} (user {})", key.id, key.user);
            }
        }
    }
    Ok(0)
}
