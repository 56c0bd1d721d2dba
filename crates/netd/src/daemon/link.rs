//! The link lifecycle: what netd does when a link appears and when it goes
//! away. A new link runs through a pipeline of small steps, each one
//! function, in systemd-networkd's order:
//!
//! 1. [`match_template`]: remember the link; pick its `.network` file;
//! 2. [`link_local`]: `LinkLocalAddressing=` (IPv6 link-local addresses
//!    off, an IPv4 link-local address on), once per link;
//! 3. [`assign_address`]: a subnet from the pool (or the static address),
//!    and every other IPv4 `Address=`, on the link, link up;
//! 4. [`start_dhcp`]: the DHCPv4 server, as `[DHCPServer]` says;
//! 5. [`serve_dns`]: netd's DNS on the host side's address, forwarding to
//!    the template's `DNS=` servers or the host's;
//! 6. [`masquerade`]: NAT for the subnets, as `IPMasquerade=` says.
//!
//! IPv6 runs beside steps 3 to 6: [`ipv6_steps`] gives the link its `/64`
//! from the pool (host side `PREFIX::1`, without duplicate address
//! detection, so it serves at once), its static IPv6 addresses and
//! `fe80::1` when it advertises; [`start_ra`] sends router advertisements
//! (`IPv6SendRA=`); DNS listens on `PREFIX::1` too; masquerade covers the
//! `/64`. An `[IPv6Prefix]` that overlaps a network the host has elsewhere
//! refuses the link before anything is configured.
//!
//! A link that goes away releases all of it ([`on_del_link`]). The steps
//! that talk to the kernel (2 and 3, [`kernel_steps`]) take a
//! `&mut dyn Rtnl`: netd's netlink socket on a blocking thread in the
//! daemon, `netlink::fake::FakeRtnl` in the unit tests.

use std::collections::HashMap;
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use netlink::{AddressScope, Family, In6AddrGenMode, Link, Rtnl};
use tokio::sync::oneshot;

use super::{Ctx, LinkDns, Managed, SeenLink, State};
use crate::dhcp;
use crate::dns;
use crate::nat;
use crate::ra;
use crate::template::{self, DhcpDns, DnsServer, LinkFacts, NetworkFile};

/// What templates match a link on.
pub(super) fn link_facts(link: &Link) -> LinkFacts {
    LinkFacts {
        name: link.name.clone(),
        altnames: Vec::new(),
        kind: link.kind.clone(),
        // The driver of virtual links is their kind (veth, bridge, macvlan...).
        driver: link.kind.clone(),
    }
}

/// A new (or changed) link: runs the pipeline.
pub(super) async fn on_new_link(ctx: &Arc<Ctx>, link: &Link) {
    let facts = link_facts(link);
    let index = link.index;
    if let Some(kick) = ctx
        .lock()
        .links
        .get(&facts.name)
        .and_then(|m| m.ra_kick.clone())
    {
        // A link we advertise on changed (a container's side came up, say):
        // an advertisement now.
        kick.notify_one();
    }
    let Some((file, first)) = match_template(ctx, index, &facts, link.master) else {
        return;
    };
    let name = facts.name;
    let started = Instant::now();
    let steps = {
        let (ctx2, name, file) = (ctx.clone(), name.clone(), file.clone());
        ctx.rtnl(move |nl| {
            check_ipv6_prefixes(nl, index, &file)?;
            if serving_address(&file).is_some() || wants_ipv6(&file) {
                // Never taken for an uplink while it is being configured.
                if let Err(e) = ctx2.nat_expected.expect(&name) {
                    tracing::warn!("{name}: {e}");
                }
            }
            // One look at the host's networks serves both families' pools.
            let mut host = HostNetworks::default();
            let v4 = kernel_steps(
                nl,
                index,
                &name,
                &file,
                first,
                &mut host,
                |request, host| take_subnet(&ctx2, &name, request, host, true),
            );
            let v6 = ipv6_steps(nl, index, &name, &file, &mut host, |request, host| {
                take_subnet(&ctx2, &name, request, host, false)
            });
            Ok::<_, String>((v4, v6))
        })
        .await
    };
    let (address, v6) = match steps {
        None => return,
        Some(Err(why)) => {
            tracing::error!("{name}: {why}");
            ctx.lock().failed.insert(name.clone(), why);
            ctx.changed.notify_waiters();
            return;
        }
        Some(Ok(got)) => got,
    };
    let v4 = match address {
        Some(IpNetwork::V4(v4)) => Some(v4),
        _ => None,
    };
    if v4.is_none() && v6.is_none() {
        return;
    }
    let addressed = started.elapsed();
    let (dhcp_stop, dhcp) = v4
        .and_then(|v4| start_dhcp(ctx, &name, index, &file, v4))
        .unzip();
    if let Some(server) = &dhcp {
        // A `LINKDHCP` waiting for this link may hand its message over now.
        ctx.lock().early_dhcp.insert(name.clone(), server.clone());
        ctx.changed.notify_waiters();
    }
    let own6 = v6.as_ref().and_then(|s| s.own);
    let mut subnets: Vec<IpNetwork> = v4
        .map(|v4| IpNetwork::V4(Ipv4Network::new(v4.network(), v4.prefix()).unwrap_or(v4)))
        .into_iter()
        .collect();
    subnets.extend(
        own6.map(|o| IpNetwork::V6(Ipv6Network::new(o.network(), o.prefix()).unwrap_or(o))),
    );
    // The NAT step (a blocking thread) and the DNS listeners at the same
    // time: neither needs the other, and the link is answered after both.
    // The thread is started first: binding the listeners does not yield, so
    // a NAT step started after them would wait for them.
    let nat = masquerade(ctx, &name, &file, subnets);
    let dns = async {
        if let Some(v4) = v4 {
            serve_dns(ctx, &name, index, &file, IpAddr::V4(v4.ip())).await;
        }
        if let Some(own) = own6 {
            serve_dns(ctx, &name, index, &file, IpAddr::V6(own.ip())).await;
        }
        // Advertised (with netd's address as RDNSS) once DNS answers there.
        let ra = v6.as_ref().and_then(|s| start_ra(&name, index, &file, s));
        (started.elapsed(), ra)
    };
    let nat = async {
        let _ = nat.await;
        started.elapsed()
    };
    let ((served, ra), natted) = tokio::join!(dns, nat);
    let (ra_stop, ra_kick) = match ra {
        Some((stop, kick)) => (Some(stop), Some(kick)),
        None => (None, None),
    };
    let address = address.or(own6.map(IpNetwork::V6));
    {
        let mut st = ctx.lock();
        st.early_dhcp.remove(&name);
        st.links.insert(
            name.clone(),
            Managed {
                address,
                address6: own6,
                dhcp_stop,
                dhcp,
                ra_stop,
                ra_kick,
            },
        );
        st.last_busy = Instant::now();
    }
    match (address, own6) {
        (Some(a), Some(o)) if a != IpNetwork::V6(o) => {
            tracing::info!("{name}: configured {a} and {o}")
        }
        (Some(a), _) => tracing::info!("{name}: configured {a}"),
        _ => {}
    }
    tracing::debug!(
        addressed_us = addressed.as_micros() as u64,
        dhcp_dns_us = served.saturating_sub(addressed).as_micros() as u64,
        nat_us = natted.saturating_sub(addressed).as_micros() as u64,
        "{name}: pipeline"
    );
    ctx.changed.notify_waiters();
}

