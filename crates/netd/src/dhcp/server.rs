//! The DHCPv4 server's protocol core (RFC 2131), without I/O.
//!
//! [`Server::handle`] takes one received datagram and the current time and returns what to send
//! and where. Address decisions live here: a client (by client identifier, else hardware address)
//! gets back the address it had before, even after its lease ran out, as long as nobody else took
//! it; a new client gets an address picked by a hash of its hardware address, so a restarted
//! machine that keeps its MAC keeps its address even if the lease table was lost.
//!
//! Durability is enforced here too: every change that a reply will announce (an ACK) is saved
//! through the server's [`LeaseStore`] before `handle` returns the reply; when the save fails no
//! reply is produced. The caller only has to send what it gets.
//!
//! Decisions where RFC 2131 leaves room:
//! - Replies to a client without an address and without the broadcast flag are broadcast, not
//!   unicast to the client's MAC: RFC 2131 4.1 allows broadcast when unicast is not possible, and a
//!   UDP socket cannot address a MAC without an ARP entry. All clients listen on a packet socket
//!   until bound, so this costs nothing but a broadcast on a link that has one container (`ve-*`)
//!   or a few (`vz-*`).
//! - Relayed requests (giaddr set) are dropped: netd serves only the link it listens on.
//! - An INIT-REBOOT or REBINDING request for a free pool address with no record of the client is
//!   acknowledged (the RFC says "remain silent"), so a client keeps its address across a loss of the
//!   lease file; an address held by someone else, outside the pool or off the subnet is NAKed.
//! - Offers are held for [`OFFER_HOLD`] in memory only; they are not persisted (a lost offer just
//!   makes the client discover again).
//!
//! Addresses belong to machines (issue 9). When the caller says which MACs are running machines'
//! ([`RequestContext::live_machines`]):
//! - A client whose hardware address is a live machine's is *known*, and is the machine whatever
//!   client identifier it sends (one binding per machine MAC, keyed by the MAC). Its binding is
//!   held for the machine's life (the launcher's client never renews), and no longer held once
//!   the machine is gone: its address stays reserved for the same name only while the pool has
//!   other room.
//! - When no address is fresh, bindings nobody holds are reclaimed oldest first: gone machines'
//!   and released ones before expired ones of unknown clients. A known client may also take the
//!   address of an unknown client's still running lease, oldest first, when nothing else is left.
//! - Any other client is *unknown* (made-up hardware addresses): it gets at most [`unknown_share`] of the pool, leases of at most [`UNKNOWN_LEASE`],
//!   offers held [`UNKNOWN_OFFER_HOLD`], and at most [`NEW_CLIENTS_PER_WINDOW`] new unknown
//!   clients per [`NEW_CLIENT_WINDOW`] are served on the link.
//!
//! The table holds at most one binding per pool address, and bindings that ended more than
//! [`ENDED_HISTORY`] ago (and are not held by a running machine) are dropped when it is saved, so
//! memory and lease file stay bounded by the pool whatever clients send. Without
//! `live_machines` (None) every client is served as before this policy existed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode, MIN_PACKET_SIZE};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use ipnetwork::Ipv4Network;
use netspawn_common::dhcp_wire::{self, opt, Packet, WireError, BOOTREQUEST};

use super::lease::{
    ClientKey, Lease, LeaseError, LeaseState, LeaseStore, LeaseTable, ENDED_HISTORY,
};

/// How long an offered address stays reserved for the client it was offered to.
pub const OFFER_HOLD: Duration = Duration::from_secs(60);
/// How long an address a client declined stays out of the pool.
pub const DECLINE_HOLD: Duration = Duration::from_secs(600);
/// networkd's DefaultLeaseTimeSec= default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3600);
/// networkd's MaxLeaseTimeSec= default.
pub const MAX_LEASE: Duration = Duration::from_secs(12 * 3600);
/// Longest lease of a client that is no running machine's.
pub const UNKNOWN_LEASE: Duration = Duration::from_secs(120);
/// How long an offer to a client that is no running machine's reserves its address.
pub const UNKNOWN_OFFER_HOLD: Duration = Duration::from_secs(10);
/// The window of the per-link rate limit of new unknown clients.
pub const NEW_CLIENT_WINDOW: Duration = Duration::from_secs(10);
/// New unknown clients served per [`NEW_CLIENT_WINDOW`] on one link.
pub const NEW_CLIENTS_PER_WINDOW: usize = 10;
/// Unknown clients hold at most 1/this of the pool...
pub const UNKNOWN_SHARE_DIVISOR: u32 = 4;
/// ...but at least this many addresses (or the whole pool, if smaller).
pub const UNKNOWN_SHARE_MIN: u32 = 4;

/// How many addresses of a pool of `pool_size` unknown clients may hold at once.
pub fn unknown_share(pool_size: u32) -> u32 {
    (pool_size / UNKNOWN_SHARE_DIVISOR)
        .max(UNKNOWN_SHARE_MIN)
        .min(pool_size)
}

