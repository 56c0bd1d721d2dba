//! The container's `host0`: netd asked to serve the host side (address,
//! DHCP, DNS), then our own DHCP client configures the container side from
//! inside its network namespace and writes the resolv.conf it will see.
//! With a bare host0 nothing waits for netd: it serves the link when it
//! sees it, and the guest's own DHCP client asks until it does.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::links::NetState;
use super::LaunchError;
use crate::config::Config;
use crate::network;

/// Asks netd to serve the machine's link (address, DHCP, DNS) and waits
/// until it does; registers port forwards.
pub(super) fn serve_guest(
    n: &mut NetState,
    cfg: &Config,
    child: Pid,
    run_dir: &Path,
) -> Result<(), LaunchError> {
    // A netd this launch started came up while the links were made: waited
    // for here, so its refusal to start fails the launch before the payload.
    n.netd()?;
    let primary = n.plan.links.iter().find_map(|l| match l {
        network::PlannedLink::Veth {
            host,
            container,
            container_mac,
            ..
        } if container == "host0" => Some((host.clone(), *container_mac)),
        _ => None,
    });
    let Some((ifname, mac)) = primary else {
        return Ok(());
    };
    // The links a DHCP exchange crosses: host0's host side, and the bridge
    // it is a port of. The last is where a DHCP server for host0 is.
    let mut crossed = vec![ifname.clone()];
    crossed.extend(n.plan.links.iter().find_map(|l| match l {
        network::PlannedLink::Veth {
            container,
            bridge: Some(b),
            ..
        } if container == "host0" => Some(b.ifname()),
        _ => None,
    }));
    let server_link = crossed.last().cloned().unwrap_or_default();
    let mut managed = false;
    // Only our own DHCP client needs netd to serve the link before the
    // payload starts; a bare host0 (`--network-config=none`, a booted guest)
    // is configured by the guest, whose DHCP client waits for netd itself.
    // netd is asked about our own link, not its bridge: a zone's bridge may
    // have just been made again under the same name, and netd may not have
    // seen the old one go yet; our link's master is the new one.
    // On a link netd serves, its DHCP server answers our DISCOVER (rapid
    // commit) on the control socket, together with netd's answer about the
    // link: host0 is configured while the kernel activates the links'
    // queues, and no message can be lost.
    let mut direct = None;
    let netd = n.netd()?.filter(|_| cfg.dhcp_host0);
    if let Some(netd) = netd {
        let asked = Instant::now();
        let (answer, lease) = link_with_lease(netd, &ifname, mac, &cfg.hostname)?;
        tracing::debug!(
            elapsed_us = asked.elapsed().as_micros() as u64,
            "netd: {ifname}: {answer}"
        );
        managed = matches!(answer, netspawn_common::netd::Answer::Address(_));
        direct = lease.filter(|_| managed);
    }
    if cfg.dhcp_host0 {
        // The container's namespace, and one netlink socket in it, for all
        // of host0's steps.
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", child.as_raw())).map_err(|e| {
            LaunchError::Sys {
                what: "open the container's network namespace",
                err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        })?;
        let mut inside =
            network::rtnl::Netlink::open_in(ns.as_fd()).map_err(network::NetError::from)?;
        if let Some(lease) = &direct {
            apply_lease(cfg, &mut inside, lease, run_dir, "netd's control socket")?;
        }
        // Also with a lease from netd: the payload's first packets would be
        // dropped before the queues are active.
        wait_running(&mut n.host, &crossed, &mut inside);
        // The router solicitation goes out before a DHCP exchange on the
        // link: netd's advertisement and the kernel's SLAAC run meanwhile.
        let ipv6 = (managed && serves_ipv6(&mut n.host, &crossed)).then(|| {
            (
                Instant::now(),
                network::slaac::Solicitation::start(ns.as_fd(), &mut inside, "host0"),
            )
        });
        // netd serves DHCP on the link: if it died while we waited for a
        // lease, bring it back, let it configure the link again, and ask again.
        let mut tries = 0;
        while direct.is_none() {
            match configure_host0(cfg, ns.as_fd(), &mut inside, mac, managed, run_dir) {
                Err(LaunchError::Dhcp(e)) if managed => {
                    let Some(netd) = n.netd()? else {
                        return Err(LaunchError::Dhcp(e));
                    };
                    if tries >= 2 || !netd.revive()? {
                        return Err(LaunchError::Dhcp(with_netd_note(netd, &server_link, e)));
                    }
                    tries += 1;
                    netd.request(&netspawn_common::netd::Request::Link {
                        ifname: ifname.clone(),
                        timeout_ms: 10_000,
                    })?;
                }
                r => {
                    r?;
                    break;
                }
            }
        }
        if let Some((started, solicited)) = ipv6 {
            let got = solicited.and_then(|s| s.wait(ns.as_fd(), &mut inside, SLAAC_WAIT));
            report_ipv6(cfg, got, started);
        }
    }
    let Some(netd) = n.netd()? else {
        return Ok(());
    };
    super::ports::expose_ports(netd, cfg, ifname, mac)
}

