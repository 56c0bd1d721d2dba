//! What `up` makes itself, by netlink, once machines are registered:
//! point-to-point veth pairs (one end in each machine, with the names the
//! file gives), a machine's legs on its second and further zones (a veth
//! whose host end joins the zone's bridge under the zone's lock), then the
//! static addresses and routes inside the machines.
//!
//! Every link is made so that it goes with the machines: a pair is created
//! straight between the two machines' namespaces (one request, nothing on
//! the host, nothing moved: a move waits for an RCU grace period); a zone
//! leg's host end is the peer of a link inside the machine. When a
//! machine's network namespace goes, so do they. A leg's host-side name is
//! a stable hash ([`leg_host_name`]), so `down` finds what a killed `up`
//! left between two steps and removes it.

use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink::{Family, Netlink, NewLink, Route, Rtnl, RtnlError};
use netspawn_common::naming::{siphash24, HashKey};
use netspawn_common::netd::{Answer, Request};
use netspawn_common::paths::Paths;

use super::model::{Cidr, Endpoint, Machine, P2pLink, RouteSpec};
use super::TopoError;
use crate::netd_client::NetdClient;
use crate::network::zone::Zones;

const NAME_KEY: HashKey = *b"netspawn-topo-nm";
const MAC_KEY: HashKey = *b"netspawn-topomac";

