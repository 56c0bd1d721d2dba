//! The link lifecycle: what netd does when a link appears and when it goes
//! away. A new link runs through a pipeline of small steps, each one
//! function, in systemd-networkd's order:
//!
//! 1. [`match_template`]: remember the link; pick its `.network` file;
//! 2. [`assign_address`]: a subnet from the pool (or the static address),
//!    on the link, link up;
//! 3. [`start_dhcp`]: the DHCPv4 server, as `[DHCPServer]` says;
//! 4. [`serve_dns`]: netd's DNS on the host side's address;
//! 5. [`masquerade`]: NAT for the subnet, as `IPMasquerade=` says.
//!
//! A link that goes away releases all of it ([`on_del_link`]).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::TryStreamExt;
use ipnetwork::{IpNetwork, Ipv4Network};
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use tokio::sync::oneshot;

use super::{Ctx, Managed, SeenLink};
use crate::dhcp;
use crate::nat;
use crate::pool;
use crate::template::{self, LinkFacts, NetworkFile};

/// EEXIST, as a netlink error carries it (negated).
const EEXIST: i32 = libc::EEXIST;

/// True if `e` is the kernel saying "already there" (EEXIST).
fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == EEXIST)
}

/// What a link message says about the link, and its bridge (IFLA_MASTER).
pub(super) fn link_facts(m: &LinkMessage) -> (LinkFacts, Option<u32>) {
    let mut facts = LinkFacts::default();
    let mut master = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => facts.name = n.clone(),
            LinkAttribute::Controller(i) => master = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        facts.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    // The driver of virtual links is their kind (veth, bridge, macvlan...).
    facts.driver = facts.kind.clone();
    (facts, master)
}

/// A new (or changed) link: runs the pipeline.
pub(super) async fn on_new_link(ctx: &Arc<Ctx>, m: &LinkMessage) {
    let (facts, master) = link_facts(m);
    let index = m.header.index;
    let Some(file) = match_template(ctx, index, &facts, master) else {
        return;
    };
    let name = facts.name;
    let Some(address) = assign_address(ctx, index, &name, &file).await else {
        return;
    };
    let IpNetwork::V4(v4) = address else { return };
    let dhcp_stop = start_dhcp(ctx, &name, &file, v4);
    serve_dns(ctx, &name, v4).await;
    masquerade(ctx, &name, &file, v4).await;
    {
        let mut st = ctx.lock();
        st.links.insert(
            name.clone(),
            Managed {
                address: Some(address),
                dhcp_stop,
            },
        );
        st.last_busy = Instant::now();
    }
    tracing::info!("{name}: configured {address}");
    ctx.changed.notify_waiters();
}

/// Step 1: remembers the link (for `LINK` on its ports) and returns the
/// template that applies to it, if any and if the link is not configured
/// already.
fn match_template(
    ctx: &Ctx,
    index: u32,
    facts: &LinkFacts,
    master: Option<u32>,
) -> Option<NetworkFile> {
    let file = {
        let mut st = ctx.lock();
        st.seen.insert(
            index,
            SeenLink {
                name: facts.name.clone(),
                master,
                kind: facts.kind.clone(),
            },
        );
        if st.links.contains_key(&facts.name) {
            None
        } else {
            st.templates.find_match(facts).cloned()
        }
    };
    ctx.changed.notify_waiters();
    file
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

/// Step 2: takes the address (a subnet from the pool, or the static one),
/// puts it on the link and sets the link up. `None` if there is none or
/// the pool is exhausted (then `LINK` answers the reason).
async fn assign_address(
    ctx: &Ctx,
    index: u32,
    name: &str,
    file: &NetworkFile,
) -> Option<IpNetwork> {
    let request = serving_address(file)?;
    let address = if template::is_pool_request(&request) {
        let host = host_networks(&ctx.handle).await;
        let mut st = ctx.lock();
        match st.pools.acquire(name, &request, &host) {
            Ok(a) => {
                let path = pool::state_path(&st.paths.state_dir);
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                if let Err(e) = st.pools.save(&path) {
                    tracing::warn!("saving pools: {e}");
                }
                a.host()
            }
            Err(e) => {
                tracing::error!("{name}: {e}");
                st.failed.insert(name.to_string(), e.to_string());
                return None;
            }
        }
    } else {
        request
    };
    add_address(ctx, index, name, address).await;
    let up = rtnetlink::LinkUnspec::new_with_index(index).up().build();
    let _ = ctx.handle.link().set(up).execute().await;
    Some(address)
}

/// Puts `address` on the link; one that is there already is fine.
async fn add_address(ctx: &Ctx, index: u32, name: &str, address: IpNetwork) {
    if let Err(e) = ctx
        .handle
        .address()
        .add(index, address.ip(), address.prefix())
        .execute()
        .await
    {
        if !is_exists(&e) {
            tracing::warn!("{name}: add address {address}: {e}");
        }
    }
}

/// The host's addresses and routes, which pools must avoid.
async fn host_networks(handle: &rtnetlink::Handle) -> Vec<IpNetwork> {
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    let mut out = Vec::new();
    if let Ok(addrs) = handle
        .address()
        .get()
        .execute()
        .try_collect::<Vec<_>>()
        .await
    {
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
    if let Ok(routes) = handle
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
    }
    cfg.default_lease = Duration::from_secs(u64::from(d.default_lease_secs));
    cfg.max_lease = Duration::from_secs(u64::from(d.max_lease_secs));
    Ok(cfg)
}

/// Step 3: the DHCPv4 server, if `DHCPServer=yes`; returns what stops it.
fn start_dhcp(
    ctx: &Arc<Ctx>,
    name: &str,
    file: &NetworkFile,
    v4: Ipv4Network,
) -> Option<oneshot::Sender<()>> {
    if !file.network.dhcp_server {
        return None;
    }
    let cfg = match dhcp_config(file, v4) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{name}: DHCP server: {e}");
            return None;
        }
    };
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
    let (tx, rx) = oneshot::channel();
    let ctx2 = ctx.clone();
    let ifname = name.to_string();
    tokio::spawn(async move {
        let hostname = move |mac: &[u8]| hostname_for(&ctx2, mac);
        if let Err(e) = dhcp::io::serve(&ifname, server, hostname, async move {
            let _ = rx.await;
        })
        .await
        {
            tracing::error!("{ifname}: DHCP server: {e}");
        }
    });
    Some(tx)
}

