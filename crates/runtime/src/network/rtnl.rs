//! Netlink in two layers: the [`Rtnl`] trait holds the few link verbs the
//! launcher needs; [`Netlink`] implements them over one persistent
//! `rtnetlink` socket in one network namespace (driven by a single-threaded
//! tokio runtime, blocking per call), and [`fake::FakeRtnl`] implements them
//! in memory for unit tests.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoVeth, IpVlanMode, LinkAttribute, LinkFlags,
    LinkInfo as NlLinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::{LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth};
use thiserror::Error;

use super::naming::Mac;

#[derive(Debug, Error)]
pub enum RtnlError {
    #[error("{what}: {}", nix::Error::from_raw(*errno))]
    Kernel { what: String, errno: i32 },
    #[error("{what}: {msg}")]
    Other { what: String, msg: String },
}

impl RtnlError {
    /// The kernel's errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Kernel { errno, .. } => Some(*errno),
            RtnlError::Other { .. } => None,
        }
    }
}

fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RtnlError {
    let what = what.into();
    move |e| match e {
        rtnetlink::Error::NetlinkError(m) => match m.code {
            Some(c) => RtnlError::Kernel {
                what,
                errno: -c.get(),
            },
            None => RtnlError::Other {
                what,
                msg: "unexpected acknowledgement".into(),
            },
        },
        other => RtnlError::Other {
            what,
            msg: other.to_string(),
        },
    }
}

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// "veth", "bridge", "macvlan", ... (None for physical devices).
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub up: bool,
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

/// The link verbs the launcher uses, in one network namespace.
pub trait Rtnl {
    fn link(&mut self, name: &str) -> Result<Option<Link>, RtnlError>;
    fn links(&mut self) -> Result<Vec<Link>, RtnlError>;
    fn add(&mut self, link: &NewLink) -> Result<(), RtnlError>;
    fn set_up(&mut self, index: u32) -> Result<(), RtnlError>;
    fn set_master(&mut self, index: u32, master: u32) -> Result<(), RtnlError>;
    /// Deletes a link; a link that is already gone is success.
    fn delete(&mut self, index: u32) -> Result<(), RtnlError>;
    /// Moves a link into the namespace `netns` refers to, renaming it to `name`.
    fn move_to(&mut self, index: u32, netns: BorrowedFd<'_>, name: &str) -> Result<(), RtnlError>;
    /// Indexes of the links that carry a default route (IPv4 or IPv6).
    fn default_route_links(&mut self) -> Result<Vec<u32>, RtnlError>;
    /// Gives a link an alternative name (e.g. the full name of a shortened one).
    fn add_altname(&mut self, index: u32, altname: &str) -> Result<(), RtnlError>;
}

/// A netlink socket in one network namespace.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, RtnlError> {
        let other = |msg: String| RtnlError::Other {
            what: "open netlink socket".into(),
            msg,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| other(e.to_string()))?;
        let (conn, handle, _) = {
            let _guard = rt.enter();
            rtnetlink::new_connection().map_err(|e| other(e.to_string()))?
        };
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }

    /// Opens a socket inside the network namespace `netns` (e.g. a
    /// container's), then returns the calling thread to its own namespace.
    /// The socket stays bound to `netns`.
    pub fn open_in(netns: BorrowedFd<'_>) -> Result<Netlink, RtnlError> {
        let ns_err = |what: &str| {
            let what = what.to_string();
            move |e: nix::Error| RtnlError::Kernel {
                what,
                errno: e as i32,
            }
        };
        let own =
            std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| RtnlError::Other {
                what: "open own network namespace".into(),
                msg: e.to_string(),
            })?;
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(ns_err("enter network namespace"))?;
        let r = Netlink::open();
        nix::sched::setns(own.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(ns_err("return to own network namespace"))?;
        r
    }

    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The rtnetlink handle, for requests this module has no verb for.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// Runs a request made with [`Netlink::handle`] to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

