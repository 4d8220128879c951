//! The files of a native sandbox: each operation is done by a child of the sandbox's init,
//! inside its namespaces and as the requested user (`child::files`), so paths resolve in the
//! sandbox's root only. Bytes go through pipes, never through init, and never all at once:
//! the daemon holds one chunk of a file at a time.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use nix::errno::Errno;
use sbx_backend::{
    BackendError, ByteStream, Extracted, FileErrorKind, FileEvent, FileEventKind, FileEvents,
    FileInfo, FileKind, Files, Handle, Listing, SandboxPath, User,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::client;
use super::keys::NativeHandle;
use super::NativeBackend;
use crate::wire::{self, FileEntry, FileOp, FileOutcome, FileRequest, Reply, Request};

/// Largest outcome a file child may report (a listing of `MAX_ENTRIES`).
const MAX_OUTCOME: usize = 4 << 20;
/// Longest a file child may go without moving a byte (one stopped by the sandbox, say) before
/// the daemon gives up on it and kills it.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);
const CHUNK: usize = 256 * 1024;
/// What of a refused upload is still read (and dropped), and for how long at most.
const DRAIN_LIMIT: usize = 8 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// One file operation under way: the connection that saw it start (kept until it ends), the
/// result pipe, and the data pipe of a read or a write.
struct Call {
    socket: tokio::io::unix::AsyncFd<OwnedFd>,
    result: pipe::Receiver,
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), BackendError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| BackendError::io("cannot create a pipe", e.into()))?;
    // A megabyte in flight (the default is 64 KiB): a fraction of the wake-ups per byte. Best
    // effort: a host whose `fs.pipe-max-size` is smaller keeps the default.
    let _ = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    Ok((read, write))
}

fn receiver(fd: OwnedFd) -> Result<pipe::Receiver, BackendError> {
    pipe::Receiver::from_owned_fd(fd).map_err(|e| BackendError::io("cannot watch a pipe", e))
}

fn sender(fd: OwnedFd) -> Result<pipe::Sender, BackendError> {
    pipe::Sender::from_owned_fd(fd).map_err(|e| BackendError::io("cannot watch a pipe", e))
}

/// Starts `op` in the sandbox whose control socket is `socket`; `data` is the child's end of
/// the data pipe for a read or a write.
async fn start(
    socket_path: &Path,
    user: User,
    op: FileOp,
    data: Option<OwnedFd>,
) -> Result<Call, BackendError> {
    let (result_read, result_write) = pipe_pair()?;
    let socket = client::connect_control(socket_path)?;
    // Relative paths are the sandbox user's, whoever acts.
    let home = "/home/user";
    let request = Request::File(FileRequest {
        version: wire::PROTOCOL_VERSION,
        uid: user.uid,
        gid: user.gid,
        cwd: home.into(),
        action: op,
    });
    let mut fds = vec![result_write.as_raw_fd()];
    if let Some(data) = &data {
        fds.push(data.as_raw_fd());
    }
    wire::send(socket.get_ref().as_fd(), &request, &fds).map_err(|e| match e {
        Errno::EMSGSIZE => BackendError::File {
            kind: FileErrorKind::Invalid,
            message: "the path is too long".into(),
        },
        Errno::EPIPE | Errno::ECONNRESET => BackendError::gone(),
        e => BackendError::io("cannot send to the sandbox's init", e.into()),
    })?;
    // The child holds its ends now; ours close so that EOF can come.
    drop(result_write);
    drop(data);
    let mut buffer = vec![0u8; 4096];
    match client::next_reply(&socket, &mut buffer).await {
        Some(Reply::Started { .. }) => {}
        Some(Reply::Failed { message }) => {
            return Err(BackendError::other(format!(
                "file operation refused: {message}"
            )))
        }
        _ => return Err(BackendError::gone()),
    }
    Ok(Call {
        socket,
        result: receiver(result_read)?,
    })
}

impl Call {
    /// Ends the child (the daemon gave up on it: its caller left, or it stalled).
    fn kill(&self) {
        let request = Request::Signal {
            signal: libc::SIGKILL,
            target: wire::SignalTarget::Process,
        };
        let _ = wire::send(self.socket.get_ref().as_fd(), &request, &[]);
    }

