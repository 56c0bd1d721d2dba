//! The daemon: watches links by netlink; for each link a network template
//! matches, takes a subnet from the pool, gives the host side its first
//! address, and serves DHCP and DNS there and sets up masquerade; releases
//! all of it when the link goes away. A control socket lets `netspawn` wait
//! for its link and register port forwards. One instance per host (a lock
//! in the run directory); it exits when it has been idle for a while.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use ipnetwork::{IpNetwork, Ipv4Network};
use netspawn_common::netd::{socket_path, Request};
use netspawn_common::paths::Paths;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::AsyncSocket;
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{oneshot, Notify};

use crate::dhcp;
use crate::dns::{self, MachineDirectory};
use crate::nat::{self, Nat};
use crate::netfile::{self, LinkFacts};
use crate::pool::{self, Pools};

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error("{0}")]
    Templates(#[from] netfile::NetFileError),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("{0}")]
    Pool(#[from] pool::PoolError),
}

/// A link netd configured.
struct Managed {
    /// The host side's address with the subnet's prefix.
    address: Option<IpNetwork>,
    dhcp_stop: Option<oneshot::Sender<()>>,
}

/// Port forwards one machine asked for.
struct Ports {
    ifname: String,
    forwards: Vec<netspawn_common::netd::Forward>,
}

struct State {
    paths: Paths,
    templates: netfile::Loaded,
    pools: Pools,
    links: HashMap<String, Managed>,
    /// Link index → (name, master index, kind), for every link we have seen.
    seen: HashMap<u32, (String, Option<u32>, Option<String>)>,
    ports: HashMap<String, Ports>,
    /// Links we could not configure, with the reason (for `LINK`).
    failed: HashMap<String, String>,
    nat: Nat,
    last_busy: Instant,
}

type Shared = Arc<Mutex<State>>;

struct Ctx {
    state: Shared,
    changed: Notify,
    handle: rtnetlink::Handle,
    dns: dns::DnsServer,
    directory: Arc<dns::RegistryDirectory>,
    machine_id: [u8; 16],
}

/// Points the DNS forwarder at another resolv.conf than /etc/resolv.conf (tests, benchmarks).
pub const ENV_UPSTREAM_RESOLV_CONF: &str = "NETSPAWN_UPSTREAM_RESOLV_CONF";

/// Runs the daemon until it is idle for `idle_exit` (zero: forever) or gets SIGTERM/SIGINT.
pub fn run(paths: Paths, foreground: bool, idle_exit: Duration) -> Result<(), DaemonError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |err| DaemonError::Io { path, err }
    };
    std::fs::create_dir_all(&paths.run_dir).map_err(io(&paths.run_dir))?;
    let lock_path = netspawn_common::netd::lock_path(&paths);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            if foreground {
                eprintln!("netspawn-netd: already running");
            }
            return Ok(());
        }
        Err(std::fs::TryLockError::Error(err)) => {
            return Err(DaemonError::Io {
                path: lock_path,
                err,
            })
        }
    }
    let pid_path = netspawn_common::netd::pid_path(&paths);
    std::fs::write(&pid_path, format!("{}\n", std::process::id())).map_err(io(&pid_path))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io(&paths.run_dir))?;
    let sock = socket_path(&paths);
    let r = rt.block_on(main_loop(paths.clone(), idle_exit));
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&pid_path);
    drop(lock);
    r
}

