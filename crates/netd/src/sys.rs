//! The few system calls netd makes that nix only offers as `unsafe` (or not at all), each behind
//! a small safe wrapper whose `SAFETY` comments say why it is sound. Everything else goes
//! through nix's safe API at the call site (sockets, socket options, `recvmmsg`/`sendmmsg`,
//! inotify, poll). The daemon's `fork` stays in `main.rs`: it is sound only while the process
//! has one thread, which no wrapper here could promise.

use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `fd` with the current tokio reactor for `interest`. Must be called inside a tokio
/// runtime (tokio panics otherwise).
pub fn async_fd(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd moves into the AsyncFd, which owns it from then on: it stays open and
    // is the same descriptor (OwnedFd::as_raw_fd never changes) until the AsyncFd is dropped or
    // gives it back.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

/// Zeroed memory in an anonymous mapping of its own: its pages cost nothing until they are
/// written to, whatever the allocator's thresholds (netd may serve a hundred links, most of
/// them idle, each with a DNS listener's buffers).
pub struct AnonBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving the owner to another thread moves
// the only way to reach it.
unsafe impl Send for AnonBuffer {}

impl AnonBuffer {
    /// Maps `len` zeroed bytes, readable and writable (at least one byte).
    pub fn new(len: usize) -> std::io::Result<AnonBuffer> {
        let size = NonZeroUsize::new(len).unwrap_or(NonZeroUsize::MIN);
        // SAFETY: a fresh private anonymous mapping at an address the kernel picks: it cannot
        // overlap or alias any memory Rust already knows about.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }?;
        Ok(AnonBuffer {
            ptr: ptr.cast(),
            len: size.get(),
        })
    }
}

impl Deref for AnonBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: ptr/len describe our live mapping, readable, zero-filled by the kernel (so
        // initialized), and only reachable through self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AnonBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and writable; the slice borrows self mutably, so it is the
        // only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AnonBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped; no slice of it outlives self.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// `SO_BINDTOIFINDEX` (Linux 5.0; the value of every architecture netd is built for except
/// mips, parisc and sparc): the index of the device a socket is bound to, 0 for none.
const SO_BINDTOIFINDEX: libc::c_int = 62;

/// getsockopt(2) into `buf`; returns the length the kernel wrote.
fn getsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut len = libc::socklen_t::try_from(buf.len()).unwrap_or(libc::socklen_t::MAX);
    // SAFETY: buf is valid and writable for len bytes; the kernel writes at most len bytes
    // there and stores the length it wrote in len, which lives across the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(len).unwrap_or(0).min(buf.len()))
}

/// setsockopt(2) with the option's value as bytes (for the options nix has no type for).
fn setsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> std::io::Result<()> {
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: value is valid for reading len bytes for the duration of the call; the kernel
    // copies them and keeps no pointer.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `ICMP6_FILTER` (linux/icmpv6.h): which ICMPv6 types a raw ICMPv6 socket receives.
const ICMP6_FILTER: libc::c_int = 1;

/// Lets only the ICMPv6 types in `pass` through to a raw ICMPv6 socket (Linux's filter: a set
/// bit blocks the type).
pub fn set_icmp6_filter(fd: BorrowedFd<'_>, pass: &[u8]) -> std::io::Result<()> {
    let mut words = [u32::MAX; 8];
    for t in pass {
        words[usize::from(*t >> 5)] &= !(1u32 << (t & 31));
    }
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    setsockopt_bytes(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &bytes)
}

/// Joins the IPv6 multicast `group` on the interface `ifindex` (`IPV6_ADD_MEMBERSHIP` with
/// the interface given, which nix's request type leaves at 0).
pub fn join_ipv6_group(
    fd: BorrowedFd<'_>,
    group: std::net::Ipv6Addr,
    ifindex: u32,
) -> std::io::Result<()> {
    // struct ipv6_mreq: the group, then the interface index as an int.
    let mut v = group.octets().to_vec();
    v.extend_from_slice(&ifindex.to_ne_bytes());
    setsockopt_bytes(fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &v)
}

/// `IPV6_MULTICAST_LOOP`: whether the socket's own multicasts come back to the host.
pub fn set_ipv6_multicast_loop(fd: BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    let v = libc::c_int::from(on);
    setsockopt_bytes(
        fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_MULTICAST_LOOP,
        &v.to_ne_bytes(),
    )
}

/// `SIOCGIFHWADDR` (linux/sockios.h).
const SIOCGIFHWADDR: libc::c_ulong = 0x8927;

/// The Ethernet address of the interface `ifname`, asked through any socket `fd` of the
/// namespace (`SIOCGIFHWADDR`).
pub fn hw_addr(fd: BorrowedFd<'_>, ifname: &str) -> std::io::Result<[u8; 6]> {
    // struct ifreq: the name in 16 bytes, then a union of at most 24 bytes; for this request
    // a struct sockaddr whose sa_data (after the 2-byte family) starts with the address.
    let mut req = [0u8; 40];
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= 16 || name.contains(&0) {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    req[..name.len()].copy_from_slice(name);
    // SAFETY: req is as large as struct ifreq (40 bytes on 64-bit Linux, 32 on 32-bit) and
    // writable; the kernel reads the name and writes the address into it during the call and
    // keeps no pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGIFHWADDR as _, req.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req[18..24]);
    Ok(mac)
}

/// The device index a socket is bound to (SO_BINDTODEVICE), 0 if none.
pub fn bound_ifindex(fd: BorrowedFd<'_>) -> std::io::Result<u32> {
    let mut buf = [0u8; 4];
    let n = getsockopt_bytes(fd, libc::SOL_SOCKET, SO_BINDTOIFINDEX, &mut buf)?;
    if n != 4 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidData));
    }
    Ok(u32::from_ne_bytes(buf))
}