/// Step 1: remembers the link (for `LINK` on its ports) and returns the
/// template that applies to it, if any and if the link is not configured
/// already, with whether this is the template's first sight of the link.
fn match_template(
    ctx: &Ctx,
    index: u32,
    facts: &LinkFacts,
    master: Option<u32>,
) -> Option<(NetworkFile, bool)> {
    let found = {
        let mut st = ctx.lock();
        let done = st
            .seen
            .get(&index)
            .is_some_and(|l| l.link_local_done && l.name == facts.name);
        let file = if st.links.contains_key(&facts.name) {
            None
        } else {
            st.templates.find_match(facts).cloned()
        };
        st.seen.insert(
            index,
            SeenLink {
                name: facts.name.clone(),
                master,
                kind: facts.kind.clone(),
                link_local_done: done || file.is_some(),
            },
        );
        file.map(|f| (f, !done))
    };
    ctx.changed.notify_waiters();
    found
}

/// What `LinkLocalAddressing=` asks of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkLocalPlan {
    /// `no` or `ipv4`: no IPv6 link-local address (address generation off,
    /// the kernel's `fe80::` address removed).
    ipv6_off: bool,
    /// `ipv4` or `yes`: this IPv4 link-local address, unless netd serves
    /// DHCPv4 on the link (its clients get real addresses; a 169.254/16
    /// route on the host would also shadow a cloud's metadata route).
    ipv4: Option<Ipv4Addr>,
}

fn link_local_plan(name: &str, file: &NetworkFile) -> LinkLocalPlan {
    let ll = file.network.link_local();
    LinkLocalPlan {
        ipv6_off: !ll.ipv6(),
        ipv4: (ll.ipv4() && !file.network.dhcp_server).then(|| ipv4_link_local(name)),
    }
}

/// A stable IPv4 link-local address for a link: a hash of its name in
/// 169.254.1.0 to 169.254.254.255 (RFC 3927's range; the first and last 256
/// addresses are reserved). netd does not probe for conflicts (ARP) as
/// networkd's IPv4LL does: on a link between a host and its containers the
/// host side is the only one that takes such an address from netd.
fn ipv4_link_local(name: &str) -> Ipv4Addr {
    let mut h = netspawn_common::fnv::Fnv::default();
    h.write(name.as_bytes());
    let n = (h.finish() % (254 * 256)) as u32 + 256;
    Ipv4Addr::new(169, 254, (n >> 8) as u8, (n & 0xff) as u8)
}

/// Steps 2 and 3, the pipeline's kernel part, in one go on a blocking
/// thread: `LinkLocalAddressing=` on the template's first sight of the link,
/// then the addresses. `take` picks a subnet from the pool for a pool
/// request, given the networks the host has. Failures are logged and the
/// rest goes on (a link that vanishes meanwhile is released by its
/// `RTM_DELLINK`); the serving address, if any.
fn kernel_steps(
    nl: &mut dyn Rtnl,
    index: u32,
    name: &str,
    file: &NetworkFile,
    first: bool,
    host: &mut HostNetworks,
    take: impl FnOnce(&IpNetwork, Vec<IpNetwork>) -> Option<IpNetwork>,
) -> Option<IpNetwork> {
    if first {
        link_local(nl, index, name, file);
    }
    assign_address(nl, index, name, file, host, take)
}

/// Step 2: `LinkLocalAddressing=`, as systemd.network(5) documents it.
fn link_local(nl: &mut dyn Rtnl, index: u32, name: &str, file: &NetworkFile) {
    let plan = link_local_plan(name, file);
    if plan.ipv6_off {
        // As networkd: no address generation, and the kernel's fe80 gone.
        match nl.set_ipv6_addr_gen_mode(index, In6AddrGenMode::None) {
            Ok(()) => {
                if let Err(e) = nl.remove_ipv6_link_local(index) {
                    tracing::warn!("{name}: remove IPv6 link-local addresses: {e}");
                }
            }
            // No IPv6 on this host or link: nothing to turn off.
            Err(e) => tracing::debug!("{name}: {e}"),
        }
    }
    if let Some(ip) = plan.ipv4 {
        let net = IpNetwork::V4(Ipv4Network::new(ip, 16).unwrap_or_else(|_| ip.into()));
        match nl.add_address_scoped(index, net.ip(), net.prefix(), AddressScope::Link) {
            Ok(()) => tracing::info!("{name}: link-local address {net}"),
            Err(e) if e.is_exists() => {}
            Err(e) => tracing::warn!("{name}: link-local address: {e}"),
        }
    }
}

/// The IPv4 `Address=` netd serves the link from: the first pool request,
/// else the first static address. `None` for a member link (vb-*), which
/// has nothing to configure.
fn serving_address(file: &NetworkFile) -> Option<IpNetwork> {
    let net = &file.network;
    net.pool_requests()
        .find(|r| r.is_ipv4())
        .copied()
        .or_else(|| net.static_addresses().find(|a| a.is_ipv4()).copied())
}

/// Step 3: takes the address (a subnet from the pool through `take`, or
/// the static one), puts it and every other static IPv4 `Address=` on the
/// link and sets the link up. `None` if there is none or the pool is
/// exhausted (then `LINK` answers the reason).
fn assign_address(
    nl: &mut dyn Rtnl,
    index: u32,
    name: &str,
    file: &NetworkFile,
    host: &mut HostNetworks,
    take: impl FnOnce(&IpNetwork, Vec<IpNetwork>) -> Option<IpNetwork>,
) -> Option<IpNetwork> {
    let request = serving_address(file)?;
    let address = if template::is_pool_request(&request) {
        take(&request, host.get(nl))?
    } else {
        request
    };
    configure_addresses(nl, index, name, file, address);
    Some(address)
}

/// [`host_networks`], dumped once for a link's pool requests of both
/// families (the one's address is not in the other's way).
#[derive(Default)]
struct HostNetworks(Option<Vec<IpNetwork>>);

impl HostNetworks {
    fn get(&mut self, nl: &mut dyn Rtnl) -> Vec<IpNetwork> {
        self.0.get_or_insert_with(|| host_networks(nl)).clone()
    }
}

/// The host's addresses and routes (not the default ones), which pools must
/// avoid. A dump that fails leaves its part out.
fn host_networks(nl: &mut dyn Rtnl) -> Vec<IpNetwork> {
    let mut out = Vec::new();
    match nl.addresses() {
        Ok(addrs) => out.extend(
            addrs
                .iter()
                .filter_map(|a| IpNetwork::new(a.address, a.prefix_len).ok()),
        ),
        Err(e) => tracing::debug!("host networks: {e}"),
    }
    for family in [Family::V4, Family::V6] {
        match nl.routes(family) {
            Ok(routes) => out.extend(
                routes
                    .iter()
                    .filter(|r| !r.is_default())
                    .filter_map(|r| IpNetwork::new(r.destination, r.prefix_len).ok()),
            ),
            Err(e) => tracing::debug!("host networks: {e}"),
        }
    }
    out
}

/// Whether the template asks for any IPv6 on the link.
fn wants_ipv6(file: &NetworkFile) -> bool {
    file.network.ipv6_send_ra
        || file.network.addresses.iter().any(|a| a.is_ipv6())
        || file.ipv6_prefixes.iter().any(|p| p.assign)
}