fn hex12(parts: &[&str]) -> String {
    let h = siphash24(parts.join("\0").as_bytes(), &NAME_KEY);
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

/// The host-side name of a machine's leg on a further zone.
pub fn leg_host_name(machine: &str, ifname: &str) -> String {
    format!("tz-{}", hex12(&[machine, ifname]))
}

/// The stable MAC of interface `ifname` of `machine` (unicast, locally
/// administered).
pub fn mac(machine: &str, ifname: &str) -> [u8; 6] {
    let h = siphash24(format!("{machine}\0{ifname}").as_bytes(), &MAC_KEY).to_le_bytes();
    let mut m = [h[0], h[1], h[2], h[3], h[4], h[5]];
    m[0] = (m[0] & 0xfe) | 0x02;
    m
}

/// A machine's network namespace, by its leader's PID.
pub fn netns_of(leader: u32) -> Result<File, TopoError> {
    let path = format!("/proc/{leader}/ns/net");
    File::open(&path).map_err(|err| TopoError::Io {
        what: "open the network namespace",
        path: path.into(),
        err,
    })
}

fn ctx(what: String) -> impl FnOnce(RtnlError) -> TopoError {
    move |e| TopoError::Usage(format!("{what}: {e}"))
}

/// Makes the point-to-point link `l` between the machines whose leaders are
/// `pid_a` and `pid_b`, and brings both ends up.
pub fn make_p2p(host: &mut dyn Rtnl, l: &P2pLink, pid_a: u32, pid_b: u32) -> Result<(), TopoError> {
    let what = format!("link {}", l.label());
    // Made straight between the two namespaces, the first end up: nothing
    // is moved afterwards (a move waits for an RCU grace period), and a
    // failed creation leaves nothing (the pair goes with either namespace).
    host.add(&NewLink::VethBetween {
        name: l.a.ifname.clone(),
        mac: mac(&l.a.machine, &l.a.ifname),
        netns_pid: pid_a,
        peer: l.b.ifname.clone(),
        peer_mac: mac(&l.b.machine, &l.b.ifname),
        peer_netns_pid: pid_b,
    })
    .map_err(ctx(format!("{what}: create")))?;
    set_up_inside(&l.b, pid_b).map_err(|err| {
        TopoError::Usage(format!(
            "{what}: bring up {}:{}: {err}",
            l.b.short, l.b.ifname
        ))
    })
}

fn missing(name: &str) -> TopoError {
    TopoError::Usage(format!("link {name} vanished"))
}

fn set_up_inside(e: &Endpoint, pid: u32) -> Result<(), TopoError> {
    let ns = netns_of(pid)?;
    let mut nl = Netlink::open_in(ns.as_fd())?;
    let index = nl.link(&e.ifname)?.ok_or_else(|| missing(&e.ifname))?.index;
    Ok(nl.set_up(index)?)
}

/// The MAC of a machine's leg on a further zone: the machine's own (that
/// of its host0, a keyed hash of the host's machine ID and the machine's
/// name), by which netd knows a client is a running machine (a long lease,
/// held for the machine's life, and its name as host name). Each leg is on
/// a bridge of its own, so no segment sees the MAC twice.
pub fn leg_mac(machine: &str) -> [u8; 6] {
    use netspawn_common::naming::{generate_mac, host_machine_id, CONTAINER_HASH_KEY};
    let id = host_machine_id().unwrap_or([0; 16]);
    generate_mac(&id, machine, &CONTAINER_HASH_KEY, 0)
}

/// Gives machine `m` (leader `pid`) its legs on its second and further
/// zones: a veth `leg_host_name` on the host, attached to `vz-ZONE` (made
/// if it is not there, under the zone's lock), its peer inside with the
/// name the file gives. A leg without a static IPv4 address then gets one
/// from netd's pool by DHCP (`netd`: a connection to it), as host0 does.
pub fn make_zone_legs(
    host: &mut dyn Rtnl,
    zones: &Zones,
    m: &Machine,
    pid: u32,
    netd: &mut Option<NetdClient>,
    paths: &Paths,
) -> Result<(), TopoError> {
    for (zone, ifname) in m.zones.iter().skip(1) {
        let name = leg_host_name(&m.name, ifname);
        let what = format!("{}: leg {ifname} on zone {zone}", m.short);
        zones
            .join(host, zone, |rt, bridge| {
                rt.add(&NewLink::Veth {
                    name: name.clone(),
                    mac: mac(&name, ""),
                    peer: ifname.clone(),
                    peer_mac: leg_mac(&m.name),
                    peer_netns_pid: pid,
                    master: Some(bridge),
                })
            })
            .map_err(|e| TopoError::Usage(format!("{what}: {e}")))?;
        let e = Endpoint {
            machine: m.name.clone(),
            short: m.short.clone(),
            ifname: ifname.clone(),
        };
        set_up_inside(&e, pid)
            .map_err(|err| TopoError::Usage(format!("{what}: bring up: {err}")))?;
        let static_v4 = m
            .addresses
            .iter()
            .any(|(i, c)| i == ifname && c.addr.is_ipv4());
        if !static_v4 {
            let c = match netd {
                Some(c) => c,
                None => netd.insert(
                    NetdClient::connect_or_start(paths)
                        .map_err(|e| TopoError::Usage(format!("{what}: {e}")))?,
                ),
            };
            pool_address(c, m, pid, &format!("vz-{zone}"), ifname)
                .map_err(|e| TopoError::Usage(format!("{what}: {e}")))?;
        }
    }
    Ok(())
}

/// How long a leg waits for netd to serve its zone, and for a lease.
const LEG_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool address for leg `ifname` of machine `m` on the zone bridge
/// `bridge`: netd asked to serve the bridge, then our own DHCP client inside
/// the machine's namespace; the address goes on the leg (no default route:
/// the machine's host0 has it). netd is asked about the bridge, not the
/// leg's host end: a veth made with a master is announced first without
/// it, and netd asked in between would call that end unmanaged.
fn pool_address(
    netd: &mut NetdClient,
    m: &Machine,
    pid: u32,
    bridge: &str,
    ifname: &str,
) -> Result<(), String> {
    let answer = netd
        .request(&Request::Link {
            ifname: bridge.to_string(),
            timeout_ms: LEG_TIMEOUT.as_millis() as u64,
        })
        .map_err(|e| e.to_string())?;
    if !matches!(answer, Answer::Address(_)) {
        // No template serves the zone's bridge: nothing hands out addresses.
        return Ok(());
    }
    let ns = netns_of(pid).map_err(|e| e.to_string())?;
    let mut nl = Netlink::open_in(ns.as_fd()).map_err(|e| e.to_string())?;
    // A DISCOVER sent before the leg runs is lost (a retransmission later).
    let started = Instant::now();
    while !nl.is_running(ifname).unwrap_or(true) && started.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_micros(200));
    }
    let lease = crate::network::dhcp_client::acquire(
        ns.as_fd(),
        ifname,
        leg_mac(&m.name),
        &m.name,
        crate::network::dhcp_client::Server::Netd,
        LEG_TIMEOUT,
    )
    .map_err(|e| e.to_string())?;
    let index = nl
        .link(ifname)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{ifname} vanished"))?
        .index;
    match nl.add_address(index, lease.address.into(), lease.prefix_len) {
        Err(e) if !e.is_exists() => Err(format!("add {}/{}: {e}", lease.address, lease.prefix_len)),
        _ => Ok(()),
    }
}

/// Adds machine `m`'s static addresses inside it (leader `pid`): those of
/// interface `only`, or all. One that is there already is fine.
pub fn configure_addresses(m: &Machine, pid: u32, only: Option<&str>) -> Result<(), TopoError> {
    if !m.addresses.iter().any(|(i, _)| only.is_none_or(|o| o == i)) {
        return Ok(());
    }
    let ns = netns_of(pid)?;
    let mut nl = Netlink::open_in(ns.as_fd())?;
    add_addresses(&mut nl, m, only)
}

/// Turns on IPv4 and IPv6 forwarding inside the machine (leader `pid`): a
/// machine with several interfaces is a router. The guest's own `/proc/sys`
/// is read-only; the `net` sysctls written here are those of the namespace
/// this thread is in while it writes.
pub fn enable_forwarding(m: &Machine, pid: u32) -> Result<(), TopoError> {
    let ns = netns_of(pid)?;
    let res = netlink::in_netns(ns.as_fd(), || -> Result<(), (String, std::io::Error)> {
        for p in [
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/net/ipv6/conf/all/forwarding",
        ] {
            match std::fs::write(p, "1") {
                // A kernel without IPv6 has no such file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && p.contains("ipv6") => {}
                r => r.map_err(|e| (p.to_string(), e))?,
            }
        }
        Ok(())
    })?;
    res.map_err(|(p, e)| TopoError::Usage(format!("{}: enable forwarding ({p}): {e}", m.short)))
}

