//! What not every engine can do. A backend reports its [`Capabilities`] and hands out each
//! optional part as a trait object (`Backend::terminals()` and so on); `None` means
//! unsupported, which the API answers with 501 and a message naming the backend.
//!
//! Invariant (checked by the conformance suite): a capability is reported exactly when its
//! trait object is there.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{BackendError, ExecSession, Handle, TerminalSpec, User};

/// What a backend can do, for status reports and for lifecycle's checks before a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Commands get a standard input that the caller feeds (else `/dev/null` only).
    pub stdin: bool,
    /// Interactive terminals ([`Terminals`]).
    pub terminals: bool,
    /// Reading and writing the sandbox's files ([`Files`]).
    pub files: bool,
    /// Freezing and thawing every process of a sandbox ([`PauseResume`]).
    pub pause: bool,
    /// Capturing a sandbox's filesystem ([`Snapshots`]).
    pub snapshots: bool,
    /// Reaching a port a sandbox listens on ([`Ports`]).
    pub ports: bool,
    /// Sandboxes outlive the daemon and are taken over by the next one (`Backend::adopt`).
    pub adopt: bool,
    /// Sandboxes are prepared ahead of time, so a create is quicker.
    pub warm_pool: bool,
    /// Checkpointing a whole sandbox — processes and memory — to disk and restoring it
    /// ([`Hibernation`]).
    pub hibernate: bool,
}

impl Capabilities {
    /// The names status reports list (`exec` is always there: every backend runs commands).
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = vec!["exec", "exec-stream", "timeout"];
        for (present, name) in [
            (self.stdin, "stdin"),
            (self.terminals, "terminal"),
            (self.files, "files"),
            (self.pause, "pause"),
            (self.snapshots, "snapshots"),
            (self.ports, "ports"),
            (self.adopt, "adopt"),
            (self.warm_pool, "warm-pool"),
            (self.hibernate, "hibernate"),
        ] {
            if present {
                names.push(name);
            }
        }
        names
    }
}

/// Interactive terminals: a command on a pseudo-terminal.
#[async_trait]
pub trait Terminals: Send + Sync {
    /// Starts `spec` on a new pseudo-terminal. Its output comes as `Stdout`; `Resize` and
    /// signals to the foreground job are honoured; `Kill` ends the terminal's whole session.
    async fn open_terminal(
        &self,
        handle: &Handle,
        spec: TerminalSpec,
    ) -> Result<ExecSession, BackendError>;
}

/// Freezing a sandbox: its processes stop using CPU and continue where they were on resume.
#[async_trait]
pub trait PauseResume: Send + Sync {
    async fn pause(&self, handle: &Handle) -> Result<(), BackendError>;
    async fn resume(&self, handle: &Handle) -> Result<(), BackendError>;
}

/// Memory snapshots: a sandbox's processes, their memory and its files written to disk, the
/// sandbox's host processes ended (it uses no memory or CPU), and the same processes restored
/// later — by another daemon too: a hibernated sandbox survives a restart.
#[async_trait]
pub trait Hibernation: Send + Sync {
    /// Checkpoints the sandbox and ends its host processes. What cannot be saved is ended
    /// first (processes holding the host's end of a command's pipes or a terminal: their
    /// clients go with the daemon's side of them). Returns the bytes the checkpoint takes on
    /// disk. The handle stays the sandbox's.
    async fn hibernate(&self, handle: &Handle) -> Result<u64, BackendError>;
    /// Restores a hibernated sandbox: the same processes carry on where they were. The
    /// checkpoint is removed once restored.
    async fn restore(&self, handle: &Handle) -> Result<(), BackendError>;
    /// Whether the sandbox has a checkpoint here to restore (what a restarted daemon asks of
    /// a sandbox its store says is hibernated).
    async fn is_hibernated(&self, handle: &Handle) -> Result<bool, BackendError>;
}

/// A stream of bytes in or out of a sandbox.
pub type ByteStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static>>;

/// A path inside a sandbox: absolute, or relative to the user's home. A backend resolves it
/// inside the sandbox's root only, whatever symlinks the sandbox planted.
pub type SandboxPath = str;

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

/// One entry of a sandbox's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Absolute path inside the sandbox.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub owner: User,
    /// Modification time, Unix milliseconds.
    pub modified_ms: i64,
    pub symlink_target: Option<String>,
}

/// A directory's entries, and whether the listing stopped short of them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<FileInfo>,
    pub truncated: bool,
}

/// A change under a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    pub kind: FileEventKind,
    /// Absolute path inside the sandbox.
    pub path: String,
    pub is_dir: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEventKind {
    Create,
    Write,
    Remove,
    /// Moved away (its new name, if under the watch, comes as `Create`).
    Rename,
    Chmod,
    /// Some changes were not told (too many at once, or too many directories to watch).
    Overflow,
}

impl FileEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileEventKind::Create => "create",
            FileEventKind::Write => "write",
            FileEventKind::Remove => "remove",
            FileEventKind::Rename => "rename",
            FileEventKind::Chmod => "chmod",
            FileEventKind::Overflow => "overflow",
        }
    }
}

/// Changes under a directory, as they happen; the stream ends when the directory or the
/// sandbox goes.
pub type FileEvents =
    Pin<Box<dyn futures_core::Stream<Item = Result<FileEvent, BackendError>> + Send + 'static>>;