/// Errors of building a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is inconsistent.
    #[error("DHCP server configuration: {0}")]
    Config(String),
    /// The lease table could not be loaded.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// What the server hands out on one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The server's own address on the link (server identifier, and default router/DNS).
    pub server_ip: Ipv4Addr,
    /// The link's subnet.
    pub subnet: Ipv4Network,
    /// First address of the pool.
    pub pool_start: Ipv4Addr,
    /// Last address of the pool (inclusive).
    pub pool_end: Ipv4Addr,
    /// Router option (EmitRouter=); None leaves it out.
    pub router: Option<Ipv4Addr>,
    /// DNS servers option (EmitDNS=); empty leaves it out.
    pub dns: Vec<Ipv4Addr>,
    /// Domain name option (15).
    pub domain: Option<String>,
    /// Domain search option (119, RFC 3397), most specific first; empty
    /// leaves it out. Names that are not valid DNS names are left out.
    pub search: Vec<String>,
    /// Lease time when the client asks for none (DefaultLeaseTimeSec=).
    pub default_lease: Duration,
    /// Longest lease granted (MaxLeaseTimeSec=).
    pub max_lease: Duration,
    /// Answer a DISCOVER that asks for rapid commit (RFC 4039, option 80)
    /// with an ACK at once, the lease bound (RapidCommit=, default yes).
    pub rapid_commit: bool,
}

impl ServerConfig {
    /// A configuration as systemd-networkd derives it from `[DHCPServer] PoolOffset=` and
    /// `PoolSize=`: offset 0 means 1 (skip the subnet address), size 0 means up to the address
    /// before the broadcast address; the server's own address is never handed out. The router and
    /// DNS server are the server itself (EmitRouter=yes, and netd serves DNS on that address);
    /// lease times are networkd's defaults (1 h, at most 12 h). Adjust the public fields for other
    /// settings.
    pub fn from_subnet(
        server_ip: Ipv4Addr,
        subnet: Ipv4Network,
        pool_offset: u32,
        pool_size: u32,
    ) -> Result<Self, ServerError> {
        let subnet = Ipv4Network::new(subnet.network(), subnet.prefix())
            .map_err(|e| ServerError::Config(e.to_string()))?;
        if subnet.prefix() > 30 {
            return Err(ServerError::Config(format!(
                "subnet {subnet} is too small for a DHCP pool"
            )));
        }
        let base = u32::from(subnet.network());
        let last_off = !u32::from(subnet.mask()); // broadcast offset
        let offset = if pool_offset == 0 { 1 } else { pool_offset };
        if offset >= last_off {
            return Err(ServerError::Config(format!(
                "PoolOffset={pool_offset} is outside subnet {subnet}"
            )));
        }
        let size_max = last_off - offset;
        let size = if pool_size == 0 { size_max } else { pool_size };
        if size > size_max {
            return Err(ServerError::Config(format!(
                "PoolSize={pool_size} with PoolOffset={pool_offset} does not fit in subnet {subnet}"
            )));
        }
        let cfg = ServerConfig {
            server_ip,
            subnet,
            pool_start: Ipv4Addr::from(base + offset),
            pool_end: Ipv4Addr::from(base + offset + size - 1),
            router: Some(server_ip),
            dns: vec![server_ip],
            domain: None,
            search: Vec::new(),
            default_lease: DEFAULT_LEASE,
            max_lease: MAX_LEASE,
            rapid_commit: true,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the addresses are consistent.
    pub fn validate(&self) -> Result<(), ServerError> {
        let s = &self.subnet;
        let bad = |m: String| Err(ServerError::Config(m));
        if !s.contains(self.server_ip)
            || self.server_ip == s.network()
            || self.server_ip == s.broadcast()
        {
            return bad(format!(
                "server address {} is not a host address of {s}",
                self.server_ip
            ));
        }
        if !s.contains(self.pool_start)
            || !s.contains(self.pool_end)
            || u32::from(self.pool_start) > u32::from(self.pool_end)
        {
            return bad(format!(
                "pool {}-{} is not inside {s}",
                self.pool_start, self.pool_end
            ));
        }
        if self.default_lease.is_zero() || self.max_lease < self.default_lease {
            return bad("lease times must satisfy 0 < default <= max".into());
        }
        Ok(())
    }

    /// Whether `addr` may be handed out: in the pool, not the server, subnet or broadcast address.
    pub fn in_pool(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        a >= u32::from(self.pool_start)
            && a <= u32::from(self.pool_end)
            && addr != self.server_ip
            && addr != self.subnet.network()
            && addr != self.subnet.broadcast()
    }
}

/// Per-request facts the caller knows and the packet does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The machine's name, sent as option 12 (host name) when known.
    pub hostname_for: Option<String>,
    /// The hardware addresses of the machines running now (their container side's MAC). None:
    /// the caller does not know, and every client is served alike (no shares, no rate limit,
    /// bindings held for their lease only).
    pub live_machines: Option<Arc<HashSet<Vec<u8>>>>,
    /// Further running machines' MACs that are costly to find (netd reads `/proc/locks`, which
    /// waits for an RCU grace period: milliseconds): asked for only when a decision of the
    /// request asks about a MAC that `live_machines` lacks, at most once per context. Counts
    /// only with `live_machines`: the running machines are the MACs of both.
    pub more_machines: Option<MoreMachines>,
}

/// The MACs of running machines, found on first need (see [`RequestContext::more_machines`]).
#[derive(Clone)]
pub struct MoreMachines(Arc<MoreInner>);

struct MoreInner {
    find: Box<dyn Fn() -> HashSet<Vec<u8>> + Send + Sync>,
    found: OnceLock<HashSet<Vec<u8>>>,
}

impl MoreMachines {
    /// MACs that `find` gives when first asked.
    pub fn new(find: impl Fn() -> HashSet<Vec<u8>> + Send + Sync + 'static) -> Self {
        MoreMachines(Arc::new(MoreInner {
            find: Box::new(find),
            found: OnceLock::new(),
        }))
    }

