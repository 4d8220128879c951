//! Templates: the read-only lower layers a sandbox root is built from.
//!
//! Owns: the built-in `host` template (built by `sbx_images::host`), the directory templates under
//! `<data>/templates/<name>/rootfs`, and the roots of templates from images (the image
//! store's layers under `<data>/templates/.image-root/rootfs`, which holds only the mount
//! points every root needs and the sandbox's `/etc/resolv.conf`).
//! Must never: expose more of the host than `/usr` (and, on hosts without merged `/usr`, the
//! `/bin`, `/sbin`, `/lib*` directories), plus a curated, world-readable part of `/etc`.
//!
//! `host` is a small directory tree built once per data directory (see `sbx_images::host`).
//! The host's `/usr` is bind-mounted read-only over it when a sandbox starts, so `sh`, `bash`,
//! `python3` and coreutils work with no download. Everything in a template is owned by host
//! root, which the sandbox's user namespace does not map: inside it shows as `nobody` and is
//! read-only even for the sandbox's root.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sbx_images::host::RESOLV;
pub use sbx_images::host::{Bind, HOST};

/// What a sandbox root is built from.
#[derive(Debug, Clone)]
pub struct TemplateRoot {
    pub lower: PathBuf,
    pub binds: Vec<Bind>,
    /// An image's layers, bottom first (mounted under `lower`).
    pub layers: Vec<PathBuf>,
    /// What the image says commands start with.
    pub config: Option<sbx_backend::ImageConfig>,
}

/// The directory above an image's layers (mount points only).
const IMAGE_ROOT: &str = ".image-root";
const IMAGE_ROOT_VERSION: &str = "1";

#[derive(Debug)]
pub struct Templates {
    dir: PathBuf,
    host_binds: Vec<Bind>,
    images: Option<std::sync::Arc<sbx_images::ImageStore>>,
}

impl Templates {
    /// Opens the template directory, building the `host` template if it is missing or stale.
    pub fn open(
        dir: &Path,
        images: Option<std::sync::Arc<sbx_images::ImageStore>>,
    ) -> io::Result<Templates> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let (_, host_binds) = sbx_images::host::ensure(dir)?;
        let image_root = dir.join(IMAGE_ROOT);
        if fs::read_to_string(image_root.join("version")).unwrap_or_default() != IMAGE_ROOT_VERSION
        {
            build_image_root(dir, &image_root)?;
        }
        Ok(Templates {
            dir: dir.to_owned(),
            host_binds,
            images,
        })
    }

    pub fn resolve(&self, name: &str) -> Option<TemplateRoot> {
        if !sbx_backend::valid_template_name(name) {
            return None;
        }
        let lower = self.dir.join(name).join("rootfs");
        if !lower.is_dir() {
            let image = self.images.as_ref()?.resolve(name)?;
            return Some(TemplateRoot {
                lower: self.dir.join(IMAGE_ROOT).join("rootfs"),
                binds: Vec::new(),
                layers: image.layers,
                config: Some(image.config),
            });
        }
        let binds = if name == HOST {
            self.host_binds.clone()
        } else {
            Vec::new()
        };
        Some(TemplateRoot {
            lower,
            binds,
            layers: Vec::new(),
            config: None,
        })
    }
}

/// Builds `<templates>/.image-root`: the mount points of a root and `/etc/resolv.conf`.
fn build_image_root(templates: &Path, root: &Path) -> io::Result<()> {
    let scratch = templates.join(format!(".image-root-build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let rootfs = scratch.join("rootfs");
    for dir in ["dev", "proc", "sys", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(rootfs.join("etc/resolv.conf"), RESOLV)?;
    fs::write(scratch.join("version"), IMAGE_ROOT_VERSION)?;
    let _ = fs::remove_dir_all(root);
    fs::rename(&scratch, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_template_has_etc_essentials_and_usr_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        let templates = Templates::open(dir.path(), None).unwrap();
        let root = templates.resolve(HOST).unwrap();
        assert!(root.lower.join("usr").is_dir());
        assert!(root.lower.join("etc/passwd").is_file());
        assert!(!root.lower.join("etc/shadow").exists());
        assert!(root.binds.iter().any(|b| b.target == "usr"));
        assert!(templates.resolve("missing").is_none());
        assert!(templates.resolve("../host").is_none());
    }
}
