//! The container's network links, made by netlink from inside the launcher
//! (no `ip` command, no subprocess per link), with systemd-nspawn's names and
//! semantics:
//!
//! | mode | host side | container side |
//! |---|---|---|
//! | `-n` | `ve-NAME` | `host0` |
//! | `--network-zone=Z` | `vb-NAME` in bridge `vz-Z` (made with the first member, removed after the last) | `host0` |
//! | `--network-bridge=BR` | `vb-NAME` in the existing bridge `BR` | `host0` |
//! | `--network-veth-extra=H:C` | `H` | `C` |
//! | `--network-macvlan=IF` | — | `mv-IF` |
//! | `--network-ipvlan=IF` | — | `iv-IF` |
//! | `--network-interface=IF` | moved in, back on exit | `IF` |
//!
//! [`plan`] is pure; [`setup`] runs a plan against an [`Rtnl`] (netspawn's
//! netlink crate) for the host and one for the container's namespace;
//! [`Teardown`] undoes it, and is run
//! by a [`keeper`] process that outlives the launcher, so teardown happens
//! even after `kill -9` of the launcher and stays off the user's critical path.

pub mod addrs;
pub mod batch;
pub mod dhcp_client;
pub mod keeper;
pub mod slaac;
/// The netlink layer, under the name this module has always used for it.
pub use netlink as rtnl;
pub use netspawn_common::naming;
pub mod zone;

use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use thiserror::Error;

use crate::config::Network;
use naming::{generate_mac, host_ifname, shorten_ifname, Mac};
use netlink::{NewLink, Rtnl, RtnlError};

#[derive(Debug, Error)]
pub enum NetError {
    #[error("Bridge '{0}' does not exist")]
    NoBridge(String),
    #[error("Interface '{0}' is not a bridge")]
    NotBridge(String),
    #[error("Network interface '{0}' does not exist")]
    NoInterface(String),
    #[error("Network interface '{0}' is the host's only uplink (it carries the default route); refusing to move it into a container")]
    OnlyUplink(String),
    #[error("Network interface '{0}' already exists (is another machine using it?)")]
    Exists(String),
    #[error("{0}")]
    Rtnl(#[from] RtnlError),
    #[error("network zone lock {path}: {err}")]
    Lock { path: PathBuf, err: std::io::Error },
}

/// One link the plan makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedLink {
    /// A veth pair; `bridge` is the bridge to join (a zone's or an existing one).
    Veth {
        host: String,
        /// The unshortened host-side name, set as an alternative name when `host` was shortened.
        altname: Option<String>,
        host_mac: Mac,
        container: String,
        container_mac: Mac,
        bridge: Option<BridgeRef>,
    },
    MacVlan {
        parent: String,
        name: String,
        mac: Mac,
    },
    IpVlan {
        parent: String,
        name: String,
    },
    /// A host interface moved into the container under the same name.
    Move {
        name: String,
    },
}

/// Which bridge a veth joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeRef {
    /// `vz-ZONE`, made on demand and removed when empty.
    Zone(String),
    /// An existing bridge that must be there.
    Existing(String),
}

impl BridgeRef {
    pub fn ifname(&self) -> String {
        match self {
            BridgeRef::Zone(z) => format!("vz-{z}"),
            BridgeRef::Existing(b) => b.clone(),
        }
    }
}

/// Everything to make for one machine, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub links: Vec<PlannedLink>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Host-side interface names, for the registry.
    pub fn host_interfaces(&self) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|l| match l {
                PlannedLink::Veth { host, .. } => Some(host.clone()),
                _ => None,
            })
            .collect()
    }

    /// Each veth's (container-side, host-side) names: where a container
    /// address on the first is reached from the host.
    pub fn veth_pairs(&self) -> Vec<(String, String)> {
        self.links
            .iter()
            .filter_map(|l| match l {
                PlannedLink::Veth {
                    host, container, ..
                } => Some((container.clone(), host.clone())),
                _ => None,
            })
            .collect()
    }

    /// The machine's interfaces as the registry lists them: host-side veth
    /// names, then macvlan/ipvlan links and interfaces lent to it.
    pub fn registry_interfaces(&self) -> Vec<String> {
        let mut v = self.host_interfaces();
        for l in &self.links {
            match l {
                PlannedLink::MacVlan { name, .. }
                | PlannedLink::IpVlan { name, .. }
                | PlannedLink::Move { name } => v.push(name.clone()),
                PlannedLink::Veth { .. } => {}
            }
        }
        v
    }

    /// What [`setup`] lists for undoing once it has made every link: the
    /// keeper is started with it before the first link is made, so a launcher
    /// killed half-way still has its zone bridge and links removed (what was
    /// never made is skipped as gone).
    pub fn teardown(&self) -> Teardown {
        let mut t = Teardown::default();
        for l in &self.links {
            match l {
                PlannedLink::Veth { host, bridge, .. } => {
                    t.delete.push(host.clone());
                    if let Some(BridgeRef::Zone(z)) = bridge {
                        t.zones.push(z.clone());
                    }
                }
                PlannedLink::Move { name } => t.move_back.push(name.clone()),
                PlannedLink::MacVlan { .. } | PlannedLink::IpVlan { .. } => {}
            }
        }
        t
    }

    /// Names the links get inside the container.
    pub fn container_interfaces(&self) -> Vec<String> {
        self.links
            .iter()
            .map(|l| match l {
                PlannedLink::Veth { container, .. } => container.clone(),
                PlannedLink::MacVlan { name, .. }
                | PlannedLink::IpVlan { name, .. }
                | PlannedLink::Move { name } => name.clone(),
            })
            .collect()
    }
}

