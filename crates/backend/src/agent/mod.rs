//! File operations done by a program inside the sandbox (the *file agent*), one program per
//! operation: what it is asked ([`FileRequest`]), what it answers ([`FileOutcome`]), and the
//! daemon's side of every [`Files`] operation on top of any way of starting it (a
//! [`Transport`]). The native backend forks the agent from a sandbox's init; backends that only
//! run commands start it as a command ([`exec::ExecTransport`]) from the daemon's own binary,
//! bound read-only into each sandbox with the loader and libraries it needs.
//!
//! Either way the agent runs inside the sandbox, as the requested user: the sandbox's root and
//! permissions apply to every path, so no request can name a host file. What it sends back is
//! untrusted input: the report is bounded and parsed, the bytes are only passed on.
//!
//! The agent writes its report (one JSON line) before any bytes; for a read, an archive or a
//! watch the bytes follow, and they are whole only if it then exits 0. An upload (a write, an
//! extract) goes to its input; a write lands in a new hidden file, which goes into place by a
//! second operation only once the whole upload went in.

pub mod exec;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    BackendError, ByteStream, Extracted, FileErrorKind, FileEvent, FileEventKind, FileEvents,
    FileInfo, FileKind, Files, Handle, Listing, SandboxPath, User,
};

/// The version of the agent's protocol, in every request.
pub const VERSION: u32 = 1;
/// The argument that makes the daemon's binary the file agent: `sbx __file-agent REQUEST`.
pub const AGENT_ARG: &str = "__file-agent";
/// Largest report an agent may send (a listing of its most entries).
pub const MAX_REPORT: usize = 4 << 20;
/// Longest an agent may go without moving a byte (one stopped by the sandbox, say) before the
/// daemon gives up on it and kills it.
pub const STALL: Duration = Duration::from_secs(60);
const CHUNK: usize = 256 * 1024;
/// What of a refused upload is still read (and dropped), and for how long at most.
const DRAIN_LIMIT: usize = 8 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Longest line a watch may send (a path is at most 4096 bytes).
const MAX_EVENT_LINE: u64 = 16 << 10;
/// Relative paths are the sandbox user's, whoever acts.
const HOME: &str = "/home/user";

/// One operation for the agent.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileRequest {
    pub version: u32,
    pub uid: u32,
    pub gid: u32,
    /// Relative paths start here (the user's home).
    pub cwd: String,
    pub action: FileOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileOp {
    Stat {
        path: String,
        follow: bool,
    },
    List {
        path: String,
        depth: u32,
    },
    Read {
        path: String,
        offset: u64,
        length: Option<u64>,
    },
    Write {
        path: String,
        mode: u32,
    },
    MakeDir {
        path: String,
    },
    Remove {
        path: String,
        recursive: bool,
    },
    Rename {
        from: String,
        to: String,
    },
    /// A directory (or one file) out as a tar stream, to the data pipe.
    Archive {
        path: String,
    },
    /// A tar stream from the data pipe extracted under a directory (made if missing).
    Extract {
        path: String,
    },
    /// Changes under a directory, one JSON line each, to the data pipe, until the reader
    /// leaves or the directory goes.
    Watch {
        path: String,
        recursive: bool,
    },
}

/// One entry of a sandbox's filesystem, as a file child reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub modified_ms: i64,
    pub symlink_target: Option<String>,
}

/// What a file child reports, on its result pipe, before any bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOutcome {
    /// Done (for `Read`: about to send the bytes; `entries` holds the file).
    Ok {
        entries: Vec<FileEntry>,
        /// `List` stopped at the most entries it reports.
        truncated: bool,
        /// `Extract`: how many entries went in.
        #[serde(default)]
        count: u64,
    },
    Error {
        /// `not_found`, `conflict`, `denied`, `no_space`, `invalid`.
        kind: String,
        message: String,
    },
}

/// Where an operation's bytes go, besides its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    None,
    /// Uploaded to the agent (write, extract).
    In,
    /// Sent by the agent after its report (read, archive, watch).
    Out,
}

