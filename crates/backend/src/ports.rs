//! A sandbox's TCP ports, reached from the daemon without giving the sandbox any network: a
//! thread of the daemon joins the network namespace of the sandbox's process, opens a socket
//! there and connects it to the sandbox's own loopback, then ends (a thread's namespaces are
//! its own; this one is never reused). A socket stays in the namespace it was made in, so the
//! daemon then reads and writes it like any other. Listening ports are read from the
//! namespace's `/proc/<pid>/net/tcp{,6}`, as the sandbox's own process sees them.
//!
//! For backends whose sandboxes run on the host's kernel in a network namespace of their own
//! (native, `crun`/`runc`); gVisor keeps its network stack in the Sentry, out of reach of
//! this.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::process::is_alive;
use crate::BackendError;

/// Longest a connection to a port of the sandbox may take to be accepted.
const CONNECT: Duration = Duration::from_secs(5);

/// A connection to `port` on the loopback of the network namespace of process `pid` (started
/// at `start_time`: a pid reused meanwhile is refused), IPv4 first, then IPv6.
pub fn connect(pid: i32, start_time: u64, port: u16) -> io::Result<TcpStream> {
    crate::process::in_namespace_of(pid, start_time, "net", libc::CLONE_NEWNET, move || {
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match TcpStream::connect_timeout(&v4, CONNECT) {
            Ok(stream) => Ok(stream),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                TcpStream::connect_timeout(&v6, CONNECT).map_err(|_| e)
            }
            Err(e) => Err(e),
        }
    })
}

/// [`connect`] as a tokio stream, its failures as the backend errors lifecycle answers with:
/// the process gone is [`BackendError::NotFound`], no one accepting is
/// [`BackendError::PortUnreachable`].
pub async fn connect_stream(
    pid: i32,
    start_time: u64,
    port: u16,
) -> Result<tokio::net::TcpStream, BackendError> {
    let connected = tokio::task::spawn_blocking(move || connect(pid, start_time, port))
        .await
        .map_err(|e| BackendError::other_from("the connecting task failed", e))?;
    let stream = match connected {
        Ok(stream) => stream,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BackendError::NotFound("the sandbox is gone".into()))
        }
        Err(e) => {
            return Err(BackendError::PortUnreachable(format!(
                "nothing in the sandbox accepts connections on port {port} ({e})"
            )))
        }
    };
    stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
        .map_err(|e| BackendError::io("cannot use a connection to a sandbox's port", e))
}

/// [`listening`] for the sandbox whose process `pid` started at `start_time`.
pub async fn listening_ports(pid: i32, start_time: u64) -> Result<Vec<u16>, BackendError> {
    tokio::task::spawn_blocking(move || {
        if !is_alive(pid, start_time) {
            return Err(BackendError::NotFound("the sandbox is gone".into()));
        }
        listening(pid).map_err(|e| BackendError::io("cannot read the sandbox's sockets", e))
    })
    .await
    .map_err(|e| BackendError::other_from("the listing task failed", e))?
}

/// The TCP ports listening in the network namespace of process `pid`, each once, in order.
pub fn listening(pid: i32) -> io::Result<Vec<u16>> {
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = match std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            Ok(text) => text,
            // A kernel without IPv6.
            Err(e) if e.kind() == io::ErrorKind::NotFound && table == "tcp6" => continue,
            Err(e) => return Err(e),
        };
        ports.extend(listening_in(&text));
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// The listening ports of a `/proc/net/tcp` table (state `0A`).
fn listening_in(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        if state != "0A" {
            return None;
        }
        let (_, port) = local.rsplit_once(':')?;
        u16::from_str_radix(port, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_lists_its_listening_ports_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n\
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0100007F:1F40 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 20 4 30 10 -1\n";
        assert_eq!(listening_in(table).collect::<Vec<_>>(), vec![8000, 22]);
    }

    #[test]
    fn this_process_namespace_is_reachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pid = std::process::id() as i32;
        let start = crate::process::start_time(pid).unwrap();
        assert!(listening(pid).unwrap().contains(&port));
        // Joining one's own namespace needs root; as anyone else the call is refused.
        match connect(pid, start, port) {
            Ok(_) => {
                let (_, from) = listener.accept().unwrap();
                assert!(from.ip().is_loopback());
            }
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}"),
        }
        assert_eq!(
            connect(pid, start + 1, port).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
