//! Templates from archives: a root file system tarball (one layer), a `docker save` archive,
//! or an OCI image layout packed as a tar; each plain, gzip or zstd.
//!
//! The archive is received into `tmp/` (bounded), then: a tarball whose top level has
//! `oci-layout` and `index.json` is an OCI layout, one with `manifest.json` a `docker save`
//! archive, anything else a root file system. An image archive is unpacked (through
//! [`crate::unpack`], like any layer) and its JSON read from there: every path it names is
//! resolved inside, never through a symlink.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use sbx_backend::{ImageConfig, ImageError, ImageTemplate, ProgressSender};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::unpack::{names, UnpackError, Unpacker};
use crate::{
    layer_list, now_ms, remove_any, sha256_hex, step, Hashing, ImageStore, Reservation, MAX_LAYERS,
};

/// Largest JSON document of an image read (manifests, indexes, configs).
const MAX_JSON: u64 = 4 << 20;

pub(crate) async fn import(
    store: &Arc<ImageStore>,
    reservation: Reservation,
    mut stream: Pin<Box<dyn AsyncRead + Send>>,
    progress: &ProgressSender,
) -> Result<ImageTemplate, ImageError> {
    let spool = crate::Scratch(store.scratch("archive"));
    receive(
        &spool.0,
        &mut stream,
        store.config().max_image_bytes,
        progress,
    )
    .await?;
    let store = store.clone();
    let progress = progress.clone();
    tokio::task::spawn_blocking(move || {
        let made = from_file(&store, &reservation, &spool.0, &progress);
        drop(spool);
        store.finish(reservation, made?)
    })
    .await
    .map_err(|e| ImageError::io("the import failed", io::Error::other(e)))?
}

async fn receive(
    spool: &Path,
    stream: &mut Pin<Box<dyn AsyncRead + Send>>,
    max: u64,
    progress: &ProgressSender,
) -> Result<(), ImageError> {
    let mut file = tokio::fs::File::create(spool)
        .await
        .map_err(|e| ImageError::io("cannot receive the archive", e))?;
    let mut buffer = vec![0u8; 256 << 10];
    let mut total = 0u64;
    let mut shown = 0u64;
    loop {
        let n = stream
            .read(&mut buffer)
            .await
            .map_err(|e| ImageError::Invalid(format!("the archive could not be received: {e}")))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            return Err(ImageError::TooLarge(format!(
                "the archive is larger than {max} bytes (images.max_image_mb)"
            )));
        }
        file.write_all(&buffer[..n])
            .await
            .map_err(|e| ImageError::io("cannot receive the archive", e))?;
        if total - shown >= 8 << 20 {
            shown = total;
            let _ = progress.try_send(step("receive", None, total, None));
        }
    }
    file.flush()
        .await
        .map_err(|e| ImageError::io("cannot receive the archive", e))?;
    if total == 0 {
        return Err(ImageError::Invalid("the archive is empty".into()));
    }
    let _ = progress.try_send(step("receive", None, total, Some(total)));
    Ok(())
}

/// A reader of `file`'s bytes, decompressed when they start like gzip or zstd; at most
/// `limit` bytes come out (a decompression bomb ends there, with an error).
pub(crate) fn decoded(file: fs::File, limit: u64) -> io::Result<Box<dyn Read + Send>> {
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let head = reader.fill_buf()?;
    let decoded: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader)?)
    } else {
        Box::new(reader)
    };
    Ok(Box::new(Bounded {
        inner: decoded,
        left: limit,
    }))
}

/// Tar's own bytes (headers, padding) beside the data an unpacking counts.
const TAR_SLACK: u64 = 1 << 30;

struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells an end from a stream that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "it decompresses to more than the image may take",
                )),
            };
        }
        let most = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..most])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Rootfs,
    Docker,
    Oci,
}

fn open(path: &Path) -> Result<fs::File, ImageError> {
    fs::File::open(path).map_err(|e| ImageError::io("cannot read the archive", e))
}