/// What is left to learn of a started agent: how it ended, and how to end it early.
#[async_trait]
pub trait Control: Send + Sync {
    /// Ends the agent now (its caller left, or it stalled).
    fn kill(&self);
    /// Whether the agent ended having done all it was asked (exit 0); false when it failed or
    /// does not say within a few seconds.
    async fn succeeded(&mut self) -> bool;
}

/// A started agent.
pub struct Call {
    /// Its report, raw: everything up to the end of its first line (or of its report stream),
    /// at most [`MAX_REPORT`] bytes; empty when it ended without one.
    pub report: Pin<Box<dyn Future<Output = Result<Vec<u8>, BackendError>> + Send>>,
    /// Its bytes after the report ([`Data::Out`]).
    pub output: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Its upload ([`Data::In`]); dropping it is the upload's end.
    pub input: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub control: Box<dyn Control>,
}

/// A way of starting the agent in a sandbox.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn start(
        &self,
        handle: &Handle,
        request: FileRequest,
        data: Data,
    ) -> Result<Call, BackendError>;
}

/// [`Files`] for any backend that can start the agent.
pub struct FileService<T> {
    transport: T,
}

impl<T: Transport> FileService<T> {
    pub fn new(transport: T) -> Self {
        FileService { transport }
    }

    async fn start(
        &self,
        handle: &Handle,
        user: User,
        action: FileOp,
        data: Data,
    ) -> Result<Call, BackendError> {
        let request = FileRequest {
            version: VERSION,
            uid: user.uid,
            gid: user.gid,
            cwd: HOME.into(),
            action,
        };
        self.transport.start(handle, request, data).await
    }

    async fn simple(&self, handle: &Handle, user: User, op: FileOp) -> Result<Done, BackendError> {
        let call = self.start(handle, user, op, Data::None).await?;
        match tokio::time::timeout(STALL, outcome(call.report)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                call.control.kill();
                Err(stalled())
            }
        }
    }

    /// Starts `op`, whose agent sends bytes after its report, and streams them. Dropping the
    /// stream (its caller left) or a stalled agent ends the agent.
    /// A read's bytes are counted: exactly `min(size - offset, length)` of them, or the stream
    /// ends with an error (never passing a short file for whole).
    async fn stream_out(
        &self,
        handle: &Handle,
        user: User,
        op: FileOp,
    ) -> Result<(FileInfo, ByteStream), BackendError> {
        let window = match &op {
            FileOp::Read { offset, length, .. } => Some((*offset, *length)),
            _ => None,
        };
        let (done, mut reading) = self.started_out(handle, user, op).await?;
        let info = one(done)?;
        reading.expected = window.map(|(offset, length)| {
            let size = info.size.saturating_sub(offset);
            length.map_or(size, |l| l.min(size))
        });
        let stream = futures::stream::unfold(reading, |mut reading| async move {
            if reading.ended {
                return None;
            }
            let mut chunk = bytes::BytesMut::with_capacity(CHUNK);
            match tokio::time::timeout(STALL, reading.data.read_buf(&mut chunk)).await {
                // The end of the bytes is the end only if the agent says it finished: one that
                // failed half-way (an unreadable file in an archive) cuts the stream with an
                // error, never passing for whole.
                Ok(Ok(0)) => {
                    reading.ended = true;
                    let whole = reading.expected.is_none_or(|n| n == reading.sent);
                    if whole && reading.control.succeeded().await {
                        None
                    } else {
                        Some((
                            Err(std::io::Error::other("the sandbox's bytes were cut short")),
                            reading,
                        ))
                    }
                }
                Ok(Ok(n)) => {
                    reading.sent += n as u64;
                    if reading
                        .expected
                        .is_some_and(|expected| reading.sent > expected)
                    {
                        reading.ended = true;
                        return Some((
                            Err(std::io::Error::other("the sandbox sent more than the file")),
                            reading,
                        ));
                    }
                    Some((Ok(chunk.freeze()), reading))
                }
                Ok(Err(e)) => Some((Err(e), reading)),
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the file's bytes stopped coming",
                    )),
                    reading,
                )),
            }
        });
        Ok((info, stream.boxed()))
    }

    /// Starts an operation with output and waits for its report.
    async fn started_out(
        &self,
        handle: &Handle,
        user: User,
        op: FileOp,
    ) -> Result<(Done, Reading), BackendError> {
        let call = self.start(handle, user, op, Data::Out).await?;
        let Call {
            report,
            output,
            control,
            ..
        } = call;
        let data = output.ok_or_else(|| BackendError::other("the file agent has no output"))?;
        let done = match tokio::time::timeout(STALL, outcome(report)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(stalled()),
        };
        let reading = Reading {
            data,
            control,
            ended: false,
            expected: None,
            sent: 0,
        };
        // Dropping `reading` on an error kills the agent.
        Ok((done?, reading))
    }

    /// Starts an upload operation and sends `data` to it: (its report, whether the whole
    /// upload went in).
    async fn upload(
        &self,
        handle: &Handle,
        user: User,
        op: FileOp,
        data: ByteStream,
    ) -> Result<(Result<Done, BackendError>, Result<bool, BackendError>), BackendError> {
        let call = self.start(handle, user, op, Data::In).await?;
        let Call {
            report,
            input,
            control,
            ..
        } = call;
        let input = input.ok_or_else(|| BackendError::other("the file agent has no input"))?;
        Ok(upload(report, input, data, control.as_ref()).await)
    }

    /// Removes an upload's new file that will not go into place.
    async fn discard(&self, handle: &Handle, user: User, path: &str) -> Result<(), BackendError> {
        let op = FileOp::Remove {
            path: path.into(),
            recursive: false,
        };
        self.simple(handle, user, op).await.map(|_| ())
    }
}

