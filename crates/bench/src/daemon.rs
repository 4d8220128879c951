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
    /// How it was started, for a restart: `sbx`, its arguments, its port.
    sbx: PathBuf,
    args: Vec<String>,
    port: u16,
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
        let config_file = data.path().join("sbx.toml");
        fs::write(&config_file, config).context("cannot write the configuration")?;
        let mut daemon = Daemon {
            client: Client::new(&format!("http://127.0.0.1:{port}")),
            version: String::new(),
            log_warnings: Vec::new(),
            pid: 0,
            child: None,
            instance: None,
            data: Some(data),
            sbx: sbx.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
            port,
        };
        daemon.spawn()?;
        daemon.wait_healthy().await?;
        let key = daemon.read("admin.key").trim().to_owned();
        if !key.is_empty() {
            daemon.client = daemon.client.clone().with_key(&key);
        }
        let instance = daemon.read("instance-id").trim().to_owned();
        daemon.instance = Some(instance).filter(|text| !text.is_empty());
        Ok(daemon)
    }

    /// Starts `sbx serve` on the data directory (its log appended to `daemon.log`).
    fn spawn(&mut self) -> Result<()> {
        let data = self.data.as_ref().expect("spawned before stop").path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("daemon.log"))
            .context("cannot open the daemon log")?;
        let child = Command::new(&self.sbx)
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--config")
            .arg(data.join("sbx.toml"))
            .args(&self.args)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal reaches only the bench, which
            // then stops the daemon itself (and waits for it).
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", self.sbx.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9` of the daemon (its sandboxes live on), then a new one on the same data
    /// directory and port; the time from its start until it answers `/healthz`, which it does
    /// only after reconciling with the host and re-adopting the sandboxes.
    pub async fn crash_and_restart(&mut self) -> Result<Duration> {
        let mut child = self.child.take().context("the daemon is not running")?;
        child.kill().context("cannot kill the daemon")?;
        child.wait().context("cannot reap the daemon")?;
        let start = Instant::now();
        self.spawn()?;
        self.wait_healthy().await?;
        Ok(start.elapsed())
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let daemon = self;
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
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// The daemon's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin key the daemon wrote to its data directory.
    pub fn admin_key(&self) -> Option<String> {
        let data = self.data.as_ref()?;
        std::fs::read_to_string(data.path().join("admin.key"))
            .ok()
            .map(|k| k.trim().to_owned())
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
