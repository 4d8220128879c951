//! `sbx template pull|import|ls|inspect|rm`: templates from container images. Pulls and
//! imports show a progress bar on a terminal and print the template's name and digest.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures::{Stream, StreamExt};
use sbx_protocol::{PullTemplateRequest, Template, TemplateEvent};

use crate::cli::{output, Context};

#[derive(Debug, Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    command: TemplateCommand,
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// Pull an image from a registry into a template (admins).
    Pull {
        /// `python:3.12`, `localhost:5000/team/tool:1`, `…@sha256:…`.
        image: String,
        /// The template's name (default: the image's last path part and tag, e.g. `python-3.12`).
        #[arg(long)]
        name: Option<String>,
        /// A user name for the registry.
        #[arg(long, requires = "password_stdin")]
        username: Option<String>,
        /// Read the registry password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Make a template from a root file system tarball, a `docker save` archive, an OCI image
    /// layout (a directory or a tar), or `docker:IMAGE` (a local Docker image); `-` is
    /// standard input (admins).
    Import { name: String, source: String },
    /// List templates made from images.
    #[command(alias = "list")]
    Ls,
    /// Show one template (layers, digest, defaults).
    Inspect { name: String },
    /// Remove templates (refused while a live sandbox uses one; admins).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `registry/team/tool:1.2` → `tool-1.2`.
fn default_name(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let name: String = last
        .replace(':', "-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    name
}

async fn follow(
    context: &Context,
    mut events: impl Stream<Item = Result<TemplateEvent, sbx_api_client::ClientError>> + Unpin,
) -> anyhow::Result<u8> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:40} {bytes:>10}/{total_bytes:10} {bar:30} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut outcome = None;
    while let Some(event) = events.next().await {
        match event? {
            TemplateEvent::Progress(p) => {
                let layer = p.layer.as_deref().map(|l| &l[..l.len().min(19)]);
                match (p.step.as_str(), layer) {
                    ("receive", layer) => {
                        bar.set_message(format!("receiving {}", layer.unwrap_or("the archive")));
                        if let Some(total) = p.total {
                            bar.set_length(total);
                        }
                        bar.set_position(p.done);
                    }
                    ("unpack", layer) => {
                        bar.set_message(format!("unpacking {}", layer.unwrap_or("the archive")))
                    }
                    ("reuse", Some(layer)) => bar.println(format!("{layer}: already stored")),
                    _ => {}
                }
            }
            TemplateEvent::Template(template) => outcome = Some(Ok(template)),
            TemplateEvent::Error(error) => outcome = Some(Err(error)),
        }
    }
    bar.finish_and_clear();
    match outcome {
        Some(Ok(template)) => {
            show(context, &template);
            Ok(0)
        }
        Some(Err(error)) => {
            output::say_err!("sbx: {} ({})", error.message, error.code);
            Ok(1)
        }
        None => anyhow::bail!("the daemon ended the answer before saying how it went"),
    }
}

fn show(context: &Context, template: &Template) {
    if context.json {
        output::print_json(template);
    } else {
        println!(
            "{}\t{}",
            template.name,
            template.digest.as_deref().unwrap_or(&template.source)
        );
    }
}

/// The bytes of `source`: a file, standard input, a directory packed as a tar (an OCI
/// layout), or `docker save` of a local image.
async fn body_of(source: &str) -> anyhow::Result<(reqwest::Body, Option<tokio::process::Child>)> {
    if source == "-" {
        let stdin = tokio_util::io::ReaderStream::new(tokio::io::stdin());
        return Ok((reqwest::Body::wrap_stream(stdin), None));
    }
    if let Some(image) = source.strip_prefix("docker:") {
        let mut child = tokio::process::Command::new("docker")
            .args(["save", image])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot run `docker save` (is the docker CLI installed?)")?;
        let stdout = child.stdout.take().context("docker save has no output")?;
        let stream = tokio_util::io::ReaderStream::new(stdout);
        return Ok((reqwest::Body::wrap_stream(stream), Some(child)));
    }
    let meta = std::fs::metadata(source).with_context(|| format!("cannot read {source}"))?;
    let file = if meta.is_dir() {
        // A layout directory, packed as it is (symlinks kept as symlinks).
        let dir = source.to_owned();
        tokio::task::spawn_blocking(move || -> anyhow::Result<std::fs::File> {
            let mut file = tempfile::tempfile()?;
            {
                let mut builder = tar::Builder::new(&mut file);
                builder.follow_symlinks(false);
                builder.append_dir_all(".", &dir)?;
                builder.finish()?;
            }
            std::io::Seek::rewind(&mut file)?;
            Ok(file)
        })
        .await??
    } else {
        std::fs::File::open(source).with_context(|| format!("cannot open {source}"))?
    };
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((reqwest::Body::wrap_stream(stream), None))
}

pub async fn run(context: &Context, args: TemplateArgs) -> anyhow::Result<u8> {
    let client = &context.client;
    match args.command {
        TemplateCommand::Pull {
            image,
            name,
            username,
            password_stdin,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password")?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let request = PullTemplateRequest {
                name: name.unwrap_or_else(|| default_name(&image)),
                image,
                username,
                password,
            };
            let events = client.pull_template(&request).await?;
            follow(context, events).await
        }
        TemplateCommand::Import { name, source } => {
            let (body, child) = body_of(&source).await?;
            let events = client.import_template(&name, body).await?;
            let code = follow(context, events).await?;
            if let Some(mut child) = child {
                let status = child.wait().await?;
                if !status.success() && code == 0 {
                    anyhow::bail!("docker save failed ({status})");
                }
            }
            Ok(code)
        }
        TemplateCommand::Ls => {
            let templates = client.templates().await?;
            if context.json {
                output::print_json(&templates);
            } else {
                let rows: Vec<Vec<String>> = templates
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.source.clone(),
                            t.layers.len().to_string(),
                            format!("{:.1} MiB", t.size_bytes as f64 / 1048576.0),
                            t.created_at.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "SOURCE", "LAYERS", "SIZE", "CREATED"], &rows);
            }
            Ok(0)
        }
        TemplateCommand::Inspect { name } => {
            output::print_json(&client.template(&name).await?);
            Ok(0)
        }
        TemplateCommand::Rm { names } => {
            let mut failed = false;
            for name in names {
                match client.delete_template(&name).await {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        output::say_err!("sbx: {name}: {e}");
                        failed = true;
                    }
                }
            }
            Ok(u8::from(failed))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_names() {
        assert_eq!(super::default_name("python:3.12"), "python-3.12");
        assert_eq!(super::default_name("localhost:5000/team/tool:1"), "tool-1");
        assert_eq!(super::default_name("busybox@sha256:abc"), "busybox");
    }
}
