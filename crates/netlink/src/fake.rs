//! An in-memory [`Rtnl`] for unit tests: links, addresses and routes live
//! in lists and follow the kernel's rules where callers depend on them
//! (`EEXIST` for a second equal address or route, `ENODEV` for a missing
//! link, `ENETUNREACH` for a gateway no route on its link covers, a deleted
//! link taking its addresses and routes along, `EAFNOSUPPORT` for IPv6
//! where the fake host has none). Links given to another namespace are
//! recorded there. A link can be made to vanish after a number of requests
//! ([`FakeRtnl::vanish`]), as when its machine dies while a caller works on it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::model::{
    is_ipv6_link_local, prefix_network, Address, AddressScope, Family, In6AddrGenMode, Link,
    NewLink, Route, RouteScope,
};
use crate::{RouteProtocol, Rtnl, RtnlError};

#[derive(Debug, Default)]
pub struct FakeRtnl {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    next: u32,
    /// Links created in, or moved to, another namespace: (netns pid or fd, name).
    pub moved_out: Vec<(i64, String)>,
    /// Every request that changes something, in order, for assertions.
    pub log: Vec<String>,
    /// Kinds this fake kernel refuses with EOPNOTSUPP (e.g. "ipvlan").
    pub unsupported: Vec<&'static str>,
    /// A host without IPv6: IPv6 addresses and settings are refused with
    /// EAFNOSUPPORT.
    pub no_ipv6: bool,
    /// The IPv6 address generation mode set on a link, by index.
    pub ipv6_addr_gen: HashMap<u32, In6AddrGenMode>,
    /// The interface group set on a link, by index (absent: the default, 0).
    pub groups: HashMap<u32, u32>,
    /// See [`FakeRtnl::vanish`].
    pub vanish: Option<(u32, usize)>,
    /// Qdisc kinds per link index, as traffic-control requests left them.
    pub qdiscs: HashMap<u32, Vec<String>>,
    /// Qdisc kinds this fake kernel does not have (ENOENT, as a kernel
    /// without the module): e.g. "netem".
    pub missing_qdiscs: Vec<&'static str>,
}

impl FakeRtnl {
    pub fn with_links(names: &[(&str, Option<&str>)]) -> FakeRtnl {
        let mut f = FakeRtnl {
            next: 1,
            ..Default::default()
        };
        for (n, k) in names {
            f.insert(n, k.map(str::to_string), None);
        }
        f
    }

    /// Link `index` goes away, as if someone else deleted it, once this
    /// many more requests that change something have been made.
    pub fn vanish(&mut self, index: u32, after: usize) {
        self.vanish = Some((index, after));
    }

    /// Notes a request in the log; a link due to vanish goes first.
    fn request(&mut self, what: String) {
        match self.vanish {
            Some((index, 0)) => {
                self.vanish = None;
                self.remove(index);
            }
            Some((index, n)) => self.vanish = Some((index, n - 1)),
            None => {}
        }
        self.log.push(what);
    }

    /// A link goes, and its addresses and routes with it.
    fn remove(&mut self, index: u32) {
        self.links.retain(|l| l.index != index);
        self.addresses.retain(|a| a.index != index);
        self.routes.retain(|r| r.oif != Some(index));
        self.ipv6_addr_gen.remove(&index);
    }

    fn eafnosupport(what: impl Into<String>) -> RtnlError {
        RtnlError::kernel(what, libc::EAFNOSUPPORT)
    }

    fn insert(&mut self, name: &str, kind: Option<String>, master: Option<u32>) -> u32 {
        self.next += 1;
        self.links.push(Link {
            index: self.next,
            name: name.into(),
            kind,
            master,
            up: true,
            group: 0,
        });
        self.next
    }

    fn exists(&self, name: &str) -> bool {
        self.links.iter().any(|l| l.name == name)
    }

    fn has_index(&self, index: u32) -> bool {
        self.links.iter().any(|l| l.index == index)
    }

    fn eexist(what: &str) -> RtnlError {
        RtnlError::kernel(what, libc::EEXIST)
    }

    fn enodev(what: impl Into<String>) -> RtnlError {
        RtnlError::kernel(what, libc::ENODEV)
    }

    /// The prefix route the kernel adds with an address.
    fn prefix_route(index: u32, address: IpAddr, prefix_len: u8) -> Route {
        Route {
            oif: Some(index),
            source: Some(address),
            scope: RouteScope::Link,
            protocol: RouteProtocol::Kernel,
            ..Route::to(prefix_network(&address, prefix_len), prefix_len)
        }
    }