/// Adds machine `m`'s static routes inside it (leader `pid`). A default
/// route replaces the one its zone's DHCP gave.
pub fn configure_routes(m: &Machine, pid: u32) -> Result<(), TopoError> {
    if m.routes.is_empty() {
        return Ok(());
    }
    let ns = netns_of(pid)?;
    let mut nl = Netlink::open_in(ns.as_fd())?;
    for r in &m.routes {
        add_route(&mut nl, m, r)?;
    }
    Ok(())
}

/// Addresses then routes through any [`Rtnl`] (the fake in tests).
pub fn configure_in(nl: &mut dyn Rtnl, m: &Machine) -> Result<(), TopoError> {
    add_addresses(nl, m, None)?;
    for r in &m.routes {
        add_route(nl, m, r)?;
    }
    Ok(())
}

fn add_addresses(nl: &mut dyn Rtnl, m: &Machine, only: Option<&str>) -> Result<(), TopoError> {
    for (ifname, c) in m
        .addresses
        .iter()
        .filter(|(i, _)| only.is_none_or(|o| o == i))
    {
        let what = format!("{}: address {c} on {ifname}", m.short);
        let index = nl
            .link(ifname)
            .map_err(ctx(what.clone()))?
            .ok_or_else(|| TopoError::Usage(format!("{what}: no interface {ifname}")))?
            .index;
        match nl.add_address(index, c.addr, c.prefix) {
            Err(e) if e.is_exists() => {}
            r => r.map_err(ctx(what))?,
        }
    }
    Ok(())
}

fn add_route(nl: &mut dyn Rtnl, m: &Machine, r: &RouteSpec) -> Result<(), TopoError> {
    let what = format!("{}: route {r}", m.short);
    let route = match r.to {
        Some(Cidr { addr, prefix }) => Route {
            gateway: Some(r.via),
            ..Route::to(netlink::prefix_network(&addr, prefix), prefix)
        },
        None => {
            let fam = Family::of(&r.via);
            for old in nl.routes(fam).map_err(ctx(what.clone()))? {
                if old.is_default() && old.table == netlink::TABLE_MAIN {
                    let _ = nl.delete_route(&old);
                }
            }
            Route {
                gateway: Some(r.via),
                ..Route::to(fam.unspecified(), 0)
            }
        }
    };
    match nl.add_route(&route) {
        Err(e) if e.is_exists() => Ok(()),
        r => r.map_err(ctx(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink::fake::FakeRtnl;

    #[test]
    fn host_side_names_fit_and_are_stable() {
        let n = leg_host_name("demo-r1", "eth2");
        assert_eq!(n.len(), 15);
        assert_eq!(n, leg_host_name("demo-r1", "eth2"));
        assert_ne!(n, leg_host_name("demo-r1", "eth3"));
        let m = mac("demo-r1", "eth2");
        assert_eq!(m[0] & 3, 2);
    }

    #[test]
    fn addresses_and_routes_go_onto_the_named_interfaces() {
        let lab = super::super::model::load(
            std::path::Path::new("/x/d.toml"),
            "[machines.a]\nimage = \"b\"\ncommand = \"x\"\naddresses = { eth1 = \"10.0.0.1/30\" }\nroutes = [\"10.1.0.0/24 via 10.0.0.2\", \"default via 10.0.0.2\"]\n[machines.b]\nimage = \"b\"\ncommand = \"x\"\n[[links]]\nendpoints = [\"a:eth1\", \"b:eth1\"]\n",
        )
        .unwrap();
        let a = lab.machines.iter().find(|m| m.short == "a").unwrap();
        let mut f = FakeRtnl::with_links(&[("lo", None), ("eth1", Some("veth"))]);
        let i = f.link("eth1").unwrap().unwrap().index;
        f.set_up(i).unwrap();
        configure_in(&mut f, a).unwrap();
        let addrs = f.link_addresses(i).unwrap();
        assert!(addrs
            .iter()
            .any(|x| x.address.to_string() == "10.0.0.1" && x.prefix_len == 30));
        let routes = f.routes(Family::V4).unwrap();
        assert!(routes
            .iter()
            .any(|r| r.destination.to_string() == "10.1.0.0" && r.prefix_len == 24));
        assert!(
            routes
                .iter()
                .any(|r| r.is_default()
                    && r.gateway.map(|g| g.to_string()) == Some("10.0.0.2".into()))
        );
        // Twice is harmless.
        configure_in(&mut f, a).unwrap();
    }
}