    fn contains(&self, mac: &[u8]) -> bool {
        self.0.found.get_or_init(|| (self.0.find)()).contains(mac)
    }

    /// Whether they were asked for.
    pub fn found(&self) -> bool {
        self.0.found.get().is_some()
    }
}

impl std::fmt::Debug for MoreMachines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MoreMachines")
            .field(&self.0.found.get())
            .finish()
    }
}

/// The same finder (a clone), not the same MACs.
impl PartialEq for MoreMachines {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MoreMachines {}

impl RequestContext {
    /// A context whose running machines have these MACs.
    pub fn with_machines<I, M>(hostname_for: Option<String>, macs: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: AsRef<[u8]>,
    {
        RequestContext {
            hostname_for,
            live_machines: Some(Arc::new(
                macs.into_iter().map(|m| m.as_ref().to_vec()).collect(),
            )),
            more_machines: None,
        }
    }

    /// With further running machines' MACs, found only if needed (see
    /// [`RequestContext::more_machines`]).
    pub fn and_on_need(mut self, more: MoreMachines) -> Self {
        self.more_machines = Some(more);
        self
    }
}

/// What a request's context says about machines, for the decisions of one request.
#[derive(Clone, Copy)]
struct Policy<'a> {
    live: Option<&'a HashSet<Vec<u8>>>,
    more: Option<&'a MoreMachines>,
}

impl<'a> Policy<'a> {
    fn of(ctx: &'a RequestContext) -> Self {
        Policy {
            live: ctx.live_machines.as_deref(),
            more: ctx.more_machines.as_ref(),
        }
    }

    /// Whether the machine policy applies at all.
    fn enforcing(&self) -> bool {
        self.live.is_some()
    }

    fn is_live(&self, mac: &[u8]) -> bool {
        self.live
            .is_some_and(|s| s.contains(mac) || self.more.is_some_and(|m| m.contains(mac)))
    }

    /// Whether `l` keeps its address from others at `now`: a machine's binding while the
    /// machine runs, any other while its lease runs.
    fn holds(&self, l: &Lease, now: SystemTime) -> bool {
        if self.enforcing() && l.machine {
            self.is_live(&l.hwaddr)
        } else {
            l.is_active(now)
        }
    }

    /// Whether `l` keeps its address from a client that may (`steal`) or may not take an
    /// unknown client's running lease.
    fn blocks(&self, l: &Lease, now: SystemTime, steal: bool) -> bool {
        self.holds(l, now) && (l.machine || !steal)
    }
}

/// Where a reply goes. The UDP destination port is always 68.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255 on the link.
    Broadcast,
    /// The client's own address (it has one: renewing, or INFORM).
    Unicast(Ipv4Addr),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Too short, bad cookie, bad hardware length, undecodable, or no message type.
    Malformed(&'static str),
    /// Not a BOOTREQUEST (e.g. another server's reply).
    NotRequest,
    /// A message type a server does not act on (OFFER, ACK, NAK, ...).
    UnexpectedType,
    /// Came through a relay agent; netd serves only its own link.
    Relayed,
    /// No free address for this client.
    PoolExhausted,
    /// Too many new clients that are no running machine's on this link just now.
    RateLimited,
    /// Clients that are no running machine's hold their whole share of the pool.
    ShareExhausted,
    /// The lease table could not be saved, so nothing was acknowledged.
    SaveFailed(String),
    /// The reply could not be encoded.
    Encode(String),
}

/// What to do with a received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send `bytes` to `to`, port 68. Any lease change it announces is already durable.
    Reply {
        /// The encoded DHCP message.
        bytes: Vec<u8>,
        /// Where to send it.
        to: Destination,
    },
    /// Valid, acted on or deliberately not answered (RELEASE, DECLINE, REQUEST for another server).
    Ignore,
    /// Invalid or not servable; counted in [`Stats`].
    Drop(DropReason),
}