    /// Two routes the kernel would take for the same one.
    fn same_route(a: &Route, b: &Route) -> bool {
        a.destination == b.destination
            && a.prefix_len == b.prefix_len
            && a.table == b.table
            && a.metric.unwrap_or(0) == b.metric.unwrap_or(0)
    }
}

/// The kind a qdisc has in the kernel's answers.
fn qdisc_kind(q: &crate::tc::Qdisc) -> &'static str {
    use crate::tc::Qdisc;
    match q {
        Qdisc::Tbf { .. } => "tbf",
        Qdisc::Htb { .. } => "htb",
        Qdisc::Bfifo { .. } => "bfifo",
        Qdisc::Netem { .. } => "netem",
    }
}

impl Rtnl for FakeRtnl {
    fn link(&mut self, name: &str) -> Result<Option<Link>, RtnlError> {
        Ok(self.links.iter().find(|l| l.name == name).cloned())
    }

    fn links(&mut self) -> Result<Vec<Link>, RtnlError> {
        Ok(self.links.clone())
    }

    fn add(&mut self, link: &NewLink) -> Result<(), RtnlError> {
        self.request(format!("add {link:?}"));
        match link {
            NewLink::Veth {
                name,
                peer,
                peer_netns_pid,
                master,
                ..
            } => {
                if self.exists(name) {
                    return Err(Self::eexist(name));
                }
                if let Some(m) = master {
                    if !self.has_index(*m) {
                        return Err(Self::enodev(name.clone()));
                    }
                }
                self.insert(name, Some("veth".into()), *master);
                self.moved_out.push((*peer_netns_pid as i64, peer.clone()));
            }
            NewLink::VethBetween {
                name,
                netns_pid,
                peer,
                peer_netns_pid,
                ..
            } => {
                self.moved_out.push((*netns_pid as i64, name.clone()));
                self.moved_out.push((*peer_netns_pid as i64, peer.clone()));
            }
            NewLink::Bridge { name } => {
                if self.exists(name) {
                    return Err(Self::eexist(name));
                }
                self.insert(name, Some("bridge".into()), None);
            }
            NewLink::MacVlan {
                name,
                parent,
                netns_pid,
                ..
            }
            | NewLink::IpVlan {
                name,
                parent,
                netns_pid,
            } => {
                let kind = if matches!(link, NewLink::MacVlan { .. }) {
                    "macvlan"
                } else {
                    "ipvlan"
                };
                if self.unsupported.contains(&kind) {
                    return Err(RtnlError::kernel(
                        format!("create {kind} {name}"),
                        libc::EOPNOTSUPP,
                    ));
                }
                if !self.has_index(*parent) {
                    return Err(Self::enodev(name.clone()));
                }
                self.moved_out.push((*netns_pid as i64, name.clone()));
            }
        }
        Ok(())
    }

    fn set_up(&mut self, index: u32) -> Result<(), RtnlError> {
        self.request(format!("up {index}"));
        let l = self
            .links
            .iter_mut()
            .find(|l| l.index == index)
            .ok_or_else(|| Self::enodev(format!("bring up link {index}")))?;
        l.up = true;
        Ok(())
    }

    fn set_master(&mut self, index: u32, master: u32) -> Result<(), RtnlError> {
        self.request(format!("master {index} {master}"));
        let l = self
            .links
            .iter_mut()
            .find(|l| l.index == index)
            .ok_or_else(|| Self::enodev(format!("attach link {index} to bridge {master}")))?;
        l.master = Some(master);
        Ok(())
    }

    fn set_group(&mut self, index: u32, group: u32) -> Result<(), RtnlError> {
        self.request(format!("group {index} {group}"));
        let Some(l) = self.links.iter_mut().find(|l| l.index == index) else {
            return Err(Self::enodev(format!("put link {index} into group {group}")));
        };
        l.group = group;
        self.groups.insert(index, group);
        Ok(())
    }

    fn delete_group(&mut self, group: u32) -> Result<(), RtnlError> {
        self.request(format!("delete group {group}"));
        if group == 0 {
            return Err(RtnlError::kernel("delete group 0", libc::EPERM));
        }
        let gone: Vec<u32> = self
            .links
            .iter()
            .filter(|l| l.group == group)
            .map(|l| l.index)
            .collect();
        if gone.is_empty() {
            return Err(Self::enodev(format!("delete group {group}")));
        }
        for i in gone {
            self.remove(i);
        }
        Ok(())
    }