/// Computes the links for a machine (pure).
pub fn plan(machine: &str, machine_id: &[u8; 16], net: &Network) -> Plan {
    let mut links = Vec::new();
    let bridge = match (&net.zone, &net.bridge) {
        (Some(z), _) => Some(BridgeRef::Zone(z.clone())),
        (None, Some(b)) => Some(BridgeRef::Existing(b.clone())),
        _ => None,
    };
    if net.veth || bridge.is_some() {
        let full = format!("{}{machine}", if bridge.is_some() { "vb-" } else { "ve-" });
        let host = host_ifname(bridge.is_some(), machine);
        links.push(PlannedLink::Veth {
            altname: (host != full).then_some(full),
            host,
            host_mac: generate_mac(machine_id, machine, &naming::HOST_HASH_KEY, 0),
            container: "host0".into(),
            container_mac: generate_mac(machine_id, machine, &naming::CONTAINER_HASH_KEY, 0),
            bridge,
        });
    }
    for (i, (h, c)) in net.veth_extra.iter().enumerate() {
        links.push(PlannedLink::Veth {
            host: h.to_string(),
            altname: None,
            host_mac: generate_mac(
                machine_id,
                machine,
                &naming::VETH_EXTRA_HOST_HASH_KEY,
                i as u64,
            ),
            container: c.to_string(),
            container_mac: generate_mac(
                machine_id,
                machine,
                &naming::VETH_EXTRA_CONTAINER_HASH_KEY,
                i as u64,
            ),
            bridge: None,
        });
    }
    for (i, parent) in net.macvlan.iter().enumerate() {
        links.push(PlannedLink::MacVlan {
            parent: parent.clone(),
            name: shorten_ifname(&format!("mv-{parent}")),
            mac: generate_mac(machine_id, machine, &naming::MACVLAN_HASH_KEY, i as u64),
        });
    }
    for parent in &net.ipvlan {
        links.push(PlannedLink::IpVlan {
            parent: parent.clone(),
            name: shorten_ifname(&format!("iv-{parent}")),
        });
    }
    for name in &net.interfaces {
        links.push(PlannedLink::Move { name: name.clone() });
    }
    Plan { links }
}

/// Checks, before anything is created, that the plan can work on this host:
/// bridges and parent interfaces exist, names are free, and no moved
/// interface is the host's only uplink.
pub fn check(plan: &Plan, host: &mut dyn Rtnl) -> Result<(), NetError> {
    let mut uplinks: Option<Vec<u32>> = None;
    for l in &plan.links {
        match l {
            PlannedLink::Veth {
                host: name, bridge, ..
            } => {
                if host.link(name)?.is_some() {
                    return Err(NetError::Exists(name.clone()));
                }
                if let Some(BridgeRef::Existing(b)) = bridge {
                    match host.link(b)? {
                        None => return Err(NetError::NoBridge(b.clone())),
                        Some(l) if l.kind.as_deref() != Some("bridge") => {
                            return Err(NetError::NotBridge(b.clone()))
                        }
                        Some(_) => {}
                    }
                }
            }
            PlannedLink::MacVlan { parent, .. } | PlannedLink::IpVlan { parent, .. } => {
                if host.link(parent)?.is_none() {
                    return Err(NetError::NoInterface(parent.clone()));
                }
            }
            PlannedLink::Move { name } => {
                let Some(link) = host.link(name)? else {
                    return Err(NetError::NoInterface(name.clone()));
                };
                let up = match &uplinks {
                    Some(u) => u,
                    None => uplinks.insert(host.default_route_links()?),
                };
                if up.len() == 1 && up[0] == link.index {
                    return Err(NetError::OnlyUplink(name.clone()));
                }
            }
        }
    }
    Ok(())
}

/// What [`setup`] made, so that [`Teardown`] can undo exactly that.
pub use keeper::Teardown;

