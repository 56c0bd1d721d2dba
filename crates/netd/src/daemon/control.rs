//! The control server: one request per line on the Unix socket, one typed
//! [`Answer`] back (the protocol is `netspawn_common::netd`). `LINK` waits
//! until the link pipeline has configured the link (or its bridge), `PORTS`
//! registers forwards installed once the machine's address is known,
//! `RELEASE` drops them, `RELOAD` reads the `.network` files again, `DHCP`
//! says why a link's DHCP server may have left a client without an address,
//! `DHCPMSG` hands a DHCP message to a link's server and returns its answer,
//! `LINKDHCP` does both of `LINK` and `DHCPMSG`, the message as soon as the
//! link's server exists.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnetwork::IpNetwork;
use netspawn_common::netd::{Answer, Cidr, Forward, Request};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Ctx, Ports, State};
use crate::dns::MachineDirectory;
use crate::nat;
use crate::template::LinkFacts;

/// Where a link stands, as far as `LINK` is concerned.
enum LinkState {
    /// Configured (its own address, or its bridge's for a member).
    Ready(IpNetwork),
    /// Not ours: no template matches it (or its bridge), e.g. a LAN bridge.
    Unmanaged,
    /// Not seen yet, or being configured.
    Pending,
}

fn facts(name: &str, kind: &Option<String>) -> LinkFacts {
    LinkFacts {
        name: name.to_string(),
        altnames: Vec::new(),
        kind: kind.clone(),
        driver: kind.clone(),
    }
}

/// The link netd has seen under `ifname`, with its index.
fn seen_named<'a>(st: &'a State, ifname: &str) -> Option<(u32, &'a super::SeenLink)> {
    st.seen
        .iter()
        .find(|(_, l)| l.name == ifname)
        .map(|(i, l)| (*i, l))
}

fn link_state(st: &State, ifname: &str) -> LinkState {
    if let Some(m) = st.links.get(ifname) {
        return m.address.map_or(LinkState::Pending, LinkState::Ready);
    }
    let Some((_, seen)) = seen_named(st, ifname) else {
        return LinkState::Pending;
    };
    let (name, kind) = match seen.master {
        Some(mi) => match st.seen.get(&mi) {
            Some(bridge) => (bridge.name.as_str(), &bridge.kind),
            None => return LinkState::Pending,
        },
        // A port of a bridge is announced first without its master (the
        // kernel makes the veth, then enslaves it): netspawn's ports
        // (`vb-`) are never served on their own, so one seen without its
        // master is waited for, not called unmanaged.
        None if ifname.starts_with("vb-") && seen.kind.as_deref() == Some("veth") => {
            return LinkState::Pending
        }
        None => (ifname, &seen.kind),
    };
    if let Some(m) = st.links.get(name) {
        return m.address.map_or(LinkState::Pending, LinkState::Ready);
    }
    match st.templates.find_match(&facts(name, kind)) {
        Some(f)
            if f.network.pool_requests().next().is_some()
                || f.network.static_addresses().next().is_some() =>
        {
            LinkState::Pending
        }
        _ => LinkState::Unmanaged,
    }
}

/// The longest request line read (the protocol's 4096 bytes and a CR LF):
/// a longer one is refused and its connection closed, without reading more
/// of it into memory.
const MAX_REQUEST_LINE: usize = 4096 + 2;

pub(super) async fn serve_client(ctx: Arc<Ctx>, stream: tokio::net::UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = (MAX_REQUEST_LINE + 1) as u64;
        match (&mut reader).take(limit).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let too_long = !buf.ends_with(b"\n") && buf.len() > MAX_REQUEST_LINE;
        let answer = if too_long {
            Answer::Err("request too long".into())
        } else {
            match std::str::from_utf8(&buf).map(Request::parse) {
                Ok(Ok(req)) => handle(&ctx, req).await,
                Ok(Err(e)) => Answer::Err(e),
                Err(_) => Answer::Err("malformed request".into()),
            }
        };
        if w.write_all(format!("{}\n", answer.to_line()).as_bytes())
            .await
            .is_err()
            || too_long
        {
            break;
        }
    }
}