    fn delete(&mut self, index: u32) -> Result<(), RtnlError> {
        self.request(format!("delete {index}"));
        self.remove(index);
        Ok(())
    }

    fn move_to(&mut self, index: u32, netns: BorrowedFd<'_>, name: &str) -> Result<(), RtnlError> {
        self.request(format!("move {index} {name}"));
        let pos = self
            .links
            .iter()
            .position(|l| l.index == index)
            .ok_or_else(|| Self::enodev(format!("move link {name}")))?;
        self.remove(self.links[pos].index);
        self.moved_out
            .push((netns.as_raw_fd() as i64, name.to_string()));
        Ok(())
    }

    fn add_altname(&mut self, index: u32, altname: &str) -> Result<(), RtnlError> {
        self.request(format!("altname {index} {altname}"));
        Ok(())
    }

    fn addresses(&mut self) -> Result<Vec<Address>, RtnlError> {
        Ok(self.addresses.clone())
    }

    fn set_ipv6_addr_gen_mode(
        &mut self,
        index: u32,
        mode: In6AddrGenMode,
    ) -> Result<(), RtnlError> {
        self.request(format!("addrgenmode {index} {mode:?}"));
        let what = format!("set IPv6 address generation of link {index} to {mode:?}");
        if !self.has_index(index) {
            return Err(Self::enodev(what));
        }
        if self.no_ipv6 {
            return Err(Self::eafnosupport(what));
        }
        self.ipv6_addr_gen.insert(index, mode);
        Ok(())
    }

    fn add_address_scoped(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
        scope: AddressScope,
    ) -> Result<(), RtnlError> {
        self.request(match scope {
            AddressScope::Universe => format!("address add {index} {address}/{prefix_len}"),
            _ => format!("address add {index} {address}/{prefix_len} scope {scope:?}"),
        });
        let what = format!("add address {address}/{prefix_len}");
        if !self.has_index(index) {
            return Err(Self::enodev(what));
        }
        if self.no_ipv6 && address.is_ipv6() {
            return Err(Self::eafnosupport(what));
        }
        let a = Address {
            index,
            address,
            prefix_len,
        };
        // IPv4 allows one address twice with different prefixes; IPv6 does not.
        if self.addresses.iter().any(|x| {
            x.index == index
                && x.address == address
                && (address.is_ipv6() || x.prefix_len == prefix_len)
        }) {
            return Err(Self::eexist(&what));
        }
        self.addresses.push(a);
        if prefix_len < if address.is_ipv4() { 32 } else { 128 } {
            self.routes
                .push(Self::prefix_route(index, address, prefix_len));
        }
        Ok(())
    }

    fn delete_address(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), RtnlError> {
        self.request(format!("address delete {index} {address}/{prefix_len}"));
        let a = Address {
            index,
            address,
            prefix_len,
        };
        let Some(pos) = self.addresses.iter().position(|x| *x == a) else {
            return Err(RtnlError::kernel(
                format!("delete address {address}/{prefix_len}"),
                libc::EADDRNOTAVAIL,
            ));
        };
        self.addresses.remove(pos);
        let prefix = Self::prefix_route(index, address, prefix_len);
        self.routes.retain(|r| *r != prefix);
        Ok(())
    }