fn unpack_error(e: UnpackError) -> ImageError {
    match e {
        UnpackError::Invalid(m) => ImageError::Invalid(m),
        UnpackError::TooLarge(m) => ImageError::TooLarge(m),
        UnpackError::Io(e) => ImageError::io("cannot unpack", e),
    }
}

/// What the archive is, from the names at its top level (headers only: data is skipped).
fn sniff(path: &Path, max: u64) -> Result<Kind, ImageError> {
    let reader = decoded(open(path)?, max.saturating_add(TAR_SLACK))
        .map_err(|e| ImageError::io("cannot read the archive", e))?;
    let mut archive = tar::Archive::new(reader);
    // Raw: a long name's data is never read here (nor held in memory).
    let entries = archive
        .entries()
        .map_err(|e| ImageError::Invalid(format!("not a tar archive: {e}")))?
        .raw(true);
    let (mut manifest, mut layout, mut index) = (false, false, false);
    let mut empty = true;
    for (n, entry) in entries.enumerate() {
        empty = false;
        let entry = entry.map_err(|e| ImageError::Invalid(format!("not a tar archive: {e}")))?;
        let raw = entry.path_bytes();
        if let Some(names) = names(&raw) {
            if names.len() == 1 {
                match names[0].as_encoded_bytes() {
                    b"manifest.json" => manifest = true,
                    b"oci-layout" => layout = true,
                    b"index.json" => index = true,
                    _ => {}
                }
            }
        }
        // Image archives hold a few JSON files and blobs; a root file system has thousands.
        if n > 100_000 {
            break;
        }
    }
    if empty {
        return Err(ImageError::Invalid(
            "the archive has no entries: not a root file system or an image".into(),
        ));
    }
    Ok(if layout && index {
        Kind::Oci
    } else if manifest {
        Kind::Docker
    } else {
        Kind::Rootfs
    })
}

fn from_file(
    store: &ImageStore,
    reservation: &Reservation,
    path: &Path,
    progress: &ProgressSender,
) -> Result<ImageTemplate, ImageError> {
    let max = store.config().max_image_bytes;
    let kind = sniff(path, max)?;
    if kind == Kind::Rootfs {
        let (hex, bytes, setid) = layer_from(store, reservation, path, None, max, progress)?;
        return Ok(ImageTemplate {
            name: reservation.name().to_owned(),
            source: "root file system archive".into(),
            digest: None,
            layers: layer_list(&[(hex, bytes)]),
            config: ImageConfig::default(),
            created_ms: now_ms(),
            setid_cleared: setid,
            user_ids: None,
        });
    }
    let dir = store.scratch("unpacked");
    let made = (|| {
        fs::create_dir(&dir).map_err(|e| ImageError::io("cannot unpack the archive", e))?;
        let reader = decoded(open(path)?, max.saturating_add(TAR_SLACK))
            .map_err(|e| ImageError::io("cannot read the archive", e))?;
        let mut archive = tar::Archive::new(reader);
        let mut unpacker = Unpacker::new(&dir, None, max, "the archive")
            .map_err(|e| ImageError::io("cannot unpack the archive", e))?;
        unpacker
            .all(
                archive
                    .entries()
                    .map_err(|e| ImageError::Invalid(format!("not a tar archive: {e}")))?,
            )
            .map_err(unpack_error)?;
        let image = match kind {
            Kind::Docker => docker_image(&dir)?,
            _ => oci_image(&dir)?,
        };
        from_image(store, reservation, &dir, image, progress)
    })();
    let _ = remove_any(&dir);
    made
}

/// An image found in an unpacked archive: where its layers are, and its config.
struct Image {
    source: String,
    digest: Option<String>,
    layers: Vec<PathBuf>,
    config: RawConfig,
}

/// The parts of an image configuration sbx uses.
#[derive(Debug, Deserialize)]
pub(crate) struct RawConfig {
    #[serde(default)]
    config: Option<RawExec>,
    rootfs: RawRootfs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawExec {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl RawConfig {
    pub(crate) fn parse(bytes: &[u8]) -> Result<RawConfig, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| {
            ImageError::Invalid(format!("the image's configuration is malformed: {e}"))
        })
    }

