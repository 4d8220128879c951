//! Daemon-side wiring shared by `sbx serve` and the offline `sbx cleanup`: the data directory,
//! the lock that gives one daemon (or one offline cleanup) a data directory at a time, and the
//! construction of store → backend → lifecycle.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sbx_lifecycle::{Service, State};

use crate::backends;

/// The data directory from the flag, else the configuration, else the default for this user.
pub fn data_dir(flag: Option<PathBuf>, config: &sbx_config::Config) -> anyhow::Result<PathBuf> {
    let dir = match flag.or_else(|| config.daemon.data_dir.clone()) {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// The admin key a fresh daemon writes into its data directory (mode 0600).
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// The audit log in the data directory.
pub const AUDIT_LOG_FILE: &str = "audit.log";

/// Where the data directory is when nothing names one.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/sbx"));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(Path::new(&dir).join("sbx"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set; pass --data-dir")?;
    Ok(Path::new(&home).join(".local/share/sbx"))
}

/// An exclusive lock on `<data>/daemon.lock` (flock), held for the life of the process. The
/// file says who holds it (`pid` and what it serves), for the error of whoever comes second.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path, holder: &str) -> anyhow::Result<DataDirLock> {
        let path = data_dir.join("daemon.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut other = String::new();
            let _ = file.read_to_string(&mut other);
            anyhow::bail!(
                "the data directory {} is in use by {}",
                data_dir.display(),
                other.trim().if_empty("another sbx process")
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{holder} (pid {})", std::process::id())?;
        file.flush()?;
        Ok(DataDirLock { _file: file })
    }
}

trait IfEmpty {
    fn if_empty<'a>(&'a self, other: &'a str) -> &'a str;
}

impl IfEmpty for str {
    fn if_empty<'a>(&'a self, other: &'a str) -> &'a str {
        if self.is_empty() {
            other
        } else {
            self
        }
    }
}

/// Store, backends and lifecycle service for a data directory.
pub fn open(
    config: &sbx_config::Config,
    data_dir: &Path,
    warm_pool: usize,
) -> anyhow::Result<Service> {
    let store =
        sbx_store::Store::open(&data_dir.join("sbx.db")).context("cannot open the database")?;
    let live: Vec<String> = store
        .list_sandboxes(&State::names_where(State::may_have_host_traces))
        .context("cannot read the database")?
        .into_iter()
        .map(|row| row.backend)
        .collect();
    let kinds = backends::wanted(config, &live);
    let images = std::sync::Arc::new(
        sbx_images::ImageStore::open(
            &data_dir.join("images"),
            sbx_images::StoreConfig {
                max_image_bytes: config.images.max_image_mb << 20,
                insecure_registries: config.images.insecure_registries.clone(),
            },
        )
        .context("cannot open the image store")?,
    );
    let context = backends::Context {
        config,
        data_dir,
        warm_pool,
        images: images.clone(),
    };
    let backends = backends::build(&kinds, &context)?;
    let lifecycle = sbx_lifecycle::Config {
        profiles: config.profiles.clone(),
        reaper: config.reaper.clone(),
        capacity: config.capacity,
        limits: config.limits.clone(),
        audit: Some((data_dir.join(AUDIT_LOG_FILE), config.audit)),
        exec: config.exec,
        snapshots: config.snapshots,
        projects: config.projects,
    };
    let service =
        Service::new(store, backends, lifecycle).map_err(|e| anyhow::anyhow!(e.detail()))?;
    service.attach_images(std::sync::Arc::new(sbx_images::SharedStore(images)));
    Ok(service)
}

/// The key of the sandboxes' E2B access tokens (`<data>/e2b.key`, made once, owner-only): kept
/// across restarts so that clients keep their tokens.
pub fn e2b_secret(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join("e2b.key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            return <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    let temporary = data_dir.join(".e2b.key.new");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(&secret)?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret)
}
