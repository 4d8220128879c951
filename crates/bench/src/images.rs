//! Templates from images: a 100 MB image pulled from a local registry (Debian's
//! `docker-registry`, started here; the image pushed to it with `oci-client`) until it is a
//! template, and a second image on the same base pulled after it (its base layer reused: the
//! disk it adds is its own layer's).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::StreamExt;
use sbx_protocol::{PullTemplateRequest, TemplateEvent};

use crate::daemon::Daemon;
use crate::report::Row;
use crate::stats::{Stat, Summary, Target};

const PULL: Target = Target(&[(Stat::P50, 3000.0)]);
const BASE_BYTES: usize = 100 << 20;

struct Registry {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Result<Registry> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run docker-registry (apt-get install docker-registry)")?;
        let address = format!("127.0.0.1:{port}");
        let registry = Registry {
            child,
            address,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.address).is_err() {
            if Instant::now() > until {
                bail!("the registry did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    async fn push(&self, repository: &str, layers: &[&[u8]]) -> Result<()> {
        use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let reference: oci_client::Reference = format!("{}/{repository}", self.address).parse()?;
        let blobs: Vec<ImageLayer> = layers
            .iter()
            .map(|l| {
                ImageLayer::new(
                    l.to_vec(),
                    "application/vnd.oci.image.layer.v1.tar".into(),
                    None,
                )
            })
            .collect();
        // Uncompressed layers: their digests are their diff_ids.
        let diff_ids: Vec<String> = blobs.iter().map(ImageLayer::sha256_digest).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))?;
        let config = Config::new(
            config,
            "application/vnd.oci.image.config.v1+json".into(),
            None,
        );
        client
            .push(
                &reference,
                &blobs,
                config,
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
            )
            .await
            .context("cannot push to the registry")?;
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A layer of `files` files of pseudo-random (incompressible) bytes, `bytes` in all.
fn layer(seed: u64, bytes: usize, files: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut builder = tar::Builder::new(Vec::with_capacity(bytes + files * 1024));
    let each = bytes / files;
    for i in 0..files {
        let mut data = vec![0u8; each];
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        let _ = builder.append_data(&mut header, format!("data/{seed}/{i}"), &data[..]);
    }
    builder.into_inner().unwrap_or_default()
}

async fn pull(
    daemon: &Daemon,
    name: &str,
    image: &str,
) -> Result<(Duration, sbx_protocol::Template)> {
    let started = Instant::now();
    let mut events = daemon
        .client
        .pull_template(&PullTemplateRequest {
            name: name.into(),
            image: image.into(),
            username: None,
            password: None,
        })
        .await?;
    while let Some(event) = events.next().await {
        match event? {
            TemplateEvent::Template(t) => return Ok((started.elapsed(), t)),
            TemplateEvent::Error(e) => bail!("{} ({})", e.message, e.code),
            TemplateEvent::Progress(_) => {}
        }
    }
    bail!("the pull ended without a template")
}

pub async fn rows(daemon: &Daemon, n: usize) -> Vec<Row> {
    match measure(daemon, n).await {
        Ok(rows) => rows,
        Err(e) => vec![Row {
            name: "templates: 100 MB image pulled from a local registry".into(),
            result: Err(format!("{e:#}")),
            target: Some(PULL),
        }],
    }
}

async fn measure(daemon: &Daemon, n: usize) -> Result<Vec<Row>> {
    let registry = Registry::start()?;
    let base = layer(1, BASE_BYTES, 100);
    let app = layer(2, 1 << 20, 4);
    let tool = layer(3, 1 << 20, 4);
    registry.push("bench/app:1", &[&base, &app]).await?;
    registry.push("bench/tool:1", &[&base, &tool]).await?;
    let app_ref = format!("{}/bench/app:1", registry.address);
    let tool_ref = format!("{}/bench/tool:1", registry.address);
    let runs = n.clamp(1, 5);
    eprintln!("templates: 100 MB image pulled ×{runs}…");
    let mut pulls = Vec::new();
    for _ in 0..runs {
        let (took, _) = pull(daemon, "bench-app", &app_ref).await?;
        pulls.push(took);
        daemon.client.delete_template("bench-app").await?;
    }
    let (_, app_template) = pull(daemon, "bench-app", &app_ref).await?;
    let (second, tool_template) = pull(daemon, "bench-tool", &tool_ref).await?;
    let shared = app_template.layers[0].digest == tool_template.layers[0].digest;
    let own_mb = tool_template.layers[1].size_bytes as f64 / 1e6;
    daemon.client.delete_template("bench-tool").await?;
    daemon.client.delete_template("bench-app").await?;
    Ok(vec![
        Row {
            name: format!(
                "templates: {} MB image ({} layers) pulled from a local registry until ready",
                (base.len() + app.len()) / 1_000_000,
                app_template.layers.len()
            ),
            result: Summary::of(&pulls).ok_or_else(|| "no samples".to_owned()),
            target: Some(PULL),
        },
        Row {
            name: format!(
                "templates: a second image on the same base (base layer {}; new disk: its own {own_mb:.1} MB layer)",
                if shared { "shared, not fetched again" } else { "NOT shared" }
            ),
            result: Summary::of(&[second]).ok_or_else(|| "no samples".to_owned()),
            target: None,
        },
    ])
}
