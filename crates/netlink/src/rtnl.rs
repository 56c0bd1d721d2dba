//! The [`Rtnl`] trait: the link, address and route verbs netspawn's
//! binaries use, in one network namespace. [`crate::Netlink`] implements it
//! over the kernel, [`crate::fake::FakeRtnl`] in memory.
//!
//! Verbs that can be written with others (a plain address add, a link's
//! addresses, flushing them, removing its IPv6 link-local ones, the
//! default-route links, adding a default route) are provided methods, so
//! the fake and the kernel answer them the same way.

use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use crate::model::{
    is_ipv6_link_local, Address, AddressScope, Family, In6AddrGenMode, Link, NewLink, Route,
    RouteProtocol,
};
use crate::RtnlError;

/// Link, address and route verbs in one network namespace.
pub trait Rtnl {
    // Links.

    /// The link called `name`, if there is one.
    fn link(&mut self, name: &str) -> Result<Option<Link>, RtnlError>;
    /// Every link.
    fn links(&mut self) -> Result<Vec<Link>, RtnlError>;
    fn add(&mut self, link: &NewLink) -> Result<(), RtnlError>;
    fn set_up(&mut self, index: u32) -> Result<(), RtnlError>;
    fn set_master(&mut self, index: u32, master: u32) -> Result<(), RtnlError>;
    /// Deletes a link; a link that is already gone is success.
    fn delete(&mut self, index: u32) -> Result<(), RtnlError>;
    /// Moves a link into the namespace `netns` refers to, renaming it to `name`.
    fn move_to(&mut self, index: u32, netns: BorrowedFd<'_>, name: &str) -> Result<(), RtnlError>;
    /// Gives a link an alternative name (e.g. the full name of a shortened one).
    fn add_altname(&mut self, index: u32, altname: &str) -> Result<(), RtnlError>;
    /// Sets how the kernel makes the link's IPv6 link-local address
    /// (`IFLA_INET6_ADDR_GEN_MODE`; `None`: it makes none).
    /// `EAFNOSUPPORT` where the kernel keeps no IPv6 state for the link
    /// (booted with `ipv6.disable=1`, or an MTU below 1280).
    fn set_ipv6_addr_gen_mode(&mut self, index: u32, mode: In6AddrGenMode)
        -> Result<(), RtnlError>;
    /// Puts a link into an interface group (`IFLA_GROUP`; 0 is the default
    /// group), which firewall rules can match (`iifgroup`, `oifgroup`).
    fn set_group(&mut self, index: u32, group: u32) -> Result<(), RtnlError>;
    /// Deletes every link in interface group `group` with one request
    /// (`RTM_DELLINK` with `IFLA_GROUP`): the kernel unregisters them as one
    /// batch, so the RCU waits that each deletion has after the rtnl lock is
    /// released happen once for all of them. Group 0 (every link's default)
    /// is refused; ENODEV if no link is in the group.
    fn delete_group(&mut self, group: u32) -> Result<(), RtnlError>;

    /// Whether the link called `name` is operationally up (`IFF_RUNNING`:
    /// up, with carrier, and its transmit queue activated by the kernel's
    /// link watch, so that what is sent on it is no longer dropped).
    /// `false` when there is no such link.
    fn is_running(&mut self, name: &str) -> Result<bool, RtnlError> {
        Ok(self.link(name)?.is_some_and(|l| l.up))
    }

    /// The link with this index, if there is one.
    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, RtnlError> {
        Ok(self.links()?.into_iter().find(|l| l.index == index))
    }

    // Addresses.

    /// Every address on every link.
    fn addresses(&mut self) -> Result<Vec<Address>, RtnlError>;
    /// Adds `address/prefix_len` with `scope` to a link (`Link` for an
    /// IPv4 link-local address); `EEXIST` when it is there already.
    fn add_address_scoped(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
        scope: AddressScope,
    ) -> Result<(), RtnlError>;
    /// Removes `address/prefix_len` from a link; `EADDRNOTAVAIL` when it is not there.
    fn delete_address(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), RtnlError>;

    /// Adds `address/prefix_len` to a link (scope universe, as `ip address
    /// add` does); `EEXIST` when it is there already.
    fn add_address(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), RtnlError> {
        self.add_address_scoped(index, address, prefix_len, AddressScope::Universe)
    }

    /// Adds an IPv6 `address/prefix_len` (scope universe, or link for
    /// `fe80::/10`) that is usable at once: no duplicate address detection
    /// (`IFA_F_NODAD`, as `ip address add ... nodad`). For the host side of
    /// a container link, which is the only one to take such an address.
    /// `EEXIST` when it is there already.
    fn add_address_nodad(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), RtnlError> {
        self.add_address(index, address, prefix_len)
    }

    /// The addresses on one link.
    fn link_addresses(&mut self, index: u32) -> Result<Vec<Address>, RtnlError> {
        Ok(self
            .addresses()?
            .into_iter()
            .filter(|a| a.index == index)
            .collect())
    }

    /// Removes every address from a link (one that vanished meanwhile is fine).
    fn flush_addresses(&mut self, index: u32) -> Result<(), RtnlError> {
        for a in self.link_addresses(index)? {
            match self.delete_address(index, a.address, a.prefix_len) {
                Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// Removes a link's IPv6 link-local (`fe80::/10`) addresses; returns
    /// how many went (one that vanished meanwhile is fine).
    fn remove_ipv6_link_local(&mut self, index: u32) -> Result<usize, RtnlError> {
        let mut removed = 0;
        for a in self.link_addresses(index)? {
            if !is_ipv6_link_local(&a.address) {
                continue;
            }
            match self.delete_address(index, a.address, a.prefix_len) {
                Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
                r => {
                    r?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    // Traffic control.

    /// Sends a traffic-control request ([`crate::tc`]): deleting what is
    /// not there is success.
    fn tc(&mut self, req: &crate::tc::TcRequest) -> Result<(), RtnlError>;
    /// The kinds of the qdiscs on a link (`"tbf"`, `"clsact"`, …).
    fn qdisc_kinds(&mut self, index: u32) -> Result<Vec<String>, RtnlError>;

    // Routes.

    /// Every route of a family, in every table.
    fn routes(&mut self, family: Family) -> Result<Vec<Route>, RtnlError>;
    /// Adds a route; `EEXIST` when an equal one is there already.
    fn add_route(&mut self, route: &Route) -> Result<(), RtnlError>;
    /// Deletes a route; `ESRCH` when there is none like it.
    fn delete_route(&mut self, route: &Route) -> Result<(), RtnlError>;

    /// Indexes of the links that carry a default route (IPv4 or IPv6).
    fn default_route_links(&mut self) -> Result<Vec<u32>, RtnlError> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            for r in self.routes(family)? {
                if let (true, Some(i)) = (r.is_default(), r.oif) {
                    if !out.contains(&i) {
                        out.push(i);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds the default route via `gateway` on link `index`, with
    /// `source` as preferred source address.
    fn add_default_route(
        &mut self,
        index: u32,
        gateway: IpAddr,
        source: Option<IpAddr>,
        protocol: RouteProtocol,
    ) -> Result<(), RtnlError> {
        self.add_route(&Route {
            source,
            protocol,
            ..Route::default_via(gateway, index)
        })
    }
}
