//! `sbx expire [--apply]`: the sandboxes past their deadline; destroys them with `--apply`.

use clap::Args;

use crate::cli::{output, Context};

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// Destroy them (default: only list them).
    #[arg(long)]
    apply: bool,
}

pub async fn run(context: &Context, args: ExpireArgs) -> anyhow::Result<u8> {
    let result = context.client.expire(args.apply).await?;
    if context.json {
        output::print_json(&result);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = result
        .sandboxes
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.name.clone().unwrap_or_else(|| "-".into()),
                s.state.to_string(),
                s.expires_at.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no sandbox is past its deadline");
    } else {
        output::table(&["ID", "NAME", "STATE", "EXPIRED AT"], &rows);
        if !result.applied {
            println!("(dry run: `sbx expire --apply` destroys them)");
        }
    }
    Ok(0)
}
