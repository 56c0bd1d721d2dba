//! Watching the addresses inside a container's network namespace, so the
//! registry (and through it the NSS module and netd's DNS) knows them,
//! whatever gave them: netd's DHCP, a LAN's DHCP server, a static address
//! set in the guest. A netlink socket in the container's namespace joins the
//! address multicast groups; on any event the launcher re-reads the list.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::rtnl::{Netlink, RtnlError};

const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// True for addresses worth publishing: not loopback, link-local,
/// unspecified or multicast.
pub fn usable(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Address events and queries for one network namespace.
pub struct AddressWatch {
    sock: Socket,
    nl: Netlink,
}

impl AddressWatch {
    /// Opens the watch inside the namespace `netns`.
    pub fn open_in(netns: BorrowedFd<'_>) -> Result<AddressWatch, RtnlError> {
        let err = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| RtnlError::Other {
                what,
                msg: e.to_string(),
            }
        };
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(err("open own network namespace"))?;
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            RtnlError::Kernel {
                what: "enter network namespace".into(),
                errno: e as i32,
            }
        })?;
        let sock = (|| {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind(&SocketAddr::new(0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))?;
            s.set_non_blocking(true)?;
            Ok::<_, std::io::Error>(s)
        })();
        let back = nix::sched::setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET);
        let sock = sock.map_err(err("address event socket"))?;
        back.map_err(|e| RtnlError::Kernel {
            what: "return to own network namespace".into(),
            errno: e as i32,
        })?;
        Ok(AddressWatch {
            sock,
            nl: Netlink::open_in(netns)?,
        })
    }

    /// The descriptor to poll for events.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the socket lives as long as self.
        unsafe { BorrowedFd::borrow_raw(self.sock.as_raw_fd()) }
    }

    /// Drains pending events.
    pub fn drain(&self) {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = self.sock.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
            if n == 0 {
                break;
            }
        }
    }

    /// The namespace's usable addresses, sorted.
    pub fn addresses(&mut self) -> Result<Vec<IpAddr>, RtnlError> {
        let h = self.nl.handle().clone();
        let msgs: Vec<_> = self
            .nl
            .block_on(async move { h.address().get().execute().try_collect::<Vec<_>>().await })
            .map_err(|e| RtnlError::Other {
                what: "list addresses".into(),
                msg: e.to_string(),
            })?;
        let mut out: Vec<IpAddr> = msgs
            .iter()
            .flat_map(|m| m.attributes.iter())
            .filter_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
            .filter(usable)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl AsFd for AddressWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routable_addresses_are_published() {
        for (a, ok) in [
            ("10.0.0.2", true),
            ("192.168.1.9", true),
            ("fd00::5", true),
            ("2001:db8::1", true),
            ("127.0.0.1", false),
            ("169.254.3.4", false),
            ("::1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("ff02::1", false),
            ("0.0.0.0", false),
        ] {
            assert_eq!(usable(&a.parse().unwrap()), ok, "{a}");
        }
    }
}