#[async_trait]
impl<T: Transport> Files for FileService<T> {
    async fn stat(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        follow: bool,
        user: User,
    ) -> Result<FileInfo, BackendError> {
        let op = FileOp::Stat {
            path: path.into(),
            follow,
        };
        one(self.simple(handle, user, op).await?)
    }

    async fn list(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        depth: u32,
        user: User,
    ) -> Result<Listing, BackendError> {
        let op = FileOp::List {
            path: path.into(),
            depth,
        };
        let done = self.simple(handle, user, op).await?;
        Ok(Listing {
            entries: done.entries.into_iter().map(info).collect(),
            truncated: done.truncated,
        })
    }

    async fn read(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        offset: u64,
        length: Option<u64>,
        user: User,
    ) -> Result<(FileInfo, ByteStream), BackendError> {
        let op = FileOp::Read {
            path: path.into(),
            offset,
            length,
        };
        self.stream_out(handle, user, op).await
    }

    async fn write(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        mode: u32,
        user: User,
        data: ByteStream,
    ) -> Result<FileInfo, BackendError> {
        let op = FileOp::Write {
            path: path.into(),
            mode,
        };
        let (outcome, uploaded) = self.upload(handle, user, op, data).await?;
        let written = one(outcome?)?;
        // Whole: into place. Cut off or failed: the new file goes, the old one stays.
        match uploaded {
            Ok(true) => {
                let op = FileOp::Rename {
                    from: written.path.clone(),
                    to: path.into(),
                };
                let moved = self.simple(handle, user, op).await;
                if moved.is_err() {
                    let _ = self.discard(handle, user, &written.path).await;
                }
                one(moved?)
            }
            Ok(false) => {
                let _ = self.discard(handle, user, &written.path).await;
                Err(BackendError::other(
                    "the file operation ended before the upload",
                ))
            }
            Err(e) => {
                let _ = self.discard(handle, user, &written.path).await;
                Err(e)
            }
        }
    }

    async fn make_dir(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        user: User,
    ) -> Result<(), BackendError> {
        let op = FileOp::MakeDir { path: path.into() };
        self.simple(handle, user, op).await.map(|_| ())
    }

