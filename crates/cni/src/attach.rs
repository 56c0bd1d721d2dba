//! ADD, DEL and CHECK of one attachment, with the launcher's own parts: the
//! zone bridge `vz-ZONE` through `network::zone::Zones` (made under the
//! zone lock with the first member, removed after the last, shared with
//! netspawn machines), links through the netlink crate, netd through
//! `netd_client` (it serves the zone, its DHCP server is the IPAM: same
//! pool, leases and persistence as machines), the lease through the
//! launcher's DHCP client, port forwards through netd's `PORTS`.
//!
//! The lease is taken under the launcher's MAC for the attachment's name
//! and the host side is `vb-NAME`, so netd takes the attachment for a
//! machine (its lease lasts while the holder holds the name), which it is
//! for DNS and NSS too: the registry entry is written by the [`holder`].
//! The container side has that MAC too, or the `mac` capability's: the
//! DHCP exchange is broadcast, so the interface's own MAC does not matter
//! to it, and no DHCP client runs afterwards to renew under another one.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use netlink::{Family, NewLink, Rtnl};
use netspawn::netd_client::NetdClient;
use netspawn::network::dhcp_client;
use netspawn::network::zone::Zones;
use netspawn_common::naming::{
    format_mac, generate_mac, host_ifname, siphash24, CONTAINER_HASH_KEY, HOST_HASH_KEY,
};
use netspawn_common::netd::{Answer, Request};
use netspawn_common::paths::Paths;
use netspawn_common::registry::{Entry, Registry};
use serde_json::Value;

use crate::conf::{attachment_name, Env, NetConf};
use crate::holder::{self, Holder};
use crate::record::{Record, Records};
use crate::result::{self, Made};
use crate::spec::{CniError, Code};

/// How long netd may take to serve the zone, and DHCP to bind.
const NETD_WAIT: Duration = Duration::from_secs(10);
const DHCP_WAIT: Duration = Duration::from_secs(10);

fn io(what: &str) -> impl Fn(std::io::Error) -> CniError + '_ {
    move |e| CniError::new(Code::Io, format!("{what}: {e}"))
}

fn nl(what: &str) -> impl Fn(netlink::RtnlError) -> CniError + '_ {
    move |e| CniError::new(Code::Io, format!("{what}: {e}"))
}

fn zone_err(e: netspawn::network::NetError) -> CniError {
    CniError::new(Code::Io, e.to_string())
}

/// Opens the container's network namespace; a path that is not one means
/// the container is gone (code 3: the runtime need not clean up).
fn open_netns(path: &str) -> Result<OwnedFd, CniError> {
    let gone =
        |why: String| CniError::new(Code::UnknownContainer, format!("CNI_NETNS {path}: {why}"));
    let f = std::fs::File::open(path).map_err(|e| gone(e.to_string()))?;
    // A network namespace file is nsfs; anything else is not one.
    let st = nix::sys::statfs::fstatfs(&f).map_err(|e| gone(e.to_string()))?;
    if st.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(gone("not a network namespace".into()));
    }
    Ok(f.into())
}

fn host_machine_id() -> [u8; 16] {
    netspawn_common::naming::host_machine_id().unwrap_or([0; 16])
}

/// A stable UUID-like id (32 hex digits) for the container.
fn uuid_of(container_id: &str) -> String {
    let a = siphash24(container_id.as_bytes(), &HOST_HASH_KEY);
    let b = siphash24(container_id.as_bytes(), &CONTAINER_HASH_KEY);
    format!("{a:016x}{b:016x}")
}

