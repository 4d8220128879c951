//! The files of a native sandbox: each operation is done by a child of the sandbox's init,
//! inside its namespaces and as the requested user (`child::files`), so paths resolve in the
//! sandbox's root only. Bytes go through pipes, never through init, and never all at once:
//! the daemon holds one chunk of a file at a time. What the daemon does with the child's
//! report and bytes is `sbx_backend::agent`'s, shared with the backends that run the same code
//! as a command.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use sbx_backend::agent::{Call, Control, Data, FileRequest, Transport, MAX_REPORT};
use sbx_backend::{BackendError, FileErrorKind, Handle};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::client;
use super::keys::NativeHandle;
use super::layout::Layout;
use crate::wire::{self, Reply, Request};

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

/// Starts file children through a sandbox's init.
pub(super) struct NativeTransport {
    pub(super) layout: Layout,
}

#[async_trait]
impl Transport for NativeTransport {
    async fn start(
        &self,
        handle: &Handle,
        request: FileRequest,
        data: Data,
    ) -> Result<Call, BackendError> {
        let native = NativeHandle::parse(handle)?;
        let socket_path = self.layout.socket(&native.key()?);
        let (result_read, result_write) = pipe_pair()?;
        // The child's end of the data pipe, and ours.
        let (child_data, input, output) = match data {
            Data::None => (None, None, None),
            Data::In => {
                let (read, write) = pipe_pair()?;
                (Some(read), Some(sender(write)?), None)
            }
            Data::Out => {
                let (read, write) = pipe_pair()?;
                (Some(write), None, Some(receiver(read)?))
            }
        };
        let socket = client::connect_control(&socket_path)?;
        let mut fds = vec![result_write.as_raw_fd()];
        if let Some(data) = &child_data {
            fds.push(data.as_raw_fd());
        }
        wire::send(socket.get_ref().as_fd(), &Request::File(request), &fds).map_err(
            |e| match e {
                Errno::EMSGSIZE => BackendError::File {
                    kind: FileErrorKind::Invalid,
                    message: "the path is too long".into(),
                },
                Errno::EPIPE | Errno::ECONNRESET => BackendError::gone(),
                e => BackendError::io("cannot send to the sandbox's init", e.into()),
            },
        )?;
        // The child holds its ends now; ours close so that EOF can come.
        drop(result_write);
        drop(child_data);
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
        let mut result = receiver(result_read)?;
        let report = Box::pin(async move {
            let mut text = Vec::new();
            (&mut result)
                .take(MAX_REPORT as u64 + 1)
                .read_to_end(&mut text)
                .await
                .map_err(|e| BackendError::io("cannot read a file operation's outcome", e))?;
            Ok(text)
        });
        Ok(Call {
            report,
            output: output.map(|o| Box::new(o) as Box<_>),
            input: input.map(|i| Box::new(i) as Box<_>),
            control: Box::new(NativeControl { socket }),
        })
    }
}

/// The connection that saw a file child start, kept until it ends.
struct NativeControl {
    socket: tokio::io::unix::AsyncFd<OwnedFd>,
}

#[async_trait]
impl Control for NativeControl {
    fn kill(&self) {
        let request = Request::Signal {
            signal: libc::SIGKILL,
            target: wire::SignalTarget::Process,
        };
        let _ = wire::send(self.socket.get_ref().as_fd(), &request, &[]);
    }

    async fn succeeded(&mut self) -> bool {
        let mut buffer = vec![0u8; 4096];
        let said = tokio::time::timeout(
            Duration::from_secs(5),
            client::next_reply(&self.socket, &mut buffer),
        )
        .await;
        matches!(said, Ok(Some(Reply::Exited { code: Some(0), .. })))
    }
}
