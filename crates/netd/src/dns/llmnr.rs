//! The LLMNR responder (RFC 4795) on container links: a booted guest with
//! systemd-resolved sends single-label names (`ping alpha`) to LLMNR, never
//! to unicast DNS, so netd answers them there too: A and AAAA for machine
//! names and for `host` (the host's addresses on the link), from the same
//! directory as DNS.
//!
//! - [`respond`]: the protocol, without I/O (a query in, a reply, nothing,
//!   or "malformed" out), table-tested below;
//! - [`LlmnrListener`]: one socket per served link and family, bound to the
//!   link (`SO_BINDTODEVICE`) on port 5355, member of 224.0.0.252 or
//!   ff02::1:3 on that link only. Never on loopback or the host's uplinks:
//!   the DNS server starts one for each link it serves
//!   ([`super::DnsServer::add_link_listener`]).
//!
//! Decisions:
//! - A machine's own name is not answered to a query that comes from one
//!   of that machine's addresses: resolved probes its own name at start
//!   (RFC 4795 §4), and an answer would make it believe another host holds
//!   it (and rename itself).
//! - A name netd knows without a record of the asked type gets an empty
//!   answer (RFC 4795 §2.1.1 allows it), so a resolver asking A and AAAA at
//!   once does not wait out its retransmissions for the missing one.
//! - Queries with the C (conflict) bit are for the name's owner: ignored.
//! - What RFC 4795 §2.1.1 says to discard silently (responses, opcodes
//!   other than QUERY, QDCOUNT ≠ 1, ANCOUNT or NSCOUNT ≠ 0) and what does
//!   not parse is dropped and counted ([`super::StatsSnapshot::llmnr_malformed`]).
//! - Replies go out with IP TTL / hop limit 255, as resolved sends its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

use super::answer::{address_records, encode_reply, HOST_NAME, PLAIN_UDP_PAYLOAD};
use super::directory::MachineDirectory;
use super::shared::{Inner, Stats};

/// The LLMNR port.
pub const LLMNR_PORT: u16 = 5355;
/// The IPv4 LLMNR group.
pub const LLMNR_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 252);
/// The IPv6 LLMNR group.
pub const LLMNR_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 3);
/// Largest datagram read (a query is far smaller; a longer one is cut and
/// then found malformed).
const RECV_BUF: usize = 4096;

/// What to do with one LLMNR datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this reply to the querier.
    Reply(Vec<u8>),
    /// A fine query for a name that is not ours (or not ours to answer to
    /// this querier): stay silent, as every other responder on the link.
    NotOurs,
    /// Not an LLMNR query RFC 4795 lets us answer: dropped and counted.
    Malformed,
}

/// Decides the reply to one LLMNR datagram from `from`, given the machines
/// in `dir` and the host's addresses on the link (`host`).
pub fn respond(
    packet: &[u8],
    from: IpAddr,
    dir: &dyn MachineDirectory,
    host: &[IpAddr],
) -> Outcome {
    let Ok(req) = Message::from_vec(packet) else {
        return Outcome::Malformed;
    };
    let m = &req.metadata;
    if m.message_type != MessageType::Query
        || m.op_code != OpCode::Query
        || req.queries.len() != 1
        || !req.answers.is_empty()
        || !req.authorities.is_empty()
    {
        return Outcome::Malformed;
    }
    // LLMNR's C bit sits where DNS has AA.
    if m.authoritative {
        return Outcome::NotOurs;
    }
    let query = &req.queries[0];
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Outcome::NotOurs;
    }
    let qtype = query.query_type();
    if !matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
        return Outcome::NotOurs;
    }
    let name = query.name();
    if name.num_labels() != 1 {
        return Outcome::NotOurs;
    }
    let Some(label) = name.iter().next() else {
        return Outcome::NotOurs;
    };
    if !label
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return Outcome::NotOurs;
    }
    let key = String::from_utf8_lossy(&label.to_ascii_lowercase()).into_owned();
    let addrs = if key == HOST_NAME && !host.is_empty() {
        host.to_vec()
    } else if dir.exists(&key) {
        let addrs = dir.addresses(&key);
        // A machine still without an address says nothing yet; its own
        // probe is not answered.
        if addrs.is_empty() || addrs.contains(&from) {
            return Outcome::NotOurs;
        }
        addrs
    } else {
        return Outcome::NotOurs;
    };
    let mut reply = Message::response(m.id, OpCode::Query);
    // C, TC, T all clear; no recursion in LLMNR.
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.authoritative = false;
    reply.metadata.recursion_desired = false;
    reply.metadata.recursion_available = false;
    reply.metadata.response_code = ResponseCode::NoError;
    reply.queries.push(query.clone());
    reply.answers = address_records(name, qtype, &addrs);
    match encode_reply(&reply, PLAIN_UDP_PAYLOAD) {
        Some(bytes) => Outcome::Reply(bytes),
        None => Outcome::NotOurs,
    }
}