/// Polls (up to 1 s) until `host_link` and the container's `ifname` run, so
/// the first DHCP message is not dropped by a link still coming up; the
/// client's retransmissions cover a slower machine.
fn wait_running(host: &mut dyn Rtnl, host_link: &str, inside: &mut dyn Rtnl, ifname: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let h = host.is_running(host_link).unwrap_or(true);
        let c = inside.is_running(ifname).unwrap_or(true);
        if h && c {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The `ips` capability: one IPv4 address, asked of netd's DHCP server.
fn requested_ip(conf: &NetConf) -> Result<Option<Ipv4Addr>, CniError> {
    match conf.runtime.ips.as_slice() {
        [] => Ok(None),
        [IpAddr::V4(a)] => Ok(Some(*a)),
        _ => Err(CniError::new(
            Code::UnsupportedField,
            "runtimeConfig.ips: netspawn-cni gives one IPv4 address per attachment (netd has no IPv6 pool yet)",
        )),
    }
}

enum ServeError {
    Netd(netspawn::netd_client::NetdError),
    Unmanaged(Answer),
}

/// Asks netd to serve the zone and waits until it does. We ask for the
/// bridge `vz-ZONE`, not for our member link: netd handles link events one
/// after the other, and a veth made with its master is announced first
/// without one, so for a moment netd may take the member for a bare veth
/// it does not serve. The bridge's own state has no such moment.
fn serve_zone(netd: &mut NetdClient, zone: &str) -> Result<(), ServeError> {
    match netd
        .request(&Request::Link {
            ifname: format!("vz-{zone}"),
            timeout_ms: NETD_WAIT.as_millis() as u64,
        })
        .map_err(ServeError::Netd)?
    {
        Answer::Address(_) => Ok(()),
        a => Err(ServeError::Unmanaged(a)),
    }
}

/// ADD: attaches the container and returns the result to print.
pub fn add(conf: &NetConf, env: &Env, paths: &Paths) -> Result<Value, CniError> {
    requested_ip(conf)?;
    let records = Records::new(&paths.run_dir);
    if records
        .get(&conf.network, &env.container_id, &env.ifname)
        .is_some()
    {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            format!(
                "container {} already has {} on network {}: DEL it first",
                env.container_id, env.ifname, conf.network
            ),
        ));
    }
    let ns = open_netns(&env.netns)?;
    let mut inside = netlink::Netlink::open_in(ns.as_fd()).map_err(|e| {
        CniError::new(
            Code::UnknownContainer,
            format!("CNI_NETNS {}: {e}", env.netns),
        )
    })?;
    if inside
        .link(&env.ifname)
        .map_err(nl("list the container's links"))?
        .is_some()
    {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            format!(
                "CNI_IFNAME {}: the container already has an interface of that name",
                env.ifname
            ),
        ));
    }
    let name = attachment_name(env);
    let machine_id = host_machine_id();
    let host_if = host_ifname(true, &name);
    let host_mac = generate_mac(&machine_id, &name, &HOST_HASH_KEY, 0);
    let mac = conf
        .runtime
        .mac
        .unwrap_or_else(|| generate_mac(&machine_id, &name, &CONTAINER_HASH_KEY, 0));
    let started = Instant::now();
    let holder = Holder::start(&name, &host_if)?;
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "holder claimed {name}"
    );
    let mut rec = Record {
        network: conf.network.clone(),
        zone: conf.zone.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        name: name.clone(),
        netns: env.netns.clone(),
        host_ifname: host_if.clone(),
        mac: format_mac(&mac),
        holder_pid: holder.pid,
        holder_start: holder.start,
        ports: conf
            .runtime
            .ports
            .iter()
            .map(|p| p.forward.into())
            .collect(),
        ..Default::default()
    };
    if let Err(e) = records.write(&rec) {
        holder.abort();
        return Err(io("write the attachment record")(e));
    }
    let made = attach(conf, env, paths, &ns, &mut inside, &mut rec, host_mac, mac);
    let done = made.and_then(|made| {
        records
            .write(&rec)
            .map_err(io("write the attachment record"))?;
        Ok(made)
    });
    let made = match done {
        Ok(m) => m,
        Err(e) => {
            holder.abort();
            for err in teardown(&rec, paths) {
                tracing::warn!("undoing the ADD: {err}");
            }
            return Err(e);
        }
    };
    let entry = Entry {
        name: name.clone(),
        uuid: uuid_of(&env.container_id),
        root: "/".into(),
        class: "pod".into(),
        service: "netspawn-cni".into(),
        state: "running".into(),
        ready: true,
        timestamp_usec: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0),
        private_network: true,
        interfaces: vec![host_if],
        addresses: vec![IpAddr::V4(made.address)],
        ..Default::default()
    };
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "attached"
    );
    if let Err(e) = holder.register(&entry) {
        for err in teardown(&rec, paths) {
            tracing::warn!("undoing the ADD: {err}");
        }
        return Err(e);
    }
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "registered"
    );
    Ok(result::build(
        &conf.cni_version,
        conf.prev_result.as_ref(),
        &made,
    ))
}

