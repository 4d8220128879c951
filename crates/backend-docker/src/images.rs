//! Templates as Docker images: a template's root file system imported into the engine once
//! (`POST /images/create?fromSrc=-`, one flattened layer), tagged by a hash of its content so
//! that every daemon and every sandbox on the engine shares it.
//!
//! - `host`: the host template's small tree (mount points, a curated `/etc`); the host's `/usr`
//!   is bound over it read-only when a sandbox starts, as on the other local backends.
//! - an image template: its layers from sbx's store, merged by a read-only overlay mounted for
//!   the length of the import, then archived.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use bollard::query_parameters::CreateImageOptions;
use bytes::Bytes;
use futures::StreamExt;
use sbx_backend::BackendError;

/// The repository every imported template goes to; tags are content hashes.
pub const REPOSITORY: &str = "sbx-template";

/// A tar archive of `root`: symlinks kept as links, owners and modes kept, entries in name
/// order and every time zero, so that the same tree always makes the same bytes (and tag).
fn archive(root: &Path, out: impl Write) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(out);
    append_tree(&mut builder, root, Path::new(""))?;
    builder.into_inner()?.flush()
}

fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let inside = name.join(entry.file_name());
        let meta = fs::symlink_metadata(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        header.set_mtime(0);
        let kind = meta.file_type();
        if kind.is_symlink() {
            header.set_size(0);
            builder.append_link(&mut header, &inside, fs::read_link(&path)?)?;
        } else if kind.is_dir() {
            header.set_size(0);
            builder.append_data(&mut header, &inside, std::io::empty())?;
            append_tree(builder, &path, &inside)?;
        } else if kind.is_file() {
            builder.append_data(&mut header, &inside, fs::File::open(&path)?)?;
        }
        // Anything else (an overlay whiteout, a socket) has no place in a template's tree.
    }
    Ok(())
}

/// The host template's archive, and the tag it is imported under.
pub fn host_archive(rootfs: &Path) -> Result<(Vec<u8>, String), BackendError> {
    let mut bytes = Vec::new();
    archive(rootfs, &mut bytes)
        .map_err(|e| BackendError::io("cannot archive the host template", e))?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Ok((bytes, format!("host-{:016x}", hasher.finish())))
}

/// The tag of an image template: a hash of its layers' digests (directory names).
pub fn layers_tag(name: &str, layers: &[PathBuf]) -> String {
    let mut hasher = DefaultHasher::new();
    for layer in layers {
        layer.file_name().hash(&mut hasher);
    }
    format!("{name}-{:016x}", hasher.finish())
}

/// Whether `tag` is one [`layers_tag`] made for template `name` (not for `name-3`, say).
pub fn is_tag_of(tag: &str, name: &str) -> bool {
    tag.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Archives the merged layers (mounted read-only at a scratch directory under `scratch`) into
/// `out`, in chunks; the mount is gone when this returns.
pub fn archive_layers(
    layers: &[PathBuf],
    empty: &Path,
    scratch: &Path,
    out: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), BackendError> {
    fs::create_dir_all(scratch).map_err(|e| BackendError::io("cannot make a scratch dir", e))?;
    // Top layer first; the empty directory at the bottom makes two lowers at least, which a
    // read-only overlay needs.
    let mut lowers: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    lowers.push(empty.to_string_lossy().into_owned());
    let options = format!("lowerdir={}", lowers.join(":"));
    nix::mount::mount(
        Some("overlay"),
        scratch,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .map_err(|e| BackendError::io("cannot mount the template's layers", e.into()))?;
    let written = archive(
        scratch,
        ChunkWriter {
            out,
            buffer: Vec::new(),
        },
    );
    let _ = nix::mount::umount2(scratch, nix::mount::MntFlags::MNT_DETACH);
    let _ = fs::remove_dir(scratch);
    written.map_err(|e| BackendError::io("cannot archive the template's layers", e))
}

/// Sends what is written in chunks of 256 KiB.
struct ChunkWriter {
    out: tokio::sync::mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= 256 << 10 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.out
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the engine stopped reading the import"))
    }
}

/// Imports an archive (as a stream of chunks) as `REPOSITORY:tag`.
pub async fn import(
    docker: &bollard::Docker,
    tag: &str,
    body: impl futures::Stream<Item = Bytes> + Send + 'static,
) -> Result<(), BackendError> {
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(REPOSITORY.into()),
        tag: Some(tag.into()),
        ..Default::default()
    };
    let mut progress = docker.create_image(Some(options), Some(bollard::body_stream(body)), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| BackendError::other_from("the Docker Engine refused the import", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_belongs_to_its_template_only() {
        let tag = layers_tag("py", &[PathBuf::from("/layers/sha256-aa")]);
        assert!(is_tag_of(&tag, "py"));
        assert!(!is_tag_of(&tag, "p"));
        let longer = layers_tag("py-3", &[PathBuf::from("/layers/sha256-aa")]);
        assert!(!is_tag_of(&longer, "py"));
        assert!(is_tag_of(&longer, "py-3"));
        assert!(!is_tag_of("py-0123", "py"));
    }
}
