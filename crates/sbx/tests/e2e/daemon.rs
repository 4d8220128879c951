//! A real daemon per test: `sbx serve` on a fresh data directory and port, a typed client, the
//! CLI, and the leak check that every test ends with.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sbx_api_client::Client;
use sbx_protocol::{CreateSandboxRequest, ExecRequest, ExecResult, Sandbox, SandboxState};

pub const SBX: &str = env!("CARGO_BIN_EXE_sbx");

pub struct TestDaemon {
    /// Acts with the admin key the daemon wrote (none with `--insecure-no-auth`).
    pub client: Client,
    /// The admin key (empty with `--insecure-no-auth`).
    pub admin_key: String,
    pub url: String,
    pub port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
    extra_env: Vec<(String, String)>,
    /// Extra `sbx serve` arguments, for every (re)start.
    pub args: Vec<String>,
    /// The data directory is a tmpfs of its own (unmounted at the end).
    tmpfs: bool,
    /// Sandbox id → the host key its traces are named by (see [`TestDaemon::key`]).
    keys: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// How to start a test daemon.
#[derive(Default)]
pub struct Options<'a> {
    /// A configuration file's text (written to `<data>/sbx.toml` and passed with `--config`).
    pub config: Option<&'a str>,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Put the data directory on a tmpfs of this many MiB: a small disk of its own, to fill.
    pub tmpfs_mb: Option<u64>,
}

impl TestDaemon {
    pub async fn start() -> TestDaemon {
        TestDaemon::start_with_env(&[]).await
    }

