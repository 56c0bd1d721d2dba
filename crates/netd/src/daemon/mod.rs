//! The daemon: watches links by netlink (the `netlink` crate: a [`Watch`]
//! for the events, a [`Netlink`] socket for the verbs, used on blocking
//! threads); for each link a network template matches, runs the link
//! pipeline ([`link`]: template, link-local addressing, addresses, DHCP,
//! DNS, NAT), and releases all of it when the link goes away. When the
//! kernel says events were lost, the links are listed again. A control socket ([`control`]) lets `netspawn` wait for
//! its link and register port forwards. One instance per host (a lock in
//! the run directory); it exits when it has been idle for a while.

mod control;
mod link;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use netlink::{Event, Group, Link, Netlink, Rtnl, RtnlError, Watch};
use netspawn_common::netd::socket_path;
use netspawn_common::paths::Paths;
use thiserror::Error;
use tokio::sync::{oneshot, Notify};

use crate::dns::{self, MachineDirectory};
use crate::nat::{self, Nat};
use crate::pool::{self, Pools};
use crate::template;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error("{0}")]
    Templates(#[from] template::NetFileError),
    #[error("netlink: {0}")]
    Netlink(#[from] RtnlError),
    #[error("{0}")]
    Pool(#[from] pool::PoolError),
}

/// A link netd configured.
struct Managed {
    /// The host side's address with the subnet's prefix (IPv4; IPv6 on a
    /// link without IPv4).
    address: Option<IpNetwork>,
    /// The host side's IPv6 address with the subnet's prefix (`PREFIX::1`).
    address6: Option<ipnetwork::Ipv6Network>,
    dhcp_stop: Option<oneshot::Sender<()>>,
    /// The link's DHCP server (asked by `DHCP` why a client got nothing).
    dhcp: Option<Arc<Mutex<crate::dhcp::Server>>>,
    /// Stops the link's router advertisements.
    ra_stop: Option<oneshot::Sender<()>>,
    /// Makes the link's router advertisements send one now.
    ra_kick: Option<Arc<Notify>>,
}

/// A link in netd's namespace, as far as the control server needs to know
/// it (a member link is ready when its bridge is).
struct SeenLink {
    name: String,
    /// The bridge it is a port of (IFLA_MASTER), by index.
    master: Option<u32>,
    /// IFLA_INFO_KIND.
    kind: Option<String>,
    /// Its template's `LinkLocalAddressing=` was applied (once per link:
    /// the link changes often, as it goes up or joins a bridge).
    link_local_done: bool,
}

/// Port forwards one machine asked for.
struct Ports {
    ifname: String,
    forwards: Vec<netspawn_common::netd::Forward>,
    /// The forwards from the host's `[::1]` (None where the host has no
    /// `::1`); dropped with the entry, which closes them.
    loopback: Option<crate::proxy::Loopback>,
}

struct State {
    paths: Paths,
    templates: template::Loaded,
    pools: Pools,
    links: HashMap<String, Managed>,
    /// Every link we have seen, by index.
    seen: HashMap<u32, SeenLink>,
    ports: HashMap<String, Ports>,
    /// Links we could not configure, with the reason (for `LINK`).
    failed: HashMap<String, String>,
    last_busy: Instant,
    /// Since when no link or forward needed NAT (for [`STANDING`]).
    nat_idle_since: Option<Instant>,
    /// The DHCP servers of links still in their pipeline (after the server
    /// started, before the link is in `links`): `LINKDHCP` hands its
    /// message over beside the link's last steps.
    early_dhcp: HashMap<String, Arc<Mutex<crate::dhcp::Server>>>,
}

type Shared = Arc<Mutex<State>>;

struct Ctx {
    state: Shared,
    changed: Notify,
    /// NAT, apart from the state: a rare `nft` run (milliseconds) holds only
    /// this. Taken on blocking threads only, and never while holding `state`
    /// (`state` may be taken while holding it).
    nat: Mutex<Nat>,
    /// Announces links to `nat` without its lock (see [`nat::Expected`]).
    nat_expected: nat::Expected,
    /// Wakes the task that saves the pools (off the links' path: a save
    /// waits for two fsyncs).
    pools_dirty: Notify,
    /// netd's netlink socket; used through [`Ctx::rtnl`] only.
    rtnl: Mutex<Box<dyn Rtnl + Send>>,
    /// The DNS server of links whose template sets no `DNS=`: it forwards
    /// to the host's resolvers.
    dns: dns::DnsServer,
    /// The DNS servers of links whose template sets `DNS=`, one per list of
    /// upstream servers (see [`link::upstream_dns`]).
    link_dns: Mutex<HashMap<String, LinkDns>>,
    /// The settings every DNS server starts from.
    dns_config: dns::DnsConfig,
    directory: Arc<dns::RegistryDirectory>,
    machine_id: [u8; 16],
}

/// A DNS server forwarding to a template's `DNS=` servers, and the
/// resolv.conf netd wrote for it.
struct LinkDns {
    server: Arc<dns::DnsServer>,
    resolv_conf: PathBuf,
}

impl Ctx {
    /// The state; a panicked holder does not make it unusable.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// NAT (on a blocking thread only: an `nft` run may hold it).
    fn nat(&self) -> std::sync::MutexGuard<'_, Nat> {
        self.nat.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with netd's netlink socket on a blocking thread (a
    /// [`Netlink`] blocks on a runtime of its own, which a task must not
    /// enter). `f` may take the state's lock, never the other way round.
    /// `None` if `f` panicked.
    async fn rtnl<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut dyn Rtnl) -> T + Send + 'static,
    ) -> Option<T> {
        let ctx = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut nl = ctx.rtnl.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut **nl)
        })
        .await;
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!("netlink: {e}");
                None
            }
        }
    }
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

