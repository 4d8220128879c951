//! The image store: templates made from container images.
//!
//! Owns `<data>/images/`:
//!
//! ```text
//! layers/<hex>/        one layer, unpacked once (overlayfs form, owners 0–65535), named by the
//!                      sha256 of its uncompressed tar (the image's diff_id): shared by every
//!                      template that has it and mounted (idmapped, read-only) by every sandbox
//! layers/<hex>.bytes   what that tree holds on disk
//! templates/<name>.json  a template: its layers (bottom first), source, digest, config
//! tmp/                 archives being received and layers being unpacked (swept at open)
//! ```
//!
//! Must never: follow a path an archive or a registry chose out of the directory it unpacks
//! into (see [`unpack`]); keep a layer no template names (removed with the last template that
//! had it); hold its lock across a download or an unpacking.
//!
//! A layer appears by rename, whole, or not at all; a template's record by rename after all
//! its layers are in place, so a crash leaves at worst unreferenced layers (removed by the
//! next removal's collection) and scratch under `tmp/`.

pub mod host;
pub mod unpack;
mod users;

mod archive;
mod registry;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sbx_backend::{
    ImageConfig, ImageError, ImageProgress, ImageSource, ImageTemplate, Images, ProgressSender,
    TemplateLayer,
};
use sha2::Digest as _;

/// Most layers one image may have (overlayfs takes up to 500 lower layers; images seldom have
/// more than a few dozen).
pub const MAX_LAYERS: usize = 128;
/// Pulls and imports at once.
const MAX_MAKES: usize = 2;

/// Bounds of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Most bytes one image may unpack to, and most bytes of an archive received.
    pub max_image_bytes: u64,
    /// Registries spoken to over plain HTTP (`host:port`); loopback ones always are.
    pub insecure_registries: Vec<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_image_bytes: 16 << 30,
            insecure_registries: Vec::new(),
        }
    }
}

/// A template as a backend builds a root from it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The layers' trees, bottom first.
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
}

/// The store (one per data directory; the daemon's lock keeps other processes out).
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    config: StoreConfig,
    /// Names and layers of templates being made: not to be taken twice, nor collected.
    pending: Mutex<Pending>,
    serial: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    names: HashSet<String>,
    layers: HashMap<String, usize>,
    makes: usize,
}

