//! [`Netlink`]: [`Rtnl`] over one persistent rtnetlink socket in one
//! network namespace, driven by a small single-threaded tokio runtime of its
//! own and blocking per call. It must not be called from inside another
//! tokio runtime's task (use `spawn_blocking` there); it may be dropped
//! anywhere.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, InfoData, InfoIpVlan, InfoKind, InfoVeth, IpVlanMode, LinkAttribute,
    LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    AddressMessageBuilder, LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::error::nl_err;
use crate::model::{Address, AddressScope, Family, In6AddrGenMode, Link, NewLink, Route};
use crate::{in_netns, Rtnl, RtnlError};

mod tc;

/// A netlink socket in one network namespace.
pub struct Netlink {
    /// Always there until drop, which takes it out.
    rt: Option<tokio::runtime::Runtime>,
    handle: rtnetlink::Handle,
    /// The connection's socket (owned by the connection's task, which lives
    /// as long as `rt`): for a socket option around one request.
    fd: std::os::fd::RawFd,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, RtnlError> {
        let what = "open netlink socket";
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(RtnlError::io(what))?;
        let (mut conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection().map_err(RtnlError::io(what))?
        };
        let fd = AsRawFd::as_raw_fd(conn.socket_mut());
        rt.spawn(conn);
        Ok(Netlink {
            rt: Some(rt),
            handle,
            fd,
        })
    }

    /// Opens a socket inside the network namespace `netns` (e.g. a
    /// container's), then returns the calling thread to its own namespace.
    /// The socket stays bound to `netns`.
    pub fn open_in(netns: BorrowedFd<'_>) -> Result<Netlink, RtnlError> {
        in_netns(netns, Netlink::open)?
    }

    /// Puts the link named `name` into interface group `group` with one
    /// request, the kernel finding the link by its name (no lookup of its
    /// index first). A link that does not exist is an error.
    pub fn set_group_by_name(&mut self, name: &str, group: u32) -> Result<(), RtnlError> {
        let msg = LinkUnspec::new_with_name(name)
            .append_extra_attribute(LinkAttribute::Group(group))
            .build();
        self.set_link(msg, format!("put link {name} into group {group}"))
    }

    /// Sends one `RTM_SETLINK` request; `what` names it in the error.
    fn set_link(&self, msg: LinkMessage, what: String) -> Result<(), RtnlError> {
        let h = self.handle.clone();
        self.run(async move { h.link().set(msg).execute().await })
            .map_err(nl_err(what))
    }

    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("the runtime lives until drop")
            .block_on(f)
    }
}

impl Drop for Netlink {
    /// Without waiting, so that a daemon may drop its socket inside a task
    /// (a plain runtime drop would panic there); nothing of ours blocks.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A veth `name` whose peer `peer` is made in the network namespace of
/// `peer_netns_pid`.
fn veth_pair(
    name: &str,
    mac: &crate::Mac,
    peer: &str,
    peer_mac: &crate::Mac,
    peer_netns_pid: u32,
) -> LinkMessageBuilder<LinkVeth> {
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .address(peer_mac.to_vec())
        .setns_by_pid(peer_netns_pid)
        .build();
    LinkVeth::new(name, peer)
        .address(mac.to_vec())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
}

/// `IFF_RUNNING`, and a queue the kernel has activated. The link watch
/// sets the operational state (what `IFF_RUNNING` reports) a moment before
/// it attaches the link's qdisc; until then the link has the `noop` qdisc,
/// which drops whatever is sent (`skb:kfree_skb` shows such QDISC_DROPs of
/// the kernel's own IPv6 packets on new links).
fn running(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Running)
        && !msg
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Qdisc(q) if q == "noop"))
}

pub(crate) fn link_from(msg: &LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        group: 0,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Controller(m) => l.master = Some(*m),
            LinkAttribute::Group(g) => l.group = *g,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let NlLinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// The address a message carries (`IFA_ADDRESS`, else `IFA_LOCAL`).
pub(crate) fn address_from(msg: &AddressMessage) -> Option<Address> {
    let mut local = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Address(ip) => {
                return Some(Address {
                    index: msg.header.index,
                    address: *ip,
                    prefix_len: msg.header.prefix_len,
                })
            }
            AddressAttribute::Local(ip) => local = Some(*ip),
            _ => {}
        }
    }
    local.map(|ip| Address {
        index: msg.header.index,
        address: ip,
        prefix_len: msg.header.prefix_len,
    })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_from(msg: &RouteMessage) -> Option<Route> {
    let family = match msg.header.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    let mut r = Route {
        table: u32::from(msg.header.table),
        scope: msg.header.scope,
        protocol: msg.header.protocol,
        ..Route::to(family.unspecified(), msg.header.destination_prefix_length)
    };
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(ip) = ip_of(d) {
                    r.destination = ip;
                }
            }
            RouteAttribute::Gateway(g) => r.gateway = ip_of(g),
            RouteAttribute::PrefSource(s) => r.source = ip_of(s),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            _ => {}
        }
    }
    Some(r)
}