async fn main_loop(paths: Paths, idle_exit: Duration) -> Result<(), DaemonError> {
    let templates = template::load(&template::search_path_with_run(&paths.run_dir))?;
    // At start, and again on `RELOAD` (control.rs): links configured before a
    // reload keep what they got.
    for w in &templates.warnings {
        tracing::warn!("{w}");
    }
    let machine_id = netspawn_common::naming::host_machine_id().unwrap_or([0; 16]);
    let id_hex: String = machine_id.iter().map(|b| format!("{b:02x}")).collect();
    let pool_path = pool::state_path(&paths.state_dir);
    let fresh = !pool_path.exists();
    let pools = Pools::load(&pool_path, &id_hex)?;
    if fresh {
        // The new random /48 is kept from the start (links' /64s come from it).
        if let Err(e) = pools.save(&pool_path) {
            tracing::warn!("saving pools: {e}");
        }
    }

    // The watch first, the list after (below): no link falls between them.
    let watch = Watch::open(&[Group::Link])?.into_async()?;
    let nl = tokio::task::spawn_blocking(Netlink::open)
        .await
        .map_err(|e| RtnlError::Other {
            what: "open netlink socket".into(),
            msg: e.to_string(),
        })??;

    let nat = Nat::with_paths(nat::NatPaths {
        journal: Some(paths.run_dir.join(format!(
            "netd-{}-sysctls.json",
            netspawn_common::netd::netns_id()
        ))),
        ..Default::default()
    });
    let mut dns_config = dns::DnsConfig {
        // Machines are also NAME.netspawn and NAME.ZONE.netspawn (the
        // search domains DHCP hands out: `dns::search_domains`).
        names: dns::LocalNames::with_domain(dns::DEFAULT_DOMAIN).unwrap_or_default(),
        ..dns::DnsConfig::default()
    };
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
            last_busy: Instant::now(),
            nat_idle_since: None,
            early_dhcp: HashMap::new(),
        })),
        changed: Notify::new(),
        nat_expected: nat.expected(),
        nat: Mutex::new(nat),
        pools_dirty: Notify::new(),
        rtnl: Mutex::new(Box::new(nl)),
        dns: dns::DnsServer::new(dir_dyn, dns_config.clone()),
        link_dns: Mutex::new(HashMap::new()),
        dns_config,
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
                tokio::spawn(async move { control::serve_client(ctx, stream).await });
            }
        });
    }
    // What an earlier netd left, then the masquerade rules a first link
    // will need, while the first launcher is still making its links (a
    // link's masquerade waits for the NAT lock taken here).
    {
        let ctx2 = ctx.clone();
        tokio::task::spawn_blocking(move || {
            let mut nat = ctx2.nat();
            // One nft run: the table made (a leftover replaced) at once,
            // with both families: the default templates are dual-stack, so
            // the first link then leaves the table alone.
            match nat.recover_standing(&[nat::IpFamily::V4, nat::IpFamily::V6]) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!("restored {n} forwarding setting(s) left by an earlier netd")
                }
                Err(e) => tracing::warn!("recovering from an earlier netd: {e}"),
            }
            ctx2.lock().nat_idle_since = Some(Instant::now());
        });
    }
    tokio::spawn(save_pools(ctx.clone()));
    // Put our rules back if someone flushes the ruleset; drop the standing
    // rules when nothing has needed them for a while.
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let ctx = ctx.clone();
                let _ = tokio::task::spawn_blocking(move || nat_tick(&ctx)).await;
            }
        });
    }

    // Links that exist already.
    relist(&ctx).await;
    link::prune_lease_files(&ctx.lock());
    tracing::info!("netd ready on {}", sock.display());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|err| DaemonError::Io {
            path: "signal".into(),
            err,
        })?;
    let mut idle = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ready = watch.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!("netlink events: {e}");
                        break;
                    }
                };
                let events = guard.get_inner().read();
                guard.clear_ready();
                match events {
                    Ok(events) => on_events(&ctx, events).await,
                    Err(e) => tracing::error!("{e}"),
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = idle.tick() => {
                let st = ctx.lock();
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
        let names: Vec<String> = ctx2.lock().links.keys().cloned().collect();
        let mut nat = ctx2.nat();
        for n in names {
            nat.remove_link(&n);
        }
        let _ = nat.remove_all();
    })
    .await;
    // The pools as they are now, durably.
    let st = ctx.lock();
    if let Err(e) = st.pools.save(&pool::state_path(&st.paths.state_dir)) {
        tracing::warn!("saving pools: {e}");
    }
    drop(st);
    ctx.dns.shutdown();
    let link_dns = std::mem::take(&mut *ctx.link_dns.lock().unwrap_or_else(|p| p.into_inner()));
    for (_, l) in link_dns {
        l.server.shutdown();
        let _ = std::fs::remove_file(&l.resolv_conf);
    }
    Ok(())
}

