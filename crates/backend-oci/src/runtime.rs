//! The runtime binary: every call under a deadline, its errors with what it said.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sbx_backend::BackendError;
use tokio::process::Command;

/// Most any one runtime call (but `exec`) may take.
const CALL: Duration = Duration::from_secs(30);

/// Which runtime a binary is: they differ in flags, in how a command's pid is reported, and
/// in what they can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// gVisor's `runsc`: a user-space kernel between the sandbox and the host's.
    Gvisor,
    /// `crun` or `runc`: the host's kernel, behind namespaces (a user namespace of the
    /// sandbox's own), cgroups, capabilities and a seccomp filter.
    Native,
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub binary: PathBuf,
    pub flavor: Flavor,
    /// A command's terminal comes back over a console socket (`crun`, which does not pass a
    /// resize on otherwise), not through a terminal the client is given (gVisor, and `runc`,
    /// which takes a console socket only for a detached command).
    pub console_socket: bool,
    /// `--root`: where the runtime keeps its containers' state (this instance's alone).
    pub state: PathBuf,
    /// gVisor's platform (`ptrace`, `systrap`, `kvm`).
    pub platform: String,
    /// The program that becomes the shim (`shim.rs`) when it is run with its argument: this
    /// binary, unless said otherwise.
    pub shim: PathBuf,
}

/// `state` of a container.
#[derive(Debug, serde::Deserialize)]
pub struct State {
    pub status: String,
    #[serde(default)]
    pub pid: i64,
}

impl Runtime {
    /// The global flags: the state root; for gVisor, no network, the platform and an
    /// in-memory writable layer over the root (the others get theirs from the bundle).
    fn global_args(&self) -> Vec<String> {
        let mut args = vec![format!("--root={}", self.state.display())];
        if self.flavor == Flavor::Gvisor {
            args.extend([
                "--network=none".into(),
                format!("--platform={}", self.platform),
                "--overlay2=root:memory".into(),
            ]);
        }
        args
    }

    /// A command with the global flags.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(self.global_args())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Starts `command` (one of [`Runtime::command`]'s).
    pub fn spawn(&self, command: &mut Command) -> Result<tokio::process::Child, BackendError> {
        command.spawn().map_err(|e| {
            BackendError::unavailable(format!("cannot run {}: {e}", self.binary.display()))
        })
    }

    /// Runs `args`; its stdout when it succeeds, else `Err` with its stderr.
    pub async fn call(&self, args: &[&str]) -> Result<Vec<u8>, BackendError> {
        self.call_within(args, CALL).await
    }

    /// [`Runtime::call`] with a deadline of its own.
    pub async fn call_within(
        &self,
        args: &[&str],
        deadline: Duration,
    ) -> Result<Vec<u8>, BackendError> {
        let mut command = self.command();
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = within_for(deadline, self.spawn(&mut command)?.wait_with_output()).await?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(BackendError::other(format!(
            "{} {} failed ({}): {}",
            self.binary.display(),
            args.first().copied().unwrap_or_default(),
            output.status,
            last_lines(&String::from_utf8_lossy(&output.stderr))
        )))
    }

    /// `create`: the container's init inherits the client's stdio, so all three are
    /// `/dev/null` (nothing the sandbox could write to, nothing a runtime process could die
    /// of writing to once read); the runtime's own messages go to `log` (`--log`), whose
    /// last lines a failure reports.
    pub async fn create(&self, args: &[&str], log: &Path) -> Result<(), BackendError> {
        self.long_lived("create", args, log, CALL).await
    }

    /// `restore`: a container made again from a checkpoint, as `create` makes one, under a
    /// deadline of its own (a sandbox's whole memory is read back).
    pub async fn restore(
        &self,
        args: &[&str],
        log: &Path,
        deadline: Duration,
    ) -> Result<(), BackendError> {
        self.long_lived("restore", args, log, deadline).await
    }

