//! What every DNS listener shares: the machine directory and local names,
//! the upstream resolver, the fast path's table and the [`Stats`] counters.
//! The listeners' owner (`super::server`) and the UDP threads
//! (`super::udp`) both use it, and neither imports the other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::Message;
use tokio::sync::Semaphore;

use super::answer::{forwarded_reply, DropReason, Forward, LocalNames, UpstreamAnswer};
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
    pub(super) send_errors: AtomicU64,
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
    /// Replies that could not be encoded or sent.
    pub send_errors: u64,
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
            send_errors: g(&self.send_errors),
        }
    }

    pub(super) fn count_drop(&self, reason: DropReason) {
        match reason {
            DropReason::Malformed => Stats::bump(&self.dropped_malformed),
            DropReason::NotAQuery => Stats::bump(&self.dropped_not_query),
        }
    }
}

/// What every listener shares.
pub(super) struct Inner {
    pub(super) dir: Arc<dyn MachineDirectory>,
    pub(super) names: LocalNames,
    pub(super) upstream: Upstream,
    pub(super) stats: Stats,
    pub(super) forwards: Arc<Semaphore>,
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
