//! The file agent as a command, for backends that only run commands (OCI runtimes, Docker):
//! each operation is one command, `sbx __file-agent REQUEST`, run through the backend's own
//! `exec` as the requested user. Its report and bytes come on its stdout, an upload goes to
//! its stdin, its exit says whether it finished.
//!
//! The program is the daemon's own binary, bound read-only into every sandbox at [`PROGRAM`].
//! A sandbox's image has its own libraries (or none), so the binary runs through a copy of the
//! host's loader, with copies of the libraries the daemon itself runs with, bound at
//! [`LIB_DIR`]: nothing of the image is needed, nothing of the host beyond these files is
//! shown, and a sandbox process can run them too, which gives it nothing it lacks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::{Call, Control, Data, FileRequest, Transport, AGENT_ARG, MAX_REPORT, STALL};
use crate::{
    BackendError, ExecEvent, ExecInput, ExecSession, ExecSpec, ExitStatus, Handle, KillSwitch,
    StdinMode, User,
};

/// Where a sandbox sees the daemon's binary.
pub const PROGRAM: &str = "/.sbx/sbx";
/// Where a sandbox sees the loader and libraries the binary runs with.
pub const LIB_DIR: &str = "/.sbx/lib";
/// What of an agent's stderr is kept, to say why it failed.
const STDERR_KEPT: usize = 4096;
/// Bytes in flight between the agent's command and the daemon, each way.
const BUFFER: usize = 256 * 1024;

/// Running a command in a sandbox: what a backend's `exec` does.
#[async_trait]
pub trait Exec: Send + Sync {
    async fn exec(&self, handle: &Handle, spec: ExecSpec) -> Result<ExecSession, BackendError>;
}

/// The host's side of the agent: the program (the daemon's binary) and a directory with copies
/// of its loader and libraries. Both are bound read-only into each sandbox.
#[derive(Debug, Clone)]
pub struct HostAgent {
    pub program: PathBuf,
    pub lib_dir: PathBuf,
    /// The loader's file name in `lib_dir`.
    loader: String,
}

