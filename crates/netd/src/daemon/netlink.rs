//! The netlink verbs the link pipeline uses, behind a small trait
//! ([`LinkOps`]): rtnetlink's [`rtnetlink::Handle`] in the daemon, a
//! recording fake in the pipeline's unit tests. Errors are one line of
//! text: the steps log them and go on, as they always have.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute};

/// What the link pipeline asks of the kernel.
pub(super) trait LinkOps {
    /// Adds `addr` (with its prefix) to link `index`, with link scope if
    /// `scope_link`. `Ok(false)`: it was there already (EEXIST).
    async fn add_address(
        &self,
        index: u32,
        addr: IpNetwork,
        scope_link: bool,
    ) -> Result<bool, String>;

    /// Sets the link up.
    async fn set_up(&self, index: u32) -> Result<(), String>;

    /// IFLA_INET6_ADDR_GEN_MODE none: the kernel makes no IPv6 link-local
    /// address for the link.
    async fn ipv6_addr_gen_none(&self, index: u32) -> Result<(), String>;

    /// Removes the link's `fe80::/10` addresses; returns how many.
    async fn remove_ipv6_link_local(&self, index: u32) -> Result<usize, String>;

    /// The host's addresses and IPv4 routes, which pools must avoid.
    async fn host_networks(&self) -> Vec<IpNetwork>;
}

/// True if `e` is the kernel saying "already there": EEXIST, by the errno
/// a netlink error carries (negated).
pub(super) fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == nix::libc::EEXIST)
}

fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

impl LinkOps for rtnetlink::Handle {
    async fn add_address(
        &self,
        index: u32,
        addr: IpNetwork,
        scope_link: bool,
    ) -> Result<bool, String> {
        let mut req = self.address().add(index, addr.ip(), addr.prefix());
        if scope_link {
            req.message_mut().header.scope = AddressScope::Link;
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_exists(&e) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn set_up(&self, index: u32) -> Result<(), String> {
        let up = rtnetlink::LinkUnspec::new_with_index(index).up().build();
        self.link()
            .set(up)
            .execute()
            .await
            .map_err(|e| e.to_string())
    }

    async fn ipv6_addr_gen_none(&self, index: u32) -> Result<(), String> {
        let none = rtnetlink::LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        self.link()
            .set(none)
            .execute()
            .await
            .map_err(|e| e.to_string())
    }

    async fn remove_ipv6_link_local(&self, index: u32) -> Result<usize, String> {
        let addrs: Vec<_> = self
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let mut removed = 0;
        for a in addrs {
            let link_local = a.attributes.iter().any(
                |attr| matches!(attr, AddressAttribute::Address(ip) if is_ipv6_link_local(ip)),
            );
            if link_local {
                self.address()
                    .del(a)
                    .execute()
                    .await
                    .map_err(|e| e.to_string())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn host_networks(&self) -> Vec<IpNetwork> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        let mut out = Vec::new();
        if let Ok(addrs) = self.address().get().execute().try_collect::<Vec<_>>().await {
            for a in addrs {
                for attr in &a.attributes {
                    if let AddressAttribute::Address(ip) = attr {
                        if let Ok(n) = IpNetwork::new(*ip, a.header.prefix_len) {
                            out.push(n);
                        }
                    }
                }
            }
        }
        let req = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
        if let Ok(routes) = self
            .route()
            .get(req)
            .execute()
            .try_collect::<Vec<_>>()
            .await
        {
            for r in routes {
                for attr in &r.attributes {
                    if let RouteAttribute::Destination(RouteAddress::Inet(ip)) = attr {
                        if let Ok(n) =
                            IpNetwork::new(IpAddr::V4(*ip), r.header.destination_prefix_length)
                        {
                            out.push(n);
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eexist_by_errno() {
        let mut m = rtnetlink::packet_core::ErrorMessage::default();
        m.code = std::num::NonZeroI32::new(-nix::libc::EEXIST);
        assert!(is_exists(&rtnetlink::Error::NetlinkError(m.clone())));
        m.code = std::num::NonZeroI32::new(-nix::libc::ENODEV);
        assert!(!is_exists(&rtnetlink::Error::NetlinkError(m)));
        assert!(!is_exists(&rtnetlink::Error::RequestFailed));
    }

    #[test]
    fn ipv6_link_local_is_fe80_slash_10() {
        for (ip, want) in [
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", false),
            ("fd00::1", false),
            ("169.254.1.1", false),
        ] {
            assert_eq!(is_ipv6_link_local(&ip.parse().unwrap()), want, "{ip}");
        }
    }
}

/// A recording fake for the pipeline's unit tests.
#[cfg(test)]
pub(super) mod fake {
    use std::sync::Mutex;

    use super::*;

    /// One call, as the fake saw it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        AddAddress(u32, IpNetwork, bool),
        SetUp(u32),
        Ipv6AddrGenNone(u32),
        RemoveIpv6LinkLocal(u32),
    }

    /// Records calls; addresses in `existing` answer EEXIST, and with
    /// `no_ipv6` the address generation mode cannot be set.
    #[derive(Default)]
    pub struct Fake {
        pub calls: Mutex<Vec<Call>>,
        pub existing: Vec<IpNetwork>,
        pub host: Vec<IpNetwork>,
        pub no_ipv6: bool,
    }

    impl Fake {
        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        fn record(&self, c: Call) {
            self.calls.lock().unwrap().push(c);
        }
    }

    impl LinkOps for Fake {
        async fn add_address(
            &self,
            index: u32,
            addr: IpNetwork,
            scope_link: bool,
        ) -> Result<bool, String> {
            self.record(Call::AddAddress(index, addr, scope_link));
            Ok(!self.existing.contains(&addr))
        }

        async fn set_up(&self, index: u32) -> Result<(), String> {
            self.record(Call::SetUp(index));
            Ok(())
        }

        async fn ipv6_addr_gen_none(&self, index: u32) -> Result<(), String> {
            self.record(Call::Ipv6AddrGenNone(index));
            if self.no_ipv6 {
                return Err("Address family not supported by protocol".into());
            }
            Ok(())
        }

        async fn remove_ipv6_link_local(&self, index: u32) -> Result<usize, String> {
            self.record(Call::RemoveIpv6LinkLocal(index));
            Ok(1)
        }

        async fn host_networks(&self) -> Vec<IpNetwork> {
            self.host.clone()
        }
    }
}