/// What extracting an archive made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The directory it went under.
    pub directory: FileInfo,
    /// How many entries (files, directories, links) went in.
    pub entries: u64,
}

/// The files of a running sandbox. Every call acts as `user` inside the sandbox (its
/// permissions apply) and resolves paths in the sandbox's root only.
#[async_trait]
pub trait Files: Send + Sync {
    /// What `path` is: the symlink itself, or with `follow` what it points to.
    async fn stat(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        follow: bool,
        user: User,
    ) -> Result<FileInfo, BackendError>;
    /// The entries of a directory, `depth` levels down (1: its own entries).
    async fn list(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        depth: u32,
        user: User,
    ) -> Result<Listing, BackendError>;
    /// The regular file (as it was when opened) and its bytes from `offset`, at most
    /// `length` of them when given.
    async fn read(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        offset: u64,
        length: Option<u64>,
        user: User,
    ) -> Result<(FileInfo, ByteStream), BackendError>;
    /// Replaces the file with `data`, made with `mode` and owned by `user` — all of it or
    /// nothing: a failed or cut-off upload leaves the file as it was.
    async fn write(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        mode: u32,
        user: User,
        data: ByteStream,
    ) -> Result<FileInfo, BackendError>;
    /// Makes the directory and any missing parents.
    async fn make_dir(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        user: User,
    ) -> Result<(), BackendError>;
    async fn remove(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        recursive: bool,
        user: User,
    ) -> Result<(), BackendError>;
    async fn rename(
        &self,
        handle: &Handle,
        from: &SandboxPath,
        to: &SandboxPath,
        user: User,
    ) -> Result<(), BackendError>;
    /// The directory (or regular file) at `path` as a tar stream, its entries named from its
    /// own name down; symlinks archived as symlinks, never followed.
    async fn archive(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        user: User,
    ) -> Result<ByteStream, BackendError>;
    /// Extracts the tar stream `data` under the directory `path` (made if missing), as
    /// `user`. The archive is hostile: nothing lands outside `path` (no absolute paths, no
    /// `..`, never through a symlink), no device nodes, no set-id bits. Not atomic: an archive
    /// refused half-way leaves what went in before.
    async fn extract(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        user: User,
        data: ByteStream,
    ) -> Result<Extracted, BackendError>;
    /// Changes under the directory `path` (and with `recursive`, under its subdirectories),
    /// as `user` sees them, until the stream is dropped or the directory or sandbox goes.
    async fn watch(
        &self,
        handle: &Handle,
        path: &SandboxPath,
        recursive: bool,
        user: User,
    ) -> Result<FileEvents, BackendError>;
}

/// A snapshot's name, chosen by lifecycle (the same validation as a sandbox id's body).
pub type SnapshotName = str;

/// Filesystem snapshots: a sandbox's files captured at one instant, kept apart from the
/// sandbox (they outlive it), from which new sandboxes start (`SandboxSpec::snapshot`).
#[async_trait]
pub trait Snapshots: Send + Sync {
    /// Captures the sandbox's filesystem changes as `name`, consistently (the sandbox's
    /// processes do not run meanwhile; a paused sandbox stays paused). `parent` is the
    /// snapshot the sandbox started from, if any: the new snapshot holds its changes too.
    /// Returns the bytes the snapshot added to the host's storage.
    async fn snapshot(
        &self,
        handle: &Handle,
        name: &SnapshotName,
        parent: Option<&SnapshotName>,
    ) -> Result<u64, BackendError>;
    /// Whether the snapshot `name` is stored here.
    async fn has_snapshot(&self, name: &SnapshotName) -> Result<bool, BackendError>;
    /// Removes a snapshot; already gone is `Ok`. Sandboxes started from it must be gone.
    async fn delete_snapshot(&self, name: &SnapshotName) -> Result<(), BackendError>;
    /// The snapshot as one portable file (`.tar.zst`), with `manifest` (lifecycle's own
    /// description of it) inside.
    async fn export_snapshot(
        &self,
        name: &SnapshotName,
        manifest: Vec<u8>,
    ) -> Result<ByteStream, BackendError>;
    /// Stores an exported file as the snapshot `name`; the file is hostile (its paths, links,
    /// devices and sizes are checked), and what it unpacks to is at most `max_bytes`. Returns
    /// the stored bytes and the manifest it carried.
    async fn import_snapshot(
        &self,
        name: &SnapshotName,
        data: ByteStream,
        max_bytes: u64,
    ) -> Result<(u64, Vec<u8>), BackendError>;
}

/// A byte stream both ways, to a port inside a sandbox.
pub trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Duplex for T {}

/// Reaching services a sandbox runs.
#[async_trait]
pub trait Ports: Send + Sync {
    /// A connection to TCP `port` on the sandbox's own loopback, made by the daemon: the
    /// sandbox gets no network. [`BackendError::PortUnreachable`] when nothing accepts it.
    async fn connect(&self, handle: &Handle, port: u16) -> Result<Box<dyn Duplex>, BackendError>;

    /// The TCP ports something listens on inside the sandbox, in order.
    async fn listening(&self, handle: &Handle) -> Result<Vec<u16>, BackendError>;
}
