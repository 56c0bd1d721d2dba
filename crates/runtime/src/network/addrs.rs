//! Watching the addresses inside a container's network namespace, so the
//! registry (and through it the NSS module and netd's DNS) knows them,
//! whatever gave them: netd's DHCP, a LAN's DHCP server, a static address
//! set in the guest. A netlink socket in the container's namespace joins the
//! address multicast groups; on any event the launcher re-reads the list.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};

use netlink::{in_netns, Group, Netlink, Rtnl, RtnlError, Watch};

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
                || netlink::is_ipv6_link_local(a))
        }
    }
}

/// Address events and queries for one network namespace.
pub struct AddressWatch {
    watch: Watch,
    nl: Netlink,
}

impl AddressWatch {
    /// Opens the watch inside the namespace `netns`.
    pub fn open_in(netns: BorrowedFd<'_>) -> Result<AddressWatch, RtnlError> {
        let (watch, nl) = in_netns(netns, || {
            let watch = Watch::open(&[Group::Ipv4Addr, Group::Ipv6Addr])?;
            Ok::<_, RtnlError>((watch, Netlink::open()?))
        })??;
        Ok(AddressWatch { watch, nl })
    }

    /// The descriptor to poll for events.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.watch.fd()
    }

    /// Drains pending events.
    pub fn drain(&self) {
        self.watch.drain();
    }

    /// The namespace's usable addresses, sorted.
    pub fn addresses(&mut self) -> Result<Vec<IpAddr>, RtnlError> {
        let mut out: Vec<IpAddr> = self
            .nl
            .addresses()?
            .into_iter()
            .map(|a| a.address)
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
