//! The UDP fast path for machine names, without I/O and without allocation
//! per query: a bounds-checked parser for the common request shape (one
//! question, maybe an EDNS OPT record) and a table of ready-made answer
//! records, so that a reply is the request's header and question plus bytes
//! copied from the table.
//!
//! The table is a cache of the general answer logic ([`super::answer`]): it
//! is built by asking [`decide_message`] about every machine name (bare, and
//! under the local domain) and every machine address's reverse name, for A,
//! AAAA and PTR, and keeping the answers it gives. So the fast path can only
//! ever say what the general path would say; whatever it does not recognise
//! exactly ([`answer`] returns `None`) goes to the general path, which also
//! decides what is malformed and counts it.

use netspawn_common::fnv::FnvBuild;
use std::collections::HashMap;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use super::answer::{decide_message, udp_limit, Decision, LocalNames, LOCAL_TTL};
use super::directory::StaticDirectory;

/// Longest name in wire form (RFC 1035 §3.1).
const MAX_NAME: usize = 255;
/// The DNS header.
const HEADER: usize = 12;
/// Query types the table holds answers for.
const QTYPE_A: u16 = 1;
const QTYPE_PTR: u16 = 12;
const QTYPE_AAAA: u16 = 28;
const QTYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// EDNS options the general path's parser interprets (and may reject):
/// a request carrying them takes the general path.
const EDNS_DAU: u16 = 5;
const EDNS_SUBNET: u16 = 8;
/// The OPT record of our replies: root owner, type OPT, our payload size,
/// extended RCODE 0, version 0, no flags, no options (what the general path
/// sends whatever the request's OPT held).
const REPLY_OPT: [u8; 11] = {
    let p = super::answer::EDNS_PAYLOAD.to_be_bytes();
    [0, 0, 41, p[0], p[1], 0, 0, 0, 0, 0, 0]
};

/// A request the fast path understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastQuery {
    /// Where the question (name, type, class) ends in the request.
    question_end: usize,
    /// The question name in wire form, lowercased.
    lower: [u8; MAX_NAME],
    lower_len: usize,
    /// The question type.
    qtype: u16,
    /// The request's EDNS payload size if it carried an OPT record.
    edns_payload: Option<u16>,
}

impl FastQuery {
    /// The lowercased question name in wire form (with its final zero).
    pub fn name(&self) -> &[u8] {
        self.lower.get(..self.lower_len).unwrap_or_default()
    }

    /// The question type.
    pub fn qtype(&self) -> u16 {
        self.qtype
    }