/// A failed DHCP exchange on a link netd serves, with netd's word on why
/// when it has one (its pool had no free address, say).
fn with_netd_note(netd: &mut crate::netd_client::NetdClient, link: &str, err: String) -> String {
    let asked = netspawn_common::netd::Request::Dhcp {
        ifname: link.to_string(),
    };
    match netd.request(&asked) {
        Ok(netspawn_common::netd::Answer::Note(why)) => format!("{err}; {why}"),
        _ => err,
    }
}

/// How long to wait for the links a DHCP exchange crosses to run before
/// sending anyway (the client's retransmissions cover the rest).
const RUNNING_WAIT: Duration = Duration::from_secs(1);

/// Waits until the host-side links the DHCP exchange crosses (`host_links`)
/// and the container's host0 are running. The kernel drops what is sent on
/// a link whose carrier came on until its link watch has activated the
/// link's queue, which a loaded machine may do a while later; a DISCOVER
/// lost that way would cost a 200 ms retransmission.
fn wait_running(
    host: &mut network::rtnl::Netlink,
    host_links: &[String],
    inside: &mut network::rtnl::Netlink,
) {
    use network::rtnl::Rtnl;
    let started = Instant::now();
    let mut waiting: Vec<&str> = host_links.iter().map(String::as_str).collect();
    let mut host0 = true;
    while started.elapsed() < RUNNING_WAIT {
        waiting.retain(|l| !host.is_running(l).unwrap_or(true));
        if host0 {
            host0 = !inside.is_running("host0").unwrap_or(true);
        }
        if waiting.is_empty() && !host0 {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "links running"
    );
}

/// Whether netd serves IPv6 on the host side of the link: the link (or
/// its bridge, the last of `host_links`) has a global IPv6 address.
fn serves_ipv6(host: &mut network::rtnl::Netlink, host_links: &[String]) -> bool {
    use network::rtnl::Rtnl;
    let Some(name) = host_links.last() else {
        return false;
    };
    let Ok(Some(link)) = host.link(name) else {
        return false;
    };
    host.link_addresses(link.index).is_ok_and(|addrs| {
        addrs
            .iter()
            .any(|a| a.address.is_ipv6() && !netlink::is_ipv6_link_local(&a.address))
    })
}

/// How long a plain command waits for its IPv6 address from netd's router
/// advertisements (they are answered at once; this is for a loaded host).
const SLAAC_WAIT: Duration = Duration::from_secs(5);

/// Says how host0's IPv6 address by SLAAC from netd's router advertisements
/// went (solicited before the DHCP exchange, waited for after it, before
/// the payload starts; see [`network::slaac`]). Without it the machine
/// still runs, with IPv4 only, and says so.
fn report_ipv6(
    cfg: &Config,
    got: Result<Option<std::net::Ipv6Addr>, netlink::RtnlError>,
    started: Instant,
) {
    match got {
        Ok(Some(a)) => {
            tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, address = %a, "host0 configured by SLAAC");
        }
        Ok(None) => {
            tracing::warn!("host0: no IPv6 address from router advertisements");
            if !cfg.quiet {
                eprintln!("netspawn: host0 got no IPv6 address from router advertisements.");
            }
        }
        Err(e) => tracing::warn!("host0: IPv6: {e}"),
    }
}

/// Where the launcher writes the container's resolv.conf.
pub(super) fn resolv_conf_path(cfg: &Config, run_dir: &Path) -> PathBuf {
    let name = if cfg.register {
        cfg.machine.clone()
    } else {
        format!("{}.{}", cfg.machine, std::process::id())
    };
    run_dir.join("resolv").join(format!("{name}.conf"))
}

