//! The DNS answer logic, without I/O: a request packet (or parsed message)
//! goes in, a [`Decision`] comes out — a reply to send, a query to forward
//! upstream, or a reason to drop the packet. Forwarded queries come back
//! through [`forwarded_reply`]. Everything here is pure and table-tested.
//!
//! Naming policy (kept deliberately small):
//! - a machine `web` answers to `web` and, if a local domain is configured
//!   (netd's is [`DEFAULT_DOMAIN`], `netspawn`), to `web.netspawn` and to
//!   `web.ZONE.netspawn` (the search domain a zone's DHCP hands out, see
//!   [`super::search`]); case never matters, the question is echoed as asked;
//! - `host` (and `host.netspawn`, `host.ZONE.netspawn`) is the host: the
//!   host's addresses on the link the query arrived on (the `host` slice the
//!   caller passes, as podman's `host.containers.internal`). It wins over a
//!   machine called `host`, so no machine can take the gateway's name;
//! - an unknown single-label name, or any unknown name under the local
//!   domain, is NXDOMAIN here and never leaks upstream (as dnsmasq's
//!   `domain-needed`);
//! - a name that exists without records of the asked type is NODATA
//!   (NOERROR, no answer) with an SOA in the authority section (RFC 2308,
//!   RFC 8020), never NXDOMAIN; only records of the asked type are given,
//!   each address once;
//! - `in-addr.arpa` / `ip6.arpa` names of machine addresses get PTR answers;
//! - everything else is forwarded, unless the caller says the link must not
//!   reach upstream ([`Scope::internal`]): then it is REFUSED here.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::directory::MachineDirectory;

/// TTL of answers about machines: short, since machines come and go.
pub const LOCAL_TTL: u32 = 5;
/// The EDNS UDP payload size we advertise and honour at most (the DNS flag
/// day 2020 value, which avoids IP fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;
/// A DNS message over UDP without EDNS.
pub const PLAIN_UDP_PAYLOAD: u16 = 512;
/// The local domain netd serves: machines are also `NAME.netspawn`, and a
/// zone's search domain is `ZONE.netspawn`. `.netspawn` is not a delegated
/// top-level domain, so it never shadows a real name.
pub const DEFAULT_DOMAIN: &str = "netspawn";
/// The name of the host as seen from a machine.
pub const HOST_NAME: &str = "host";

/// What the answer depends on besides the question: where the query came
/// from. The default (no host addresses, forwarding allowed) is what a
/// caller that knows nothing of the arrival gets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The host's addresses on the link the query arrived on: the answer to
    /// `host`. Empty: `host` is an ordinary name.
    pub host: &'a [IpAddr],
    /// The link is an internal one: names that are not ours are REFUSED,
    /// never forwarded upstream.
    pub internal: bool,
    /// The zones served and their subnets (by lowercase zone name), so
    /// that `NAME.ZONE.DOMAIN` is only a machine that has an address on
    /// ZONE. `None`: not known, any machine answers under any zone label.
    pub zones: Option<&'a Zones>,
}

/// Zones by lowercase name, with the subnets of their bridges.
pub type Zones = std::collections::HashMap<String, Vec<ipnetwork::IpNetwork>>;

/// Local naming settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalNames {
    /// Optional domain under which machines are also known (`web.DOMAIN`),
    /// lowercase labels.
    domain: Vec<Vec<u8>>,
}

impl LocalNames {
    /// Machines known by their bare names only.
    pub fn new() -> LocalNames {
        LocalNames::default()
    }

    /// Machines also known as `NAME.domain` (e.g. `"netspawn"`). Returns
    /// `None` if `domain` is not a valid DNS name.
    pub fn with_domain(domain: &str) -> Option<LocalNames> {
        let name = Name::from_ascii(domain.trim_end_matches('.')).ok()?;
        if name.is_root() {
            return None;
        }
        Some(LocalNames {
            domain: name.iter().map(|l| l.to_ascii_lowercase()).collect(),
        })
    }

    /// The local domain as a name, if there is one.
    pub(crate) fn domain_name(&self) -> Option<Name> {
        if self.domain.is_empty() {
            return None;
        }
        let mut n = Name::from_labels(self.domain.iter().map(|l| l.as_slice())).ok()?;
        n.set_fqdn(true);
        Some(n)
    }
}

