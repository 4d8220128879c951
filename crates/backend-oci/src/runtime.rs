//! The runtime binary: every call under a deadline, its errors with what it said.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sbx_backend::BackendError;
use tokio::process::Command;

/// Most any one runtime call (but `exec`) may take.
const CALL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Runtime {
    pub binary: PathBuf,
    /// `--root`: where the runtime keeps its containers' state (this instance's alone).
    pub state: PathBuf,
    /// gVisor's platform (`ptrace`, `systrap`, `kvm`).
    pub platform: String,
}

/// `state` of a container.
#[derive(Debug, serde::Deserialize)]
pub struct State {
    pub status: String,
    #[serde(default)]
    pub pid: i64,
}

impl Runtime {
    /// A command with the global flags: no network, the platform, an in-memory writable
    /// layer over the root.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg(format!("--root={}", self.state.display()))
            .arg("--network=none")
            .arg(format!("--platform={}", self.platform))
            .arg("--overlay2=root:memory")
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
        let mut command = self.command();
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = within(self.spawn(&mut command)?.wait_with_output()).await?;
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
    pub async fn create(&self, args: &[&str], log: &std::path::Path) -> Result<(), BackendError> {
        let mut command = self.command();
        command
            .arg(format!("--log={}", log.display()))
            .arg("create")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // `--log` is a global flag: it goes before the subcommand.
        let status = within(self.spawn(&mut command)?.wait()).await?;
        if status.success() {
            return Ok(());
        }
        let said = std::fs::read(log)
            .map(|bytes| {
                let tail = &bytes[bytes.len().saturating_sub(64 << 10)..];
                String::from_utf8_lossy(tail).into_owned()
            })
            .unwrap_or_default();
        Err(BackendError::other(format!(
            "{} create failed ({status}): {}",
            self.binary.display(),
            last_lines(&said)
        )))
    }

    /// The container's state; `None` when the runtime does not know it.
    pub async fn state(&self, id: &str) -> Result<Option<State>, BackendError> {
        match self.call(&["state", id]).await {
            Ok(out) => serde_json::from_slice(&out)
                .map(Some)
                .map_err(|e| BackendError::other(format!("the runtime's state is malformed: {e}"))),
            Err(BackendError::Other {
                context: message, ..
            }) if message.contains("does not exist")
                || message.contains("not found")
                || message.contains("no such file or directory") =>
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

/// A runtime call's end, under [`CALL`].
async fn within<T>(
    call: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(CALL, call)
        .await
        .map_err(|_| BackendError::Timeout {
            operation: "the runtime",
            after: CALL,
        })?
        .map_err(|e| BackendError::io("the runtime failed", e))
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