    /// Largest UDP reply the client accepts (as [`Message::max_payload`]).
    pub fn max_payload(&self) -> u16 {
        self.edns_payload.map_or(512, |p| p.max(512))
    }
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    let b = p.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Parses a request of the shape the fast path serves: a standard query
/// (QR=0, OPCODE=0) with exactly one uncompressed question of class IN, no
/// answer or authority records, and at most one additional record, an OPT
/// with a root owner whose options are well-formed and not ones the general
/// parser interprets; nothing after it. `None` for anything else (which may
/// still be a fine request: the general path takes it).
pub fn parse(p: &[u8]) -> Option<FastQuery> {
    let flags = *p.get(2)?;
    // QR must be clear and OPCODE must be QUERY; the other flag bits of a
    // query do not change the answer (the general path ignores them too).
    if flags & 0xf8 != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (be16(p, 4)?, be16(p, 6)?, be16(p, 8)?, be16(p, 10)?);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    let mut at = HEADER;
    let mut len = 0;
    loop {
        let l = usize::from(*p.get(at)?);
        // A pointer (or the reserved label types) in the question: let the
        // general parser deal with it.
        if l & 0xc0 != 0 {
            return None;
        }
        let label = p.get(at..at.checked_add(1 + l)?)?;
        let dst = lower.get_mut(len..len + 1 + l)?;
        for (d, s) in dst.iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        len += 1 + l;
        at += 1 + l;
        if l == 0 {
            break;
        }
    }
    let qtype = be16(p, at)?;
    if be16(p, at + 2)? != CLASS_IN {
        return None;
    }
    let question_end = at + 4;
    let mut edns_payload = None;
    let mut end = question_end;
    if ar == 1 {
        // OPT: root owner, type, class = payload size, TTL, RDLENGTH, RDATA.
        if *p.get(end)? != 0 || be16(p, end + 1)? != QTYPE_OPT {
            return None;
        }
        let payload = be16(p, end + 3)?;
        let rdlen = usize::from(be16(p, end + 9)?);
        let rdata_at = end + 11;
        let rdata = p.get(rdata_at..rdata_at + rdlen)?;
        let mut o = 0;
        while o < rdata.len() {
            let code = be16(rdata, o)?;
            let olen = usize::from(be16(rdata, o + 2)?);
            if code == EDNS_SUBNET || code == EDNS_DAU {
                return None;
            }
            o += 4 + olen;
        }
        if o != rdata.len() {
            return None;
        }
        edns_payload = Some(payload);
        end = rdata_at + rdlen;
    }
    if end != p.len() {
        return None;
    }
    Some(FastQuery {
        question_end,
        lower,
        lower_len: len,
        qtype,
        edns_payload,
    })
}

/// Ready-made answer records for one name and type: owners are compression
/// pointers to the question (offset 12), so the bytes fit any spelling of
/// the name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Answers {
    count: u16,
    /// Records in the authority section (the SOA of a NODATA answer).
    ns_count: u16,
    bytes: Box<[u8]>,
}

/// What the table knows about one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    a: Option<Answers>,
    aaaa: Option<Answers>,
    ptr: Option<Answers>,
}

/// Answers for every machine name and address, precomputed from a
/// directory snapshot; rebuilt when the directory changes, never per query.
#[derive(Debug, Clone, Default)]
pub struct FastTable {
    names: HashMap<Box<[u8]>, Entry, FnvBuild>,
}

impl FastTable {
    /// Builds the table for `dir` under `names` by running the general
    /// answer logic once per name and type.
    pub fn build(dir: &StaticDirectory, names: &LocalNames) -> FastTable {
        let mut table = FastTable::default();
        let mut candidates: Vec<Name> = Vec::new();
        for (machine, addrs) in dir.machines() {
            // `host` depends on the link a query arrives on: never cached
            // (a machine called `host` keeps its PTR answers).
            let named = (machine != super::answer::HOST_NAME)
                .then(|| Name::from_ascii(machine).ok())
                .flatten();
            if let Some(n) = named {
                if let Some(domain) = names.domain_name() {
                    if let Ok(full) = n.clone().append_domain(&domain) {
                        candidates.push(full);
                    }
                }
                candidates.push(n);
            }
            for a in addrs {
                candidates.push(Name::from(*a));
            }
        }
        for mut name in candidates {
            name.set_fqdn(true);
            let name = name.to_lowercase();
            let key = name.to_bytes().ok();
            let Some(key) = key.filter(|k| k.len() <= MAX_NAME) else {
                continue;
            };
            if table.names.contains_key(key.as_slice()) {
                continue;
            }
            let entry = Entry {
                a: precompute(dir, names, &name, RecordType::A),
                aaaa: precompute(dir, names, &name, RecordType::AAAA),
                ptr: precompute(dir, names, &name, RecordType::PTR),
            };
            if entry != Entry::default() {
                table.names.insert(key.into_boxed_slice(), entry);
            }
        }
        table
    }

    /// Number of names with precomputed answers.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn lookup(&self, q: &FastQuery) -> Option<&Answers> {
        let entry = self.names.get(q.name())?;
        match q.qtype {
            QTYPE_A => entry.a.as_ref(),
            QTYPE_AAAA => entry.aaaa.as_ref(),
            QTYPE_PTR => entry.ptr.as_ref(),
            _ => None,
        }
    }
}

