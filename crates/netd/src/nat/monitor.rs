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
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::Nat;

/// `NFNLGRP_NFTABLES` from `linux/netfilter/nfnetlink.h`.
const NFNLGRP_NFTABLES: u32 = 7;
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
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        // Joining by the bind-time group mask: the group's number is below
        // 32, so this is the same subscription as NETLINK_ADD_MEMBERSHIP.
        bind(
            fd.as_raw_fd(),
            &NetlinkAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)),
        )?;
        let fd = crate::sys::async_fd(fd, Interest::READABLE)?;
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
            let n = match recv(self.fd.get_ref().as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(seen),
                Err(Errno::EINTR) => continue,
                // Events were lost: treat as a change.
                Err(Errno::ENOBUFS) => {
                    seen = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
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
