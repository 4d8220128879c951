//! The built-in `host` template: a small directory tree built once per data directory —
//! mount points, the merged-`/usr` symlinks of the host, a copy of the `/etc` files programs
//! need (dynamic loader cache, alternatives, certificates, locale and shell setup),
//! synthesized `passwd`/`group` and an `/etc/profile` of its own (no subprocess per login
//! shell) — over which the host's `/usr` (and, on hosts without merged `/usr`, `/bin`, `/sbin`,
//! `/lib*`) is bound read-only when a sandbox starts, so `sh`, `bash`, `python3` and coreutils
//! work with no download. Shared by every backend that runs sandboxes
//! on this host.
//!
//! Must never: expose more of the host than those directories and a curated, world-readable
//! part of `/etc`.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A bind mount of a host directory into a sandbox root, read-only.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    /// Path inside the root, relative (e.g. `usr`).
    pub target: String,
}

/// Bump when the content of the `host` template changes; an older build is rebuilt.
pub const HOST_TEMPLATE_VERSION: &str = "2";
pub const HOST: &str = "host";

/// Top-level directories whose host copies may be bound in (when they are not symlinks).
pub const HOST_SYSTEM_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Mount points and empty directories every root needs.
const SKELETON_DIRS: [&str; 17] = [
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "home",
    "root",
    "mnt",
    "opt",
    "srv",
    "var",
    "var/tmp",
    "var/lib",
    "var/cache",
    "var/log",
    "etc",
    "usr",
];

/// Entries of the host's `/etc` copied into the `host` template (if present and world-readable).
const ETC_ALLOWLIST: [&str; 40] = [
    "alternatives",
    "bash.bashrc",
    "bash_completion.d",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "environment",
    "gai.conf",
    "host.conf",
    "inputrc",
    "issue",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "login.defs",
    "magic",
    "magic.mime",
    "mime.types",
    "netconfig",
    "networks",
    "nsswitch.conf",
    "os-release",
    "perl",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
    "rpc",
    "services",
    "shells",
    "skel",
    "ssl",
    "terminfo",
    "timezone",
    "vim",
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
user:x:1000:1000:sandbox user:/home/user:/bin/bash\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\nusers:x:100:\nuser:x:1000:\nnogroup:x:65534:\n";
/// The login shells' `/etc/profile`: Debian's, but for the user's id, which it reads from
/// `EUID` where the shell sets it (bash: every E2B command is a login shell) rather than from a
/// subprocess (`id -u`, a third of a login shell's start here).
const PROFILE: &str = r#"# /etc/profile: the host's system-wide .profile for Bourne shells, as sbx's host template
# has it (the user's id from EUID when the shell sets it, without running `id`).

if [ "${EUID:-$(id -u)}" -eq 0 ]; then
  PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
else
  PATH="/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
fi
export PATH

if [ "${PS1-}" ]; then
  if [ "${BASH-}" ] && [ "$BASH" != "/bin/sh" ]; then
    if [ -f /etc/bash.bashrc ]; then
      . /etc/bash.bashrc
    fi
  else
    if [ "${EUID:-$(id -u)}" -eq 0 ]; then
      PS1='# '
    else
      PS1='$ '
    fi
  fi
fi

if [ -d /etc/profile.d ]; then
  for i in /etc/profile.d/*.sh; do
    if [ -r $i ]; then
      . $i
    fi
  done
  unset i
fi
"#;

pub const RESOLV: &str = "# sbx: this sandbox has no network\n";

/// `<templates>/host`, built (or rebuilt when stale); returns its root file system and the
/// host directories to bind over it.
pub fn ensure(templates: &Path) -> io::Result<(PathBuf, Vec<Bind>)> {
    let host = templates.join(HOST);
    let current = fs::read_to_string(host.join("version")).unwrap_or_default();
    if current != HOST_TEMPLATE_VERSION {
        build_host(templates, &host)?;
    }
    Ok((host.join("rootfs"), host_binds(Path::new("/"))))
}

/// Host system directories that are real directories (not merged-`/usr` symlinks).
pub fn host_binds(host_root: &Path) -> Vec<Bind> {
    HOST_SYSTEM_DIRS
        .iter()
        .filter(|name| {
            fs::symlink_metadata(host_root.join(name)).is_ok_and(|m| m.file_type().is_dir())
        })
        .map(|name| Bind {
            source: host_root.join(name),
            target: (*name).to_owned(),
        })
        .collect()
}

/// Builds `<templates>/host` in a scratch directory, then renames it into place.
fn build_host(templates: &Path, host: &Path) -> io::Result<()> {
    let scratch = templates.join(format!(".host-build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let rootfs = scratch.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))?;
    for dir in SKELETON_DIRS {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(rootfs.join("var/tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(rootfs.join("root"), fs::Permissions::from_mode(0o700))?;
    for name in HOST_SYSTEM_DIRS {
        let host_path = Path::new("/").join(name);
        let Ok(meta) = fs::symlink_metadata(&host_path) else {
            continue;
        };
        let target = rootfs.join(name);
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(&host_path)?, &target)?;
        } else if meta.is_dir() {
            fs::create_dir_all(&target)?;
        }
    }
    for name in ETC_ALLOWLIST {
        copy_world_readable(
            &Path::new("/etc").join(name),
            &rootfs.join("etc").join(name),
        )?;
    }
    fs::write(rootfs.join("etc/passwd"), PASSWD)?;
    fs::write(rootfs.join("etc/group"), GROUP)?;
    fs::write(rootfs.join("etc/resolv.conf"), RESOLV)?;
    fs::write(rootfs.join("etc/profile"), PROFILE)?;
    fs::write(scratch.join("version"), HOST_TEMPLATE_VERSION)?;
    let old = templates.join(format!(".host-old-{}", std::process::id()));
    if host.exists() {
        fs::rename(host, &old)?;
    }
    fs::rename(&scratch, host)?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// Copies a file, symlink or directory tree, keeping only what every host user could read.
fn copy_world_readable(source: &Path, target: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(source) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mode = meta.mode();
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        symlink(fs::read_link(source)?, target)?;
    } else if file_type.is_dir() {
        if mode & 0o005 != 0o005 {
            return Ok(());
        }
        fs::create_dir(target)?;
        for entry in fs::read_dir(source)? {
            let entry = entry?;
            copy_world_readable(&entry.path(), &target.join(entry.file_name()))?;
        }
        fs::set_permissions(target, fs::Permissions::from_mode(mode & 0o755))?;
    } else if file_type.is_file() {
        if mode & 0o004 == 0 {
            return Ok(());
        }
        fs::copy(source, target)?;
        fs::set_permissions(target, fs::Permissions::from_mode(mode & 0o755))?;
    }
    Ok(())
}

/// A statically linked busybox on the host (Debian's `busybox-static`), if there is one.
pub fn static_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|path| fs::read(path).is_ok_and(|elf| is_static_elf(&elf)))
}

/// An x86-64/arm64 ELF64 executable without a program interpreter.
fn is_static_elf(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return false;
    }
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let offset = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap_or_default()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = offset + i * size;
        // PT_INTERP = 3.
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap_or_default()) != 3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_only_world_readable_entries() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("private")).unwrap();
        fs::write(src.join("public"), "p").unwrap();
        fs::write(src.join("secret"), "s").unwrap();
        fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
        symlink("public", src.join("link")).unwrap();
        let dst = dir.path().join("dst");
        copy_world_readable(&src, &dst).unwrap();
        assert!(dst.join("public").exists());
        assert!(!dst.join("secret").exists());
        assert!(!dst.join("private").exists());
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("public")
        );
    }
}
