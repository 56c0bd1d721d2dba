//! netspawn's own small DHCPv4 client: it gets a lease for a container's
//! `host0` from the launcher, before the payload starts, and configures the
//! link with it (address, default route, resolv.conf text).
//!
//! Three layers:
//! - [`Client`], a sans-I/O state machine (INIT → SELECTING → REQUESTING →
//!   BOUND, RFC 2131 §4.4) that turns received datagrams into [`Event`]s and
//!   gives the datagrams to send. Messages are built and read with
//!   `dhcproto`; received packets are first checked by a bounds-checked
//!   option walk ([`sanitize`]) so that only the options this client reads,
//!   with valid lengths, ever reach the decoder. Nothing in here panics on
//!   input.
//! - [`acquire`], the I/O: a UDP socket made inside the container's network
//!   namespace, bound to `0.0.0.0:68` on the link, DISCOVER sent at once (no
//!   initial random delay: the link is new and private to this machine) and
//!   retransmitted with exponential backoff until the deadline.
//! - [`configure`] and [`resolv_conf`], which apply a [`Lease`].
//!
//! Replies must reach a socket on an interface that has no address yet. The
//! client sets the BOOTP broadcast flag, so servers answer to
//! 255.255.255.255, which the kernel delivers to a UDP socket bound to
//! `0.0.0.0:68` on the device. A server that ignores the flag and unicasts to
//! the offered address is not heard (the kernel drops datagrams for an
//! address it does not own; checked: with the flag cleared, dnsmasq
//! unicasts and the client times out). dnsmasq and busybox udhcpd honour
//! the flag (udhcpd broadcasts anyway while `ciaddr` is 0); netd must too.
//!
//! There is no renewal: the address is added without a lifetime and stays
//! until the container's namespace goes away. The caller asks for a lease
//! at least as long as the container may run (netd hands out long leases
//! to `host0` of plain commands).
//! Option overload (option 52, options in `sname`/`file`) is not read.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use dhcproto::v4::{
    DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, CLIENT_PORT, SERVER_PORT,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use netlink::{in_netns, Route, RouteProtocol, RouteScope, Rtnl, RtnlError};
use netspawn_common::dhcp_wire::{self, opt, OptionsEnd, Packet};
use thiserror::Error;

/// Errors of the DHCP client, each naming the interface.
#[derive(Debug, Error)]
pub enum DhcpClientError {
    #[error("DHCP on {ifname}: {what}: {err}")]
    Io {
        ifname: String,
        what: &'static str,
        err: io::Error,
    },
    #[error("DHCP on {ifname}: no lease within {timeout:?} ({why})")]
    Timeout {
        ifname: String,
        timeout: Duration,
        why: &'static str,
    },
    #[error("configure {ifname} from DHCP: network interface does not exist")]
    NoLink { ifname: String },
    #[error("configure {ifname} from DHCP: {err}")]
    Rtnl { ifname: String, err: RtnlError },
}

/// What a server gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    /// DNS servers, in the server's order.
    pub dns: Vec<Ipv4Addr>,
    /// The domain name (option 15), only if it is a plausible DNS name
    /// (it is written into resolv.conf).
    pub domain: Option<String>,
    /// Lease time; `u32::MAX` seconds when infinite or not given.
    pub lease_time: Duration,
    /// The server identifier of the server that acknowledged.
    pub server: Ipv4Addr,
}

/// What a received packet means to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An offer was accepted: send this REQUEST.
    SendRequest(Vec<u8>),
    /// The server acknowledged: the lease is ours.
    Bound(Lease),
    /// The server refused our REQUEST; the client is back in INIT (with a
    /// new transaction id): call [`Client::discover`] again.
    Nak,
    /// Not for us, not expected now, or malformed.
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Init,
    Selecting {
        discover: Vec<u8>,
    },
    Requesting {
        server: Ipv4Addr,
        address: Ipv4Addr,
        request: Vec<u8>,
        sent: u32,
    },
    Bound,
}

/// REQUESTs sent for one offer before the client gives up on that server
/// and starts over with a DISCOVER (RFC 2131 §4.4.1 leaves the number open).
const MAX_REQUESTS: u32 = 4;

/// BOOTP's minimum message size; some servers and relays drop shorter ones.
const MIN_MESSAGE: usize = 300;

/// The parameters every message asks for.
const REQUESTED: [OptionCode; 5] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::AddressLeaseTime,
];

/// The DHCPv4 client state machine, without I/O.
#[derive(Debug, Clone)]
pub struct Client {
    mac: [u8; 6],
    xid: u32,
    hostname: Option<String>,
    /// An address to ask for in DISCOVER (option 50), as CNI's `ips` asks.
    requested: Option<Ipv4Addr>,
    /// Ask for rapid commit (RFC 4039, option 80) in DISCOVER, and take an
    /// ACK that carries it as the answer.
    rapid_commit: bool,
    state: State,
}

impl Client {
    /// A client for the link with hardware address `mac`; `xid` is the first
    /// transaction id (pick it at random); `hostname` is sent as option 12.
    pub fn new(mac: [u8; 6], xid: u32, hostname: Option<String>) -> Client {
        Client {
            mac,
            xid,
            hostname: hostname.filter(|h| !h.is_empty()),
            requested: None,
            rapid_commit: false,
            state: State::Init,
        }
    }

