//! User-space port forwards from the host's own `[::1]`.
//!
//! The kernel never routes `::1` off the loopback (IPv6 has no
//! `route_localnet`), so the DNAT that serves the host's `127.0.0.1` cannot
//! serve `::1`; netd's `output` DNAT leaves `::1` alone and this module
//! listens there instead. For each published port: a TCP listener that
//! copies every connection both ways to the machine's current address, or
//! a UDP socket that keeps one session (a connected socket towards the
//! machine) per client address, expired after [`UDP_IDLE`] without traffic,
//! at most [`MAX_UDP_SESSIONS`] per port (and [`MAX_TCP_CONNECTIONS`]
//! connections), so a local client cannot exhaust netd. The machine sees
//! these connections from the host's address on its link: a user-space
//! relay cannot keep the client's `::1`.
//!
//! [`Loopback`] owns everything of one machine's forwards: the listeners,
//! the sessions and every relayed connection live in tasks it aborts when it
//! is dropped, so nothing outlives the forward. [`Loopback::retarget`]
//! follows the machine's address as the nftables forwards do; new
//! connections go to the new address, UDP sessions are reopened.

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use netspawn_common::netd::Forward;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

/// A UDP session without traffic either way for this long is closed.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// Most UDP sessions (client addresses) one port relays at once: each
/// holds a socket and a datagram buffer, so a port costs at most about
/// 16 MiB whatever its clients do.
pub const MAX_UDP_SESSIONS: usize = 256;
/// Most TCP connections one port relays at once.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// How long a relayed TCP connection waits for the machine to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest UDP datagram relayed.
const MAX_DATAGRAM: usize = 65535;

/// Why a machine's `[::1]` forwards could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Something else listens on the port already.
    #[error("port {proto}:{port} on [::1] is already in use on the host")]
    InUse { proto: &'static str, port: u16 },
    /// Any other failure to listen.
    #[error("listening on [::1]:{port} ({proto}): {err}")]
    Bind {
        proto: &'static str,
        port: u16,
        err: io::Error,
    },
}

fn proto(f: &Forward) -> &'static str {
    if f.udp {
        "udp"
    } else {
        "tcp"
    }
}

/// One machine's `[::1]` forwards (see the module comment).
pub struct Loopback {
    target: watch::Sender<Option<IpAddr>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Loopback {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Loopback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loopback({:?})", *self.target.borrow())
    }
}

impl Loopback {
    /// Listens on `[::1]` for every forward, all or none (a socket bound
    /// before a failure is closed again). `Ok(None)` if the host has no
    /// `::1` (its loopback is down or IPv6 is off): nothing to serve there.
    /// Must run inside netd's runtime.
    pub async fn bind(forwards: &[Forward]) -> Result<Option<Loopback>, ProxyError> {
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for f in forwards {
            let at = SocketAddr::from((Ipv6Addr::LOCALHOST, f.host_port));
            let bound = if f.udp {
                UdpSocket::bind(at).await.map(|s| udp.push((s, *f)))
            } else {
                TcpListener::bind(at).await.map(|l| tcp.push((l, *f)))
            };
            if let Err(err) = bound {
                let (proto, port) = (proto(f), f.host_port);
                return match err.kind() {
                    io::ErrorKind::AddrInUse => Err(ProxyError::InUse { proto, port }),
                    io::ErrorKind::AddrNotAvailable => Ok(None),
                    _ if err.raw_os_error() == Some(nix::libc::EAFNOSUPPORT) => Ok(None),
                    _ => Err(ProxyError::Bind { proto, port, err }),
                };
            }
        }
        let (target, rx) = watch::channel(None);
        let mut tasks = Vec::new();
        for (l, f) in tcp {
            tasks.push(tokio::spawn(serve_tcp(l, f.container_port, rx.clone())));
        }
        for (s, f) in udp {
            tasks.push(tokio::spawn(serve_udp(s, f.container_port, rx.clone())));
        }
        Ok(Some(Loopback { target, tasks }))
    }

