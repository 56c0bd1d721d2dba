//! The DHCPv4 (BOOTP) wire format as a checked view over received bytes, shared by netd's DHCP
//! server and the launcher's DHCP client.
//!
//! Both decode messages with `dhcproto`, which trusts what it reads: `Message::chaddr()` slices
//! by the packet's `hlen`, and some option decoders assert on lengths. So each side first walks
//! the raw bytes here and rebuilds a packet holding only the options it reads, each checked for
//! its length by the caller's own policy, before the decoder sees it.
//!
//! As smoltcp's `wire` modules: field offsets are named in [`field`], [`Packet::new_checked`]
//! checks the length once so that no fixed-field accessor can panic afterwards, and the
//! variable parts (`chaddr` by `hlen`, options by their lengths) are bounds-checked where they
//! are read. Option codes are named in [`opt`].

use std::fmt;
use std::net::Ipv4Addr;

/// Byte offsets of the fixed BOOTP header (RFC 2131 §2, figure 1).
pub mod field {
    /// A run of bytes in the header.
    pub type Field = std::ops::Range<usize>;

    /// Message op code: 1 = BOOTREQUEST, 2 = BOOTREPLY.
    pub const OP: usize = 0;
    /// Hardware address type (1 = Ethernet).
    pub const HTYPE: usize = 1;
    /// Hardware address length.
    pub const HLEN: usize = 2;
    /// Relay hops.
    pub const HOPS: usize = 3;
    /// Transaction ID.
    pub const XID: Field = 4..8;
    /// Seconds since the client began.
    pub const SECS: Field = 8..10;
    /// Flags (the top bit is BROADCAST).
    pub const FLAGS: Field = 10..12;
    /// Client address (when it already has one).
    pub const CIADDR: Field = 12..16;
    /// "Your" address: the one offered or acknowledged.
    pub const YIADDR: Field = 16..20;
    /// Next server (boot).
    pub const SIADDR: Field = 20..24;
    /// Relay agent address.
    pub const GIADDR: Field = 24..28;
    /// Client hardware address, `hlen` bytes of 16.
    pub const CHADDR: Field = 28..44;
    /// Server host name.
    pub const SNAME: Field = 44..108;
    /// Boot file name.
    pub const FILE: Field = 108..236;
    /// The DHCP magic cookie.
    pub const MAGIC: Field = 236..240;
    /// Where the options begin.
    pub const OPTIONS: usize = 240;
}

/// DHCP option codes (RFC 2132) that netspawn reads or writes.
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS_SERVERS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const REQUESTED_ADDRESS: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const CLIENT_ID: u8 = 61;
    /// RFC 4039 (no data).
    pub const RAPID_COMMIT: u8 = 80;
    pub const END: u8 = 255;
}

/// Length of the fixed header, up to and including the magic cookie.
pub const HEADER_LEN: usize = field::OPTIONS;
/// The DHCP magic cookie (99.130.83.99).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The longest hardware address `chaddr` holds.
pub const MAX_HLEN: u8 = 16;
/// `op` of a client's message.
pub const BOOTREQUEST: u8 = 1;
/// `op` of a server's message.
pub const BOOTREPLY: u8 = 2;

/// Why bytes are not a DHCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the fixed header.
    Truncated,
    /// `hlen` is more than `chaddr` holds.
    BadHardwareLength(u8),
    /// No DHCP magic cookie (a plain BOOTP packet, or garbage).
    BadMagic,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => write!(f, "shorter than a BOOTP header"),
            WireError::BadHardwareLength(n) => {
                write!(f, "hardware address length {n} is more than {MAX_HLEN}")
            }
            WireError::BadMagic => write!(f, "no DHCP magic cookie"),
        }
    }
}

impl std::error::Error for WireError {}