/// The interface an accepted TCP connection's handshake arrived on, from `IP_PKTOPTIONS`
/// (`IPV6_2292PKTOPTIONS` for IPv6): Linux records the arriving interface of the packet that
/// completed the handshake in the new socket and reports it there as the `ipi_ifindex` of an
/// `IP_PKTINFO` control message, provided `IP_PKTINFO` (`IPV6_RECVPKTINFO`) was set on the
/// listener, from which the connection inherits it. `None`: no such message.
pub fn tcp_arrival_ifindex(fd: BorrowedFd<'_>, v6: bool) -> std::io::Result<Option<u32>> {
    let mut buf = [0u8; 256];
    let (level, opt) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_2292PKTOPTIONS)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTOPTIONS)
    };
    let n = getsockopt_bytes(fd, level, opt, &mut buf)?;
    Ok(pktinfo_ifindex(buf.get(..n).unwrap_or_default(), v6))
}

/// The interface index of the first `IP_PKTINFO`/`IPV6_PKTINFO` message in a control buffer.
/// Read field by field with the kernel's layout (`struct cmsghdr`: a `size_t` length, then
/// level and type as ints; data aligned to `size_t`), without pointer casts.
fn pktinfo_ifindex(buf: &[u8], v6: bool) -> Option<u32> {
    const W: usize = size_of::<usize>();
    let align = |x: usize| x.div_ceil(W) * W;
    let hdr = align(size_of::<libc::cmsghdr>());
    let int = |at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
    };
    let mut off = 0;
    while off + hdr <= buf.len() {
        let len = usize::from_ne_bytes(buf.get(off..off + W)?.try_into().ok()?);
        if len < hdr {
            return None;
        }
        let (level, ty) = (int(off + W)?, int(off + W + 4)?);
        let data = off + hdr;
        let found = if v6 {
            // struct in6_pktinfo: the address (16 bytes), then the index.
            (level == libc::IPPROTO_IPV6
                && (ty == libc::IPV6_PKTINFO || ty == libc::IPV6_2292PKTINFO))
                .then(|| int(data + 16))
        } else {
            // struct in_pktinfo: the index first.
            (level == libc::IPPROTO_IP && ty == libc::IP_PKTINFO).then(|| int(data))
        };
        if let Some(ix) = found {
            return ix.and_then(|i| u32::try_from(i).ok());
        }
        off += align(len);
    }
    None
}

/// The open-file limit netd asks for at start (systemd's default hard limit
/// for services), capped by the kernel's `fs.nr_open`.
pub const NOFILE_WANTED: u64 = 512 * 1024;

/// Raises the process's open-file limit: every link netd serves holds about
/// ten descriptors (its DHCP socket, a UDP and a TCP DNS listener per address,
/// router advertisements, ...), so the soft limit of 1024 a shell or a
/// systemd service starts with ran out at about a hundred machines with `-n`
/// (their links then got no DNS, no NAT, no router advertisements). netd
/// waits with epoll and never `select`, which is why the soft limit is 1024
/// elsewhere. The hard limit is raised too where allowed (root on the host),
/// else the soft one goes up to the hard one. Returns the soft limit now.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let wanted = NOFILE_WANTED.min(nr_open).max(soft);
    if wanted > hard && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return Ok(wanted);
    }
    let soft_now = wanted.min(hard);
    if soft_now > soft {
        setrlimit(Resource::RLIMIT_NOFILE, soft_now, hard)?;
    }
    Ok(soft_now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anon_buffer_is_zeroed_writable_and_sized() {
        let mut b = AnonBuffer::new(3 * 4096 + 5).unwrap();
        assert_eq!(b.len(), 3 * 4096 + 5);
        assert!(b.iter().all(|x| *x == 0));
        b[4096] = 7;
        let last = b.len() - 1;
        b[last] = 9;
        assert_eq!((b[4096], b[last]), (7, 9));
        let moved = std::thread::spawn(move || b[4096]).join().unwrap();
        assert_eq!(moved, 7);
        assert_eq!(AnonBuffer::new(0).unwrap().len(), 1);
    }
}