/// Why a packet was dropped without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a DNS message (too short, bad lengths, bad names...).
    Malformed,
    /// A response, not a query: answering responses invites reflection loops.
    NotAQuery,
}

/// A query to ask upstream; keep it to build the reply with
/// [`forwarded_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The request's header fields.
    pub metadata: Metadata,
    /// The question, as the client spelt it.
    pub query: Query,
    /// Whether the request carried EDNS (the reply must then carry it too).
    pub edns: bool,
    /// Largest UDP reply the client accepts.
    pub max_payload: u16,
}

/// A reply made here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The message to send.
    pub message: Message,
    /// Largest UDP reply the client accepts.
    pub max_payload: u16,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this reply.
    Reply(Reply),
    /// Ask upstream, then reply with [`forwarded_reply`].
    Forward(Forward),
    /// Send nothing.
    Drop(DropReason),
}

/// What upstream said about a forwarded query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAnswer {
    /// Records answering the question (a CNAME chain included).
    Records(Vec<Record>),
    /// The name exists but has no record of this type.
    NoData(Option<Record>),
    /// The name does not exist.
    NxDomain(Option<Record>),
    /// Upstream answered with this error code (REFUSED, SERVFAIL...): the
    /// client is told the same.
    Code(ResponseCode),
    /// No usable answer (timeout, no upstream configured...).
    Failed,
}

/// Decides what to do with one request packet.
pub fn decide(packet: &[u8], dir: &dyn MachineDirectory, names: &LocalNames) -> Decision {
    decide_in(packet, dir, names, Scope::default())
}

/// As [`decide`], for a query that arrived where `scope` says.
pub fn decide_in(
    packet: &[u8],
    dir: &dyn MachineDirectory,
    names: &LocalNames,
    scope: Scope<'_>,
) -> Decision {
    match Message::from_vec(packet) {
        Ok(msg) => decide_message_in(&msg, dir, names, scope),
        Err(_) => Decision::Drop(DropReason::Malformed),
    }
}

/// Decides what to do with a parsed request.
pub fn decide_message(req: &Message, dir: &dyn MachineDirectory, names: &LocalNames) -> Decision {
    decide_message_in(req, dir, names, Scope::default())
}

/// As [`decide_message`], for a query that arrived where `scope` says.
pub fn decide_message_in(
    req: &Message,
    dir: &dyn MachineDirectory,
    names: &LocalNames,
    scope: Scope<'_>,
) -> Decision {
    if req.metadata.message_type != MessageType::Query {
        return Decision::Drop(DropReason::NotAQuery);
    }
    let reply = |message| {
        Decision::Reply(Reply {
            message,
            max_payload: req.max_payload(),
        })
    };
    if req.metadata.op_code != OpCode::Query {
        return reply(error_reply(req, ResponseCode::NotImp));
    }
    let [query] = req.queries.as_slice() else {
        return reply(error_reply(req, ResponseCode::FormErr));
    };
    if query.query_class() != DNSClass::IN {
        return reply(error_reply(req, ResponseCode::Refused));
    }
    if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
        return reply(error_reply(req, ResponseCode::Refused));
    }
    match local_answer(query, dir, names, scope) {
        Some(local) => reply(local_reply(req, query, local)),
        // An internal link never reaches upstream (CVE-2024-29018 class).
        None if scope.internal => reply(error_reply(req, ResponseCode::Refused)),
        None => Decision::Forward(Forward {
            metadata: req.metadata,
            query: query.clone(),
            edns: req.edns.is_some(),
            max_payload: req.max_payload(),
        }),
    }
}

/// The reply to a forwarded query, given what upstream said.
pub fn forwarded_reply(fwd: &Forward, upstream: UpstreamAnswer) -> Message {
    let mut msg = reply_skeleton(&fwd.metadata, Some(&fwd.query), fwd.edns);
    match upstream {
        UpstreamAnswer::Records(records) => msg.answers = records,
        UpstreamAnswer::NoData(soa) => msg.authorities.extend(soa),
        UpstreamAnswer::NxDomain(soa) => {
            msg.metadata.response_code = ResponseCode::NXDomain;
            msg.authorities.extend(soa);
        }
        UpstreamAnswer::Code(code) => msg.metadata.response_code = code,
        UpstreamAnswer::Failed => msg.metadata.response_code = ResponseCode::ServFail,
    }
    msg
}