impl ImageStore {
    /// Opens (creating) the store at `root`, sweeping what an earlier process left unfinished.
    pub fn open(root: &Path, config: StoreConfig) -> io::Result<ImageStore> {
        for dir in ["layers", "templates", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        use std::os::unix::fs::PermissionsExt;
        // Host users have no business in layers (an image's files, some of them world-writable
        // inside) nor in anything else here.
        for dir in ["", "layers", "templates", "tmp"] {
            fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o700))?;
        }
        for entry in fs::read_dir(root.join("tmp"))? {
            let _ = remove_any(&entry?.path());
        }
        Ok(ImageStore {
            root: root.to_owned(),
            config,
            pending: Mutex::new(Pending::default()),
            serial: AtomicU64::new(0),
        })
    }

    fn template_file(&self, name: &str) -> PathBuf {
        self.root.join("templates").join(format!("{name}.json"))
    }

    pub(crate) fn layer_dir(&self, hex: &str) -> PathBuf {
        self.root.join("layers").join(hex)
    }

    /// A new scratch path under `tmp/`.
    pub(crate) fn scratch(&self, what: &str) -> PathBuf {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    pub(crate) fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The template `name` as stored, if any.
    pub fn template(&self, name: &str) -> Option<ImageTemplate> {
        if !sbx_backend::valid_template_name(name) {
            return None;
        }
        let text = fs::read(self.template_file(name)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// What a backend needs to build a root from template `name`.
    pub fn resolve(&self, name: &str) -> Option<Resolved> {
        let template = self.template(name)?;
        let layers = template
            .layers
            .iter()
            .map(|l| self.layer_dir(hex_of(&l.digest)))
            .collect::<Vec<_>>();
        layers.iter().all(|l| l.is_dir()).then_some(Resolved {
            layers,
            config: template.config,
        })
    }

    fn templates(&self) -> io::Result<Vec<ImageTemplate>> {
        let mut all = Vec::new();
        for entry in fs::read_dir(self.root.join("templates"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Some(t) = fs::read(&path)
                    .ok()
                    .and_then(|text| serde_json::from_slice::<ImageTemplate>(&text).ok())
                {
                    all.push(t);
                }
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Takes `name` for a template being made (refused if it exists or is being made).
    fn reserve(self: &Arc<Self>, name: &str) -> Result<Reservation, ImageError> {
        if !sbx_backend::valid_template_name(name) {
            return Err(ImageError::Invalid(format!(
                "template name {name:?} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )));
        }
        if name == host::HOST {
            return Err(ImageError::Exists(name.to_owned()));
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.makes >= MAX_MAKES {
            return Err(ImageError::Busy(format!(
                "{MAX_MAKES} pulls or imports are running; try again when one has finished"
            )));
        }
        if pending.names.contains(name) || self.template_file(name).exists() {
            return Err(ImageError::Exists(name.to_owned()));
        }
        pending.names.insert(name.to_owned());
        pending.makes += 1;
        Ok(Reservation {
            store: self.clone(),
            name: name.to_owned(),
            layers: Mutex::new(Vec::new()),
        })
    }

    /// Makes a layer with `fill` (which unpacks into the empty directory it is given and
    /// returns the hex sha256 of the tar it read), unless `expected` names a stored one.
    /// Returns the layer's hex digest, its bytes on disk and the set-id bits cleared.
    pub(crate) fn add_layer(
        &self,
        reservation: &Reservation,
        expected: Option<&str>,
        fill: impl FnOnce(&Path) -> Result<(String, unpack::Stats), ImageError>,
        progress: &ProgressSender,
    ) -> Result<(String, u64, u64), ImageError> {
        if let Some(hex) = expected {
            reservation.hold(hex);
            let dir = self.layer_dir(hex);
            if dir.is_dir() {
                let _ = progress.try_send(step("reuse", Some(hex), 0, None));
                return Ok((hex.to_owned(), read_bytes(&dir), 0));
            }
        }
        let scratch = self.scratch("layer");
        fs::create_dir(&scratch).map_err(|e| ImageError::io("cannot make a layer", e))?;
        let outcome = fill(&scratch).and_then(|(digest, stats)| match expected {
            Some(hex) if digest != hex => Err(ImageError::Invalid(format!(
                "layer sha256:{hex}: its content has digest sha256:{digest}"
            ))),
            _ => Ok((digest, stats)),
        });
        let (hex, stats) = match outcome {
            Ok(done) => done,
            Err(e) => {
                let _ = remove_any(&scratch);
                return Err(e);
            }
        };
        if expected.is_none() {
            reservation.hold(&hex);
        }
        let dir = self.layer_dir(&hex);
        if dir.is_dir() {
            let _ = remove_any(&scratch);
            return Ok((hex, read_bytes(&dir), stats.setid_cleared));
        }
        // The layer's root: host root's, 0755, whatever the archive said of `./`.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::os::unix::fs::chown(&scratch, Some(0), Some(0));
        let _ = fs::set_permissions(&scratch, fs::Permissions::from_mode(0o755));
        let bytes = stored_bytes(&scratch);
        let _ = fs::write(dir.with_extension("bytes"), bytes.to_string());
        if let Err(e) = fs::rename(&scratch, &dir) {
            let _ = remove_any(&scratch);
            if !dir.is_dir() {
                return Err(ImageError::io("cannot store a layer", e));
            }
        }
        Ok((hex, bytes, stats.setid_cleared))
    }

    /// Records the template whose layers are all in place, its `User` resolved to ids.
    pub(crate) fn finish(
        &self,
        reservation: Reservation,
        mut template: ImageTemplate,
    ) -> Result<ImageTemplate, ImageError> {
        template.user_ids = match template.config.user.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(user) => {
                let layers: Vec<PathBuf> = template
                    .layers
                    .iter()
                    .rev()
                    .map(|l| self.layer_dir(hex_of(&l.digest)))
                    .collect();
                Some(users::resolve(user, &layers).map_err(ImageError::Invalid)?)
            }
        };
        let text = serde_json::to_vec_pretty(&template)
            .map_err(|e| ImageError::Invalid(format!("cannot record the template: {e}")))?;
        let scratch = self.scratch("template");
        fs::write(&scratch, text).map_err(|e| ImageError::io("cannot record the template", e))?;
        fs::rename(&scratch, self.template_file(&template.name))
            .map_err(|e| ImageError::io("cannot record the template", e))?;
        drop(reservation);
        Ok(template)
    }

    /// Removes template `name`, then every layer no template (stored or being made) names.
    pub fn remove_template(&self, name: &str) -> Result<(), ImageError> {
        if !sbx_backend::valid_template_name(name) || !self.template_file(name).exists() {
            return Err(ImageError::NotFound(name.to_owned()));
        }
        let doomed = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            fs::remove_file(self.template_file(name))
                .map_err(|e| ImageError::io("cannot remove the template", e))?;
            let mut used: HashSet<String> = pending.layers.keys().cloned().collect();
            for template in self
                .templates()
                .map_err(|e| ImageError::io("cannot list templates", e))?
            {
                used.extend(template.layers.iter().map(|l| hex_of(&l.digest).to_owned()));
            }
            let mut doomed = Vec::new();
            for entry in fs::read_dir(self.root.join("layers"))
                .map_err(|e| ImageError::io("cannot list layers", e))?
                .flatten()
            {
                let file = entry.file_name().to_string_lossy().into_owned();
                let hex = file.strip_suffix(".bytes").unwrap_or(&file);
                if !used.contains(hex) {
                    // Out of the way while the lock is held; deleted after.
                    let away = self.scratch("gc");
                    if fs::rename(entry.path(), &away).is_ok() {
                        doomed.push(away);
                    }
                }
            }
            doomed
        };
        for path in doomed {
            let _ = remove_any(&path);
        }
        Ok(())
    }
}

/// A template name taken while it is made, and the layers it holds from collection.
pub(crate) struct Reservation {
    store: Arc<ImageStore>,
    name: String,
    layers: Mutex<Vec<String>>,
}

impl Reservation {
    fn hold(&self, hex: &str) {
        let mut pending = self.store.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending.layers.entry(hex.to_owned()).or_default() += 1;
        self.layers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hex.to_owned());
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let layers = std::mem::take(self.layers.get_mut().unwrap_or_else(|p| p.into_inner()));
        let mut pending = self.store.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.names.remove(&self.name);
        pending.makes -= 1;
        for hex in &layers {
            if let Some(count) = pending.layers.get_mut(hex) {
                *count -= 1;
                if *count == 0 {
                    pending.layers.remove(hex);
                }
            }
        }
    }
}

pub(crate) fn step(
    what: &str,
    layer: Option<&str>,
    done: u64,
    total: Option<u64>,
) -> ImageProgress {
    ImageProgress {
        step: what.to_owned(),
        layer: layer.map(|l| format!("sha256:{l}")),
        done,
        total,
    }
}

/// The hex part of `sha256:<hex>` (the whole string when it has no algorithm).
pub(crate) fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A `sha256:<64 hex>` digest's hex, or `None`.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

fn read_bytes(layer: &Path) -> u64 {
    let file = layer.with_extension("bytes");
    fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes a tree holds on disk.
fn stored_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata() {
                total += meta.blocks() * 512;
                if meta.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
    }
    total
}

/// A scratch file or directory, removed when dropped (a pull or an import cut off by its
/// deadline leaves nothing).
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = remove_any(&self.0);
    }
}

pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

/// A reader that hashes what passes through it.
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: io::Read> Hashing<R> {
    pub(crate) fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    /// Reads what is left (a tar's padding after its end marker counts) and returns the hex
    /// digest of everything.
    pub(crate) fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("{:x}", self.hasher.finalize()))
    }
}

impl<R: io::Read> io::Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn layer_list(digests: &[(String, u64)]) -> Vec<TemplateLayer> {
    digests
        .iter()
        .map(|(hex, bytes)| TemplateLayer {
            digest: format!("sha256:{hex}"),
            bytes: *bytes,
        })
        .collect()
}

/// The store as lifecycle uses it.
#[derive(Debug, Clone)]
pub struct SharedStore(pub Arc<ImageStore>);

#[async_trait]
impl Images for SharedStore {
    async fn list(&self) -> Result<Vec<ImageTemplate>, ImageError> {
        let store = self.0.clone();
        tokio::task::spawn_blocking(move || store.templates())
            .await
            .map_err(|e| ImageError::io("the listing failed", io::Error::other(e)))?
            .map_err(|e| ImageError::io("cannot list templates", e))
    }

    async fn get(&self, name: &str) -> Result<Option<ImageTemplate>, ImageError> {
        Ok(self.0.template(name))
    }

    async fn make(
        &self,
        name: &str,
        source: ImageSource,
        progress: ProgressSender,
    ) -> Result<ImageTemplate, ImageError> {
        let reservation = self.0.reserve(name)?;
        let template = match source {
            ImageSource::Archive(stream) => {
                archive::import(&self.0, reservation, stream, &progress).await
            }
            ImageSource::Registry {
                reference,
                username,
                password,
            } => {
                registry::pull(
                    &self.0,
                    reservation,
                    &reference,
                    username.zip(password),
                    &progress,
                )
                .await
            }
        }?;
        let _ = progress.try_send(step("done", None, 1, Some(1)));
        Ok(template)
    }

    async fn remove(&self, name: &str) -> Result<(), ImageError> {
        let store = self.0.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || store.remove_template(&name))
            .await
            .map_err(|e| ImageError::io("the removal failed", io::Error::other(e)))?
    }
}