impl HostAgent {
    /// Copies the loader and libraries this process runs with into a directory of `dir` named
    /// by their contents (made once; never changed after, so a sandbox bound to it keeps a
    /// loader and libraries that match, whatever the host upgrades meanwhile). `program`
    /// answers [`AGENT_ARG`]; this process's binary when `None`. The libraries are this
    /// process's, so `program` must be this binary or one built alike (a test binary of the
    /// same build).
    pub fn prepare(dir: &Path, program: Option<&Path>) -> std::io::Result<HostAgent> {
        use std::hash::{Hash, Hasher};
        let program = match program {
            Some(program) => program.to_owned(),
            None => std::fs::canonicalize("/proc/self/exe")?,
        };
        if !program.is_file() {
            return Err(std::io::Error::other(format!(
                "the file agent's program {} is missing",
                program.display()
            )));
        }
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        let mut libraries = Vec::new();
        for path in mapped_libraries(&maps) {
            let Some(name) = path.file_name().map(ToOwned::to_owned) else {
                continue;
            };
            libraries.push((name, std::fs::read(&path)?));
        }
        let loader = libraries
            .iter()
            .filter_map(|(name, _)| name.to_str())
            .find(|name| name.starts_with("ld-linux") || name.starts_with("ld64"))
            .map(str::to_owned)
            .ok_or_else(|| std::io::Error::other("this process has no dynamic loader mapped"))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        libraries.hash(&mut hasher);
        let lib_dir = dir.join(format!("{:016x}", hasher.finish()));
        if !lib_dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            let temporary = dir.join(format!(".new-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&temporary);
            std::fs::create_dir(&temporary)?;
            for (name, bytes) in &libraries {
                use std::os::unix::fs::PermissionsExt;
                let path = temporary.join(name);
                std::fs::write(&path, bytes)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            std::fs::set_permissions(
                &temporary,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
            std::fs::rename(&temporary, &lib_dir)?;
        }
        Ok(HostAgent {
            program,
            lib_dir,
            loader,
        })
    }

    /// [`HostAgent::prepare`], or `None` (said in the log) when the agent cannot run here: the
    /// backend `kind` then offers no files API.
    pub fn prepare_or_none(dir: &Path, program: Option<&Path>, kind: &str) -> Option<HostAgent> {
        match HostAgent::prepare(dir, program) {
            Ok(agent) => Some(agent),
            Err(e) => {
                tracing::warn!(error = %e, "the file agent cannot run: no files API on {kind}");
                None
            }
        }
    }

    /// `(host path, sandbox path)` of each read-only bind a sandbox needs.
    pub fn binds(&self) -> [(PathBuf, &'static str); 2] {
        [
            (self.lib_dir.clone(), LIB_DIR),
            (self.program.clone(), PROGRAM),
        ]
    }

    /// The command line that runs the agent inside a sandbox, before its arguments.
    fn command(&self) -> Vec<String> {
        vec![
            format!("{LIB_DIR}/{}", self.loader),
            "--library-path".into(),
            LIB_DIR.into(),
            PROGRAM.into(),
            AGENT_ARG.into(),
        ]
    }
}

/// Shared objects mapped by the process whose `/proc/PID/maps` is `maps`.
fn mapped_libraries(maps: &str) -> Vec<PathBuf> {
    let mut libraries: Vec<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/'))
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or_default();
            name.ends_with(".so") || name.contains(".so.")
        })
        .map(PathBuf::from)
        .collect();
    libraries.sort();
    libraries.dedup();
    libraries
}

/// Starts the agent through a backend's `exec`.
pub struct ExecTransport {
    exec: Arc<dyn Exec>,
    command: Vec<String>,
}

impl ExecTransport {
    pub fn new(exec: Arc<dyn Exec>, agent: &HostAgent) -> Self {
        ExecTransport {
            exec,
            command: agent.command(),
        }
    }
}

#[async_trait]
impl Transport for ExecTransport {
    async fn start(
        &self,
        handle: &Handle,
        request: FileRequest,
        data: Data,
    ) -> Result<Call, BackendError> {
        let user = User {
            uid: request.uid,
            gid: request.gid,
        };
        let request = serde_json::to_string(&request)
            .map_err(|e| BackendError::other_from("cannot encode a file operation", e))?;
        let mut argv = self.command.clone();
        argv.push(request);
        let spec = ExecSpec {
            argv,
            // Nothing of the image's environment may change how the loader runs the agent.
            env: ["LD_PRELOAD", "LD_AUDIT", "GLIBC_TUNABLES"]
                .into_iter()
                .map(|name| (name.to_owned(), String::new()))
                .collect(),
            cwd: Some("/".into()),
            user,
            stdin: if data == Data::In {
                StdinMode::Pipe
            } else {
                StdinMode::Null
            },
        };
        let session = self.exec.exec(handle, spec).await.map_err(|e| match e {
            BackendError::ExecFailed(message) => {
                BackendError::other(format!("cannot start the file agent: {message}"))
            }
            other => other,
        })?;
        let ExecSession {
            events,
            input,
            kill,
            ..
        } = session;
        let (report_tx, report_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let (output, output_reader) = if data == Data::Out {
            let (writer, reader) = tokio::io::duplex(BUFFER);
            (Some(writer), Some(Box::new(reader) as Box<_>))
        } else {
            (None, None)
        };
        let killer = Killer { kill };
        tokio::spawn(pump(events, report_tx, output, exit_tx, killer.clone()));
        let upload = if data == Data::In {
            let (writer, reader) = tokio::io::duplex(BUFFER);
            tokio::spawn(feed(reader, input, killer.clone()));
            Some(Box::new(writer) as Box<_>)
        } else {
            None
        };
        let report = Box::pin(async move {
            match report_rx.await {
                Ok(report) => report,
                // The pump ended without a word: the session went.
                Err(_) => Ok(Vec::new()),
            }
        });
        Ok(Call {
            report,
            output: output_reader,
            input: upload,
            control: Box::new(ExecControl {
                killer,
                exit: Some(exit_rx),
            }),
        })
    }
}

/// Sorts the agent's events: its first stdout line is the report, the rest of stdout its
/// bytes (with back-pressure: the pump waits for the reader), stderr kept for errors, the
/// exit passed on. A reader that leaves ends the agent.
async fn pump(
    mut events: mpsc::Receiver<ExecEvent>,
    report_tx: oneshot::Sender<Result<Vec<u8>, BackendError>>,
    mut output: Option<tokio::io::DuplexStream>,
    exit_tx: oneshot::Sender<ExitStatus>,
    killer: Killer,
) {
    let mut report_tx = Some(report_tx);
    let mut line = Vec::new();
    let mut stderr = Vec::new();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            // Killed: nothing more of it is wanted (its output is dropped with the session).
            () = killer.kill.fired() => None,
        };
        let Some(event) = event else { break };
        match event {
            ExecEvent::Stdout(bytes) => {
                let rest = if let Some(tx) = report_tx.take() {
                    match bytes.iter().position(|b| *b == b'\n') {
                        Some(end) => {
                            line.extend_from_slice(&bytes[..end]);
                            let _ = tx.send(Ok(std::mem::take(&mut line)));
                            bytes.slice(end + 1..)
                        }
                        None if line.len() + bytes.len() > MAX_REPORT => {
                            let _ = tx.send(Err(BackendError::other(
                                "a file operation's outcome is too large",
                            )));
                            killer.kill();
                            Bytes::new()
                        }
                        None => {
                            line.extend_from_slice(&bytes);
                            report_tx = Some(tx);
                            Bytes::new()
                        }
                    }
                } else {
                    bytes
                };
                if rest.is_empty() {
                    continue;
                }
                if let Some(writer) = &mut output {
                    let written = tokio::time::timeout(STALL, writer.write_all(&rest)).await;
                    if !matches!(written, Ok(Ok(()))) {
                        // The reader left, or stopped reading.
                        output = None;
                        killer.kill();
                    }
                }
            }
            ExecEvent::Stderr(bytes) => {
                let room = STDERR_KEPT.saturating_sub(stderr.len());
                stderr.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            ExecEvent::Exited(status) => {
                if let Some(tx) = report_tx.take() {
                    let said = String::from_utf8_lossy(&stderr);
                    let said = said.trim();
                    let _ = tx.send(if !line.is_empty() || said.is_empty() {
                        // A report without its newline is still a report.
                        Ok(std::mem::take(&mut line))
                    } else {
                        Err(BackendError::other(format!(
                            "the file agent failed ({}): {said}",
                            status.shell_code()
                        )))
                    });
                }
                let _ = exit_tx.send(status);
                return;
            }
        }
    }
}

/// Passes an upload to the agent's stdin, then closes it; stops when the agent is killed.
async fn feed(mut reader: tokio::io::DuplexStream, input: mpsc::Sender<ExecInput>, killer: Killer) {
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let read = tokio::select! {
            read = reader.read(&mut buffer) => read,
            () = killer.kill.fired() => return,
        };
        let chunk = match read {
            Ok(0) | Err(_) => break,
            // Each chunk holds only its own bytes, however small.
            Ok(n) => Bytes::copy_from_slice(&buffer[..n]),
        };
        tokio::select! {
            sent = input.send(ExecInput::Stdin(chunk)) => if sent.is_err() { return },
            () = killer.kill.fired() => return,
        }
    }
    tokio::select! {
        _ = input.send(ExecInput::CloseStdin) => {}
        () = killer.kill.fired() => {}
    }
}

/// Ends an agent's command: the session's kill, which no queued input holds up.
#[derive(Clone)]
struct Killer {
    kill: KillSwitch,
}

impl Killer {
    fn kill(&self) {
        self.kill.kill();
    }
}

struct ExecControl {
    killer: Killer,
    exit: Option<oneshot::Receiver<ExitStatus>>,
}

#[async_trait]
impl Control for ExecControl {
    fn kill(&self) {
        self.killer.kill();
    }

    async fn succeeded(&mut self) -> bool {
        let Some(exit) = self.exit.take() else {
            return false;
        };
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), exit).await,
            Ok(Ok(ExitStatus::Code(0)))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_the_mapped_shared_objects() {
        let maps = "\
55d0 r-xp 0 08:01 1 /usr/bin/sbx
7f00 r--p 0 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f01 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f02 r--p 0 08:01 3 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7f03 rw-p 0 00:00 0 [heap]
7f04 r--p 0 08:01 4 /usr/lib/locale/C.utf8/LC_CTYPE
7f05 r--p 0 08:01 5 /usr/lib/x86_64-linux-gnu/libfoo.so
";
        assert_eq!(
            mapped_libraries(maps),
            [
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libfoo.so",
            ]
            .map(PathBuf::from)
        );
    }
}