/// How long the standing masquerade rules stay after the last link went.
const STANDING: Duration = Duration::from_secs(10);

/// Every 2 s: the table as it should be (listed without holding the NAT
/// lock), and the standing rules dropped once nothing needed them for
/// [`STANDING`].
fn nat_tick(ctx: &Ctx) {
    let (busy, idle_since) = {
        let st = ctx.lock();
        (
            !st.links.is_empty() || !st.ports.is_empty(),
            st.nat_idle_since,
        )
    };
    let (in_use, standing) = {
        let nat = ctx.nat();
        (nat.in_use(), nat.standing())
    };
    if busy || in_use {
        ctx.lock().nat_idle_since = None;
    } else if standing {
        match idle_since {
            None => ctx.lock().nat_idle_since = Some(Instant::now()),
            Some(t) if t.elapsed() >= STANDING => {
                let mut nat = ctx.nat();
                if !nat.in_use() {
                    nat.set_standing(false, &[]);
                    if let Err(e) = nat.apply() {
                        tracing::warn!("NAT: {e}");
                    }
                }
                return;
            }
            Some(_) => {}
        }
    } else {
        return;
    }
    let have = match nat::current_table() {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("{e}");
            return;
        }
    };
    if let Ok(true) = ctx.nat().ensure_with(have) {
        tracing::warn!("our nftables table was missing or changed: restored");
    }
}

/// How long the pools' save waits for more changes after one: links that
/// come and go in quick succession (a lab's `up`, a loop of short launches)
/// share one save (two fsyncs) instead of paying one each.
const SAVE_COALESCE: Duration = Duration::from_millis(200);

/// Saves the pools whenever they changed, one save at a time, each of the
/// state as it is then (so a save never overwrites a newer one); changes
/// within [`SAVE_COALESCE`] of the first share its save. A netd stopped
/// meanwhile saves them on its way out.
async fn save_pools(ctx: Arc<Ctx>) {
    loop {
        ctx.pools_dirty.notified().await;
        tokio::time::sleep(SAVE_COALESCE).await;
        let (pools, path) = {
            let st = ctx.lock();
            (st.pools.clone(), pool::state_path(&st.paths.state_dir))
        };
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = pools.save(&path) {
                tracing::warn!("saving pools: {e}");
            }
        })
        .await;
    }
}