/// Encodes a reply for a transport that takes at most `limit` bytes; a reply
/// that does not fit is sent without records and with TC set, so the client
/// retries over TCP. `None` if the message cannot be encoded at all.
pub fn encode_reply(msg: &Message, limit: u16) -> Option<Vec<u8>> {
    let bytes = msg.to_vec().ok()?;
    if bytes.len() <= usize::from(limit) {
        return Some(bytes);
    }
    msg.truncate().to_vec().ok()
}

/// The UDP size limit for a reply to a request that allowed `max_payload`.
pub fn udp_limit(max_payload: u16) -> u16 {
    max_payload.clamp(PLAIN_UDP_PAYLOAD, EDNS_PAYLOAD)
}

/// A locally known answer.
#[derive(Debug, PartialEq, Eq)]
enum Local {
    /// The name is ours; these records answer it.
    Records(Vec<Record>),
    /// The name is ours but has no record of the asked type: NODATA with
    /// the SOA of this apex.
    NoData(Name),
    /// The name is ours to know and does not exist; the SOA of the apex,
    /// when there is one to give (a name under the local domain).
    NxDomain(Option<Name>),
}

impl Local {
    /// Records, or NODATA when there are none.
    fn records(records: Vec<Record>, apex: Name) -> Local {
        if records.is_empty() {
            Local::NoData(apex)
        } else {
            Local::Records(records)
        }
    }
}

/// Lowercase labels of `name` if every byte may appear in a machine name.
fn host_labels(name: &Name) -> Option<Vec<Vec<u8>>> {
    name.iter()
        .map(|l| {
            if l.is_empty()
                || !l
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            {
                None
            } else {
                Some(l.to_ascii_lowercase())
            }
        })
        .collect()
}

fn local_answer(
    query: &Query,
    dir: &dyn MachineDirectory,
    names: &LocalNames,
    scope: Scope<'_>,
) -> Option<Local> {
    let host = scope.host;
    let qname = query.name();
    let qtype = query.query_type();
    if let Some(labels) = host_labels(qname) {
        let (machine, in_domain) = if !names.domain.is_empty()
            && labels.len() >= names.domain.len()
            && labels[labels.len() - names.domain.len()..] == names.domain[..]
        {
            (&labels[..labels.len() - names.domain.len()], true)
        } else {
            (&labels[..], false)
        };
        // The apex of a NODATA answer: the local domain for names under
        // it; a bare name is the apex of itself (a single-label name has no
        // parent zone we could speak for).
        // Spelt as in the question (its last labels), so that the reply
        // compresses it into a pointer whatever case the client used.
        let apex = || {
            let mut apex = if in_domain {
                qname.trim_to(names.domain.len())
            } else {
                qname.clone()
            };
            apex.set_fqdn(true);
            apex
        };
        if in_domain && machine.is_empty() {
            // The local domain itself exists but holds no data.
            return Some(Local::NoData(apex()));
        }
        // `host`, `host.DOMAIN` and `host.ZONE.DOMAIN`: the host.
        let is_host = match machine {
            [m] => m.as_slice() == HOST_NAME.as_bytes(),
            [m, _zone] => in_domain && m.as_slice() == HOST_NAME.as_bytes(),
            _ => false,
        };
        if is_host && !host.is_empty() {
            let records = address_records(qname, qtype, host);
            return Some(Local::records(records, apex()));
        }
        if !machine.is_empty() {
            let key = join_labels(machine);
            // `NAME.ZONE.DOMAIN`: the machine NAME (a zone's search domain).
            let zoned = match machine {
                [m, _zone] if in_domain && !dir.exists(&key) => {
                    Some(join_labels(std::slice::from_ref(m)))
                }
                _ => None,
            };
            // ...if NAME is on ZONE, when the zones are known.
            let on_zone = match (&zoned, machine, scope.zones) {
                (Some(m), [_, zone], Some(zones)) => zones
                    .get(String::from_utf8_lossy(zone).as_ref())
                    .is_some_and(|nets| {
                        dir.addresses(m)
                            .iter()
                            .any(|a| nets.iter().any(|n| n.contains(*a)))
                    }),
                _ => true,
            };
            let key = zoned.unwrap_or(key);
            if on_zone && dir.exists(&key) {
                let records = address_records(qname, qtype, &dir.addresses(&key));
                return Some(Local::records(records, apex()));
            }
            if in_domain {
                return Some(Local::NxDomain(Some(apex())));
            }
            if machine.len() == 1 {
                return Some(Local::NxDomain(None));
            }
        }
    }
    // Reverse names of machine addresses.
    let net = qname.parse_arpa_name().ok()?;
    let addr = net.addr();
    let full = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if net.prefix_len() != full {
        return None;
    }
    let machine = dir.name_of(addr)?;
    if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
        let mut apex = qname.clone();
        apex.set_fqdn(true);
        return Some(Local::NoData(apex));
    }
    let mut target = Name::from_ascii(&machine).ok()?;
    if let Some(domain) = names.domain_name() {
        target = target.append_domain(&domain).ok()?;
    }
    target.set_fqdn(true);
    Some(Local::Records(vec![Record::from_rdata(
        qname.clone(),
        LOCAL_TTL,
        RData::PTR(PTR(target)),
    )]))
}

