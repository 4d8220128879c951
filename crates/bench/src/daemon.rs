//! The daemon under test: `sbx serve` on a fresh data directory under /tmp and a free port,
//! stopped with SIGTERM in every path (explicitly, or on drop), then checked for leftovers
//! (processes or cgroups of its instance) before its data directory is removed.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use sbx_api_client::Client;

/// How long the daemon may take to answer `/healthz` after it starts.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd daemon may take to destroy what is left and exit.
const STOP_DEADLINE: Duration = Duration::from_secs(120);

pub struct Daemon {
    pub client: Client,
    /// The version `/healthz` reports.
    pub version: String,
    /// WARN and ERROR lines of the daemon's log, read when it stopped.
    pub log_warnings: Vec<String>,
    child: Option<Child>,
    pid: u32,
    /// The native backend's instance id: the name of its cgroup parent `sbx/<instance>`.
    instance: Option<String>,
    data: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts `sbx serve` with `args` and the configuration `config`, waits until it answers
    /// `/healthz`, and gives its client the admin key it wrote (none with
    /// `--insecure-no-auth`).
    pub async fn start(sbx: &Path, args: &[&str], config: &str) -> Result<Daemon> {
        let data = tempfile::Builder::new()
            .prefix("sbx-bench-")
            .tempdir_in("/tmp")
            .context("cannot create a data directory under /tmp")?;
        let port = free_port()?;
        let log = fs::File::create(data.path().join("daemon.log"))
            .context("cannot create the daemon log")?;
        let config_file = data.path().join("sbx.toml");
        fs::write(&config_file, config).context("cannot write the configuration")?;
        let child = Command::new(sbx)
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .arg("--config")
            .arg(&config_file)
            .args(args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal reaches only the bench, which
            // then stops the daemon itself (and waits for it).
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", sbx.display()))?;
        let mut daemon = Daemon {
            client: Client::new(&format!("http://127.0.0.1:{port}")),
            version: String::new(),
            log_warnings: Vec::new(),
            pid: child.id(),
            child: Some(child),
            instance: None,
            data: Some(data),
        };
        let started = Instant::now();
        loop {
            if let Ok(health) = daemon.client.health().await {
                daemon.version = health.version;
                break;
            }
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                daemon.child = None;
                bail!(
                    "sbx serve exited with {status} before answering /healthz; its log:\n{}",
                    daemon.log_tail(40)
                );
            }
            if started.elapsed() > START_DEADLINE {
                bail!(
                    "sbx serve did not answer /healthz within {START_DEADLINE:?}; its log:\n{}",
                    daemon.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key = daemon.read("admin.key").trim().to_owned();
        if !key.is_empty() {
            daemon.client = daemon.client.clone().with_key(&key);
        }
        let instance = daemon.read("instance-id").trim().to_owned();
        daemon.instance = Some(instance).filter(|text| !text.is_empty());
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// A file of the data directory; empty once the directory is removed.
    fn read(&self, name: &str) -> String {
        self.data
            .as_ref()
            .and_then(|d| fs::read_to_string(d.path().join(name)).ok())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the daemon's stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.read("daemon.log");
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, wait for the exit (SIGKILL after [`STOP_DEADLINE`]), check that the daemon left
    /// no process or cgroup of its instance, and remove the data directory. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(mut child) = self.child.take() {
            match terminate(&mut child) {
                Ok(status) if status.success() => {}
                Ok(status) => problems.push(format!(
                    "sbx serve exited with {status}; the end of its log:\n{}",
                    self.log_tail(40)
                )),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        let log = self.read("daemon.log");
        self.log_warnings.extend(
            log.lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .map(str::to_owned),
        );
        if let Some(instance) = self.instance.take() {
            problems.extend(leftovers(&instance));
        }
        if let Some(data) = self.data.take() {
            let path = data.path().to_owned();
            if let Err(e) = data.close() {
                problems.push(format!("cannot remove {}: {e}", path.display()));
            }
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("sbx-bench: stopping the daemon: {e:#}");
        }
    }
}

/// SIGTERM and wait; SIGKILL when it does not exit in time.
fn terminate(child: &mut Child) -> Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .context("cannot run kill")?;
    if !sent.success() {
        bail!("kill -TERM {pid} failed: {sent}");
    }
    let asked = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if asked.elapsed() > STOP_DEADLINE {
            child.kill()?;
            child.wait()?;
            bail!("sbx serve did not exit within {STOP_DEADLINE:?} of SIGTERM; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the daemon's instance still holds on the host: cgroup directories `sbx/<instance>`
/// and processes inside them.
fn leftovers(instance: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup/sbx").join(instance)];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(
            entries
                .flatten()
                .map(|e| e.path().join("sbx").join(instance)),
        );
    }
    for dir in dirs {
        if dir.exists() {
            found.push(format!("cgroup left behind: {}", dir.display()));
        }
    }
    for pid in pids_in_instance(instance) {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        found.push(format!("process left behind: {pid} {}", cmdline.trim()));
    }
    found
}

/// Pids of the processes in the cgroups of `instance` (sandbox inits and what they run).
pub fn pids_in_instance(instance: &str) -> Vec<u32> {
    let marker = format!("/sbx/{instance}/");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|text| text.contains(&marker))
        })
        .collect()
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}