    /// The child's report, read to its end (bounded).
    async fn outcome(&mut self) -> Result<Done, BackendError> {
        let mut text = Vec::new();
        let mut limited = (&mut self.result).take(MAX_OUTCOME as u64 + 1);
        limited
            .read_to_end(&mut text)
            .await
            .map_err(|e| BackendError::io("cannot read a file operation's outcome", e))?;
        if text.is_empty() {
            // The child died before saying anything (the sandbox is going, or it was killed).
            return Err(BackendError::gone());
        }
        if text.len() > MAX_OUTCOME {
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
}

/// What a file child reported having done.
struct Done {
    entries: Vec<FileEntry>,
    truncated: bool,
    count: u64,
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

impl NativeBackend {
    fn control_socket(&self, handle: &Handle) -> Result<std::path::PathBuf, BackendError> {
        let native = NativeHandle::parse(handle)?;
        Ok(self.inner.layout.socket(&native.key()?))
    }

    async fn simple(&self, handle: &Handle, user: User, op: FileOp) -> Result<Done, BackendError> {
        let mut call = start(&self.control_socket(handle)?, user, op, None).await?;
        match tokio::time::timeout(STALL, call.outcome()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                call.kill();
                Err(stalled())
            }
        }
    }
}

#[async_trait]
impl Files for NativeBackend {
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
        let socket = self.control_socket(handle)?;
        let (data_read, data_write) = pipe_pair()?;
        let op = FileOp::Write {
            path: path.into(),
            mode,
        };
        let mut call = start(&socket, user, op, Some(data_read)).await?;
        let pipe = sender(data_write)?;
        let (outcome, uploaded) = upload(&mut call, pipe, data).await;
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

    async fn watch(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        recursive: bool,
        user: User,
    ) -> Result<FileEvents, BackendError> {
        let (data_read, data_write) = pipe_pair()?;
        let op = FileOp::Watch {
            path: path.into(),
            recursive,
        };
        let mut call = start(&self.control_socket(handle)?, user, op, Some(data_write)).await?;
        let data = receiver(data_read)?;
        match tokio::time::timeout(STALL, call.outcome()).await {
            Ok(outcome) => outcome?,
            Err(_) => {
                call.kill();
                return Err(stalled());
            }
        };
        // No stall limit here: a directory may stay quiet for hours. Dropping the stream
        // kills the child; the child ends with the directory or the sandbox.
        let reading = Reading {
            data,
            call,
            ended: false,
        };
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

    async fn extract(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        user: User,
        data: ByteStream,
    ) -> Result<Extracted, BackendError> {
        let socket = self.control_socket(handle)?;
        let (data_read, data_write) = pipe_pair()?;
        let op = FileOp::Extract { path: path.into() };
        let mut call = start(&socket, user, op, Some(data_read)).await?;
        let pipe = sender(data_write)?;
        let (outcome, uploaded) = upload(&mut call, pipe, data).await;
        // The child's refusal says most (an entry refused, a full disk); a failed upload
        // comes next (the archive then ends short, which the child also notices).
        let done = outcome?;
        uploaded?;
        let entries = done.count;
        Ok(Extracted {
            directory: one(done)?,
            entries,
        })
    }
}

impl NativeBackend {
    /// Starts `op`, whose child writes bytes to a data pipe after its report, and streams
    /// them. Dropping the stream (its caller left) or a stalled child ends the child.
    async fn stream_out(
        &self,
        handle: &Handle,
        user: User,
        op: FileOp,
    ) -> Result<(FileInfo, ByteStream), BackendError> {
        let (data_read, data_write) = pipe_pair()?;
        let mut call = start(&self.control_socket(handle)?, user, op, Some(data_write)).await?;
        let data = receiver(data_read)?;
        let done = match tokio::time::timeout(STALL, call.outcome()).await {
            Ok(outcome) => outcome?,
            Err(_) => {
                call.kill();
                return Err(stalled());
            }
        };
        let info = one(done)?;
        let reading = Reading {
            data,
            call,
            ended: false,
        };
        let stream = futures::stream::unfold(reading, |mut reading| async move {
            if reading.ended {
                return None;
            }
            let mut chunk = bytes::BytesMut::with_capacity(CHUNK);
            match tokio::time::timeout(STALL, reading.data.read_buf(&mut chunk)).await {
                // The end of the bytes is the end only if the child says it finished: one
                // that failed half-way (an unreadable file in an archive) cuts the stream with
                // an error, never passing for whole.
                Ok(Ok(0)) => {
                    reading.ended = true;
                    let mut buffer = vec![0u8; 4096];
                    let said = tokio::time::timeout(
                        Duration::from_secs(5),
                        client::next_reply(&reading.call.socket, &mut buffer),
                    )
                    .await;
                    match said {
                        Ok(Some(Reply::Exited { code: Some(0), .. })) => None,
                        _ => Some((
                            Err(std::io::Error::other("the sandbox's bytes were cut short")),
                            reading,
                        )),
                    }
                }
                Ok(Ok(_)) => Some((Ok(chunk.freeze()), reading)),
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

    /// Removes an upload's new file that will not go into place.
    async fn discard(&self, handle: &Handle, user: User, path: &str) -> Result<(), BackendError> {
        let op = FileOp::Remove {
            path: path.into(),
            recursive: false,
        };
        self.simple(handle, user, op).await.map(|_| ())
    }
}

/// Longest line a watch child may send (a path is at most 4096 bytes).
const MAX_EVENT_LINE: u64 = 16 << 10;

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

impl tokio::io::AsyncRead for Reading {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.data).poll_read(cx, buf)
    }
}

/// A read under way: the bytes, and the child sending them (killed when the reader goes).
struct Reading {
    data: pipe::Receiver,
    call: Call,
    ended: bool,
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.call.kill();
    }
}

/// Sends `data` to the write child while awaiting its report: (the report, whether the whole
/// upload went in). A refusal (no such directory, a full disk) ends the upload at once; what
/// the client still sends is then read and dropped, a little of it at most, so that its
/// connection stays usable. A child that stops reading for [`STALL`] is killed.
async fn upload(
    call: &mut Call,
    mut pipe: pipe::Sender,
    mut data: ByteStream,
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
            match tokio::time::timeout(STALL, pipe.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => broken = true,
                Err(_) => return Err(stalled()),
            }
        }
        drop(pipe);
        Ok::<bool, BackendError>(!broken)
    };
    tokio::pin!(sending);
    let mut uploaded = None;
    let outcome = {
        let report = call.outcome();
        tokio::pin!(report);
        loop {
            tokio::select! {
                done = &mut sending, if uploaded.is_none() => {
                    let failed = !matches!(done, Ok(true));
                    uploaded = Some(done);
                    // The upload failed or was cut off: the child is told by EOF, and its
                    // report comes; one that does not is stuck.
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
        call.kill();
    }
    let uploaded = match uploaded {
        Some(done) => done,
        None => tokio::time::timeout(DRAIN_TIME, &mut sending)
            .await
            .unwrap_or(Ok(false)),
    };
    (outcome, uploaded)
}
