//! One UDP listener socket served by a thread of its own: blocking
//! `recvmmsg` (a batch of whatever datagrams are queued, waiting only for the
//! first), answers made in place, one `sendmmsg` for the batch. No async
//! runtime wake-up per packet, no allocation per query on the fast path.
//!
//! Machine names are answered by [`fast`](super::fast) from a table rebuilt
//! only when the directory changes; every other datagram goes through the
//! general answer logic ([`decide`]) on this thread, which also drops and
//! counts what is malformed. Forwarded queries are handed to the tokio
//! runtime, whose task sends the reply on the same socket (without
//! blocking) once upstream answered, if the listener still exists.
//!
//! Stopping: [`UdpListener`]'s drop sets a flag and shuts the socket down,
//! which wakes the thread out of `recvmmsg` (or a blocked `sendmmsg`); it is
//! joined, so the address is free again when drop returns.

use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::answer::{decide, encode_reply, udp_limit, Decision, EDNS_PAYLOAD};
use super::fast::{self, FastTable};
use super::server::{Inner, Stats};

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
        // SAFETY: plain syscall on a descriptor we own.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_send_timeout(sock: &OwnedFd, t: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the pointer and length describe a live timeval.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The peer address of a datagram, as the kernel gave it.
#[derive(Clone, Copy)]
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn empty() -> RawAddr {
        // SAFETY: all-zero is a valid sockaddr_storage.
        RawAddr {
            storage: unsafe { zeroed() },
            len: 0,
        }
    }

    /// The address as std's type; `None` for a family or length we do not
    /// expect on an IP socket.
    fn to_std(self) -> Option<SocketAddr> {
        let len = self.len as usize;
        match i32::from(self.storage.ss_family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says sockaddr_in, and it fits.
                let s: &libc::sockaddr_in =
                    unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(s.sin_port),
                )))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: the family says sockaddr_in6, and it fits.
                let s: &libc::sockaddr_in6 =
                    unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in6) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(s.sin6_addr.s6_addr),
                    u16::from_be(s.sin6_port),
                    s.sin6_flowinfo,
                    s.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn from_std(sa: SocketAddr) -> RawAddr {
        let mut r = RawAddr::empty();
        match sa {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                let s: &mut libc::sockaddr_in =
                    unsafe { &mut *(&mut r.storage as *mut _ as *mut libc::sockaddr_in) };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = v4.port().to_be();
                s.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                r.len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(v6) => {
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                let s: &mut libc::sockaddr_in6 =
                    unsafe { &mut *(&mut r.storage as *mut _ as *mut libc::sockaddr_in6) };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = v6.port().to_be();
                s.sin6_addr.s6_addr = v6.ip().octets();
                s.sin6_flowinfo = v6.flowinfo();
                s.sin6_scope_id = v6.scope_id();
                r.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        r
    }
}

/// Zeroed memory mapped for a listener's buffers: an anonymous mapping of
/// its own, whose pages cost nothing until a datagram is written to them
/// (netd may serve a hundred links, most of them idle), whatever the
/// allocator's thresholds.
struct Buffers {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone.
unsafe impl Send for Buffers {}

impl Buffers {
    fn new(len: usize) -> std::io::Result<Buffers> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Buffers {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl std::ops::Deref for Buffers {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: ptr/len describe our live, readable mapping.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for Buffers {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr/len describe our live, writable mapping, borrowed
        // mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped; no slice of it outlives self.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The serving thread's state: buffers allocated once.
struct Worker {
    sock: Arc<OwnedFd>,
    inner: Arc<Inner>,
    rt: tokio::runtime::Handle,
    table: Option<(u64, Arc<FastTable>)>,
    /// Receive buffers, then send buffers.
    bufs: Buffers,
    rx_addr: Vec<RawAddr>,
    rx_len: Vec<usize>,
    tx_addr: Vec<RawAddr>,
    tx_len: Vec<usize>,
}

impl Worker {
    /// Receive buffer `i`.
    fn rx(&mut self, i: usize) -> &mut [u8] {
        let at = i * RECV_BUF;
        &mut self.bufs[at..at + RECV_BUF]
    }

    /// Send buffer `i`.
    fn tx(&mut self, i: usize) -> &mut [u8] {
        let at = BATCH * RECV_BUF + i * SEND_BUF;
        &mut self.bufs[at..at + SEND_BUF]
    }

    fn new(
        sock: Arc<OwnedFd>,
        inner: Arc<Inner>,
        rt: tokio::runtime::Handle,
    ) -> std::io::Result<Worker> {
        Ok(Worker {
            sock,
            inner,
            rt,
            table: None,
            bufs: Buffers::new(BATCH * (RECV_BUF + SEND_BUF))?,
            rx_addr: vec![RawAddr::empty(); BATCH],
            rx_len: vec![0; BATCH],
            tx_addr: vec![RawAddr::empty(); BATCH],
            tx_len: vec![0; BATCH],
        })
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut last_packet: Option<Instant> = None;
        loop {
            let polling = last_packet.is_some_and(|t| t.elapsed() < POLL_WINDOW);
            let got = self.receive(if polling {
                libc::MSG_DONTWAIT
            } else {
                libc::MSG_WAITFORONE
            });
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match got {
                Ok(n) => {
                    last_packet = Some(Instant::now());
                    let replies = self.handle(n);
                    self.send(replies);
                }
                Err(e) => match e.raw_os_error() {
                    // Nothing queued while polling: let whatever else is
                    // runnable here (the clients, often) have the CPU.
                    // SAFETY: plain syscall.
                    Some(libc::EAGAIN) if polling => unsafe {
                        libc::sched_yield();
                    },
                    Some(libc::EINTR | libc::EAGAIN) => {}
                    // The socket is gone: nothing more to serve.
                    Some(libc::EBADF | libc::ENOTSOCK) => return,
                    // ICMP errors from earlier sends surface here; anything
                    // else (ENOMEM...) gets a pause rather than a spin.
                    Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH) => {}
                    _ => {
                        tracing::debug!(err = %e, "DNS UDP receive");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                },
            }
        }
    }

    /// Takes up to [`BATCH`] datagrams: with `MSG_WAITFORONE`, waits for
    /// the first; with `MSG_DONTWAIT`, fails with EAGAIN if none is queued.
    fn receive(&mut self, flags: libc::c_int) -> std::io::Result<usize> {
        // SAFETY: all-zero iovec/mmsghdr are valid; each header points at
        // a buffer and an address slot of ours that outlive the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iov[i].iov_base = self.rx(i).as_mut_ptr().cast();
            iov[i].iov_len = RECV_BUF;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.rx_addr[i].storage as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: hdrs holds BATCH valid headers (see above).
        let n = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = (n as usize).min(BATCH);
        for (i, h) in hdrs.iter().take(n).enumerate() {
            self.rx_len[i] = (h.msg_len as usize).min(RECV_BUF);
            self.rx_addr[i].len = h.msg_hdr.msg_namelen;
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
        let stats = &self.inner.stats;
        Stats::add(&stats.udp_queries, n as u64);
        let (rx, tx) = self.bufs.split_at_mut(BATCH * RECV_BUF);
        let mut out = 0;
        let mut local = 0;
        for i in 0..n {
            let (addr, len) = (self.rx_addr[i], self.rx_len[i]);
            let packet = rx.get(i * RECV_BUF..i * RECV_BUF + len).unwrap_or_default();
            let slot = &mut tx[out * SEND_BUF..(out + 1) * SEND_BUF];
            let Some(src) = addr.to_std().filter(|s| s.port() != 0) else {
                stats.count_drop(super::answer::DropReason::Malformed);
                continue;
            };
            if let Some((_, table)) = &self.table {
                if let Some(l) = fast::answer(packet, table, slot) {
                    self.tx_addr[out] = addr;
                    self.tx_len[out] = l;
                    out += 1;
                    local += 1;
                    continue;
                }
            }
            match decide(packet, &*self.inner.dir, &self.inner.names) {
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
                            if send_one(&self.sock, &bytes, &addr, 0).is_err() {
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
    fn send(&mut self, count: usize) {
        let mut from = 0;
        while from < count {
            // SAFETY: as in receive: zeroed headers pointing at our buffers.
            let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            let todo = count - from;
            for j in 0..todo {
                let i = from + j;
                iov[j].iov_base = self.tx(i).as_mut_ptr().cast();
                iov[j].iov_len = self.tx_len[i];
                let h = &mut hdrs[j].msg_hdr;
                h.msg_name = (&mut self.tx_addr[i].storage as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = self.tx_addr[i].len;
                h.msg_iov = &mut iov[j];
                h.msg_iovlen = 1;
            }
            // SAFETY: hdrs[..todo] are valid headers (see above).
            let sent = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    todo as libc::c_uint,
                    0,
                )
            };
            if sent <= 0 {
                // The first one failed (its own error, or the socket is shut
                // down): count it, go on with the next.
                Stats::bump(&self.inner.stats.send_errors);
                from += 1;
            } else {
                from += sent as usize;
            }
        }
    }
}

fn send_one(sock: &OwnedFd, bytes: &[u8], to: &RawAddr, flags: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the buffer and address are live for the call.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            flags,
            (&to.storage as *const libc::sockaddr_storage).cast(),
            to.len,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sends a forwarded query's reply from the runtime: never blocking a
/// worker thread, and only while the listener exists (a removed listener's
/// address must be free to bind again at once).
async fn send_forwarded(sock: &Weak<OwnedFd>, inner: &Inner, bytes: &[u8], to: SocketAddr) {
    let to = RawAddr::from_std(to);
    for _ in 0..FORWARD_SEND_TRIES {
        let Some(s) = sock.upgrade() else {
            return;
        };
        match send_one(&s, bytes, &to, libc::MSG_DONTWAIT) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        drop(s);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Stats::bump(&inner.stats.send_errors);
}