/// The request for `route`. A default route carries no destination
/// attribute (as `ip route add default` sends it).
fn route_message(route: &Route) -> Result<RouteMessage, RtnlError> {
    let mut b = RouteMessageBuilder::<IpAddr>::new();
    // The builder learns the family from the destination, which a default
    // route does not send: set it first.
    b.get_mut().header.address_family = match route.family() {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    };
    if !route.is_default() {
        b = b
            .destination_prefix(route.destination, route.prefix_len)
            .map_err(|e| RtnlError::Other {
                what: format!("route to {}/{}", route.destination, route.prefix_len),
                msg: e.to_string(),
            })?;
    }
    if let Some(g) = route.gateway {
        b = b.gateway(g).map_err(|e| RtnlError::Other {
            what: format!("route via {g}"),
            msg: e.to_string(),
        })?;
    }
    if let Some(s) = route.source {
        b = b.pref_source(s).map_err(|e| RtnlError::Other {
            what: format!("route from {s}"),
            msg: e.to_string(),
        })?;
    }
    if let Some(i) = route.oif {
        b = b.output_interface(i);
    }
    if let Some(m) = route.metric {
        b = b.priority(m);
    }
    Ok(b.table_id(route.table)
        .scope(route.scope)
        .protocol(route.protocol)
        .build())
}

fn describe(route: &Route) -> String {
    let mut s = if route.is_default() {
        "default route".to_string()
    } else {
        format!("route to {}/{}", route.destination, route.prefix_len)
    };
    if let Some(g) = route.gateway {
        s.push_str(&format!(" via {g}"));
    }
    s
}

fn address_message(index: u32, address: IpAddr, prefix_len: u8) -> AddressMessage {
    match address {
        IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(index)
            .address(a, prefix_len)
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
            .index(index)
            .address(a, prefix_len)
            .build(),
    }
}

impl Rtnl for Netlink {
    fn link(&mut self, name: &str) -> Result<Option<Link>, RtnlError> {
        let h = self.handle.clone();
        let r = self.run(async move {
            h.link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_next()
                .await
        });
        match r {
            Ok(Some(m)) => Ok(Some(link_from(&m))),
            Ok(None) => Ok(None),
            Err(e) => match nl_err(format!("look up link {name}"))(e) {
                RtnlError::Kernel { errno, .. } if errno == libc::ENODEV => Ok(None),
                other => Err(other),
            },
        }
    }

    fn is_running(&mut self, name: &str) -> Result<bool, RtnlError> {
        let h = self.handle.clone();
        let r = self.run(async move {
            h.link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_next()
                .await
        });
        match r {
            Ok(m) => Ok(m.is_some_and(|m| running(&m))),
            Err(e) => match nl_err(format!("look up link {name}"))(e) {
                RtnlError::Kernel { errno, .. } if errno == libc::ENODEV => Ok(false),
                other => Err(other),
            },
        }
    }

    fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, RtnlError> {
        let h = self.handle.clone();
        let r =
            self.run(async move { h.link().get().match_index(index).execute().try_next().await });
        match r {
            Ok(Some(m)) => Ok(Some(link_from(&m))),
            Ok(None) => Ok(None),
            Err(e) => match nl_err(format!("look up link {index}"))(e) {
                RtnlError::Kernel { errno, .. } if errno == libc::ENODEV => Ok(None),
                other => Err(other),
            },
        }
    }

    fn links(&mut self) -> Result<Vec<Link>, RtnlError> {
        let h = self.handle.clone();
        let msgs: Vec<LinkMessage> = self
            .run(async move { h.link().get().execute().try_collect().await })
            .map_err(nl_err("list links"))?;
        Ok(msgs.iter().map(link_from).collect())
    }