/// Makes the plan's links for the container whose PID 1 is `pid` (host
/// side through `host`, moves into `container_ns`). Records each step in
/// `undo` before taking it, so a failure half-way can be undone.
pub fn setup(
    plan: &Plan,
    host: &mut dyn Rtnl,
    pid: u32,
    container_ns: BorrowedFd<'_>,
    zones: &zone::Zones,
    undo: &mut Teardown,
) -> Result<(), NetError> {
    for l in &plan.links {
        match l {
            PlannedLink::Veth {
                host: name,
                altname,
                host_mac,
                container,
                container_mac,
                bridge,
            } => {
                let new = |master| NewLink::Veth {
                    name: name.clone(),
                    mac: *host_mac,
                    peer: container.clone(),
                    peer_mac: *container_mac,
                    peer_netns_pid: pid,
                    master,
                };
                undo.delete.push(name.clone());
                match bridge {
                    Some(BridgeRef::Zone(z)) => {
                        undo.zones.push(z.clone());
                        zones.join(host, z, |host, master| host.add(&new(Some(master))))?;
                    }
                    Some(BridgeRef::Existing(b)) => {
                        let master = host
                            .link(b)?
                            .ok_or_else(|| NetError::NoBridge(b.clone()))?
                            .index;
                        host.add(&new(Some(master)))?;
                    }
                    None => host.add(&new(None))?,
                }
                if let Some(alt) = altname {
                    // As systemd: scripts may use the full name. Best effort.
                    if let Some(l) = host.link(name)? {
                        if let Err(e) = host.add_altname(l.index, alt) {
                            tracing::warn!("{e}");
                        }
                    }
                }
            }
            PlannedLink::MacVlan { parent, name, mac } => {
                let p = host
                    .link(parent)?
                    .ok_or_else(|| NetError::NoInterface(parent.clone()))?;
                host.add(&NewLink::MacVlan {
                    name: name.clone(),
                    parent: p.index,
                    mac: *mac,
                    netns_pid: pid,
                })?;
            }
            PlannedLink::IpVlan { parent, name } => {
                let p = host
                    .link(parent)?
                    .ok_or_else(|| NetError::NoInterface(parent.clone()))?;
                host.add(&NewLink::IpVlan {
                    name: name.clone(),
                    parent: p.index,
                    netns_pid: pid,
                })?;
            }
            PlannedLink::Move { name } => {
                let link = host
                    .link(name)?
                    .ok_or_else(|| NetError::NoInterface(name.clone()))?;
                undo.move_back.push(name.clone());
                host.move_to(link.index, container_ns, name)?;
            }
        }
    }
    Ok(())
}