    pub(crate) fn diff_ids(&self) -> Result<Vec<String>, ImageError> {
        self.rootfs
            .diff_ids
            .iter()
            .map(|d| {
                sha256_hex(d).map(str::to_owned).ok_or_else(|| {
                    ImageError::Invalid(format!("layer diff_id {d:?} is not a sha256 digest"))
                })
            })
            .collect()
    }

    pub(crate) fn defaults(&self) -> ImageConfig {
        let exec = self.config.as_ref();
        ImageConfig {
            env: exec.and_then(|c| c.env.clone()).unwrap_or_default(),
            working_dir: exec
                .and_then(|c| c.working_dir.clone())
                .filter(|w| !w.is_empty()),
            user: exec.and_then(|c| c.user.clone()).filter(|u| !u.is_empty()),
            entrypoint: exec.and_then(|c| c.entrypoint.clone()).unwrap_or_default(),
            cmd: exec.and_then(|c| c.cmd.clone()).unwrap_or_default(),
        }
    }
}

/// The regular file at `relative` under `dir`, reached without following any symlink.
fn plain_file(dir: &Path, relative: &str) -> Result<PathBuf, ImageError> {
    let parts = names(relative.as_bytes())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ImageError::Invalid(format!("{relative:?}: not a path in the archive")))?;
    let mut path = dir.to_owned();
    for part in &parts {
        path.push(part);
        let meta = fs::symlink_metadata(&path)
            .map_err(|_| ImageError::Invalid(format!("the archive has no file {relative:?}")))?;
        if meta.file_type().is_symlink() {
            return Err(ImageError::Invalid(format!(
                "{relative:?}: goes through a symlink"
            )));
        }
    }
    if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(ImageError::Invalid(format!("{relative:?}: not a file")));
    }
    Ok(path)
}

fn read_json(path: &Path) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    open(path)?
        .take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::io("cannot read the archive", e))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(ImageError::Invalid(format!(
            "{}: larger than {MAX_JSON} bytes",
            path.file_name().unwrap_or_default().to_string_lossy()
        )));
    }
    Ok(bytes)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    layers: Vec<String>,
}

fn docker_image(dir: &Path) -> Result<Image, ImageError> {
    let manifest: Vec<DockerManifest> =
        serde_json::from_slice(&read_json(&plain_file(dir, "manifest.json")?)?).map_err(|e| {
            ImageError::Invalid(format!(
                "manifest.json of the docker archive is malformed: {e}"
            ))
        })?;
    let [image] = <[DockerManifest; 1]>::try_from(manifest).map_err(|m| {
        ImageError::Invalid(format!(
            "the docker archive holds {} images; import one at a time (docker save IMAGE)",
            m.len()
        ))
    })?;
    let config_path = plain_file(dir, &image.config)?;
    let config_bytes = read_json(&config_path)?;
    let id = {
        use sha2::Digest as _;
        format!("sha256:{:x}", sha2::Sha256::digest(&config_bytes))
    };
    Ok(Image {
        source: "docker save archive".into(),
        digest: Some(id),
        layers: image
            .layers
            .iter()
            .map(|l| plain_file(dir, l))
            .collect::<Result<_, _>>()?,
        config: RawConfig::parse(&config_bytes)?,
    })
}