/// What the watch read, in order; when some events were lost, the list of
/// links instead (it says how things are now).
async fn on_events(ctx: &Arc<Ctx>, events: Vec<Event>) {
    if events.contains(&Event::Overrun) {
        tracing::warn!("netlink events were lost: listing the links again");
        relist(ctx).await;
        return;
    }
    for ev in events {
        match ev {
            Event::NewLink(l) => link::on_new_link(ctx, &l).await,
            Event::DelLink(l) => link::on_del_link(ctx, &l).await,
            _ => {}
        }
    }
}

/// Lists the links and brings netd up to date with them: links it saw that
/// are gone (or were renamed) are released, every link present goes
/// through the pipeline (which skips those it configured already). At start,
/// and when events were lost.
async fn relist(ctx: &Arc<Ctx>) {
    let links = match ctx.rtnl(|nl| nl.links()).await {
        Some(Ok(links)) => links,
        Some(Err(e)) => {
            tracing::error!("{e}");
            return;
        }
        None => return,
    };
    let gone = {
        let st = ctx.lock();
        gone_links(&st.seen, &links)
    };
    // Released first, so a link that came back under the same name is
    // configured again.
    for l in &gone {
        link::on_del_link(ctx, l).await;
    }
    for l in &links {
        link::on_new_link(ctx, l).await;
    }
}

/// The links netd saw that are not in `present` under the same index and
/// name, as `RTM_DELLINK` would have told them.
fn gone_links(seen: &HashMap<u32, SeenLink>, present: &[Link]) -> Vec<Link> {
    let mut gone: Vec<Link> = seen
        .iter()
        .filter(|(i, s)| !present.iter().any(|l| l.index == **i && l.name == s.name))
        .map(|(i, s)| Link {
            index: *i,
            name: s.name.clone(),
            kind: s.kind.clone(),
            master: s.master,
            up: false,
            group: 0,
        })
        .collect();
    gone.sort_by_key(|l| l.index);
    gone
}

