//! Daemon-side wiring shared by `sbx serve` and the offline `sbx cleanup`: the data directory,
//! the lock that gives one daemon (or one offline cleanup) a data directory at a time, and the
//! construction of store → backend → lifecycle.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use sbx_backend_native::{NativeBackend, NativeConfig};
use sbx_lifecycle::{Bounds, Service};

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

/// Store, native backend and lifecycle service for a data directory.
pub fn open(
    config: &sbx_config::Config,
    data_dir: &Path,
    warm_pool: usize,
) -> anyhow::Result<(Service, Arc<NativeBackend>)> {
    let store =
        sbx_store::Store::open(&data_dir.join("sbx.db")).context("cannot open the database")?;
    let backend = Arc::new(
        NativeBackend::new(NativeConfig {
            data_dir: data_dir.to_owned(),
            warm_pool,
            warm_pool_disk_bytes: config
                .profile(sbx_config::DEFAULT_PROFILE)
                .map_or(0, |p| p.resources.disk_mb << 20),
            disk_reserve_bytes: config.capacity.disk_reserve_mb << 20,
            disk_overcommit: config.capacity.disk_overcommit,
        })
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("the native backend cannot start")?,
    );
    let lifecycle = sbx_lifecycle::Config {
        profiles: config.profiles.clone(),
        reaper: config.reaper.clone(),
        bounds: Bounds::for_host(
            host_memory_mb(),
            host_cpus(),
            host_task_limit(),
            disk_mb(data_dir),
            &config.capacity,
        ),
        limits: config.limits.clone(),
        audit: Some((data_dir.join(AUDIT_LOG_FILE), config.audit)),
        exec: config.exec,
    };
    let service =
        Service::new(store, backend.clone(), lifecycle).map_err(|e| anyhow::anyhow!(e.detail()))?;
    Ok((service, backend))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024)
}

/// Size of the filesystem holding `dir`, MiB.
// The casts are no-ops on 64-bit targets only (`fsblkcnt_t`, `c_ulong`).
#[allow(clippy::unnecessary_cast)]
fn disk_mb(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| (s.blocks() * s.fragment_size()) >> 20)
        .unwrap_or(1024)
}

/// How many tasks (processes and threads) the host can have: the smaller of `kernel.pid_max`
/// and `kernel.threads-max`.
fn host_task_limit() -> u64 {
    let read = |file: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
    };
    // 32768 is the kernel's default pid_max: the safe guess when /proc says nothing.
    let pid_max = read("/proc/sys/kernel/pid_max").unwrap_or(32768);
    let threads_max = read("/proc/sys/kernel/threads-max").unwrap_or(pid_max);
    pid_max.min(threads_max)
}

fn host_cpus() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0)
}