/// Counters, for status output and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets given to `handle`.
    pub received: u64,
    /// Replies produced.
    pub replied: u64,
    /// OFFERs sent.
    pub offers: u64,
    /// ACKs sent (REQUEST and INFORM).
    pub acks: u64,
    /// NAKs sent.
    pub naks: u64,
    /// RELEASEs acted on.
    pub releases: u64,
    /// DECLINEs acted on.
    pub declines: u64,
    /// Valid packets not answered.
    pub ignored: u64,
    /// Malformed packets dropped.
    pub dropped_malformed: u64,
    /// Other drops (not a request, relayed, pool exhausted, save failure, ...).
    pub dropped_other: u64,
    /// DISCOVERs that found no free address.
    pub pool_exhausted: u64,
    /// When the latest of them from a running machine came.
    pub last_pool_exhausted: Option<SystemTime>,
    /// Lease table saves that failed.
    pub save_failures: u64,
    /// New unknown clients refused by the rate limit.
    pub rate_limited: u64,
    /// Unknown clients refused because unknown clients hold their whole share.
    pub share_exhausted: u64,
    /// Distinct new unknown clients admitted (offered or acknowledged an address).
    pub unknown_admitted: u64,
    /// Bindings taken from clients that no longer held them (gone machines, ended leases) or
    /// from unknown clients for a machine.
    pub reclaimed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Offer {
    addr: Ipv4Addr,
    until: SystemTime,
    /// Made to an unknown client (counts against the unknown share).
    unknown: bool,
}