/// The DHCP server netd runs for `ifname`: the link's own (a `ve-` link),
/// or its bridge's for a port (a zone's `vb-` link), also while that link
/// is still in its pipeline; with the index of the link it serves.
fn dhcp_server_for(
    st: &State,
    ifname: &str,
) -> Option<(u32, Arc<std::sync::Mutex<crate::dhcp::Server>>)> {
    let (index, seen) = seen_named(st, ifname)?;
    let (index, name) = match seen.master {
        Some(m) => (m, st.seen.get(&m)?.name.as_str()),
        None => (index, ifname),
    };
    let server = match st.links.get(name) {
        Some(m) => m.dhcp.clone()?,
        None => st.early_dhcp.get(name)?.clone(),
    };
    Some((index, server))
}

/// Hands `packet` to a link's DHCP server: the same server, policy and
/// counters as a message on the link; off the runtime's threads, as the
/// context may read /proc/locks and the server writes its lease file.
fn dhcp_exchange(
    ctx: &Arc<Ctx>,
    (index, server): (u32, Arc<std::sync::Mutex<crate::dhcp::Server>>),
    packet: Vec<u8>,
) -> tokio::task::JoinHandle<Option<crate::dhcp::Outcome>> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mac = crate::dhcp::server::client_hwaddr(&packet).unwrap_or(&[]);
        let context = super::link::dhcp_context(&ctx, index, mac);
        let contexted = started.elapsed();
        let outcome = server
            .lock()
            .map(|mut s| s.handle(&packet, SystemTime::now(), &context))
            .ok();
        tracing::trace!(
            context_us = contexted.as_micros() as u64,
            handled_us = started.elapsed().as_micros() as u64,
            "DHCP message on the control socket"
        );
        outcome
    })
}

