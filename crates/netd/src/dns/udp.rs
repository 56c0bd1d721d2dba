//! One UDP listener socket served by a thread of its own: blocking
//! `recvmmsg` (a batch of whatever datagrams are queued, waiting only for the
//! first), answers made in place, one `sendmmsg` for the batch. No async
//! runtime wake-up per packet, no allocation per query on the fast path.
//!
//! Machine names are answered by [`fast`](super::fast) from a table rebuilt
//! only when the directory changes; every other datagram goes through the
//! general answer logic ([`decide_in`]) on this thread, which also drops and
//! counts what is malformed. Forwarded queries are handed to the tokio
//! runtime, whose task sends the reply on the same socket (without
//! blocking) once upstream answered, if the listener still exists.
//!
//! Stopping: [`UdpListener`]'s drop sets a flag and shuts the socket down,
//! which wakes the thread out of `recvmmsg` (or a blocked `sendmmsg`); it is
//! joined, so the address is free again when drop returns.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{
    recvmmsg, sendmmsg, sendto, setsockopt, shutdown, sockopt, ControlMessage, ControlMessageOwned,
    MsgFlags, MultiHeaders, Shutdown, SockaddrStorage,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::answer::{decide_in, encode_reply, udp_limit, Decision, EDNS_PAYLOAD};
use super::fast::{self, FastTable};
use super::shared::{ArrivalSet, Inner, Stats};
use crate::sys::AnonBuffer;

/// Datagrams taken per `recvmmsg`.
const BATCH: usize = 32;
/// Largest UDP datagram read; a DNS query is far smaller (as before the
/// fast path: a longer one is cut, and then found malformed).
const RECV_BUF: usize = 4096;
/// Room for one reply: UDP replies are at most [`EDNS_PAYLOAD`] bytes.
const SEND_BUF: usize = EDNS_PAYLOAD as usize;
/// The thread's stack: the general path decodes with hickory, which needs
/// little; the buffers are on the heap.
const STACK: usize = 256 * 1024;
/// A full send buffer makes a send wait at most this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// After a datagram, the thread keeps asking for more without sleeping
/// (yielding the CPU in between) this long before it blocks again: under
/// load, packets arrive closer together than a sleep and wake-up take,
/// and that round trip through the scheduler was most of the cost of
/// serving one. When traffic stops, the thread sleeps 100 µs later.
const POLL_WINDOW: Duration = Duration::from_micros(100);
/// A forwarded reply finding the send buffer full is retried this often,
/// a millisecond apart.
const FORWARD_SEND_TRIES: u32 = 20;