    async fn remove(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        recursive: bool,
        user: User,
    ) -> Result<(), BackendError> {
        let op = FileOp::Remove {
            path: path.into(),
            recursive,
        };
        self.simple(handle, user, op).await.map(|_| ())
    }

    async fn rename(
        &self,
        handle: &Handle,
        from: &SandboxPath,
        to: &SandboxPath,
        user: User,
    ) -> Result<(), BackendError> {
        let op = FileOp::Rename {
            from: from.into(),
            to: to.into(),
        };
        self.simple(handle, user, op).await.map(|_| ())
    }

    async fn archive(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        user: User,
    ) -> Result<ByteStream, BackendError> {
        let op = FileOp::Archive { path: path.into() };
        self.stream_out(handle, user, op)
            .await
            .map(|(_, stream)| stream)
    }

    async fn extract(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        user: User,
        data: ByteStream,
    ) -> Result<Extracted, BackendError> {
        let op = FileOp::Extract { path: path.into() };
        let (outcome, uploaded) = self.upload(handle, user, op, data).await?;
        // The agent's refusal says most (an entry refused, a full disk); a failed upload
        // comes next (the archive then ends short, which the agent also notices).
        let done = outcome?;
        uploaded?;
        let entries = done.count;
        Ok(Extracted {
            directory: one(done)?,
            entries,
        })
    }

    async fn watch(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        recursive: bool,
        user: User,
    ) -> Result<FileEvents, BackendError> {
        let op = FileOp::Watch {
            path: path.into(),
            recursive,
        };
        // No stall limit after the report: a directory may stay quiet for hours. Dropping the
        // stream kills the agent; the agent ends with the directory or the sandbox.
        let (_, reading) = self.started_out(handle, user, op).await?;
        let lines = tokio::io::BufReader::new(reading);
        let stream = futures::stream::unfold(lines, |mut lines| async move {
            let mut line = Vec::new();
            let read = (&mut lines)
                .take(MAX_EVENT_LINE)
                .read_until(b'\n', &mut line)
                .await;
            match read {
                Ok(0) | Err(_) => None,
                Ok(_) => {
                    let event = parse_event(&line);
                    Some((event, lines))
                }
            }
        });
        Ok(stream.boxed())
    }
}

/// What an agent reported having done.
struct Done {
    entries: Vec<FileEntry>,
    truncated: bool,
    count: u64,
}

/// Awaits and parses a report.
async fn outcome(
    report: Pin<Box<dyn Future<Output = Result<Vec<u8>, BackendError>> + Send>>,
) -> Result<Done, BackendError> {
    let text = report.await?;
    if text.is_empty() {
        // The agent died before saying anything (the sandbox is going, or it was killed).
        return Err(BackendError::gone());
    }
    if text.len() > MAX_REPORT {
        return Err(BackendError::other(
            "a file operation's outcome is too large",
        ));
    }
    let outcome: FileOutcome = serde_json::from_slice(&text)
        .map_err(|e| BackendError::other_from("malformed file operation outcome", e))?;
    match outcome {
        FileOutcome::Ok {
            entries,
            truncated,
            count,
        } => Ok(Done {
            entries,
            truncated,
            count,
        }),
        FileOutcome::Error { kind, message } => Err(file_error(&kind, message)),
    }
}

fn file_error(kind: &str, message: String) -> BackendError {
    let kind = match kind {
        "not_found" => FileErrorKind::NotFound,
        "conflict" => FileErrorKind::Conflict,
        "denied" => FileErrorKind::Denied,
        "no_space" => FileErrorKind::NoSpace,
        "invalid" => FileErrorKind::Invalid,
        _ => return BackendError::other(format!("file operation failed: {message}")),
    };
    BackendError::File { kind, message }
}

fn info(entry: FileEntry) -> FileInfo {
    FileInfo {
        path: entry.path,
        kind: match entry.kind.as_str() {
            "file" => FileKind::File,
            "directory" => FileKind::Directory,
            "symlink" => FileKind::Symlink,
            _ => FileKind::Other,
        },
        size: entry.size,
        mode: entry.mode,
        owner: User {
            uid: entry.uid,
            gid: entry.gid,
        },
        modified_ms: entry.modified_ms,
        symlink_target: entry.symlink_target,
    }
}