/// The links, the lease and the forwards of an ADD; `rec` learns what was made.
#[allow(clippy::too_many_arguments)]
fn attach(
    conf: &NetConf,
    env: &Env,
    paths: &Paths,
    ns: &OwnedFd,
    inside: &mut netlink::Netlink,
    rec: &mut Record,
    host_mac: [u8; 6],
    mac: [u8; 6],
) -> Result<Made, CniError> {
    let try_again = |e: netspawn::netd_client::NetdError| {
        CniError::new(Code::TryAgainLater, format!("netspawn-netd: {e}"))
    };
    let t0 = Instant::now();
    let mut netd = NetdClient::connect_or_start(paths).map_err(try_again)?;
    tracing::debug!(
        elapsed_us = t0.elapsed().as_micros() as u64,
        "netd connected"
    );
    let mut host = netlink::Netlink::open().map_err(nl("open netlink"))?;
    let zones = Zones::new(paths.locks_dir());
    // The peer is made straight in the container's namespace under
    // CNI_IFNAME, as the launcher makes host0: the kernel takes the peer's
    // namespace from a PID, and this thread's ID is in the container's
    // namespace while the request is sent (the socket stays the host's).
    // Moving a link between namespaces instead would cost a network-wide
    // synchronisation (over 10 ms on a busy machine).
    zones
        .join(&mut host, &conf.zone, |rt, master| {
            netlink::in_netns(ns.as_fd(), || {
                rt.add(&NewLink::Veth {
                    name: rec.host_ifname.clone(),
                    mac: host_mac,
                    peer: env.ifname.clone(),
                    peer_mac: mac,
                    peer_netns_pid: nix::unistd::gettid().as_raw() as u32,
                    master: Some(master),
                })
            })?
        })
        .map_err(|e| match e {
            netspawn::network::NetError::Rtnl(r) if r.is_exists() => CniError::new(
                Code::InvalidEnvironment,
                format!(
                    "host interface {} already exists (is another machine using the name {}?)",
                    rec.host_ifname, rec.name
                ),
            ),
            e => zone_err(e),
        })?;
    tracing::debug!(elapsed_us = t0.elapsed().as_micros() as u64, "veth made");
    for l in ["lo", env.ifname.as_str()] {
        let link = inside
            .link(l)
            .map_err(nl("find the container's link"))?
            .ok_or_else(|| CniError::new(Code::Io, format!("{l} is missing in the container")))?;
        inside.set_up(link.index).map_err(nl("set the link up"))?;
    }
    let started = Instant::now();
    serve_zone(&mut netd, &conf.zone).map_err(|e| match e {
        ServeError::Netd(e) => try_again(e),
        ServeError::Unmanaged(a) => CniError::new(
            Code::InvalidConfig,
            format!(
                "netspawn-netd does not serve zone {} (no network template gives vz-{} an address: {a})",
                conf.zone, conf.zone
            ),
        ),
    })?;
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "netd serves vz-{}",
        conf.zone
    );
    wait_running(&mut host, &rec.host_ifname, inside, &env.ifname);
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "links running"
    );
    let requested = requested_ip(conf)?;
    let machine_mac = generate_mac(&host_machine_id(), &rec.name, &CONTAINER_HASH_KEY, 0);
    let lease = dhcp_client::acquire_requesting(
        ns.as_fd(),
        &env.ifname,
        machine_mac,
        &rec.name,
        requested,
        dhcp_client::Server::Netd,
        DHCP_WAIT,
    )
    .map_err(|e| match e {
        dhcp_client::DhcpClientError::Timeout { .. } => CniError::new(
            Code::TryAgainLater,
            format!(
                "zone {}: no address from netd's pool ({e}); the pool may be full",
                conf.zone
            ),
        ),
        e => CniError::new(Code::Io, e.to_string()),
    })?;
    if let Some(want) = requested.filter(|w| *w != lease.address) {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!(
                "runtimeConfig.ips: netd's pool for zone {} did not give {want} (it is taken or outside the zone's subnet; it offered {})",
                conf.zone, lease.address
            ),
        ));
    }
    dhcp_client::configure(inside, &env.ifname, &lease)
        .map_err(|e| CniError::new(Code::Io, e.to_string()))?;
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "leased {}",
        lease.address
    );
    rec.address = Some(format!("{}/{}", lease.address, lease.prefix_len));
    // bandwidth: what reaches the container leaves the host side, what it
    // sends leaves its own interface; a tbf on each.
    let bw = conf.runtime.bandwidth;
    let tbf = |sock: &mut netlink::Netlink, ifname: &str, r: crate::conf::Rate| {
        let link = sock
            .link(ifname)
            .map_err(nl("find the link for bandwidth"))?
            .ok_or_else(|| CniError::new(Code::Io, format!("{ifname} vanished")))?;
        sock.set_tbf(link.index, r.rate, r.burst, r.limit())
            .map_err(nl("bandwidth"))
    };
    if let Some(r) = bw.ingress {
        tbf(&mut host, &rec.host_ifname, r)?;
    }
    if let Some(r) = bw.egress {
        tbf(inside, &env.ifname, r)?;
    }
    rec.gateway = lease.router.map(|r| r.to_string());
    if !conf.runtime.ports.is_empty() {
        netd.request(&Request::Ports {
            owner: rec.name.clone(),
            ifname: rec.host_ifname.clone(),
            mac: rec.mac.clone(),
            forwards: conf.runtime.ports.iter().map(|p| p.forward).collect(),
        })
        .map_err(|e| CniError::new(Code::InvalidConfig, format!("portMappings: {e}")))?;
    }
    Ok(Made {
        host_ifname: rec.host_ifname.clone(),
        host_mac,
        ifname: env.ifname.clone(),
        mac,
        sandbox: env.netns.clone(),
        address: lease.address,
        prefix: lease.prefix_len,
        gateway: lease.router,
        dns: lease.dns.clone(),
        domain: lease.domain.clone(),
    })
}