/// `LINK`: waits until netd has configured `ifname` (or the bridge it is a
/// port of), calling `pending` with the state each time it has not yet.
async fn wait_link(
    ctx: &Arc<Ctx>,
    ifname: &str,
    timeout_ms: u64,
    mut pending: impl FnMut(&State),
) -> Answer {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(60_000));
    loop {
        let notified = ctx.changed.notified();
        {
            let mut st = ctx.lock();
            st.last_busy = Instant::now();
            if let Some(why) = st.failed.get(ifname) {
                return Answer::Err(why.clone());
            }
            match link_state(&st, ifname) {
                LinkState::Ready(a) => {
                    return Answer::Address(Cidr {
                        addr: a.ip(),
                        prefix: a.prefix(),
                    })
                }
                LinkState::Unmanaged => return Answer::Unmanaged,
                LinkState::Pending => pending(&st),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Answer::Err(format!("link {ifname} was not configured in time"));
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
    }
}

/// How far back `DHCP` looks for requests its server could not serve (a
/// launch asks right after its own client gave up, 10 s after it began).
const DHCP_RECENT: Duration = Duration::from_secs(12);

async fn handle(ctx: &Arc<Ctx>, req: Request) -> Answer {
    match req {
        Request::Ping => Answer::Ok,
        Request::Link { ifname, timeout_ms } => wait_link(ctx, &ifname, timeout_ms, |_| {}).await,
        Request::LinkDhcp {
            ifname,
            timeout_ms,
            packet,
        } => {
            // The message goes to the link's server as soon as that exists,
            // beside the link's NAT and DNS steps; answered with the link.
            // (A zone's new bridge is configured before netd sees its first
            // port: a port finds its bridge's server configured already.)
            let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(60_000));
            let mut packet = Some(packet);
            let mut exchange = None;
            let mut start = |st: &State| {
                if exchange.is_none() {
                    if let Some(served) = dhcp_server_for(st, &ifname) {
                        exchange = packet.take().map(|p| dhcp_exchange(ctx, served, p));
                    }
                }
            };
            let address = match wait_link(ctx, &ifname, timeout_ms, &mut start).await {
                Answer::Address(a) => a,
                other => return other,
            };
            start(&ctx.lock());
            let Some(exchange) = exchange else {
                return Answer::Address(address);
            };
            // A server that is stuck (its lease file on a slow disk) holds
            // back the lease, not the answer about the link: the launcher
            // then runs the exchange on the link.
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10));
            let Ok(outcome) = tokio::time::timeout(left, exchange).await else {
                tracing::debug!(
                    ifname,
                    "DHCP message on the control socket: no answer in time"
                );
                return Answer::Address(address);
            };
            match outcome {
                Ok(Some(crate::dhcp::Outcome::Reply { bytes, .. }))
                    if bytes.len() <= netspawn_common::netd::MAX_DHCP_MESSAGE =>
                {
                    Answer::Leased {
                        address,
                        packet: bytes,
                    }
                }
                Ok(Some(crate::dhcp::Outcome::Drop(why))) => {
                    tracing::debug!(ifname, ?why, "DHCP message on the control socket dropped");
                    Answer::Address(address)
                }
                _ => Answer::Address(address),
            }
        }
        Request::Ports {
            owner,
            ifname,
            mac: _,
            forwards,
        } => {
            if let Some(busy) = busy_port(&ctx.lock(), &owner, &forwards) {
                return Answer::Err(busy);
            }
            // A machine asking again (netd restarted under it) gives up its
            // old [::1] listeners first, or they would be "in use".
            let old = ctx.lock().ports.remove(&owner).and_then(|p| p.loopback);
            if let Some(old) = old {
                old.close().await;
            }
            // Listening on [::1] is what can fail: before anything is recorded.
            let loopback = match crate::proxy::Loopback::bind(&forwards).await {
                Ok(l) => l,
                Err(e) => return Answer::Err(e.to_string()),
            };
            {
                let mut st = ctx.lock();
                // Another machine may have taken a port while we listened.
                if let Some(busy) = busy_port(&st, &owner, &forwards) {
                    return Answer::Err(busy);
                }
                st.ports.insert(
                    owner.clone(),
                    Ports {
                        ifname: ifname.clone(),
                        forwards: forwards.clone(),
                        loopback,
                    },
                );
                st.last_busy = Instant::now();
            }
            // Installed once the machine's address is known (DHCP takes a moment).
            let ctx2 = ctx.clone();
            tokio::spawn(async move { install_ports(ctx2, owner, ifname, forwards).await });
            Answer::Ok
        }
        Request::Forwards { owner, forwards } => {
            let ctx2 = ctx.clone();
            tokio::task::spawn_blocking(move || check_forwards(&ctx2, &owner, &forwards))
                .await
                .unwrap_or_else(|_| Answer::Err("checking the forwards failed".into()))
        }
        Request::Reload => {
            let run_dir = ctx.lock().paths.run_dir.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                crate::template::load(&crate::template::search_path_with_run(&run_dir))
            })
            .await;
            match loaded {
                Ok(Ok(t)) => {
                    for w in &t.warnings {
                        tracing::warn!("{w}");
                    }
                    let mut st = ctx.lock();
                    st.last_busy = Instant::now();
                    st.templates = t;
                    tracing::info!("network templates read again");
                    Answer::Ok
                }
                Ok(Err(e)) => Answer::Err(e.to_string()),
                Err(e) => Answer::Err(format!("reload: {e}")),
            }
        }
        Request::Dhcp { ifname } => {
            let server = ctx.lock().links.get(&ifname).and_then(|m| m.dhcp.clone());
            let Some(server) = server else {
                return Answer::Err(format!("netd serves no DHCP on {ifname}"));
            };
            let since = SystemTime::now()
                .checked_sub(DHCP_RECENT)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let why = server.lock().ok().and_then(|s| s.exhausted_since(since));
            match why {
                Some(why) => Answer::Note(format!(
                    "netd's DHCP server on {ifname} did not answer because {why}"
                )),
                None => Answer::Ok,
            }
        }
        Request::DhcpMessage { ifname, packet } => {
            let served = dhcp_server_for(&ctx.lock(), &ifname);
            let Some(served) = served else {
                return Answer::Err(format!("netd serves no DHCP on {ifname}"));
            };
            match dhcp_exchange(ctx, served, packet).await {
                Ok(Some(crate::dhcp::Outcome::Reply { bytes, .. })) => Answer::Packet(bytes),
                Ok(Some(crate::dhcp::Outcome::Ignore)) => Answer::Ok,
                Ok(Some(crate::dhcp::Outcome::Drop(why))) => {
                    tracing::debug!(ifname, ?why, "DHCP message on the control socket dropped");
                    Answer::Err(format!("DHCP message dropped: {why:?}"))
                }
                Ok(None) | Err(_) => Answer::Err(format!("DHCP server of {ifname} failed")),
            }
        }
        Request::Release { owner } => {
            // The [::1] listeners are closed before the answer.
            let old = ctx.lock().ports.remove(&owner).and_then(|p| p.loopback);
            if let Some(old) = old {
                old.close().await;
            }
            let ctx2 = ctx.clone();
            let _ = tokio::task::spawn_blocking(move || {
                ctx2.lock().ports.remove(&owner);
                let mut nat = ctx2.nat();
                nat.remove_owner(&owner);
                let _ = nat.apply();
            })
            .await;
            Answer::Ok
        }
    }
}