/// A DHCPv4 server for one link.
pub struct Server {
    config: ServerConfig,
    table: LeaseTable,
    offers: HashMap<ClientKey, Offer>,
    store: Box<dyn LeaseStore>,
    stats: Stats,
    /// When the latest new unknown clients were admitted (at most [`NEW_CLIENTS_PER_WINDOW`]).
    new_unknown: VecDeque<SystemTime>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("leases", &self.table.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// The parts of a request the state machine uses, decoded once.
struct Request {
    msg: Message,
    kind: MessageType,
    key: ClientKey,
    client_id: Option<Vec<u8>>,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    lease: Option<u32>,
    hostname: Option<String>,
    /// The client asked for rapid commit (option 80, in a DISCOVER).
    rapid_commit: bool,
}

impl Server {
    /// A server with `config`, loading its leases from `store`. Bindings outside the configured
    /// pool (the link was re-carved) are dropped.
    pub fn new(
        config: ServerConfig,
        mut store: Box<dyn LeaseStore>,
        now: SystemTime,
    ) -> Result<Self, ServerError> {
        config.validate()?;
        let mut table = store.load()?;
        table.retain_addrs(now, |a| config.in_pool(a));
        // What ended long ago and was no machine's; a machine's binding waits for the first
        // save, which knows whether the machine still runs.
        let cutoff = now.checked_sub(ENDED_HISTORY).unwrap_or(now);
        table.forget(now, |l| !l.machine && l.expires < cutoff);
        Ok(Server {
            config,
            table,
            offers: HashMap::new(),
            store,
            stats: Stats::default(),
            new_unknown: VecDeque::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The lease table (e.g. for DNS names of the bound clients).
    pub fn leases(&self) -> &LeaseTable {
        &self.table
    }

    /// Handles one received datagram: decides, saves what must be durable, and says what to send.
    pub fn handle(&mut self, packet: &[u8], now: SystemTime, ctx: &RequestContext) -> Outcome {
        self.stats.received += 1;
        let out = match parse(packet) {
            Ok(req) => self.dispatch(req, now, ctx),
            Err(reason) => Outcome::Drop(reason),
        };
        match &out {
            Outcome::Reply { .. } => self.stats.replied += 1,
            Outcome::Ignore => self.stats.ignored += 1,
            Outcome::Drop(DropReason::Malformed(_)) => self.stats.dropped_malformed += 1,
            Outcome::Drop(_) => self.stats.dropped_other += 1,
        }
        out
    }

    fn dispatch(&mut self, mut req: Request, now: SystemTime, ctx: &RequestContext) -> Outcome {
        if req.msg.giaddr() != Ipv4Addr::UNSPECIFIED {
            return Outcome::Drop(DropReason::Relayed);
        }
        let p = Policy::of(ctx);
        let mac = req.msg.chaddr();
        if p.enforcing() && p.is_live(mac) {
            // A running machine is one client whatever identity it sends: one address per
            // machine MAC, and made-up identifiers on that MAC all get the machine's address.
            req.key = ClientKey::from_hwaddr(u8::from(req.msg.htype()), mac);
            self.table.adopt(mac, &req.key);
        }
        match req.kind {
            MessageType::Discover => self.discover(&req, now, ctx, p),
            MessageType::Request => self.request(&req, now, ctx, p),
            MessageType::Decline => self.decline(&req, now, p),
            MessageType::Release => self.release(&req, now, p),
            MessageType::Inform => self.inform(&req, ctx),
            _ => Outcome::Drop(DropReason::UnexpectedType),
        }
    }

    fn discover(
        &mut self,
        req: &Request,
        now: SystemTime,
        ctx: &RequestContext,
        p: Policy,
    ) -> Outcome {
        self.offers.retain(|_, o| o.until > now);
        let known = self.is_known(req, p);
        if !known {
            if let Err(reason) = self.admit_unknown(&req.key, now, p) {
                return Outcome::Drop(reason);
            }
        }
        let Some(addr) = self.pick_address(req, now, p, known) else {
            self.stats.pool_exhausted += 1;
            // What `exhausted_since` tells a machine's launcher: only a
            // running machine's request counts (a made-up client is also
            // refused when only its share is used up).
            if known {
                self.stats.last_pool_exhausted = Some(now);
            }
            return Outcome::Drop(DropReason::PoolExhausted);
        };
        if !known {
            self.note_admitted(&req.key, now);
        }
        let hold = if known {
            OFFER_HOLD
        } else {
            UNKNOWN_OFFER_HOLD
        };
        self.offers.insert(
            req.key.clone(),
            Offer {
                addr,
                until: now + hold,
                unknown: !known,
            },
        );
        if req.rapid_commit && self.config.rapid_commit {
            // RFC 4039: the offer and the request in one exchange; an
            // address that cannot be bound now is offered as usual.
            if let Ok(ack) = self.commit(req, addr, known, now, ctx, p) {
                return ack;
            }
        }
        let lease = self.lease_time(req, known, p);
        self.stats.offers += 1;
        self.reply(req, MessageType::Offer, addr, Some(lease), ctx)
    }

    fn request(
        &mut self,
        req: &Request,
        now: SystemTime,
        ctx: &RequestContext,
        p: Policy,
    ) -> Outcome {
        let ciaddr = nonzero(req.msg.ciaddr());
        let addr = match req.server_id {
            // SELECTING: the client answers an offer, ours or another server's.
            Some(sid) if sid != self.config.server_ip => {
                self.offers.remove(&req.key);
                return Outcome::Ignore;
            }
            // Ours; or INIT-REBOOT (requested address), RENEWING/REBINDING (ciaddr).
            _ => req.requested.or(ciaddr),
        };
        let Some(addr) = addr else {
            return Outcome::Drop(DropReason::Malformed("REQUEST names no address"));
        };
        let known = self.is_known(req, p);
        if !known {
            if let Err(reason) = self.admit_unknown(&req.key, now, p) {
                return Outcome::Drop(reason);
            }
        }
        self.commit(req, addr, known, now, ctx, p)
            .unwrap_or_else(|why| self.nak(req, why))
    }

    /// Binds `addr` to the client of `req` (a REQUEST, or a DISCOVER with
    /// rapid commit, whose offer is made just before) and ACKs it; why not
    /// when the address is not free for it (the caller NAKs a REQUEST).
    fn commit(
        &mut self,
        req: &Request,
        addr: Ipv4Addr,
        known: bool,
        now: SystemTime,
        ctx: &RequestContext,
        p: Policy,
    ) -> Result<Outcome, &'static str> {
        // A machine may take an unknown client's running lease only as we offered it.
        let steal = known
            && p.enforcing()
            && self
                .offers
                .get(&req.key)
                .is_some_and(|o| o.addr == addr && o.until > now);
        if !self.usable_for(addr, &req.key, now, p, steal) {
            return Err("requested address is not available");
        }
        let lease_time = self.lease_time(req, known, p);
        let lease = Lease {
            client: req.key.clone(),
            hwaddr: req.msg.chaddr().to_vec(),
            addr,
            expires: now + lease_time,
            state: LeaseState::Bound,
            client_hostname: req.hostname.clone(),
            machine: known && p.enforcing(),
        };
        let new_client = self.is_new(&req.key);
        let reclaimed = self
            .table
            .by_addr(addr)
            .is_some_and(|l| l.client != req.key && l.is_active(now));
        if !self
            .table
            .insert_unless(lease, |other| p.blocks(other, now, steal))
        {
            return Err("requested address is in use");
        }
        if reclaimed {
            self.stats.reclaimed += 1;
        }
        if !known && new_client {
            self.record_new(now);
        }
        self.offers.remove(&req.key);
        if let Err(e) = self.save(now, p) {
            self.stats.save_failures += 1;
            return Ok(Outcome::Drop(DropReason::SaveFailed(e.to_string())));
        }
        self.stats.acks += 1;
        Ok(self.reply(req, MessageType::Ack, addr, Some(lease_time), ctx))
    }

    fn decline(&mut self, req: &Request, now: SystemTime, p: Policy) -> Outcome {
        if req.server_id.is_some_and(|s| s != self.config.server_ip) {
            return Outcome::Ignore;
        }
        let Some(addr) = req.requested else {
            return Outcome::Drop(DropReason::Malformed("DECLINE names no address"));
        };
        let offered = self.offers.get(&req.key).is_some_and(|o| o.addr == addr);
        let bound = self.table.get(&req.key).is_some_and(|l| l.addr == addr);
        // Only the client the address was given to may take it out of the pool.
        if !offered && !bound {
            return Outcome::Ignore;
        }
        self.offers.remove(&req.key);
        self.table.decline(addr, now + DECLINE_HOLD);
        self.stats.declines += 1;
        if let Err(e) = self.save(now, p) {
            self.stats.save_failures += 1;
            return Outcome::Drop(DropReason::SaveFailed(e.to_string()));
        }
        Outcome::Ignore
    }

    fn release(&mut self, req: &Request, now: SystemTime, p: Policy) -> Outcome {
        if req.server_id.is_some_and(|s| s != self.config.server_ip) {
            return Outcome::Ignore;
        }
        if self.table.release(&req.key, req.msg.ciaddr(), now) {
            self.stats.releases += 1;
            if let Err(e) = self.save(now, p) {
                // The address simply stays reserved for this client until it expires.
                self.stats.save_failures += 1;
                return Outcome::Drop(DropReason::SaveFailed(e.to_string()));
            }
        }
        Outcome::Ignore
    }

    /// Forgets what ended long ago and is not a running machine's, then saves durably.
    fn save(&mut self, now: SystemTime, p: Policy) -> Result<(), LeaseError> {
        let cutoff = now.checked_sub(ENDED_HISTORY).unwrap_or(now);
        self.table
            .forget(now, |l| l.expires < cutoff && !p.holds(l, now));
        self.store.save(&self.table)
    }

    fn inform(&mut self, req: &Request, ctx: &RequestContext) -> Outcome {
        self.stats.acks += 1;
        self.reply(req, MessageType::Ack, Ipv4Addr::UNSPECIFIED, None, ctx)
    }

    fn nak(&mut self, req: &Request, why: &str) -> Outcome {
        self.stats.naks += 1;
        self.offers.remove(&req.key);
        let mut m = self.reply_header(req, Ipv4Addr::UNSPECIFIED);
        m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Nak));
        o.insert(DhcpOption::ServerIdentifier(self.config.server_ip));
        o.insert(DhcpOption::Message(why.to_string()));
        if let Some(id) = &req.client_id {
            o.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        // RFC 2131 4.1: a NAK is always broadcast when not relayed.
        encode(&m, Destination::Broadcast)
    }

    fn lease_time(&self, req: &Request, known: bool, p: Policy) -> Duration {
        let t = match req.lease {
            Some(s) if s > 0 => Duration::from_secs(u64::from(s)).min(self.config.max_lease),
            _ => self.config.default_lease,
        };
        if known || !p.enforcing() {
            t
        } else {
            t.min(UNKNOWN_LEASE)
        }
    }

    /// Whether the client is a running machine's (always, without machine knowledge).
    fn is_known(&self, req: &Request, p: Policy) -> bool {
        !p.enforcing() || p.is_live(req.msg.chaddr())
    }

    /// Whether an unknown client already has something here (a held binding or a live offer).
    fn has_own(&self, key: &ClientKey, now: SystemTime) -> bool {
        self.offers.get(key).is_some_and(|o| o.until > now)
            || self.table.get(key).is_some_and(|l| l.is_active(now))
    }

    /// The share and rate limit of unknown clients: Ok if `key` may be served.
    fn admit_unknown(
        &mut self,
        key: &ClientKey,
        now: SystemTime,
        p: Policy,
    ) -> Result<(), DropReason> {
        if self.has_own(key, now) {
            return Ok(());
        }
        if self.table.get(key).is_none() {
            // A client never seen: the rate limit of new clients.
            let since = now.checked_sub(NEW_CLIENT_WINDOW).unwrap_or(now);
            while self.new_unknown.front().is_some_and(|t| *t <= since) {
                self.new_unknown.pop_front();
            }
            if self.new_unknown.len() >= NEW_CLIENTS_PER_WINDOW {
                self.stats.rate_limited += 1;
                return Err(DropReason::RateLimited);
            }
        }
        let held = self
            .table
            .iter()
            .filter(|l| !l.machine && &l.client != key && p.holds(l, now))
            .count()
            + self
                .offers
                .iter()
                .filter(|(k, o)| o.unknown && *k != key && o.until > now)
                .count();
        if held >= self.pool_share() {
            self.stats.share_exhausted += 1;
            return Err(DropReason::ShareExhausted);
        }
        Ok(())
    }

    /// A client with neither a binding nor an offer.
    fn is_new(&self, key: &ClientKey) -> bool {
        self.table.get(key).is_none() && !self.offers.contains_key(key)
    }

    /// Before an offer to an unknown client: counts it for the rate limit if it is new.
    fn note_admitted(&mut self, key: &ClientKey, now: SystemTime) {
        if self.is_new(key) {
            self.record_new(now);
        }
    }

    /// Counts a new unknown client given an address (for the rate limit).
    fn record_new(&mut self, now: SystemTime) {
        self.stats.unknown_admitted += 1;
        if self.new_unknown.len() >= NEW_CLIENTS_PER_WINDOW {
            self.new_unknown.pop_front();
        }
        self.new_unknown.push_back(now);
    }

    /// Why a client may have got no address: the pool had no free address
    /// for a DISCOVER at or after `since`; one line, or None.
    pub fn exhausted_since(&self, since: SystemTime) -> Option<String> {
        self.stats.last_pool_exhausted.filter(|t| *t >= since)?;
        Some(format!(
            "its pool {}-{} ({} addresses) has no free address: every one is held by a \
             running machine or a client's lease",
            self.config.pool_start,
            self.config.pool_end,
            self.pool_size()
        ))
    }

    fn pool_size(&self) -> u32 {
        let start = u32::from(self.config.pool_start);
        let end = u32::from(self.config.pool_end);
        let server = u32::from(self.config.server_ip);
        (end - start + 1) - u32::from((start..=end).contains(&server))
    }

    fn pool_share(&self) -> usize {
        unknown_share(self.pool_size()) as usize
    }

    /// Whether `addr` may be bound to `key` now: in the pool, not quarantined, not held by
    /// anybody else (with `steal`, an unknown client's running lease does not count), and not
    /// offered to anybody else.
    fn usable_for(
        &self,
        addr: Ipv4Addr,
        key: &ClientKey,
        now: SystemTime,
        p: Policy,
        steal: bool,
    ) -> bool {
        if !self.config.in_pool(addr) || self.table.is_declined(addr, now) {
            return false;
        }
        if let Some(l) = self.table.by_addr(addr) {
            if &l.client != key && p.blocks(l, now, steal) {
                return false;
            }
        }
        !self
            .offers
            .iter()
            .any(|(k, o)| k != key && o.addr == addr && o.until > now)
    }

    /// Usable, and not remembered as another client's address either.
    fn fresh_for(&self, addr: Ipv4Addr, key: &ClientKey, now: SystemTime, p: Policy) -> bool {
        self.usable_for(addr, key, now, p, false)
            && self.table.by_addr(addr).is_none_or(|l| &l.client == key)
    }

    fn pick_address(
        &self,
        req: &Request,
        now: SystemTime,
        p: Policy,
        known: bool,
    ) -> Option<Ipv4Addr> {
        let key = &req.key;
        let mac = req.msg.chaddr();
        let remembered = [
            self.offers
                .get(key)
                .filter(|o| o.until > now)
                .map(|o| o.addr),
            self.table.get(key).map(|l| l.addr),
            // The same MAC under another client identity (another DHCP client in the same
            // machine): its address, once the old binding is no longer in use.
            self.table
                .iter()
                .find(|l| l.hwaddr == mac && !p.holds(l, now))
                .map(|l| l.addr),
        ];
        if let Some(a) = remembered
            .into_iter()
            .flatten()
            .find(|a| self.usable_for(*a, key, now, p, false))
        {
            return Some(a);
        }
        if let Some(a) = req.requested.filter(|a| self.fresh_for(*a, key, now, p)) {
            return Some(a);
        }
        let start = u32::from(self.config.pool_start);
        let n = u32::from(self.config.pool_end) - start + 1;
        let h = fnv1a(mac) % n;
        let probe = |i: u32| Ipv4Addr::from(start + (h + i) % n);
        // First an address nobody has had.
        if let Some(a) = (0..n).map(probe).find(|a| self.fresh_for(*a, key, now, p)) {
            return Some(a);
        }
        // Then one whose binding nobody holds any more, oldest first: gone machines' and
        // released ones before ended leases of other clients.
        let reclaim = |steal: bool| {
            self.table
                .iter()
                .filter(|l| self.usable_for(l.addr, key, now, p, steal))
                .min_by_key(|l| {
                    let gone = l.state == LeaseState::Released || (l.machine && !p.holds(l, now));
                    (!gone, l.expires, u32::from(l.addr))
                })
                .map(|l| l.addr)
        };
        reclaim(false).or_else(|| {
            // Last, for a running machine: an unknown client's running lease.
            (known && p.enforcing()).then(|| reclaim(true)).flatten()
        })
    }

    fn reply_header(&self, req: &Request, yiaddr: Ipv4Addr) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_htype(req.msg.htype())
            .set_chaddr(req.msg.chaddr())
            .set_xid(req.msg.xid())
            .set_flags(req.msg.flags())
            .set_ciaddr(req.msg.ciaddr())
            .set_yiaddr(yiaddr)
            .set_giaddr(req.msg.giaddr());
        m
    }

    fn reply(
        &self,
        req: &Request,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        lease: Option<Duration>,
        ctx: &RequestContext,
    ) -> Outcome {
        let c = &self.config;
        let mut m = self.reply_header(req, yiaddr);
        if kind == MessageType::Offer {
            m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(c.server_ip));
        if let Some(lease) = lease {
            let secs = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX);
            o.insert(DhcpOption::AddressLeaseTime(secs));
            o.insert(DhcpOption::Renewal(secs / 2));
            o.insert(DhcpOption::Rebinding(
                u32::try_from(u64::from(secs) * 7 / 8).unwrap_or(u32::MAX),
            ));
        }
        o.insert(DhcpOption::SubnetMask(c.subnet.mask()));
        if let Some(r) = c.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !c.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(c.dns.clone()));
        }
        if let Some(d) = c.domain.as_ref().filter(|d| !d.is_empty()) {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        let search: Vec<hickory_proto::rr::Name> = c
            .search
            .iter()
            .filter_map(|d| hickory_proto::rr::Name::from_ascii(d).ok())
            .map(|mut n| {
                n.set_fqdn(true);
                n
            })
            .collect();
        if !search.is_empty() {
            o.insert(DhcpOption::DomainSearch(search));
        }
        if let Some(h) = ctx.hostname_for.as_ref().filter(|h| valid_hostname(h)) {
            o.insert(DhcpOption::Hostname(h.clone()));
        }
        if let Some(id) = &req.client_id {
            // RFC 6842: echo the client identifier.
            o.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        if kind == MessageType::Ack && req.kind == MessageType::Discover {
            // RFC 4039 §4: a rapid commit's ACK says so.
            o.insert(DhcpOption::RapidCommit);
        }
        let to = match nonzero(req.msg.ciaddr()) {
            Some(ci) if kind != MessageType::Offer => Destination::Unicast(ci),
            _ => Destination::Broadcast,
        };
        encode(&m, to)
    }
}

fn encode(m: &Message, to: Destination) -> Outcome {
    let mut bytes = Vec::with_capacity(MIN_PACKET_SIZE);
    if let Err(e) = m.encode(&mut Encoder::new(&mut bytes)) {
        return Outcome::Drop(DropReason::Encode(e.to_string()));
    }
    // BOOTP relays and old clients expect at least 300 bytes.
    if bytes.len() < MIN_PACKET_SIZE {
        bytes.resize(MIN_PACKET_SIZE, 0);
    }
    Outcome::Reply { bytes, to }
}

fn nonzero(a: Ipv4Addr) -> Option<Ipv4Addr> {
    (a != Ipv4Addr::UNSPECIFIED).then_some(a)
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// RFC 1123 host name (dots allowed), as a client or we may send in option 12.
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The client hardware address of a request, without decoding the rest; for the I/O layer to
/// look up the machine behind a MAC before calling [`Server::handle`].
pub fn client_hwaddr(packet: &[u8]) -> Option<&[u8]> {
    Packet::new_checked(packet).ok()?.chaddr()
}

/// Option codes the server reads, with their valid lengths (min, max).
const READ_OPTIONS: [(u8, usize, usize); 9] = [
    (opt::HOST_NAME, 1, 255),
    (opt::REQUESTED_ADDRESS, 4, 4),
    (opt::LEASE_TIME, 4, 4),
    (opt::MESSAGE_TYPE, 1, 1),
    (opt::SERVER_ID, 4, 4),
    (opt::PARAMETER_REQUEST_LIST, 0, 255),
    (opt::MAX_MESSAGE_SIZE, 2, 2),
    // Empty is refused later, with a reason.
    (opt::CLIENT_ID, 0, 255),
    (opt::RAPID_COMMIT, 0, 0),
];

/// Rebuilds the packet with only the options the server reads, each checked for its length.
///
/// dhcproto's option decoder has debug assertions and unchecked length arithmetic for some
/// options the server never needs (client FQDN, bulk lease query, ...), so untrusted options
/// are walked by the checked view ([`dhcp_wire`]) and only known-good ones reach it. Repeated
/// options are concatenated (RFC 3396). A truncated option ends the walk, as a missing END would.
fn sanitize(packet: &Packet<'_>) -> Result<Vec<u8>, DropReason> {
    let joined = packet.join_options(|code| READ_OPTIONS.iter().any(|(c, _, _)| *c == code));
    let mut kept = Vec::with_capacity(joined.options.len());
    for (code, data) in &joined.options {
        let Some((_, min, max)) = READ_OPTIONS.iter().find(|(c, _, _)| c == code) else {
            continue;
        };
        if data.len() < *min || data.len() > *max {
            if *code == opt::MESSAGE_TYPE {
                return Err(DropReason::Malformed("bad message type option"));
            }
            // Any other badly sized option is ignored, as if absent.
            continue;
        }
        kept.push((*code, &data[..]));
    }
    Ok(dhcp_wire::rebuild(packet.header(), kept))
}

/// Checks the fixed header with the wire view (dhcproto trusts `hlen`), then decodes with
/// dhcproto.
fn parse(packet: &[u8]) -> Result<Request, DropReason> {
    let packet = Packet::new_checked(packet)
        .map_err(|_| DropReason::Malformed("shorter than a BOOTP header"))?;
    if packet.op() != BOOTREQUEST {
        return Err(DropReason::NotRequest);
    }
    packet.check_dhcp().map_err(|e| {
        DropReason::Malformed(match e {
            WireError::BadHardwareLength(_) => "hardware address longer than 16 bytes",
            WireError::BadMagic => "no DHCP magic cookie",
            WireError::Truncated => "shorter than a BOOTP header",
        })
    })?;
    let clean = sanitize(&packet)?;
    let msg = Message::decode(&mut Decoder::new(&clean))
        .map_err(|_| DropReason::Malformed("undecodable message"))?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(DropReason::NotRequest);
    }
    let opts = msg.opts();
    let kind = match opts.get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(k)) => *k,
        _ => return Err(DropReason::Malformed("no message type")),
    };
    let client_id = match opts.get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => Some(id.clone()),
        Some(DhcpOption::ClientIdentifier(_)) => {
            return Err(DropReason::Malformed("empty client identifier"))
        }
        _ => None,
    };
    let key = match &client_id {
        Some(id) => ClientKey::from_client_id(id),
        None => {
            let hw = msg.chaddr();
            if hw.is_empty() || hw.iter().all(|b| *b == 0) {
                return Err(DropReason::Malformed("no client hardware address"));
            }
            ClientKey::from_hwaddr(u8::from(msg.htype()), hw)
        }
    };
    let requested = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(a)) => nonzero(*a),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    };
    let lease = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(s)) => Some(*s),
        _ => None,
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) if valid_hostname(h) => Some(h.clone()),
        _ => None,
    };
    let rapid_commit = opts.get(OptionCode::RapidCommit).is_some();
    Ok(Request {
        msg,
        kind,
        key,
        client_id,
        requested,
        server_id,
        lease,
        hostname,
        rapid_commit,
    })
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