/// Undoes an attachment, every step attempted: port forwards, the holder
/// (and with it the name and the lease), the registry entry, the links
/// (deleting the host side deletes the container side too, netns or not),
/// an empty zone bridge, the record. Returns the failures.
pub fn teardown(rec: &Record, paths: &Paths) -> Vec<CniError> {
    let mut errs = Vec::new();
    if !rec.ports.is_empty() {
        match NetdClient::connect_or_start(paths) {
            Ok(mut netd) => {
                if let Err(e) = netd.request(&Request::Release {
                    owner: rec.name.clone(),
                }) {
                    errs.push(CniError::new(
                        Code::TryAgainLater,
                        format!("netspawn-netd: {e}"),
                    ));
                }
            }
            Err(e) => errs.push(CniError::new(
                Code::TryAgainLater,
                format!("netspawn-netd: {e}"),
            )),
        }
    }
    holder::stop(rec.holder_pid, rec.holder_start);
    // The holder removes its entry; one left by a killed holder goes here,
    // if nobody else has taken the name meanwhile.
    let reg = Registry::new(paths);
    if let Ok(Some(claim)) = reg.try_hold_idle(&rec.name) {
        if let Err(e) = reg.remove(&claim, &rec.name) {
            errs.push(io("remove the registry entry")(e));
        }
    }
    match netlink::Netlink::open() {
        Ok(mut host) => {
            let ours = |l: &netlink::Link| l.kind.as_deref() == Some("veth");
            match host.link(&rec.host_ifname) {
                Ok(Some(l)) if ours(&l) => {
                    if let Err(e) = host.delete(l.index) {
                        errs.push(nl("delete the host link")(e));
                    }
                }
                Ok(_) => {}
                Err(e) => errs.push(nl("find the host link")(e)),
            }
            // The last member's zone bridge goes in the background, as the
            // launcher's keeper removes it: deleting a bridge waits for a
            // network-wide synchronisation, and the runtime need not.
            if zone_is_empty(&mut host, &rec.zone) {
                holder::leave_zone_later(&rec.zone);
            }
        }
        Err(e) => errs.push(nl("open netlink")(e)),
    }
    if let Err(e) = Records::new(&paths.run_dir).remove(rec) {
        errs.push(io("remove the attachment record")(e));
    }
    errs
}

/// Whether `vz-ZONE` exists and has no member (a look without the lock: the
/// removal takes the lock and looks again).
fn zone_is_empty(host: &mut netlink::Netlink, zone: &str) -> bool {
    let Ok(Some(bridge)) = host.link(&format!("vz-{zone}")) else {
        return false;
    };
    host.links()
        .map(|ls| ls.iter().all(|l| l.master != Some(bridge.index)))
        .unwrap_or(false)
}

/// Removes `vz-ZONE` if it has no member (under the zone lock); for the
/// background process [`holder::leave_zone_later`] starts.
pub fn leave_zone(zone: &str) -> i32 {
    let paths = Paths::from_env();
    let zones = Zones::new(paths.locks_dir());
    match netlink::Netlink::open() {
        Ok(mut host) => match zones.leave(&mut host, zone) {
            Ok(_) => 0,
            Err(e) => {
                tracing::warn!("removing vz-{zone}: {e}");
                1
            }
        },
        Err(_) => 1,
    }
}

/// DEL: idempotent; needs neither the netns nor a prevResult.
pub fn del(conf: &NetConf, env: &Env, paths: &Paths) -> Result<(), CniError> {
    let Some(rec) = Records::new(&paths.run_dir).get(&conf.network, &env.container_id, &env.ifname)
    else {
        return Ok(());
    };
    let errs = teardown(&rec, paths);
    match errs.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(first),
    }
}