    /// Asks for rapid commit (RFC 4039): a server that does it answers the
    /// DISCOVER with an ACK, in one exchange instead of two. Only for a link
    /// whose one server is known (netd's): with several servers each could
    /// bind an address for us.
    pub fn rapid_commit(mut self, on: bool) -> Client {
        self.rapid_commit = on;
        self
    }

    /// Asks for `addr` in every DISCOVER (the server may give another).
    pub fn requesting(mut self, addr: Option<Ipv4Addr>) -> Client {
        self.requested = addr;
        self
    }

    /// The current transaction id.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// True once an ACK was accepted.
    pub fn is_bound(&self) -> bool {
        self.state == State::Bound
    }

    /// True while the client waits for the answer to a REQUEST (an offer was
    /// seen).
    pub fn is_requesting(&self) -> bool {
        matches!(self.state, State::Requesting { .. })
    }

    /// (Re)starts the exchange: returns the DISCOVER to broadcast.
    pub fn discover(&mut self) -> Vec<u8> {
        let mut msg = self.message(MessageType::Discover);
        self.add_common_options(&mut msg);
        if let Some(a) = self.requested {
            msg.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
        }
        if self.rapid_commit {
            msg.opts_mut().insert(DhcpOption::RapidCommit);
        }
        let discover = encode(&msg);
        self.state = State::Selecting {
            discover: discover.clone(),
        };
        discover
    }

    /// The retransmission timer fired: returns what to send again. After
    /// [`MAX_REQUESTS`] unanswered REQUESTs the client starts over with a
    /// new DISCOVER and a new transaction id.
    pub fn retransmit(&mut self) -> Vec<u8> {
        match &mut self.state {
            State::Selecting { discover } => discover.clone(),
            State::Requesting { request, sent, .. } if *sent < MAX_REQUESTS => {
                *sent += 1;
                request.clone()
            }
            State::Requesting { .. } => {
                self.xid = self.xid.wrapping_add(1);
                self.discover()
            }
            State::Init | State::Bound => self.discover(),
        }
    }

    /// Feeds one received datagram (the UDP payload) to the client.
    pub fn handle(&mut self, packet: &[u8]) -> Event {
        let Some(msg) = sanitize(packet).and_then(|p| Message::decode(&mut Decoder::new(&p)).ok())
        else {
            return Event::Ignore;
        };
        if msg.opcode() != Opcode::BootReply
            || msg.xid() != self.xid
            || msg.htype() != HType::Eth
            || msg.chaddr().get(..6) != Some(&self.mac[..])
        {
            return Event::Ignore;
        }
        let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
            _ => None,
        };
        match (msg.opts().msg_type(), &self.state) {
            (Some(MessageType::Offer), State::Selecting { .. }) => {
                let address = msg.yiaddr();
                let Some(server) = server_id else {
                    return Event::Ignore;
                };
                if !assignable(address) {
                    return Event::Ignore;
                }
                let mut req = self.message(MessageType::Request);
                req.opts_mut().insert(DhcpOption::ServerIdentifier(server));
                req.opts_mut()
                    .insert(DhcpOption::RequestedIpAddress(address));
                self.add_common_options(&mut req);
                let request = encode(&req);
                self.state = State::Requesting {
                    server,
                    address,
                    request: request.clone(),
                    sent: 1,
                };
                Event::SendRequest(request)
            }
            (Some(MessageType::Ack), state) => {
                let server = match state {
                    State::Requesting { server, .. } if server_id.is_none_or(|s| s == *server) => {
                        *server
                    }
                    // A rapid commit (RFC 4039): the ACK answers the DISCOVER.
                    State::Selecting { .. }
                        if self.rapid_commit
                            && msg.opts().get(OptionCode::RapidCommit).is_some() =>
                    {
                        match server_id {
                            Some(s) => s,
                            None => return Event::Ignore,
                        }
                    }
                    _ => return Event::Ignore,
                };
                match lease_from(&msg, server) {
                    Some(lease) => {
                        self.state = State::Bound;
                        Event::Bound(lease)
                    }
                    None => Event::Ignore,
                }
            }
            (Some(MessageType::Nak), State::Requesting { server, .. }) => {
                if server_id.is_some_and(|s| s != *server) {
                    return Event::Ignore;
                }
                // A new transaction, so late answers to the old one are ignored.
                self.xid = self.xid.wrapping_add(1);
                self.state = State::Init;
                Event::Nak
            }
            _ => Event::Ignore,
        }
    }

    fn message(&self, kind: MessageType) -> Message {
        let mut msg = Message::new_with_id(
            self.xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac,
        );
        // The link has no address yet: ask servers to answer by broadcast.
        msg.set_flags(Flags::default().set_broadcast());
        msg.opts_mut().insert(DhcpOption::MessageType(kind));
        msg
    }

    fn add_common_options(&self, msg: &mut Message) {
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        msg.opts_mut()
            .insert(DhcpOption::ClientIdentifier(client_id));
        msg.opts_mut()
            .insert(DhcpOption::ParameterRequestList(REQUESTED.to_vec()));
        if let Some(h) = &self.hostname {
            msg.opts_mut().insert(DhcpOption::Hostname(h.clone()));
        }
    }
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MIN_MESSAGE);
    // Writing into a Vec cannot fail; an error would leave a short buffer
    // that the server drops, which the retransmission logic survives.
    let _ = msg.encode(&mut Encoder::new(&mut buf));
    if buf.len() < MIN_MESSAGE {
        buf.resize(MIN_MESSAGE, 0);
    }
    buf
}