#[cfg(test)]
impl State {
    /// A state with the built-in templates whose paths lead nowhere, so
    /// nothing a test does with it writes anywhere.
    fn for_tests() -> State {
        State {
            paths: Paths {
                run_dir: "/nonexistent/run".into(),
                image_dir: "/nonexistent/images".into(),
                state_dir: "/nonexistent/state".into(),
                settings_path: Vec::new(),
                cgroup_parent: "netspawn".into(),
            },
            templates: template::load_with(&[], &template::BUILTIN).unwrap(),
            pools: Pools::new("0123456789abcdef0123456789abcdef"),
            links: HashMap::new(),
            seen: HashMap::new(),
            ports: HashMap::new(),
            failed: HashMap::new(),
            last_busy: Instant::now(),
            nat_idle_since: None,
            early_dhcp: HashMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink::fake::FakeRtnl;
    use netlink::NewLink;

    use super::*;

    /// A daemon's context over a fake kernel, with the built-in templates;
    /// nothing in it writes anywhere.
    pub(super) fn ctx(kernel: FakeRtnl) -> Arc<Ctx> {
        let st = State::for_tests();
        let directory = Arc::new(dns::RegistryDirectory::new(
            netspawn_common::registry::Registry::new(&st.paths),
        ));
        let dir_dyn: Arc<dyn MachineDirectory> = directory.clone();
        let nat = Nat::new();
        Arc::new(Ctx {
            state: Arc::new(Mutex::new(st)),
            changed: Notify::new(),
            nat_expected: nat.expected(),
            nat: Mutex::new(nat),
            pools_dirty: Notify::new(),
            rtnl: Mutex::new(Box::new(kernel)),
            dns: dns::DnsServer::new(dir_dyn, dns::DnsConfig::default()),
            link_dns: Mutex::new(HashMap::new()),
            dns_config: dns::DnsConfig::default(),
            directory,
            machine_id: [0; 16],
        })
    }

    fn seen_names(ctx: &Ctx) -> Vec<(u32, String)> {
        let mut v: Vec<_> = ctx
            .lock()
            .seen
            .iter()
            .map(|(i, l)| (*i, l.name.clone()))
            .collect();
        v.sort();
        v
    }

    /// The IPv6 link-local addresses the fake kernel has on a link.
    fn fe80s(ctx: &Ctx, index: u32) -> usize {
        let mut nl = ctx.rtnl.lock().unwrap();
        nl.link_addresses(index)
            .unwrap()
            .iter()
            .filter(|a| netlink::is_ipv6_link_local(&a.address))
            .count()
    }

    #[test]
    fn events_run_the_pipeline_and_lost_ones_are_made_up_for_by_a_list() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut k =
                FakeRtnl::with_links(&[("lo", None), ("eth0", None), ("vb-a", Some("veth"))]);
            let vb_a = k.link("vb-a").unwrap().unwrap();
            k.add_address(vb_a.index, "fe80::1".parse().unwrap(), 64)
                .unwrap();
            let ctx = ctx(k);
            // At start: every link is seen; vb-a gets its template's
            // LinkLocalAddressing=no (the kernel's fe80 goes).
            relist(&ctx).await;
            assert_eq!(
                seen_names(&ctx),
                vec![(2, "lo".into()), (3, "eth0".into()), (4, "vb-a".into())]
            );
            assert_eq!(fe80s(&ctx, 4), 0);

            // Events while nothing is lost: as they say.
            on_events(&ctx, vec![Event::DelLink(vb_a.clone())]).await;
            assert_eq!(seen_names(&ctx), vec![(2, "lo".into()), (3, "eth0".into())]);
            on_events(&ctx, vec![Event::NewLink(vb_a.clone())]).await;
            assert_eq!(seen_names(&ctx).len(), 3);

            // Meanwhile, unannounced: vb-a goes, vb-b comes with an fe80.
            let vb_b = {
                let mut nl = ctx.rtnl.lock().unwrap();
                nl.delete(vb_a.index).unwrap();
                nl.add(&NewLink::Veth {
                    name: "vb-b".into(),
                    mac: [2; 6],
                    peer: "host0".into(),
                    peer_mac: [3; 6],
                    peer_netns_pid: 1,
                    master: None,
                })
                .unwrap();
                let vb_b = nl.link("vb-b").unwrap().unwrap();
                nl.add_address(vb_b.index, "fe80::2".parse().unwrap(), 64)
                    .unwrap();
                vb_b
            };
            // Only an overrun arrives (with whatever else was read): the
            // list brings netd up to date.
            on_events(&ctx, vec![Event::NewLink(vb_a.clone()), Event::Overrun]).await;
            assert_eq!(
                seen_names(&ctx),
                vec![
                    (2, "lo".into()),
                    (3, "eth0".into()),
                    (vb_b.index, "vb-b".into())
                ]
            );
            assert_eq!(fe80s(&ctx, vb_b.index), 0);
            ctx.dns.shutdown();
        });
    }

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            kind: Some("veth".into()),
            master: None,
            up: true,
            group: 0,
        }
    }

    #[test]
    fn links_gone_while_events_were_lost_are_found() {
        let seen: HashMap<u32, SeenLink> = [
            (2, "eth0", None, None),
            (5, "ve-a", None, Some("veth")),
            (6, "vb-b", Some(7), Some("veth")),
            (8, "ve-c", None, Some("veth")),
        ]
        .into_iter()
        .map(|(i, name, master, kind)| {
            let s = SeenLink {
                name: name.into(),
                master,
                kind: kind.map(str::to_string),
                link_local_done: true,
            };
            (i, s)
        })
        .collect();
        // ve-a was renamed, vb-b went, ve-c is there, a new link came.
        let present = [
            link(2, "eth0"),
            link(5, "ve-z"),
            link(8, "ve-c"),
            link(9, "ve-d"),
        ];
        let gone = gone_links(&seen, &present);
        assert_eq!(
            gone.iter()
                .map(|l| (l.index, l.name.as_str(), l.master))
                .collect::<Vec<_>>(),
            vec![(5, "ve-a", None), (6, "vb-b", Some(7))]
        );
        assert!(gone_links(&HashMap::new(), &present).is_empty());
    }
}