/// One request to the running netd, never starting one; None when none
/// answers.
fn netd_ask(paths: &Paths, req: &Request) -> Option<Answer> {
    use std::io::{BufRead, BufReader, Write};
    let s =
        std::os::unix::net::UnixStream::connect(netspawn_common::netd::socket_path(paths)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut w = s.try_clone().ok()?;
    w.write_all(format!("{}\n", req.to_line()).as_bytes())
        .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Answer::parse(&line).ok()
}

/// CHECK: the attachment is as ADD left it. Never starts netd: a dead netd
/// is a finding.
pub fn check(conf: &NetConf, env: &Env, paths: &Paths) -> Result<(), CniError> {
    let bad = |m: String| CniError::new(Code::CheckFailed, m);
    let rec = Records::new(&paths.run_dir)
        .get(&conf.network, &env.container_id, &env.ifname)
        .ok_or_else(|| {
            bad(format!(
                "container {} has no {} on network {}",
                env.container_id, env.ifname, conf.network
            ))
        })?;
    if netd_ask(paths, &Request::Ping) != Some(Answer::Ok) {
        return Err(bad("netspawn-netd is not running".into()));
    }
    if !rec.ports.is_empty() {
        let forwards = rec.ports.iter().map(|p| (*p).into()).collect();
        match netd_ask(
            paths,
            &Request::Forwards {
                owner: rec.name.clone(),
                forwards,
            },
        ) {
            Some(Answer::Ok) => {}
            Some(Answer::Err(e)) => return Err(bad(format!("port forwards: {e}"))),
            _ => return Err(bad("port forwards: netspawn-netd did not answer".into())),
        }
    }
    let mut host = netlink::Netlink::open().map_err(nl("open netlink"))?;
    let bridge = host
        .link(&format!("vz-{}", rec.zone))
        .map_err(nl("list links"))?
        .ok_or_else(|| bad(format!("bridge vz-{} is missing", rec.zone)))?;
    match host.link(&rec.host_ifname).map_err(nl("list links"))? {
        Some(l) if l.master == Some(bridge.index) => {}
        Some(_) => {
            return Err(bad(format!(
                "{} is not in bridge vz-{}",
                rec.host_ifname, rec.zone
            )))
        }
        None => {
            return Err(bad(format!(
                "host interface {} is missing",
                rec.host_ifname
            )))
        }
    }
    if !holder::alive(rec.holder_pid, rec.holder_start) {
        return Err(bad(format!(
            "the reservation of {} is gone (its holder process {} is not running)",
            rec.name, rec.holder_pid
        )));
    }
    match Registry::new(paths).get(&rec.name) {
        Ok(Some(e)) if e.launcher == rec.holder_pid => {}
        _ => return Err(bad(format!("{} is not in the registry", rec.name))),
    }
    let ns = open_netns(&env.netns)?;
    let mut inside = netlink::Netlink::open_in(ns.as_fd()).map_err(nl("open netlink inside"))?;
    let link = inside
        .link(&env.ifname)
        .map_err(nl("list the container's links"))?
        .ok_or_else(|| bad(format!("{} is missing in the container", env.ifname)))?;
    let Some((addr, prefix)) = rec
        .address
        .as_deref()
        .and_then(|a| a.split_once('/'))
        .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u8>().ok()?)))
    else {
        return Err(bad("the attachment has no address".into()));
    };
    let has_addr = inside
        .link_addresses(link.index)
        .map_err(nl("list addresses"))?
        .iter()
        .any(|a| a.address == IpAddr::V4(addr) && a.prefix_len == prefix);
    if !has_addr {
        return Err(bad(format!(
            "address {addr}/{prefix} is missing on {}",
            env.ifname
        )));
    }
    if let Some(gw) = rec
        .gateway
        .as_deref()
        .and_then(|g| g.parse::<IpAddr>().ok())
    {
        let routes = inside.routes(Family::V4).map_err(nl("list routes"))?;
        if !routes
            .iter()
            .any(|r| r.is_default() && r.gateway == Some(gw) && r.oif == Some(link.index))
        {
            return Err(bad(format!(
                "the default route via {gw} on {} is missing",
                env.ifname
            )));
        }
    }
    if let Some(prev) = &conf.prev_result {
        let want = format!("{addr}/{prefix}");
        let listed = prev
            .get("ips")
            .and_then(Value::as_array)
            .is_some_and(|ips| ips.iter().any(|ip| ip["address"] == want.as_str()));
        if !listed {
            return Err(bad(format!("prevResult does not list {want}")));
        }
    }
    Ok(())
}
