//! Router advertisements on container links (`IPv6SendRA=yes`): what makes
//! a container configure its IPv6 address by SLAAC.
//!
//! For each such link netd opens a raw ICMPv6 socket bound to the link,
//! answers every router solicitation at once (RFC 4861 §6.2.6 lets a router
//! wait up to 0.5 s; on a link whose only router is netd nothing is gained by
//! waiting, and a container's address is then there a few milliseconds after
//! its link comes up; within 20 ms of the last all-nodes advertisement the
//! answer goes to the solicitor's link-local address alone, as §6.2.6 also
//! allows, instead of waiting out the gap), and sends unsolicited advertisements when the link is
//! configured and then periodically. Advertisements go to all nodes
//! (`ff02::1`) from the link's `fe80::1`, which netd adds without duplicate
//! address detection, so they can leave as soon as the link is configured
//! (the kernel's own link-local address is tentative for a second).
//!
//! What is advertised ([`advert_for`], pure): the prefixes of the template's
//! `[IPv6Prefix]` sections and the link's `/64` from the pool (on-link,
//! autonomous), netd itself as default router (`RouterLifetimeSec=`), netd's
//! own address on the link as recursive DNS server (RFC 8106; `[IPv6SendRA]
//! DNS=` replaces it), and the search domains of [`search_domains`].
//!
//! Malformed solicitations, and advertisements from anyone else on the link
//! (a container that plays router), are dropped and counted ([`COUNTERS`]),
//! never answered.

pub mod wire;

use std::io::{IoSlice, IoSliceMut};
use std::net::Ipv6Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::Ipv6Network;
use nix::libc;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn6,
};
use tokio::io::Interest;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::template::{NetworkFile, RouterPreference};
use wire::{Preference, PrefixInfo, RouterAdvert, RouterSolicit};

/// The link-local address netd sends advertisements from, on every link
/// it advertises on (added with `IFA_F_NODAD`).
pub const ROUTER_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// All nodes on the link.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All routers on the link.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The shortest gap between two advertisements on one link: solicitations
/// that arrive closer together (a zone's machines booting at once) are
/// answered by one advertisement.
const MIN_GAP: Duration = Duration::from_millis(20);
/// The unsolicited advertisements after the first one (RFC 4861 §6.2.4
/// allows three at intervals of at most 16 s), then every [`PERIOD`].
const INITIAL: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];
/// When advertisements follow a change of the link (see [`serve`]).
const KICK_BURST: [Duration; 3] = [
    Duration::from_millis(30),
    Duration::from_millis(120),
    Duration::from_millis(400),
];
/// When an answer given at once to a solicitation is repeated.
const ANSWER_AGAIN: Duration = Duration::from_millis(3);
/// The shortest gap between two unicast answers on one link (RFC 4861
/// §6.2.6 lets a router answer a solicitation from a unicast address to
/// that address; the all-nodes rate limit is for multicast advertisements).
/// A solicitation that comes within [`MIN_GAP`] of the last advertisement
/// is answered this way at once instead of when the gap ends; a link that
/// floods solicitations gets at most one unicast answer per gap.
const UNICAST_GAP: Duration = Duration::from_millis(2);
/// At most this many solicitors are answered by unicast per wake-up.
const UNICAST_BATCH: usize = 4;
/// How often unsolicited advertisements are repeated.
const PERIOD: Duration = Duration::from_secs(200);

/// Errors of the router advertisement socket.
#[derive(Debug, thiserror::Error)]
pub enum RaError {
    #[error("router advertisements on {ifname}: {action}: {source}")]
    Socket {
        ifname: String,
        action: &'static str,
        source: std::io::Error,
    },
}

/// What netd counted of router discovery packets since it started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Solicitations answered.
    pub solicits: AtomicU64,
    /// Advertisements sent.
    pub adverts: AtomicU64,
    /// Packets dropped: malformed solicitations or advertisements, a hop
    /// limit other than 255.
    pub malformed: AtomicU64,
    /// Well-formed advertisements from someone else on a container link,
    /// ignored.
    pub foreign_adverts: AtomicU64,
}

