//! An image's `User` (`name`, `uid`, `name:group`, `uid:gid`) as ids, looked up in the
//! image's own `/etc/passwd` and `/etc/group` (the top-most layer that has them), as Docker
//! does: a numeric uid without an entry gets gid 0.
//!
//! The layers are hostile: nothing is followed (`etc` must be a directory, the files regular
//! files, neither a symlink), reads are bounded, and every id must fit the sandbox's range.

use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Most of an `/etc/passwd` or `/etc/group` read.
const MAX_FILE: u64 = 1 << 20;
/// Ids a sandbox maps (0 to 65535).
const MAX_ID: u32 = 65535;

pub fn resolve(user: &str, layers_top_first: &[PathBuf]) -> Result<(u32, u32), String> {
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let passwd = || find(layers_top_first, "passwd");
    let (uid, primary) = match name.parse::<u32>() {
        Ok(uid) => {
            let primary = passwd()?
                .and_then(|text| entry(&text, 2, &uid.to_string()).and_then(|f| f[3].parse().ok()));
            (uid, primary.unwrap_or(0))
        }
        Err(_) => {
            let text = passwd()?.ok_or_else(|| {
                format!("the image's User {user:?} names a user, and the image has no /etc/passwd")
            })?;
            let fields = entry(&text, 0, name)
                .ok_or_else(|| format!("the image's User {user:?} is not in its /etc/passwd"))?;
            let uid = fields[2].parse::<u32>();
            let gid = fields[3].parse::<u32>();
            match (uid, gid) {
                (Ok(uid), Ok(gid)) => (uid, gid),
                _ => {
                    return Err(format!(
                        "the image's /etc/passwd entry of {name:?} is malformed"
                    ))
                }
            }
        }
    };
    let gid = match group {
        None | Some("") => primary,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let text = find(layers_top_first, "group")?.ok_or_else(|| {
                    format!(
                        "the image's User {user:?} names a group, and the image has no /etc/group"
                    )
                })?;
                entry(&text, 0, group)
                    .and_then(|f| f[2].parse::<u32>().ok())
                    .ok_or_else(|| {
                        format!("the image's User {user:?}: no group {group:?} in its /etc/group")
                    })?
            }
        },
    };
    if uid > MAX_ID || gid > MAX_ID {
        return Err(format!(
            "the image's User {user:?} is uid {uid} gid {gid}: a sandbox's ids go to {MAX_ID}"
        ));
    }
    Ok((uid, gid))
}

/// `/etc/<name>` of the top-most layer that has it (a whiteout, or anything but a regular
/// file, hides it; so does an opaque `etc` without it).
fn find(layers_top_first: &[PathBuf], name: &str) -> Result<Option<String>, String> {
    for layer in layers_top_first {
        let etc = layer.join("etc");
        match std::fs::symlink_metadata(&etc) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(_) => continue,
        }
        match std::fs::symlink_metadata(etc.join(name)) {
            Ok(meta) if meta.is_file() => return read(&etc.join(name), name).map(Some),
            Ok(_) => return Ok(None),
            Err(_) if opaque(&etc) => return Ok(None),
            Err(_) => continue,
        }
    }
    Ok(None)
}

/// Whether the unpacked directory hides what lower layers have there.
fn opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let (Ok(path), Ok(attribute)) = (
        std::ffi::CString::new(dir.as_os_str().as_bytes()),
        std::ffi::CString::new(crate::unpack::OPAQUE_XATTR),
    ) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a zero-sized buffer only asks for the size.
    unsafe { libc::lgetxattr(path.as_ptr(), attribute.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

fn read(path: &Path, name: &str) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let cannot = |e: std::io::Error| format!("cannot read the image's /etc/{name}: {e}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!(
            "the image's /etc/{name} is larger than {} KiB",
            MAX_FILE >> 10
        ));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The fields of the first line whose field `index` is `value` (at least 4 fields).
fn entry<'a>(text: &'a str, index: usize, value: &str) -> Option<Vec<&'a str>> {
    text.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 4 && fields[index] == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join("etc").join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn names_and_numbers_resolve_like_docker() {
        let top = layer(&[("group", "root:x:0:\nstaff:x:50:\n")]);
        let base = layer(&[(
            "passwd",
            "root:x:0:0::/root:/bin/sh\nnode:x:1001:1002::/home/node:/bin/sh\n",
        )]);
        let layers = [top.path().to_owned(), base.path().to_owned()];
        assert_eq!(resolve("node", &layers), Ok((1001, 1002)));
        assert_eq!(resolve("root", &layers), Ok((0, 0)));
        assert_eq!(resolve("1001", &layers), Ok((1001, 1002)));
        assert_eq!(resolve("4000", &layers), Ok((4000, 0)));
        assert_eq!(resolve("node:staff", &layers), Ok((1001, 50)));
        assert_eq!(resolve("7:8", &layers), Ok((7, 8)));
        assert!(resolve("ghost", &layers)
            .unwrap_err()
            .contains("not in its /etc/passwd"));
        assert!(resolve("node:ghosts", &layers)
            .unwrap_err()
            .contains("no group"));
        assert!(resolve("70000", &layers).unwrap_err().contains("65535"));
    }

    #[test]
    fn an_opaque_etc_hides_the_lower_layers_passwd() {
        let base = layer(&[("passwd", "node:x:1001:1001::/:/bin/sh\n")]);
        let top = layer(&[("hostname", "x\n")]);
        let etc = std::ffi::CString::new(top.path().join("etc").to_str().unwrap()).unwrap();
        let attribute = std::ffi::CString::new(crate::unpack::OPAQUE_XATTR).unwrap();
        // SAFETY: NUL-terminated strings and a one-byte value.
        let set = unsafe {
            libc::lsetxattr(etc.as_ptr(), attribute.as_ptr(), b"y".as_ptr().cast(), 1, 0)
        };
        assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
        let layers = [top.path().to_owned(), base.path().to_owned()];
        assert!(resolve("node", &layers)
            .unwrap_err()
            .contains("no /etc/passwd"));
        let big = layer(&[("passwd", &"x".repeat(2 << 20))]);
        assert!(resolve("node", &[big.path().to_owned()])
            .unwrap_err()
            .contains("larger"));
    }

    #[test]
    fn a_symlinked_etc_or_file_is_not_followed() {
        let host = layer(&[("passwd", "evil:x:5:5::/:/bin/sh\n")]);
        let top = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(host.path().join("etc"), top.path().join("etc")).unwrap();
        assert!(resolve("evil", &[top.path().to_owned()]).is_err());
        let linked = tempfile::tempdir().unwrap();
        std::fs::create_dir(linked.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(
            host.path().join("etc/passwd"),
            linked.path().join("etc/passwd"),
        )
        .unwrap();
        assert!(resolve("evil", &[linked.path().to_owned()]).is_err());
    }
}