/// Refuses a link whose `[IPv6Prefix]` overlaps a network the host has
/// on another link (an address or a route): advertising it would send the
/// containers' traffic for those addresses here. Checked before anything
/// is configured.
fn check_ipv6_prefixes(nl: &mut dyn Rtnl, index: u32, file: &NetworkFile) -> Result<(), String> {
    if file.ipv6_prefixes.is_empty() {
        return Ok(());
    }
    let mut elsewhere: Vec<IpNetwork> = Vec::new();
    if let Ok(addrs) = nl.addresses() {
        elsewhere.extend(
            addrs
                .iter()
                .filter(|a| a.index != index && a.address.is_ipv6())
                .filter_map(|a| IpNetwork::new(a.address, a.prefix_len).ok()),
        );
    }
    if let Ok(routes) = nl.routes(Family::V6) {
        elsewhere.extend(
            routes
                .iter()
                .filter(|r| !r.is_default() && r.oif != Some(index))
                .filter(|r| !netlink::is_ipv6_link_local(&r.destination))
                .filter(|r| !r.destination.is_multicast())
                .filter_map(|r| IpNetwork::new(r.destination, r.prefix_len).ok()),
        );
    }
    for p in &file.ipv6_prefixes {
        let net = IpNetwork::V6(p.prefix);
        if let Some(h) = elsewhere.iter().find(|h| overlap(h, &net)) {
            return Err(format!(
                "{}: [IPv6Prefix] Prefix={} overlaps {h}, which the host has on another link; \
                 refusing to advertise it",
                file.path.display(),
                p.prefix
            ));
        }
    }
    Ok(())
}

/// Whether two networks of one family share an address.
fn overlap(a: &IpNetwork, b: &IpNetwork) -> bool {
    match (a, b) {
        (IpNetwork::V6(x), IpNetwork::V6(y)) => {
            let p = x.prefix().min(y.prefix());
            let mask = if p == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(p))
            };
            u128::from(x.ip()) & mask == u128::from(y.ip()) & mask
        }
        (IpNetwork::V4(x), IpNetwork::V4(y)) => {
            let p = x.prefix().min(y.prefix());
            let mask = if p == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(p))
            };
            u32::from(x.ip()) & mask == u32::from(y.ip()) & mask
        }
        _ => false,
    }
}

/// The link's IPv6 as configured by [`ipv6_steps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ipv6Setup {
    /// netd's own address on the link (`PREFIX::1` of the pool's subnet, or
    /// the first static IPv6 `Address=`), with its prefix.
    own: Option<Ipv6Network>,
    /// The link's IPv6 subnets (advertised as prefixes).
    subnets: Vec<Ipv6Network>,
}

/// The IPv6 part of steps 2 and 3: a subnet from the pool for `::/N`
/// (`take`, as for IPv4), the static IPv6 `Address=`es, `PREFIX::1` of
/// every `[IPv6Prefix]` with `Assign=yes`, and, when the link sends router
/// advertisements, `fe80::1` to send them from and no acceptance of
/// advertisements from the containers on the host side. Every address
/// without duplicate address detection: netd is the only one to take them.
/// `None` if the template asks for no IPv6.
fn ipv6_steps(
    nl: &mut dyn Rtnl,
    index: u32,
    name: &str,
    file: &NetworkFile,
    host: &mut HostNetworks,
    take: impl FnOnce(&IpNetwork, Vec<IpNetwork>) -> Option<IpNetwork>,
) -> Option<Ipv6Setup> {
    if !wants_ipv6(file) {
        return None;
    }
    let mut addrs: Vec<Ipv6Network> = Vec::new();
    if let Some(req) = file.network.pool_requests().find(|r| r.is_ipv6()) {
        // On failure the pool said why (logged); the link goes on without it.
        if let Some(IpNetwork::V6(a)) = take(req, host.get(nl)) {
            addrs.push(a);
        }
    }
    addrs.extend(file.network.static_addresses().filter_map(|a| match a {
        IpNetwork::V6(a) => Some(*a),
        IpNetwork::V4(_) => None,
    }));
    for p in file.ipv6_prefixes.iter().filter(|p| p.assign) {
        let host = Ipv6Addr::from(u128::from(p.prefix.network()) + 1);
        addrs.extend(Ipv6Network::new(host, p.prefix.prefix()).ok());
    }
    if file.network.ipv6_send_ra {
        // The containers' advertisements are not for the host.
        let path = format!("/proc/sys/net/ipv6/conf/{name}/accept_ra");
        if nat::sysctl::valid_ifname(name) {
            if let Err(e) = std::fs::write(&path, "0") {
                tracing::debug!("{name}: {path}: {e}");
            }
        }
        match nl.add_address_nodad(index, IpAddr::V6(ra::ROUTER_LINK_LOCAL), 64) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => tracing::warn!("{name}: {e}"),
        }
    }
    for a in &addrs {
        match nl.add_address_nodad(index, IpAddr::V6(a.ip()), a.prefix()) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => tracing::warn!("{name}: {e}"),
        }
    }
    if let Err(e) = nl.set_up(index) {
        tracing::warn!("{name}: {e}");
    }
    let mut subnets: Vec<Ipv6Network> = Vec::new();
    for a in &addrs {
        if let Ok(n) = Ipv6Network::new(a.network(), a.prefix()) {
            if !subnets.contains(&n) && !netlink::is_ipv6_link_local(&IpAddr::V6(a.ip())) {
                subnets.push(n);
            }
        }
    }
    let own = addrs
        .iter()
        .copied()
        .find(|a| !netlink::is_ipv6_link_local(&IpAddr::V6(a.ip())));
    Some(Ipv6Setup { own, subnets })
}

/// Router advertisements on the link, if `IPv6SendRA=yes`; returns what
/// stops them and what makes them send one now.
fn start_ra(
    name: &str,
    index: u32,
    file: &NetworkFile,
    setup: &Ipv6Setup,
) -> Option<(oneshot::Sender<()>, Arc<tokio::sync::Notify>)> {
    if !file.network.ipv6_send_ra {
        return None;
    }
    let fd = match ra::open_socket(name, index) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!("{e}");
            return None;
        }
    };
    // With the router's link-layer address the hosts' kernels mark their
    // new addresses optimistic (RFC 4429): usable at once.
    let mac = crate::sys::hw_addr(std::os::fd::AsFd::as_fd(&fd), name)
        .map_err(|e| tracing::debug!("{name}: link-layer address: {e}"))
        .ok();
    let advert = ra::advert_for(
        file,
        &setup.subnets,
        setup.own.map(|o| o.ip()),
        mac,
        ra::search_domains(name),
    );
    let (tx, rx) = oneshot::channel();
    let kick = Arc::new(tokio::sync::Notify::new());
    let ifname = name.to_string();
    let kick2 = kick.clone();
    tokio::spawn(async move {
        let stop = async move {
            let _ = rx.await;
        };
        if let Err(e) = ra::serve(ifname.clone(), index, fd, advert, kick2, stop).await {
            tracing::error!("{e}");
        }
    });
    Some((tx, kick))
}

/// A subnet from the pool for the link (the host side's address in it);
/// saved at once. A failure of the `required` one (IPv4) is kept as the
/// reason for `LINK`; one of the IPv6 subnet (a host route over the whole
/// unique local /48, say) is logged, and the link is served with IPv4 only
/// rather than not at all.
fn take_subnet(
    ctx: &Ctx,
    name: &str,
    request: &IpNetwork,
    mut host: Vec<IpNetwork>,
    required: bool,
) -> Option<IpNetwork> {
    let mut st = ctx.lock();
    // Static addresses of every template, even before their links exist.
    host.extend(st.templates.static_networks());
    match st.pools.acquire(name, request, &host) {
        Ok(a) => {
            // Saved by another task: the link need not wait for fsyncs (a
            // netd killed before the save gives the link the same subnet
            // again, as long as it is free: pools are stable per name).
            ctx.pools_dirty.notify_one();
            Some(a.host())
        }
        Err(e) if required => {
            tracing::error!("{name}: {e}");
            st.failed.insert(name.to_string(), e.to_string());
            None
        }
        Err(e) => {
            tracing::error!("{name}: {e}; no IPv6 on this link");
            None
        }
    }
}