/// Step 4: netd's DNS on the host side's address.
async fn serve_dns(ctx: &Ctx, name: &str, v4: Ipv4Network) {
    if let Err(e) = ctx.dns.add_listener(IpAddr::V4(v4.ip())).await {
        tracing::error!("{name}: DNS on {}: {e}", v4.ip());
    }
}

/// Step 5: masquerade for the link's subnet, as `IPMasquerade=` says.
async fn masquerade(ctx: &Arc<Ctx>, name: &str, file: &NetworkFile, v4: Ipv4Network) {
    let m = file.network.ip_masquerade;
    let mode = match (m.ipv4(), m.ipv6()) {
        (true, true) => nat::Masquerade::Both,
        (true, false) => nat::Masquerade::Ipv4,
        (false, true) => nat::Masquerade::Ipv6,
        (false, false) => nat::Masquerade::No,
    };
    let ctx2 = ctx.clone();
    let name = name.to_string();
    let subnet = IpNetwork::V4(Ipv4Network::new(v4.network(), v4.prefix()).unwrap_or(v4));
    let _ = tokio::task::spawn_blocking(move || {
        let mut st = ctx2.lock();
        if let Err(e) = st
            .nat
            .set_masquerade(&name, subnet, mode)
            .and_then(|()| st.nat.apply())
        {
            tracing::error!("{name}: NAT: {e}");
        }
    })
    .await;
}

/// A link went away: releases its subnet, DHCP server, DNS listener, NAT
/// rules and the port forwards of machines behind it.
pub(super) async fn on_del_link(ctx: &Arc<Ctx>, m: &LinkMessage) {
    let (facts, _) = link_facts(m);
    let name = facts.name;
    let (removed, owners) = {
        let mut st = ctx.lock();
        st.seen.remove(&m.header.index);
        st.failed.remove(&name);
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
            let path = pool::state_path(&st.paths.state_dir);
            let _ = st.pools.save(&path);
        }
        st.last_busy = Instant::now();
        (removed, owners)
    };
    let removed_any = removed.is_some() || !owners.is_empty();
    if let Some(mut l) = removed {
        if let Some(tx) = l.dhcp_stop.take() {
            let _ = tx.send(());
        }
        if let Some(IpNetwork::V4(v4)) = l.address {
            ctx.dns.remove_listener(IpAddr::V4(v4.ip()));
        }
        tracing::info!("{name}: released");
    }
    // Only links we served (or with port forwards) have rules: most links
    // that go away (bridge members, other machines' links) cost nothing.
    if removed_any {
        let ctx2 = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut st = ctx2.lock();
            st.nat.remove_link(&name);
            for o in &owners {
                st.nat.remove_owner(o);
            }
            if let Err(e) = st.nat.apply() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::testutil::ok;

    #[test]
    fn eexist_by_errno() {
        let mut m = rtnetlink::packet_core::ErrorMessage::default();
        m.code = std::num::NonZeroI32::new(-libc::EEXIST);
        assert!(is_exists(&rtnetlink::Error::NetlinkError(m.clone())));
        m.code = std::num::NonZeroI32::new(-libc::ENODEV);
        assert!(!is_exists(&rtnetlink::Error::NetlinkError(m)));
        assert!(!is_exists(&rtnetlink::Error::RequestFailed));
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
    }
}
