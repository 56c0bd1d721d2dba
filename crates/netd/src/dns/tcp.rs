//! A TCP listener: its accept loop and connections, as a tokio task that
//! dropping [`TcpListenerTask`] aborts (with every connection).
//!
//! Hardening against hostile clients: connections are capped (all
//! listeners of a server together; past the cap a new connection is closed
//! at once), each one is closed after [`IDLE_TIMEOUT`] without a complete
//! message (an idle or trickling client holds nothing for long: the
//! aardvark-dns CVE-2024-8418 class), a connection ending in the middle of a
//! message (truncated, reset) only ends that connection, and a connection
//! whose handshake arrived on an interface that is neither a served link
//! nor loopback is closed unanswered. The arriving interface is what Linux
//! recorded for the packet that completed the handshake
//! ([`crate::sys::tcp_arrival_ifindex`]), the same test the UDP path makes
//! with `IP_PKTINFO`; binding the listener to the link's device instead
//! (SO_BINDTODEVICE) would also refuse the host's own clients, whose
//! packets arrive on loopback.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::answer::{decide_in, encode_reply, Decision};
use super::shared::{Inner, Stats};

/// A connection without a complete message for this long is closed.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connections open at once, all listeners of a server together.
pub const MAX_TCP_CONNECTIONS: usize = 64;

/// A listener's accept loop; dropping it closes the listener and all its
/// connections.
pub(super) struct TcpListenerTask {
    task: tokio::task::JoinHandle<()>,
    /// The listening socket, owned by the task; open until the task ends,
    /// which only `drop` makes it do.
    fd: RawFd,
}

impl TcpListenerTask {
    pub(super) fn start(listener: TcpListener, inner: Arc<Inner>) -> TcpListenerTask {
        let fd = listener.as_raw_fd();
        TcpListenerTask {
            task: tokio::spawn(accept_loop(listener, inner)),
            fd,
        }
    }
}

impl Drop for TcpListenerTask {
    fn drop(&mut self) {
        // The task (and the socket with it) ends later, on the runtime:
        // stop listening now, so that the address can be served again at
        // once (a socket no longer listening does not conflict with a new
        // one under SO_REUSEADDR).
        let _ = nix::sys::socket::shutdown(self.fd, nix::sys::socket::Shutdown::Both);
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let v6 = listener.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    // Dropped with this task: aborts every connection.
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: pause rather than spin.
                tracing::debug!(err = %e, "DNS TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let arrived = crate::sys::tcp_arrival_ifindex(stream.as_fd(), v6)
            .ok()
            .flatten();
        if !inner.arrivals.allows(arrived) {
            Stats::bump(&inner.stats.dropped_foreign);
            tracing::debug!(%peer, ?arrived, "DNS TCP connection from outside closed");
            continue;
        }
        let Ok(permit) = inner.tcp_conns.clone().try_acquire_owned() else {
            Stats::bump(&inner.stats.tcp_refused);
            continue;
        };
        let inner = inner.clone();
        conns.spawn(async move {
            serve_connection(stream, peer, arrived, &inner).await;
            drop(permit);
        });
    }
}

/// Reads exactly `buf.len()` bytes within the idle timeout. `None`: the
/// peer closed, reset or idled.
async fn read_timed(stream: &mut TcpStream, buf: &mut [u8], inner: &Inner) -> Option<()> {
    match tokio::time::timeout(IDLE_TIMEOUT, stream.read_exact(buf)).await {
        Ok(Ok(_)) => Some(()),
        Ok(Err(_)) => None,
        Err(_) => {
            Stats::bump(&inner.stats.tcp_idle_closed);
            None
        }
    }
}

/// Answers the messages of one connection, one after the other, until the
/// client closes it, idles, or sends something that is not a query.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    arrived: Option<u32>,
    inner: &Inner,
) {
    let _ = stream.set_nodelay(true);
    loop {
        let mut len = [0u8; 2];
        if read_timed(&mut stream, &mut len, inner).await.is_none() {
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        let mut msg = vec![0u8; len];
        if read_timed(&mut stream, &mut msg, inner).await.is_none() {
            return;
        }
        Stats::bump(&inner.stats.tcp_queries);
        let arrivals = inner.arrivals.get().1;
        let reply = match decide_in(&msg, &*inner.dir, &inner.names, arrivals.scope(arrived)) {
            Decision::Reply(reply) => {
                Stats::bump(&inner.stats.answered_local);
                reply.message
            }
            Decision::Forward(fwd) => {
                let Ok(_permit) = inner.forwards.clone().try_acquire_owned() else {
                    Stats::bump(&inner.stats.dropped_busy);
                    return;
                };
                inner.forward(&fwd).await
            }
            Decision::Drop(reason) => {
                // Not DNS: this client gets nothing more.
                inner.stats.count_drop(reason);
                tracing::debug!(%peer, ?reason, "DNS TCP message dropped");
                return;
            }
        };
        let Some(bytes) = encode_reply(&reply, u16::MAX) else {
            Stats::bump(&inner.stats.send_errors);
            return;
        };
        let Ok(n) = u16::try_from(bytes.len()) else {
            Stats::bump(&inner.stats.send_errors);
            return;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&bytes);
        match tokio::time::timeout(IDLE_TIMEOUT, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => {
                Stats::bump(&inner.stats.send_errors);
                return;
            }
        }
    }
}