fn link_facts(m: &LinkMessage) -> (LinkFacts, Option<u32>) {
    let mut facts = LinkFacts {
        name: String::new(),
        altnames: Vec::new(),
        kind: None,
        driver: None,
    };
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

async fn main_loop(paths: Paths, idle_exit: Duration) -> Result<(), DaemonError> {
    let templates = netfile::load(&netfile::search_path())?;
    let machine_id = netspawn_common::naming::host_machine_id().unwrap_or([0; 16]);
    let id_hex: String = machine_id.iter().map(|b| format!("{b:02x}")).collect();
    let pool_path = pool::state_path(&paths.state_dir);
    let pools = if pool_path.exists() {
        Pools::load(&pool_path, &id_hex)?
    } else {
        Pools::new(&id_hex)
    };

    let (mut conn, handle, mut messages) =
        rtnetlink::new_connection().map_err(|e| DaemonError::Netlink(e.to_string()))?;
    // RTMGRP_LINK: new and removed links.
    conn.socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(0, 1))
        .map_err(|e| DaemonError::Netlink(e.to_string()))?;
    tokio::spawn(conn);

    let mut nat = Nat::with_paths(nat::NatPaths {
        journal: Some(paths.run_dir.join(format!(
            "netd-{}-sysctls.json",
            netspawn_common::netd::netns_id()
        ))),
        ..Default::default()
    });
    match nat.recover() {
        Ok(0) => {}
        Ok(n) => tracing::info!("restored {n} forwarding setting(s) left by an earlier netd"),
        Err(e) => tracing::warn!("recovering from an earlier netd: {e}"),
    }
    let mut dns_config = dns::DnsConfig::default();
    if let Some(p) = std::env::var_os(ENV_UPSTREAM_RESOLV_CONF) {
        dns_config.upstream.resolv_conf = p.into();
    }
    let directory = Arc::new(dns::RegistryDirectory::from_env());
    let dir_dyn: Arc<dyn MachineDirectory> = directory.clone();
    let ctx = Arc::new(Ctx {
        state: Arc::new(Mutex::new(State {
            paths: paths.clone(),
            templates,
            pools,
            links: HashMap::new(),
            seen: HashMap::new(),
            ports: HashMap::new(),
            failed: HashMap::new(),
            nat,
            last_busy: Instant::now(),
        })),
        changed: Notify::new(),
        handle: handle.clone(),
        dns: dns::DnsServer::new(dir_dyn, dns_config),
        directory,
        machine_id,
    });

    // Control socket.
    let sock = socket_path(&paths);
    let _ = std::fs::remove_file(&sock);
    let listener = tokio::net::UnixListener::bind(&sock).map_err(|err| DaemonError::Io {
        path: sock.clone(),
        err,
    })?;
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let ctx = ctx.clone();
                tokio::spawn(async move { serve_client(ctx, stream).await });
            }
        });
    }
    // Put our rules back if someone flushes the ruleset.
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let ctx = ctx.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
                    if !st.links.is_empty() || !st.ports.is_empty() {
                        if let Ok(true) = st.nat.ensure() {
                            tracing::warn!("our nftables table was missing or changed: restored");
                        }
                    }
                })
                .await;
            }
        });
    }

    // Links that exist already.
    let existing: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .unwrap_or_default();
    for m in existing {
        on_new_link(&ctx, &m).await;
    }
    prune_lease_files(&ctx.state.lock().unwrap_or_else(|p| p.into_inner()));
    tracing::info!("netd ready on {}", sock.display());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|err| DaemonError::Io {
            path: "signal".into(),
            err,
        })?;
    let mut idle = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some((msg, _)) = msg else { break };
                if let NetlinkPayload::InnerMessage(m) = msg.payload {
                    match m {
                        RouteNetlinkMessage::NewLink(l) => on_new_link(&ctx, &l).await,
                        RouteNetlinkMessage::DelLink(l) => on_del_link(&ctx, &l).await,
                        _ => {}
                    }
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = idle.tick() => {
                let st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
                if !idle_exit.is_zero() && st.links.is_empty() && st.ports.is_empty() && st.last_busy.elapsed() > idle_exit {
                    tracing::info!("idle: exiting");
                    break;
                }
            }
        }
    }
    // Leave nothing behind: our NAT table and forwarding settings go with us.
    let ctx2 = ctx.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let mut st = ctx2.state.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<String> = st.links.keys().cloned().collect();
        for n in names {
            st.nat.remove_link(&n);
        }
        let _ = st.nat.remove_all();
    })
    .await;
    ctx.dns.shutdown();
    Ok(())
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

