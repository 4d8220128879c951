//! The HTTP server: accepts connections, bounds them, serves the router on each.
//!
//! What `axum::serve` does not do, and a server on the internet needs: a deadline for each
//! request's headers (slow-loris clients and idle keep-alive connections are dropped after
//! [`Limits::header_timeout`]), a deadline for writes (a client that stops reading its response
//! — holding whatever the response would hold — is dropped after [`Limits::write_timeout`] of
//! no progress), a cap on connections per client address and in total (a connection over
//! either is closed at once), and a graceful stop that lets requests in flight finish.
//! Trusted proxies are exempt from the per-address cap: every client comes through them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

/// Connection caps and deadlines.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest a client may take to send a request's headers (and longest a kept-alive
    /// connection may sit idle).
    pub header_timeout: Duration,
    /// Longest a write may make no progress (the client reads nothing) before the connection
    /// is dropped; upgraded connections (terminals) too.
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Peers exempt from the per-address cap.
    pub trusted_proxies: Vec<sbx_config::IpRange>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_connections_per_ip: 256,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Connections {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One accepted connection's place in the counts; freed when dropped.
struct Permit {
    connections: Arc<Mutex<Connections>>,
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self
            .connections
            .lock()
            .expect("connection counts are never poisoned");
        c.total -= 1;
        if let Some(ip) = self.ip {
            if let Some(n) = c.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_ip.remove(&ip);
                }
            }
        }
    }
}

fn admit(
    connections: &Arc<Mutex<Connections>>,
    limits: &Limits,
    peer: IpAddr,
) -> Result<Permit, &'static str> {
    let mut c = connections
        .lock()
        .expect("connection counts are never poisoned");
    if c.total >= limits.max_connections {
        return Err("too many connections");
    }
    let counted = !limits.trusted_proxies.iter().any(|r| r.contains(peer));
    if counted {
        let n = c.per_ip.entry(peer).or_default();
        if *n >= limits.max_connections_per_ip {
            return Err("too many connections from this address");
        }
        *n += 1;
    }
    c.total += 1;
    Ok(Permit {
        connections: connections.clone(),
        ip: counted.then_some(peer),
    })
}

/// Serves `router` on `listener` until `stop` turns true, then waits for the requests in
/// flight (the caller bounds that wait). Upgraded connections (terminals) are not waited for:
/// they end when their sandboxes do.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let tracker = tokio_util::task::TaskTracker::new();
    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before accept: wait a moment
                    // rather than spin, and keep serving.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let permit = match admit(&connections, &limits, peer.ip()) {
            Ok(permit) => permit,
            Err(why) => {
                tracing::warn!(%peer, why, "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let drain = DrainOnClose::default();
        // The connection's place in the counts goes with the stream: a connection being
        // drained after its last answer still counts against its address.
        let stream = StallGuard::new(stream, limits.write_timeout, drain.clone(), permit);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            request.extensions_mut().insert(drain.clone());
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|e| match e {}))
            }
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop = stop.clone();
        tracker.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopped(&mut stop) => {
                    // Finish the request in flight, take no other.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Asks that a connection, once the daemon is done with it, be read to its end before it is
/// closed (a request extension of every request).
///
/// For an answer that refused what the client is still sending — a body past its route's
/// limit, a request refused before its body was read, a WebSocket message far past the
/// limit: closing a socket with unread data in it makes the kernel reset the connection, and
/// the client would get a reset (or a broken pipe while it writes) instead of the answer that
/// says why. The draining reads and discards for at most [`DRAIN_TIME`] and [`DRAIN_BYTES`],
/// and the connection keeps counting against its address meanwhile.
#[derive(Debug, Clone, Default)]
pub struct DrainOnClose(Arc<AtomicBool>);

impl DrainOnClose {
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }
}

const DRAIN_TIME: Duration = Duration::from_secs(5);
const DRAIN_BYTES: usize = 64 << 20;

/// A connection whose writes fail (`TimedOut`) once they have made no progress for its
/// deadline: a response to a client that never reads ends instead of being held forever. And
/// one that is drained before it closes when asked (see [`DrainOnClose`]).
struct StallGuard {
    /// Taken by the drain when the connection is dropped.
    inner: Option<TcpStream>,
    deadline: Duration,
    /// Armed while a write waits for the client.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    drain: DrainOnClose,
    /// The connection's place in the counts, for as long as the stream lives (drain included).
    permit: Option<Permit>,
}

impl StallGuard {
    fn new(
        inner: TcpStream,
        deadline: Duration,
        drain: DrainOnClose,
        permit: Permit,
    ) -> StallGuard {
        StallGuard {
            inner: Some(inner),
            deadline,
            stall: None,
            drain,
            permit: Some(permit),
        }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.inner
                .as_mut()
                .expect("the stream is taken only on drop"),
        )
    }

    /// Passes a write's progress through, and fails it once it has waited past the deadline.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stall = None;
            return poll;
        }
        let deadline = self.deadline;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the write deadline",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for StallGuard {
    fn drop(&mut self) {
        if !self.drain.0.load(Ordering::Acquire) {
            return;
        }
        let (Some(mut stream), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let permit = self.permit.take();
        runtime.spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let _permit = permit;
            // Done writing: the client sees the end after what it was sent.
            let _ = stream.shutdown().await;
            let mut buffer = vec![0u8; 8 * 1024];
            let mut drained = 0;
            let until = tokio::time::Instant::now() + DRAIN_TIME;
            while drained < DRAIN_BYTES {
                match tokio::time::timeout_at(until, stream.read(&mut buffer)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => drained += n,
                }
            }
        });
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = self.stream().poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = self.stream().poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = self.stream().poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = self.stream().poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_address_and_in_total() {
        let connections = Arc::new(Mutex::new(Connections::default()));
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_connections_per_ip: 2,
            trusted_proxies: vec!["10.0.0.1".parse().unwrap()],
        };
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let first = admit(&connections, &limits, a).unwrap();
        let _second = admit(&connections, &limits, a).unwrap();
        assert!(admit(&connections, &limits, a).is_err(), "per address");
        drop(first);
        let _again = admit(&connections, &limits, a).unwrap();
        let _p1 = admit(&connections, &limits, proxy).unwrap();
        assert!(admit(&connections, &limits, proxy).is_err(), "in total");
        assert_eq!(connections.lock().unwrap().per_ip.get(&proxy), None);
    }
}