/// Why `owner` cannot have `forwards`: a port another machine forwards.
fn busy_port(st: &State, owner: &str, forwards: &[Forward]) -> Option<String> {
    forwards.iter().find_map(|f| {
        let (other, _) = st.ports.iter().find(|(o, p)| {
            o.as_str() != owner
                && p.forwards
                    .iter()
                    .any(|g| g.udp == f.udp && g.host_port == f.host_port)
        })?;
        Some(format!(
            "port {}/{} is already forwarded to machine {other}",
            f.host_port,
            if f.udp { "udp" } else { "tcp" }
        ))
    })
}

/// `FORWARDS`: each forward of `owner` is in netd's NAT state, installed to
/// an address, and the kernel's table is what netd renders (so the rules
/// are there).
fn check_forwards(ctx: &Ctx, owner: &str, forwards: &[Forward]) -> Answer {
    let want = {
        let nat = ctx.nat();
        let have = nat.port_forwards(owner);
        for f in forwards {
            let proto = if f.udp {
                nat::Proto::Udp
            } else {
                nat::Proto::Tcp
            };
            let installed = have.iter().any(|p| {
                p.proto == proto
                    && p.host_port == f.host_port
                    && p.container_port == f.container_port
            });
            if !installed {
                return Answer::Err(format!("forward {f} of {owner} is not installed"));
            }
        }
        nat::Summary::of(&nat.render())
    };
    match nat::current_table() {
        Ok(have) if have == want => Answer::Ok,
        Ok(_) => Answer::Err("the nftables table differs from netd's state".into()),
        Err(e) => Answer::Err(format!("reading the nftables table: {e}")),
    }
}

/// The subnets of a link netd serves (or of its bridge, for a member),
/// IPv4 first: where a machine behind it has its addresses.
fn link_subnets(st: &State, ifname: &str) -> Vec<IpNetwork> {
    let managed = st.links.get(ifname).or_else(|| {
        let (_, seen) = seen_named(st, ifname)?;
        let bridge = st.seen.get(&seen.master?)?;
        st.links.get(&bridge.name)
    });
    let Some(m) = managed else {
        return Vec::new();
    };
    let mut out: Vec<IpNetwork> = m.address.filter(IpNetwork::is_ipv4).into_iter().collect();
    out.extend(m.address6.map(IpNetwork::V6));
    out
}

/// The addresses a machine's port forwards go to: its first address in
/// each of the link's subnets (IPv4 then IPv6), or, before the link is
/// known, its first IPv4 address.
fn forward_targets(subnets: &[IpNetwork], addrs: &[std::net::IpAddr]) -> Vec<std::net::IpAddr> {
    if subnets.is_empty() {
        return addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4())
            .into_iter()
            .collect();
    }
    subnets
        .iter()
        .filter_map(|s| addrs.iter().copied().find(|a| s.contains(*a)))
        .collect()
}

