//! The DNS server's I/O: listeners on UDP and TCP port 53 of the addresses
//! netd is told to serve (container links' host-side addresses, loopback),
//! added and removed at runtime, and the [`Stats`] counters.
//!
//! What the listeners share (directory, names, upstream, counters) is in
//! `super::shared`, so the UDP thread and this module do not import each
//! other. UDP is served by a thread per listener socket (`super::udp`): batched
//! receive and send, machine names answered from a precomputed table
//! ([`super::fast`]), everything else by the general answer logic; it sees
//! every datagram, so malformed ones are dropped *and counted*. TCP is
//! served by `super::tcp` (a task per listener, connections capped and
//! closed when idle) with the same answer logic.
//!
//! Only queries that arrive on an interface the server serves are answered:
//! the interfaces of the links whose addresses it listens on (given with
//! [`DnsServer::add_link_listener`]) and loopback (the host's own clients).
//! A host in another network that routes to a link's address reaches the
//! listener by the weak-host model; its queries are dropped and counted
//! ([`StatsSnapshot::dropped_foreign`]), never forwarded.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use tokio::sync::Semaphore;

use super::answer::{LocalNames, Zones};
use super::directory::MachineDirectory;
use super::llmnr::LlmnrListener;
use super::shared::{ArrivalSet, Arrivals, Inner};
pub use super::shared::{Stats, StatsSnapshot};
use super::tcp::{TcpListenerTask, MAX_TCP_CONNECTIONS};
use super::udp::UdpListener;
use super::upstream::{Upstream, UpstreamConfig};
use super::DnsError;

/// Forwarded queries waiting for upstream at once; more are dropped (and
/// counted) rather than piling up tasks when a client floods unique names.
/// Each holds a socket of its own while it waits (at most 5 s).
const MAX_FORWARDS_IN_FLIGHT: usize = 256;

/// Settings of a [`DnsServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Port to listen on (53; tests may pick another).
    pub port: u16,
    /// Local naming (optional domain; netd's daemon uses
    /// [`DEFAULT_DOMAIN`](super::answer::DEFAULT_DOMAIN)).
    pub names: LocalNames,
    /// Where forwarded queries go.
    pub upstream: UpstreamConfig,
    /// Whether links served get an LLMNR responder ([`super::llmnr`]).
    pub llmnr: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            port: 53,
            names: LocalNames::new(),
            upstream: UpstreamConfig::default(),
            llmnr: true,
        }
    }
}

/// One address's sockets.
struct Listener {
    /// Dropping it stops its thread and closes the socket.
    _udp: UdpListener,
    /// Dropping it aborts the accept loop and its connections.
    _tcp: TcpListenerTask,
    /// The link whose queries it serves (besides loopback's).
    ifindex: Option<u32>,
}

/// A DNS server for machine names with forwarding, serving a changing set
/// of addresses. Must be used inside a tokio runtime (with I/O and time).
pub struct DnsServer {
    inner: Arc<Inner>,
    port: u16,
    listeners: Mutex<HashMap<SocketAddr, Listener>>,
    /// LLMNR sockets, by link and family (true: IPv6), one for each link
    /// served with an address of that family.
    llmnr: Mutex<HashMap<(u32, bool), LlmnrListener>>,
    /// Links that are internal: nothing asked there goes upstream.
    internal: Mutex<HashSet<u32>>,
    /// Links whose template turns LLMNR off (`LLMNR=no`).
    no_llmnr: Mutex<HashSet<u32>>,
    /// Whether link listeners get an LLMNR responder.
    llmnr_on: bool,
}

