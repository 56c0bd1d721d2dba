//! Router solicitations and advertisements on the wire (RFC 4861 §4.1 and
//! §4.2), with the options netd sends or reads: source link-layer address
//! (§4.6.1), prefix information (§4.6.2), MTU (§4.6.4), recursive DNS
//! servers and DNS search list (RFC 8106).
//!
//! As smoltcp's `wire` modules: a typed representation ([`RouterAdvert`],
//! [`RouterSolicit`]) with `parse`, `emit` and `buffer_len`; field offsets
//! as named constants. `parse` checks every length before it reads, so no
//! input can make it panic; a packet it refuses is dropped (and counted) by
//! the caller. The ICMPv6 checksum is left zero: the kernel fills it in for
//! a raw ICMPv6 socket, and checks it on the way in.

use std::net::Ipv6Addr;

use thiserror::Error;

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICIT: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERT: u8 = 134;

/// Offsets in the ICMPv6 message (the IPv6 header is not part of it).
mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    // 2..4: checksum (the kernel's).
    /// RS: 4 reserved bytes, then options.
    pub const RS_OPTIONS: usize = 8;
    pub const RA_HOP_LIMIT: usize = 4;
    pub const RA_FLAGS: usize = 5;
    pub const RA_ROUTER_LIFETIME: usize = 6;
    pub const RA_REACHABLE: usize = 8;
    pub const RA_RETRANS: usize = 12;
    pub const RA_OPTIONS: usize = 16;
}

/// Option types.
mod opt {
    pub const SOURCE_LLADDR: u8 = 1;
    pub const PREFIX_INFO: u8 = 3;
    pub const MTU: u8 = 5;
    pub const RDNSS: u8 = 25;
    pub const DNSSL: u8 = 31;
}

const FLAG_MANAGED: u8 = 0x80;
const FLAG_OTHER: u8 = 0x40;
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTOCONF: u8 = 0x40;

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("too short ({0} bytes)")]
    Truncated(usize),
    #[error("not a router solicitation or advertisement (type {0}, code {1})")]
    NotNdp(u8, u8),
    #[error("option of length zero at offset {0}")]
    ZeroLengthOption(usize),
    #[error("option at offset {0} runs past the end")]
    OptionOverrun(usize),
    #[error("bad {0} option")]
    BadOption(&'static str),
}

/// A default router preference (RFC 4191 §2.2), the RA's Prf bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    Low,
    #[default]
    Medium,
    High,
}

impl Preference {
    fn bits(self) -> u8 {
        match self {
            Preference::High => 0b01 << 3,
            Preference::Medium => 0,
            Preference::Low => 0b11 << 3,
        }
    }

    fn from_bits(flags: u8) -> Preference {
        match (flags >> 3) & 0b11 {
            0b01 => Preference::High,
            0b11 => Preference::Low,
            // 0b10 is reserved and read as medium (RFC 4191 §2.2).
            _ => Preference::Medium,
        }
    }
}

/// A prefix information option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInfo {
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    /// The L flag.
    pub on_link: bool,
    /// The A flag: hosts make addresses from it (SLAAC).
    pub autoconf: bool,
    pub valid_secs: u32,
    pub preferred_secs: u32,
}

/// A router advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterAdvert {
    /// Cur Hop Limit (0: unspecified).
    pub hop_limit: u8,
    pub managed: bool,
    pub other: bool,
    pub preference: Preference,
    /// Router lifetime in seconds (0: not a default router).
    pub router_lifetime: u16,
    pub reachable_ms: u32,
    pub retrans_ms: u32,
    pub source_lladdr: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub prefixes: Vec<PrefixInfo>,
    /// Recursive DNS servers (one option; empty: none), and their lifetime.
    pub rdnss: Vec<Ipv6Addr>,
    pub rdnss_lifetime: u32,
    /// DNS search list (one option; empty: none), and its lifetime.
    pub dnssl: Vec<String>,
    pub dnssl_lifetime: u32,
}

/// A router solicitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouterSolicit {
    pub source_lladdr: Option<[u8; 6]>,
}