/// An address a server may hand out to us.
fn assignable(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

/// The options this client reads. Everything else is dropped before the
/// decoder sees it (some `dhcproto` decoders assert on lengths).
const KEPT: [u8; 8] = [
    opt::SUBNET_MASK,
    opt::ROUTER,
    opt::DNS_SERVERS,
    opt::DOMAIN_NAME,
    opt::LEASE_TIME,
    opt::MESSAGE_TYPE,
    opt::SERVER_ID,
    opt::RAPID_COMMIT,
];

/// Checks a received packet with the checked wire view ([`dhcp_wire`]: header
/// length, `hlen`, magic cookie, a bounds-checked option walk that must reach
/// END) and rebuilds it with only the [`KEPT`] options, concatenated as RFC
/// 3396 says and checked for length. `None` for anything truncated or malformed.
pub fn sanitize(packet: &[u8]) -> Option<Vec<u8>> {
    let packet = Packet::new_dhcp(packet).ok()?;
    let joined = packet.join_options(|code| KEPT.contains(&code));
    if joined.end != OptionsEnd::End {
        return None;
    }
    let mut kept = Vec::with_capacity(joined.options.len());
    for (code, data) in &joined.options {
        let ok = match *code {
            opt::SUBNET_MASK | opt::LEASE_TIME | opt::SERVER_ID => data.len() == 4,
            opt::MESSAGE_TYPE => data.len() == 1,
            opt::RAPID_COMMIT => data.is_empty(),
            opt::ROUTER | opt::DNS_SERVERS => !data.is_empty() && data.len() % 4 == 0,
            opt::DOMAIN_NAME => std::str::from_utf8(data).is_ok(),
            _ => false,
        };
        if !ok {
            // A domain name that is not text, or a rapid commit with data
            // (dhcproto's decoder asserts on it), is dropped alone; anything
            // else malformed makes the whole packet untrustworthy.
            if *code == opt::DOMAIN_NAME || *code == opt::RAPID_COMMIT {
                continue;
            }
            return None;
        }
        kept.push((*code, &data[..]));
    }
    Some(dhcp_wire::rebuild(packet.header(), kept))
}

/// The prefix length of a contiguous netmask.
fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = mask.to_bits();
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The classful prefix, for a server that sends no subnet mask.
fn classful(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// A domain name fit to be written into resolv.conf: DNS name characters
/// only (no spaces or newlines a hostile server could inject lines with).
fn clean_domain(s: &str) -> Option<String> {
    let d = s.trim_end_matches('\0').trim_end_matches('.');
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !d.starts_with('.')
        && !d.contains("..");
    ok.then(|| d.to_string())
}

fn lease_from(msg: &Message, server: Ipv4Addr) -> Option<Lease> {
    let address = msg.yiaddr();
    if !assignable(address) {
        return None;
    }
    let opts = msg.opts();
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => prefix_of(*m)?,
        _ => classful(address),
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.iter().copied().find(|r| assignable(*r)),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => {
            d.iter().copied().filter(|a| assignable(*a)).collect()
        }
        _ => Vec::new(),
    };
    let domain = match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) => clean_domain(d),
        _ => None,
    };
    let lease_time = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => Duration::from_secs(u64::from(*t)),
        _ => Duration::from_secs(u64::from(u32::MAX)),
    };
    Some(Lease {
        address,
        prefix_len,
        router,
        dns,
        domain,
        lease_time,
        server,
    })
}

/// First retransmission interval; doubled after each, up to [`MAX_INTERVAL`].
const FIRST_INTERVAL: Duration = Duration::from_millis(200);
const MAX_INTERVAL: Duration = Duration::from_secs(4);

/// Who answers DHCP on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// netd, the one server there: rapid commit is asked for.
    Netd,
    /// Whatever server the link has (a LAN): the four-message exchange.
    Any,
}

/// Gets a lease for `ifname` (which must be up) in the network namespace
/// `netns`, within `timeout`. The calling thread enters `netns` only to
/// create the socket. `hostname` goes out as option 12 (empty: none).
pub fn acquire(
    netns: BorrowedFd<'_>,
    ifname: &str,
    mac: [u8; 6],
    hostname: &str,
    server: Server,
    timeout: Duration,
) -> Result<Lease, DhcpClientError> {
    acquire_requesting(netns, ifname, mac, hostname, None, server, timeout)
}