/// A read-only view of a DHCP packet. Made by [`Packet::new_checked`], every fixed-field
/// accessor is in bounds; the variable parts return `Option` or stop at the end of the bytes.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    bytes: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Views `bytes` if they hold at least the fixed header. `hlen` and the magic cookie are
    /// checked separately ([`Packet::check_dhcp`]), so a caller can first look at `op`.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Packet<'a>, WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { bytes })
    }

    /// Checks what a DHCP packet must also have: `hlen` ≤ 16 and the magic cookie.
    pub fn check_dhcp(&self) -> Result<(), WireError> {
        if self.hlen() > MAX_HLEN {
            return Err(WireError::BadHardwareLength(self.hlen()));
        }
        if self.field(field::MAGIC) != MAGIC_COOKIE {
            return Err(WireError::BadMagic);
        }
        Ok(())
    }

    /// [`Packet::new_checked`] and [`Packet::check_dhcp`] together.
    pub fn new_dhcp(bytes: &'a [u8]) -> Result<Packet<'a>, WireError> {
        let p = Packet::new_checked(bytes)?;
        p.check_dhcp()?;
        Ok(p)
    }

    fn byte(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(0)
    }

    fn field(&self, f: field::Field) -> &'a [u8] {
        self.bytes.get(f).unwrap_or(&[])
    }

    fn be32(&self, f: field::Field) -> u32 {
        let mut b = [0u8; 4];
        for (d, s) in b.iter_mut().zip(self.field(f)) {
            *d = *s;
        }
        u32::from_be_bytes(b)
    }

    /// The whole packet.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The fixed header, cookie included ([`HEADER_LEN`] bytes).
    pub fn header(&self) -> &'a [u8] {
        self.field(0..HEADER_LEN)
    }

    /// [`BOOTREQUEST`] or [`BOOTREPLY`] (or anything else a sender wrote).
    pub fn op(&self) -> u8 {
        self.byte(field::OP)
    }

    /// Hardware address type.
    pub fn htype(&self) -> u8 {
        self.byte(field::HTYPE)
    }

    /// Hardware address length, as sent (unchecked: see [`Packet::chaddr`]).
    pub fn hlen(&self) -> u8 {
        self.byte(field::HLEN)
    }

    /// Transaction ID.
    pub fn xid(&self) -> u32 {
        self.be32(field::XID)
    }

    /// Flags.
    pub fn flags(&self) -> u16 {
        let f = self.field(field::FLAGS);
        u16::from_be_bytes([
            f.first().copied().unwrap_or(0),
            f.get(1).copied().unwrap_or(0),
        ])
    }

    /// `ciaddr`.
    pub fn ciaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.be32(field::CIADDR))
    }

    /// `yiaddr`.
    pub fn yiaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.be32(field::YIADDR))
    }

    /// `giaddr`.
    pub fn giaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.be32(field::GIADDR))
    }

    /// The client hardware address (`hlen` bytes of `chaddr`); `None` if `hlen` is 0 or more
    /// than 16.
    pub fn chaddr(&self) -> Option<&'a [u8]> {
        let hlen = usize::from(self.hlen());
        if hlen == 0 || hlen > usize::from(MAX_HLEN) {
            return None;
        }
        self.field(field::CHADDR).get(..hlen)
    }

    /// The options, in order (see [`Options`]).
    pub fn options(&self) -> Options<'a> {
        Options {
            rest: self.bytes.get(field::OPTIONS..).unwrap_or(&[]),
            end: None,
        }
    }

    /// The options `keep` wants, each code's pieces concatenated in order (RFC 3396), codes in
    /// order of first appearance, and how the option area ended.
    pub fn join_options(&self, keep: impl Fn(u8) -> bool) -> Joined {
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut it = self.options();
        for (code, data) in it.by_ref() {
            if !keep(code) {
                continue;
            }
            match options.iter_mut().find(|(c, _)| *c == code) {
                Some((_, d)) => d.extend_from_slice(data),
                None => options.push((code, data.to_vec())),
            }
        }
        Joined {
            options,
            end: it.end().unwrap_or(OptionsEnd::Unterminated),
        }
    }
}

/// How the walk over the options stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionsEnd {
    /// At an END option.
    End,
    /// The bytes ran out between options, without an END.
    Unterminated,
    /// An option's code or length said more bytes than there are.
    Truncated,
}

/// Iterator over `(code, data)` of each option, PAD skipped; it stops at END or at the first
/// option that does not fit, and [`Options::end`] says which.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
    end: Option<OptionsEnd>,
}

impl<'a> Options<'a> {
    /// How the walk stopped; `None` while it has not.
    pub fn end(&self) -> Option<OptionsEnd> {
        self.end
    }

    fn stop(&mut self, how: OptionsEnd) -> Option<(u8, &'a [u8])> {
        self.end = Some(how);
        self.rest = &[];
        None
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.end.is_some() {
            return None;
        }
        loop {
            let Some((&code, after)) = self.rest.split_first() else {
                return self.stop(OptionsEnd::Unterminated);
            };
            match code {
                opt::PAD => self.rest = after,
                opt::END => return self.stop(OptionsEnd::End),
                _ => {
                    let Some((&len, body)) = after.split_first() else {
                        return self.stop(OptionsEnd::Truncated);
                    };
                    let len = usize::from(len);
                    let (Some(data), Some(rest)) = (body.get(..len), body.get(len..)) else {
                        return self.stop(OptionsEnd::Truncated);
                    };
                    self.rest = rest;
                    return Some((code, data));
                }
            }
        }
    }
}

/// Options gathered by [`Packet::join_options`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// `(code, data)`, each code once, its pieces concatenated.
    pub options: Vec<(u8, Vec<u8>)>,
    /// How the option area ended.
    pub end: OptionsEnd,
}