    /// Closes the forwards and waits until their sockets are closed (a
    /// drop closes them soon after, on the runtime's time).
    pub async fn close(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Where new connections go from now on: the machine's address.
    pub fn retarget(&self, addr: IpAddr) {
        self.target.send_if_modified(|t| {
            let changed = *t != Some(addr);
            *t = Some(addr);
            changed
        });
    }
}

/// Accepts on `[::1]` and relays each connection to the target's `port`.
async fn serve_tcp(listener: TcpListener, port: u16, target: watch::Receiver<Option<IpAddr>>) {
    // Dropped with this task: aborts every relayed connection.
    let mut conns = JoinSet::new();
    loop {
        let client = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                // Out of descriptors, say: do not spin.
                tracing::debug!("[::1] proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Finished relays leave the set before it is counted.
        while conns.try_join_next().is_some() {}
        let to = *target.borrow();
        match to {
            Some(addr) if conns.len() < MAX_TCP_CONNECTIONS => {
                conns.spawn(relay_tcp(client, SocketAddr::new(addr, port)));
            }
            // No address yet, or too many: the client sees the connection closed.
            _ => drop(client),
        }
    }
}

async fn relay_tcp(mut client: TcpStream, to: SocketAddr) {
    let Ok(Ok(mut machine)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await
    else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut machine).await;
}

/// What to do with a datagram from a client (see [`Sessions::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// The client has a session.
    Known,
    /// Room for a new session.
    New,
    /// Every session is busy: the datagram is dropped.
    Full,
}

/// The UDP sessions of one port, keyed by client address: when each last
/// saw traffic, and the cap. Pure (time comes in), so it is unit-tested.
#[derive(Debug)]
struct Sessions<K, V> {
    map: HashMap<K, (Instant, V)>,
    cap: usize,
    idle: Duration,
}

impl<K: Eq + Hash + Copy, V> Sessions<K, V> {
    fn new(cap: usize, idle: Duration) -> Self {
        Sessions {
            map: HashMap::new(),
            cap,
            idle,
        }
    }

    /// Whether a datagram from `client` at `now` has or may open a session;
    /// idle sessions are closed first when the table is full.
    fn admit(&mut self, client: &K, now: Instant) -> Admit {
        if self.map.contains_key(client) {
            return Admit::Known;
        }
        if self.map.len() >= self.cap {
            self.expire(now);
        }
        if self.map.len() >= self.cap {
            Admit::Full
        } else {
            Admit::New
        }
    }

    fn insert(&mut self, client: K, now: Instant, v: V) {
        self.map.insert(client, (now, v));
    }

    /// The session of `client`, marked as used at `now`.
    fn touch(&mut self, client: &K, now: Instant) -> Option<&V> {
        let (last, v) = self.map.get_mut(client)?;
        *last = now;
        Some(v)
    }

    /// Closes the sessions idle for [`Sessions::idle`] or longer.
    fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        self.map
            .retain(|_, (last, _)| now.saturating_duration_since(*last) < idle);
    }