/// An LLMNR socket on one link for one family, served by a task; dropping
/// it stops the task and closes the socket.
pub(super) struct LlmnrListener {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LlmnrListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LlmnrListener {
    /// Listens for LLMNR on the link `ifindex`. `local` picks the family;
    /// for IPv4 it is the link's host-side address (the interface of the
    /// group membership), for IPv6 any address (the group is joined by
    /// interface index). Must be called inside a tokio runtime.
    pub(super) fn start(
        ifindex: u32,
        local: IpAddr,
        inner: Arc<Inner>,
    ) -> std::io::Result<LlmnrListener> {
        let sock = llmnr_socket(ifindex, local)?;
        let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))?;
        let task = tokio::spawn(serve(sock, ifindex, inner));
        Ok(LlmnrListener { task })
    }
}

fn llmnr_socket(ifindex: u32, local: IpAddr) -> std::io::Result<OwnedFd> {
    let ifname = nix::net::if_::if_indextoname(ifindex)?;
    let (family, wildcard) = match local {
        IpAddr::V4(_) => (
            AddressFamily::Inet,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, LLMNR_PORT)),
        ),
        IpAddr::V6(_) => (
            AddressFamily::Inet6,
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, LLMNR_PORT)),
        ),
    };
    let fd = socket::socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // Every link has a socket on port 5355 of its own, told apart by the
    // device it is bound to; a host resolver's LLMNR socket may share it.
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname.to_string_lossy().into_owned()),
    )?;
    if local.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        socket::setsockopt(&fd, sockopt::Ipv6Ttl, &255)?;
    } else {
        socket::setsockopt(&fd, sockopt::Ipv4Ttl, &255)?;
    }
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(wildcard),
    )?;
    let std_sock = std::net::UdpSocket::from(fd);
    match local {
        IpAddr::V4(a) => std_sock.join_multicast_v4(&LLMNR_GROUP_V4, &a)?,
        IpAddr::V6(_) => std_sock.join_multicast_v6(&LLMNR_GROUP_V6, ifindex)?,
    }
    Ok(OwnedFd::from(std_sock))
}