/// [`acquire`], asking for the address `requested` (the server decides).
pub fn acquire_requesting(
    netns: BorrowedFd<'_>,
    ifname: &str,
    mac: [u8; 6],
    hostname: &str,
    requested: Option<Ipv4Addr>,
    server: Server,
    timeout: Duration,
) -> Result<Lease, DhcpClientError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let io_err = |what: &'static str| {
        move |err: io::Error| DhcpClientError::Io {
            ifname: ifname.to_string(),
            what,
            err,
        }
    };
    let sock = socket_in(netns, ifname).map_err(io_err("open socket"))?;
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
    let mut client = Client::new(mac, random_xid(), Some(hostname.to_string()))
        .requesting(requested)
        .rapid_commit(server == Server::Netd);
    let mut buf = vec![0u8; 65536];
    let mut interval = FIRST_INTERVAL;
    let mut naks = 0u32;
    let mut offered = false;

    let send = |pkt: &[u8]| -> Result<(), DhcpClientError> {
        match sock.send_to(pkt, to) {
            Ok(_) => Ok(()),
            // The link may still be coming up (carrier); the next
            // retransmission tries again.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENETDOWN | libc::ENETUNREACH)) => {
                Ok(())
            }
            Err(e) => Err(io_err("send")(e)),
        }
    };

    send(&client.discover())?;
    let mut next_send = Instant::now() + interval;
    loop {
        let now = Instant::now();
        if now >= deadline {
            let why = if naks > 0 {
                "the server refused every request"
            } else if offered {
                "a server offered an address but never acknowledged it"
            } else {
                "no DHCP server answered"
            };
            return Err(DhcpClientError::Timeout {
                ifname: ifname.to_string(),
                timeout,
                why,
            });
        }
        if now >= next_send {
            send(&client.retransmit())?;
            interval = (interval * 2).min(MAX_INTERVAL);
            next_send = now + interval;
            continue;
        }
        let wait = next_send.min(deadline) - now;
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(io_err("set receive timeout"))?;
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(io_err("receive")(e)),
        };
        match client.handle(buf.get(..n).unwrap_or(&[])) {
            Event::SendRequest(req) => {
                offered = true;
                send(&req)?;
                interval = FIRST_INTERVAL;
                next_send = Instant::now() + interval;
            }
            Event::Bound(lease) => {
                tracing::debug!(
                    "DHCP on {ifname}: {}/{} from {} in {:?}",
                    lease.address,
                    lease.prefix_len,
                    lease.server,
                    start.elapsed()
                );
                return Ok(lease);
            }
            Event::Nak => {
                naks += 1;
                tracing::debug!("DHCP on {ifname}: NAK from server, starting over");
                // Start over at once the first time; after that, wait, so a
                // server that refuses everything is not flooded.
                if naks == 1 {
                    send(&client.discover())?;
                    interval = FIRST_INTERVAL;
                } else {
                    client.discover();
                }
                next_send = Instant::now() + interval;
            }
            Event::Ignore => {}
        }
    }
}

/// A rapid-commit exchange that does not cross the link: `exchange` hands
/// our DISCOVER to the server some other way (netd's control socket, for a
/// link netd serves) and returns its answer. The lease, when the answer is
/// an ACK of it; None for anything else (the caller asks on the link).
pub fn rapid_commit_via(
    mac: [u8; 6],
    hostname: &str,
    exchange: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>,
) -> Option<Lease> {
    let mut client = Client::new(mac, random_xid(), Some(hostname.to_string())).rapid_commit(true);
    let answer = exchange(client.discover())?;
    match client.handle(&answer) {
        Event::Bound(lease) => Some(lease),
        _ => None,
    }
}

fn random_xid() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == 4 {
        return u32::from_ne_bytes(b);
    }
    // No entropy yet: the xid only has to differ from other clients on the
    // link, which time and pid give well enough.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

/// Creates the client's UDP socket inside `netns` (the calling thread
/// enters it only for `socket(2)`), bound to `0.0.0.0:68` on `ifname`.
fn socket_in(netns: BorrowedFd<'_>, ifname: &str) -> io::Result<UdpSocket> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockProtocol, SockType,
        SockaddrIn,
    };
    let made = in_netns(netns, || {
        socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Udp,
        )
    })
    .map_err(|e| match e.errno() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(e),
    })?;
    let fd = made.map_err(io::Error::from)?;

    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io::Error::from)?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(io::Error::from)?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )
    .map_err(io::Error::from)?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, CLIENT_PORT)).map_err(io::Error::from)?;
    Ok(UdpSocket::from(fd))
}