    /// A call that leaves processes behind it (the sandbox, the gofer): run directly, or under
    /// the shim when this process is a child subreaper (see `shim.rs`).
    async fn long_lived(
        &self,
        verb: &str,
        args: &[&str],
        log: &Path,
        deadline: Duration,
    ) -> Result<(), BackendError> {
        // `--log` is a global flag: it goes before the subcommand.
        let mut runtime_args: Vec<String> = self.global_args();
        runtime_args.push(format!("--log={}", log.display()));
        runtime_args.push(verb.into());
        runtime_args.extend(args.iter().map(|a| (*a).to_owned()));
        let subreaper = nix::sys::prctl::get_child_subreaper().unwrap_or(false);
        let status = if subreaper {
            self.under_shim(&runtime_args, deadline).await?
        } else {
            let mut command = Command::new(&self.binary);
            command
                .args(&runtime_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            crate::shim::report_of(within_for(deadline, self.spawn(&mut command)?.wait()).await?)
        };
        if status == "0" {
            return Ok(());
        }
        let said = std::fs::read(log)
            .map(|bytes| {
                let tail = &bytes[bytes.len().saturating_sub(64 << 10)..];
                String::from_utf8_lossy(tail).into_owned()
            })
            .unwrap_or_default();
        Err(BackendError::other(format!(
            "{} {verb} failed (exit {status}): {}",
            self.binary.display(),
            last_lines(&said)
        )))
    }

    /// Runs the runtime under a shim; how the runtime call ended, as the shim reports it. The
    /// shim is left to reap the call's orphans (tokio reaps the shim itself when it ends);
    /// past the deadline, it is told (`SIGTERM`) to kill the runtime call, and goes on
    /// reaping what that call left.
    async fn under_shim(
        &self,
        runtime_args: &[String],
        deadline: Duration,
    ) -> Result<String, BackendError> {
        let mut command = Command::new(&self.shim);
        command
            .arg(crate::shim::SHIM_ARG)
            .arg(&self.binary)
            .args(runtime_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(|e| {
            BackendError::unavailable(format!("cannot run the shim {}: {e}", self.shim.display()))
        })?;
        let pid = child.id();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let read = async {
            use tokio::io::AsyncReadExt as _;
            let mut report = Vec::new();
            (&mut stdout).take(256).read_to_end(&mut report).await?;
            Ok(String::from_utf8_lossy(&report).trim().to_owned())
        };
        match within_for(deadline, read).await {
            Ok(report) if !report.is_empty() => Ok(report),
            outcome => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                outcome?;
                Err(BackendError::unavailable(
                    "the runtime's shim ended without a report",
                ))
            }
        }
    }

    /// The container's state; `None` when the runtime does not know it.
    pub async fn state(&self, id: &str) -> Result<Option<State>, BackendError> {
        match self.call(&["state", id]).await {
            Ok(out) => serde_json::from_slice(&out)
                .map(Some)
                .map_err(|e| BackendError::other(format!("the runtime's state is malformed: {e}"))),
            Err(BackendError::Other {
                context: message, ..
            }) if ["does not exist", "not found", "no such file or directory"]
                .iter()
                .any(|gone| message.to_lowercase().contains(gone)) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Ids of the containers under this runtime root.
    pub async fn list(&self) -> Result<Vec<String>, BackendError> {
        let out = self.call(&["list", "--quiet"]).await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The flavor of the runtime whose `--version` said `version`: gVisor's says `runsc`.
    pub fn flavor_of(version: &str) -> Flavor {
        if version.starts_with("runsc") {
            Flavor::Gvisor
        } else {
            Flavor::Native
        }
    }

    /// `<runtime> --version`'s first line (it must run: the backend cannot start without it).
    pub fn version(&self) -> Result<String, BackendError> {
        let out = std::process::Command::new(&self.binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                BackendError::unavailable(format!("cannot run {}: {e}", self.binary.display()))
            })?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned())
    }
}

/// A runtime call's end, under `deadline`.
async fn within_for<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(deadline, call)
        .await
        .map_err(|_| BackendError::Timeout {
            operation: "the runtime",
            after: deadline,
        })?
        .map_err(|e| BackendError::io("the runtime failed", e))
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