async fn serve(sock: tokio::net::UdpSocket, ifindex: u32, inner: Arc<Inner>) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(err = %e, ifindex, "LLMNR receive");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let stats = &inner.stats;
        Stats::bump(&stats.llmnr_queries);
        if from.port() == 0 {
            Stats::bump(&stats.llmnr_malformed);
            continue;
        }
        let packet = buf.get(..n).unwrap_or_default();
        let arrivals = inner.arrivals.get().1;
        match respond(packet, from.ip(), &*inner.dir, arrivals.host(ifindex)) {
            Outcome::Reply(bytes) => {
                Stats::bump(&stats.llmnr_answered);
                if sock.send_to(&bytes, from).await.is_err() {
                    Stats::bump(&stats.send_errors);
                }
            }
            Outcome::NotOurs => {}
            Outcome::Malformed => {
                Stats::bump(&stats.llmnr_malformed);
                tracing::debug!(%from, ifindex, len = n, "LLMNR: malformed datagram dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;
    use crate::dns::directory::StaticDirectory;

    fn dir() -> StaticDirectory {
        StaticDirectory::new([
            (
                "alpha",
                vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            ),
            ("beta", vec!["10.0.0.3".parse().unwrap()]),
            ("host", vec!["10.0.0.9".parse().unwrap()]),
        ])
    }

    const HOST: &[IpAddr] = &[IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))];

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.id = 77;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m
    }

    fn ask(m: &Message, from: &str) -> Outcome {
        respond(&m.to_vec().unwrap(), from.parse().unwrap(), &dir(), HOST)
    }

    fn answers(o: Outcome) -> Vec<String> {
        let Outcome::Reply(bytes) = o else {
            panic!("expected a reply, got {o:?}")
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 77);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        // C, TC, T clear.
        assert!(!m.metadata.authoritative && !m.metadata.truncation);
        assert!(!m.metadata.recursion_desired);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries.len(), 1);
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn machine_names_and_host() {
        let from = "10.0.0.3";
        assert_eq!(
            answers(ask(&query("alpha", RecordType::A), from)),
            ["10.0.0.2"]
        );
        assert_eq!(
            answers(ask(&query("ALPHA.", RecordType::AAAA), from)),
            ["fd00::2"]
        );
        assert_eq!(
            answers(ask(&query("alpha", RecordType::ANY), from)),
            ["10.0.0.2", "fd00::2"]
        );
        // Known without that type: an empty answer, not silence.
        assert!(answers(ask(&query("beta", RecordType::AAAA), "10.0.0.2")).is_empty());
        // `host` is the host on this link, whatever a machine is called.
        assert_eq!(
            answers(ask(&query("host", RecordType::A), from)),
            ["10.0.0.1"]
        );
        // The question's case is echoed.
        let Outcome::Reply(b) = ask(&query("AlPhA", RecordType::A), from) else {
            panic!()
        };
        let m = Message::from_vec(&b).unwrap();
        assert_eq!(m.queries[0].name().to_string(), "AlPhA.");
    }

    #[test]
    fn not_ours() {
        let from = "10.0.0.3";
        for (name, qtype) in [
            ("gamma", RecordType::A),
            ("alpha.example", RecordType::A),
            ("alpha", RecordType::MX),
            ("alpha", RecordType::PTR),
        ] {
            assert_eq!(ask(&query(name, qtype), from), Outcome::NotOurs, "{name}");
        }
        // A machine's own probe of its name is not answered.
        assert_eq!(
            ask(&query("alpha", RecordType::A), "10.0.0.2"),
            Outcome::NotOurs
        );
        assert_eq!(
            ask(&query("alpha", RecordType::A), "fd00::2"),
            Outcome::NotOurs
        );
        // A conflict notice (C bit) is for the owner.
        let mut c = query("alpha", RecordType::A);
        c.metadata.authoritative = true;
        assert_eq!(ask(&c, from), Outcome::NotOurs);
        // Another class.
        let mut ch = query("alpha", RecordType::A);
        ch.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(ask(&ch, from), Outcome::NotOurs);
    }

    #[test]
    fn malformed_is_dropped() {
        let from: IpAddr = "10.0.0.3".parse().unwrap();
        let d = dir();
        assert_eq!(respond(b"", from, &d, HOST), Outcome::Malformed);
        assert_eq!(respond(&[0xff; 9], from, &d, HOST), Outcome::Malformed);
        let good = query("alpha", RecordType::A).to_vec().unwrap();
        for cut in 0..good.len() {
            assert_eq!(
                respond(&good[..cut], from, &d, HOST),
                Outcome::Malformed,
                "cut at {cut}"
            );
        }
        let mut resp = query("alpha", RecordType::A);
        resp.metadata.message_type = MessageType::Response;
        assert_eq!(ask(&resp, "10.0.0.3"), Outcome::Malformed);
        let mut two = query("alpha", RecordType::A);
        two.add_query(Query::query(Name::from_str("beta").unwrap(), RecordType::A));
        assert_eq!(ask(&two, "10.0.0.3"), Outcome::Malformed);
        let mut none = query("alpha", RecordType::A);
        none.queries.clear();
        assert_eq!(ask(&none, "10.0.0.3"), Outcome::Malformed);
        let mut upd = query("alpha", RecordType::A);
        upd.metadata.op_code = OpCode::Update;
        assert_eq!(ask(&upd, "10.0.0.3"), Outcome::Malformed);
        let mut with_answer = query("alpha", RecordType::A);
        with_answer.answers = address_records(
            &Name::from_str("alpha").unwrap(),
            RecordType::A,
            &["10.0.0.2".parse().unwrap()],
        );
        assert_eq!(ask(&with_answer, "10.0.0.3"), Outcome::Malformed);
    }

    /// Golden bytes: a query as resolved sends it, and the exact reply.
    #[test]
    fn golden_reply() {
        let q: &[u8] = &[
            0x12, 0x34, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // header
            0x04, b'b', b'e', b't', b'a', 0x00, 0x00, 0x01, 0x00, 0x01, // beta A IN
        ];
        let Outcome::Reply(r) = respond(q, "10.0.0.2".parse().unwrap(), &dir(), HOST) else {
            panic!()
        };
        let want: &[u8] = &[
            0x12, 0x34, 0x80, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // header
            0x04, b'b', b'e', b't', b'a', 0x00, 0x00, 0x01, 0x00, 0x01, // question
            0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x04, 10, 0, 0,
            3, // answer
        ];
        assert_eq!(r, want);
    }

    #[test]
    fn mutated_packets_never_panic() {
        let d = dir();
        let seed = query("alpha", RecordType::A).to_vec().unwrap();
        let mut s: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..50_000 {
            let mut p = seed.clone();
            for _ in 0..1 + next() % 4 {
                match next() % 3 {
                    0 if !p.is_empty() => {
                        let at = (next() as usize) % p.len();
                        p[at] = next() as u8;
                    }
                    1 => p.truncate((next() as usize) % (p.len() + 1)),
                    _ => p.push(next() as u8),
                }
            }
            let _ = respond(&p, "10.0.0.3".parse().unwrap(), &d, HOST);
        }
    }
}