/// One option: its type and its bytes (header included).
type Opt<'a> = (u8, &'a [u8]);

/// Walks the options in `buf` from `start`: each one, or the first error.
fn options(buf: &[u8], start: usize) -> Result<Vec<Opt<'_>>, WireError> {
    let mut out = Vec::new();
    let mut at = start;
    while at < buf.len() {
        if buf.len() - at < 2 {
            return Err(WireError::OptionOverrun(at));
        }
        let len = usize::from(buf[at + 1]) * 8;
        if len == 0 {
            return Err(WireError::ZeroLengthOption(at));
        }
        let body = buf.get(at..at + len).ok_or(WireError::OptionOverrun(at))?;
        out.push((buf[at], body));
        at += len;
    }
    Ok(out)
}

fn lladdr(body: &[u8]) -> Result<[u8; 6], WireError> {
    // Ethernet: length 1 (8 bytes), the address in bytes 2..8.
    if body.len() != 8 {
        return Err(WireError::BadOption("source link-layer address"));
    }
    let mut mac = [0; 6];
    mac.copy_from_slice(&body[2..8]);
    Ok(mac)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// The bytes of `name` as DNS labels ending in the root label, or `None`
/// for a name that is not one (an empty label, a label over 63 bytes).
fn encode_name(name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

/// The names of a DNSSL option's body (after its 8-byte header); the
/// padding at the end is zero bytes.
fn decode_names(mut b: &[u8]) -> Result<Vec<String>, WireError> {
    let bad = WireError::BadOption("DNS search list");
    let mut names = Vec::new();
    while !b.is_empty() && b[0] != 0 {
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*b.first().ok_or(bad.clone())?);
            b = &b[1..];
            if len == 0 {
                break;
            }
            if len > 63 || b.len() < len {
                return Err(bad);
            }
            labels.push(String::from_utf8_lossy(&b[..len]).into_owned());
            b = &b[len..];
        }
        names.push(labels.join("."));
    }
    if b.iter().any(|x| *x != 0) {
        return Err(bad);
    }
    Ok(names)
}

impl RouterSolicit {
    /// Parses an ICMPv6 message that must be a router solicitation.
    pub fn parse(buf: &[u8]) -> Result<RouterSolicit, WireError> {
        if buf.len() < field::RS_OPTIONS {
            return Err(WireError::Truncated(buf.len()));
        }
        if buf[field::TYPE] != ROUTER_SOLICIT || buf[field::CODE] != 0 {
            return Err(WireError::NotNdp(buf[field::TYPE], buf[field::CODE]));
        }
        let mut rs = RouterSolicit::default();
        for (ty, body) in options(buf, field::RS_OPTIONS)? {
            if ty == opt::SOURCE_LLADDR {
                rs.source_lladdr = Some(lladdr(body)?);
            }
        }
        Ok(rs)
    }

    /// The message's length.
    pub fn buffer_len(&self) -> usize {
        field::RS_OPTIONS + if self.source_lladdr.is_some() { 8 } else { 0 }
    }

    /// The message (checksum zero: the kernel's).
    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0; field::RS_OPTIONS];
        b[field::TYPE] = ROUTER_SOLICIT;
        if let Some(mac) = self.source_lladdr {
            b.extend_from_slice(&[opt::SOURCE_LLADDR, 1]);
            b.extend_from_slice(&mac);
        }
        b
    }
}

impl RouterAdvert {
    /// The message's length.
    pub fn buffer_len(&self) -> usize {
        let mut n = field::RA_OPTIONS;
        n += self.source_lladdr.map_or(0, |_| 8);
        n += self.mtu.map_or(0, |_| 8);
        n += 32 * self.prefixes.len();
        if !self.rdnss.is_empty() {
            n += 8 + 16 * self.rdnss.len();
        }
        if let Some(names) = self.dnssl_bytes() {
            n += 8 + names.len().div_ceil(8) * 8;
        }
        n
    }