    fn tc(&mut self, req: &crate::tc::TcRequest) -> Result<(), RtnlError> {
        use crate::tc::TcRequest;
        let index = match req {
            TcRequest::ReplaceRoot { index, .. }
            | TcRequest::ReplaceHtbClass { index, .. }
            | TcRequest::ReplaceLeaf { index, .. }
            | TcRequest::DeleteRoot { index }
            | TcRequest::AddClsact { index }
            | TcRequest::DeleteClsact { index }
            | TcRequest::AddEgressBpf { index, .. } => *index,
        };
        if !self.has_index(index) {
            return Err(Self::enodev(format!("tc on link {index}")));
        }
        let kinds = self.qdiscs.entry(index).or_default();
        let (root, what) = match req {
            TcRequest::ReplaceRoot { qdisc, .. } => {
                let k = qdisc_kind(qdisc);
                if self.missing_qdiscs.contains(&k) {
                    return Err(RtnlError::kernel(format!("add qdisc {k}"), libc::ENOENT));
                }
                kinds.retain(|x| x == "clsact");
                kinds.insert(0, k.to_string());
                (true, format!("qdisc root {k} on {index}"))
            }
            TcRequest::ReplaceHtbClass { minor, rate, .. } => {
                if kinds.first().map(String::as_str) != Some("htb") {
                    return Err(RtnlError::kernel("add htb class", libc::EINVAL));
                }
                (false, format!("class htb 1:{minor} rate {rate} on {index}"))
            }
            TcRequest::ReplaceLeaf {
                parent_minor,
                qdisc,
                ..
            } => {
                let k = qdisc_kind(qdisc);
                if kinds.first().map(String::as_str) != Some("htb") {
                    return Err(RtnlError::kernel(format!("add qdisc {k}"), libc::ENOENT));
                }
                let at = kinds
                    .iter()
                    .position(|x| x == "clsact")
                    .unwrap_or(kinds.len());
                kinds.insert(at, k.to_string());
                (
                    false,
                    format!("qdisc {k} parent 1:{parent_minor} on {index}"),
                )
            }
            TcRequest::DeleteRoot { .. } => {
                kinds.retain(|x| x == "clsact");
                (true, format!("delete qdisc root on {index}"))
            }
            TcRequest::AddClsact { .. } => {
                if !kinds.iter().any(|x| x == "clsact") {
                    kinds.push("clsact".into());
                }
                (false, format!("qdisc clsact on {index}"))
            }
            TcRequest::DeleteClsact { .. } => {
                kinds.retain(|x| x != "clsact");
                (false, format!("delete qdisc clsact on {index}"))
            }
            TcRequest::AddEgressBpf { name, .. } => {
                if !kinds.iter().any(|x| x == "clsact") {
                    return Err(RtnlError::kernel("add bpf filter", libc::EINVAL));
                }
                (false, format!("filter egress bpf {name} on {index}"))
            }
        };
        let _ = root;
        self.request(what);
        Ok(())
    }

    fn qdisc_kinds(&mut self, index: u32) -> Result<Vec<String>, RtnlError> {
        Ok(self.qdiscs.get(&index).cloned().unwrap_or_default())
    }

    fn routes(&mut self, family: Family) -> Result<Vec<Route>, RtnlError> {
        Ok(self
            .routes
            .iter()
            .filter(|r| r.family() == family)
            .cloned()
            .collect())
    }

    fn add_route(&mut self, route: &Route) -> Result<(), RtnlError> {
        self.request(format!("route add {route:?}"));
        let what = format!("add route to {}/{}", route.destination, route.prefix_len);
        if let Some(oif) = route.oif {
            if !self.has_index(oif) {
                return Err(Self::enodev(what));
            }
        }
        if let Some(g) = route.gateway {
            // As the kernel: a gateway must be on a link the route uses (an
            // IPv6 link-local one is, on the link named).
            let reachable = (is_ipv6_link_local(&g) && route.oif.is_some())
                || self.routes.iter().any(|r| {
                    r.scope == RouteScope::Link
                        && r.gateway.is_none()
                        && (route.oif.is_none() || r.oif == route.oif)
                        && r.contains(&g)
                });
            if !reachable {
                return Err(RtnlError::kernel(what, libc::ENETUNREACH));
            }
        }
        if self.routes.iter().any(|r| Self::same_route(r, route)) {
            return Err(Self::eexist(&what));
        }
        self.routes.push(route.clone());
        Ok(())
    }