async fn on_new_link(ctx: &Arc<Ctx>, m: &LinkMessage) {
    let (facts, master) = link_facts(m);
    let index = m.header.index;
    let name = facts.name.clone();
    let file = {
        let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
        st.seen
            .insert(index, (name.clone(), master, facts.kind.clone()));
        if st.links.contains_key(&name) {
            drop(st);
            ctx.changed.notify_waiters();
            return;
        }
        st.templates.find_match(&facts).cloned()
    };
    ctx.changed.notify_waiters();
    let Some(file) = file else { return };
    let net = &file.network;
    let Some(request) = net
        .pool_requests()
        .find(|r| r.is_ipv4())
        .copied()
        .or_else(|| net.static_addresses().find(|a| a.is_ipv4()).copied())
    else {
        // A member link (vb-*): nothing to configure on it.
        return;
    };
    let host = host_networks(&ctx.handle).await;
    let assignment = {
        let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
        if netfile::is_pool_request(&request) {
            match st.pools.acquire(&name, &request, &host) {
                Ok(a) => {
                    let path = pool::state_path(&st.paths.state_dir);
                    if let Some(parent) = path.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    if let Err(e) = st.pools.save(&path) {
                        tracing::warn!("saving pools: {e}");
                    }
                    Some(a.host())
                }
                Err(e) => {
                    tracing::error!("{name}: {e}");
                    st.failed.insert(name.clone(), e.to_string());
                    None
                }
            }
        } else {
            Some(request)
        }
    };
    let Some(address) = assignment else { return };
    let IpNetwork::V4(v4) = address else { return };
    if let Err(e) = ctx
        .handle
        .address()
        .add(index, IpAddr::V4(v4.ip()), v4.prefix())
        .execute()
        .await
    {
        if !e.to_string().contains("File exists") {
            tracing::warn!("{name}: add address {address}: {e}");
        }
    }
    let up = rtnetlink::LinkUnspec::new_with_index(index).up().build();
    let _ = ctx.handle.link().set(up).execute().await;

    // DHCP server.
    let mut dhcp_stop = None;
    if net.dhcp_server {
        let subnet = Ipv4Network::new(v4.network(), v4.prefix()).unwrap_or(v4);
        match dhcp::ServerConfig::from_subnet(
            v4.ip(),
            subnet,
            file.dhcp_server.pool_offset,
            file.dhcp_server.pool_size,
        ) {
            Ok(mut cfg) => {
                if !file.dhcp_server.emit_router {
                    cfg.router = None;
                }
                if !file.dhcp_server.emit_dns {
                    cfg.dns.clear();
                }
                cfg.default_lease =
                    Duration::from_secs(u64::from(file.dhcp_server.default_lease_secs));
                cfg.max_lease = Duration::from_secs(u64::from(file.dhcp_server.max_lease_secs));
                let lease_path = ctx
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .paths
                    .state_dir
                    .join("leases")
                    .join(format!("{name}.json"));
                if let Some(p) = lease_path.parent() {
                    let _ = std::fs::create_dir_all(p);
                }
                match dhcp::Server::new(
                    cfg,
                    Box::new(dhcp::FileStore::new(lease_path)),
                    SystemTime::now(),
                ) {
                    Ok(server) => {
                        let server = Arc::new(Mutex::new(server));
                        let (tx, rx) = oneshot::channel();
                        let ctx2 = ctx.clone();
                        let ifname = name.clone();
                        let srv = server.clone();
                        tokio::spawn(async move {
                            let context = move |mac: &[u8]| dhcp_context(&ctx2, mac);
                            if let Err(e) = dhcp::io::serve(&ifname, srv, context, async move {
                                let _ = rx.await;
                            })
                            .await
                            {
                                tracing::error!("{ifname}: DHCP server: {e}");
                            }
                        });
                        dhcp_stop = Some(tx);
                    }
                    Err(e) => tracing::error!("{name}: DHCP server: {e}"),
                }
            }
            Err(e) => tracing::error!("{name}: DHCP server: {e}"),
        }
    }
    // DNS on the host side's address.
    if let Err(e) = ctx.dns.add_listener(IpAddr::V4(v4.ip())).await {
        tracing::error!("{name}: DNS on {}: {e}", v4.ip());
    }
    // Masquerade.
    let mode = match (net.ip_masquerade.ipv4(), net.ip_masquerade.ipv6()) {
        (true, true) => nat::Masquerade::Both,
        (true, false) => nat::Masquerade::Ipv4,
        (false, true) => nat::Masquerade::Ipv6,
        (false, false) => nat::Masquerade::No,
    };
    {
        let ctx2 = ctx.clone();
        let name2 = name.clone();
        let subnet = IpNetwork::V4(Ipv4Network::new(v4.network(), v4.prefix()).unwrap_or(v4));
        let _ = tokio::task::spawn_blocking(move || {
            let mut st = ctx2.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = st
                .nat
                .set_masquerade(&name2, subnet, mode)
                .and_then(|()| st.nat.apply())
            {
                tracing::error!("{name2}: NAT: {e}");
            }
        })
        .await;
    }
    {
        let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
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

async fn on_del_link(ctx: &Arc<Ctx>, m: &LinkMessage) {
    let (facts, _) = link_facts(m);
    let name = facts.name;
    let (removed, owners) = {
        let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
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
            let mut st = ctx2.state.lock().unwrap_or_else(|p| p.into_inner());
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

/// A DHCP request's context: the machine's name and the MACs of the running machines: those
/// whose launcher holds the name lock (the registry entry is written only after the launch's
/// DHCP) and those whose host-side link exists (also unregistered ones).
fn dhcp_context(ctx: &Ctx, mac: &[u8]) -> dhcp::RequestContext {
    use netspawn_common::naming::{generate_mac, CONTAINER_HASH_KEY};
    let hostname = hostname_for(ctx, mac);
    let (locks, mut names) = {
        let st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
        let linked: Vec<String> = st
            .seen
            .values()
            .filter_map(|(n, _, _)| dhcp::machines::machine_of_link(n).map(str::to_string))
            .collect();
        (st.paths.locks_dir(), linked)
    };
    match dhcp::machines::claimed_names(&locks) {
        Ok(claimed) => names.extend(claimed),
        Err(e) => tracing::debug!("running machines: {e}"),
    }
    dhcp::RequestContext::with_machines(
        hostname,
        names
            .iter()
            .map(|n| generate_mac(&ctx.machine_id, n, &CONTAINER_HASH_KEY, 0)),
    )
}

/// Deletes the lease files of links that no longer exist, beyond a bounded history.
fn prune_lease_files(st: &State) {
    let dir = st.paths.state_dir.join("leases");
    let exists = |n: &str| st.links.contains_key(n) || st.seen.values().any(|(s, _, _)| s == n);
    match dhcp::lease::prune_lease_dir(&dir, exists, dhcp::lease::link_history(), SystemTime::now())
    {
        Ok(gone) if !gone.is_empty() => tracing::debug!("forgot the leases of {gone:?}"),
        Ok(_) => {}
        Err(e) => tracing::warn!("pruning {}: {e}", dir.display()),
    }
}

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

fn link_state(st: &State, ifname: &str) -> LinkState {
    if let Some(m) = st.links.get(ifname) {
        return m.address.map_or(LinkState::Pending, LinkState::Ready);
    }
    let Some((_, master, kind)) = st.seen.values().find(|(n, _, _)| n == ifname) else {
        return LinkState::Pending;
    };
    let (name, kind) = match master {
        Some(mi) => match st.seen.get(mi) {
            Some((mname, _, mkind)) => (mname.as_str(), mkind),
            None => return LinkState::Pending,
        },
        None => (ifname, kind),
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

async fn serve_client(ctx: Arc<Ctx>, stream: tokio::net::UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match Request::parse(&line) {
            Err(e) => format!("ERR {e}"),
            Ok(req) => handle(&ctx, req).await,
        };
        if w.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            break;
        }
    }
}

async fn handle(ctx: &Arc<Ctx>, req: Request) -> String {
    match req {
        Request::Ping => "OK".into(),
        Request::Link { ifname, timeout_ms } => {
            let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(60_000));
            loop {
                let notified = ctx.changed.notified();
                {
                    let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
                    st.last_busy = Instant::now();
                    if let Some(why) = st.failed.get(&ifname) {
                        return format!("ERR {why}");
                    }
                    match link_state(&st, &ifname) {
                        LinkState::Ready(a) => return format!("OK address={a}"),
                        LinkState::Unmanaged => return "OK unmanaged".into(),
                        LinkState::Pending => {}
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return format!("ERR link {ifname} was not configured in time");
                }
                let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
            }
        }
        Request::Ports {
            owner,
            ifname,
            mac: _,
            forwards,
        } => {
            {
                let mut st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
                for f in &forwards {
                    if let Some((other, _)) = st.ports.iter().find(|(o, p)| {
                        **o != owner
                            && p.forwards
                                .iter()
                                .any(|g| g.udp == f.udp && g.host_port == f.host_port)
                    }) {
                        return format!(
                            "ERR port {}/{} is already forwarded to machine {other}",
                            f.host_port,
                            if f.udp { "udp" } else { "tcp" }
                        );
                    }
                }
                st.ports.insert(
                    owner.clone(),
                    Ports {
                        ifname: ifname.clone(),
                        forwards: forwards.clone(),
                    },
                );
                st.last_busy = Instant::now();
            }
            // Installed once the machine's address is known (DHCP takes a moment).
            let ctx2 = ctx.clone();
            tokio::spawn(async move { install_ports(ctx2, owner, ifname, forwards).await });
            "OK".into()
        }
        Request::Release { owner } => {
            let ctx2 = ctx.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let mut st = ctx2.state.lock().unwrap_or_else(|p| p.into_inner());
                st.ports.remove(&owner);
                st.nat.remove_owner(&owner);
                let _ = st.nat.apply();
            })
            .await;
            "OK".into()
        }
    }
}

async fn install_ports(
    ctx: Arc<Ctx>,
    owner: String,
    ifname: String,
    forwards: Vec<netspawn_common::netd::Forward>,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let (subnet, wanted) = {
            let st = ctx.state.lock().unwrap_or_else(|p| p.into_inner());
            let still = st.ports.get(&owner).is_some_and(|p| p.ifname == ifname);
            let subnet = match link_state(&st, &ifname) {
                LinkState::Ready(a) => Some(a),
                _ => None,
            };
            (subnet, still)
        };
        if !wanted {
            return;
        }
        let addr = ctx
            .directory
            .addresses(&owner)
            .into_iter()
            .find(|a| match subnet {
                Some(s) => s.contains(*a),
                None => a.is_ipv4(),
            });
        if let Some(addr) = addr {
            let ctx2 = ctx.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let mut st = ctx2.state.lock().unwrap_or_else(|p| p.into_inner());
                let fwds: Vec<nat::PortForward> = forwards
                    .iter()
                    .map(|f| nat::PortForward {
                        proto: if f.udp {
                            nat::Proto::Udp
                        } else {
                            nat::Proto::Tcp
                        },
                        host_port: f.host_port,
                        container_addr: addr,
                        container_port: f.container_port,
                    })
                    .collect();
                match st
                    .nat
                    .add_port_forwards(&owner, &fwds)
                    .and_then(|()| st.nat.apply())
                {
                    Ok(()) => {
                        tracing::info!("{owner}: forwarding {} port(s) to {addr}", fwds.len())
                    }
                    Err(e) => tracing::error!("{owner}: port forwards: {e}"),
                }
            })
            .await;
            return;
        }
        ctx.directory.reload_now();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
