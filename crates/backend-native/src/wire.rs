//! The control protocol between the daemon and a sandbox's init, over the sandbox's
//! `SOCK_SEQPACKET` Unix socket: one JSON message per packet, file descriptors attached with
//! `SCM_RIGHTS`. One connection carries one process: `Spawn`, then `Signal`s; init answers
//! `Started` or `Failed`, later `Exited`.
//!
//! Both sides treat the peer as untrusted input: sizes are bounded, parse errors end the
//! connection, nothing received is ever used as a host path.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change, so a daemon never drives an init it does not understand.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest packet either side sends or accepts (argv and environment included).
pub const MAX_PACKET: usize = 160 * 1024;
/// Most descriptors one packet may carry (stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// Daemon → init.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start a process. Attached descriptors: `[stdin,] stdout, stderr` (stdin only when
    /// `stdin_pipe`), or none with `tty` (then `Started` carries the terminal's master side).
    Spawn(SpawnRequest),
    /// Signal the connection's process, or its process group.
    Signal { signal: i32, target: SignalTarget },
    /// Liveness check.
    Ping,
    /// A file operation, done by a child of init inside the sandbox as `uid`/`gid`. Attached
    /// descriptors: the write end of a pipe for its result (one JSON [`FileOutcome`]), then
    /// for `Read` the write end of a pipe for the bytes, for `Write` the read end of a pipe
    /// with them. Init answers `Started`, later `Exited`.
    File(FileRequest),
}

pub use sbx_backend::agent::{FileEntry, FileOp, FileOutcome, FileRequest};

#[derive(Debug, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub version: u32,
    pub argv: Vec<String>,
    /// `KEY=value` entries, complete (init adds nothing).
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub stdin_pipe: bool,
    /// Run on a new pseudo-terminal of this size instead of pipes. No descriptor is attached;
    /// `Started` carries the terminal's master side.
    #[serde(default)]
    pub tty: Option<TtySize>,
}

/// Which processes a signal is for (see `sbx_backend::SignalTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalTarget {
    Process,
    Group,
    Foreground,
    Session,
}

impl From<sbx_backend::SignalTarget> for SignalTarget {
    fn from(target: sbx_backend::SignalTarget) -> Self {
        match target {
            sbx_backend::SignalTarget::Process => SignalTarget::Process,
            sbx_backend::SignalTarget::Group => SignalTarget::Group,
            sbx_backend::SignalTarget::Foreground => SignalTarget::Foreground,
            sbx_backend::SignalTarget::Session => SignalTarget::Session,
        }
    }
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// Init → daemon.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Reply {
    Started {
        pid: i32,
    },
    Failed {
        message: String,
    },
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    Pong {
        version: u32,
    },
}

/// Sends one message, with descriptors attached.
pub fn send<T: Serialize>(socket: BorrowedFd<'_>, message: &T, fds: &[RawFd]) -> nix::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(|_| nix::Error::EINVAL)?;
    if bytes.len() > MAX_PACKET {
        return Err(nix::Error::EMSGSIZE);
    }
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        control,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// What one receive produced.
pub enum Received<T> {
    Message(T, Vec<OwnedFd>),
    /// The peer closed the connection.
    Closed,
    /// The packet was too large or not a valid message; the connection should be dropped.
    Invalid(String),
}

/// Receives one message into `buffer` (at least [`MAX_PACKET`] bytes). Received descriptors
/// are close-on-exec and owned by the caller.
pub fn receive<T: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
    buffer: &mut [u8],
) -> nix::Result<Received<T>> {
    let mut control = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (length, truncated, fds) = {
        let mut iov = [IoSliceMut::new(buffer)];
        let message = recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for fd in received {
                    // SAFETY: the kernel just installed this descriptor in our table for us
                    // (SCM_RIGHTS); nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let truncated = message
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        (message.bytes, truncated, fds)
    };
    if truncated {
        return Ok(Received::Invalid("message too large".into()));
    }
    if length == 0 {
        return Ok(Received::Closed);
    }
    match serde_json::from_slice(&buffer[..length]) {
        Ok(message) => Ok(Received::Message(message, fds)),
        Err(e) => Ok(Received::Invalid(format!("malformed message: {e}"))),
    }
}