    fn delete_route(&mut self, route: &Route) -> Result<(), RtnlError> {
        self.request(format!("route delete {route:?}"));
        let Some(pos) = self.routes.iter().position(|r| Self::same_route(r, route)) else {
            return Err(RtnlError::kernel(
                format!("delete route to {}/{}", route.destination, route.prefix_len),
                libc::ESRCH,
            ));
        };
        self.routes.remove(pos);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn index(f: &mut FakeRtnl, name: &str) -> u32 {
        f.link(name).unwrap().unwrap().index
    }

    #[test]
    fn links_are_made_found_and_removed() {
        let mut f = FakeRtnl::with_links(&[("lo", None), ("eth0", None)]);
        f.add(&NewLink::Bridge {
            name: "vz-a".into(),
        })
        .unwrap();
        let br = index(&mut f, "vz-a");
        assert_eq!(f.link_by_index(br).unwrap().unwrap().name, "vz-a");
        let e = f
            .add(&NewLink::Bridge {
                name: "vz-a".into(),
            })
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST));
        f.add(&NewLink::Veth {
            name: "vb-m".into(),
            mac: [2; 6],
            peer: "host0".into(),
            peer_mac: [3; 6],
            peer_netns_pid: 7,
            master: Some(br),
        })
        .unwrap();
        assert_eq!(f.link("vb-m").unwrap().unwrap().master, Some(br));
        assert_eq!(f.moved_out, vec![(7, "host0".to_string())]);
        let e = f
            .add(&NewLink::Veth {
                name: "vb-n".into(),
                mac: [2; 6],
                peer: "host0".into(),
                peer_mac: [3; 6],
                peer_netns_pid: 7,
                master: Some(999),
            })
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV));
        f.delete(br).unwrap();
        f.delete(br).unwrap();
        assert!(f.link("vz-a").unwrap().is_none());
        assert!(f.link_by_index(br).unwrap().is_none());
    }

    #[test]
    fn addresses_follow_the_kernel_rules() {
        let mut f = FakeRtnl::with_links(&[("lo", None), ("host0", Some("veth"))]);
        let h = index(&mut f, "host0");
        f.add_address(h, ip("10.0.0.2"), 28).unwrap();
        let e = f.add_address(h, ip("10.0.0.2"), 28).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert!(e.is_exists());
        assert_eq!(
            e.to_string(),
            "add address 10.0.0.2/28: EEXIST: File exists"
        );
        f.add_address(h, ip("fd00::2"), 64).unwrap();
        let e = f.add_address(h, ip("fd00::2"), 80).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST), "IPv6: one address once");
        f.add_address(h, ip("10.0.0.2"), 24).unwrap();
        f.delete_address(h, ip("10.0.0.2"), 24).unwrap();
        let e = f.add_address(99, ip("10.1.0.2"), 24).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV));
        assert_eq!(f.link_addresses(h).unwrap().len(), 2);
        let lo = index(&mut f, "lo");
        assert!(f.link_addresses(lo).unwrap().is_empty());
        // The kernel's prefix route comes and goes with the address.
        assert_eq!(f.routes(Family::V6).unwrap().len(), 1);
        let prefix = f.routes(Family::V4).unwrap();
        assert_eq!(prefix.len(), 1);
        assert_eq!(
            (prefix[0].destination, prefix[0].prefix_len, prefix[0].oif),
            (ip("10.0.0.0"), 28, Some(h))
        );
        f.delete_address(h, ip("10.0.0.2"), 28).unwrap();
        assert!(f.routes(Family::V4).unwrap().is_empty());
        let e = f.delete_address(h, ip("10.0.0.2"), 28).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EADDRNOTAVAIL));
        f.add_address(h, ip("10.0.0.3"), 28).unwrap();
        f.flush_addresses(h).unwrap();
        assert!(f.link_addresses(h).unwrap().is_empty());
    }

    #[test]
    fn routes_need_a_reachable_gateway_and_are_unique() {
        let mut f = FakeRtnl::with_links(&[("lo", None), ("eth0", None), ("eth1", None)]);
        let (e0, e1) = (index(&mut f, "eth0"), index(&mut f, "eth1"));
        assert!(f.default_route_links().unwrap().is_empty());
        let e = f
            .add_default_route(e0, ip("192.168.1.1"), None, RouteProtocol::Dhcp)
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENETUNREACH));
        f.add_address(e0, ip("192.168.1.9"), 24).unwrap();
        f.add_default_route(
            e0,
            ip("192.168.1.1"),
            Some(ip("192.168.1.9")),
            RouteProtocol::Dhcp,
        )
        .unwrap();
        let e = f
            .add_default_route(e0, ip("192.168.1.1"), None, RouteProtocol::Dhcp)
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert_eq!(f.default_route_links().unwrap(), vec![e0]);
        // A gateway outside every subnet, reached through a link route.
        f.add_route(&Route {
            oif: Some(e1),
            scope: RouteScope::Link,
            ..Route::to(ip("10.9.9.1"), 32)
        })
        .unwrap();
        f.add_route(&Route {
            metric: Some(200),
            ..Route::default_via(ip("10.9.9.1"), e1)
        })
        .unwrap();
        assert_eq!(f.default_route_links().unwrap(), vec![e0, e1]);
        // An IPv6 link-local gateway is on the link it names.
        f.add_default_route(e1, ip("fe80::1"), None, RouteProtocol::Ra)
            .unwrap();
        assert_eq!(f.routes(Family::V6).unwrap().len(), 1);
        let d = Route::default_via(ip("192.168.1.1"), e0);
        f.delete_route(&d).unwrap();
        assert_eq!(f.delete_route(&d).unwrap_err().errno(), Some(libc::ESRCH));
        assert_eq!(f.default_route_links().unwrap(), vec![e1]);
        // A link takes its routes along when it goes.
        f.delete(e1).unwrap();
        assert!(f.default_route_links().unwrap().is_empty());
        assert!(f.routes(Family::V6).unwrap().is_empty());
    }

    #[test]
    fn link_local_verbs_as_the_kernel() {
        let mut f = FakeRtnl::with_links(&[("lo", None), ("vb-a", Some("veth"))]);
        let vb = index(&mut f, "vb-a");
        f.set_ipv6_addr_gen_mode(vb, In6AddrGenMode::None).unwrap();
        assert_eq!(f.ipv6_addr_gen.get(&vb), Some(&In6AddrGenMode::None));
        f.add_address(vb, ip("fe80::1"), 64).unwrap();
        f.add_address(vb, ip("fd00::1"), 64).unwrap();
        f.add_address_scoped(vb, ip("169.254.3.4"), 16, AddressScope::Link)
            .unwrap();
        assert!(f
            .add_address_scoped(vb, ip("169.254.3.4"), 16, AddressScope::Link)
            .unwrap_err()
            .is_exists());
        assert_eq!(f.remove_ipv6_link_local(vb).unwrap(), 1);
        assert_eq!(f.remove_ipv6_link_local(vb).unwrap(), 0);
        let left: Vec<_> = f
            .link_addresses(vb)
            .unwrap()
            .iter()
            .map(|a| a.address)
            .collect();
        assert_eq!(left, vec![ip("fd00::1"), ip("169.254.3.4")]);
        assert_eq!(
            f.log[..3],
            [
                format!("addrgenmode {vb} None"),
                format!("address add {vb} fe80::1/64"),
                format!("address add {vb} fd00::1/64"),
            ]
        );
        assert_eq!(
            f.log[3],
            format!("address add {vb} 169.254.3.4/16 scope Link")
        );
        // Missing links and hosts without IPv6 answer as the kernel.
        let e = f
            .set_ipv6_addr_gen_mode(99, In6AddrGenMode::None)
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV));
        f.no_ipv6 = true;
        let e = f
            .set_ipv6_addr_gen_mode(vb, In6AddrGenMode::None)
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::EAFNOSUPPORT));
        let e = f.add_address(vb, ip("fd00::2"), 64).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EAFNOSUPPORT));
        f.add_address(vb, ip("10.0.0.1"), 24).unwrap();
    }

    #[test]
    fn a_link_vanishes_after_the_requests_it_was_given() {
        let mut f = FakeRtnl::with_links(&[("lo", None), ("ve-a", Some("veth"))]);
        let ve = index(&mut f, "ve-a");
        f.vanish(ve, 1);
        f.add_address(ve, ip("10.0.0.1"), 24).unwrap();
        let e = f.add_address(ve, ip("10.0.1.1"), 24).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV));
        assert!(f.link("ve-a").unwrap().is_none());
        assert!(f.addresses.is_empty() && f.routes.is_empty());
        assert_eq!(f.set_up(ve).unwrap_err().errno(), Some(libc::ENODEV));
        assert_eq!(f.vanish, None);
    }

    #[test]
    fn moving_a_link_away_records_it() {
        let mut f = FakeRtnl::with_links(&[("eth1", None)]);
        let e1 = index(&mut f, "eth1");
        f.add_address(e1, ip("10.0.0.1"), 24).unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        f.move_to(e1, std::os::fd::AsFd::as_fd(&devnull), "eth1")
            .unwrap();
        assert!(f.links.is_empty());
        assert!(f.addresses.is_empty());
        assert_eq!(f.moved_out.len(), 1);
        assert_eq!(
            f.log,
            vec![
                format!("address add {e1} 10.0.0.1/24"),
                format!("move {e1} eth1")
            ]
        );
        let e = f
            .move_to(e1, std::os::fd::AsFd::as_fd(&devnull), "eth1")
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV));
    }
}