/// netd's counters, for every link.
pub static COUNTERS: Counters = Counters {
    solicits: AtomicU64::new(0),
    adverts: AtomicU64::new(0),
    malformed: AtomicU64::new(0),
    foreign_adverts: AtomicU64::new(0),
};

/// The DNS search domains advertised on `link` (DNSSL, RFC 8106), when its
/// template has `EmitDomains=yes`: the ones DHCP hands out there
/// (`ZONE.netspawn netspawn` on a zone, `netspawn` elsewhere).
pub fn search_domains(link: &str) -> Vec<String> {
    crate::dns::search_domains(link)
}

/// The advertisement for a link (pure): `subnets` are the link's IPv6
/// subnets from the pool and its static `Address=`es, `own` is netd's
/// address on the link (the default DNS server), `mac` the link's address.
pub fn advert_for(
    file: &NetworkFile,
    subnets: &[Ipv6Network],
    own: Option<Ipv6Addr>,
    mac: Option<[u8; 6]>,
    domains: Vec<String>,
) -> RouterAdvert {
    let cfg = &file.ipv6_send_ra;
    let mut prefixes: Vec<PrefixInfo> = Vec::new();
    for p in &file.ipv6_prefixes {
        prefixes.push(PrefixInfo {
            prefix: p.prefix.network(),
            prefix_len: p.prefix.prefix(),
            on_link: p.on_link,
            autoconf: p.autoconf && p.prefix.prefix() == 64,
            valid_secs: p.valid_secs,
            preferred_secs: p.preferred_secs.min(p.valid_secs),
        });
    }
    for s in subnets {
        let net = s.network();
        if prefixes
            .iter()
            .any(|p| p.prefix == net && p.prefix_len == s.prefix())
        {
            continue;
        }
        prefixes.push(PrefixInfo {
            prefix: net,
            prefix_len: s.prefix(),
            on_link: true,
            // Addresses are made from a /64 only (RFC 4862 §5.5.3).
            autoconf: s.prefix() == 64,
            valid_secs: crate::template::DEFAULT_VALID_LIFETIME_SECS,
            preferred_secs: crate::template::DEFAULT_PREFERRED_LIFETIME_SECS,
        });
    }
    let lifetime = cfg.router_lifetime_secs.min(u32::from(u16::MAX)) as u16;
    let dns_lifetime = (3 * PERIOD.as_secs() as u32).max(u32::from(lifetime));
    let rdnss = if !cfg.emit_dns {
        Vec::new()
    } else if !cfg.dns.is_empty() {
        cfg.dns.clone()
    } else {
        own.into_iter().collect()
    };
    RouterAdvert {
        hop_limit: 64,
        managed: cfg.managed,
        other: cfg.other_information,
        preference: match cfg.router_preference {
            RouterPreference::Low => Preference::Low,
            RouterPreference::Medium => Preference::Medium,
            RouterPreference::High => Preference::High,
        },
        router_lifetime: lifetime,
        reachable_ms: 0,
        retrans_ms: 0,
        source_lladdr: mac,
        mtu: None,
        prefixes,
        rdnss,
        rdnss_lifetime: dns_lifetime,
        dnssl: if cfg.emit_domains {
            domains
        } else {
            Vec::new()
        },
        dnssl_lifetime: dns_lifetime,
    }
}

fn sock_err(ifname: &str, action: &'static str) -> impl FnOnce(std::io::Error) -> RaError {
    let ifname = ifname.to_string();
    move |source| RaError::Socket {
        ifname,
        action,
        source,
    }
}