/// netd's answer about a link, and host0's lease if it came with it.
type AnswerAndLease = (
    netspawn_common::netd::Answer,
    Option<network::dhcp_client::Lease>,
);

/// netd's answer about `link` (host0's host side; `Answer::Address` once
/// netd configured it), with host0's lease from netd's DHCP server, which
/// netd hands our DISCOVER to as soon as it has made it (`LINKDHCP`). The
/// lease is None when netd did not bind one at once (then the exchange runs
/// on the link, with its retries and notes). A netd older than `LINKDHCP`
/// is asked `LINK`, then `DHCPMSG`.
fn link_with_lease(
    netd: &mut crate::netd_client::NetdClient,
    link: &str,
    mac: network::naming::Mac,
    hostname: &str,
) -> Result<AnswerAndLease, LaunchError> {
    use crate::netd_client::NetdError;
    use netspawn_common::netd::{Answer, Request};
    let started = Instant::now();
    let mut answer = None;
    let lease = network::dhcp_client::rapid_commit_via(mac, hostname, |packet| {
        let asked = Request::LinkDhcp {
            ifname: link.to_string(),
            timeout_ms: 10_000,
            packet,
        };
        match netd.request(&asked) {
            Ok(Answer::Leased { address, packet }) => {
                answer = Some(Ok(Answer::Address(address)));
                Some(packet)
            }
            other => {
                answer = Some(other);
                None
            }
        }
    });
    // An older netd refuses the request's long word before looking at the
    // request ("malformed request"), or does not know it.
    let answer = match answer {
        Some(Err(NetdError::Refused(e))) if e == "unknown request" || e == "malformed request" => {
            None
        }
        other => other,
    };
    let Some(answer) = answer else {
        let answer = netd.request(&Request::Link {
            ifname: link.to_string(),
            timeout_ms: 10_000,
        })?;
        let lease = match answer {
            Answer::Address(_) => lease_from_netd(netd, link, mac, hostname),
            _ => None,
        };
        return Ok((answer, lease));
    };
    if let Some(l) = &lease {
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "DHCP on host0: {}/{} from {} with netd's answer about {link}",
            l.address,
            l.prefix_len,
            l.server
        );
    }
    Ok((answer?, lease))
}

/// host0's lease from netd's DHCP server for `link` (host0's host side),
/// asked on the control socket after `LINK` (a netd older than
/// `LINKDHCP`); None when netd did not bind one at once.
fn lease_from_netd(
    netd: &mut crate::netd_client::NetdClient,
    link: &str,
    mac: network::naming::Mac,
    hostname: &str,
) -> Option<network::dhcp_client::Lease> {
    let started = Instant::now();
    let lease = network::dhcp_client::rapid_commit_via(mac, hostname, |packet| {
        let asked = netspawn_common::netd::Request::DhcpMessage {
            ifname: link.to_string(),
            packet,
        };
        // Once: a netd that went away is noticed (and brought back) by the
        // exchange on the link that follows.
        match netd.request_once(&asked) {
            Ok(netspawn_common::netd::Answer::Packet(p)) => Some(p),
            Ok(other) => {
                tracing::debug!("netd: DHCP on {link}: {other}");
                None
            }
            Err(e) => {
                tracing::debug!("netd: DHCP on {link}: {e}");
                None
            }
        }
    });
    if let Some(l) = &lease {
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "DHCP on host0: {}/{} from {} over netd's control socket",
            l.address,
            l.prefix_len,
            l.server
        );
    }
    lease
}

/// Applies a lease to host0 (address, default route) and writes the
/// resolv.conf the container will see.
fn apply_lease(
    cfg: &Config,
    inside: &mut network::rtnl::Netlink,
    lease: &network::dhcp_client::Lease,
    run_dir: &Path,
    how: &str,
) -> Result<(), LaunchError> {
    let started = Instant::now();
    network::dhcp_client::configure(inside, "host0", lease)
        .map_err(|e| LaunchError::Dhcp(e.to_string()))?;
    let path = resolv_conf_path(cfg, run_dir);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, network::dhcp_client::resolv_conf(lease)).map_err(|e| {
        LaunchError::Sys {
            what: "write the container's resolv.conf",
            err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    })?;
    tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, address = %lease.address, "host0 configured by DHCP over {how}");
    Ok(())
}