fn link_from(msg: &LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        master: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Controller(m) => l.master = Some(*m),
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
                let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
                    .name(peer.clone())
                    .address(peer_mac.to_vec())
                    .setns_by_pid(*peer_netns_pid)
                    .build();
                let mut b = LinkVeth::new(name, peer)
                    .address(mac.to_vec())
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
                    .up();
                if let Some(m) = master {
                    b = b.controller(*m);
                }
                (format!("create veth {name}"), b.build())
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
        let h = self.handle.clone();
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.run(async move { h.link().set(msg).execute().await })
            .map_err(nl_err(format!("bring up link {index}")))
    }

    fn set_master(&mut self, index: u32, master: u32) -> Result<(), RtnlError> {
        let h = self.handle.clone();
        let msg = LinkUnspec::new_with_index(index)
            .controller(master)
            .up()
            .build();
        self.run(async move { h.link().set(msg).execute().await })
            .map_err(nl_err(format!("attach link {index} to bridge {master}")))
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

    fn move_to(&mut self, index: u32, netns: BorrowedFd<'_>, name: &str) -> Result<(), RtnlError> {
        let h = self.handle.clone();
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(netns.as_raw_fd())
            .name(name.to_string())
            .build();
        self.run(async move { h.link().set(msg).execute().await })
            .map_err(nl_err(format!("move link {name}")))
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

    fn default_route_links(&mut self) -> Result<Vec<u32>, RtnlError> {
        use rtnetlink::RouteMessageBuilder;
        let mut out = Vec::new();
        for v6 in [false, true] {
            let h = self.handle.clone();
            let req = if v6 {
                RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
            } else {
                RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
            };
            let routes: Vec<_> = self
                .run(async move { h.route().get(req).execute().try_collect::<Vec<_>>().await })
                .map_err(nl_err("list routes"))?;
            for r in routes {
                if r.header.destination_prefix_length != 0 {
                    continue;
                }
                for a in &r.attributes {
                    if let RouteAttribute::Oif(i) = a {
                        if !out.contains(i) {
                            out.push(*i);
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// An in-memory [`Rtnl`] for unit tests: links live in a list; links given
/// to another namespace are recorded there.
pub mod fake {
    use super::*;

    #[derive(Debug, Default)]
    pub struct FakeRtnl {
        pub links: Vec<Link>,
        next: u32,
        /// Links created in, or moved to, another namespace: (netns pid or fd, name).
        pub moved_out: Vec<(i64, String)>,
        /// Every request, in order, for assertions.
        pub log: Vec<String>,
        /// Kinds this fake kernel refuses with EOPNOTSUPP (e.g. "ipvlan").
        pub unsupported: Vec<&'static str>,
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

        fn insert(&mut self, name: &str, kind: Option<String>, master: Option<u32>) -> u32 {
            self.next += 1;
            self.links.push(Link {
                index: self.next,
                name: name.into(),
                kind,
                master,
                up: true,
            });
            self.next
        }

        fn exists(&self, name: &str) -> bool {
            self.links.iter().any(|l| l.name == name)
        }

        fn eexist(what: &str) -> RtnlError {
            RtnlError::Kernel {
                what: what.into(),
                errno: libc::EEXIST,
            }
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
            self.log.push(format!("add {link:?}"));
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
                        if !self.links.iter().any(|l| l.index == *m) {
                            return Err(RtnlError::Kernel {
                                what: name.clone(),
                                errno: libc::ENODEV,
                            });
                        }
                    }
                    self.insert(name, Some("veth".into()), *master);
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
                        return Err(RtnlError::Kernel {
                            what: format!("create {kind} {name}"),
                            errno: libc::EOPNOTSUPP,
                        });
                    }
                    if !self.links.iter().any(|l| l.index == *parent) {
                        return Err(RtnlError::Kernel {
                            what: name.clone(),
                            errno: libc::ENODEV,
                        });
                    }
                    self.moved_out.push((*netns_pid as i64, name.clone()));
                }
            }
            Ok(())
        }

        fn set_up(&mut self, index: u32) -> Result<(), RtnlError> {
            self.log.push(format!("up {index}"));
            let l = self
                .links
                .iter_mut()
                .find(|l| l.index == index)
                .ok_or(RtnlError::Kernel {
                    what: "up".into(),
                    errno: libc::ENODEV,
                })?;
            l.up = true;
            Ok(())
        }

        fn set_master(&mut self, index: u32, master: u32) -> Result<(), RtnlError> {
            self.log.push(format!("master {index} {master}"));
            let l = self
                .links
                .iter_mut()
                .find(|l| l.index == index)
                .ok_or(RtnlError::Kernel {
                    what: "master".into(),
                    errno: libc::ENODEV,
                })?;
            l.master = Some(master);
            Ok(())
        }

        fn delete(&mut self, index: u32) -> Result<(), RtnlError> {
            self.log.push(format!("delete {index}"));
            self.links.retain(|l| l.index != index);
            Ok(())
        }

        fn move_to(
            &mut self,
            index: u32,
            netns: BorrowedFd<'_>,
            name: &str,
        ) -> Result<(), RtnlError> {
            self.log.push(format!("move {index} {name}"));
            let pos =
                self.links
                    .iter()
                    .position(|l| l.index == index)
                    .ok_or(RtnlError::Kernel {
                        what: "move".into(),
                        errno: libc::ENODEV,
                    })?;
            self.links.remove(pos);
            self.moved_out
                .push((netns.as_raw_fd() as i64, name.to_string()));
            Ok(())
        }

        fn default_route_links(&mut self) -> Result<Vec<u32>, RtnlError> {
            Ok(self
                .links
                .iter()
                .filter(|l| l.name == "eth0")
                .map(|l| l.index)
                .collect())
        }

        fn add_altname(&mut self, index: u32, altname: &str) -> Result<(), RtnlError> {
            self.log.push(format!("altname {index} {altname}"));
            Ok(())
        }
    }
}