/// The general path's answer records for `name`/`qtype`, in our encoding,
/// if it answers authoritatively with NOERROR and only records we can copy.
fn precompute(
    dir: &StaticDirectory,
    names: &LocalNames,
    name: &Name,
    qtype: RecordType,
) -> Option<Answers> {
    let mut req = Message::query();
    req.add_query(Query::query(name.clone(), qtype));
    let Decision::Reply(reply) = decide_message(&req, dir, names) else {
        return None;
    };
    let m = reply.message;
    if m.metadata.response_code != ResponseCode::NoError
        || !m.metadata.authoritative
        || !m.additionals.is_empty()
    {
        return None;
    }
    if !m.authorities.is_empty() {
        return nodata_tail(&m, name);
    }
    let mut bytes = Vec::new();
    for r in &m.answers {
        if r.name != *name || r.ttl != LOCAL_TTL {
            return None;
        }
        let (rtype, rdata): (u16, Vec<u8>) = match &r.data {
            RData::A(a) => (QTYPE_A, a.0.octets().to_vec()),
            RData::AAAA(a) => (QTYPE_AAAA, a.0.octets().to_vec()),
            RData::PTR(p) => (QTYPE_PTR, p.0.to_bytes().ok()?),
            _ => return None,
        };
        bytes.extend_from_slice(&[0xc0, HEADER as u8]);
        bytes.extend_from_slice(&rtype.to_be_bytes());
        bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
        bytes.extend_from_slice(&r.ttl.to_be_bytes());
        bytes.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
        bytes.extend_from_slice(&rdata);
    }
    Some(Answers {
        count: u16::try_from(m.answers.len()).ok()?,
        ns_count: 0,
        bytes: bytes.into_boxed_slice(),
    })
}

/// A NODATA reply's authority section (one SOA) as the general path
/// encodes it, cut from its encoding: every name in it is the question's
/// apex (a suffix of the question as the client spelt it, so a pointer
/// into the question) or a label before it, so the bytes are the same for
/// every spelling of the name, and pointers within them depend only on
/// the question's length, which is the same too.
fn nodata_tail(m: &Message, name: &Name) -> Option<Answers> {
    let [soa] = m.authorities.as_slice() else {
        return None;
    };
    if !m.answers.is_empty() || soa.ttl != LOCAL_TTL || !matches!(soa.data, RData::SOA(_)) {
        return None;
    }
    let bytes = m.to_vec().ok()?;
    let question = HEADER + name.to_bytes().ok()?.len() + 4;
    let tail = bytes.get(question..)?;
    Some(Answers {
        count: 0,
        ns_count: 1,
        bytes: tail.into(),
    })
}