/// Our own DHCP client configures host0 (address, default route) from
/// inside the container's namespace, and writes the resolv.conf the
/// container will see. On a link netd serves, failure is an error; on a
/// LAN bridge without a DHCP server, host0 stays bare with a warning.
fn configure_host0(
    cfg: &Config,
    ns: BorrowedFd<'_>,
    inside: &mut network::rtnl::Netlink,
    mac: network::naming::Mac,
    managed: bool,
    run_dir: &Path,
) -> Result<(), LaunchError> {
    let timeout = Duration::from_secs(if managed { 10 } else { 5 });
    // netd is the link's one DHCP server: rapid commit; a LAN's are not known.
    let server = if managed {
        network::dhcp_client::Server::Netd
    } else {
        network::dhcp_client::Server::Any
    };
    let lease =
        match network::dhcp_client::acquire(ns, "host0", mac, &cfg.hostname, server, timeout) {
            Ok(l) => l,
            Err(e) if !managed => {
                tracing::warn!("{e}; host0 stays unconfigured");
                if !cfg.quiet {
                    eprintln!("netspawn: {e}; host0 stays unconfigured.");
                }
                return Ok(());
            }
            Err(e) => return Err(LaunchError::Dhcp(e.to_string())),
        };
    let how = if managed {
        "the link (netd)"
    } else {
        "the link"
    };
    apply_lease(cfg, inside, &lease, run_dir, how)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    use netspawn_common::netd::{socket_path, Answer, Request};
    use netspawn_common::paths::Paths;

    use super::{link_with_lease, AnswerAndLease, LaunchError};
    use crate::netd_client::NetdClient;

    /// A fake netd on a run directory of its own that answers each request
    /// with `answer`, until the client goes; returns the requests' words.
    fn fake_netd(
        tag: &str,
        answer: fn(&Request) -> String,
    ) -> (Paths, std::thread::JoinHandle<Vec<String>>) {
        let dir = std::env::temp_dir().join(format!("netspawn-host0-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let paths = Paths {
            run_dir: dir.clone(),
            image_dir: "/nonexistent/images".into(),
            state_dir: "/nonexistent/state".into(),
            settings_path: Vec::new(),
            cgroup_parent: "netspawn".into(),
        };
        let listener = UnixListener::bind(socket_path(&paths)).unwrap();
        let served = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut w = conn.try_clone().unwrap();
            let mut seen = Vec::new();
            for line in BufReader::new(conn).lines() {
                let line = line.unwrap();
                let req = Request::parse(&line).unwrap();
                writeln!(w, "{}", answer(&req)).unwrap();
                seen.push(line.split(' ').take(2).collect::<Vec<_>>().join(" "));
            }
            let _ = std::fs::remove_dir_all(&dir);
            seen
        });
        (paths, served)
    }

    /// `link_with_lease` for ve-web against a fake netd answering with
    /// `answer`; with the requests it saw (their first two words).
    fn ask(
        tag: &str,
        answer: fn(&Request) -> String,
    ) -> (Result<AnswerAndLease, LaunchError>, Vec<String>) {
        let (paths, served) = fake_netd(tag, answer);
        let mut c = NetdClient::connect_only(&paths).expect("a connection to the fake netd");
        let got = link_with_lease(&mut c, "ve-web", [2, 0, 0, 0, 0, 1], "web");
        drop(c);
        (got, served.join().unwrap())
    }

    /// A DHCP server's ACK (rapid commit) of 10.0.0.5/28 to `discover`,
    /// for its transaction if `same_xid`, else for another one.
    fn ack(discover: &[u8], same_xid: bool) -> String {
        use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
        use dhcproto::{Decodable, Decoder, Encodable, Encoder};
        let d = Message::decode(&mut Decoder::new(discover)).unwrap();
        let server: std::net::Ipv4Addr = "10.0.0.1".parse().unwrap();
        let xid = if same_xid { d.xid() } else { d.xid() ^ 1 };
        let mut m = Message::new_with_id(
            xid,
            std::net::Ipv4Addr::UNSPECIFIED,
            "10.0.0.5".parse().unwrap(),
            server,
            std::net::Ipv4Addr::UNSPECIFIED,
            &d.chaddr()[..6],
        );
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Ack));
        o.insert(DhcpOption::ServerIdentifier(server));
        o.insert(DhcpOption::SubnetMask("255.255.255.240".parse().unwrap()));
        o.insert(DhcpOption::Router(vec![server]));
        o.insert(DhcpOption::DomainNameServer(vec![server]));
        o.insert(DhcpOption::AddressLeaseTime(3600));
        o.insert(DhcpOption::RapidCommit);
        let mut v = Vec::new();
        m.encode(&mut Encoder::new(&mut v)).unwrap();
        Answer::Leased {
            address: "10.0.0.1/28".parse().unwrap(),
            packet: v,
        }
        .to_line()
    }

    /// netd's answer carries the lease: host0's address, route and DNS
    /// come from it, in one request.
    #[test]
    fn the_lease_comes_with_the_answer_about_the_link() {
        let (got, seen) = ask("leased", |r| match r {
            Request::LinkDhcp { packet, .. } => ack(packet, true),
            _ => "ERR unexpected".into(),
        });
        let (answer, lease) = got.unwrap();
        assert_eq!(answer.to_string(), "OK address=10.0.0.1/28");
        let lease = lease.expect("a lease");
        assert_eq!(lease.address.to_string(), "10.0.0.5");
        assert_eq!(lease.prefix_len, 28);
        assert_eq!(
            lease.router.map(|r| r.to_string()).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(seen, ["LINKDHCP ve-web"]);
    }

    /// An ACK of another transaction is no lease (the exchange then runs
    /// on the link); the answer about the link still stands, and nothing
    /// more is asked.
    #[test]
    fn an_ack_of_another_transaction_is_no_lease() {
        let (got, seen) = ask("otherxid", |r| match r {
            Request::LinkDhcp { packet, .. } => ack(packet, false),
            _ => "ERR unexpected".into(),
        });
        let (answer, lease) = got.unwrap();
        assert_eq!(answer.to_string(), "OK address=10.0.0.1/28");
        assert!(lease.is_none());
        assert_eq!(seen, ["LINKDHCP ve-web"]);
    }

    /// A netd older than `LINKDHCP` refuses it (as a malformed request: its
    /// long word; or an unknown one): `LINK`, then `DHCPMSG`.
    #[test]
    fn an_older_netd_is_asked_link_then_dhcpmsg() {
        let servers: [fn(&Request) -> String; 2] = [
            |r| match r {
                Request::LinkDhcp { .. } => "ERR malformed request".into(),
                Request::Link { .. } => "OK address=10.0.0.1/28".into(),
                _ => "ERR netd serves no DHCP on ve-web".into(),
            },
            |r| match r {
                Request::LinkDhcp { .. } => "ERR unknown request".into(),
                Request::Link { .. } => "OK address=10.0.0.1/28".into(),
                _ => "ERR netd serves no DHCP on ve-web".into(),
            },
        ];
        for (i, server) in servers.into_iter().enumerate() {
            let (got, seen) = ask(&format!("old{i}"), server);
            let (answer, lease) = got.unwrap();
            assert_eq!(answer.to_string(), "OK address=10.0.0.1/28");
            assert!(lease.is_none());
            assert_eq!(seen, ["LINKDHCP ve-web", "LINK ve-web", "DHCPMSG ve-web"]);
        }
    }

    /// netd's answer about the link comes through as it is; nothing more
    /// is asked when there is no lease in it.
    #[test]
    fn linkdhcp_answers_without_a_lease_are_passed_on() {
        for (tag, line, expect) in [
            ("unmanaged", "OK unmanaged", Ok(Answer::Unmanaged)),
            (
                "address",
                "OK address=10.0.0.1/28",
                Ok(Answer::Address("10.0.0.1/28".parse().unwrap())),
            ),
            (
                "refused",
                "ERR link ve-web was not configured in time",
                Err(()),
            ),
        ] {
            let (got, seen) = match tag {
                "unmanaged" => ask(tag, |_| "OK unmanaged".into()),
                "address" => ask(tag, |_| "OK address=10.0.0.1/28".into()),
                _ => ask(tag, |_| "ERR link ve-web was not configured in time".into()),
            };
            match (&got, &expect) {
                (Ok((a, None)), Ok(e)) => assert_eq!(a, e, "{line}"),
                (Err(_), Err(())) => {}
                _ => panic!("{line}: {:?}", got.map(|(a, l)| (a, l.is_some()))),
            }
            assert_eq!(seen, ["LINKDHCP ve-web"], "{line}");
        }
    }
}
