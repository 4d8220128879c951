//! The image store against archives built here: `docker save` archives with whiteouts and
//! opaque directories (checked through a real overlay mount), OCI layouts, root file system
//! tarballs, hostile layers, shared layers and their collection. Needs root (owners,
//! whiteout devices, overlay mounts).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use sbx_backend::{ImageError, ImageSource, Images};
use sbx_images::{ImageStore, SharedStore, StoreConfig};
use sha2::Digest;

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Mode(&'a str, u32),
    Symlink(&'a str, &'a str),
    Char(&'a str),
    Raw(&'a [u8]),
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1);
        match entry {
            E::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            E::File(path, content) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(content.len() as u64);
                builder
                    .append_data(&mut header, path, content.as_bytes())
                    .unwrap();
            }
            E::Mode(path, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(1);
                builder.append_data(&mut header, path, &b"x"[..]).unwrap();
            }
            E::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
            E::Char(path) => {
                header.set_entry_type(tar::EntryType::Char);
                header.set_mode(0o666);
                header.set_size(0);
                header.set_device_major(1).unwrap();
                header.set_device_minor(3).unwrap();
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            E::Raw(name) => {
                // A name the tar crate's own checks would refuse to write.
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(1);
                let field = &mut header.as_old_mut().name;
                field[..name.len()].copy_from_slice(name);
                header.set_cksum();
                builder.append(&header, &b"x"[..]).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        builder.append_data(&mut header, path, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

fn config(layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8"], "WorkingDir": "/srv",
                   "User": "1000", "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap()
}

/// A `docker save` archive of an image made of `layers`.
fn docker_save(layers: &[&[u8]]) -> Vec<u8> {
    let config = config(layers);
    let config_name = format!("{}.json", sha(&config));
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": ["test:latest"], "Layers": names}
    ]))
    .unwrap();
    let mut files: Vec<(&str, &[u8])> = vec![("manifest.json", &manifest), (&config_name, &config)];
    for (name, layer) in names.iter().zip(layers) {
        files.push((name, layer));
    }
    archive(&files)
}

fn store(dir: &Path) -> SharedStore {
    SharedStore(Arc::new(
        ImageStore::open(&dir.join("images"), StoreConfig::default()).unwrap(),
    ))
}

async fn import(
    store: &SharedStore,
    name: &str,
    bytes: Vec<u8>,
) -> Result<sbx_backend::ImageTemplate, ImageError> {
    let (progress, _rx) = tokio::sync::mpsc::channel(1024);
    store
        .make(
            name,
            ImageSource::Archive(Box::pin(std::io::Cursor::new(bytes))),
            progress,
        )
        .await
}

fn base_layer() -> Vec<u8> {
    layer(&[
        E::Dir("etc"),
        E::File("etc/gone", "a"),
        E::File("etc/kept", "b"),
        E::Dir("opt/x"),
        E::File("opt/x/old", "o"),
        E::Symlink("bin", "/usr/bin"),
    ])
}

#[tokio::test]
async fn docker_save_whiteouts_and_opaque_directories_give_the_right_tree() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let base = base_layer();
    let top = layer(&[
        E::File("etc/.wh.gone", ""),
        E::File("opt/x/.wh..wh..opq", ""),
        E::File("opt/x/new", "n"),
        E::Mode("usr/bin/su", 0o4755),
    ]);
    let template = import(&store, "app", docker_save(&[&base, &top]))
        .await
        .unwrap();
    assert_eq!(template.layers.len(), 2);
    assert_eq!(template.layers[0].digest, format!("sha256:{}", sha(&base)));
    assert_eq!(template.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(template.config.user.as_deref(), Some("1000"));
    assert_eq!(template.config.cmd, vec!["/bin/sh"]);
    assert!(template.digest.unwrap().starts_with("sha256:"));
    assert_eq!(template.setid_cleared, 1);
    let resolved = store.0.resolve("app").unwrap();
    // The merged tree, through the kernel's own overlay.
    let merged = dir.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let lower = format!(
        "{}:{}",
        resolved.layers[1].display(),
        resolved.layers[0].display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={lower}").as_str()),
    )
    .unwrap();
    let seen = (
        merged.join("etc/gone").exists(),
        fs::read_to_string(merged.join("etc/kept")).ok(),
        merged.join("opt/x/old").exists(),
        fs::read_to_string(merged.join("opt/x/new")).ok(),
        fs::read_link(merged.join("bin")).ok(),
        fs::metadata(merged.join("usr/bin/su"))
            .map(|m| m.mode() & 0o7777)
            .ok(),
    );
    nix::mount::umount(&merged).unwrap();
    assert_eq!(
        seen,
        (
            false,
            Some("b".into()),
            false,
            Some("n".into()),
            Some("/usr/bin".into()),
            Some(0o755)
        )
    );
}

#[tokio::test]
async fn hostile_layers_are_refused_with_the_entry_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (layer(&[E::Raw(b"../escape")]), "'..'"),
        (layer(&[E::Raw(b"/etc/escape")]), "absolute path"),
        (
            layer(&[E::Symlink("link", "/etc"), E::File("link/passwd", "x")]),
            "goes through a symlink",
        ),
        (
            layer(&[E::Symlink("up", "../../.."), E::File("up/x", "x")]),
            "goes through a symlink",
        ),
        (layer(&[E::Char("dev/null")]), "device nodes are refused"),
        // A whiteout of `..` would empty the directory the layer is unpacked in.
        (layer(&[E::File("a/.wh...", "")]), "malformed whiteout"),
        (layer(&[E::File(".wh..", "")]), "malformed whiteout"),
        // A long name is read with a bound, never whole.
        (layer(&[E::File(&"n/".repeat(40_000), "x")]), "long name"),
    ];
    for (n, (bytes, expected)) in cases.into_iter().enumerate() {
        // As a root file system and as a layer of an image.
        for (what, archive) in [
            ("rootfs", bytes.clone()),
            ("docker", docker_save(&[&bytes])),
        ] {
            let error = import(&store, &format!("bad{n}{what}"), archive)
                .await
                .unwrap_err();
            assert!(
                matches!(&error, ImageError::Invalid(m) if m.contains(expected)),
                "case {n} ({what}): {error}"
            );
        }
    }
    // Nothing was kept: no template, no layer, no scratch.
    assert!(store.list().await.unwrap().is_empty());
    assert_eq!(
        fs::read_dir(dir.path().join("images/layers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(dir.path().join("images/tmp")).unwrap().count(),
        0
    );
    assert!(!Path::new("/etc/escape").exists());
}

#[tokio::test]
async fn layers_are_stored_once_shared_and_collected_with_their_last_template() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let base = base_layer();
    let one = layer(&[E::File("one", "1")]);
    let two = layer(&[E::File("two", "2")]);
    import(&store, "first", docker_save(&[&base, &one]))
        .await
        .unwrap();
    let base_dir = store.0.resolve("first").unwrap().layers[0].clone();
    let inode = fs::metadata(base_dir.join("etc/kept")).unwrap().ino();
    import(&store, "second", docker_save(&[&base, &two]))
        .await
        .unwrap();
    let second = store.0.resolve("second").unwrap();
    assert_eq!(second.layers[0], base_dir);
    assert_eq!(
        fs::metadata(second.layers[0].join("etc/kept"))
            .unwrap()
            .ino(),
        inode
    );
    let layer_dirs = |d: &Path| {
        fs::read_dir(d.join("images/layers"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count()
    };
    assert_eq!(layer_dirs(dir.path()), 3);
    // Taken names are refused; unknown ones are not found.
    assert!(matches!(
        import(&store, "first", docker_save(&[&base])).await,
        Err(ImageError::Exists(_))
    ));
    assert!(matches!(
        store.remove("nope").await,
        Err(ImageError::NotFound(_))
    ));
    store.remove("first").await.unwrap();
    assert_eq!(layer_dirs(dir.path()), 2);
    assert!(base_dir.is_dir());
    store.remove("second").await.unwrap();
    assert_eq!(
        fs::read_dir(dir.path().join("images/layers"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn oci_layouts_and_root_file_system_tarballs_compressed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let base = base_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &base).unwrap();
    let gz = gz.finish().unwrap();
    let image_config = config(&[&base]);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha(&image_config)), "size": image_config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{}", sha(&gz)), "size": gz.len()}]
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len()}]
    }))
    .unwrap();
    let names = [
        format!("blobs/sha256/{}", sha(&manifest)),
        format!("blobs/sha256/{}", sha(&image_config)),
        format!("blobs/sha256/{}", sha(&gz)),
    ];
    let layout = archive(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", &index),
        (&names[0], &manifest),
        (&names[1], &image_config),
        (&names[2], &gz),
    ]);
    let template = import(&store, "oci", zstd::encode_all(&layout[..], 1).unwrap())
        .await
        .unwrap();
    assert_eq!(template.source, "OCI image layout");
    assert_eq!(template.digest, Some(format!("sha256:{}", sha(&manifest))));
    assert_eq!(template.config.env[0], "PATH=/opt/bin:/usr/bin");
    let rootfs = import(&store, "plain", base.clone()).await.unwrap();
    assert_eq!(rootfs.layers, template.layers);
    let tree = &store.0.resolve("plain").unwrap().layers[0];
    assert_eq!(fs::read_to_string(tree.join("etc/kept")).unwrap(), "b");
    assert_eq!(
        fs::metadata(tree.join("etc")).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // A layer whose content is not what its config says.
    let lying = {
        let other = layer(&[E::File("x", "y")]);
        let mut saved = docker_save(&[&other]);
        // A layer the store does not have (a stored one would be reused, not read).
        let bad = config(&[&layer(&[E::File("z", "w")])]);
        // Same length, other digest: swap the config for one naming another layer.
        let good = config(&[&other]);
        let at = saved
            .windows(good.len())
            .position(|w| w == good.as_slice())
            .unwrap();
        saved[at..at + bad.len()].copy_from_slice(&bad);
        saved
    };
    let error = import(&store, "lying", lying).await.unwrap_err();
    assert!(
        matches!(&error, ImageError::Invalid(m) if m.contains("its content has digest")),
        "{error}"
    );
}