/// Applies `lease` to `ifname` through `inside` (a netlink socket in the
/// container's namespace): the address with its prefix, then the default
/// route via the router (with a link route to the router first when it is
/// outside the subnet). Already present is fine, so a retry is harmless.
pub fn configure(
    inside: &mut dyn Rtnl,
    ifname: &str,
    lease: &Lease,
) -> Result<(), DhcpClientError> {
    let rtnl_err = |err: RtnlError| DhcpClientError::Rtnl {
        ifname: ifname.to_string(),
        err,
    };
    let index = inside
        .link(ifname)
        .map_err(rtnl_err)?
        .ok_or_else(|| DhcpClientError::NoLink {
            ifname: ifname.to_string(),
        })?
        .index;
    let exists_ok = |r: Result<(), RtnlError>| match r {
        Err(e) if e.is_exists() => Ok(()),
        r => r.map_err(rtnl_err),
    };

    exists_ok(inside.add_address(index, lease.address.into(), lease.prefix_len))?;

    let Some(router) = lease.router else {
        return Ok(());
    };
    if !in_subnet(router, lease.address, lease.prefix_len) {
        exists_ok(inside.add_route(&Route {
            oif: Some(index),
            scope: RouteScope::Link,
            protocol: RouteProtocol::Dhcp,
            ..Route::to(router.into(), 32)
        }))?;
    }
    exists_ok(inside.add_default_route(
        index,
        router.into(),
        Some(lease.address.into()),
        RouteProtocol::Dhcp,
    ))
}

fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    a.to_bits() & mask == net.to_bits() & mask
}

