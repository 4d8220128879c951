//! Templates from images through the binary: a `docker save` archive with a whiteout and an
//! opaque directory imported with the CLI and a sandbox made from it (the image's tree,
//! environment and working directory inside); the same base pulled from a real registry
//! (Debian's `docker-registry`, started here, the image pushed to it with `oci-client`) into a
//! second template that shares the base layer on disk; admin-only writes, a template in use
//! kept, hostile archives refused with the entry named, and nothing left behind.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sbx_protocol::CreateSandboxRequest;
use sha2::Digest as _;

use crate::daemon::{cli_as, text, TestDaemon};

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Link(&'a str, &'a str),
}

fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            Entry::File(path, content, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(content.len() as u64);
                builder.append_data(&mut header, path, *content).unwrap();
            }
            Entry::Link(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// A static busybox and its applets: a real, tiny root file system.
pub(crate) fn base_layer() -> Vec<u8> {
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static is installed by scripts/setup --test");
    let mut entries = vec![
        Entry::Dir("bin"),
        Entry::File("bin/busybox", &busybox, 0o755),
        Entry::Dir("etc"),
        Entry::File("etc/hello", b"hello from the image\n", 0o644),
        Entry::File("etc/gone", b"hidden by the next layer\n", 0o644),
        Entry::Dir("opt/app"),
        Entry::File("opt/app/old", b"old\n", 0o644),
    ];
    let applets = ["sh", "cat", "ls", "echo", "pwd", "env", "test", "id"];
    let links: Vec<String> = applets.iter().map(|a| format!("bin/{a}")).collect();
    for link in &links {
        entries.push(Entry::Link(link, "busybox"));
    }
    layer(&entries)
}

fn config(layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "FROM_IMAGE=yes"], "WorkingDir": "/opt/app",
                   "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap()
}

pub(crate) fn docker_save(layers: &[&[u8]]) -> Vec<u8> {
    docker_save_with(layers, config(layers))
}

fn docker_save_with(layers: &[&[u8]], config: Vec<u8>) -> Vec<u8> {
    let config_name = format!("{}.json", sha(&config));
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": ["app:1"], "Layers": names}
    ]))
    .unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, content: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, path, content).unwrap();
    };
    add("manifest.json", &manifest);
    add(&config_name, &config);
    for (name, layer) in names.iter().zip(layers) {
        add(name, layer);
    }
    builder.into_inner().unwrap()
}