fn blob(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    let hex = sha256_hex(digest)
        .ok_or_else(|| ImageError::Invalid(format!("{digest:?} is not a sha256 digest")))?;
    plain_file(dir, &format!("blobs/sha256/{hex}"))
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn oci_image(dir: &Path) -> Result<Image, ImageError> {
    let mut index_path = plain_file(dir, "index.json")?;
    // An index may point at another index (a multi-platform image); two levels at most.
    for _ in 0..3 {
        let index: oci_client::manifest::OciImageIndex =
            serde_json::from_slice(&read_json(&index_path)?).map_err(|e| {
                ImageError::Invalid(format!("an index of the OCI layout is malformed: {e}"))
            })?;
        let chosen = index
            .manifests
            .iter()
            .find(|m| {
                m.platform.as_ref().is_some_and(|p| {
                    p.os.to_string() == "linux" && p.architecture.to_string() == "amd64"
                })
            })
            .or_else(|| index.manifests.first())
            .ok_or_else(|| ImageError::Invalid("the OCI layout's index is empty".into()))?;
        let path = blob(dir, &chosen.digest)?;
        if INDEX_TYPES.contains(&chosen.media_type.as_str()) {
            index_path = path;
            continue;
        }
        let manifest: oci_client::manifest::OciImageManifest =
            serde_json::from_slice(&read_json(&path)?).map_err(|e| {
                ImageError::Invalid(format!("the image manifest is malformed: {e}"))
            })?;
        let config = RawConfig::parse(&read_json(&blob(dir, &manifest.config.digest)?)?)?;
        return Ok(Image {
            source: "OCI image layout".into(),
            digest: Some(chosen.digest.clone()),
            layers: manifest
                .layers
                .iter()
                .map(|l| blob(dir, &l.digest))
                .collect::<Result<_, _>>()?,
            config,
        });
    }
    Err(ImageError::Invalid(
        "the OCI layout's indexes nest too deep".into(),
    ))
}

fn from_image(
    store: &ImageStore,
    reservation: &Reservation,
    _dir: &Path,
    image: Image,
    progress: &ProgressSender,
) -> Result<ImageTemplate, ImageError> {
    let diff_ids = image.config.diff_ids()?;
    check_layers(image.layers.len(), diff_ids.len())?;
    let mut left = store.config().max_image_bytes;
    let mut layers = Vec::new();
    let mut setid = 0;
    for (path, hex) in image.layers.iter().zip(&diff_ids) {
        let (hex, bytes, cleared) =
            layer_from(store, reservation, path, Some(hex), left, progress)?;
        left = left.saturating_sub(bytes);
        setid += cleared;
        layers.push((hex, bytes));
    }
    Ok(ImageTemplate {
        name: reservation.name().to_owned(),
        source: image.source,
        digest: image.digest,
        layers: layer_list(&layers),
        config: image.config.defaults(),
        created_ms: now_ms(),
        setid_cleared: setid,
        user_ids: None,
    })
}

pub(crate) fn check_layers(layers: usize, diff_ids: usize) -> Result<(), ImageError> {
    if layers == 0 {
        return Err(ImageError::Invalid("the image has no layers".into()));
    }
    if layers != diff_ids {
        return Err(ImageError::Invalid(format!(
            "the image has {layers} layers but its configuration names {diff_ids}"
        )));
    }
    if layers > MAX_LAYERS {
        return Err(ImageError::TooLarge(format!(
            "the image has {layers} layers; at most {MAX_LAYERS} are taken"
        )));
    }
    Ok(())
}

/// One layer from the (possibly compressed) tar at `path`: unpacked and hashed at once.
pub(crate) fn layer_from(
    store: &ImageStore,
    reservation: &Reservation,
    path: &Path,
    expected: Option<&str>,
    max_bytes: u64,
    progress: &ProgressSender,
) -> Result<(String, u64, u64), ImageError> {
    let shown = expected.map_or_else(|| "the archive".to_owned(), |h| format!("layer sha256:{h}"));
    store.add_layer(
        reservation,
        expected,
        |dest| {
            let _ = progress.try_send(step("unpack", expected, 0, None));
            let reader = decoded(open(path)?, max_bytes.saturating_add(TAR_SLACK))
                .map_err(|e| ImageError::io("cannot read a layer", e))?;
            let mut hashing = Hashing::new(reader);
            let stats = {
                let mut archive = tar::Archive::new(&mut hashing);
                let mut unpacker = Unpacker::new(dest, None, max_bytes, shown.clone())
                    .map_err(|e| ImageError::io("cannot unpack a layer", e))?;
                unpacker
                    .all(archive.entries().map_err(|e| {
                        ImageError::Invalid(format!("{shown} is not a tar archive: {e}"))
                    })?)
                    .map_err(unpack_error)?;
                unpacker.stats
            };
            let digest = hashing
                .finish()
                .map_err(|e| ImageError::Invalid(format!("{shown} is malformed: {e}")))?;
            Ok((digest, stats))
        },
        progress,
    )
}