    /// Starts a daemon whose environment also holds `env` (to check it never reaches sandboxes).
    pub async fn start_with_env(env: &[(&str, &str)]) -> TestDaemon {
        TestDaemon::start_with(Options {
            env,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(options: Options<'_>) -> TestDaemon {
        let data = tempfile::Builder::new()
            .prefix("sbx-test-")
            .tempdir_in("/tmp")
            .unwrap();
        let port = free_port();
        if let Some(mb) = options.tmpfs_mb {
            let status = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={mb}m,mode=0700"),
                    "sbx-test",
                ])
                .arg(data.path())
                .status()
                .expect("cannot run mount");
            assert!(
                status.success(),
                "cannot mount a tmpfs on the data directory"
            );
        }
        let mut args: Vec<String> = options.args.iter().map(|a| a.to_string()).collect();
        if let Some(config) = options.config {
            let file = data.path().join("sbx.toml");
            std::fs::write(&file, config).unwrap();
            args.push("--config".into());
            args.push(file.to_string_lossy().into_owned());
        }
        let mut daemon = TestDaemon {
            client: Client::new(&format!("http://127.0.0.1:{port}")),
            admin_key: String::new(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            data,
            child: None,
            extra_env: options
                .env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args,
            tmpfs: options.tmpfs_mb.is_some(),
            keys: Default::default(),
        };
        daemon.spawn().await;
        daemon
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("daemon.log"))
            .unwrap();
        let mut command = Command::new(SBX);
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(self.data.path())
            .args(&self.args)
            .env("SBX_LOG", "info,sbx_api=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        self.child = Some(command.spawn().expect("cannot start sbx serve"));
        let start = Instant::now();
        loop {
            if self.client.health().await.is_ok() {
                // Written before the daemon serves (absent without authentication).
                let key =
                    std::fs::read_to_string(self.data.path().join("admin.key")).unwrap_or_default();
                self.admin_key = key.trim().to_owned();
                self.client = Client::new(&self.url);
                if !self.admin_key.is_empty() {
                    self.client = self.client.clone().with_key(&self.admin_key);
                }
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sbx serve exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "daemon did not come up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("daemon.log")).unwrap_or_default()
    }

    /// `kill -9` the daemon (its sandboxes stay on the host).
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("daemon is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts a new daemon on the same data directory and port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or crash the daemon first");
        self.spawn().await;
    }

    /// SIGTERM and wait for a clean exit; the data directory stays for a restart.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("daemon is running");
        signal(child.id(), libc::SIGTERM);
        let status = wait_exit(&mut child, Duration::from_secs(60)).expect("daemon did not stop");
        assert!(
            status.success(),
            "daemon exited with {status}:\n{}",
            self.log()
        );
    }

    /// Stops the daemon, then checks that nothing it made is left on the host.
    pub async fn finish(mut self) {
        let all = all_states();
        let ids: Vec<String> = self
            .client
            .list(&all, &[])
            .await
            .expect("list before stopping")
            .into_iter()
            .map(|s| s.id)
            .collect();
        self.stop().await;
        assert_no_leaks(self.data.path(), &ids);
        self.unmount_tmpfs();
    }

    fn unmount_tmpfs(&mut self) {
        if std::mem::take(&mut self.tmpfs) {
            let status = Command::new("umount")
                .arg(self.data.path())
                .status()
                .expect("cannot run umount");
            assert!(
                status.success(),
                "cannot unmount the data directory's tmpfs"
            );
        }
    }

    pub async fn create(&self) -> Sandbox {
        self.create_with(CreateSandboxRequest::default()).await
    }

    pub async fn create_with(&self, request: CreateSandboxRequest) -> Sandbox {
        let sandbox = self.client.create(&request).await.expect("create");
        // Noted now, while the host says: checks for traces left after a destroy need it.
        self.key(&sandbox.id);
        sandbox
    }

    /// The host key a sandbox's traces are named by (directory, cgroup, init's argv): its id,
    /// or for one the warm pool prepared, the pool's key (`<dir>/sandbox-id` names the
    /// sandbox). Remembered once seen, so that it is known after the sandbox is gone.
    pub fn key(&self, id: &str) -> String {
        let mut keys = self.keys.lock().unwrap();
        if let Some(key) = keys.get(id) {
            return key.clone();
        }
        let sandboxes = self.data_dir().join("sandboxes");
        let found = if sandboxes.join(id).exists() {
            Some(id.to_owned())
        } else {
            std::fs::read_dir(&sandboxes).ok().and_then(|entries| {
                entries.flatten().find_map(|entry| {
                    let owner = std::fs::read_to_string(entry.path().join("sandbox-id")).ok()?;
                    (owner.trim() == id).then(|| entry.file_name().to_string_lossy().into_owned())
                })
            })
        };
        match found {
            Some(key) => {
                keys.insert(id.to_owned(), key.clone());
                key
            }
            None => id.to_owned(),
        }
    }

    /// Runs `sh -c script` as the default user.
    pub async fn sh(&self, id: &str, script: &str) -> ExecResult {
        self.sh_as(id, None, script).await
    }

    pub async fn sh_as(&self, id: &str, user: Option<&str>, script: &str) -> ExecResult {
        let request = ExecRequest {
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            user: user.map(Into::into),
            ..Default::default()
        };
        self.client.exec(id, &request).await.expect("exec")
    }

    /// Waits until `check` holds for the sandbox (polling), or panics after `timeout`.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        check: impl Fn(&Sandbox) -> bool,
    ) -> Sandbox {
        let start = Instant::now();
        loop {
            let sandbox = self.client.get(id).await.expect("get");
            if check(&sandbox) {
                return sandbox;
            }
            assert!(
                start.elapsed() < timeout,
                "gave up waiting; last seen: {sandbox:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The cgroup and directory of a sandbox are gone and no process names it (by its id or
    /// its host key).
    pub fn assert_no_traces(&self, id: &str) {
        let key = self.key(id);
        for name in [id, key.as_str()] {
            assert!(
                processes_mentioning(name).is_empty(),
                "processes of {id} ({name}) left"
            );
            assert!(
                !self.data_dir().join("sandboxes").join(name).exists(),
                "directory of {id} ({name}) left"
            );
            for dir in instance_cgroups(self.data_dir()) {
                assert!(
                    !dir.join(name).exists(),
                    "cgroup of {id} ({name}) left in {}",
                    dir.display()
                );
            }
        }
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let key = (!self.admin_key.is_empty()).then_some(self.admin_key.as_str());
        cli_as(&self.url, key, args, stdin)
    }

    /// A client acting with `key`.
    pub fn client_with(&self, key: &str) -> Client {
        Client::new(&self.url).with_key(key)
    }

    /// A new key for `user`, and a client that uses it.
    pub async fn user(&self, user: &str) -> (String, Client) {
        let created = self.client.create_key(user, false).await.unwrap();
        let client = self.client_with(&created.key);
        (created.key, client)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // A test that failed before `finish`: stop the daemon and clean up as it would.
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            if wait_exit(&mut child, Duration::from_secs(30)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if !std::thread::panicking() {
                eprintln!("daemon log:\n{}", self.log());
            }
        }
        if self.tmpfs {
            // Loop devices of the last sandboxes let go of their images asynchronously.
            let until = Instant::now() + Duration::from_secs(10);
            while !loop_devices_under(self.data.path()).is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(self.data.path())
                .status();
            self.tmpfs = false;
        }
    }
}

/// The CLI without a key (nor a data directory to find one in).
pub fn cli_at(url: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    cli_as(url, None, args, stdin)
}

/// The CLI acting with `key` (`SBX_API_KEY`), or with none.
pub fn cli_as(url: &str, key: Option<&str>, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut command = Command::new(SBX);
    command
        .env_remove("SBX_API_KEY")
        .env_remove("SBX_API_KEY_FILE")
        .env("SBX_DATA_DIR", "/nonexistent/sbx-test");
    if let Some(key) = key {
        command.env("SBX_API_KEY", key);
    }
    let mut child = command
        .args(args)
        .env("SBX_URL", url)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Installs the npm packages of `dir` (a directory of the workspace with a
/// `package-lock.json`) unless `node_modules/<package>` is there. Tests run at once in
/// processes of their own: one installs, under a lock, while the others wait for it.
pub fn npm_installed(dir: &Path, package: &str) {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let _ = std::fs::create_dir_all(&target);
    let lock = std::fs::File::create(target.join("npm.lock")).expect("the npm lock file");
    lock.lock().expect("the npm lock");
    if !dir.join("node_modules").join(package).exists() {
        let npm = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .status()
            .expect("this test needs npm");
        assert!(npm.success(), "npm ci in {} failed", dir.display());
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is involved.
    unsafe { libc::kill(pid as i32, signal) };
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Host pids whose command line mentions `needle`.
/// [`processes_mentioning`] `needle` whose command line passes `keep`, once they have had a
/// moment (five seconds at most) to end: a runtime's monitor or a signal's runtime call ends
/// just after the call that ended its sandbox returns.
pub async fn processes_left(needle: &str, keep: impl Fn(&str) -> bool) -> Vec<(u32, String)> {
    let mut left = Vec::new();
    for _ in 0..50 {
        left = processes_mentioning(needle)
            .into_iter()
            .filter(|(_, line)| keep(line))
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if !left.is_empty() {
        let tree = std::process::Command::new("ps")
            .args(["-eo", "pid,ppid,stat,args", "--forest"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        eprintln!("processes left; the host's process tree:\n{tree}");
    }
    left
}

pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// The sandboxes' cgroup directories of a data directory's daemon instance.
pub fn instance_cgroups(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(instance) = std::fs::read_to_string(data_dir.join("instance-id")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = hierarchy.path().join("sbx").join(instance.trim());
        if dir.exists() {
            found.push(dir);
        }
    }
    found
}

/// Nothing of this data directory's daemon may remain: no process of any of `ids`, no
/// cgroup, no sandbox directory, no mount.
pub fn assert_no_leaks(data_dir: &Path, ids: &[String]) {
    let leftover =
        || -> Vec<(u32, String)> { ids.iter().flat_map(|id| processes_mentioning(id)).collect() };
    // Processes die asynchronously after SIGKILL; give the kernel a moment.
    let start = Instant::now();
    let mut processes = leftover();
    while !processes.is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        processes = leftover();
    }
    assert!(processes.is_empty(), "processes left behind: {processes:?}");
    let cgroups = instance_cgroups(data_dir);
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    // The host-wide uid slot registry holds no claim of this instance.
    if let Ok(instance) = std::fs::read_to_string(data_dir.join("instance-id")) {
        let claims: Vec<String> = std::fs::read_dir("/run/sbx/uid-slots")
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter(|claim| claim.starts_with(instance.trim()))
                    .collect()
            })
            .unwrap_or_default();
        assert!(claims.is_empty(), "uid slot claims left behind: {claims:?}");
    }
    let sandboxes: Vec<_> = std::fs::read_dir(data_dir.join("sandboxes"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        sandboxes.is_empty(),
        "sandbox directories left behind: {sandboxes:?}"
    );
    let needle = data_dir.to_string_lossy();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // A tmpfs the test put on the data directory itself is the test's (`Options::tmpfs_mb`).
    let own_tmpfs = |line: &str| {
        line.split(' ').nth(4) == Some(needle.as_ref()) && line.contains(" - tmpfs sbx-test ")
    };
    let leaked: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(needle.as_ref()) && !own_tmpfs(l))
        .collect();
    assert!(leaked.is_empty(), "mounts left behind: {leaked:?}");
    // Loop devices detach themselves once their sandbox is gone (asynchronously).
    let start = Instant::now();
    let mut devices = loop_devices_under(data_dir);
    while !devices.is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        devices = loop_devices_under(data_dir);
    }
    assert!(
        devices.is_empty(),
        "loop devices left attached: {devices:?}"
    );
}

/// Loop devices whose backing file is under `dir`.
pub fn loop_devices_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) {
            if Path::new(backing.trim()).starts_with(dir) {
                found.push(format!(
                    "{} -> {}",
                    entry.file_name().to_string_lossy(),
                    backing.trim()
                ));
            }
        }
    }
    found
}

/// After an attack: the daemon answers, a new sandbox runs a command and goes away, an
/// unprivileged host process can start and open files, and the data directory's file system
/// takes a write.
pub async fn assert_host_healthy(d: &TestDaemon) {
    assert_eq!(d.client.health().await.expect("health").status, "ok");
    let probe = d.create().await.id;
    assert_eq!(d.sh(&probe, "echo ok").await.stdout, "ok\n");
    d.client
        .delete(&probe)
        .await
        .expect("delete the probe sandbox");
    assert_unprivileged_host_process_opens_files();
    let file = d.data_dir().join("health-probe");
    std::fs::write(&file, vec![0u8; 1 << 20]).expect("the host's disk takes no write");
    std::fs::remove_file(&file).unwrap();
}

/// `nobody` on the host can start a program and open a file: the host's process and file
/// tables are not exhausted (root, exempt from `fs.file-max`, would not notice a full one).
pub fn assert_unprivileged_host_process_opens_files() {
    let output = Command::new("sh")
        .args(["-c", "exec 3</dev/null && echo ok"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("cannot start an unprivileged host process");
    assert_eq!(
        text(&output.stdout),
        "ok\n",
        "an unprivileged host process cannot open a file: {}",
        text(&output.stderr)
    );
}

/// Every state's name, for listings that must see every sandbox.
pub fn all_states() -> [&'static str; 8] {
    SandboxState::ALL.map(SandboxState::as_str)
}

/// The public-site configuration shown in docs/security.md (its first TOML block).
pub fn public_site_config() -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/security.md"
    ))
    .unwrap();
    doc.split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/security.md has a toml block")
        .to_owned()
}