/// The resolv.conf text for `lease`: its DNS servers (the first three; the
/// resolver reads no more) and its domain as search domain.
pub fn resolv_conf(lease: &Lease) -> String {
    let mut s = format!(
        "# Written by netspawn from the DHCP lease of DHCP server {}.\n",
        lease.server
    );
    for ns in lease.dns.iter().take(3) {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    if let Some(d) = &lease.domain {
        s.push_str(&format!("search {d}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use netspawn_common::dhcp_wire::{field, HEADER_LEN};

    use super::*;

    const MAC: [u8; 6] = [0x0e, 0x11, 0x22, 0x33, 0x44, 0x55];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const OFFERED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 23);

    fn lease(router: Ipv4Addr) -> Lease {
        Lease {
            address: OFFERED,
            prefix_len: 24,
            router: Some(router),
            dns: vec![],
            domain: None,
            lease_time: Duration::from_secs(3600),
            server: SERVER,
        }
    }

    #[test]
    fn configure_sets_address_and_default_route_and_may_be_repeated() {
        use netlink::fake::FakeRtnl;
        use netlink::Family;
        let mut f = FakeRtnl::with_links(&[("lo", None), ("host0", Some("veth"))]);
        let host0 = f.link("host0").unwrap().unwrap().index;
        configure(&mut f, "host0", &lease(SERVER)).unwrap();
        configure(&mut f, "host0", &lease(SERVER)).unwrap();
        assert_eq!(f.link_addresses(host0).unwrap().len(), 1);
        let d: Vec<_> = f
            .routes(Family::V4)
            .unwrap()
            .into_iter()
            .filter(|r| r.is_default())
            .collect();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].gateway, Some(SERVER.into()));
        assert_eq!(d[0].source, Some(OFFERED.into()));
        assert_eq!(d[0].protocol, RouteProtocol::Dhcp);

        // A router outside the subnet gets a link route first.
        let mut f = FakeRtnl::with_links(&[("host0", Some("veth"))]);
        let host0 = f.link("host0").unwrap().unwrap().index;
        let far = Ipv4Addr::new(192, 0, 2, 1);
        configure(&mut f, "host0", &lease(far)).unwrap();
        configure(&mut f, "host0", &lease(far)).unwrap();
        assert!(f
            .routes
            .iter()
            .any(|r| r.prefix_len == 32 && r.destination == far && r.scope == RouteScope::Link));
        assert_eq!(f.default_route_links().unwrap(), vec![host0]);

        let mut f = FakeRtnl::with_links(&[("lo", None)]);
        assert!(matches!(
            configure(&mut f, "host0", &lease(SERVER)),
            Err(DhcpClientError::NoLink { .. })
        ));
    }

    fn decode(p: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(p)).expect("decodes")
    }

    /// A server reply as dnsmasq would build it.
    fn reply(xid: u32, kind: MessageType, mac: &[u8]) -> Message {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            OFFERED,
            SERVER,
            Ipv4Addr::UNSPECIFIED,
            mac,
        );
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(SERVER));
        if kind != MessageType::Nak {
            o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
            o.insert(DhcpOption::Router(vec![SERVER]));
            o.insert(DhcpOption::DomainNameServer(vec![
                SERVER,
                Ipv4Addr::new(10, 77, 0, 2),
            ]));
            o.insert(DhcpOption::DomainName("zone.example".into()));
            o.insert(DhcpOption::AddressLeaseTime(3600));
        }
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).expect("encodes");
        b
    }

    fn selecting() -> Client {
        let mut c = Client::new(MAC, 0x1234_5678, Some("web".into()));
        c.discover();
        c
    }

    fn requesting() -> Client {
        let mut c = selecting();
        let ev = c.handle(&bytes(&reply(0x1234_5678, MessageType::Offer, &MAC)));
        assert!(matches!(ev, Event::SendRequest(_)));
        c
    }

    #[test]
    fn discover_asks_by_broadcast_with_hostname() {
        let mut c = Client::new(MAC, 7, Some("web".into()));
        let p = c.discover();
        assert!(p.len() >= MIN_MESSAGE);
        let m = decode(&p);
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 7);
        assert!(m.flags().broadcast());
        assert_eq!(&m.chaddr()[..6], &MAC);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            m.opts().get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("web".into()))
        );
        let Some(DhcpOption::ParameterRequestList(prl)) =
            m.opts().get(OptionCode::ParameterRequestList)
        else {
            panic!("no parameter request list");
        };
        for code in REQUESTED {
            assert!(prl.contains(&code), "{code:?} not requested");
        }
    }

    #[test]
    fn offer_gives_request_for_that_server_and_address() {
        let mut c = selecting();
        let Event::SendRequest(p) = c.handle(&bytes(&reply(0x1234_5678, MessageType::Offer, &MAC)))
        else {
            panic!("no request");
        };
        let m = decode(&p);
        assert_eq!(m.xid(), 0x1234_5678);
        assert!(m.flags().broadcast());
        assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            m.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(OFFERED))
        );
        assert!(c.is_requesting());
    }

    #[test]
    fn ack_binds_with_full_lease() {
        let mut c = requesting();
        let ev = c.handle(&bytes(&reply(0x1234_5678, MessageType::Ack, &MAC)));
        assert_eq!(
            ev,
            Event::Bound(Lease {
                address: OFFERED,
                prefix_len: 24,
                router: Some(SERVER),
                dns: vec![SERVER, Ipv4Addr::new(10, 77, 0, 2)],
                domain: Some("zone.example".into()),
                lease_time: Duration::from_secs(3600),
                server: SERVER,
            })
        );
        assert!(c.is_bound());
        // Nothing moves a bound client.
        assert_eq!(
            c.handle(&bytes(&reply(0x1234_5678, MessageType::Nak, &MAC))),
            Event::Ignore
        );
    }

    #[test]
    fn a_rapid_commit_ack_binds_a_client_that_asked_for_it() {
        let mut plain = Client::new(MAC, 0x1234_5678, None);
        assert!(decode(&plain.discover())
            .opts()
            .get(OptionCode::RapidCommit)
            .is_none());
        let mut c = Client::new(MAC, 0x1234_5678, None).rapid_commit(true);
        let d = decode(&c.discover());
        assert_eq!(
            d.opts().get(OptionCode::RapidCommit),
            Some(&DhcpOption::RapidCommit)
        );
        let mut ack = reply(0x1234_5678, MessageType::Ack, &MAC);
        // An ACK without option 80 is no answer to a DISCOVER.
        assert_eq!(c.handle(&bytes(&ack)), Event::Ignore);
        assert!(!c.is_bound());
        ack.opts_mut().insert(DhcpOption::RapidCommit);
        // A client that did not ask takes no rapid ACK.
        assert_eq!(plain.handle(&bytes(&ack)), Event::Ignore);
        let Event::Bound(lease) = c.handle(&bytes(&ack)) else {
            panic!("not bound");
        };
        assert_eq!((lease.address, lease.server), (OFFERED, SERVER));
        assert!(c.is_bound());
        // A server doing the four-message exchange is still answered.
        let mut c = Client::new(MAC, 0x1234_5678, None).rapid_commit(true);
        c.discover();
        let ev = c.handle(&bytes(&reply(0x1234_5678, MessageType::Offer, &MAC)));
        assert!(matches!(ev, Event::SendRequest(_)));
        let ev = c.handle(&bytes(&reply(0x1234_5678, MessageType::Ack, &MAC)));
        assert!(matches!(ev, Event::Bound(_)));
    }

    #[test]
    fn rapid_commit_via_takes_only_an_ack_of_its_own_discover() {
        let ack_of = |kind: MessageType, rapid: bool| {
            move |discover: Vec<u8>| {
                let d = decode(&discover);
                assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
                assert!(d.opts().get(OptionCode::RapidCommit).is_some());
                assert_eq!(
                    d.opts().get(OptionCode::Hostname),
                    Some(&DhcpOption::Hostname("web".into()))
                );
                let mut m = reply(d.xid(), kind, &MAC);
                if rapid {
                    m.opts_mut().insert(DhcpOption::RapidCommit);
                }
                Some(bytes(&m))
            }
        };
        let lease = rapid_commit_via(MAC, "web", ack_of(MessageType::Ack, true)).expect("bound");
        assert_eq!((lease.address, lease.prefix_len), (OFFERED, 24));
        assert_eq!(lease.router, Some(SERVER));
        // An offer (the server could not bind at once), an ACK without
        // option 80, another transaction or no answer: asked on the link.
        assert!(rapid_commit_via(MAC, "web", ack_of(MessageType::Offer, false)).is_none());
        assert!(rapid_commit_via(MAC, "web", ack_of(MessageType::Ack, false)).is_none());
        assert!(rapid_commit_via(MAC, "web", |_| Some(bytes(&{
            let mut m = reply(1, MessageType::Ack, &MAC);
            m.opts_mut().insert(DhcpOption::RapidCommit);
            m
        })))
        .is_none());
        assert!(rapid_commit_via(MAC, "web", |_| None).is_none());
    }

    #[test]
    fn other_transactions_and_machines_are_ignored() {
        let mut c = selecting();
        let wrong_xid = bytes(&reply(0x1234_5679, MessageType::Offer, &MAC));
        assert_eq!(c.handle(&wrong_xid), Event::Ignore);
        let other_mac = bytes(&reply(0x1234_5678, MessageType::Offer, &[2, 0, 0, 0, 0, 1]));
        assert_eq!(c.handle(&other_mac), Event::Ignore);
        // A request (ours, looped back, or another client's) is not a reply.
        let mut req = reply(0x1234_5678, MessageType::Offer, &MAC);
        req.set_opcode(Opcode::BootRequest);
        assert_eq!(c.handle(&bytes(&req)), Event::Ignore);
        assert!(!c.is_requesting());
    }

    #[test]
    fn unexpected_messages_are_ignored() {
        // An ACK before we asked for anything.
        let mut c = selecting();
        assert_eq!(
            c.handle(&bytes(&reply(0x1234_5678, MessageType::Ack, &MAC))),
            Event::Ignore
        );
        // A second offer while requesting the first.
        let mut c = requesting();
        assert_eq!(
            c.handle(&bytes(&reply(0x1234_5678, MessageType::Offer, &MAC))),
            Event::Ignore
        );
        // An ACK from another server.
        let mut ack = reply(0x1234_5678, MessageType::Ack, &MAC);
        ack.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 9)));
        assert_eq!(c.handle(&bytes(&ack)), Event::Ignore);
        // An offer without server identifier, or of an unusable address.
        let mut c = selecting();
        let mut o = reply(0x1234_5678, MessageType::Offer, &MAC);
        o.opts_mut().remove(OptionCode::ServerIdentifier);
        assert_eq!(c.handle(&bytes(&o)), Event::Ignore);
        let mut o = reply(0x1234_5678, MessageType::Offer, &MAC);
        o.set_yiaddr(Ipv4Addr::BROADCAST);
        assert_eq!(c.handle(&bytes(&o)), Event::Ignore);
    }

    #[test]
    fn nak_restarts_with_new_transaction() {
        let mut c = requesting();
        assert_eq!(
            c.handle(&bytes(&reply(0x1234_5678, MessageType::Nak, &MAC))),
            Event::Nak
        );
        assert_ne!(c.xid(), 0x1234_5678);
        // The old transaction's late ACK does not bind.
        assert_eq!(
            c.handle(&bytes(&reply(0x1234_5678, MessageType::Ack, &MAC))),
            Event::Ignore
        );
        let d = decode(&c.discover());
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(d.xid(), c.xid());
        let ev = c.handle(&bytes(&reply(c.xid(), MessageType::Offer, &MAC)));
        assert!(matches!(ev, Event::SendRequest(_)));
    }

    #[test]
    fn nak_in_selecting_is_ignored() {
        let mut c = selecting();
        assert_eq!(
            c.handle(&bytes(&reply(0x1234_5678, MessageType::Nak, &MAC))),
            Event::Ignore
        );
    }

    #[test]
    fn unanswered_requests_fall_back_to_discover() {
        let mut c = requesting();
        for _ in 1..MAX_REQUESTS {
            let m = decode(&c.retransmit());
            assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
        }
        let m = decode(&c.retransmit());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_ne!(m.xid(), 0x1234_5678);
        // Selecting retransmits the same DISCOVER.
        assert_eq!(decode(&c.retransmit()), m);
    }

    #[test]
    fn truncated_and_garbage_packets_are_ignored() {
        let good = bytes(&reply(0x1234_5678, MessageType::Offer, &MAC));
        for n in 0..good.len() {
            let mut c = selecting();
            // Every prefix loses the End option, so none is accepted.
            assert_eq!(c.handle(&good[..n]), Event::Ignore, "prefix {n}");
        }
        let mut c = selecting();
        assert_eq!(c.handle(&[0xff; 600]), Event::Ignore);
        let mut bad_magic = good.clone();
        bad_magic[field::MAGIC.start] ^= 1;
        assert_eq!(c.handle(&bad_magic), Event::Ignore);
    }

    /// dhcproto slices `chaddr` by `hlen`: a reply claiming more than 16
    /// bytes is refused by the wire view before it reaches the decoder.
    #[test]
    fn hardware_length_beyond_chaddr_is_ignored() {
        for hlen in [17u8, 200, 255] {
            let mut p = bytes(&reply(0x1234_5678, MessageType::Offer, &MAC));
            p[field::HLEN] = hlen;
            assert_eq!(sanitize(&p), None, "hlen {hlen}");
            assert_eq!(selecting().handle(&p), Event::Ignore, "hlen {hlen}");
        }
    }

    /// Builds a reply by hand, to send what dhcproto would not encode.
    fn raw_offer(options: &[u8]) -> Vec<u8> {
        let mut p = bytes(&reply(0x1234_5678, MessageType::Offer, &MAC));
        p.truncate(HEADER_LEN);
        p.extend_from_slice(options);
        p
    }

    #[test]
    fn malformed_options_are_ignored_without_panic() {
        let sid = [54, 4, 10, 77, 0, 1];
        let cases: Vec<Vec<u8>> = vec![
            // Subnet mask of 3 bytes.
            [&[53, 1, 2, 1, 3, 255, 255, 255][..], &sid, &[255]].concat(),
            // Message type of 0 bytes.
            [&[53, 0][..], &sid, &[255]].concat(),
            // Option length beyond the end.
            [&[53, 1, 2][..], &sid, &[6, 200, 1, 2, 255]].concat(),
            // Routers not a multiple of 4.
            [&[53, 1, 2, 3, 5, 1, 2, 3, 4, 5][..], &sid, &[255]].concat(),
        ];
        for opts in cases {
            let mut c = selecting();
            assert_eq!(c.handle(&raw_offer(&opts)), Event::Ignore, "{opts:?}");
        }
        // Options dhcproto's decoder asserts on (client FQDN of length 0,
        // rapid commit with data) are dropped before it sees them.
        let opts = [&[81, 0, 80, 2, 1, 2, 53, 1, 2][..], &sid, &[255]].concat();
        let mut c = selecting();
        assert!(matches!(c.handle(&raw_offer(&opts)), Event::SendRequest(_)));
    }

    /// Mutated replies (bytes flipped, options cut, lengths changed) in
    /// every state: never a panic, and nothing accepted that binds to an
    /// unusable address.
    #[test]
    fn mutated_packets_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = [
            bytes(&reply(0x1234_5678, MessageType::Offer, &MAC)),
            bytes(&reply(0x1234_5678, MessageType::Ack, &MAC)),
            bytes(&reply(0x1234_5678, MessageType::Nak, &MAC)),
        ];
        for i in 0..10_000 {
            let mut p = base[i % 3].clone();
            for _ in 0..(rnd() % 8 + 1) {
                let at = HEADER_LEN + (rnd() as usize % (p.len() - HEADER_LEN));
                match rnd() % 4 {
                    0 => p[at] = rnd() as u8,
                    1 => p.truncate(at),
                    2 => p.insert(at, rnd() as u8),
                    _ => p[at] ^= 1 << (rnd() % 8),
                }
                if p.len() <= HEADER_LEN {
                    break;
                }
            }
            let mut c = if i % 2 == 0 {
                selecting()
            } else {
                requesting()
            };
            if let Event::Bound(l) = c.handle(&p) {
                assert!(assignable(l.address) && l.prefix_len <= 32);
            }
        }
    }

    #[test]
    fn split_options_are_joined_and_hostile_domains_dropped() {
        let mut c = requesting();
        let p = raw_offer(&[
            53, 1, 5, // ACK
            54, 4, 10, 77, 0, 1, //
            6, 2, 10, 77, // first half of a DNS server (RFC 3396)
            1, 4, 255, 255, 0, 0, //
            6, 2, 0, 53, // second half
            15, 14, b'e', b'v', b'i', b'l', b'\n', b'o', b'p', b't', b'i', b'o', b'n', b's', b' ',
            b'x', 255,
        ]);
        let Event::Bound(l) = c.handle(&p) else {
            panic!("not bound");
        };
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 77, 0, 53)]);
        assert_eq!(l.prefix_len, 16);
        assert_eq!(l.domain, None);
        assert_eq!(l.router, None);
        assert_eq!(l.lease_time, Duration::from_secs(u64::from(u32::MAX)));
    }

    #[test]
    fn netmasks_and_subnets() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 240)), Some(28));
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_of(Ipv4Addr::BROADCAST), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(classful(Ipv4Addr::new(10, 1, 2, 3)), 8);
        assert_eq!(classful(Ipv4Addr::new(172, 16, 0, 1)), 16);
        assert_eq!(classful(Ipv4Addr::new(192, 168, 0, 1)), 24);
        assert!(in_subnet(SERVER, OFFERED, 24));
        assert!(!in_subnet(Ipv4Addr::new(10, 77, 1, 1), OFFERED, 24));
        assert!(in_subnet(Ipv4Addr::new(1, 2, 3, 4), OFFERED, 0));
    }

    #[test]
    fn domains_are_cleaned() {
        assert_eq!(clean_domain("zone.example."), Some("zone.example".into()));
        assert_eq!(clean_domain("lan\0"), Some("lan".into()));
        assert_eq!(clean_domain("a b"), None);
        assert_eq!(clean_domain("a\nnameserver 1.2.3.4"), None);
        assert_eq!(clean_domain(""), None);
        assert_eq!(clean_domain("a..b"), None);
    }

    #[test]
    fn resolv_conf_points_at_the_lease() {
        let l = Lease {
            address: OFFERED,
            prefix_len: 24,
            router: Some(SERVER),
            dns: vec![
                SERVER,
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(10, 0, 0, 3),
                Ipv4Addr::new(10, 0, 0, 4),
            ],
            domain: Some("zone.example".into()),
            lease_time: Duration::from_secs(60),
            server: SERVER,
        };
        assert_eq!(
            resolv_conf(&l),
            "# Written by netspawn from the DHCP lease of DHCP server 10.77.0.1.\n\
             nameserver 10.77.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n\
             search zone.example\n"
        );
        let bare = Lease {
            dns: vec![],
            domain: None,
            ..l
        };
        assert_eq!(resolv_conf(&bare).lines().count(), 1);
    }
}