/// Puts `address`, then every other static IPv4 `Address=`, on the link
/// (one that is there already is fine) and sets it up.
fn configure_addresses(
    nl: &mut dyn Rtnl,
    index: u32,
    name: &str,
    file: &NetworkFile,
    address: IpNetwork,
) {
    let others = file
        .network
        .static_addresses()
        .filter(|a| a.is_ipv4() && **a != address);
    for a in std::iter::once(&address).chain(others) {
        match nl.add_address(index, a.ip(), a.prefix()) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => tracing::warn!("{name}: {e}"),
        }
    }
    if let Err(e) = nl.set_up(index) {
        tracing::warn!("{name}: {e}");
    }
}

/// The DHCP server's settings for a link served from `v4`, as the
/// template's `[DHCPServer]` section says.
fn dhcp_config(file: &NetworkFile, v4: Ipv4Network) -> Result<dhcp::ServerConfig, String> {
    let subnet = Ipv4Network::new(v4.network(), v4.prefix()).unwrap_or(v4);
    let d = &file.dhcp_server;
    let mut cfg = dhcp::ServerConfig::from_subnet(v4.ip(), subnet, d.pool_offset, d.pool_size)
        .map_err(|e| e.to_string())?;
    if !d.emit_router {
        cfg.router = None;
    }
    if !d.emit_dns {
        cfg.dns.clear();
    } else if !d.dns.is_empty() {
        cfg.dns = d
            .dns
            .iter()
            .map(|s| match s {
                DhcpDns::ServerAddress => v4.ip(),
                DhcpDns::Addr(a) => *a,
            })
            .collect();
    }
    cfg.default_lease = Duration::from_secs(u64::from(d.default_lease_secs));
    cfg.max_lease = Duration::from_secs(u64::from(d.max_lease_secs));
    cfg.rapid_commit = d.rapid_commit;
    Ok(cfg)
}

/// Step 4: the DHCPv4 server, if `DHCPServer=yes`; returns what stops it.
fn start_dhcp(
    ctx: &Arc<Ctx>,
    name: &str,
    index: u32,
    file: &NetworkFile,
    v4: Ipv4Network,
) -> Option<(oneshot::Sender<()>, Arc<Mutex<dhcp::Server>>)> {
    if !file.network.dhcp_server {
        return None;
    }
    let mut cfg = match dhcp_config(file, v4) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{name}: DHCP server: {e}");
            return None;
        }
    };
    // Options 15 and 119: ZONE.netspawn, netspawn.
    cfg.search = dns::search_domains(name);
    cfg.domain = cfg.search.first().cloned();
    let lease_path = ctx
        .lock()
        .paths
        .state_dir
        .join("leases")
        .join(format!("{name}.json"));
    if let Some(p) = lease_path.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let server = match dhcp::Server::new(
        cfg,
        Box::new(dhcp::FileStore::new(lease_path)),
        SystemTime::now(),
    ) {
        Ok(s) => Arc::new(Mutex::new(s)),
        Err(e) => {
            tracing::error!("{name}: DHCP server: {e}");
            return None;
        }
    };
    // Bound before `LINK` is answered: the launcher's first DISCOVER finds
    // the server listening (no wait for a retransmission).
    let socket = match dhcp::io::bind_socket(name) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{name}: DHCP server: {e}");
            return None;
        }
    };
    let (tx, rx) = oneshot::channel();
    let ctx2 = ctx.clone();
    let ifname = name.to_string();
    let served = server.clone();
    tokio::spawn(async move {
        let context = move |mac: &[u8]| dhcp_context(&ctx2, index, mac);
        if let Err(e) = dhcp::io::serve_socket(socket, &ifname, served, context, async move {
            let _ = rx.await;
        })
        .await
        {
            tracing::error!("{ifname}: DHCP server: {e}");
        }
    });
    Some((tx, server))
}

/// Step 5: netd's DNS on the host side's address, for queries arriving on
/// this link (`index`) or loopback. They are forwarded to the template's
/// `DNS=` servers if it has any, else to the host's.
async fn serve_dns(ctx: &Ctx, name: &str, index: u32, file: &NetworkFile, addr: IpAddr) {
    // `DNSDefaultRoute=no`: an internal link, nothing forwarded upstream.
    let internal = file.network.dns_default_route == Some(false);
    let llmnr = file.network.llmnr != Some(false);
    let r = if file.network.dns.is_empty() {
        ctx.dns.set_link_internal(index, internal);
        ctx.dns.set_link_llmnr(index, llmnr);
        ctx.dns.add_link_listener(addr, index).await
    } else {
        match upstream_dns(ctx, &file.network.dns) {
            Ok(server) => {
                server.set_link_internal(index, internal);
                server.set_link_llmnr(index, llmnr);
                server.add_link_listener(addr, index).await
            }
            Err(e) => {
                tracing::error!("{name}: DNS: {e}");
                return;
            }
        }
    };
    if let Err(e) = r {
        tracing::error!("{name}: DNS on {addr}: {e}");
    }
}

/// The resolv.conf that makes a forwarder use these servers.
fn resolv_conf_text(servers: &[DnsServer]) -> String {
    servers
        .iter()
        .map(|s| format!("nameserver {}\n", s.addr))
        .collect()
}

/// The DNS server that forwards to `servers` (a template's `DNS=`):
/// one per list, shared by the links whose templates name the same list,
/// reading a resolv.conf netd writes for it in the run directory.
pub(super) fn upstream_dns(
    ctx: &Ctx,
    servers: &[DnsServer],
) -> Result<Arc<dns::DnsServer>, std::io::Error> {
    let text = resolv_conf_text(servers);
    let run_dir = ctx.lock().paths.run_dir.clone();
    let mut map = ctx.link_dns.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = map.get(&text) {
        return Ok(l.server.clone());
    }
    let mut h = netspawn_common::fnv::Fnv::default();
    h.write(text.as_bytes());
    let path = run_dir.join(format!(
        "netd-{}-upstream-{:016x}.conf",
        netspawn_common::netd::netns_id(),
        h.finish()
    ));
    std::fs::write(&path, &text)?;
    let mut config = ctx.dns_config.clone();
    config.upstream.resolv_conf = path.clone();
    let dir: Arc<dyn dns::MachineDirectory> = ctx.directory.clone();
    let server = Arc::new(dns::DnsServer::new(dir, config));
    map.insert(
        text,
        LinkDns {
            server: server.clone(),
            resolv_conf: path,
        },
    );
    Ok(server)
}