    fn clear(&mut self) {
        self.map.clear();
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A client's session: a socket connected to the machine and the task that
/// passes its replies back (aborted with the session).
struct Session {
    sock: std::sync::Arc<UdpSocket>,
    reader: AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Session {
    async fn open(
        client: SocketAddr,
        to: SocketAddr,
        replies: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    ) -> io::Result<Session> {
        let local: SocketAddr = match to {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let sock = UdpSocket::bind(local).await?;
        sock.connect(to).await?;
        let sock = std::sync::Arc::new(sock);
        let rx = sock.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                match rx.recv(&mut buf).await {
                    Ok(n) => {
                        let data = buf.get(..n).unwrap_or_default().to_vec();
                        if replies.send((client, data)).await.is_err() {
                            return;
                        }
                    }
                    // The machine's port is closed (an ICMP error): keep waiting.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    Err(_) => return,
                }
            }
        })
        .abort_handle();
        Ok(Session { sock, reader })
    }
}

/// Relays datagrams between clients on `[::1]` and the target's `port`.
async fn serve_udp(sock: UdpSocket, port: u16, mut target: watch::Receiver<Option<IpAddr>>) {
    let (reply_tx, mut reply_rx) = mpsc::channel::<(SocketAddr, Vec<u8>)>(MAX_UDP_SESSIONS);
    let mut sessions: Sessions<SocketAddr, Session> = Sessions::new(MAX_UDP_SESSIONS, UDP_IDLE);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(UDP_IDLE / 4);
    let mut dropped: u64 = 0;
    loop {
        tokio::select! {
            got = sock.recv_from(&mut buf) => {
                let Ok((n, client)) = got else { continue };
                let Some(addr) = *target.borrow() else { continue };
                let now = Instant::now();
                match sessions.admit(&client, now) {
                    Admit::Known => {}
                    Admit::New => match Session::open(client, SocketAddr::new(addr, port), reply_tx.clone()).await {
                        Ok(s) => sessions.insert(client, now, s),
                        Err(e) => {
                            tracing::debug!("[::1] proxy: udp session to {addr}: {e}");
                            continue;
                        }
                    },
                    Admit::Full => {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!("[::1] proxy: udp port {port}: {} sessions busy, {dropped} datagram(s) dropped", sessions.len());
                        }
                        continue;
                    }
                }
                if let Some(s) = sessions.touch(&client, now) {
                    let _ = s.sock.send(buf.get(..n).unwrap_or_default()).await;
                }
            }
            Some((client, data)) = reply_rx.recv() => {
                if sessions.touch(&client, Instant::now()).is_some() {
                    let _ = sock.send_to(&data, client).await;
                }
            }
            _ = sweep.tick() => sessions.expire(Instant::now()),
            changed = target.changed() => {
                if changed.is_err() {
                    return;
                }
                // Sessions are connected to the old address.
                sessions.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_capped_and_expire_when_idle() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut s: Sessions<u16, ()> = Sessions::new(2, idle);
        assert_eq!(s.admit(&1, t0), Admit::New);
        s.insert(1, t0, ());
        assert_eq!(s.admit(&1, t0), Admit::Known);
        s.insert(2, t0 + Duration::from_secs(30), ());
        // Full, and nothing idle yet: a third client is refused.
        assert_eq!(s.admit(&3, t0 + Duration::from_secs(59)), Admit::Full);
        // Traffic keeps a session alive.
        assert!(s.touch(&1, t0 + Duration::from_secs(59)).is_some());
        assert_eq!(s.admit(&3, t0 + Duration::from_secs(89)), Admit::Full);
        // Client 2 idle for 60 s: its slot is reused.
        assert_eq!(s.admit(&3, t0 + Duration::from_secs(90)), Admit::New);
        assert_eq!(s.len(), 1);
        assert!(s.touch(&2, t0).is_none());
        s.expire(t0 + Duration::from_secs(200));
        assert_eq!(s.len(), 0);
        s.insert(4, t0, ());
        s.clear();
        assert_eq!(s.admit(&4, t0), Admit::New);
    }

    /// A TCP and a UDP forward between ephemeral loopback ports (no fixed
    /// port, nothing outside the loopback): data goes both ways, a retarget
    /// is followed, and dropping the forwards closes the listener.
    #[tokio::test(flavor = "current_thread")]
    async fn relays_tcp_and_udp_and_closes_when_dropped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(echo) = TcpListener::bind("127.0.0.1:0").await else {
            return;
        };
        let echo_port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    if let Ok(n) = c.read(&mut b).await {
                        let _ = c.write_all(&b[..n]).await;
                    }
                });
            }
        });
        let uecho = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let uecho_port = uecho.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = uecho.recv_from(&mut b).await {
                let _ = uecho.send_to(&b[..n], from).await;
            }
        });
        // Free [::1] ports: bind, note, release.
        let free = |udp: bool| async move {
            if udp {
                let s = UdpSocket::bind("[::1]:0").await.ok()?;
                s.local_addr().ok().map(|a| a.port())
            } else {
                let l = TcpListener::bind("[::1]:0").await.ok()?;
                l.local_addr().ok().map(|a| a.port())
            }
        };
        let (Some(tport), Some(uport)) = (free(false).await, free(true).await) else {
            // No ::1 where the unit tests run: t125 covers it in a namespace.
            return;
        };
        let fwds = [
            Forward {
                udp: false,
                host_port: tport,
                container_port: echo_port,
            },
            Forward {
                udp: true,
                host_port: uport,
                container_port: uecho_port,
            },
        ];
        let lo = Loopback::bind(&fwds).await.unwrap().unwrap();
        // Bound twice: the second is refused, in one line.
        let again = Loopback::bind(&fwds).await.unwrap_err();
        assert_eq!(
            again.to_string(),
            format!("port tcp:{tport} on [::1] is already in use on the host")
        );
        lo.retarget("127.0.0.1".parse().unwrap());
        let mut c = TcpStream::connect(("::1", tport)).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hello");
        let u = UdpSocket::bind("[::1]:0").await.unwrap();
        u.connect(("::1", uport)).await.unwrap();
        u.send(b"ping").await.unwrap();
        let mut b = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), u.recv(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b[..n], b"ping");
        // The machine's address changes: new connections and sessions follow.
        if let Ok(two) = TcpListener::bind(("127.0.0.2", echo_port)).await {
            let utwo = UdpSocket::bind(("127.0.0.2", uecho_port)).await.unwrap();
            tokio::spawn(async move {
                while let Ok((mut c, _)) = two.accept().await {
                    let _ = c.write_all(b"two").await;
                }
            });
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                while let Ok((_, from)) = utwo.recv_from(&mut b).await {
                    let _ = utwo.send_to(b"utwo", from).await;
                }
            });
            lo.retarget("127.0.0.2".parse().unwrap());
            let mut c = TcpStream::connect(("::1", tport)).await.unwrap();
            let mut b = [0u8; 3];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"two");
            let mut b = [0u8; 8];
            let n = loop {
                u.send(b"ping").await.unwrap();
                let r = tokio::time::timeout(Duration::from_secs(5), u.recv(&mut b)).await;
                let n = r.unwrap().unwrap();
                if &b[..n] == b"utwo" {
                    break n;
                }
            };
            assert_eq!(&b[..n], b"utwo");
        }
        lo.close().await;
        assert!(TcpStream::connect(("::1", tport)).await.is_err());
        // The same ports can be forwarded again at once.
        let lo = Loopback::bind(&fwds).await.unwrap().unwrap();
        drop(lo);
    }
}
