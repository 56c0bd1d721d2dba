//! What every DNS listener shares: the machine directory and local names,
//! the upstream resolver, the fast path's table and the [`Stats`] counters.
//! The listeners' owner (`super::server`) and the UDP threads
//! (`super::udp`) both use it, and neither imports the other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hickory_proto::op::Message;
use tokio::sync::Semaphore;

use super::answer::{
    forwarded_reply, DropReason, Forward, LocalNames, Scope, UpstreamAnswer, Zones,
};
use super::directory::MachineDirectory;
use super::fast::FastTable;
use super::upstream::Upstream;

/// Counters, updated lock-free from the query paths.
#[derive(Debug, Default)]
pub struct Stats {
    pub(super) udp_queries: AtomicU64,
    pub(super) tcp_queries: AtomicU64,
    pub(super) answered_local: AtomicU64,
    forwarded: AtomicU64,
    forward_failed: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_not_query: AtomicU64,
    pub(super) dropped_busy: AtomicU64,
    pub(super) dropped_foreign: AtomicU64,
    pub(super) tcp_refused: AtomicU64,
    pub(super) tcp_idle_closed: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) llmnr_queries: AtomicU64,
    pub(super) llmnr_answered: AtomicU64,
    pub(super) llmnr_malformed: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Datagrams received on UDP listeners.
    pub udp_queries: u64,
    /// Messages received on TCP connections (well-formed enough for hickory
    /// to hand over: it answers FORMERR itself to the rest).
    pub tcp_queries: u64,
    /// Replies made here: machine names, PTR, NXDOMAIN, refusals.
    pub answered_local: u64,
    /// Queries passed to the upstream resolver (cache hits included).
    pub forwarded: u64,
    /// Forwarded queries answered SERVFAIL (no upstream, timeout...).
    pub forward_failed: u64,
    /// Packets that are not DNS messages: dropped.
    pub dropped_malformed: u64,
    /// Responses sent to us: dropped (no reflection).
    pub dropped_not_query: u64,
    /// Forwards refused because too many were in flight: dropped.
    pub dropped_busy: u64,
    /// Queries (UDP datagrams, TCP connections) that arrived on an
    /// interface that is neither a served link nor loopback: dropped, never
    /// forwarded.
    pub dropped_foreign: u64,
    /// TCP connections closed at once because the cap was reached.
    pub tcp_refused: u64,
    /// TCP connections closed for idling.
    pub tcp_idle_closed: u64,
    /// Replies that could not be encoded or sent.
    pub send_errors: u64,
    /// Datagrams received on LLMNR sockets.
    pub llmnr_queries: u64,
    /// LLMNR queries answered.
    pub llmnr_answered: u64,
    /// LLMNR datagrams that are not queries RFC 4795 lets us answer:
    /// dropped.
    pub llmnr_malformed: u64,
}

impl Stats {
    pub(super) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            udp_queries: g(&self.udp_queries),
            tcp_queries: g(&self.tcp_queries),
            answered_local: g(&self.answered_local),
            forwarded: g(&self.forwarded),
            forward_failed: g(&self.forward_failed),
            dropped_malformed: g(&self.dropped_malformed),
            dropped_not_query: g(&self.dropped_not_query),
            dropped_busy: g(&self.dropped_busy),
            dropped_foreign: g(&self.dropped_foreign),
            tcp_refused: g(&self.tcp_refused),
            tcp_idle_closed: g(&self.tcp_idle_closed),
            send_errors: g(&self.send_errors),
            llmnr_queries: g(&self.llmnr_queries),
            llmnr_answered: g(&self.llmnr_answered),
            llmnr_malformed: g(&self.llmnr_malformed),
        }
    }

    pub(super) fn count_drop(&self, reason: DropReason) {
        match reason {
            DropReason::Malformed => Stats::bump(&self.dropped_malformed),
            DropReason::NotAQuery => Stats::bump(&self.dropped_not_query),
        }
    }
}

/// Where queries may arrive, and what the answer depends on there: the
/// interfaces served (the links' and loopback), the host's addresses on
/// each (the answer to `host`), and the links that are internal (nothing
/// forwarded upstream).
#[derive(Debug, Default)]
pub(super) struct ArrivalSet {
    allowed: Vec<u32>,
    hosts: HashMap<u32, Vec<IpAddr>>,
    internal: Vec<u32>,
    zones: Zones,
}

impl ArrivalSet {
    pub(super) fn new(
        mut allowed: Vec<u32>,
        hosts: HashMap<u32, Vec<IpAddr>>,
        mut internal: Vec<u32>,
        zones: Zones,
    ) -> ArrivalSet {
        allowed.sort_unstable();
        allowed.dedup();
        internal.sort_unstable();
        internal.dedup();
        ArrivalSet {
            allowed,
            hosts,
            internal,
            zones,
        }
    }

    /// Whether a query that arrived on `ifindex` may be served.
    pub(super) fn allows(&self, ifindex: Option<u32>) -> bool {
        ifindex.is_some_and(|ix| ix != 0 && self.allowed.binary_search(&ix).is_ok())
    }

    /// The answer's scope for a query that arrived on `ifindex`.
    pub(super) fn scope(&self, ifindex: Option<u32>) -> Scope<'_> {
        let Some(ix) = ifindex else {
            return Scope::default();
        };
        Scope {
            host: self.hosts.get(&ix).map(Vec::as_slice).unwrap_or_default(),
            internal: self.internal.binary_search(&ix).is_ok(),
            zones: Some(&self.zones),
        }
    }

    /// The host's addresses on the link `ifindex`.
    pub(super) fn host(&self, ifindex: u32) -> &[IpAddr] {
        self.hosts
            .get(&ifindex)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// The current [`ArrivalSet`], with a generation counter so that UDP
/// threads re-read it only when it changed.
#[derive(Default)]
pub(super) struct Arrivals {
    generation: AtomicU64,
    set: RwLock<Arc<ArrivalSet>>,
}

impl Arrivals {
    pub(super) fn set(&self, set: ArrivalSet) {
        let mut a = match self.set.write() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        };
        *a = Arc::new(set);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn get(&self) -> (u64, Arc<ArrivalSet>) {
        let a = match self.set.read() {
            Ok(a) => a,
            Err(p) => p.into_inner(),
        };
        (self.generation(), a.clone())
    }

    /// Whether a query that arrived on `ifindex` may be served.
    pub(super) fn allows(&self, ifindex: Option<u32>) -> bool {
        self.get().1.allows(ifindex)
    }
}

/// What every listener shares.
pub(super) struct Inner {
    pub(super) dir: Arc<dyn MachineDirectory>,
    pub(super) names: LocalNames,
    pub(super) upstream: Upstream,
    pub(super) stats: Stats,
    pub(super) forwards: Arc<Semaphore>,
    /// Where queries may come from.
    pub(super) arrivals: Arrivals,
    /// TCP connections open at once (all listeners together).
    pub(super) tcp_conns: Arc<Semaphore>,
    /// The UDP fast path's table with the directory generation it was
    /// built from, shared so that listeners build it once between them.
    pub(super) fast: Mutex<Option<(u64, Arc<FastTable>)>>,
}

impl Inner {
    /// Asks upstream and builds the reply.
    pub(super) async fn forward(&self, fwd: &Forward) -> Message {
        Stats::bump(&self.stats.forwarded);
        let answer = self.upstream.lookup(&fwd.query).await;
        if answer == UpstreamAnswer::Failed {
            Stats::bump(&self.stats.forward_failed);
        }
        forwarded_reply(fwd, answer)
    }
}