/// Debian's `docker-registry`, on a free loopback port, storing under a directory of its own;
/// stopped when dropped.
struct Registry {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed by scripts/setup --test");
        let address = format!("127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < until, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            address,
            _dir: dir,
        }
    }

    /// Pushes an image of `layers` (the top one zstd-compressed) as `repository:tag`.
    async fn push(&self, repository: &str, layers: &[&[u8]]) -> String {
        use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let reference: oci_client::Reference =
            format!("{}/{repository}", self.address).parse().unwrap();
        let blobs: Vec<ImageLayer> = layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                if i + 1 == layers.len() {
                    ImageLayer::new(
                        zstd::encode_all(*layer, 3).unwrap(),
                        "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                        None,
                    )
                } else {
                    ImageLayer::new(
                        layer.to_vec(),
                        "application/vnd.oci.image.layer.v1.tar".into(),
                        None,
                    )
                }
            })
            .collect();
        let config = Config::new(
            config(layers),
            "application/vnd.oci.image.config.v1+json".into(),
            None,
        );
        let pushed = client
            .push(
                &reference,
                &blobs,
                config,
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
            )
            .await
            .unwrap();
        pushed.manifest_url
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn layer_dirs(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("images/layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}

#[tokio::test]
async fn templates_from_archives_and_a_registry_share_layers_and_make_sandboxes() {
    let d = TestDaemon::start().await;
    let base = base_layer();
    let top = layer(&[
        Entry::File("etc/.wh.gone", b"", 0o644),
        Entry::File("opt/app/.wh..wh..opq", b"", 0o644),
        Entry::File("opt/app/new", b"new\n", 0o644),
        Entry::File("bin/tool", b"#!/bin/sh\necho tool\n", 0o4755),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    std::fs::write(&archive, docker_save(&[&base, &top])).unwrap();

    // A tenant may look but not make.
    let (key, _) = d.user("tenant").await;
    let refused = cli_as(
        &d.url,
        Some(&key),
        &["template", "import", "app", archive.to_str().unwrap()],
        None,
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stdout));
    assert!(
        text(&refused.stderr).contains("admin"),
        "{}",
        text(&refused.stderr)
    );

    let imported = d.cli(&["template", "import", "app", archive.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    assert!(text(&imported.stdout).starts_with("app\tsha256:"));
    // The name is taken: refused before the upload is read, a clean message and status.
    let again = d.cli(&["template", "import", "app", archive.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("template \"app\" already exists"),
        "{}",
        text(&again.stderr)
    );
    let listed = cli_as(&d.url, Some(&key), &["template", "ls"], None);
    assert!(text(&listed.stdout).contains("docker save archive"));
    let app = d.client.template("app").await.unwrap();
    assert_eq!(app.layers.len(), 2);
    assert_eq!(app.working_dir.as_deref(), Some("/opt/app"));
    assert_eq!(app.setid_cleared, 1);

    // A sandbox from it: the image's merged tree, environment and working directory.
    let s = d
        .create_with(CreateSandboxRequest {
            template: Some("app".into()),
            ..Default::default()
        })
        .await;
    let out = d
        .sh(
            &s.id,
            "pwd; echo $FROM_IMAGE; ls; cat /etc/hello; test -e /etc/gone || echo gone; \
             ls -l /bin/tool | cut -c1-10; echo data > /tmp/x && cat /tmp/x; \
             echo kept > ~/file && cat ~/file",
        )
        .await;
    assert_eq!(out.exit_code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "/opt/app\nyes\nnew\nhello from the image\ngone\n-rwxr-xr-x\ndata\nkept\n"
    );
    // Owned by the sandbox's root, read-only to its user.
    let out = d.sh(&s.id, "echo x > /etc/hello").await;
    assert_ne!(out.exit_code, 0);

    // In use: kept.
    let busy = d.cli(&["template", "rm", "app"]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        text(&busy.stderr).contains("live sandbox"),
        "{}",
        text(&busy.stderr)
    );

    // The same base, pulled from a registry: its layer is not stored twice.
    let registry = Registry::start();
    let other_top = layer(&[Entry::File("etc/pulled", b"pulled\n", 0o644)]);
    registry.push("team/busy:1", &[&base, &other_top]).await;
    let reference = format!("{}/team/busy:1", registry.address);
    let pulled = d.cli(&["template", "pull", &reference]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert!(
        text(&pulled.stdout).starts_with("busy-1\tsha256:"),
        "{}",
        text(&pulled.stdout)
    );
    let busy_1 = d.client.template("busy-1").await.unwrap();
    assert!(busy_1
        .source
        .starts_with(&format!("{}/team/busy@sha256:", registry.address)));
    assert_eq!(busy_1.layers[0].digest, app.layers[0].digest);
    assert_eq!(layer_dirs(d.data_dir()).len(), 3);
    let p = d
        .create_with(CreateSandboxRequest {
            template: Some("busy-1".into()),
            ..Default::default()
        })
        .await;
    let out = d.sh(&p.id, "cat /etc/pulled /etc/gone").await;
    assert_eq!(
        out.stdout, "pulled\nhidden by the next layer\n",
        "{}",
        out.stderr
    );
    // A tag the registry does not have; a registry that is not there.
    let missing = d.cli(&[
        "template",
        "pull",
        &format!("{}/team/none:1", registry.address),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("upstream_error"),
        "{}",
        text(&missing.stderr)
    );
    drop(registry);

    // Hostile archives: refused, the entry named, nothing kept.
    let mut hostile = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    header.as_old_mut().name[..9].copy_from_slice(b"../escape");
    header.set_cksum();
    hostile.append(&header, &b"x"[..]).unwrap();
    let hostile = hostile.into_inner().unwrap();
    let refused = d.cli_with_stdin(&["template", "import", "evil", "-"], Some(&hostile));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("'..'"),
        "{}",
        text(&refused.stderr)
    );
    let escape = layer(&[
        Entry::Link("etc", "/etc"),
        Entry::File("etc/sbx-escape", b"x", 0o644),
    ]);
    let refused = d.cli_with_stdin(&["template", "import", "evil", "-"], Some(&escape));
    assert!(
        text(&refused.stderr).contains("symlink"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!Path::new("/etc/sbx-escape").exists());

    // Removal: not while a snapshot stands on it; the shared layer stays with the template
    // that still has it.
    let snapshot = d.client.create_snapshot(&s.id, None).await.unwrap();
    d.client.delete(&s.id).await.unwrap();
    let based = d.cli(&["template", "rm", "app"]);
    assert_eq!(based.status.code(), Some(1));
    assert!(
        text(&based.stderr).contains("snapshot"),
        "{}",
        text(&based.stderr)
    );
    d.client.delete_snapshot(&snapshot.id).await.unwrap();
    let removed = d.cli(&["template", "rm", "app"]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert_eq!(layer_dirs(d.data_dir()).len(), 2);
    d.client.delete(&p.id).await.unwrap();
    d.client.delete_template("busy-1").await.unwrap();
    assert!(layer_dirs(d.data_dir()).is_empty());
    let gone = d.client.template("busy-1").await.unwrap_err();
    assert_eq!(gone.code(), Some("template_not_found"));
    let mut scratch = std::fs::read_dir(d.data_dir().join("images/tmp")).unwrap();
    assert!(scratch.next().is_none());
    let _ = std::io::stdout().flush();
    d.finish().await;
}

/// An image's `User` (a name in its own `/etc/passwd`) and `Entrypoint` + `Cmd` become the
/// sandbox's defaults: commands that name no user run as it, an exec without a command runs
/// the image's; an image whose `User` is not in its `/etc/passwd` is refused.
#[tokio::test]
async fn an_images_user_and_command_are_the_sandboxes_defaults() {
    let d = TestDaemon::start().await;
    let base = base_layer();
    let users = layer(&[
        Entry::File(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/sh\napp:x:1234:1240::/:/bin/sh\n",
            0o644,
        ),
        Entry::File("etc/group", b"root:x:0:\napp:x:1240:\n", 0o644),
    ]);
    let image_config = |user: &str| {
        let diff_ids: Vec<String> = [&base, &users]
            .iter()
            .map(|l| format!("sha256:{}", sha(l)))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"], "User": user,
                       "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo from the image as $(id -u):$(id -g)"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.tar");
    std::fs::write(
        &good,
        docker_save_with(&[&base, &users], image_config("app")),
    )
    .unwrap();
    let bad = dir.path().join("bad.tar");
    std::fs::write(
        &bad,
        docker_save_with(&[&base, &users], image_config("ghost")),
    )
    .unwrap();

    let refused = d.cli(&["template", "import", "ghostly", bad.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("not in its /etc/passwd"),
        "{}",
        text(&refused.stderr)
    );
    assert!(d.client.template("ghostly").await.is_err());

    let imported = d.cli(&["template", "import", "withuser", good.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let shown = d.cli(&["template", "inspect", "withuser", "--json"]);
    assert!(
        text(&shown.stdout).contains("\"user\": \"app\""),
        "{}",
        text(&shown.stdout)
    );
    let s = d
        .create_with(CreateSandboxRequest {
            template: Some("withuser".into()),
            ..Default::default()
        })
        .await;
    // No user named: the image's; `user` and `root` still mean themselves.
    assert_eq!(d.sh(&s.id, "id -u; id -g").await.stdout, "1234\n1240\n");
    assert_eq!(d.sh_as(&s.id, Some("user"), "id -u").await.stdout, "1000\n");
    assert_eq!(d.sh_as(&s.id, Some("root"), "id -u").await.stdout, "0\n");
    // No command: the image's.
    let out = d.cli(&["exec", &s.id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the image as 1234:1240\n");
    // A sandbox of a template without a command still needs one.
    let plain = d.create().await;
    let empty = d
        .client
        .exec(&plain.id, &sbx_protocol::ExecRequest::default())
        .await
        .unwrap_err();
    assert!(
        empty.to_string().contains("cmd must not be empty"),
        "{empty}"
    );
    d.finish().await;
}
