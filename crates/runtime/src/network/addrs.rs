//! Watching the addresses inside a container's network namespace, so the
//! registry (and through it the NSS module and netd's DNS) knows them,
//! whatever gave them: netd's DHCP, a LAN's DHCP server, a static address
//! set in the guest. A netlink socket in the container's namespace joins the
//! address multicast groups; on any event the launcher re-reads the list.
//!
//! IPv6 link-local addresses are kept apart, each with the index of the
//! host-side link that reaches it (the veth's host end, or the bridge that
//! end is enslaved to), read with a second socket in the launcher's own
//! namespace: a resolver that can carry a scope id (`getaddrinfo`) hands
//! them out after the routable ones, as systemd's nss-mymachines does.

use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};

use netlink::{in_netns, Group, Netlink, Rtnl, RtnlError, Watch};

/// What the watch sees inside the container's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The usable addresses (see [`usable`]), sorted.
    pub routable: Vec<IpAddr>,
    /// Link-local addresses of veths with a host side, with that side's
    /// index in the launcher's namespace, sorted.
    pub link_local: Vec<(Ipv6Addr, u32)>,
}

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
    /// The launcher's own namespace, where the host sides are (opened at
    /// the first link-local address of a veth).
    host: Option<Netlink>,
    /// (container-side, host-side) veth names.
    veths: Vec<(String, String)>,
}

impl AddressWatch {
    /// Opens the watch inside the namespace `netns`; `veths` pairs each
    /// container-side veth name with its host-side name in ours.
    pub fn open_in(
        netns: BorrowedFd<'_>,
        veths: Vec<(String, String)>,
    ) -> Result<AddressWatch, RtnlError> {
        let (watch, nl) = in_netns(netns, || {
            let watch = Watch::open(&[Group::Ipv4Addr, Group::Ipv6Addr])?;
            Ok::<_, RtnlError>((watch, Netlink::open()?))
        })??;
        Ok(AddressWatch {
            watch,
            nl,
            host: None,
            veths,
        })
    }

    /// The descriptor to poll for events.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.watch.fd()
    }

    /// Drains pending events.
    pub fn drain(&self) {
        self.watch.drain();
    }

    /// The namespace's addresses, sorted. Only the routable ones can fail
    /// the call: the link-local ones are best effort.
    pub fn addresses(&mut self) -> Result<Seen, RtnlError> {
        let all = self.nl.addresses()?;
        let mut routable: Vec<IpAddr> = all.iter().map(|a| a.address).filter(usable).collect();
        routable.sort();
        routable.dedup();
        let link_local = self.link_local(&all).unwrap_or_else(|e| {
            tracing::debug!("link-local addresses: {e}");
            Vec::new()
        });
        Ok(Seen {
            routable,
            link_local,
        })
    }

    /// The link-local addresses of `all` on a veth's container side, with
    /// the index of what reaches them from the host.
    fn link_local(&mut self, all: &[netlink::Address]) -> Result<Vec<(Ipv6Addr, u32)>, RtnlError> {
        let mut out = Vec::new();
        if self.veths.is_empty() || !all.iter().any(|a| netlink::is_ipv6_link_local(&a.address)) {
            return Ok(out);
        }
        let links = self.nl.links()?;
        let host = match &mut self.host {
            Some(h) => h,
            None => self.host.insert(Netlink::open()?),
        };
        for a in all {
            let IpAddr::V6(v6) = a.address else {
                continue;
            };
            if !netlink::is_ipv6_link_local(&a.address) {
                continue;
            }
            let Some(name) = links.iter().find(|l| l.index == a.index).map(|l| &l.name) else {
                continue;
            };
            let Some((_, host_side)) = self.veths.iter().find(|(c, _)| c == name) else {
                continue;
            };
            // Gone already (the machine is stopping): nothing to reach.
            if let Some(index) = host_side_index(host, host_side)? {
                out.push((v6, index));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// The index of the link that reaches a container through the host-side
/// veth `name`: the bridge it is enslaved to, or the veth itself.
fn host_side_index(host: &mut impl Rtnl, name: &str) -> Result<Option<u32>, RtnlError> {
    Ok(host.link(name)?.map(|l| l.master.unwrap_or(l.index)))
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
    fn the_host_side_is_the_bridge_of_an_enslaved_veth() {
        let mut fake = netlink::fake::FakeRtnl::with_links(&[
            ("vz-lab", Some("bridge")),
            ("ve-a", Some("veth")),
            ("vb-b", Some("veth")),
        ]);
        let bridge = fake.links[0].index;
        let (a, b) = (fake.links[1].index, fake.links[2].index);
        fake.set_master(b, bridge).unwrap();
        assert_eq!(host_side_index(&mut fake, "ve-a").unwrap(), Some(a));
        assert_eq!(host_side_index(&mut fake, "vb-b").unwrap(), Some(bridge));
        assert_eq!(host_side_index(&mut fake, "nosuch").unwrap(), None);
    }

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