fn stalled() -> BackendError {
    BackendError::Timeout {
        operation: "file operation",
        after: STALL,
    }
}

fn one(done: Done) -> Result<FileInfo, BackendError> {
    done.entries
        .into_iter()
        .next()
        .map(info)
        .ok_or_else(|| BackendError::other("a file operation reported nothing"))
}

fn parse_event(line: &[u8]) -> Result<FileEvent, BackendError> {
    #[derive(serde::Deserialize)]
    struct Line {
        kind: String,
        path: String,
        is_dir: bool,
    }
    let line: Line = serde_json::from_slice(line)
        .map_err(|e| BackendError::other_from("malformed watch event", e))?;
    let kind = match line.kind.as_str() {
        "create" => FileEventKind::Create,
        "write" => FileEventKind::Write,
        "remove" => FileEventKind::Remove,
        "rename" => FileEventKind::Rename,
        "chmod" => FileEventKind::Chmod,
        _ => FileEventKind::Overflow,
    };
    Ok(FileEvent {
        kind,
        path: line.path,
        is_dir: line.is_dir,
    })
}

/// Bytes under way from an agent, which is killed when the reader goes.
struct Reading {
    data: Box<dyn AsyncRead + Send + Unpin>,
    control: Box<dyn Control>,
    ended: bool,
    /// Bytes the stream must carry, when known (a read).
    expected: Option<u64>,
    sent: u64,
}

impl AsyncRead for Reading {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.data).poll_read(cx, buf)
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.control.kill();
    }
}

/// Sends `data` to an upload's agent while awaiting its report: (the report, whether the
/// whole upload went in). A refusal (no such directory, a full disk) ends the upload at once;
/// what the client still sends is then read and dropped, a little of it at most, so that its
/// connection stays usable. An agent that stops reading for [`STALL`] is given up on.
async fn upload(
    report: Pin<Box<dyn Future<Output = Result<Vec<u8>, BackendError>> + Send>>,
    mut input: Box<dyn AsyncWrite + Send + Unpin>,
    mut data: ByteStream,
    control: &dyn Control,
) -> (Result<Done, BackendError>, Result<bool, BackendError>) {
    let sending = async move {
        let mut broken = false;
        let mut dropped = 0usize;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| BackendError::io("the upload failed", e))?;
            if broken {
                dropped += chunk.len();
                if dropped > DRAIN_LIMIT {
                    break;
                }
                continue;
            }
            match tokio::time::timeout(STALL, input.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => broken = true,
                Err(_) => return Err(stalled()),
            }
        }
        if !broken {
            let _ = tokio::time::timeout(STALL, input.shutdown()).await;
        }
        drop(input);
        Ok::<bool, BackendError>(!broken)
    };
    tokio::pin!(sending);
    let mut uploaded = None;
    let outcome = {
        let report = outcome(report);
        tokio::pin!(report);
        loop {
            tokio::select! {
                done = &mut sending, if uploaded.is_none() => {
                    let failed = !matches!(done, Ok(true));
                    uploaded = Some(done);
                    // The upload failed or was cut off: the agent is told by the end of its
                    // input, and its report comes; one that does not is stuck.
                    if failed {
                        match tokio::time::timeout(STALL, &mut report).await {
                            Ok(outcome) => break outcome,
                            Err(_) => break Err(stalled()),
                        }
                    }
                }
                outcome = &mut report => break outcome,
                () = tokio::time::sleep(STALL), if uploaded.is_some() => break Err(stalled()),
            }
        }
    };
    if outcome.is_err() {
        control.kill();
    }
    let uploaded = match uploaded {
        Some(done) => done,
        None => tokio::time::timeout(DRAIN_TIME, &mut sending)
            .await
            .unwrap_or(Ok(false)),
    };
    (outcome, uploaded)
}