impl DnsServer {
    /// A server with no listener yet.
    pub fn new(dir: Arc<dyn MachineDirectory>, config: DnsConfig) -> DnsServer {
        DnsServer {
            inner: Arc::new(Inner {
                dir,
                names: config.names,
                upstream: Upstream::new(config.upstream),
                stats: Stats::default(),
                forwards: Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT)),
                arrivals: Arrivals::default(),
                tcp_conns: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
                fast: Mutex::new(None),
            }),
            port: config.port,
            listeners: Mutex::new(HashMap::new()),
            llmnr: Mutex::new(HashMap::new()),
            internal: Mutex::new(HashSet::new()),
            no_llmnr: Mutex::new(HashSet::new()),
            llmnr_on: config.llmnr,
        }
    }

    /// Marks the link `ifindex` internal (or not): names that are not
    /// machines' (or the host's) are REFUSED to queries arriving there,
    /// never forwarded upstream. Set it before the link's listener is
    /// added, so that no query sees the link otherwise.
    pub fn set_link_internal(&self, ifindex: u32, internal: bool) {
        {
            let mut set = self.internal.lock().unwrap_or_else(|p| p.into_inner());
            if internal {
                set.insert(ifindex);
            } else {
                set.remove(&ifindex);
            }
        }
        let listeners = self.listeners();
        self.update_arrivals(&listeners);
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Listener>> {
        match self.listeners.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        }
    }

    /// Starts serving UDP and TCP on `addr` at the configured port, for
    /// clients on loopback only (the host's own): for a link's address use
    /// [`add_link_listener`](Self::add_link_listener). The address need not
    /// be configured yet (IP_FREEBIND): a link's address may still be
    /// tentative. Adding an address already served is a no-op. An IPv6
    /// link-local address needs its scope: use
    /// [`add_listener_scoped`](Self::add_listener_scoped).
    pub async fn add_listener(&self, addr: IpAddr) -> Result<SocketAddr, DnsError> {
        self.add_socket_addr(SocketAddr::new(addr, self.port), None)
    }

    /// As [`add_listener`](Self::add_listener), also serving the clients
    /// whose queries arrive on the link with index `ifindex`.
    pub async fn add_link_listener(
        &self,
        addr: IpAddr,
        ifindex: u32,
    ) -> Result<SocketAddr, DnsError> {
        self.add_socket_addr(SocketAddr::new(addr, self.port), Some(ifindex))
    }

    /// As [`add_link_listener`](Self::add_link_listener) for an IPv6
    /// address on the interface with index `scope_id` (link-local
    /// addresses), which is the link served.
    pub async fn add_listener_scoped(
        &self,
        addr: std::net::Ipv6Addr,
        scope_id: u32,
    ) -> Result<SocketAddr, DnsError> {
        self.add_socket_addr(
            SocketAddr::V6(std::net::SocketAddrV6::new(addr, self.port, 0, scope_id)),
            Some(scope_id),
        )
    }

    /// Tells the query paths which interfaces are served now: the
    /// listeners' links and loopback.
    fn update_arrivals(&self, listeners: &HashMap<SocketAddr, Listener>) {
        let lo = nix::net::if_::if_nametoindex("lo").unwrap_or(1);
        let mut allowed = vec![lo];
        let mut hosts: HashMap<u32, Vec<IpAddr>> = HashMap::new();
        let mut sorted: Vec<_> = listeners.iter().collect();
        sorted.sort_by_key(|(sa, _)| (sa.is_ipv6(), **sa));
        for (sa, l) in sorted {
            // `host` from the host itself is the loopback listeners'.
            let ix = l.ifindex.unwrap_or(lo);
            allowed.push(ix);
            hosts.entry(ix).or_default().push(sa.ip());
        }
        let internal = self
            .internal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        let zones = zones_of(listeners);
        self.inner
            .arrivals
            .set(ArrivalSet::new(allowed, hosts, internal, zones));
    }

    /// Turns the LLMNR responder on the link `ifindex` on (the default) or
    /// off (a template's `LLMNR=no`). Set it before the link's listener is
    /// added; turning it off stops the link's LLMNR sockets.
    pub fn set_link_llmnr(&self, ifindex: u32, on: bool) {
        let mut off = self.no_llmnr.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            off.remove(&ifindex);
        } else {
            off.insert(ifindex);
            drop(off);
            self.llmnr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(ix, _), _| *ix != ifindex);
        }
    }

    /// Starts LLMNR on the link `ifindex`: over IPv4 when `addr` (the
    /// address served there) is IPv4, and over IPv6 in any case (the group
    /// is joined by interface, and a guest's resolver asks over both where
    /// the link has IPv6 link-local addresses). A failure costs LLMNR only
    /// (DNS still serves the link); no IPv6 on the host is not a failure.
    fn start_llmnr(&self, ifindex: u32, addr: IpAddr) {
        if !self.llmnr_on || addr.is_loopback() {
            return;
        }
        if self
            .no_llmnr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ifindex)
        {
            return;
        }
        let mut llmnr = self.llmnr.lock().unwrap_or_else(|p| p.into_inner());
        if addr.is_ipv4() {
            if let Entry::Vacant(slot) = llmnr.entry((ifindex, false)) {
                match LlmnrListener::start(ifindex, addr, self.inner.clone()) {
                    Ok(l) => {
                        slot.insert(l);
                    }
                    Err(e) => tracing::warn!(ifindex, %addr, err = %e, "LLMNR over IPv4"),
                }
            }
        }
        if let Entry::Vacant(slot) = llmnr.entry((ifindex, true)) {
            let any = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
            match LlmnrListener::start(ifindex, any, self.inner.clone()) {
                Ok(l) => {
                    slot.insert(l);
                }
                Err(e) => tracing::debug!(ifindex, err = %e, "LLMNR over IPv6"),
            }
        }
    }

    /// Stops the LLMNR sockets of links no listener serves any more (over
    /// IPv4: no IPv4 listener).
    fn prune_llmnr(&self, listeners: &HashMap<SocketAddr, Listener>) {
        let mut llmnr = self.llmnr.lock().unwrap_or_else(|p| p.into_inner());
        llmnr.retain(|(ix, v6), _| {
            listeners
                .iter()
                .any(|(sa, l)| l.ifindex == Some(*ix) && (*v6 || sa.is_ipv4()))
        });
    }

    fn add_socket_addr(
        &self,
        sa: SocketAddr,
        ifindex: Option<u32>,
    ) -> Result<SocketAddr, DnsError> {
        if sa.ip().is_unspecified() {
            // A wildcard listener would answer on the host's uplink too.
            return Err(DnsError::Wildcard(sa));
        }
        let mut listeners = self.listeners();
        if let Some(l) = listeners.get_mut(&sa) {
            if ifindex.is_some() && l.ifindex != ifindex {
                // The address moved to another link.
                l.ifindex = ifindex;
                self.update_arrivals(&listeners);
                self.prune_llmnr(&listeners);
                if let Some(ix) = ifindex {
                    self.start_llmnr(ix, sa.ip());
                }
            }
            return Ok(sa);
        }
        // The UDP thread blocks in recvmmsg: a blocking socket.
        let udp = bound_socket(sa, SockType::Datagram, SockFlag::empty())?;
        let tcp = bind_tcp(sa)?;
        let udp = UdpListener::start(udp, self.inner.clone(), tokio::runtime::Handle::current())
            .map_err(|e| DnsError::Bind(sa, e))?;
        let tcp = TcpListenerTask::start(tcp, self.inner.clone());
        listeners.insert(
            sa,
            Listener {
                _udp: udp,
                _tcp: tcp,
                ifindex,
            },
        );
        self.update_arrivals(&listeners);
        self.inner
            .upstream
            .set_own_addresses(listeners.keys().map(|k| k.ip()));
        if let Some(ix) = ifindex {
            self.start_llmnr(ix, sa.ip());
        }
        tracing::debug!(%sa, "DNS listening");
        Ok(sa)
    }

    /// Stops serving `addr` (any scope). Returns whether it was served.
    pub fn remove_listener(&self, addr: IpAddr) -> bool {
        let mut listeners = self.listeners();
        let before = listeners.len();
        listeners.retain(|k, _| k.ip() != addr);
        let removed = listeners.len() != before;
        if removed {
            self.update_arrivals(&listeners);
            self.prune_llmnr(&listeners);
            self.inner
                .upstream
                .set_own_addresses(listeners.keys().map(|k| k.ip()));
            tracing::debug!(%addr, "DNS no longer listening");
        }
        removed
    }

    /// The socket addresses served now.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self.listeners().keys().copied().collect();
        v.sort();
        v
    }

    /// The counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Stops every listener.
    pub fn shutdown(&self) {
        self.listeners().clear();
        self.llmnr.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves `listen` until `shutdown` completes: the one-call form of
/// [`DnsServer`] for a fixed set of addresses.
pub async fn serve(
    listen: Vec<IpAddr>,
    dir: Arc<dyn MachineDirectory>,
    config: DnsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<StatsSnapshot, DnsError> {
    let server = DnsServer::new(dir, config);
    for addr in listen {
        server.add_listener(addr).await?;
    }
    shutdown.await;
    server.shutdown();
    Ok(server.stats())
}

/// The zones among the served links (`vz-ZONE`) with their subnets: the
/// networks of the kernel's addresses on the bridge that a listener serves.
fn zones_of(listeners: &HashMap<SocketAddr, Listener>) -> Zones {
    let mut zones = Zones::new();
    let links: Vec<(String, IpAddr)> = listeners
        .iter()
        .filter_map(|(sa, l)| {
            let name = nix::net::if_::if_indextoname(l.ifindex?).ok()?;
            let zone = name
                .to_str()
                .ok()?
                .strip_prefix("vz-")?
                .to_ascii_lowercase();
            Some((zone, sa.ip()))
        })
        .collect();
    if links.is_empty() {
        return zones;
    }
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return zones;
    };
    for ia in addrs {
        let Some(zone) = ia.interface_name.strip_prefix("vz-") else {
            continue;
        };
        let zone = zone.to_ascii_lowercase();
        let ip_of = |s: &Option<SockaddrStorage>| -> Option<IpAddr> {
            let s = s.as_ref()?;
            if let Some(v4) = s.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        };
        let (Some(ip), Some(mask)) = (ip_of(&ia.address), ip_of(&ia.netmask)) else {
            continue;
        };
        if !links.iter().any(|(z, _)| *z == zone) {
            continue;
        }
        if let Ok(net) = ipnetwork::IpNetwork::with_netmask(ip, mask) {
            if let Ok(net) = ipnetwork::IpNetwork::new(net.network(), net.prefix()) {
                zones.entry(zone).or_default().push(net);
            }
        }
    }
    zones
}

fn family(sa: &SocketAddr) -> AddressFamily {
    match sa {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A socket bound to `sa`, close-on-exec, IP_FREEBIND, with `flags`
/// (non-blocking or not).
fn bound_socket(sa: SocketAddr, ty: SockType, flags: SockFlag) -> Result<OwnedFd, DnsError> {
    let err = |e: std::io::Error| DnsError::Bind(sa, e);
    let fd = socket::socket(family(&sa), ty, SockFlag::SOCK_CLOEXEC | flags, None)
        .map_err(|e| err(e.into()))?;
    // Best effort: without it, binding only waits for the address to exist.
    let _ = socket::setsockopt(&fd, sockopt::IpFreebind, &true);
    if ty == SockType::Stream {
        // Re-adding an address must not wait for old connections' TIME_WAIT.
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| err(e.into()))?;
        // Accepted connections inherit it: it makes Linux report the
        // interface their handshake arrived on (see `super::tcp`).
        if sa.is_ipv6() {
            socket::setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)
                .map_err(|e| err(e.into()))?;
        } else {
            socket::setsockopt(&fd, sockopt::Ipv4PacketInfo, &true).map_err(|e| err(e.into()))?;
        }
    }
    if sa.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(|e| err(e.into()))?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(sa)).map_err(|e| err(e.into()))?;
    Ok(fd)
}

fn bind_tcp(sa: SocketAddr) -> Result<tokio::net::TcpListener, DnsError> {
    let fd = bound_socket(sa, SockType::Stream, SockFlag::SOCK_NONBLOCK)?;
    socket::listen(
        &fd,
        socket::Backlog::new(128).unwrap_or(socket::Backlog::MAXCONN),
    )
    .map_err(|e| DnsError::Bind(sa, e.into()))?;
    tokio::net::TcpListener::from_std(std::net::TcpListener::from(fd))
        .map_err(|e| DnsError::Bind(sa, e))
}