/// Writes the reply to `req` into `out` if the fast path can answer it, and
/// returns its length. `None`: take the general path (not a shape we parse,
/// a name or type not in the table, or a reply that would not fit the
/// client's UDP limit or `out`).
pub fn answer(req: &[u8], table: &FastTable, out: &mut [u8]) -> Option<usize> {
    let q = parse(req)?;
    let ans = table.lookup(&q)?;
    let question = req.get(HEADER..q.question_end)?;
    let opt: &[u8] = if q.edns_payload.is_some() {
        &REPLY_OPT
    } else {
        &[]
    };
    let len = HEADER + question.len() + ans.bytes.len() + opt.len();
    if len > usize::from(udp_limit(q.max_payload())) {
        return None;
    }
    let out = out.get_mut(..len)?;
    let (id, flags) = (req.get(..2)?, req.get(2..4)?);
    // QR, AA, RD as asked / RA, CD as asked, RCODE NOERROR (as the general
    // path's reply to a local name).
    let header = [
        id[0],
        id[1],
        0x84 | (flags[0] & 0x01),
        0x80 | (flags[1] & 0x10),
        0,
        1,
        (ans.count >> 8) as u8,
        ans.count as u8,
        (ans.ns_count >> 8) as u8,
        ans.ns_count as u8,
        0,
        u8::from(!opt.is_empty()),
    ];
    let (h, rest) = out.split_at_mut(HEADER);
    h.copy_from_slice(&header);
    let (qpart, rest) = rest.split_at_mut(question.len());
    qpart.copy_from_slice(question);
    let (apart, opart) = rest.split_at_mut(ans.bytes.len());
    apart.copy_from_slice(&ans.bytes);
    opart.copy_from_slice(opt);
    Some(len)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::dns::answer::{decide, encode_reply};
    use hickory_proto::op::{Edns, MessageType};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

    fn dir() -> StaticDirectory {
        let mut machines = crate::dns::answer::tests::machines();
        // Enough addresses that the A answer does not fit in 512 bytes.
        machines.push((
            "big",
            (0..40u8).map(|i| IpAddr::from([10, 9, 0, i])).collect(),
        ));
        StaticDirectory::new(machines)
    }

    fn query(name: &str, qtype: RecordType, rd: bool, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0xbeef;
        m.metadata.recursion_desired = rd;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    /// The general path's reply bytes, as the UDP loop would send them.
    fn general(p: &[u8], names: &LocalNames) -> Option<Vec<u8>> {
        match decide(p, &dir(), names) {
            Decision::Reply(r) => encode_reply(&r.message, udp_limit(r.max_payload)),
            _ => None,
        }
    }

    fn fast(p: &[u8], table: &FastTable) -> Option<Vec<u8>> {
        let mut out = [0u8; 1500];
        answer(p, table, &mut out).map(|n| out[..n].to_vec())
    }

    /// Whenever the fast path answers, it says exactly what the general path
    /// says, byte for byte.
    fn same_as_general(p: &[u8], table: &FastTable, names: &LocalNames) -> bool {
        match fast(p, table) {
            Some(f) => {
                assert_eq!(Some(&f), general(p, names).as_ref(), "packet {p:02x?}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn table_answers_as_the_general_path_does() {
        let plain = LocalNames::new();
        let dom = LocalNames::with_domain("netspawn").unwrap();
        use RecordType::*;
        // (name, type, names, taken by the fast path)
        let cases: &[(&str, RecordType, &LocalNames, bool)] = &[
            ("web.", A, &plain, true),
            ("web", A, &plain, true),
            ("WeB.", A, &plain, true),
            ("web.", AAAA, &plain, true),
            ("db.", AAAA, &plain, true), // NODATA
            ("DB.", AAAA, &plain, true), // NODATA, the SOA's owner as asked
            ("db.netspawn.", AAAA, &dom, true),
            ("Db.NetSpawn.", AAAA, &dom, true),
            ("3.0.0.10.In-Addr.ARPA.", A, &plain, true),
            ("booting.", A, &plain, true), // NODATA, no address yet
            ("web.", PTR, &plain, true),   // NODATA
            ("web.", ANY, &plain, false),  // the general path's business
            ("web.", MX, &plain, false),   // likewise
            ("web.", AXFR, &plain, false), // refused there
            ("nope.", A, &plain, false),   // NXDOMAIN there
            ("big.", A, &plain, false),    // does not fit: truncated there
            ("big.", AAAA, &plain, true),
            ("web.netspawn.", A, &dom, true),
            ("Web.NetSpawn.", AAAA, &dom, true),
            ("web.", A, &dom, true),
            ("web.netspawn.", A, &plain, false), // forwarded there
            ("netspawn.", A, &dom, false),
            ("2.0.0.10.in-addr.arpa.", PTR, &plain, true),
            ("3.0.0.10.IN-ADDR.ARPA.", PTR, &plain, true),
            ("9.0.0.10.in-addr.arpa.", PTR, &dom, true),
            ("2.0.0.10.in-addr.arpa.", A, &plain, true), // NODATA
            (
                "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.D.F.ip6.arpa.",
                PTR,
                &plain,
                true,
            ),
            ("7.0.0.10.in-addr.arpa.", PTR, &plain, false),
            ("example.test.", A, &plain, false),
        ];
        for &(name, qtype, names, taken) in cases {
            let table = FastTable::build(&dir(), names);
            for rd in [false, true] {
                for edns in [None, Some(100), Some(1232), Some(4096)] {
                    let p = query(name, qtype, rd, edns);
                    let got = same_as_general(&p, &table, names);
                    // A big answer fits with EDNS.
                    let want = taken || (name == "big." && edns.is_some_and(|e| e > 512));
                    assert_eq!(got, want, "{name} {qtype} rd={rd} edns={edns:?}");
                }
            }
        }
    }

    #[test]
    fn flags_and_edns_options() {
        let names = LocalNames::new();
        let table = FastTable::build(&dir(), &names);
        let base = query("web.", RecordType::A, true, None);
        // CD is echoed, AD/Z/AA/TC/RA and a stray RCODE in a query do not
        // change the answer.
        for (b2, b3) in [(0x01, 0x10), (0x07, 0xf0), (0x00, 0x2f), (0x06, 0x80)] {
            let mut p = base.clone();
            p[2] = b2;
            p[3] = b3;
            assert!(same_as_general(&p, &table, &names), "{b2:02x} {b3:02x}");
        }
        // A response or another opcode is never ours.
        for b2 in [0x81, 0x08, 0x10, 0x28] {
            let mut p = base.clone();
            p[2] = b2;
            assert_eq!(fast(&p, &table), None, "{b2:02x}");
        }
        // dig's COOKIE, DO set, a version other than 0, padding: answered
        // with a plain OPT, as the general path does.
        let mut m = Message::from_vec(&query("web.", RecordType::A, true, Some(1232))).unwrap();
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(true);
        e.set_version(1);
        e.options_mut().insert(EdnsOption::Unknown(
            u16::from(EdnsCode::Cookie),
            vec![1, 2, 3, 4, 5, 6, 7, 8],
        ));
        e.options_mut().insert(EdnsOption::Unknown(
            u16::from(EdnsCode::Padding),
            vec![0; 30],
        ));
        m.set_edns(e);
        let p = m.to_vec().unwrap();
        assert!(same_as_general(&p, &table, &names));
        let reply = Message::from_vec(&fast(&p, &table).unwrap()).unwrap();
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert!(reply.metadata.authoritative && reply.metadata.recursion_available);
        assert_eq!(reply.answers.len(), 2);
        assert_eq!(reply.edns.unwrap().max_payload(), 1232);
        // Client subnet: the general path interprets it; not ours.
        let mut m = Message::from_vec(&base).unwrap();
        let mut e = Edns::new();
        e.options_mut().insert(EdnsOption::Unknown(
            u16::from(EdnsCode::Subnet),
            vec![0, 1, 24, 0, 10, 0, 0],
        ));
        m.set_edns(e);
        assert_eq!(fast(&m.to_vec().unwrap(), &table), None);
    }

    #[test]
    fn odd_shapes_take_the_general_path() {
        let names = LocalNames::new();
        let table = FastTable::build(&dir(), &names);
        let good = query("web.", RecordType::A, true, Some(1232));
        assert!(fast(&good, &table).is_some());
        // Every truncation, and trailing bytes.
        for cut in 0..good.len() {
            assert_eq!(fast(&good[..cut], &table), None, "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(fast(&long, &table), None);
        // Counts other than one question and at most one additional.
        for (at, v) in [(5, 0), (5, 2), (7, 1), (9, 1), (11, 2)] {
            let mut p = good.clone();
            p[at] = v;
            assert_eq!(fast(&p, &table), None, "byte {at} = {v}");
        }
        // A compressed question name, a label running past the end, a name
        // longer than 255 bytes, class CH, an additional record that is not
        // OPT, an OPT with a non-root owner or options overrunning it.
        let hdr = [0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let mut ptr = hdr.to_vec();
        ptr.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let mut overrun = hdr.to_vec();
        overrun.extend_from_slice(&[9, b'w', b'e', b'b', 0, 0, 1, 0, 1]);
        let mut huge = hdr.to_vec();
        for _ in 0..5 {
            huge.push(63);
            huge.extend_from_slice(&[b'a'; 63]);
        }
        huge.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut ch = query("web.", RecordType::A, true, None);
        let n = ch.len();
        ch[n - 1] = 3;
        let mut not_opt = query("web.", RecordType::A, true, None);
        not_opt[11] = 1;
        not_opt.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 1, 2, 3, 4]);
        let mut opt_owner = query("web.", RecordType::A, true, None);
        opt_owner[11] = 1;
        opt_owner.extend_from_slice(&[1, b'x', 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        let mut opt_overrun = query("web.", RecordType::A, true, None);
        opt_overrun[11] = 1;
        opt_overrun.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 6, 0, 10, 0, 8, 1, 2]);
        for p in [ptr, overrun, huge, ch, not_opt, opt_owner, opt_overrun] {
            assert_eq!(fast(&p, &table), None, "{p:02x?}");
        }
        // A reply buffer too small is not written past.
        let mut small = [0u8; 20];
        assert_eq!(answer(&good, &table, &mut small), None);
    }

    /// `host` is never answered from the table: its answer depends on
    /// the link a query arrives on (the general path's scope).
    #[test]
    fn host_is_never_cached() {
        let a: IpAddr = "10.0.0.7".parse().unwrap();
        let d = StaticDirectory::new([("host", vec![a])]);
        let names = LocalNames::with_domain("netspawn").unwrap();
        let table = FastTable::build(&d, &names);
        for name in ["host.", "host.netspawn."] {
            assert_eq!(fast(&query(name, RecordType::A, true, None), &table), None);
        }
        // Its reverse name still is.
        assert!(fast(
            &query("7.0.0.10.in-addr.arpa.", RecordType::PTR, true, None),
            &table
        )
        .is_some());
    }

    #[test]
    fn empty_directory_answers_nothing() {
        let table = FastTable::build(&StaticDirectory::default(), &LocalNames::new());
        assert!(table.is_empty());
        assert_eq!(
            fast(&query("web.", RecordType::A, true, None), &table),
            None
        );
        // web, web.netspawn, 3 addresses' reverse names; db, db.netspawn, 1.
        let table = FastTable::build(&dir(), &LocalNames::with_domain("netspawn").unwrap());
        assert_eq!(table.len(), 2 + 3 + 2 + 1 + 2 + 2 + 40);
    }

    /// Random and mutated packets never panic, and whenever the fast path
    /// answers one, the general path gives the same bytes (the fuzz target
    /// checks the same for longer).
    #[test]
    fn mutated_packets_agree_with_the_general_path() {
        let names = LocalNames::with_domain("netspawn").unwrap();
        let table = FastTable::build(&dir(), &names);
        let seeds: Vec<Vec<u8>> = [
            ("web.", RecordType::A, None),
            ("WEB.netspawn.", RecordType::AAAA, Some(1232)),
            ("2.0.0.10.in-addr.arpa.", RecordType::PTR, None),
            ("db.", RecordType::A, Some(4096)),
        ]
        .iter()
        .map(|(n, t, e)| query(n, *t, true, *e))
        .collect();
        let mut s: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut answered = 0;
        for i in 0..100_000 {
            let mut p = seeds[i % seeds.len()].clone();
            for _ in 0..1 + next() % 3 {
                match next() % 4 {
                    0 if !p.is_empty() => {
                        let at = (next() as usize) % p.len();
                        p[at] = next() as u8;
                    }
                    1 if !p.is_empty() => {
                        // Flip one bit: mostly case and flag changes.
                        let at = (next() as usize) % p.len();
                        p[at] ^= 1 << (next() % 8);
                    }
                    2 => p.truncate((next() as usize) % (p.len() + 1)),
                    _ => p.push(next() as u8),
                }
            }
            if same_as_general(&p, &table, &names) {
                answered += 1;
            }
        }
        // The mutations leave many packets answerable: the check bites.
        assert!(answered > 3_000, "{answered}");
    }
}