/// Step 6: masquerade for the link's subnets, as `IPMasquerade=` says.
/// Starts the NAT step for a link on a blocking thread; the handle says
/// when it is done.
fn masquerade(
    ctx: &Arc<Ctx>,
    name: &str,
    file: &NetworkFile,
    subnets: Vec<IpNetwork>,
) -> tokio::task::JoinHandle<()> {
    let m = file.network.ip_masquerade;
    let mode = match (m.ipv4(), m.ipv6()) {
        (true, true) => nat::Masquerade::Both,
        (true, false) => nat::Masquerade::Ipv4,
        (false, true) => nat::Masquerade::Ipv6,
        (false, false) => nat::Masquerade::No,
    };
    let ctx2 = ctx.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut nat = ctx2.nat();
        let set = subnets
            .iter()
            .try_for_each(|subnet| nat.set_masquerade(&name, *subnet, mode));
        // Links that come and go one after the other leave the table alone:
        // the families this link uses (IPv6 too) stay once it has gone.
        nat.set_standing(true, &[]);
        if let Err(e) = set.and_then(|()| nat.apply()) {
            tracing::error!("{name}: NAT: {e}");
        }
    })
}

/// A link went away: releases its subnet, DHCP server, DNS listener, NAT
/// rules and the port forwards of machines behind it.
pub(super) async fn on_del_link(ctx: &Arc<Ctx>, link: &Link) {
    let name = link.name.clone();
    let (removed, owners) = {
        let mut st = ctx.lock();
        st.seen.remove(&link.index);
        st.failed.remove(&name);
        st.early_dhcp.remove(&name);
        let removed = st.links.remove(&name);
        let owners: Vec<String> = st
            .ports
            .iter()
            .filter(|(_, p)| p.ifname == name)
            .map(|(o, _)| o.clone())
            .collect();
        for o in &owners {
            st.ports.remove(o);
        }
        if removed.is_some() {
            st.pools.release(&name);
            ctx.pools_dirty.notify_one();
            prune_lease_files(&st);
        }
        st.last_busy = Instant::now();
        (removed, owners)
    };
    let removed_any = removed.is_some() || !owners.is_empty();
    if let Some(mut l) = removed {
        if let Some(tx) = l.dhcp_stop.take() {
            let _ = tx.send(());
        }
        if let Some(tx) = l.ra_stop.take() {
            let _ = tx.send(());
        }
        let own6 = l.address6.map(|o| IpAddr::V6(o.ip()));
        for ip in l.address.map(|a| a.ip()).into_iter().chain(own6) {
            ctx.dns.remove_listener(ip);
            ctx.dns.set_link_internal(link.index, false);
            ctx.dns.set_link_llmnr(link.index, true);
            for l in ctx
                .link_dns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
            {
                l.server.remove_listener(ip);
                l.server.set_link_internal(link.index, false);
                l.server.set_link_llmnr(link.index, true);
            }
        }
        tracing::info!("{name}: released");
    }
    // A link that went before its pipeline finished is no longer expected.
    ctx.nat_expected.forget(&name);
    // Only links we served (or with port forwards) have rules: most links
    // that go away (bridge members, other machines' links) cost nothing.
    if removed_any {
        let ctx2 = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut nat = ctx2.nat();
            nat.remove_link(&name);
            for o in &owners {
                nat.remove_owner(o);
            }
            if let Err(e) = nat.apply() {
                tracing::error!("NAT: {e}");
            }
        })
        .await;
    }
    ctx.changed.notify_waiters();
}

/// The machine whose container side has this MAC (netspawn's MACs are a
/// hash of the host's machine ID and the machine name).
fn hostname_for(ctx: &Ctx, mac: &[u8]) -> Option<String> {
    use netspawn_common::naming::{generate_mac, CONTAINER_HASH_KEY};
    // Names only: reading and checking every entry for each DHCP packet
    // would cost milliseconds with a thousand machines. A stale entry
    // cannot share a name with a live one, so the MAC picks the machine.
    let reg = netspawn_common::registry::Registry::new(&ctx.state.lock().ok()?.paths);
    reg.names()
        .ok()?
        .into_iter()
        .find(|n| generate_mac(&ctx.machine_id, n, &CONTAINER_HASH_KEY, 0)[..] == *mac)
}

/// The machines' host-side links (`ve-`, `vb-`) netd has seen, split into
/// those on the link with index `served` (that `ve-` link, or a port of that
/// bridge) and those on another one: (here, elsewhere). A machine's MAC is
/// the same on every zone, so one that moved to another zone must not keep
/// its lease here as a running machine. A bridge port not yet enslaved
/// counts as here (as every link did before zones were told apart).
fn machine_links(seen: &HashMap<u32, SeenLink>, served: u32) -> (Vec<String>, Vec<String>) {
    let (mut here, mut elsewhere) = (Vec::new(), Vec::new());
    for (index, l) in seen {
        if dhcp::machines::machine_of_link(&l.name).is_none() {
            continue;
        }
        let on_this = *index == served || l.master == Some(served);
        let on_other = l.master.is_some() || l.name.starts_with("ve-");
        if !on_this && on_other {
            elsewhere.push(l.name.clone());
        } else {
            here.push(l.name.clone());
        }
    }
    (here, elsewhere)
}

/// Whether the machine `name` runs on another link than this one, as far as
/// its links tell: one of them is elsewhere and none is here. Its link
/// names are made from its name (shortened with a hash if long), so this
/// holds for long names too.
fn runs_elsewhere(name: &str, here: &[String], elsewhere: &[String]) -> bool {
    use netspawn_common::naming::host_ifname;
    let links = [host_ifname(true, name), host_ifname(false, name)];
    links.iter().any(|l| elsewhere.contains(l)) && !links.iter().any(|l| here.contains(l))
}

/// A DHCP request's context on the link with index `served`: the machine's
/// name and the MACs of the machines running on that link: those whose
/// host-side link is on it (also unregistered ones) and those whose launcher
/// holds the name lock (the registry entry is written only after the
/// launch's DHCP) unless their link is on another one. The name locks are
/// read only when the links do not answer what the request asks
/// (`/proc/locks` costs an RCU grace period, milliseconds, and a launch's own
/// machine has its link).
pub(super) fn dhcp_context(ctx: &Ctx, served: u32, mac: &[u8]) -> dhcp::RequestContext {
    use netspawn_common::naming::{generate_mac, CONTAINER_HASH_KEY};
    let hostname = hostname_for(ctx, mac);
    let (locks, here, elsewhere) = {
        let st = ctx.lock();
        let (here, elsewhere) = machine_links(&st.seen, served);
        (st.paths.locks_dir(), here, elsewhere)
    };
    let linked: Vec<String> = here
        .iter()
        .filter_map(|l| dhcp::machines::machine_of_link(l).map(str::to_string))
        .collect();
    let machine_id = ctx.machine_id;
    let asking = mac.to_vec();
    // The asking client itself is never left out: netd may still know its
    // link on a zone it left, and not yet its new one here.
    let claimed = move || match dhcp::machines::claimed_names(&locks) {
        Ok(names) => names
            .iter()
            .map(|n| generate_mac(&machine_id, n, &CONTAINER_HASH_KEY, 0).to_vec())
            .zip(names.iter())
            .filter(|(m, n)| *m == asking || !runs_elsewhere(n, &here, &elsewhere))
            .map(|(m, _)| m)
            .collect(),
        Err(e) => {
            tracing::debug!("running machines: {e}");
            Default::default()
        }
    };
    dhcp::RequestContext::with_machines(
        hostname,
        linked
            .iter()
            .map(|n| generate_mac(&ctx.machine_id, n, &CONTAINER_HASH_KEY, 0)),
    )
    .and_on_need(dhcp::MoreMachines::new(claimed))
}

