//! What the verbs speak in: links, addresses and routes as plain values,
//! free of netlink's message types, so the fake and the callers need no
//! knowledge of the wire.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use rtnetlink::packet_route::address::AddressScope;
pub use rtnetlink::packet_route::link::In6AddrGenMode;
pub use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};

/// A MAC address.
pub type Mac = [u8; 6];

/// The main routing table (`RT_TABLE_MAIN`).
pub const TABLE_MAIN: u32 = 254;

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// "veth", "bridge", "macvlan", ... (None for physical devices).
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub up: bool,
    /// Its interface group (`IFLA_GROUP`; 0, the default group, if none).
    pub group: u32,
}

/// A link to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewLink {
    /// A veth pair; the peer goes into the network namespace of `peer_netns_pid`.
    Veth {
        name: String,
        mac: Mac,
        peer: String,
        peer_mac: Mac,
        peer_netns_pid: u32,
        master: Option<u32>,
    },
    /// A veth pair made straight between two network namespaces, `name` in
    /// that of `netns_pid` (up) and `peer` in that of `peer_netns_pid` (down:
    /// the kernel cannot open a peer before the pair is joined, ENOTCONN):
    /// no end is moved afterwards (moving a link to another namespace waits
    /// for an RCU grace period, 10-20 ms here).
    VethBetween {
        name: String,
        mac: Mac,
        netns_pid: u32,
        peer: String,
        peer_mac: Mac,
        peer_netns_pid: u32,
    },
    Bridge {
        name: String,
    },
    /// A macvlan (bridge mode) on `parent`, created straight in the namespace of `netns_pid`.
    MacVlan {
        name: String,
        parent: u32,
        mac: Mac,
        netns_pid: u32,
    },
    /// An ipvlan (L2 mode) on `parent`, created straight in the namespace of `netns_pid`.
    IpVlan {
        name: String,
        parent: u32,
        netns_pid: u32,
    },
}

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The link's index.
    pub index: u32,
    /// The address (`IFA_ADDRESS`; the local one on all but point-to-point links).
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(a: &IpAddr) -> Family {
        match a {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The family's unspecified address (the destination of a default route).
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// A route. A default route has prefix length 0 (its destination is the
/// unspecified address of its family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// The output link's index.
    pub oif: Option<u32>,
    /// The preferred source address (`RTA_PREFSRC`).
    pub source: Option<IpAddr>,
    pub scope: RouteScope,
    pub protocol: RouteProtocol,
    pub table: u32,
    /// The route's priority (metric), when it has one.
    pub metric: Option<u32>,
}

impl Route {
    /// A route to `destination/prefix_len` in the main table: scope
    /// universe, protocol static (as `ip route add` makes it).
    pub fn to(destination: IpAddr, prefix_len: u8) -> Route {
        Route {
            destination,
            prefix_len,
            gateway: None,
            oif: None,
            source: None,
            scope: RouteScope::Universe,
            protocol: RouteProtocol::Static,
            table: TABLE_MAIN,
            metric: None,
        }
    }

    /// The default route via `gateway` on link `oif`.
    pub fn default_via(gateway: IpAddr, oif: u32) -> Route {
        Route {
            gateway: Some(gateway),
            oif: Some(oif),
            ..Route::to(Family::of(&gateway).unspecified(), 0)
        }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.destination)
    }

    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }

    /// True when `a` lies inside the route's destination prefix.
    pub fn contains(&self, a: &IpAddr) -> bool {
        prefix_contains(&self.destination, self.prefix_len, a)
    }
}

/// True when `a` lies in `net/prefix_len` (false across families).
pub fn prefix_contains(net: &IpAddr, prefix_len: u8, a: &IpAddr) -> bool {
    match (net, a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0);
            n.to_bits() & mask == a.to_bits() & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len.min(128)))
                .unwrap_or(0);
            n.to_bits() & mask == a.to_bits() & mask
        }
        _ => false,
    }
}

/// True for an IPv6 link-local address (`fe80::/10`).
pub fn is_ipv6_link_local(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// `a` with every bit past `prefix_len` cleared (the network of a prefix).
pub fn prefix_network(a: &IpAddr, prefix_len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_contain_what_they_cover() {
        for (net, len, a, want) in [
            ("10.0.0.0", 24, "10.0.0.77", true),
            ("10.0.0.0", 24, "10.0.1.1", false),
            ("10.0.0.1", 32, "10.0.0.1", true),
            ("10.0.0.1", 32, "10.0.0.2", false),
            ("0.0.0.0", 0, "192.0.2.1", true),
            ("fd00::", 64, "fd00::9", true),
            ("fd00::", 64, "fd01::9", false),
            ("::", 0, "2001:db8::1", true),
            ("0.0.0.0", 0, "::1", false),
        ] {
            assert_eq!(
                prefix_contains(&ip(net), len, &ip(a)),
                want,
                "{net}/{len} ∋ {a}"
            );
        }
        assert_eq!(prefix_network(&ip("10.1.2.3"), 16), ip("10.1.0.0"));
        assert_eq!(prefix_network(&ip("fd00::1:2"), 112), ip("fd00::1:0"));
        assert_eq!(prefix_network(&ip("10.1.2.3"), 0), ip("0.0.0.0"));
    }

    #[test]
    fn ipv6_link_local_is_fe80_slash_10() {
        for (a, want) in [
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", false),
            ("fd00::1", false),
            ("169.254.1.1", false),
        ] {
            assert_eq!(is_ipv6_link_local(&ip(a)), want, "{a}");
        }
    }

    #[test]
    fn a_default_route_is_the_whole_family() {
        let r = Route::default_via(ip("10.0.0.1"), 3);
        assert!(r.is_default());
        assert_eq!(r.destination, ip("0.0.0.0"));
        assert_eq!(r.family(), Family::V4);
        assert_eq!(r.table, TABLE_MAIN);
        let r6 = Route::default_via(ip("fe80::1"), 3);
        assert_eq!(r6.destination, ip("::"));
        assert_eq!(r6.family(), Family::V6);
    }
}
