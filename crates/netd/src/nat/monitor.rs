//! Noticing nftables ruleset changes, to restore netd's table after someone
//! flushes or edits it.
//!
//! The kernel multicasts every committed nftables change (new/deleted table,
//! chain, rule, set, generation) to the netlink group `NFNLGRP_NFTABLES` of
//! `NETLINK_NETFILTER`; this is what `nft monitor` listens to. A raw socket in
//! that group needs no subprocess and sees changes made by any tool. Events of
//! netd's own `apply` arrive too; `ensure` then finds the table as wanted and
//! does nothing, so there is no loop.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::Nat;

/// `NFNLGRP_NFTABLES` from `linux/netfilter/nfnetlink.h`.
const NFNLGRP_NFTABLES: libc::c_int = 7;
/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nftables message's type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `struct nlmsghdr` is 16 bytes: len u32, type u16, flags u16, seq u32, pid u32.
const NLMSG_HDRLEN: usize = 16;
/// Quiet time after an event before reporting, so that one transaction (many
/// messages) gives one report.
const SETTLE: Duration = Duration::from_millis(20);

/// Counts the nftables change messages in one netlink datagram. Truncated or
/// malformed messages end the walk; nothing here can panic.
pub fn count_nftables_events(buf: &[u8]) -> usize {
    let mut off = 0usize;
    let mut n = 0;
    while let Some(hdr) = buf.get(off..off.saturating_add(NLMSG_HDRLEN)) {
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() - off {
            break;
        }
        if ty >> 8 == NFNL_SUBSYS_NFTABLES {
            n += 1;
        }
        // Messages are 4-byte aligned.
        match len.checked_add(3) {
            Some(l) => off += l & !3,
            None => break,
        }
    }
    n
}

/// A socket subscribed to nftables change events in the network namespace of
/// the thread that opened it.
#[derive(Debug)]
pub struct NftMonitor {
    fd: AsyncFd<OwnedFd>,
}

impl NftMonitor {
    /// Open the socket and join `NFNLGRP_NFTABLES`. Must be called inside a
    /// tokio runtime.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_nl is valid; we set the family.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let group = NFNLGRP_NFTABLES;
        // SAFETY: the option value is a c_int of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                &group as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd moves into the AsyncFd, which owns it from then
        // on: it is neither closed nor reused while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(NftMonitor { fd })
    }

    /// Wait until the ruleset changed (at least one nftables event, or lost
    /// events after a receive-buffer overrun), then let the burst settle.
    pub async fn changed(&mut self) -> io::Result<()> {
        while !self.drain().await? {}
        loop {
            tokio::time::sleep(SETTLE).await;
            // Keep draining while the burst goes on; stop once it is quiet.
            if !self.try_drain()? {
                return Ok(());
            }
        }
    }

    /// Wait for readability, then read everything queued; true if anything
    /// seen was a change.
    async fn drain(&mut self) -> io::Result<bool> {
        let mut guard = self.fd.readable().await?;
        let seen = self.try_drain()?;
        guard.clear_ready();
        Ok(seen)
    }

    fn try_drain(&self) -> io::Result<bool> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = false;
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(seen),
                    Some(libc::EINTR) => continue,
                    // Events were lost: treat as a change.
                    Some(libc::ENOBUFS) => seen = true,
                    _ => return Err(e),
                }
                continue;
            }
            let n = n as usize;
            if count_nftables_events(&buf[..n.min(buf.len())]) > 0 {
                seen = true;
            }
        }
    }
}

/// Watch nftables events in this thread's network namespace forever and call
/// [`Nat::ensure`] after each burst, so that a flushed or edited table is put
/// back. Errors of `ensure` are logged and watching goes on; an error of the
/// socket itself is returned. `ensure` runs `nft` (a few milliseconds) with the
/// lock held.
pub async fn watch_and_restore(nat: Arc<tokio::sync::Mutex<Nat>>) -> io::Result<()> {
    let mut mon = NftMonitor::open()?;
    loop {
        mon.changed().await?;
        let mut nat = nat.lock().await;
        match nat.ensure() {
            Ok(true) => tracing::info!("restored nftables table inet {}", super::TABLE),
            Ok(false) => {}
            Err(e) => tracing::warn!("restoring nftables table: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u16, payload: usize) -> Vec<u8> {
        let len = (NLMSG_HDRLEN + payload) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&[0u8; 10]);
        v.extend(std::iter::repeat_n(0u8, payload));
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn counts_nftables_messages() {
        // NFT_MSG_DELTABLE (2) and NEWGEN (15) of subsystem 10, then a ctnetlink
        // message (subsystem 1) that must not count.
        let mut buf = msg(10 << 8 | 2, 5);
        buf.extend(msg(10 << 8 | 15, 8));
        buf.extend(msg(1 << 8, 4));
        assert_eq!(count_nftables_events(&buf), 2);
    }

    #[test]
    fn malformed_input_never_panics() {
        let good = msg(10 << 8 | 2, 5);
        assert_eq!(count_nftables_events(&good[..20]), 0, "truncated body");
        assert_eq!(count_nftables_events(&[]), 0);
        let mut zero_len = good.clone();
        zero_len[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(count_nftables_events(&zero_len), 0);
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(count_nftables_events(&huge), 0);
        // Pseudo-random bytes, many lengths: must not panic.
        let mut x: u32 = 0x1234_5678;
        let mut buf = vec![0u8; 4096];
        for round in 0..100_000usize {
            for b in buf.iter_mut().take(64) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let _ = count_nftables_events(&buf[..round % 80]);
        }
    }
}