/// Builds a packet from `header` (a [`Packet::header`]) and `options`, each written as RFC 3396
/// says (data longer than 255 bytes split into consecutive pieces, empty data as code and a
/// zero length), then END.
pub fn rebuild<'o>(header: &[u8], options: impl IntoIterator<Item = (u8, &'o [u8])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + 64);
    out.extend_from_slice(header);
    for (code, data) in options {
        if data.is_empty() {
            out.extend_from_slice(&[code, 0]);
        }
        for piece in data.chunks(255) {
            out.push(code);
            // chunks(255) makes pieces of at most 255 bytes.
            out.push(u8::try_from(piece.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(piece);
        }
    }
    out.push(opt::END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DISCOVER as busybox udhcpc sends it (header fields as on the wire), then
    /// `options` and nothing else.
    fn discover(options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[..12].copy_from_slice(&[
            1, 1, 6, 0, // op, htype, hlen, hops
            0xde, 0xad, 0xbe, 0xef, // xid
            0, 3, 0x80, 0, // secs, flags (broadcast)
        ]);
        p[12..16].copy_from_slice(&[10, 0, 0, 7]);
        p[16..20].copy_from_slice(&[10, 0, 0, 8]);
        p[24..28].copy_from_slice(&[10, 0, 0, 9]);
        p[28..34].copy_from_slice(&[0x0e, 0x11, 0x22, 0x33, 0x44, 0x55]);
        p[236..240].copy_from_slice(&[99, 130, 83, 99]);
        p.extend_from_slice(options);
        p
    }

    #[test]
    fn golden_header_fields() {
        let bytes = discover(&[53, 1, 1, 255]);
        let p = Packet::new_dhcp(&bytes).unwrap();
        assert_eq!(p.op(), BOOTREQUEST);
        assert_eq!(p.htype(), 1);
        assert_eq!(p.hlen(), 6);
        assert_eq!(p.xid(), 0xdead_beef);
        assert_eq!(p.flags(), 0x8000);
        assert_eq!(p.ciaddr(), Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(p.yiaddr(), Ipv4Addr::new(10, 0, 0, 8));
        assert_eq!(p.giaddr(), Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(p.chaddr(), Some(&[0x0e, 0x11, 0x22, 0x33, 0x44, 0x55][..]));
        assert_eq!(p.header(), &bytes[..HEADER_LEN]);
        assert_eq!(p.options().collect::<Vec<_>>(), vec![(53, &[1u8][..])]);
    }

    #[test]
    fn the_named_offsets_tile_the_header() {
        let runs = [
            field::OP..field::OP + 1,
            field::HTYPE..field::HTYPE + 1,
            field::HLEN..field::HLEN + 1,
            field::HOPS..field::HOPS + 1,
            field::XID,
            field::SECS,
            field::FLAGS,
            field::CIADDR,
            field::YIADDR,
            field::SIADDR,
            field::GIADDR,
            field::CHADDR,
            field::SNAME,
            field::FILE,
            field::MAGIC,
        ];
        let mut at = 0;
        for r in runs {
            assert_eq!(r.start, at, "{r:?}");
            at = r.end;
        }
        assert_eq!(at, field::OPTIONS);
        assert_eq!(field::CHADDR.len(), usize::from(MAX_HLEN));
    }

    #[test]
    fn header_checks_name_what_is_wrong() {
        let good = discover(&[255]);
        assert_eq!(
            Packet::new_checked(&good[..HEADER_LEN - 1]).unwrap_err(),
            WireError::Truncated
        );
        assert!(Packet::new_dhcp(&good[..HEADER_LEN]).is_ok());
        let mut long_hw = good.clone();
        long_hw[field::HLEN] = 17;
        let p = Packet::new_checked(&long_hw).unwrap();
        assert_eq!(p.check_dhcp(), Err(WireError::BadHardwareLength(17)));
        assert_eq!(p.chaddr(), None);
        let mut no_hw = good.clone();
        no_hw[field::HLEN] = 0;
        assert_eq!(Packet::new_dhcp(&no_hw).unwrap().chaddr(), None);
        let mut full_hw = good.clone();
        full_hw[field::HLEN] = 16;
        assert_eq!(
            Packet::new_dhcp(&full_hw).unwrap().chaddr().unwrap().len(),
            16
        );
        let mut bootp = good;
        bootp[field::MAGIC.start] = 0;
        assert_eq!(Packet::new_dhcp(&bootp).unwrap_err(), WireError::BadMagic);
    }

    #[test]
    fn option_walk_table() {
        use OptionsEnd::*;
        type Case<'a> = (&'a [u8], &'a [(u8, &'a [u8])], OptionsEnd);
        let cases: [Case; 9] = [
            (&[], &[], Unterminated),
            (&[255], &[], End),
            (&[0, 0, 255, 1, 4, 1, 2, 3, 4], &[], End),
            (&[53, 1, 5, 0, 54, 0, 255], &[(53, &[5]), (54, &[])], End),
            (&[53, 1, 5], &[(53, &[5])], Unterminated),
            (&[53, 1, 5, 6], &[(53, &[5])], Truncated),
            (&[53, 1, 5, 6, 4, 1, 2], &[(53, &[5])], Truncated),
            (&[53], &[], Truncated),
            (&[0, 0, 0], &[], Unterminated),
        ];
        for (opts, want, end) in cases {
            let bytes = discover(opts);
            let p = Packet::new_dhcp(&bytes).unwrap();
            let mut it = p.options();
            assert_eq!(it.end(), None);
            let got: Vec<_> = it.by_ref().collect();
            assert_eq!(got, want, "{opts:?}");
            assert_eq!(it.end(), Some(end), "{opts:?}");
            assert_eq!(it.next(), None, "stays stopped: {opts:?}");
        }
    }

    #[test]
    fn join_concatenates_pieces_and_keeps_first_order() {
        let bytes = discover(&[
            6, 2, 10, 0, // first half of a DNS server
            53, 1, 3, //
            81, 0, // not wanted
            6, 2, 0, 1, // second half
            12, 0, // empty is kept as empty
            255, 99, 99, // after END: never read
        ]);
        let j = Packet::new_dhcp(&bytes).unwrap().join_options(|c| c != 81);
        assert_eq!(
            j.options,
            vec![(6, vec![10, 0, 0, 1]), (53, vec![3]), (12, vec![])]
        );
        assert_eq!(j.end, OptionsEnd::End);
    }

    #[test]
    fn rebuild_golden_bytes() {
        let bytes = discover(&[]);
        let header = Packet::new_dhcp(&bytes).unwrap().header();
        let long = vec![7u8; 300];
        let out = rebuild(header, [(53, &[1u8][..]), (55, &[][..]), (61, &long[..])]);
        let mut want = bytes[..HEADER_LEN].to_vec();
        want.extend_from_slice(&[53, 1, 1, 55, 0, 61, 255]);
        want.extend_from_slice(&[7; 255]);
        want.extend_from_slice(&[61, 45]);
        want.extend_from_slice(&[7; 45]);
        want.push(255);
        assert_eq!(out, want);
        // And it reads back as written, the long option joined again.
        let j = Packet::new_dhcp(&out).unwrap().join_options(|_| true);
        assert_eq!(
            j.options,
            vec![(53, vec![1]), (55, vec![]), (61, long.clone())]
        );
        assert_eq!(j.end, OptionsEnd::End);
    }

    /// Every prefix and random garbage: no accessor and no walk panics, and every option the
    /// walk yields lies inside the packet.
    #[test]
    fn garbage_never_panics() {
        let good = discover(&[
            53, 1, 1, 61, 7, 1, 14, 17, 34, 51, 68, 85, 12, 3, b'w', b'e', b'b', 255,
        ]);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut inputs: Vec<Vec<u8>> = (0..=good.len()).map(|n| good[..n].to_vec()).collect();
        for _ in 0..5_000 {
            let mut p = if rnd() % 4 == 0 {
                let n = rnd() as usize % 400;
                (0..n).map(|_| rnd() as u8).collect()
            } else {
                good.clone()
            };
            for _ in 0..rnd() % 6 {
                if p.is_empty() {
                    break;
                }
                let at = rnd() as usize % p.len();
                match rnd() % 3 {
                    0 => p[at] = rnd() as u8,
                    1 => p.truncate(at),
                    _ => p.insert(at, rnd() as u8),
                }
            }
            inputs.push(p);
        }
        for bytes in &inputs {
            let Ok(p) = Packet::new_checked(bytes) else {
                assert!(bytes.len() < HEADER_LEN);
                continue;
            };
            let _ = (
                p.op(),
                p.htype(),
                p.xid(),
                p.flags(),
                p.ciaddr(),
                p.yiaddr(),
                p.giaddr(),
            );
            let _ = p.check_dhcp();
            if let Some(hw) = p.chaddr() {
                assert!(!hw.is_empty() && hw.len() <= 16);
            }
            let mut total = HEADER_LEN;
            for (_, data) in p.options() {
                total += 2 + data.len();
                assert!(total <= bytes.len());
            }
            let j = p.join_options(|_| true);
            let again = rebuild(p.header(), j.options.iter().map(|(c, d)| (*c, &d[..])));
            let k = Packet::new_dhcp(&again).map(|q| q.join_options(|_| true));
            if p.check_dhcp().is_ok() {
                let k = k.unwrap();
                assert_eq!(k.options, j.options);
                assert_eq!(k.end, OptionsEnd::End);
            }
        }
    }
}