/// The link's raw ICMPv6 socket (non-blocking, close-on-exec) in the
/// calling thread's network namespace: bound to the link, in the
/// all-routers group there, receiving only solicitations and
/// advertisements with their hop limit, sending with hop limit 255.
pub fn open_socket(ifname: &str, ifindex: u32) -> Result<OwnedFd, RaError> {
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::IcmpV6,
    )
    .map_err(|e| sock_err(ifname, "socket")(e.into()))?;
    let nix_err = |action| move |e: nix::Error| sock_err(ifname, action)(e.into());
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )
    .map_err(nix_err("SO_BINDTODEVICE"))?;
    crate::sys::set_icmp6_filter(fd.as_fd(), &[wire::ROUTER_SOLICIT, wire::ROUTER_ADVERT])
        .map_err(sock_err(ifname, "ICMP6_FILTER"))?;
    setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true).map_err(nix_err("IPV6_RECVHOPLIMIT"))?;
    setsockopt(&fd, sockopt::Ipv6MulticastHops, &255).map_err(nix_err("IPV6_MULTICAST_HOPS"))?;
    crate::sys::set_ipv6_multicast_loop(fd.as_fd(), false)
        .map_err(sock_err(ifname, "IPV6_MULTICAST_LOOP"))?;
    crate::sys::join_ipv6_group(fd.as_fd(), ALL_ROUTERS, ifindex)
        .map_err(sock_err(ifname, "join ff02::2"))?;
    Ok(fd)
}

/// Sends `packet` to all nodes on the link from [`ROUTER_LINK_LOCAL`].
fn send(fd: &OwnedFd, ifindex: u32, packet: &[u8]) -> std::io::Result<()> {
    send_to(fd, ifindex, packet, ALL_NODES)
}

/// Sends `packet` to `dst` on the link from [`ROUTER_LINK_LOCAL`].
fn send_to(fd: &OwnedFd, ifindex: u32, packet: &[u8], dst: Ipv6Addr) -> std::io::Result<()> {
    let dst = SockaddrIn6::from(std::net::SocketAddrV6::new(dst, 0, 0, ifindex));
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: ROUTER_LINK_LOCAL.octets(),
        },
        ipi6_ifindex: ifindex,
    };
    let hops: libc::c_int = 255;
    let cmsgs = [
        ControlMessage::Ipv6PacketInfo(&info),
        ControlMessage::Ipv6HopLimit(&hops),
    ];
    sendmsg(
        fd.as_raw_fd(),
        &[IoSlice::new(packet)],
        &cmsgs,
        MsgFlags::empty(),
        Some(&dst),
    )?;
    COUNTERS.adverts.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// What one received packet is.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    /// A well-formed solicitation: answer it (by unicast if it came from
    /// this link-local address).
    Solicit(Option<Ipv6Addr>),
    /// Someone else's well-formed advertisement: ignore it.
    ForeignAdvert,
    /// Anything else: drop and count it.
    Malformed(String),
}

/// Classifies a packet (pure): `hop_limit` as it arrived, `from` its
/// source address.
fn classify(packet: &[u8], hop_limit: Option<i32>, from: Option<Ipv6Addr>) -> Received {
    // RFC 4861 §6.1.1/§6.1.2: the hop limit must be 255 (never forwarded).
    if hop_limit != Some(255) {
        return Received::Malformed(format!("hop limit {hop_limit:?}"));
    }
    match packet.first() {
        Some(&wire::ROUTER_SOLICIT) => match RouterSolicit::parse(packet) {
            // An unspecified source must not carry a link-layer address.
            Ok(rs) if rs.source_lladdr.is_some() && from.is_some_and(|a| a.is_unspecified()) => {
                Received::Malformed("link-layer address from ::".into())
            }
            // Answered to its source only from a link-local unicast
            // address (not ::, not multicast, nothing routed).
            Ok(_) => Received::Solicit(from.filter(|a| (a.segments()[0] & 0xffc0) == 0xfe80)),
            Err(e) => Received::Malformed(e.to_string()),
        },
        Some(&wire::ROUTER_ADVERT) => match RouterAdvert::parse(packet) {
            Ok(_) => Received::ForeignAdvert,
            Err(e) => Received::Malformed(e.to_string()),
        },
        _ => Received::Malformed("not router discovery".into()),
    }
}