    fn add(&mut self, link: &NewLink) -> Result<(), RtnlError> {
        let (what, msg) = match link {
            NewLink::Veth {
                name,
                mac,
                peer,
                peer_mac,
                peer_netns_pid,
                master,
            } => {
                let mut b = veth_pair(name, mac, peer, peer_mac, *peer_netns_pid).up();
                if let Some(m) = master {
                    b = b.controller(*m);
                }
                (format!("create veth {name}"), b.build())
            }
            NewLink::VethBetween {
                name,
                mac,
                netns_pid,
                peer,
                peer_mac,
                peer_netns_pid,
            } => {
                let msg = veth_pair(name, mac, peer, peer_mac, *peer_netns_pid)
                    .setns_by_pid(*netns_pid)
                    .up()
                    .build();
                (format!("create veth {name} and {peer}"), msg)
            }
            NewLink::Bridge { name } => (
                format!("create bridge {name}"),
                LinkBridge::new(name).up().build(),
            ),
            NewLink::MacVlan {
                name,
                parent,
                mac,
                netns_pid,
            } => (
                format!("create macvlan {name}"),
                LinkMacVlan::new(name, *parent, MacVlanMode::Bridge)
                    .address(mac.to_vec())
                    .setns_by_pid(*netns_pid)
                    .build(),
            ),
            NewLink::IpVlan {
                name,
                parent,
                netns_pid,
            } => (
                format!("create ipvlan {name}"),
                LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::IpVlan)
                    .name(name.clone())
                    .link(*parent)
                    .set_info_data(InfoData::IpVlan(vec![InfoIpVlan::Mode(IpVlanMode::L2)]))
                    .setns_by_pid(*netns_pid)
                    .build(),
            ),
        };
        let h = self.handle.clone();
        self.run(async move { h.link().add(msg).execute().await })
            .map_err(nl_err(what))
    }

    fn set_up(&mut self, index: u32) -> Result<(), RtnlError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.set_link(msg, format!("bring up link {index}"))
    }

    fn set_master(&mut self, index: u32, master: u32) -> Result<(), RtnlError> {
        let msg = LinkUnspec::new_with_index(index)
            .controller(master)
            .up()
            .build();
        self.set_link(msg, format!("attach link {index} to bridge {master}"))
    }

    fn delete(&mut self, index: u32) -> Result<(), RtnlError> {
        let h = self.handle.clone();
        match self
            .run(async move { h.link().del(index).execute().await })
            .map_err(nl_err(format!("delete link {index}")))
        {
            Err(RtnlError::Kernel { errno, .. }) if errno == libc::ENODEV => Ok(()),
            r => r,
        }
    }

    fn delete_group(&mut self, group: u32) -> Result<(), RtnlError> {
        if group == 0 {
            // The kernel refuses it too (EPERM): every link is in group 0.
            return Err(RtnlError::kernel("delete group 0", libc::EPERM));
        }
        let h = self.handle.clone();
        self.run(async move {
            let mut req = h.link().del(0);
            req.message_mut()
                .attributes
                .push(LinkAttribute::Group(group));
            req.execute().await
        })
        .map_err(nl_err(format!("delete the links of group {group}")))
    }

    fn move_to(&mut self, index: u32, netns: BorrowedFd<'_>, name: &str) -> Result<(), RtnlError> {
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(netns.as_raw_fd())
            .name(name.to_string())
            .build();
        self.set_link(msg, format!("move link {name}"))
    }

    fn add_altname(&mut self, index: u32, altname: &str) -> Result<(), RtnlError> {
        let h = self.handle.clone();
        self.run(async move {
            h.link()
                .property_add(index)
                .alt_ifname(&[altname])
                .execute()
                .await
        })
        .map_err(nl_err(format!("add alternative name {altname}")))
    }

    fn set_group(&mut self, index: u32, group: u32) -> Result<(), RtnlError> {
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::Group(group))
            .build();
        self.set_link(msg, format!("put link {index} into group {group}"))
    }

    fn set_ipv6_addr_gen_mode(
        &mut self,
        index: u32,
        mode: In6AddrGenMode,
    ) -> Result<(), RtnlError> {
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(mode)],
            )]))
            .build();
        self.set_link(
            msg,
            format!("set IPv6 address generation of link {index} to {mode:?}"),
        )
    }

    fn tc(&mut self, req: &crate::tc::TcRequest) -> Result<(), RtnlError> {
        use crate::tc::{TcRequest, TcVerb};
        use rtnetlink::packet_core::{
            NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
            NLM_F_REQUEST,
        };
        use rtnetlink::packet_route::RouteNetlinkMessage;
        let (verb, msg) = crate::tc::message(req);
        let what = format!("{req:?}");
        let (payload, flags) = match verb {
            TcVerb::NewQdisc => (
                RouteNetlinkMessage::NewQueueDiscipline(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
            ),
            TcVerb::DelQdisc => (RouteNetlinkMessage::DelQueueDiscipline(msg), 0),
            TcVerb::NewClass => (
                RouteNetlinkMessage::NewTrafficClass(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
            ),
            TcVerb::NewFilter => (
                RouteNetlinkMessage::NewTrafficFilter(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
        };
        let mut nl = NetlinkMessage::from(payload);
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut h = self.handle.clone();
        let res = self.run(async move {
            let mut resp = h.request(nl)?;
            while let Some(m) = futures_util::StreamExt::next(&mut resp).await {
                if let NetlinkPayload::Error(e) = m.payload {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
            }
            Ok(())
        });
        match res.map_err(nl_err(what)) {
            // Deleting what is not there.
            Err(RtnlError::Kernel { errno, .. })
                if matches!(
                    req,
                    TcRequest::DeleteRoot { .. } | TcRequest::DeleteClsact { .. }
                ) && (errno == libc::ENOENT || errno == libc::EINVAL) =>
            {
                Ok(())
            }
            r => r,
        }
    }

    fn qdisc_kinds(&mut self, index: u32) -> Result<Vec<String>, RtnlError> {
        use rtnetlink::packet_route::tc::TcAttribute;
        let h = self.handle.clone();
        let msgs: Vec<rtnetlink::packet_route::tc::TcMessage> = self
            .run(async move {
                h.qdisc()
                    .get()
                    .index(index as i32)
                    .execute()
                    .try_collect()
                    .await
            })
            .map_err(nl_err("list qdiscs"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index as i32)
            .flat_map(|m| {
                m.attributes.iter().filter_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    fn addresses(&mut self) -> Result<Vec<Address>, RtnlError> {
        let h = self.handle.clone();
        let msgs: Vec<AddressMessage> = self
            .run(async move { h.address().get().execute().try_collect().await })
            .map_err(nl_err("list addresses"))?;
        Ok(msgs.iter().filter_map(address_from).collect())
    }

    /// One link's addresses, filtered by the kernel: a plain dump lists the
    /// addresses of every link (on a host with hundreds of machines, each
    /// veth's IPv6 link-local address), which this is asked for on every
    /// launch. The kernel filters a dump by the header's index only with
    /// `NETLINK_GET_STRICT_CHK`, which is set for this request alone: under
    /// it the other dumps' headers would be taken as filters too (a route
    /// dump's table, protocol and type).
    fn link_addresses(&mut self, index: u32) -> Result<Vec<Address>, RtnlError> {
        let strict = |on: bool| {
            // SAFETY: our connection's open socket, borrowed: never closed
            // here (ManuallyDrop), it lives as long as `self`.
            let sock = std::mem::ManuallyDrop::new(unsafe {
                <rtnetlink::sys::Socket as std::os::fd::FromRawFd>::from_raw_fd(self.fd)
            });
            sock.set_netlink_get_strict_chk(on).is_ok()
        };
        let filtered = strict(true);
        let mut req = self.handle.address().get();
        if filtered {
            req.message_mut().header.index = index;
        }
        let got: Result<Vec<AddressMessage>, _> =
            self.run(async move { req.execute().try_collect().await });
        if filtered && !strict(false) {
            // Not to be left on for the dumps that follow.
            return Err(RtnlError::kernel(
                "switch strict checking off again",
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO),
            ));
        }
        let msgs = match got.map_err(nl_err(format!("list the addresses of link {index}"))) {
            // A filtered dump of a link that is gone: it has no addresses,
            // as the whole dump would have said.
            Err(e) if filtered && e.errno() == Some(libc::ENODEV) => Vec::new(),
            r => r?,
        };
        Ok(msgs
            .iter()
            .filter_map(address_from)
            .filter(|a| a.index == index)
            .collect())
    }

    fn add_address_scoped(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
        scope: AddressScope,
    ) -> Result<(), RtnlError> {
        let mut req = self.handle.address().add(index, address, prefix_len);
        req.message_mut().header.scope = scope;
        self.run(req.execute())
            .map_err(nl_err(format!("add address {address}/{prefix_len}")))
    }

    fn add_address_nodad(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), RtnlError> {
        use rtnetlink::packet_route::address::{AddressFlags, AddressHeaderFlags};
        let mut req = self.handle.address().add(index, address, prefix_len);
        let msg = req.message_mut();
        if crate::is_ipv6_link_local(&address) {
            msg.header.scope = AddressScope::Link;
        }
        msg.header.flags |= AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        self.run(req.execute())
            .map_err(nl_err(format!("add address {address}/{prefix_len}")))
    }

    fn delete_address(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> Result<(), RtnlError> {
        let h = self.handle.clone();
        let msg = address_message(index, address, prefix_len);
        self.run(async move { h.address().del(msg).execute().await })
            .map_err(nl_err(format!("delete address {address}/{prefix_len}")))
    }

    fn routes(&mut self, family: Family) -> Result<Vec<Route>, RtnlError> {
        let h = self.handle.clone();
        let req = match family {
            Family::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            Family::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        };
        let msgs: Vec<RouteMessage> = self
            .run(async move { h.route().get(req).execute().try_collect().await })
            .map_err(nl_err("list routes"))?;
        Ok(msgs.iter().filter_map(route_from).collect())
    }

    fn add_route(&mut self, route: &Route) -> Result<(), RtnlError> {
        let msg = route_message(route)?;
        let h = self.handle.clone();
        self.run(async move { h.route().add(msg).execute().await })
            .map_err(nl_err(format!("add {}", describe(route))))
    }

    fn delete_route(&mut self, route: &Route) -> Result<(), RtnlError> {
        let msg = route_message(route)?;
        let h = self.handle.clone();
        self.run(async move { h.route().del(msg).execute().await })
            .map_err(nl_err(format!("delete {}", describe(route))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RouteProtocol, RouteScope, TABLE_MAIN};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn running_needs_the_flag_and_an_activated_queue() {
        let msg = |running: bool, qdisc: Option<&str>| {
            let mut m = LinkMessage::default();
            m.header.flags = LinkFlags::Up;
            if running {
                m.header.flags |= LinkFlags::Running;
            }
            m.attributes.push(LinkAttribute::IfName("host0".into()));
            if let Some(q) = qdisc {
                m.attributes.push(LinkAttribute::Qdisc(q.into()));
            }
            m
        };
        assert!(running(&msg(true, Some("noqueue"))));
        assert!(running(&msg(true, Some("fq_codel"))));
        assert!(running(&msg(true, None)));
        // The link watch set the state, not yet the queue.
        assert!(!running(&msg(true, Some("noop"))));
        assert!(!running(&msg(false, Some("noqueue"))));
    }

    #[test]
    fn a_default_route_is_sent_without_destination() {
        let r = Route {
            source: Some(ip("10.77.0.23")),
            protocol: RouteProtocol::Dhcp,
            ..Route::default_via(ip("10.77.0.1"), 7)
        };
        let m = route_message(&r).unwrap();
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert_eq!(m.header.protocol, RouteProtocol::Dhcp);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(u32::from(m.header.table), TABLE_MAIN);
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(m
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(
                "10.77.0.1".parse().unwrap()
            ))));
        // And reads back as the same route.
        assert_eq!(route_from(&m).unwrap(), r);
    }

    #[test]
    fn a_link_route_round_trips() {
        let r = Route {
            oif: Some(3),
            scope: RouteScope::Link,
            protocol: RouteProtocol::Dhcp,
            ..Route::to(ip("192.0.2.1"), 32)
        };
        let m = route_message(&r).unwrap();
        assert_eq!(m.header.destination_prefix_length, 32);
        assert_eq!(route_from(&m).unwrap(), r);
        let v6 = Route {
            metric: Some(1024),
            ..Route::to(ip("fd00::"), 64)
        };
        assert_eq!(route_from(&route_message(&v6).unwrap()).unwrap(), v6);
    }

    #[test]
    fn addresses_read_back_from_their_messages() {
        let m = address_message(4, ip("10.0.0.2"), 28);
        assert_eq!(
            address_from(&m),
            Some(Address {
                index: 4,
                address: ip("10.0.0.2"),
                prefix_len: 28
            })
        );
        let m = address_message(5, ip("fd00::2"), 64);
        assert_eq!(address_from(&m).unwrap().address, ip("fd00::2"));
    }

    /// The link-local verbs netd uses, against the kernel in a namespace of
    /// its own (needs root).
    #[test]
    fn link_local_verbs_against_the_kernel() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: a private network namespace needs root");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // /proc/sys/net shows the namespace of the thread that opens it.
            let sysctl = |link: &str, key: &str| {
                std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{link}/{key}"))
                    .unwrap()
                    .trim()
                    .to_string()
            };
            let mut nl = Netlink::open().unwrap();
            nl.add(&NewLink::Bridge {
                name: "br-ll".into(),
            })
            .unwrap();
            let br = nl.link("br-ll").unwrap().unwrap().index;
            nl.set_ipv6_addr_gen_mode(br, In6AddrGenMode::None).unwrap();
            assert_eq!(sysctl("br-ll", "addr_gen_mode"), "1");
            nl.set_ipv6_addr_gen_mode(br, In6AddrGenMode::Eui64)
                .unwrap();
            assert_eq!(sysctl("br-ll", "addr_gen_mode"), "0");
            nl.set_ipv6_addr_gen_mode(br, In6AddrGenMode::None).unwrap();

            // Only fe80::/10 goes: ours, and the kernel's own if it made
            // one when the bridge came up (before the mode was none).
            let kernels = nl
                .link_addresses(br)
                .unwrap()
                .iter()
                .filter(|a| crate::is_ipv6_link_local(&a.address))
                .count();
            nl.add_address(br, ip("fe80::1"), 64).unwrap();
            nl.add_address(br, ip("fd00::1"), 64).unwrap();
            assert_eq!(nl.remove_ipv6_link_local(br).unwrap(), kernels + 1);
            assert_eq!(nl.remove_ipv6_link_local(br).unwrap(), 0);
            let v6: Vec<_> = nl
                .link_addresses(br)
                .unwrap()
                .into_iter()
                .filter(|a| a.address.is_ipv6())
                .map(|a| a.address)
                .collect();
            assert_eq!(v6, vec![ip("fd00::1")]);

            // An IPv4 link-local address with link scope, once.
            nl.add_address_scoped(br, ip("169.254.7.7"), 16, AddressScope::Link)
                .unwrap();
            let e = nl
                .add_address_scoped(br, ip("169.254.7.7"), 16, AddressScope::Link)
                .unwrap_err();
            assert!(e.is_exists(), "{e}");
            assert!(nl
                .link_addresses(br)
                .unwrap()
                .iter()
                .any(|a| a.address == ip("169.254.7.7") && a.prefix_len == 16));

            // A link that is gone.
            nl.delete(br).unwrap();
            let e = nl
                .set_ipv6_addr_gen_mode(br, In6AddrGenMode::None)
                .unwrap_err();
            assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
        })
        .join()
        .unwrap();
    }

    /// The real thing, in a namespace of its own (needs root).
    #[test]
    fn the_kernel_answers_as_the_fake_does() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: a private network namespace needs root");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut nl = Netlink::open().unwrap();
            let lo = nl.link("lo").unwrap().expect("lo");
            assert_eq!(nl.link_by_index(lo.index).unwrap().unwrap().name, "lo");
            assert!(nl.link("nope0").unwrap().is_none());
            nl.add(&NewLink::Bridge {
                name: "br-t".into(),
            })
            .unwrap();
            let br = nl.link("br-t").unwrap().unwrap();
            assert_eq!(br.kind.as_deref(), Some("bridge"));
            nl.set_up(br.index).unwrap();

            nl.add_address(br.index, ip("10.9.0.1"), 24).unwrap();
            let e = nl.add_address(br.index, ip("10.9.0.1"), 24).unwrap_err();
            assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
            nl.add_address(br.index, ip("10.9.1.1"), 24).unwrap();
            // As the fake: IPv4 takes one address with two prefixes, IPv6 not.
            nl.add_address(br.index, ip("10.9.1.1"), 16).unwrap();
            nl.delete_address(br.index, ip("10.9.1.1"), 16).unwrap();
            nl.add_address(br.index, ip("fd00::1"), 64).unwrap();
            let e = nl.add_address(br.index, ip("fd00::1"), 80).unwrap_err();
            assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
            let mut mine: Vec<_> = nl
                .link_addresses(br.index)
                .unwrap()
                .into_iter()
                .filter(|a| a.address.is_ipv4())
                .map(|a| (a.address, a.prefix_len))
                .collect();
            mine.sort();
            assert_eq!(mine, vec![(ip("10.9.0.1"), 24), (ip("10.9.1.1"), 24)]);
            // Filtered by the kernel (strict checking for that dump alone):
            // lo's addresses are not the bridge's, and the dumps after it
            // are whole again (a strict route dump would take the header's
            // protocol as a filter and drop the kernel's prefix routes).
            nl.set_up(lo.index).unwrap();
            let lo_only = nl.link_addresses(lo.index).unwrap();
            assert!(lo_only.iter().all(|a| a.index == lo.index), "{lo_only:?}");
            assert!(lo_only.iter().any(|a| a.address == ip("127.0.0.1")));
            assert!(nl.addresses().unwrap().iter().any(|a| a.index == br.index));
            assert_eq!(nl.link_addresses(999_999).unwrap(), vec![], "no such link");
            assert!(
                nl.routes(Family::V4)
                    .unwrap()
                    .iter()
                    .any(|r| r.destination == ip("10.9.0.0") && r.protocol == RouteProtocol::Kernel),
                "{:?}",
                nl.routes(Family::V4)
            );

            assert!(nl.default_route_links().unwrap().is_empty());
            nl.add_default_route(br.index, ip("10.9.0.254"), None, RouteProtocol::Dhcp)
                .unwrap();
            let e = nl
                .add_default_route(br.index, ip("10.9.0.254"), None, RouteProtocol::Dhcp)
                .unwrap_err();
            assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
            assert_eq!(nl.default_route_links().unwrap(), vec![br.index]);
            let d = nl
                .routes(Family::V4)
                .unwrap()
                .into_iter()
                .find(|r| r.is_default())
                .unwrap();
            assert_eq!(d.gateway, Some(ip("10.9.0.254")));
            assert_eq!(d.protocol, RouteProtocol::Dhcp);
            assert_eq!(d.table, TABLE_MAIN);
            nl.delete_route(&d).unwrap();
            let e = nl.delete_route(&d).unwrap_err();
            assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
            // A gateway off every subnet is unreachable without a link route.
            let e = nl
                .add_default_route(br.index, ip("192.0.2.1"), None, RouteProtocol::Dhcp)
                .unwrap_err();
            assert_eq!(e.errno(), Some(libc::ENETUNREACH), "{e}");
            nl.add_route(&Route {
                oif: Some(br.index),
                scope: RouteScope::Link,
                ..Route::to(ip("192.0.2.1"), 32)
            })
            .unwrap();
            nl.add_default_route(br.index, ip("192.0.2.1"), None, RouteProtocol::Dhcp)
                .unwrap();

            nl.delete_address(br.index, ip("10.9.1.1"), 24).unwrap();
            let e = nl.delete_address(br.index, ip("10.9.1.1"), 24).unwrap_err();
            assert_eq!(e.errno(), Some(libc::EADDRNOTAVAIL), "{e}");
            nl.flush_addresses(br.index).unwrap();
            assert!(nl.link_addresses(br.index).unwrap().is_empty());

            nl.delete(br.index).unwrap();
            nl.delete(br.index).unwrap(); // gone is success
            assert!(nl.link("br-t").unwrap().is_none());

            // A group's links go with one request; the others stay.
            for n in ["br-g1", "br-g2", "br-keep"] {
                nl.add(&NewLink::Bridge { name: n.into() }).unwrap();
            }
            for n in ["br-g1", "br-g2"] {
                let l = nl.link(n).unwrap().unwrap();
                assert_eq!(l.group, 0);
                nl.set_group(l.index, 0x6e00_0001).unwrap();
                assert_eq!(nl.link(n).unwrap().unwrap().group, 0x6e00_0001);
            }
            nl.delete_group(0x6e00_0001).unwrap();
            assert!(nl.link("br-g1").unwrap().is_none());
            assert!(nl.link("br-g2").unwrap().is_none());
            assert!(nl.link("br-keep").unwrap().is_some());
            let e = nl.delete_group(0x6e00_0001).unwrap_err();
            assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
            assert!(nl.delete_group(0).is_err());
            assert!(nl.link("br-keep").unwrap().is_some());
        })
        .join()
        .unwrap();
    }
}