    /// The encoded search list, or `None` if there is none to send (names
    /// that cannot be encoded are left out).
    fn dnssl_bytes(&self) -> Option<Vec<u8>> {
        let b: Vec<u8> = self
            .dnssl
            .iter()
            .filter_map(|n| encode_name(n))
            .flatten()
            .collect();
        // An option is at most 255 units of 8 bytes.
        (!b.is_empty() && 8 + b.len() <= 255 * 8).then_some(b)
    }

    /// The message (checksum zero: the kernel's).
    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0; field::RA_OPTIONS];
        b[field::TYPE] = ROUTER_ADVERT;
        b[field::RA_HOP_LIMIT] = self.hop_limit;
        b[field::RA_FLAGS] = (if self.managed { FLAG_MANAGED } else { 0 })
            | (if self.other { FLAG_OTHER } else { 0 })
            | self.preference.bits();
        b[field::RA_ROUTER_LIFETIME..field::RA_ROUTER_LIFETIME + 2]
            .copy_from_slice(&self.router_lifetime.to_be_bytes());
        b[field::RA_REACHABLE..field::RA_REACHABLE + 4]
            .copy_from_slice(&self.reachable_ms.to_be_bytes());
        b[field::RA_RETRANS..field::RA_RETRANS + 4].copy_from_slice(&self.retrans_ms.to_be_bytes());
        if let Some(mac) = self.source_lladdr {
            b.extend_from_slice(&[opt::SOURCE_LLADDR, 1]);
            b.extend_from_slice(&mac);
        }
        if let Some(mtu) = self.mtu {
            b.extend_from_slice(&[opt::MTU, 1, 0, 0]);
            b.extend_from_slice(&mtu.to_be_bytes());
        }
        for p in &self.prefixes {
            let flags = (if p.on_link { PREFIX_ON_LINK } else { 0 })
                | (if p.autoconf { PREFIX_AUTOCONF } else { 0 });
            b.extend_from_slice(&[opt::PREFIX_INFO, 4, p.prefix_len, flags]);
            b.extend_from_slice(&p.valid_secs.to_be_bytes());
            b.extend_from_slice(&p.preferred_secs.to_be_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&p.prefix.octets());
        }
        if !self.rdnss.is_empty() {
            b.extend_from_slice(&[opt::RDNSS, (1 + 2 * self.rdnss.len()) as u8, 0, 0]);
            b.extend_from_slice(&self.rdnss_lifetime.to_be_bytes());
            for a in &self.rdnss {
                b.extend_from_slice(&a.octets());
            }
        }
        if let Some(names) = self.dnssl_bytes() {
            let units = 1 + names.len().div_ceil(8);
            b.extend_from_slice(&[opt::DNSSL, units as u8, 0, 0]);
            b.extend_from_slice(&self.dnssl_lifetime.to_be_bytes());
            let end = b.len() + (units - 1) * 8;
            b.extend_from_slice(&names);
            b.resize(end, 0);
        }
        b
    }

    /// Parses an ICMPv6 message that must be a router advertisement.
    /// Unknown options are skipped (RFC 4861 §4.6); a known option of the
    /// wrong size refuses the packet.
    pub fn parse(buf: &[u8]) -> Result<RouterAdvert, WireError> {
        if buf.len() < field::RA_OPTIONS {
            return Err(WireError::Truncated(buf.len()));
        }
        if buf[field::TYPE] != ROUTER_ADVERT || buf[field::CODE] != 0 {
            return Err(WireError::NotNdp(buf[field::TYPE], buf[field::CODE]));
        }
        let flags = buf[field::RA_FLAGS];
        let mut ra = RouterAdvert {
            hop_limit: buf[field::RA_HOP_LIMIT],
            managed: flags & FLAG_MANAGED != 0,
            other: flags & FLAG_OTHER != 0,
            preference: Preference::from_bits(flags),
            router_lifetime: u16::from_be_bytes([
                buf[field::RA_ROUTER_LIFETIME],
                buf[field::RA_ROUTER_LIFETIME + 1],
            ]),
            reachable_ms: be32(buf, field::RA_REACHABLE),
            retrans_ms: be32(buf, field::RA_RETRANS),
            ..RouterAdvert::default()
        };
        for (ty, body) in options(buf, field::RA_OPTIONS)? {
            match ty {
                opt::SOURCE_LLADDR => ra.source_lladdr = Some(lladdr(body)?),
                opt::MTU => {
                    if body.len() != 8 {
                        return Err(WireError::BadOption("MTU"));
                    }
                    ra.mtu = Some(be32(body, 4));
                }
                opt::PREFIX_INFO => {
                    if body.len() != 32 || body[2] > 128 {
                        return Err(WireError::BadOption("prefix information"));
                    }
                    ra.prefixes.push(PrefixInfo {
                        prefix_len: body[2],
                        on_link: body[3] & PREFIX_ON_LINK != 0,
                        autoconf: body[3] & PREFIX_AUTOCONF != 0,
                        valid_secs: be32(body, 4),
                        preferred_secs: be32(body, 8),
                        prefix: addr_at(body, 16),
                    });
                }
                opt::RDNSS => {
                    if body.len() < 24 || (body.len() - 8) % 16 != 0 {
                        return Err(WireError::BadOption("recursive DNS server"));
                    }
                    ra.rdnss_lifetime = be32(body, 4);
                    ra.rdnss
                        .extend((8..body.len()).step_by(16).map(|at| addr_at(body, at)));
                }
                opt::DNSSL => {
                    if body.len() < 16 {
                        return Err(WireError::BadOption("DNS search list"));
                    }
                    ra.dnssl_lifetime = be32(body, 4);
                    ra.dnssl.extend(decode_names(&body[8..])?);
                }
                _ => {}
            }
        }
        Ok(ra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn sample() -> RouterAdvert {
        RouterAdvert {
            hop_limit: 64,
            managed: false,
            other: true,
            preference: Preference::High,
            router_lifetime: 1800,
            reachable_ms: 0,
            retrans_ms: 0,
            source_lladdr: Some([0x02, 0, 0, 0, 0, 0x01]),
            mtu: Some(1500),
            prefixes: vec![PrefixInfo {
                prefix: a("fd12:3456:789a:1::"),
                prefix_len: 64,
                on_link: true,
                autoconf: true,
                valid_secs: 3600,
                preferred_secs: 1800,
            }],
            rdnss: vec![a("fd12:3456:789a:1::1")],
            rdnss_lifetime: 3600,
            dnssl: vec!["lab.netspawn".into()],
            dnssl_lifetime: 3600,
        }
    }

    /// The sample, byte by byte as RFC 4861/8106 lay it out.
    const GOLDEN: &[u8] = &[
        // type, code, checksum, hop limit, flags (O, Prf=high), lifetime
        134, 0, 0, 0, 64, 0x48, 0x07, 0x08, //
        0, 0, 0, 0, 0, 0, 0, 0, // reachable, retrans
        1, 1, 0x02, 0, 0, 0, 0, 0x01, // source link-layer address
        5, 1, 0, 0, 0, 0, 0x05, 0xdc, // MTU 1500
        3, 4, 64, 0xc0, 0, 0, 0x0e, 0x10, // prefix: /64, L and A, valid 3600
        0, 0, 0x07, 0x08, 0, 0, 0, 0, // preferred 1800, reserved
        0xfd, 0x12, 0x34, 0x56, 0x78, 0x9a, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, //
        25, 3, 0, 0, 0, 0, 0x0e, 0x10, // RDNSS, lifetime 3600
        0xfd, 0x12, 0x34, 0x56, 0x78, 0x9a, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, //
        31, 3, 0, 0, 0, 0, 0x0e, 0x10, // DNSSL, lifetime 3600
        3, b'l', b'a', b'b', 8, b'n', b'e', b't', b's', b'p', b'a', b'w', b'n', 0, 0, 0, //
    ];

    #[test]
    fn golden_bytes_round_trip() {
        let ra = sample();
        let b = ra.emit();
        assert_eq!(b, GOLDEN);
        assert_eq!(ra.buffer_len(), b.len());
        assert_eq!(RouterAdvert::parse(&b).unwrap(), ra);
        // A minimal one: the header only.
        let bare = RouterAdvert::default();
        assert_eq!(bare.emit().len(), 16);
        assert_eq!(RouterAdvert::parse(&bare.emit()).unwrap(), bare);
    }

    #[test]
    fn solicitations_round_trip() {
        for rs in [
            RouterSolicit::default(),
            RouterSolicit {
                source_lladdr: Some([2, 3, 4, 5, 6, 7]),
            },
        ] {
            let b = rs.emit();
            assert_eq!(b.len(), rs.buffer_len());
            assert_eq!(RouterSolicit::parse(&b).unwrap(), rs);
        }
        assert_eq!(RouterSolicit::default().emit(), [133, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn malformed_packets_are_refused() {
        let rs = RouterSolicit {
            source_lladdr: Some([2; 6]),
        }
        .emit();
        let table: Vec<(Vec<u8>, WireError)> = vec![
            (vec![], WireError::Truncated(0)),
            (rs[..7].to_vec(), WireError::Truncated(7)),
            (
                [&[134u8, 0, 0, 0, 0, 0, 0, 0][..]].concat(),
                WireError::NotNdp(134, 0),
            ),
            (
                [&rs[..1], &[1u8], &rs[2..]].concat(),
                WireError::NotNdp(133, 1),
            ),
            (
                [&rs[..8], &[1u8, 0, 0, 0, 0, 0, 0, 0]].concat(),
                WireError::ZeroLengthOption(8),
            ),
            (
                [&rs[..8], &[1u8, 2, 0, 0, 0, 0, 0, 0]].concat(),
                WireError::OptionOverrun(8),
            ),
            ([&rs[..], &[7u8]].concat(), WireError::OptionOverrun(16)),
            (
                [&rs[..8], &[1u8, 2], &[0; 14]].concat(),
                WireError::BadOption("source link-layer address"),
            ),
        ];
        for (bytes, want) in table {
            assert_eq!(RouterSolicit::parse(&bytes), Err(want), "{bytes:?}");
        }
        let ra = sample().emit();
        // Every truncation and every single-byte change: refused or parsed,
        // never a panic.
        for n in 0..ra.len() {
            let _ = RouterAdvert::parse(&ra[..n]);
            let _ = RouterSolicit::parse(&ra[..n]);
            for v in [0u8, 1, 0x3f, 0x80, 0xff] {
                let mut b = ra.clone();
                b[n] = v;
                let _ = RouterAdvert::parse(&b);
            }
        }
        // A prefix option of the wrong length.
        let mut bad = ra[..16].to_vec();
        bad.extend_from_slice(&[3, 1, 64, 0, 0, 0, 0, 0]);
        assert_eq!(
            RouterAdvert::parse(&bad),
            Err(WireError::BadOption("prefix information"))
        );
        // Unknown options are skipped.
        let mut unknown = ra[..16].to_vec();
        unknown.extend_from_slice(&[200, 1, 9, 9, 9, 9, 9, 9]);
        assert_eq!(RouterAdvert::parse(&unknown).unwrap().hop_limit, 64);
    }

    #[test]
    fn search_list_encoding() {
        assert_eq!(encode_name("a.b").unwrap(), [1, b'a', 1, b'b', 0]);
        assert_eq!(encode_name("a.b.").unwrap(), [1, b'a', 1, b'b', 0]);
        assert_eq!(encode_name("a..b"), None);
        assert_eq!(encode_name(&"x".repeat(64)), None);
        let mut ra = sample();
        ra.dnssl = vec!["one.example".into(), "bad..name".into(), "two".into()];
        let back = RouterAdvert::parse(&ra.emit()).unwrap();
        assert_eq!(back.dnssl, ["one.example", "two"]);
        ra.dnssl.clear();
        let b = ra.emit();
        assert_eq!(b.len(), ra.buffer_len());
        assert!(RouterAdvert::parse(&b).unwrap().dnssl.is_empty());
        assert_eq!(
            decode_names(&[1, b'a', 0, 0, 5]),
            Err(WireError::BadOption("DNS search list"))
        );
        assert_eq!(
            decode_names(&[9, b'a']),
            Err(WireError::BadOption("DNS search list"))
        );
    }
}