/// Reads one packet; `None` when there is none.
fn receive(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<Option<Received>> {
    let mut cmsg = nix::cmsg_space!(libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = match recvmsg::<SockaddrIn6>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(m) => m,
        Err(nix::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let hop = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|m| match m {
            ControlMessageOwned::Ipv6HopLimit(h) => Some(h),
            _ => None,
        })
    });
    let from = msg.address.map(|a| a.ip());
    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
    let n = msg.bytes;
    let packet = &iov[0][..n];
    if truncated {
        return Ok(Some(Received::Malformed("truncated".into())));
    }
    Ok(Some(classify(packet, hop, from)))
}

/// Serves router discovery on one link until `shutdown` completes: an
/// advertisement at once, answers to solicitations, the periodic ones, and
/// one whenever `kick` is notified (the link changed: a container's side
/// came up, so its kernel gets the prefix without soliciting, which it
/// would do only a second later). Runs inside the tokio runtime.
pub async fn serve(
    ifname: String,
    ifindex: u32,
    fd: OwnedFd,
    advert: RouterAdvert,
    kick: Arc<Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RaError> {
    let packet = advert.emit();
    let afd = crate::sys::async_fd(fd, Interest::READABLE)
        .map_err(sock_err(&ifname, "register with the runtime"))?;
    tokio::pin!(shutdown);
    let mut buf = vec![0u8; 2048];
    let mut last_sent: Option<Instant> = None;
    let mut next = Instant::now();
    let mut initial = INITIAL.iter();
    let mut due_answer: Option<Instant> = None;
    let mut burst: Vec<Instant> = Vec::new();
    let mut last_unicast: Option<Instant> = None;
    let mut solicitors: Vec<Ipv6Addr> = Vec::new();
    loop {
        burst.retain(|t| last_sent.is_none_or(|l| *t > l));
        let wake = due_answer
            .into_iter()
            .chain(burst.first().copied())
            .fold(next, Instant::min);
        // What is due goes here, the timer's wake-ups included; what is due
        // now (the first advertisement, the answer to a kick) goes without
        // the timer, which would wait for the runtime's next millisecond
        // tick (up to 1 ms, which a new link's SLAAC address, and the
        // payload that waits for it, waited too).
        let now = Instant::now();
        if wake <= now {
            if let Err(e) = send(afd.get_ref(), ifindex, &packet) {
                tracing::debug!("{ifname}: router advertisement: {e}");
            }
            last_sent = Some(now);
            due_answer = None;
            if now >= next {
                next = now + initial.next().copied().unwrap_or(PERIOD);
            }
            // Let the runtime run others between two sends.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = kick.notified() => {
                let now = Instant::now();
                let earliest = last_sent.map_or(now, |t| t + MIN_GAP).max(now);
                due_answer = Some(due_answer.map_or(earliest, |d| d.min(earliest)));
                // The other side's kernel takes advertisements only once its
                // own link watch has run, which may be a while after ours:
                // a few more, soon.
                // (Added to what is due already: an answer's repeat stays.)
                burst.extend(KICK_BURST.iter().map(|d| now + *d));
                burst.sort();
                burst.dedup();
            }
            // Due now: sent at the top of the loop.
            _ = tokio::time::sleep_until(wake) => {}
            ready = afd.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => return Err(sock_err(&ifname, "poll")(e)),
                };
                loop {
                    match receive(guard.get_inner(), &mut buf) {
                        Ok(None) => {
                            guard.clear_ready();
                            break;
                        }
                        Ok(Some(Received::Solicit(from))) => {
                            COUNTERS.solicits.fetch_add(1, Ordering::Relaxed);
                            if let Some(a) = from {
                                if solicitors.len() < UNICAST_BATCH && !solicitors.contains(&a) {
                                    solicitors.push(a);
                                }
                            }
                            let now = Instant::now();
                            let earliest = last_sent.map_or(now, |t| t + MIN_GAP);
                            due_answer = Some(due_answer.map_or(earliest, |d| d.min(earliest)).max(now));
                        }
                        Ok(Some(Received::ForeignAdvert)) => {
                            COUNTERS.foreign_adverts.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!("{ifname}: ignored a router advertisement from the link");
                        }
                        Ok(Some(Received::Malformed(why))) => {
                            let n = COUNTERS.malformed.fetch_add(1, Ordering::Relaxed) + 1;
                            tracing::debug!("{ifname}: dropped a router discovery packet: {why}");
                            if n.is_power_of_two() {
                                tracing::info!("dropped {n} malformed router discovery packet(s) so far");
                            }
                        }
                        Err(e) => {
                            tracing::debug!("{ifname}: receive: {e}");
                            guard.clear_ready();
                            break;
                        }
                    }
                }
                drop(guard);
                // A solicitation with no advertisement in the last MIN_GAP
                // is answered here and now: through the timer it would wait
                // for the runtime's next millisecond tick. A guest that
                // solicits as soon as its link is up may not take an
                // advertisement yet (its kernel's link watch has not run),
                // so one more follows a moment later.
                let now = Instant::now();
                if due_answer.is_some_and(|d| d <= now) {
                    if let Err(e) = send(afd.get_ref(), ifindex, &packet) {
                        tracing::debug!("{ifname}: router advertisement: {e}");
                    }
                    last_sent = Some(now);
                    due_answer = None;
                    let again = now + ANSWER_AGAIN;
                    if !burst.contains(&again) {
                        burst.push(again);
                        burst.sort();
                    }
                } else if !solicitors.is_empty()
                    && last_unicast.is_none_or(|t| now >= t + UNICAST_GAP)
                {
                    // Within the multicast gap: the solicitors get theirs
                    // now (the multicast one still follows when it ends).
                    for a in &solicitors {
                        if let Err(e) = send_to(afd.get_ref(), ifindex, &packet, *a) {
                            tracing::debug!("{ifname}: router advertisement to {a}: {e}");
                        }
                    }
                    last_unicast = Some(now);
                }
                solicitors.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::testutil::ok;

    fn net(s: &str) -> Ipv6Network {
        s.parse().unwrap()
    }

    #[test]
    fn the_builtin_advert_carries_the_links_prefix_and_dns() {
        let loaded = crate::template::load_with(&[], &crate::template::BUILTIN).unwrap();
        let ve = loaded
            .files
            .iter()
            .find(|f| f.name == "80-container-ve.network")
            .unwrap();
        assert!(ve.network.ipv6_send_ra);
        let own: Ipv6Addr = "fd00:1:2:3::1".parse().unwrap();
        let ra = advert_for(
            ve,
            &[net("fd00:1:2:3::/64")],
            Some(own),
            Some([2; 6]),
            vec![],
        );
        assert_eq!(ra.router_lifetime, 1800);
        assert_eq!(ra.rdnss, vec![own]);
        assert_eq!(
            ra.prefixes,
            vec![PrefixInfo {
                prefix: "fd00:1:2:3::".parse().unwrap(),
                prefix_len: 64,
                on_link: true,
                autoconf: true,
                valid_secs: 3600,
                preferred_secs: 1800,
            }]
        );
        assert!(ra.dnssl.is_empty());
        assert_eq!(search_domains("ve-web"), ["netspawn"]);
        assert_eq!(search_domains("vz-lab"), ["lab.netspawn", "netspawn"]);
        // Round trip through the wire.
        assert_eq!(RouterAdvert::parse(&ra.emit()).unwrap().emit(), ra.emit());
    }

    #[test]
    fn template_keys_shape_the_advert() {
        let f = ok("[Match]\nName=x\n[Network]\nIPv6SendRA=yes\n[IPv6SendRA]\n\
                    RouterLifetimeSec=0\nDNS=2001:db8::53\nRouterPreference=low\nEmitDomains=yes\n\
                    [IPv6Prefix]\nPrefix=2001:db8:5::/64\nPreferredLifetimeSec=1h\n\
                    ValidLifetimeSec=30min\n[IPv6Prefix]\nPrefix=2001:db8::/48\n")
        .file;
        let ra = advert_for(
            &f,
            &[net("2001:db8:5::/64"), net("fd00::/80")],
            Some("fd00::1".parse().unwrap()),
            None,
            vec!["lab.netspawn".into()],
        );
        assert_eq!(ra.router_lifetime, 0);
        assert_eq!(ra.preference, Preference::Low);
        assert_eq!(ra.rdnss, vec!["2001:db8::53".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(ra.dnssl, ["lab.netspawn"]);
        let p: Vec<_> = ra
            .prefixes
            .iter()
            .map(|p| {
                (
                    p.prefix.to_string(),
                    p.prefix_len,
                    p.autoconf,
                    p.preferred_secs,
                )
            })
            .collect();
        // The preferred lifetime never exceeds the valid one; no SLAAC
        // from a prefix that is not a /64; a prefix listed twice once.
        assert_eq!(
            p,
            vec![
                ("2001:db8:5::".into(), 64, true, 1800),
                ("2001:db8::".into(), 48, false, 1800),
                ("fd00::".into(), 80, false, 1800),
            ]
        );
        let f = ok("[Match]\nName=x\n[IPv6SendRA]\nEmitDNS=no\nEmitDomains=no\n").file;
        let ra = advert_for(
            &f,
            &[],
            Some("fd00::1".parse().unwrap()),
            None,
            vec!["x".into()],
        );
        assert!(ra.rdnss.is_empty() && ra.dnssl.is_empty());
    }

    #[test]
    fn received_packets_are_classified() {
        let rs = RouterSolicit::default().emit();
        let rs_ll = RouterSolicit {
            source_lladdr: Some([2; 6]),
        }
        .emit();
        let ll: Ipv6Addr = "fe80::2".parse().unwrap();
        type Case = (Vec<u8>, Option<i32>, Option<Ipv6Addr>, Received);
        let table: Vec<Case> = vec![
            (rs.clone(), Some(255), Some(ll), Received::Solicit(Some(ll))),
            (
                rs.clone(),
                Some(255),
                Some(Ipv6Addr::UNSPECIFIED),
                Received::Solicit(None),
            ),
            (
                rs.clone(),
                Some(255),
                Some("fd00::2".parse().unwrap()),
                Received::Solicit(None),
            ),
            (
                rs.clone(),
                Some(255),
                Some("ff02::1".parse().unwrap()),
                Received::Solicit(None),
            ),
            (
                rs_ll.clone(),
                Some(255),
                Some(ll),
                Received::Solicit(Some(ll)),
            ),
            (
                rs_ll,
                Some(255),
                Some(Ipv6Addr::UNSPECIFIED),
                Received::Malformed("link-layer address from ::".into()),
            ),
            (
                rs.clone(),
                Some(64),
                Some(ll),
                Received::Malformed("hop limit Some(64)".into()),
            ),
            (
                rs,
                None,
                Some(ll),
                Received::Malformed("hop limit None".into()),
            ),
            (
                RouterAdvert::default().emit(),
                Some(255),
                Some(ll),
                Received::ForeignAdvert,
            ),
            (
                vec![134, 0, 0],
                Some(255),
                Some(ll),
                Received::Malformed("too short (3 bytes)".into()),
            ),
            (
                vec![],
                Some(255),
                Some(ll),
                Received::Malformed("not router discovery".into()),
            ),
        ];
        for (packet, hop, from, want) in table {
            assert_eq!(classify(&packet, hop, from), want, "{packet:?}");
        }
    }
}