fn join_labels(labels: &[Vec<u8>]) -> String {
    labels
        .iter()
        .map(|l| String::from_utf8_lossy(l))
        .collect::<Vec<_>>()
        .join(".")
}

/// The records of the asked type for `addrs`, each address once, in order.
pub(crate) fn address_records(owner: &Name, qtype: RecordType, addrs: &[IpAddr]) -> Vec<Record> {
    let mut seen: Vec<IpAddr> = Vec::with_capacity(addrs.len());
    let mut out = Vec::new();
    for a in addrs {
        if seen.contains(a) {
            continue;
        }
        seen.push(*a);
        out.extend(address_record(owner, qtype, *a));
    }
    out
}

/// The SOA of a local apex, for negative answers: its minimum (the
/// negative-caching TTL, RFC 2308) is [`LOCAL_TTL`], since machines come and
/// go.
pub(crate) fn soa_record(apex: &Name) -> Record {
    let mut apex = apex.clone();
    apex.set_fqdn(true);
    let host = |label: &str| {
        Name::from_ascii(label)
            .and_then(|n| n.append_domain(&apex))
            .unwrap_or_else(|_| apex.clone())
    };
    Record::from_rdata(
        apex.clone(),
        LOCAL_TTL,
        RData::SOA(SOA::new(
            host("netd"),
            host("hostmaster"),
            1,
            3600,
            600,
            86400,
            LOCAL_TTL,
        )),
    )
}

fn address_record(owner: &Name, qtype: RecordType, addr: IpAddr) -> Option<Record> {
    let data = match (qtype, addr) {
        (RecordType::A | RecordType::ANY, IpAddr::V4(a)) => RData::A(A(a)),
        (RecordType::AAAA | RecordType::ANY, IpAddr::V6(a)) => RData::AAAA(AAAA(a)),
        _ => return None,
    };
    Some(Record::from_rdata(owner.clone(), LOCAL_TTL, data))
}

fn reply_skeleton(req: &Metadata, query: Option<&Query>, edns: bool) -> Message {
    let mut msg = Message::response(req.id, req.op_code);
    msg.metadata = Metadata::response_from_request(req);
    msg.metadata.recursion_available = true;
    msg.queries.extend(query.cloned());
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        msg.set_edns(e);
    }
    msg
}

fn local_reply(req: &Message, query: &Query, local: Local) -> Message {
    let mut msg = reply_skeleton(&req.metadata, Some(query), req.edns.is_some());
    msg.metadata.authoritative = true;
    match local {
        Local::Records(records) => msg.answers = records,
        Local::NoData(apex) => msg.authorities.push(soa_record(&apex)),
        Local::NxDomain(apex) => {
            msg.metadata.response_code = ResponseCode::NXDomain;
            msg.authorities.extend(apex.as_ref().map(soa_record));
        }
    }
    msg
}

fn error_reply(req: &Message, code: ResponseCode) -> Message {
    // Echo the question only when there is exactly one: it is then known good.
    let query = match req.queries.as_slice() {
        [q] => Some(q),
        _ => None,
    };
    let mut msg = reply_skeleton(&req.metadata, query, req.edns.is_some());
    msg.metadata.response_code = code;
    msg
}