/// A listener's serving thread; dropping it stops the thread and closes the
/// socket.
pub(super) struct UdpListener {
    sock: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpListener {
    /// Serves `sock` (bound, blocking) on a new thread; forwarded queries run
    /// on `rt`.
    pub(super) fn start(
        sock: OwnedFd,
        inner: Arc<Inner>,
        rt: tokio::runtime::Handle,
    ) -> std::io::Result<UdpListener> {
        let sock = Arc::new(sock);
        set_send_timeout(&sock, SEND_TIMEOUT)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let worker = Worker::new(sock.clone(), inner, rt)?;
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("netd-dns-udp".into())
                .stack_size(STACK)
                .spawn(move || worker.run(&stop))?
        };
        Ok(UdpListener {
            sock,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // On an unconnected UDP socket this "fails" with ENOTCONN but still
        // marks both directions shut and wakes any waiter.
        let _ = shutdown(self.sock.as_raw_fd(), Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_send_timeout(sock: &OwnedFd, t: Duration) -> std::io::Result<()> {
    let tv = TimeVal::microseconds(i64::try_from(t.as_micros()).unwrap_or(i64::MAX));
    setsockopt(sock, sockopt::SendTimeout, &tv).map_err(Into::into)
}

/// A datagram's peer as std's type; `None` for a family we do not expect on
/// an IP socket.
fn peer(addr: Option<&SockaddrStorage>) -> Option<SocketAddr> {
    let addr = addr?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// The serving thread's state: buffers allocated once.
struct Worker {
    sock: Arc<OwnedFd>,
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
    table: Option<(u64, Arc<FastTable>)>,
    /// Receive buffers, then send buffers.
    bufs: AnonBuffer,
    rx_addr: Vec<Option<SockaddrStorage>>,
    rx_len: Vec<usize>,
    /// The interface each datagram arrived on (IP_PKTINFO), if known.
    rx_ifindex: Vec<Option<u32>>,
    /// The interfaces served, as of a generation of `inner.arrivals`.
    allowed: (u64, Arc<ArrivalSet>),
    /// Whether the socket is IPv6 (which control message to expect).
    v6: bool,
    tx_addr: Vec<Option<SockaddrStorage>>,
    tx_len: Vec<usize>,
}

/// The message headers `recvmmsg`/`sendmmsg` fill, made once per thread
/// (they hold raw pointers, so they are not `Send`: the thread makes its
/// own).
///
/// nix sets each receive header's address and control lengths once: the
/// kernel writes the length of every address (and of the control messages)
/// it returns there, and nix does not restore them between calls. A
/// listener socket has one address family, whose addresses all have the
/// same length, and every datagram carries the same one packet-info
/// message, so what the first datagram leaves is exactly the room every
/// later one needs. A datagram found without its packet info (which would
/// leave no room for the next ones') makes the receive headers be made
/// anew.
struct Headers {
    rx: MultiHeaders<SockaddrStorage>,
    tx: MultiHeaders<SockaddrStorage>,
}

impl Headers {
    fn new(v6: bool) -> Headers {
        Headers {
            rx: rx_headers(v6),
            tx: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

/// Receive headers with room for one packet-info message each.
fn rx_headers(v6: bool) -> MultiHeaders<SockaddrStorage> {
    let cmsg = if v6 {
        nix::cmsg_space!(libc::in6_pktinfo)
    } else {
        nix::cmsg_space!(libc::in_pktinfo)
    };
    MultiHeaders::preallocate(BATCH, Some(cmsg))
}

impl Worker {
    /// Send buffer `i`.
    fn tx(&self, i: usize) -> &[u8] {
        let at = BATCH * RECV_BUF + i * SEND_BUF;
        self.bufs.get(at..at + SEND_BUF).unwrap_or_default()
    }

    fn new(
        sock: Arc<OwnedFd>,
        inner: Arc<Inner>,
        rt: tokio::runtime::Handle,
    ) -> std::io::Result<Worker> {
        let v6 = nix::sys::socket::getsockname::<SockaddrStorage>(sock.as_raw_fd())
            .map(|a| a.as_sockaddr_in6().is_some())
            .map_err(std::io::Error::from)?;
        // The arriving interface of every datagram: only served links and
        // loopback are answered.
        if v6 {
            setsockopt(&*sock, sockopt::Ipv6RecvPacketInfo, &true)?;
        } else {
            setsockopt(&*sock, sockopt::Ipv4PacketInfo, &true)?;
        }
        let allowed = inner.arrivals.get();
        Ok(Worker {
            sock,
            inner,
            rt,
            table: None,
            bufs: AnonBuffer::new(BATCH * (RECV_BUF + SEND_BUF))?,
            rx_addr: vec![None; BATCH],
            rx_len: vec![0; BATCH],
            rx_ifindex: vec![None; BATCH],
            allowed,
            v6,
            tx_addr: vec![None; BATCH],
            tx_len: vec![0; BATCH],
        })
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut hdrs = Headers::new(self.v6);
        let mut last_packet: Option<Instant> = None;
        loop {
            let polling = last_packet.is_some_and(|t| t.elapsed() < POLL_WINDOW);
            let got = self.receive(
                &mut hdrs.rx,
                if polling {
                    MsgFlags::MSG_DONTWAIT
                } else {
                    MsgFlags::MSG_WAITFORONE
                },
            );
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match got {
                Ok(n) => {
                    last_packet = Some(Instant::now());
                    let replies = self.handle(n);
                    self.send(&mut hdrs.tx, replies);
                }
                // Nothing queued while polling: let whatever else is
                // runnable here (the clients, often) have the CPU.
                Err(Errno::EAGAIN) if polling => {
                    let _ = nix::sched::sched_yield();
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                // The socket is gone: nothing more to serve.
                Err(Errno::EBADF | Errno::ENOTSOCK) => return,
                // ICMP errors from earlier sends surface here; anything
                // else (ENOMEM...) gets a pause rather than a spin.
                Err(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH) => {}
                Err(e) => {
                    tracing::debug!(err = %e, "DNS UDP receive");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Takes up to [`BATCH`] datagrams: with `MSG_WAITFORONE`, waits for
    /// the first; with `MSG_DONTWAIT`, fails with EAGAIN if none is queued.
    fn receive(
        &mut self,
        hdrs: &mut MultiHeaders<SockaddrStorage>,
        flags: MsgFlags,
    ) -> nix::Result<usize> {
        let rx = self.bufs.get_mut(..BATCH * RECV_BUF).unwrap_or_default();
        let mut bufs = rx.chunks_exact_mut(RECV_BUF);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(bufs.next().unwrap_or_default())]);
        let got = recvmmsg(self.sock.as_raw_fd(), hdrs, iovs.iter_mut(), flags, None)?;
        let mut n = 0;
        let mut renew = false;
        for (i, msg) in got.take(BATCH).enumerate() {
            self.rx_len[i] = msg.bytes.min(RECV_BUF);
            self.rx_addr[i] = msg.address;
            let ifindex = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::Ipv4PacketInfo(p) => u32::try_from(p.ipi_ifindex).ok(),
                    ControlMessageOwned::Ipv6PacketInfo(p) => Some(p.ipi6_ifindex),
                    _ => None,
                })
            });
            renew |= ifindex.is_none();
            self.rx_ifindex[i] = ifindex;
            n = i + 1;
        }
        if renew {
            *hdrs = rx_headers(self.v6);
        }
        Ok(n)
    }

    /// The fast table for the directory as it is now; rebuilt (once for all
    /// listeners) only when the directory's generation moved.
    fn refresh_table(&mut self) {
        let Some(generation) = self.inner.dir.generation() else {
            self.table = None;
            return;
        };
        if self.table.as_ref().is_some_and(|(g, _)| *g == generation) {
            return;
        }
        let mut shared = match self.inner.fast.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((g, t)) = shared.as_ref() {
            if *g == generation {
                self.table = Some((*g, t.clone()));
                return;
            }
        }
        let Some((g, snapshot)) = self.inner.dir.snapshot() else {
            self.table = None;
            return;
        };
        let table = Arc::new(FastTable::build(&snapshot, &self.inner.names));
        *shared = Some((g, table.clone()));
        self.table = Some((g, table));
    }

    /// Answers the `n` datagrams received; returns how many replies are
    /// ready in `tx`.
    fn handle(&mut self, n: usize) -> usize {
        self.refresh_table();
        if self.allowed.0 != self.inner.arrivals.generation() {
            self.allowed = self.inner.arrivals.get();
        }
        let stats = &self.inner.stats;
        Stats::add(&stats.udp_queries, n as u64);
        let (rx, tx) = self.bufs.split_at_mut(BATCH * RECV_BUF);
        let mut out = 0;
        let mut local = 0;
        for i in 0..n {
            let (addr, len) = (self.rx_addr[i], self.rx_len[i]);
            let packet = rx.get(i * RECV_BUF..i * RECV_BUF + len).unwrap_or_default();
            let slot = &mut tx[out * SEND_BUF..(out + 1) * SEND_BUF];
            let Some(src) = peer(addr.as_ref()).filter(|s| s.port() != 0) else {
                stats.count_drop(super::answer::DropReason::Malformed);
                continue;
            };
            // From outside (another network routed to our address): not
            // answered, and never forwarded.
            if !self.allowed.1.allows(self.rx_ifindex[i]) {
                Stats::bump(&stats.dropped_foreign);
                continue;
            }
            if let Some((_, table)) = &self.table {
                if let Some(l) = fast::answer(packet, table, slot) {
                    self.tx_addr[out] = addr;
                    self.tx_len[out] = l;
                    out += 1;
                    local += 1;
                    continue;
                }
            }
            let scope = self.allowed.1.scope(self.rx_ifindex[i]);
            match decide_in(packet, &*self.inner.dir, &self.inner.names, scope) {
                Decision::Reply(reply) => {
                    local += 1;
                    let limit = udp_limit(reply.max_payload);
                    let Some(bytes) = encode_reply(&reply.message, limit) else {
                        Stats::bump(&stats.send_errors);
                        continue;
                    };
                    match slot.get_mut(..bytes.len()) {
                        Some(slot) => {
                            slot.copy_from_slice(&bytes);
                            self.tx_addr[out] = addr;
                            self.tx_len[out] = bytes.len();
                            out += 1;
                        }
                        // Larger than any UDP reply we make: send it alone.
                        None => {
                            let sent = addr.is_some_and(|to| {
                                send_one(&self.sock, &bytes, &to, MsgFlags::empty()).is_ok()
                            });
                            if !sent {
                                Stats::bump(&stats.send_errors);
                            }
                        }
                    }
                }
                Decision::Forward(fwd) => {
                    let Ok(permit) = self.inner.forwards.clone().try_acquire_owned() else {
                        Stats::bump(&stats.dropped_busy);
                        continue;
                    };
                    let inner = self.inner.clone();
                    let sock = Arc::downgrade(&self.sock);
                    self.rt.spawn(async move {
                        let msg = inner.forward(&fwd).await;
                        match encode_reply(&msg, udp_limit(fwd.max_payload)) {
                            Some(bytes) => send_forwarded(&sock, &inner, &bytes, src).await,
                            None => Stats::bump(&inner.stats.send_errors),
                        }
                        drop(permit);
                    });
                }
                Decision::Drop(reason) => stats.count_drop(reason),
            }
        }
        Stats::add(&stats.answered_local, local);
        out
    }

    /// Sends the first `count` replies in `tx`, as few calls as the kernel
    /// allows; a reply that cannot be sent is counted and skipped.
    fn send(&mut self, hdrs: &mut MultiHeaders<SockaddrStorage>, count: usize) {
        let count = count.min(BATCH);
        let mut from = 0;
        while from < count {
            let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|j| {
                let i = from + j;
                let len = if i < count { self.tx_len[i] } else { 0 };
                [IoSlice::new(self.tx(i).get(..len).unwrap_or_default())]
            });
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            let sent = sendmmsg(
                self.sock.as_raw_fd(),
                hdrs,
                iovs.iter().take(count - from),
                &self.tx_addr[from..count],
                no_cmsgs,
                MsgFlags::empty(),
            )
            .map(Iterator::count);
            match sent {
                Ok(n) if n > 0 => from += n,
                // The first one failed (its own error, or the socket is shut
                // down): count it, go on with the next.
                _ => {
                    Stats::bump(&self.inner.stats.send_errors);
                    from += 1;
                }
            }
        }
    }
}

fn send_one(
    sock: &OwnedFd,
    bytes: &[u8],
    to: &SockaddrStorage,
    flags: MsgFlags,
) -> nix::Result<usize> {
    sendto(sock.as_raw_fd(), bytes, to, flags)
}

/// Sends a forwarded query's reply from the runtime: never blocking a
/// worker thread, and only while the listener exists (a removed listener's
/// address must be free to bind again at once).
async fn send_forwarded(sock: &Weak<OwnedFd>, inner: &Inner, bytes: &[u8], to: SocketAddr) {
    let to = SockaddrStorage::from(to);
    for _ in 0..FORWARD_SEND_TRIES {
        let Some(s) = sock.upgrade() else {
            return;
        };
        match send_one(&s, bytes, &to, MsgFlags::MSG_DONTWAIT) {
            Ok(_) => return,
            Err(Errno::EAGAIN) => {}
            Err(_) => break,
        }
        drop(s);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Stats::bump(&inner.stats.send_errors);
}