/// Deletes the lease files of links that no longer exist, beyond a bounded
/// history.
pub(super) fn prune_lease_files(st: &State) {
    let dir = st.paths.state_dir.join("leases");
    let exists = |n: &str| st.links.contains_key(n) || st.seen.values().any(|l| l.name == n);
    match dhcp::lease::prune_lease_dir(&dir, exists, dhcp::lease::link_history(), SystemTime::now())
    {
        Ok(gone) if !gone.is_empty() => tracing::debug!("forgot the leases of {gone:?}"),
        Ok(_) => {}
        Err(e) => tracing::warn!("pruning {}: {e}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use netlink::fake::FakeRtnl;

    use super::*;
    use crate::template::testutil::ok;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A fake kernel with `lo`, `eth0` and a down veth `name`, whose index
    /// it returns.
    /// [`kernel_steps`] and [`ipv6_steps`] with the host's networks not
    /// looked at yet.
    fn steps(
        k: &mut FakeRtnl,
        i: u32,
        name: &str,
        f: &NetworkFile,
        first: bool,
        take: impl FnOnce(&IpNetwork, Vec<IpNetwork>) -> Option<IpNetwork>,
    ) -> Option<IpNetwork> {
        kernel_steps(k, i, name, f, first, &mut HostNetworks::default(), take)
    }

    fn steps6(
        k: &mut FakeRtnl,
        i: u32,
        name: &str,
        f: &NetworkFile,
        take: impl FnOnce(&IpNetwork, Vec<IpNetwork>) -> Option<IpNetwork>,
    ) -> Option<Ipv6Setup> {
        ipv6_steps(k, i, name, f, &mut HostNetworks::default(), take)
    }

    fn kernel(name: &str) -> (FakeRtnl, u32) {
        let mut f = FakeRtnl::with_links(&[("lo", None), ("eth0", None), (name, Some("veth"))]);
        let l = f.links.iter_mut().find(|l| l.name == name).unwrap();
        l.up = false;
        let index = l.index;
        (f, index)
    }

    /// The link's addresses in the fake, in the order they came.
    fn addresses(f: &mut FakeRtnl, index: u32) -> Vec<IpNetwork> {
        f.link_addresses(index)
            .unwrap()
            .iter()
            .map(|a| IpNetwork::new(a.address, a.prefix_len).unwrap())
            .collect()
    }

    /// Runs `f` and returns what it logged (debug and up), one line each.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        let r = tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        (r, text)
    }

    #[test]
    fn link_local_addressing_makes_the_right_calls() {
        let ll0 = ipv4_link_local("ll0");
        let tpl = |v: &str| format!("[Match]\nName=ll0\n[Network]\nLinkLocalAddressing={v}\n");
        // The kernel gave the link an IPv6 link-local address already.
        let run = |text: &str, no_ipv6: bool| {
            let (mut f, i) = kernel("ll0");
            f.add_address(i, ip("fe80::1"), 64).unwrap();
            f.log.clear();
            f.no_ipv6 = no_ipv6;
            link_local(&mut f, i, "ll0", &ok(text).file);
            let log: Vec<String> = f
                .log
                .iter()
                .map(|l| l.replace(&format!(" {i} "), " L "))
                .collect();
            (f, i, log)
        };
        let gen_off = "addrgenmode L None".to_string();
        let fe80_gone = "address delete L fe80::1/64".to_string();
        let ipv4ll = format!("address add L {ll0}/16 scope Link");

        let (mut f, i, log) = run(&tpl("ipv4"), false);
        assert_eq!(
            log,
            vec![gen_off.clone(), fe80_gone.clone(), ipv4ll.clone()]
        );
        assert_eq!(f.ipv6_addr_gen.get(&i), Some(&In6AddrGenMode::None));
        assert_eq!(addresses(&mut f, i), vec![net(&format!("{ll0}/16"))]);

        let (mut f, i, log) = run(&tpl("no"), false);
        assert_eq!(log, vec![gen_off.clone(), fe80_gone]);
        assert!(addresses(&mut f, i).is_empty());

        let (mut f, i, log) = run(&tpl("ipv6"), false);
        assert_eq!(log, Vec::<String>::new());
        assert_eq!(f.ipv6_addr_gen.get(&i), None);
        assert_eq!(addresses(&mut f, i), vec![net("fe80::1/64")]);

        let (_, _, log) = run(&tpl("yes"), false);
        assert_eq!(log, vec![ipv4ll.clone()]);

        // Without IPv6 there is nothing to remove; the IPv4 part still runs.
        let (_, _, log) = run(&tpl("ipv4"), true);
        assert_eq!(log, vec![gen_off, ipv4ll]);

        // The built-in ve template: nothing (DHCPServer=yes, IPv6 on).
        let (_, _, log) = run(template::BUILTIN[2].1, false);
        assert_eq!(log, Vec::<String>::new());
    }

    #[test]
    fn a_template_with_addresses_lands_in_the_kernel() {
        let f = ok(
            "[Match]\nName=ve-x\n[Network]\nLinkLocalAddressing=no\nAddress=0.0.0.0/28\n\
                    Address=192.168.7.1/24\nAddress=fd00::1/64\nAddress=10.1.2.3\n",
        )
        .file;
        let (mut k, i) = kernel("ve-x");
        let eth0 = k.link("eth0").unwrap().unwrap().index;
        k.add_address(eth0, ip("192.168.1.9"), 24).unwrap();
        k.add_default_route(eth0, ip("192.168.1.1"), None, netlink::RouteProtocol::Dhcp)
            .unwrap();
        // The pool is asked with the host's networks (no default route).
        let mut asked = None;
        let got = steps(&mut k, i, "ve-x", &f, true, |req, host| {
            asked = Some((*req, host));
            Some(net("10.0.0.1/28"))
        });
        assert_eq!(got, Some(net("10.0.0.1/28")));
        assert_eq!(
            asked,
            Some((
                net("0.0.0.0/28"),
                vec![net("192.168.1.9/24"), net("192.168.1.0/24")]
            ))
        );
        // The pool's address first (it serves DHCP), then the static IPv4 ones.
        let want = vec![
            net("10.0.0.1/28"),
            net("192.168.7.1/24"),
            net("10.1.2.3/32"),
        ];
        assert_eq!(addresses(&mut k, i), want);
        assert!(k.link("ve-x").unwrap().unwrap().up);

        // A restarted netd does it all again: EEXIST everywhere is fine,
        // nothing is there twice and nothing is logged above debug.
        let (got, log) =
            logged(|| steps(&mut k, i, "ve-x", &f, true, |_, _| Some(net("10.0.0.1/28"))));
        assert_eq!(got, Some(net("10.0.0.1/28")));
        assert_eq!(addresses(&mut k, i), want);
        assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
    }

    #[test]
    fn every_ipv4_address_is_added_once_and_the_link_set_up() {
        // One already there (EEXIST) does not stop the rest.
        let f = ok(
            "[Match]\nName=x\n[Network]\nAddress=0.0.0.0/28\nAddress=192.168.7.1/24\n\
                    Address=fd00::1/64\nAddress=10.1.2.3\n",
        )
        .file;
        let (mut k, i) = kernel("x");
        k.add_address(i, ip("192.168.7.1"), 24).unwrap();
        k.log.clear();
        configure_addresses(&mut k, i, "x", &f, net("10.0.0.1/28"));
        assert_eq!(
            k.log,
            vec![
                format!("address add {i} 10.0.0.1/28"),
                format!("address add {i} 192.168.7.1/24"),
                format!("address add {i} 10.1.2.3/32"),
                format!("up {i}"),
            ]
        );
        // A static serving address is not added twice.
        let f = ok("[Match]\nName=x\n[Network]\nAddress=10.0.0.1/24\nAddress=10.0.1.1/24\n").file;
        let (mut k, i) = kernel("x");
        let got = steps(&mut k, i, "x", &f, false, |_, _| unreachable!("no pool"));
        assert_eq!(got, Some(net("10.0.0.1/24")));
        assert_eq!(
            k.log,
            vec![
                format!("address add {i} 10.0.0.1/24"),
                format!("address add {i} 10.0.1.1/24"),
                format!("up {i}"),
            ]
        );
    }

    #[test]
    fn an_exhausted_pool_or_a_member_link_touches_nothing() {
        let f = ok("[Match]\nName=x\n[Network]\nAddress=0.0.0.0/28\n").file;
        let (mut k, i) = kernel("x");
        assert_eq!(steps(&mut k, i, "x", &f, true, |_, _| None), None);
        assert!(k.log.is_empty(), "{:?}", k.log);
        let vb = template::load_with(&[], &template::BUILTIN)
            .unwrap()
            .files
            .into_iter()
            .find(|f| f.name == "80-container-vb.network")
            .unwrap();
        let (mut k, i) = kernel("vb-x");
        assert_eq!(steps(&mut k, i, "vb-x", &vb, true, |_, _| None), None);
        // Only its LinkLocalAddressing=no.
        assert_eq!(k.log, vec![format!("addrgenmode {i} None")]);
    }

    #[test]
    fn machines_on_another_zone_or_link_are_not_running_here() {
        use netspawn_common::naming::host_ifname;
        let long = "averyveryverylongname";
        let seen: HashMap<u32, SeenLink> = [
            (5, "vz-a".to_string(), None),
            (9, "vz-b".to_string(), None),
            (6, "vb-x".to_string(), Some(5)),
            (7, "vb-y".to_string(), Some(9)),
            (8, "vb-z".to_string(), None),
            (10, "ve-w".to_string(), None),
            (11, "ve-x".to_string(), None),
            (12, "eth0".to_string(), None),
            (13, host_ifname(true, long), Some(9)),
        ]
        .into_iter()
        .map(|(i, name, master)| {
            (
                i,
                SeenLink {
                    name,
                    master,
                    kind: None,
                    link_local_done: true,
                },
            )
        })
        .collect();
        let sorted = |(mut a, mut b): (Vec<String>, Vec<String>)| {
            a.sort();
            b.sort();
            (a, b)
        };
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Zone a: its port vb-x and vb-z, not yet enslaved; the rest is on
        // zone b or a link of its own.
        let (here, elsewhere) = sorted(machine_links(&seen, 5));
        assert_eq!(here, v(&["vb-x", "vb-z"]));
        assert_eq!(elsewhere.len(), 4, "{elsewhere:?}");
        // x is on zone a too (its ve- link is another one); y, w and the
        // long name, shortened in its link name, run elsewhere.
        for (m, away) in [
            ("x", false),
            ("z", false),
            ("y", true),
            ("w", true),
            (long, true),
        ] {
            assert_eq!(runs_elsewhere(m, &here, &elsewhere), away, "{m}");
        }
        // A machine netd has seen no link of is not taken for one elsewhere.
        assert!(!runs_elsewhere("new", &here, &elsewhere));
        // The link ve-w: w, and z (a port not yet in any bridge).
        let (here, elsewhere) = sorted(machine_links(&seen, 10));
        assert_eq!(here, v(&["vb-z", "ve-w"]));
        assert!(runs_elsewhere("x", &here, &elsewhere));
        assert!(!runs_elsewhere("w", &here, &elsewhere));
    }

    #[test]
    fn a_link_that_vanishes_mid_pipeline_is_logged_not_a_panic() {
        let f = ok("[Match]\nName=ll0\n[Network]\nLinkLocalAddressing=ipv4\n\
                    Address=10.0.0.1/28\nAddress=10.0.1.1/24\n")
        .file;
        let (mut k, i) = kernel("ll0");
        // Gone after the link-local steps, before the addresses.
        k.vanish(i, 2);
        let (got, log) = logged(|| steps(&mut k, i, "ll0", &f, true, |_, _| None));
        assert_eq!(got, Some(net("10.0.0.1/28")));
        assert!(k.link("ll0").unwrap().is_none());
        assert_eq!(k.log.len(), 5, "{:?}", k.log);
        for what in [
            "ll0: add address 10.0.0.1/28: ENODEV",
            "ll0: add address 10.0.1.1/24: ENODEV",
            &format!("ll0: bring up link {i}: ENODEV"),
        ] {
            assert!(
                log.lines().any(|l| l.contains("WARN") && l.contains(what)),
                "{what} in {log}"
            );
        }
        // Gone before anything: every step fails and says so.
        let (mut k, i) = kernel("ll0");
        k.vanish(i, 0);
        let (got, log) = logged(|| steps(&mut k, i, "ll0", &f, true, |_, _| None));
        assert_eq!(got, Some(net("10.0.0.1/28")));
        assert!(log.contains("ENODEV"), "{log}");
    }

    #[test]
    fn host_networks_leave_default_routes_out() {
        let (mut k, i) = kernel("eth1");
        let eth0 = k.link("eth0").unwrap().unwrap().index;
        k.add_address(eth0, ip("192.168.1.9"), 24).unwrap();
        k.add_address(i, ip("fd00::9"), 64).unwrap();
        k.add_address(i, ip("10.9.9.9"), 32).unwrap();
        k.add_default_route(eth0, ip("192.168.1.1"), None, netlink::RouteProtocol::Dhcp)
            .unwrap();
        k.add_route(&netlink::Route {
            oif: Some(i),
            scope: netlink::RouteScope::Link,
            ..netlink::Route::to(ip("172.16.0.0"), 12)
        })
        .unwrap();
        assert_eq!(
            host_networks(&mut k),
            vec![
                net("192.168.1.9/24"),
                net("fd00::9/64"),
                net("10.9.9.9/32"),
                net("192.168.1.0/24"),
                net("172.16.0.0/12"),
                // IPv6 routes count too.
                net("fd00::/64"),
            ]
        );
    }

    #[test]
    fn serving_address_is_the_first_ipv4() {
        let f = ok(
            "[Match]\nName=x\n[Network]\nAddress=::/64\nAddress=10.0.0.1/24\nAddress=0.0.0.0/28\n",
        )
        .file;
        assert_eq!(serving_address(&f), Some("0.0.0.0/28".parse().unwrap()));
        let f = ok("[Match]\nName=x\n[Network]\nAddress=10.0.0.1/24\nAddress=10.0.1.1/24\n").file;
        assert_eq!(serving_address(&f), Some("10.0.0.1/24".parse().unwrap()));
        let f = ok("[Match]\nName=x\n[Network]\nKeepMaster=yes\n").file;
        assert_eq!(serving_address(&f), None);
    }

    #[test]
    fn dhcp_config_follows_the_template() {
        let v4: Ipv4Network = "10.0.0.1/28".parse().unwrap();
        let f = ok(
            "[Match]\nName=x\n[DHCPServer]\nEmitRouter=no\nEmitDNS=no\nDefaultLeaseTimeSec=10min\n",
        )
        .file;
        let cfg = dhcp_config(&f, v4).unwrap();
        assert_eq!(cfg.router, None);
        assert!(cfg.dns.is_empty());
        assert_eq!(cfg.default_lease, Duration::from_secs(600));
        let f = ok("[Match]\nName=x\n").file;
        let cfg = dhcp_config(&f, v4).unwrap();
        assert_eq!(cfg.router, Some(v4.ip()));
        assert_eq!(cfg.dns, vec![v4.ip()]);
        // [DHCPServer] DNS= is what clients are told, in order.
        let f = ok("[Match]\nName=x\n[DHCPServer]\nDNS=192.0.2.53 _server_address\n").file;
        let cfg = dhcp_config(&f, v4).unwrap();
        assert_eq!(
            cfg.dns,
            vec![Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(10, 0, 0, 1)]
        );
        // EmitDNS=no wins over a list.
        let f = ok("[Match]\nName=x\n[DHCPServer]\nDNS=192.0.2.53\nEmitDNS=no\n").file;
        assert!(dhcp_config(&f, v4).unwrap().dns.is_empty());
    }

    #[test]
    fn link_local_as_systemd_network() {
        let loaded = template::load_with(&[], &template::BUILTIN).unwrap();
        let builtin = |n: &str| loaded.files.iter().find(|f| f.name == n).cloned().unwrap();
        // ve/vz: LinkLocalAddressing=yes, but netd serves DHCPv4 there, so
        // no 169.254/16; IPv6 link-local stays as the kernel makes it.
        for n in ["80-container-ve.network", "80-container-vz.network"] {
            assert_eq!(
                link_local_plan("ve-web", &builtin(n)),
                LinkLocalPlan {
                    ipv6_off: false,
                    ipv4: None
                },
                "{n}"
            );
        }
        // vb: LinkLocalAddressing=no.
        assert_eq!(
            link_local_plan("vb-web", &builtin("80-container-vb.network")),
            LinkLocalPlan {
                ipv6_off: true,
                ipv4: None
            }
        );
        let plan = |text: &str| link_local_plan("ll0", &ok(text).file);
        let ll0 = ipv4_link_local("ll0");
        let table: &[(&str, LinkLocalPlan)] = &[
            (
                "ipv4",
                LinkLocalPlan {
                    ipv6_off: true,
                    ipv4: Some(ll0),
                },
            ),
            (
                "yes",
                LinkLocalPlan {
                    ipv6_off: false,
                    ipv4: Some(ll0),
                },
            ),
            (
                "ipv6",
                LinkLocalPlan {
                    ipv6_off: false,
                    ipv4: None,
                },
            ),
            (
                "no",
                LinkLocalPlan {
                    ipv6_off: true,
                    ipv4: None,
                },
            ),
        ];
        for (value, want) in table {
            let text = format!("[Match]\nName=ll0\n[Network]\nLinkLocalAddressing={value}\n");
            assert_eq!(plan(&text), *want, "{value}");
        }
        // Not set: networkd's default, ipv6.
        assert_eq!(plan("[Match]\nName=ll0\n").ipv4, None);
        assert!(!plan("[Match]\nName=ll0\n").ipv6_off);
        // Never an IPv4 link-local address where netd serves DHCPv4.
        let served =
            plan("[Match]\nName=ll0\n[Network]\nLinkLocalAddressing=ipv4\nDHCPServer=yes\n");
        assert_eq!(served.ipv4, None);
    }

    #[test]
    fn ipv4_link_local_is_stable_and_in_range() {
        assert_eq!(ipv4_link_local("ll0"), ipv4_link_local("ll0"));
        assert_ne!(ipv4_link_local("ll0"), ipv4_link_local("ll1"));
        for i in 0..2000 {
            let o = ipv4_link_local(&format!("eth{i}")).octets();
            assert_eq!((o[0], o[1]), (169, 254));
            assert!((1..=254).contains(&o[2]), "{o:?}");
        }
    }

    #[test]
    fn upstream_servers_as_resolv_conf() {
        let f = ok("[Match]\nName=x\n[Network]\nDNS=192.0.2.1 2001:db8::53 192.0.2.2:53\n").file;
        assert_eq!(
            resolv_conf_text(&f.network.dns),
            "nameserver 192.0.2.1\nnameserver 2001:db8::53\nnameserver 192.0.2.2\n"
        );
    }

    #[test]
    fn ipv6_takes_a_pool_subnet_and_fe80_1_without_dad() {
        let f = ok(
            "[Match]\nName=ve-x\n[Network]\nAddress=0.0.0.0/28\nAddress=::/64\n\
                    IPv6SendRA=yes\nAddress=fd99::7/64\n\
                    [IPv6Prefix]\nPrefix=fd98::/64\nAssign=yes\n",
        )
        .file;
        let (mut k, i) = kernel("ve-x");
        let mut asked = None;
        let got = steps6(&mut k, i, "ve-x", &f, |req, _| {
            asked = Some(*req);
            Some(net("fd12:3456:789a:1::1/64"))
        })
        .unwrap();
        assert_eq!(asked, Some(net("::/64")));
        assert_eq!(got.own, Some("fd12:3456:789a:1::1/64".parse().unwrap()));
        assert_eq!(
            got.subnets,
            vec![
                "fd12:3456:789a:1::/64".parse::<Ipv6Network>().unwrap(),
                "fd99::/64".parse().unwrap(),
                "fd98::/64".parse().unwrap(),
            ]
        );
        assert_eq!(
            addresses(&mut k, i),
            vec![
                net("fe80::1/64"),
                net("fd12:3456:789a:1::1/64"),
                net("fd99::7/64"),
                net("fd98::1/64"),
            ]
        );
        assert!(k.link("ve-x").unwrap().unwrap().up);
        // Again (a restarted netd): nothing twice, nothing above debug.
        let (again, log) = logged(|| {
            steps6(&mut k, i, "ve-x", &f, |_, _| {
                Some(net("fd12:3456:789a:1::1/64"))
            })
        });
        assert_eq!(again, Some(got));
        assert_eq!(addresses(&mut k, i).len(), 4);
        assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
        // No IPv6 asked for: nothing.
        let v4 = ok("[Match]\nName=x\n[Network]\nAddress=0.0.0.0/28\n").file;
        let (mut k, i) = kernel("x");
        assert_eq!(steps6(&mut k, i, "x", &v4, |_, _| unreachable!()), None);
        assert!(k.log.is_empty());
        // The pool has no subnet: the static ones still serve.
        let (mut k, i) = kernel("ve-x");
        let got = steps6(&mut k, i, "ve-x", &f, |_, _| None).unwrap();
        assert_eq!(got.own, Some("fd99::7/64".parse().unwrap()));
    }

    #[test]
    fn an_ipv6_prefix_over_a_host_route_refuses_the_link() {
        let f = ok("[Match]\nName=ve-x\n[Network]\nIPv6SendRA=yes\n\
                    [IPv6Prefix]\nPrefix=fd42:1:2:3::/64\n")
        .file;
        let (mut k, i) = kernel("ve-x");
        assert_eq!(check_ipv6_prefixes(&mut k, i, &f), Ok(()));
        let eth0 = k.link("eth0").unwrap().unwrap().index;
        k.add_route(&netlink::Route {
            oif: Some(eth0),
            scope: netlink::RouteScope::Universe,
            ..netlink::Route::to(ip("fd42::"), 16)
        })
        .unwrap();
        // The link's own address from an earlier run does not count.
        k.add_address(i, ip("fd42:1:2:3::1"), 64).unwrap();
        let e = check_ipv6_prefixes(&mut k, i, &f).unwrap_err();
        assert_eq!(
            e,
            "/etc/netspawn/network/t.network: [IPv6Prefix] Prefix=fd42:1:2:3::/64 overlaps \
             fd42::/16, which the host has on another link; refusing to advertise it"
        );
        assert_eq!(e.lines().count(), 1);
    }
}