#[cfg(test)]
pub(crate) mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::dns::directory::StaticDirectory;

    /// The machines the answer tests (and the fast path's) know: two with
    /// addresses, one still without.
    pub(crate) fn machines() -> Vec<(&'static str, Vec<IpAddr>)> {
        vec![
            (
                "web",
                vec![
                    "10.0.0.2".parse().unwrap(),
                    "fd00::2".parse().unwrap(),
                    "10.0.0.3".parse().unwrap(),
                ],
            ),
            ("db", vec!["10.0.0.9".parse().unwrap()]),
            ("booting", vec![]),
        ]
    }

    fn dir() -> StaticDirectory {
        StaticDirectory::new(machines())
    }

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m
    }

    fn ask(name: &str, qtype: RecordType, names: &LocalNames) -> Decision {
        let bytes = query(name, qtype).to_vec().unwrap();
        decide(&bytes, &dir(), names)
    }

    fn reply(d: Decision) -> Message {
        match d {
            Decision::Reply(r) => r.message,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn rdata(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn local_names_table() {
        let plain = LocalNames::new();
        let dom = LocalNames::with_domain("netspawn.").unwrap();
        use RecordType::*;
        // (name, type, names, rcode, answers)
        let cases: &[(&str, RecordType, &LocalNames, ResponseCode, &[&str])] = &[
            (
                "web",
                A,
                &plain,
                ResponseCode::NoError,
                &["10.0.0.2", "10.0.0.3"],
            ),
            (
                "web.",
                A,
                &plain,
                ResponseCode::NoError,
                &["10.0.0.2", "10.0.0.3"],
            ),
            (
                "WeB.",
                A,
                &plain,
                ResponseCode::NoError,
                &["10.0.0.2", "10.0.0.3"],
            ),
            ("web.", AAAA, &plain, ResponseCode::NoError, &["fd00::2"]),
            (
                "web.",
                ANY,
                &plain,
                ResponseCode::NoError,
                &["10.0.0.2", "fd00::2", "10.0.0.3"],
            ),
            // A known machine without that type: NODATA, not NXDOMAIN.
            ("db.", AAAA, &plain, ResponseCode::NoError, &[]),
            ("db.", MX, &plain, ResponseCode::NoError, &[]),
            ("booting.", A, &plain, ResponseCode::NoError, &[]),
            ("nope.", A, &plain, ResponseCode::NXDomain, &[]),
            ("NOPE", AAAA, &plain, ResponseCode::NXDomain, &[]),
            (
                "web.netspawn.",
                A,
                &dom,
                ResponseCode::NoError,
                &["10.0.0.2", "10.0.0.3"],
            ),
            (
                "Web.NetSpawn.",
                AAAA,
                &dom,
                ResponseCode::NoError,
                &["fd00::2"],
            ),
            (
                "web.",
                A,
                &dom,
                ResponseCode::NoError,
                &["10.0.0.2", "10.0.0.3"],
            ),
            ("nope.netspawn.", A, &dom, ResponseCode::NXDomain, &[]),
            ("a.b.netspawn.", A, &dom, ResponseCode::NXDomain, &[]),
            ("netspawn.", A, &dom, ResponseCode::NoError, &[]),
            (
                "2.0.0.10.in-addr.arpa.",
                PTR,
                &plain,
                ResponseCode::NoError,
                &["web."],
            ),
            (
                "3.0.0.10.IN-ADDR.ARPA.",
                PTR,
                &plain,
                ResponseCode::NoError,
                &["web."],
            ),
            (
                "9.0.0.10.in-addr.arpa.",
                PTR,
                &dom,
                ResponseCode::NoError,
                &["db.netspawn."],
            ),
            (
                "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
                PTR,
                &plain,
                ResponseCode::NoError,
                &["web."],
            ),
            (
                "2.0.0.10.in-addr.arpa.",
                A,
                &plain,
                ResponseCode::NoError,
                &[],
            ),
        ];
        for (name, qtype, names, rcode, answers) in cases {
            let m = reply(ask(name, *qtype, names));
            assert_eq!(m.metadata.response_code, *rcode, "{name} {qtype}");
            assert_eq!(rdata(&m), *answers, "{name} {qtype}");
            assert!(m.metadata.authoritative, "{name}");
            assert_eq!(m.metadata.id, 4242);
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
            // The question is echoed as the client spelt it.
            assert_eq!(
                m.queries[0].name().to_string().trim_end_matches('.'),
                name.trim_end_matches('.')
            );
            for r in &m.answers {
                assert_eq!(r.ttl, LOCAL_TTL);
            }
        }
    }

    fn ask_in(name: &str, qtype: RecordType, names: &LocalNames, scope: Scope<'_>) -> Message {
        let bytes = query(name, qtype).to_vec().unwrap();
        let m = reply(decide_in(&bytes, &dir(), names, scope));
        // Through the wire and back, as a client sees it.
        Message::from_vec(&m.to_vec().unwrap()).unwrap()
    }

    fn soa_owner(m: &Message) -> Option<String> {
        match m.authorities.as_slice() {
            [r] if matches!(r.data, RData::SOA(_)) => Some(r.name.to_string()),
            [] => None,
            other => panic!("unexpected authority section {other:?}"),
        }
    }

    /// RFC 2308 / 8020: a name that exists without the asked type is
    /// NODATA with the SOA of its apex; a name under the domain that does
    /// not exist is NXDOMAIN with the domain's SOA.
    #[test]
    fn negative_answers_carry_an_soa() {
        let dom = LocalNames::with_domain("netspawn").unwrap();
        let none = Scope::default();
        use RecordType::*;
        // (name, type, rcode, SOA owner)
        let cases: &[(&str, RecordType, ResponseCode, Option<&str>)] = &[
            ("db.", AAAA, ResponseCode::NoError, Some("db.")),
            ("DB.", MX, ResponseCode::NoError, Some("DB.")),
            ("booting.", A, ResponseCode::NoError, Some("booting.")),
            (
                "db.netspawn.",
                AAAA,
                ResponseCode::NoError,
                Some("netspawn."),
            ),
            (
                "db.lab.NetSpawn.",
                TXT,
                ResponseCode::NoError,
                Some("NetSpawn."),
            ),
            ("netspawn.", A, ResponseCode::NoError, Some("netspawn.")),
            (
                "nope.netspawn.",
                A,
                ResponseCode::NXDomain,
                Some("netspawn."),
            ),
            ("nope.", A, ResponseCode::NXDomain, None),
            (
                "2.0.0.10.in-addr.arpa.",
                A,
                ResponseCode::NoError,
                Some("2.0.0.10.in-addr.arpa."),
            ),
            ("web.", A, ResponseCode::NoError, None),
        ];
        for &(name, qtype, rcode, owner) in cases {
            let m = ask_in(name, qtype, &dom, none);
            assert_eq!(m.metadata.response_code, rcode, "{name} {qtype}");
            assert_eq!(soa_owner(&m).as_deref(), owner, "{name} {qtype}");
            if owner.is_some() {
                assert!(m.answers.is_empty(), "{name} {qtype}");
                let RData::SOA(soa) = &m.authorities[0].data else {
                    unreachable!()
                };
                assert_eq!(soa.minimum, LOCAL_TTL);
            }
        }
    }

    /// Only the asked type, each address once, whatever the directory
    /// holds twice.
    #[test]
    fn exactly_the_asked_type_once() {
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        let b: IpAddr = "fd00::5".parse().unwrap();
        let d = StaticDirectory::new([("twice", vec![a, b, a, b]), ("Twice", vec![a])]);
        let names = LocalNames::new();
        for (qtype, want) in [
            (RecordType::A, vec!["10.0.0.5"]),
            (RecordType::AAAA, vec!["fd00::5"]),
            (RecordType::ANY, vec!["10.0.0.5", "fd00::5"]),
        ] {
            let bytes = query("twice.", qtype).to_vec().unwrap();
            let m = reply(decide(&bytes, &d, &names));
            assert_eq!(rdata(&m), want, "{qtype}");
            for r in &m.answers {
                if qtype != RecordType::ANY {
                    assert_eq!(r.record_type(), qtype);
                }
            }
        }
    }

    /// `host` is the host's address on the arrival link; zone names find
    /// machines; an internal link refuses what is not ours.
    #[test]
    fn host_zones_and_internal_links() {
        let dom = LocalNames::with_domain("netspawn").unwrap();
        let host: &[IpAddr] = &["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let scope = Scope {
            host,
            internal: false,
            zones: None,
        };
        for name in ["host.", "HOST.", "host.netspawn.", "host.lab.netspawn."] {
            let m = ask_in(name, RecordType::A, &dom, scope);
            assert_eq!(rdata(&m), ["10.0.0.1"], "{name}");
            let m = ask_in(name, RecordType::AAAA, &dom, scope);
            assert_eq!(rdata(&m), ["fd00::1"], "{name}");
            let m = ask_in(name, RecordType::MX, &dom, scope);
            assert!(m.answers.is_empty() && soa_owner(&m).is_some(), "{name}");
        }
        // Without an arrival link, `host` is an ordinary (unknown) name.
        let m = ask_in("host.", RecordType::A, &dom, Scope::default());
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // A machine by its zone's search domain.
        let m = ask_in("web.lab.netspawn.", RecordType::A, &dom, scope);
        assert_eq!(rdata(&m), ["10.0.0.2", "10.0.0.3"]);
        let m = ask_in("nope.lab.netspawn.", RecordType::A, &dom, scope);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // With the zones known: only a machine on that zone.
        let zones: Zones = [
            ("lab".to_string(), vec!["10.0.0.0/28".parse().unwrap()]),
            ("other".to_string(), vec!["10.9.0.0/24".parse().unwrap()]),
        ]
        .into_iter()
        .collect();
        let zoned = Scope {
            zones: Some(&zones),
            ..scope
        };
        let m = ask_in("web.lab.netspawn.", RecordType::AAAA, &dom, zoned);
        assert_eq!(rdata(&m), ["fd00::2"]);
        for name in ["web.other.netspawn.", "web.nozone.netspawn."] {
            let m = ask_in(name, RecordType::A, &dom, zoned);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
        // `host` under any zone label is still the host.
        let m = ask_in("host.other.netspawn.", RecordType::A, &dom, zoned);
        assert_eq!(rdata(&m), ["10.0.0.1"]);
        // Internal: local names as ever, nothing forwarded.
        let internal = Scope {
            host,
            internal: true,
            zones: None,
        };
        let m = ask_in("web.", RecordType::A, &dom, internal);
        assert_eq!(rdata(&m), ["10.0.0.2", "10.0.0.3"]);
        let m = ask_in("example.test.", RecordType::A, &dom, internal);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        let bytes = query("example.test.", RecordType::A).to_vec().unwrap();
        assert!(matches!(
            decide_in(&bytes, &dir(), &dom, scope),
            Decision::Forward(_)
        ));
    }

    #[test]
    fn other_names_are_forwarded() {
        for (name, qtype) in [
            ("example.test.", RecordType::A),
            ("web.example.", RecordType::A),
            ("7.2.0.192.in-addr.arpa.", RecordType::PTR),
            ("0.10.in-addr.arpa.", RecordType::PTR),
            ("xn--bcher-kva.example.", RecordType::AAAA),
            (".", RecordType::NS),
        ] {
            match ask(name, qtype, &LocalNames::new()) {
                Decision::Forward(f) => {
                    assert_eq!(f.query.name(), &Name::from_str(name).unwrap());
                    assert_eq!(f.query.query_type(), qtype);
                    assert_eq!(f.metadata.id, 4242);
                }
                other => panic!("{name}: expected forward, got {other:?}"),
            }
        }
    }

    #[test]
    fn forwarded_replies() {
        let Decision::Forward(f) = ask("example.test.", RecordType::A, &LocalNames::new()) else {
            panic!("not forwarded")
        };
        let rec = Record::from_rdata(
            Name::from_str("example.test.").unwrap(),
            60,
            RData::A(A("192.0.2.7".parse().unwrap())),
        );
        let m = forwarded_reply(&f, UpstreamAnswer::Records(vec![rec]));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(rdata(&m), ["192.0.2.7"]);
        assert!(!m.metadata.authoritative);
        let m = forwarded_reply(&f, UpstreamAnswer::NxDomain(None));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = forwarded_reply(&f, UpstreamAnswer::NoData(None));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = forwarded_reply(&f, UpstreamAnswer::Failed);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        let m = forwarded_reply(&f, UpstreamAnswer::Code(ResponseCode::Refused));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn bad_requests() {
        let names = LocalNames::new();
        // Garbage, truncation, empty.
        assert_eq!(
            decide(b"", &dir(), &names),
            Decision::Drop(DropReason::Malformed)
        );
        assert_eq!(
            decide(&[0xff; 7], &dir(), &names),
            Decision::Drop(DropReason::Malformed)
        );
        let good = query("web.", RecordType::A).to_vec().unwrap();
        for cut in 0..good.len() {
            assert_eq!(
                decide(&good[..cut], &dir(), &names),
                Decision::Drop(DropReason::Malformed),
                "cut at {cut}"
            );
        }
        // A response is never answered.
        let mut resp = query("web.", RecordType::A);
        resp.metadata.message_type = MessageType::Response;
        assert_eq!(
            decide(&resp.to_vec().unwrap(), &dir(), &names),
            Decision::Drop(DropReason::NotAQuery)
        );
        // Two questions: FORMERR; no question: FORMERR.
        let mut two = query("web.", RecordType::A);
        two.add_query(Query::query(Name::from_str("db.").unwrap(), RecordType::A));
        let m = reply(decide(&two.to_vec().unwrap(), &dir(), &names));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.queries.is_empty());
        let mut none = query("web.", RecordType::A);
        none.queries.clear();
        let m = reply(decide(&none.to_vec().unwrap(), &dir(), &names));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // Not a query opcode.
        let mut upd = query("web.", RecordType::A);
        upd.metadata.op_code = OpCode::Update;
        let m = reply(decide(&upd.to_vec().unwrap(), &dir(), &names));
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        // Zone transfers and other classes.
        let m = reply(ask("web.", RecordType::AXFR, &names));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        let mut ch = query("version.bind.", RecordType::TXT);
        ch.queries[0].set_query_class(DNSClass::CH);
        let m = reply(decide(&ch.to_vec().unwrap(), &dir(), &names));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn edns_is_echoed_and_udp_truncates() {
        let mut q = query("web.", RecordType::A);
        let mut e = Edns::new();
        e.set_max_payload(4096);
        q.set_edns(e);
        let m = reply(decide(&q.to_vec().unwrap(), &dir(), &LocalNames::new()));
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
        assert_eq!(udp_limit(4096), EDNS_PAYLOAD);
        assert_eq!(udp_limit(100), PLAIN_UDP_PAYLOAD);

        // A forwarded answer too large for plain UDP is truncated.
        let Decision::Forward(f) = ask("big.example.", RecordType::A, &LocalNames::new()) else {
            panic!("not forwarded")
        };
        let records = (0..64u8)
            .map(|i| {
                Record::from_rdata(
                    Name::from_str("big.example.").unwrap(),
                    60,
                    RData::A(A([192, 0, 2, i].into())),
                )
            })
            .collect();
        let m = forwarded_reply(&f, UpstreamAnswer::Records(records));
        let bytes = encode_reply(&m, udp_limit(f.max_payload)).unwrap();
        assert!(bytes.len() <= 512);
        let back = Message::from_vec(&bytes).unwrap();
        assert!(back.metadata.truncation);
        assert_eq!(back.metadata.id, 4242);
        assert!(back.answers.is_empty());
        let full = encode_reply(&m, u16::MAX).unwrap();
        assert_eq!(Message::from_vec(&full).unwrap().answers.len(), 64);
    }

    /// Random and mutated packets never panic (the fuzz target runs the same
    /// path longer).
    #[test]
    fn mutated_packets_never_panic() {
        let names = LocalNames::with_domain("netspawn").unwrap();
        let d = dir();
        let seeds: Vec<Vec<u8>> = [
            ("web.", RecordType::A),
            ("2.0.0.10.in-addr.arpa.", RecordType::PTR),
            ("x.netspawn.", RecordType::AAAA),
        ]
        .iter()
        .map(|(n, t)| query(n, *t).to_vec().unwrap())
        .collect();
        // xorshift: deterministic, no extra dependency.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for i in 0..100_000 {
            let mut p = seeds[i % seeds.len()].clone();
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                match next() % 3 {
                    0 if !p.is_empty() => {
                        let at = (next() as usize) % p.len();
                        p[at] = next() as u8;
                    }
                    1 => p.truncate((next() as usize) % (p.len() + 1)),
                    _ => p.push(next() as u8),
                }
            }
            if let Decision::Reply(r) = decide(&p, &d, &names) {
                let _ = encode_reply(&r.message, udp_limit(r.max_payload));
            }
        }
    }
}