/// How often the forwards of a machine are checked against its addresses
/// once installed (a machine whose address changes keeps its forwards).
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Installs a machine's port forwards to its addresses as soon as it has
/// them (IPv4 and IPv6 alike), and moves them when its addresses change,
/// for as long as the machine holds them (until `RELEASE` or its link goes).
async fn install_ports(ctx: Arc<Ctx>, owner: String, ifname: String, forwards: Vec<Forward>) {
    let mut installed: Vec<std::net::IpAddr> = Vec::new();
    loop {
        let (subnets, wanted) = {
            let st = ctx.lock();
            let wanted = st.ports.get(&owner).is_some_and(|p| p.ifname == ifname);
            (link_subnets(&st, &ifname), wanted)
        };
        if !wanted {
            return;
        }
        let targets = forward_targets(&subnets, &ctx.directory.addresses(&owner));
        if let (
            Some(first),
            Some(Ports {
                loopback: Some(l), ..
            }),
        ) = (targets.first(), ctx.lock().ports.get(&owner))
        {
            // [::1] goes to the first address (IPv4 where the machine has one).
            l.retarget(*first);
        }
        if !targets.is_empty() && targets != installed {
            let ctx2 = ctx.clone();
            let (owner2, forwards2, targets2) = (owner.clone(), forwards.clone(), targets.clone());
            let _ = tokio::task::spawn_blocking(move || {
                // Still wanted now that the NAT lock is held (RELEASE takes it too).
                if !ctx2.lock().ports.contains_key(&owner2) {
                    return;
                }
                let mut nat = ctx2.nat();
                let fwds: Vec<nat::PortForward> = targets2
                    .iter()
                    .flat_map(|addr| {
                        forwards2.iter().map(move |f| nat::PortForward {
                            proto: if f.udp {
                                nat::Proto::Udp
                            } else {
                                nat::Proto::Tcp
                            },
                            host_port: f.host_port,
                            container_addr: *addr,
                            container_port: f.container_port,
                        })
                    })
                    .collect();
                nat.remove_owner(&owner2);
                match nat
                    .add_port_forwards(&owner2, &fwds)
                    .and_then(|()| nat.apply())
                {
                    Ok(()) => tracing::info!(
                        "{owner2}: forwarding {} port(s) to {}",
                        forwards2.len(),
                        targets2
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                    Err(e) => tracing::error!("{owner2}: port forwards: {e}"),
                }
            })
            .await;
            installed = targets;
        }
        if installed.is_empty() {
            // DHCP takes a moment: look again soon, with a fresh registry.
            ctx.directory.reload_now();
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {

    use super::super::{Managed, SeenLink};
    use super::*;

    fn state() -> State {
        State::for_tests()
    }

    fn seen(name: &str, master: Option<u32>, kind: &str) -> SeenLink {
        SeenLink {
            name: name.into(),
            master,
            kind: Some(kind.into()),
            link_local_done: true,
        }
    }

    fn ready(st: &State, ifname: &str) -> Option<IpNetwork> {
        match link_state(st, ifname) {
            LinkState::Ready(a) => Some(a),
            _ => None,
        }
    }

    type SharedServer = Arc<std::sync::Mutex<crate::dhcp::Server>>;

    /// A DHCP server for 10.0.0.0/28 (netd at .1), with the store it saves to.
    fn dhcp_server() -> (SharedServer, crate::dhcp::MemoryStore) {
        let store = crate::dhcp::MemoryStore::new();
        let config = crate::dhcp::ServerConfig::from_subnet(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.0/28".parse().unwrap(),
            0,
            0,
        )
        .unwrap();
        let server =
            crate::dhcp::Server::new(config, Box::new(store.clone()), SystemTime::now()).unwrap();
        (Arc::new(std::sync::Mutex::new(server)), store)
    }

    /// The record of a link netd configured with `address`.
    fn managed(address: &str, dhcp: Option<SharedServer>) -> Managed {
        Managed {
            address: Some(address.parse().unwrap()),
            address6: None,
            dhcp_stop: None,
            dhcp,
            ra_stop: None,
            ra_kick: None,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn link_states() {
        let mut st = state();
        let a: IpNetwork = "10.0.0.1/28".parse().unwrap();
        let z: IpNetwork = "10.1.0.1/24".parse().unwrap();
        // Not seen yet.
        assert!(matches!(link_state(&st, "ve-web"), LinkState::Pending));
        // Seen, a template asks for an address: pending until configured.
        st.seen.insert(1, seen("ve-web", None, "veth"));
        assert!(matches!(link_state(&st, "ve-web"), LinkState::Pending));
        st.links
            .insert("ve-web".into(), managed("10.0.0.1/28", None));
        assert_eq!(ready(&st, "ve-web"), Some(a));
        // A zone member is ready when its bridge is.
        st.seen.insert(2, seen("vz-lab", None, "bridge"));
        st.seen.insert(3, seen("vb-one", Some(2), "veth"));
        assert!(matches!(link_state(&st, "vb-one"), LinkState::Pending));
        st.links
            .insert("vz-lab".into(), managed("10.1.0.1/24", None));
        assert_eq!(ready(&st, "vb-one"), Some(z));
        // A member whose bridge is not seen yet waits for it.
        st.seen.insert(4, seen("vb-two", Some(9), "veth"));
        assert!(matches!(link_state(&st, "vb-two"), LinkState::Pending));
        // A LAN bridge no template gives an address: unmanaged.
        st.seen.insert(5, seen("br0", None, "bridge"));
        st.seen.insert(6, seen("vb-lan", Some(5), "veth"));
        assert!(matches!(link_state(&st, "vb-lan"), LinkState::Unmanaged));
        // A port announced before its master (the kernel's first event for a
        // veth made with one) waits for it; it is never unmanaged.
        st.seen.insert(7, seen("vb-new", None, "veth"));
        assert!(matches!(link_state(&st, "vb-new"), LinkState::Pending));
        st.seen.insert(7, seen("vb-new", Some(2), "veth"));
        assert_eq!(ready(&st, "vb-new"), Some(z));
    }

    /// `LINKDHCP`: the server binds the lease while the link is still in
    /// its pipeline; the answer waits for the link, and carries both.
    #[test]
    fn linkdhcp_binds_before_the_link_is_configured_and_answers_with_it() {
        use dhcproto::v4::{DhcpOption, Message, MessageType};
        use dhcproto::{Decodable, Decoder, Encodable, Encoder};
        let rt = runtime();
        let ctx = super::super::tests::ctx(netlink::fake::FakeRtnl::with_links(&[]));
        let subnet: ipnetwork::Ipv4Network = "10.0.0.0/28".parse().unwrap();
        let (server, store) = dhcp_server();
        let mac = [2, 0, 0, 0, 0, 7];
        let mut discover = Message::new_with_id(
            0x0102_0304,
            std::net::Ipv4Addr::UNSPECIFIED,
            std::net::Ipv4Addr::UNSPECIFIED,
            std::net::Ipv4Addr::UNSPECIFIED,
            std::net::Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        discover
            .opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        discover.opts_mut().insert(DhcpOption::RapidCommit);
        let mut packet = Vec::new();
        discover.encode(&mut Encoder::new(&mut packet)).unwrap();
        rt.block_on(async {
            {
                let mut st = ctx.lock();
                st.seen.insert(1, seen("ve-web", None, "veth"));
                st.early_dhcp.insert("ve-web".into(), server.clone());
            }
            let c = ctx.clone();
            let asked = tokio::spawn(async move {
                let req = Request::LinkDhcp {
                    ifname: "ve-web".into(),
                    timeout_ms: 10_000,
                    packet,
                };
                handle(&c, req).await
            });
            for _ in 0..5000 {
                if store.saves() > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(
                store.saves() > 0,
                "no lease bound while the link was pending"
            );
            assert!(
                !asked.is_finished(),
                "answered before the link was configured"
            );
            {
                let mut st = ctx.lock();
                st.early_dhcp.remove("ve-web");
                st.links.insert(
                    "ve-web".into(),
                    managed("10.0.0.1/28", Some(server.clone())),
                );
            }
            ctx.changed.notify_waiters();
            match asked.await.unwrap() {
                Answer::Leased { address, packet } => {
                    assert_eq!(address.to_string(), "10.0.0.1/28");
                    let ack = Message::decode(&mut Decoder::new(&packet)).unwrap();
                    assert_eq!(
                        ack.opts().get(dhcproto::v4::OptionCode::MessageType),
                        Some(&DhcpOption::MessageType(MessageType::Ack))
                    );
                    assert!(
                        subnet.contains(ack.yiaddr()) && ack.yiaddr() != subnet.nth(1).unwrap()
                    );
                }
                other => panic!("{other}"),
            }
            assert_eq!(
                dhcp_server_for(&ctx.lock(), "ve-web").map(|(i, _)| i),
                Some(1)
            );
        });
    }

    /// A server that does not answer in time (here: its lock held) holds
    /// back the lease, not the answer about the link.
    #[test]
    fn linkdhcp_answers_without_a_lease_when_the_server_is_stuck() {
        let rt = runtime();
        let ctx = super::super::tests::ctx(netlink::fake::FakeRtnl::with_links(&[]));
        let (server, _) = dhcp_server();
        {
            let mut st = ctx.lock();
            st.seen.insert(1, seen("ve-web", None, "veth"));
            st.links.insert(
                "ve-web".into(),
                managed("10.0.0.1/28", Some(server.clone())),
            );
        }
        let stuck = server.lock().unwrap();
        let answer = rt.block_on(handle(
            &ctx,
            Request::LinkDhcp {
                ifname: "ve-web".into(),
                timeout_ms: 50,
                packet: vec![1; 300],
            },
        ));
        drop(stuck);
        assert_eq!(answer.to_string(), "OK address=10.0.0.1/28");
    }

    /// A line longer than the protocol allows is refused and its
    /// connection closed; requests before it are answered as usual.
    #[test]
    fn an_overlong_request_line_is_refused_and_the_connection_closed() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let rt = runtime();
        let ctx = super::super::tests::ctx(netlink::fake::FakeRtnl::with_links(&[]));
        rt.block_on(async {
            let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
            let served = tokio::spawn(serve_client(ctx, theirs));
            let (r, mut w) = ours.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"PING\n").await.unwrap();
            assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("OK"));
            // The server stops reading: the write may fail half-way, and
            // the answer may be lost to the reset of a socket closed with
            // unread data; what must hold is that the server ends.
            let writer = tokio::spawn(async move {
                let _ = w.write_all(&vec![b'A'; 100_000]).await;
                w
            });
            tokio::time::timeout(Duration::from_secs(10), served)
                .await
                .expect("the server ends the connection")
                .unwrap();
            if let Ok(Some(l)) = lines.next_line().await {
                assert_eq!(l, "ERR request too long");
            }
            drop(writer.await.unwrap());
        });
    }

    /// A zone's port is served by its bridge's server, also while the
    /// bridge is still in its pipeline; a link configured without DHCP has
    /// none, whatever was there before.
    #[test]
    fn dhcp_servers_of_links_in_their_pipeline() {
        let mut st = state();
        st.seen.insert(2, seen("vz-lab", None, "bridge"));
        st.seen.insert(3, seen("vb-one", Some(2), "veth"));
        assert!(dhcp_server_for(&st, "vb-one").is_none());
        let (zone, _) = dhcp_server();
        st.early_dhcp.insert("vz-lab".into(), zone.clone());
        let (index, found) = dhcp_server_for(&st, "vb-one").unwrap();
        assert_eq!(index, 2);
        assert!(Arc::ptr_eq(&found, &zone));
        assert!(matches!(link_state(&st, "vb-one"), LinkState::Pending));
        st.links
            .insert("vz-lab".into(), managed("10.0.0.1/28", None));
        assert!(dhcp_server_for(&st, "vb-one").is_none());
    }

    #[test]
    fn forwards_go_to_the_first_address_in_each_subnet() {
        let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        let v4: IpNetwork = "10.0.0.1/28".parse().unwrap();
        let v6: IpNetwork = "fd00:1::1/64".parse().unwrap();
        let addrs = [
            ip("192.168.9.9"),
            ip("fd00:1::5"),
            ip("10.0.0.2"),
            ip("10.0.0.3"),
        ];
        assert_eq!(
            forward_targets(&[v4, v6], &addrs),
            vec![ip("10.0.0.2"), ip("fd00:1::5")]
        );
        // Only IPv4 so far: IPv4 only; the IPv6 forward follows later.
        assert_eq!(
            forward_targets(&[v4, v6], &addrs[2..]),
            vec![ip("10.0.0.2")]
        );
        // The link is not known (a LAN bridge): the first IPv4 address.
        assert_eq!(forward_targets(&[], &addrs), vec![ip("192.168.9.9")]);
        assert!(forward_targets(&[v4], &[]).is_empty());
    }
}