/// Brings up lo and every link the plan put into the container, through a
/// netlink socket inside the container's namespace.
pub fn configure_container(plan: &Plan, inside: &mut dyn Rtnl) -> Result<(), NetError> {
    for name in std::iter::once("lo".to_string()).chain(plan.container_interfaces()) {
        let link = inside
            .link(&name)?
            .ok_or_else(|| NetError::NoInterface(name.clone()))?;
        inside.set_up(link.index)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink::fake::FakeRtnl;

    const ID: [u8; 16] = [7; 16];

    fn net() -> Network {
        Network::default()
    }

    #[test]
    fn plans_follow_nspawn_names() {
        let p = plan(
            "web",
            &ID,
            &Network {
                veth: true,
                ..net()
            },
        );
        assert_eq!(p.host_interfaces(), vec!["ve-web"]);
        assert_eq!(p.container_interfaces(), vec!["host0"]);
        let p = plan(
            "web",
            &ID,
            &Network {
                zone: Some("lab".into()),
                ..net()
            },
        );
        assert!(
            matches!(&p.links[0], PlannedLink::Veth { host, bridge: Some(BridgeRef::Zone(z)), .. } if host == "vb-web" && z == "lab")
        );
        let p = plan(
            "averyveryverylongname",
            &ID,
            &Network {
                bridge: Some("br0".into()),
                ..net()
            },
        );
        assert_eq!(p.host_interfaces()[0].len(), 15);
        assert!(p.host_interfaces()[0].starts_with("vb-averyver"));
        let p = plan(
            "m",
            &ID,
            &Network {
                veth_extra: vec![("h1".into(), "c1".into()), ("h2".into(), "h2".into())],
                macvlan: vec!["eth1".into()],
                ipvlan: vec!["eth2".into()],
                interfaces: vec!["eth3".into()],
                ..net()
            },
        );
        assert_eq!(p.host_interfaces(), vec!["h1", "h2"]);
        assert_eq!(
            p.container_interfaces(),
            vec!["c1", "h2", "mv-eth1", "iv-eth2", "eth3"]
        );
        assert!(plan("m", &ID, &net()).is_empty());
    }

    #[test]
    fn check_refuses_missing_bridges_and_the_only_uplink() {
        let mut host = FakeRtnl::with_links(&[
            ("lo", None),
            ("eth0", None),
            ("eth1", None),
            ("br0", Some("bridge")),
        ]);
        // eth0 carries the host's only default route.
        let eth0 = host.link("eth0").unwrap().unwrap().index;
        host.routes.push(netlink::Route::default_via(
            "192.0.2.1".parse().unwrap(),
            eth0,
        ));
        let p = |n: Network| plan("web", &ID, &n);
        check(
            &p(Network {
                bridge: Some("br0".into()),
                ..net()
            }),
            &mut host,
        )
        .unwrap();
        assert!(matches!(
            check(
                &p(Network {
                    bridge: Some("nope".into()),
                    ..net()
                }),
                &mut host
            ),
            Err(NetError::NoBridge(_))
        ));
        assert!(matches!(
            check(
                &p(Network {
                    bridge: Some("eth1".into()),
                    ..net()
                }),
                &mut host
            ),
            Err(NetError::NotBridge(_))
        ));
        assert!(matches!(
            check(
                &p(Network {
                    interfaces: vec!["eth0".into()],
                    ..net()
                }),
                &mut host
            ),
            Err(NetError::OnlyUplink(_))
        ));
        check(
            &p(Network {
                interfaces: vec!["eth1".into()],
                ..net()
            }),
            &mut host,
        )
        .unwrap();
        assert!(matches!(
            check(
                &p(Network {
                    macvlan: vec!["eth9".into()],
                    ..net()
                }),
                &mut host
            ),
            Err(NetError::NoInterface(_))
        ));
        host.links.push(netlink::Link {
            index: 99,
            name: "ve-web".into(),
            kind: Some("veth".into()),
            master: None,
            up: true,
            group: 0,
        });
        assert!(matches!(
            check(
                &p(Network {
                    veth: true,
                    ..net()
                }),
                &mut host
            ),
            Err(NetError::Exists(_))
        ));
    }

    #[test]
    fn setup_makes_links_in_order_and_records_undo() {
        let tmp = std::env::temp_dir().join(format!("netspawn-net-{}", std::process::id()));
        let zones = zone::Zones::new(tmp.clone());
        let mut host =
            FakeRtnl::with_links(&[("lo", None), ("eth1", None), ("br0", Some("bridge"))]);
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let n = Network {
            zone: Some("lab".into()),
            macvlan: vec!["eth1".into()],
            interfaces: vec!["eth1".into()],
            ..net()
        };
        let p = plan("web", &ID, &n);
        let mut undo = Teardown::default();
        setup(
            &p,
            &mut host,
            42,
            std::os::fd::AsFd::as_fd(&devnull),
            &zones,
            &mut undo,
        )
        .unwrap();
        let bridge = host
            .links
            .iter()
            .find(|l| l.name == "vz-lab")
            .expect("zone bridge made")
            .index;
        let vb = host.links.iter().find(|l| l.name == "vb-web").unwrap();
        assert_eq!(vb.master, Some(bridge));
        assert!(host
            .moved_out
            .iter()
            .any(|(pid, n)| *pid == 42 && n == "host0"));
        assert!(host
            .moved_out
            .iter()
            .any(|(pid, n)| *pid == 42 && n == "mv-eth1"));
        assert!(host.moved_out.iter().any(|(_, n)| n == "eth1"));
        assert_eq!(undo.delete, vec!["vb-web"]);
        assert_eq!(undo.zones, vec!["lab"]);
        assert_eq!(undo.move_back, vec!["eth1"]);
        let planned = p.teardown();
        assert_eq!(
            (planned.delete, planned.zones, planned.move_back),
            (undo.delete, undo.zones, undo.move_back),
            "the keeper's planned teardown is what setup records"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn ipvlan_unsupported_by_the_kernel_is_a_clear_error() {
        let tmp = std::env::temp_dir().join(format!("netspawn-net-ipv-{}", std::process::id()));
        let zones = zone::Zones::new(tmp.clone());
        let mut host = FakeRtnl::with_links(&[("eth1", None)]);
        host.unsupported.push("ipvlan");
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let p = plan(
            "web",
            &ID,
            &Network {
                ipvlan: vec!["eth1".into()],
                ..net()
            },
        );
        let err = setup(
            &p,
            &mut host,
            42,
            std::os::fd::AsFd::as_fd(&devnull),
            &zones,
            &mut Teardown::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "create ipvlan iv-eth1: EOPNOTSUPP: Operation not supported on transport endpoint"
        );
        assert!(host
            .log
            .iter()
            .any(|l| l.contains("IpVlan") && l.contains("iv-eth1")));
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
