//! The registry's hosts view: `<run_dir>/hosts/NAME`, one symbolic link per
//! running machine that has addresses, whose *target text* holds what a
//! resolver needs: `PID ADDR ADDR ... LLADDR%IFINDEX ...` (the launcher's
//! PID, then the routable addresses seen inside the machine's network
//! namespace, then its IPv6 link-local addresses, each with the index of the
//! host-side link it is reached through).
//!
//! Why links and not files: the NSS module answers host lookups inside every
//! program on the host, so its cost is on the path of each `getaddrinfo`. A
//! link's target is read with one `readlink` (no descriptor, no `open`,
//! `read` and `close`), a third of the cost of reading a small file, and a
//! missing name costs one failed path lookup. systemd keeps small per-unit
//! facts in link targets under `/run/systemd/units/` for the same reason.
//!
//! [`crate::registry::Registry`] keeps the view in step with the entries: the
//! link is written after the entry (temporary link + rename, so readers see
//! the old target or the new one) and removed before it, so a stopped
//! machine disappears from name lookups first. Like the entries, the links
//! are untrusted input for readers: [`Target::parse`] never panics, and a
//! target that does not parse reads as "no such machine".

use std::net::{IpAddr, Ipv6Addr};

/// The longest link target a reader accepts and a writer produces (a
/// symlink target is at most `PATH_MAX - 1` bytes).
pub const MAX_TARGET: usize = 4095;

/// The link target for a machine whose launcher is `launcher`: its PID and
/// then the addresses, space-separated. Addresses that would make the target
/// longer than [`MAX_TARGET`] are left out (a hundred IPv6 addresses fit).
pub fn format_target(launcher: u32, addresses: &[IpAddr]) -> String {
    format_target_scoped(launcher, addresses, &[])
}

/// [`format_target`] with the machine's IPv6 link-local addresses after
/// the routable ones, as `ADDR%IFINDEX` (see [`format_scoped`]). Pairs that
/// [`parse_scoped`] would refuse are left out, so the target always parses.
pub fn format_target_scoped(
    launcher: u32,
    addresses: &[IpAddr],
    link_local: &[(Ipv6Addr, u32)],
) -> String {
    let mut out = launcher.to_string();
    let scoped = link_local
        .iter()
        .filter(|(a, i)| scoped_is_valid(a, *i))
        .map(|&(a, i)| format_scoped(a, i));
    for text in addresses.iter().map(IpAddr::to_string).chain(scoped) {
        if out.len() + 1 + text.len() > MAX_TARGET {
            break;
        }
        out.push(' ');
        out.push_str(&text);
    }
    out
}

/// True for an IPv6 link-local unicast address (fe80::/10).
pub fn is_ipv6_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// True if `(addr, ifindex)` may be written: a link-local address and an
/// interface index the kernel can have (1 to `i32::MAX`).
fn scoped_is_valid(addr: &Ipv6Addr, ifindex: u32) -> bool {
    is_ipv6_link_local(addr) && (1..=i32::MAX as u32).contains(&ifindex)
}

/// A link-local address with its interface index, `fe80::1%5` (the index,
/// not the name: names change and are not unique across namespaces).
pub fn format_scoped(addr: Ipv6Addr, ifindex: u32) -> String {
    format!("{addr}%{ifindex}")
}

/// Parses `ADDR%IFINDEX` strictly: a link-local IPv6 address, `%`, and a
/// decimal index from 1 to `i32::MAX` without sign or leading zero.
pub fn parse_scoped(text: &str) -> Option<(Ipv6Addr, u32)> {
    let (addr, index) = text.split_once('%')?;
    if index.is_empty()
        || index.len() > 10
        || index.starts_with('0')
        || !index.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let addr: Ipv6Addr = addr.parse().ok()?;
    let index: u32 = index.parse().ok()?;
    scoped_is_valid(&addr, index).then_some((addr, index))
}

/// A parsed link target, borrowing the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// PID of the launcher that owns the machine (never 0).
    pub launcher: u32,
    addresses: &'a str,
}

impl<'a> Target<'a> {
    /// Parses a link target: a PID (1 to `i32::MAX`) and at least one
    /// address, separated by single spaces; an address is a plain one or a
    /// link-local one with its index ([`parse_scoped`]). Anything else is
    /// `None`, so a damaged or foreign link never yields a partial answer.
    pub fn parse(bytes: &'a [u8]) -> Option<Target<'a>> {
        if bytes.len() > MAX_TARGET {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let (pid, addresses) = text.split_once(' ')?;
        if pid.is_empty() || pid.len() > 10 || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let launcher: u32 = pid.parse().ok()?;
        if launcher == 0 || launcher > i32::MAX as u32 {
            return None;
        }
        if addresses
            .split(' ')
            .any(|a| a.is_empty() || (a.parse::<IpAddr>().is_err() && parse_scoped(a).is_none()))
        {
            return None;
        }
        Some(Target {
            launcher,
            addresses,
        })
    }

    /// The addresses without a scope, in the order the launcher wrote them.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + 'a {
        self.addresses.split(' ').filter_map(|a| a.parse().ok())
    }

    /// The link-local addresses with their host-side interface index.
    pub fn scoped(&self) -> impl Iterator<Item = (Ipv6Addr, u32)> + 'a {
        self.addresses.split(' ').filter_map(parse_scoped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn round_trip() {
        let addrs = ips(&["10.0.0.2", "fd00::2", "fe80::1"]);
        let text = format_target(4242, &addrs);
        assert_eq!(text, "4242 10.0.0.2 fd00::2 fe80::1");
        let t = Target::parse(text.as_bytes()).unwrap();
        assert_eq!(t.launcher, 4242);
        assert_eq!(t.addresses().collect::<Vec<_>>(), addrs);
    }

    #[test]
    fn link_local_addresses_carry_their_index() {
        let ll: Ipv6Addr = "fe80::2c:1ff:fe02:304".parse().unwrap();
        let text = format_target_scoped(
            7,
            &ips(&["10.0.0.2", "fd00::2"]),
            &[(ll, 12), ("fd00::9".parse().unwrap(), 3), (ll, 0)],
        );
        assert_eq!(text, "7 10.0.0.2 fd00::2 fe80::2c:1ff:fe02:304%12");
        let t = Target::parse(text.as_bytes()).unwrap();
        assert_eq!(
            t.addresses().collect::<Vec<_>>(),
            ips(&["10.0.0.2", "fd00::2"])
        );
        assert_eq!(t.scoped().collect::<Vec<_>>(), vec![(ll, 12)]);
        assert_eq!(
            parse_scoped("fe80::1%2147483647"),
            Some(("fe80::1".parse().unwrap(), i32::MAX as u32))
        );
        for bad in [
            "fe80::1%",
            "fe80::1%0",
            "fe80::1%01",
            "fe80::1%+1",
            "fe80::1%-1",
            "fe80::1%2147483648",
            "fe80::1%99999999999",
            "fe80::1%ve-web",
            "fe80::1%1%1",
            "fd00::1%3",
            "10.0.0.1%3",
            "::1%1",
            "ff02::1%1",
            "%3",
            "fe80::1 %3",
        ] {
            assert_eq!(parse_scoped(bad), None, "{bad}");
            assert_eq!(Target::parse(format!("1 {bad}").as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn too_many_addresses_are_cut_to_fit() {
        let addrs: Vec<IpAddr> = (0..200u16)
            .map(|i| {
                format!("fd00:1111:2222:3333:4444:5555:6666:{i:x}")
                    .parse()
                    .unwrap()
            })
            .collect();
        let text = format_target(i32::MAX as u32, &addrs);
        assert!(text.len() <= MAX_TARGET);
        let t = Target::parse(text.as_bytes()).unwrap();
        let got: Vec<IpAddr> = t.addresses().collect();
        assert!(got.len() >= 100, "{}", got.len());
        assert_eq!(got[..], addrs[..got.len()]);
    }

    #[test]
    fn malformed_targets_are_refused() {
        let long = format!("1 {}", "1.2.3.4 ".repeat(600));
        for bad in [
            &b""[..],
            b"42",
            b"42 ",
            b"0 10.0.0.1",
            b"-1 10.0.0.1",
            b"+1 10.0.0.1",
            b"2147483648 10.0.0.1",
            b"99999999999 10.0.0.1",
            b"1 10.0.0.1  10.0.0.2",
            b"1 10.0.0.1 ",
            b"1 10.0.0.300",
            b"1 web",
            b"1 10.0.0.1\n",
            b"\xff\xfe 10.0.0.1",
            b"1 10.0.0.1\0",
            long.as_bytes(),
        ] {
            assert_eq!(
                Target::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Target::parse(b"2147483647 ::1").is_some());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"0123456789 .:abcdef%\xff\0/";
        for len in 0..300 {
            let bytes = crate::testgen::picks(&mut state, alphabet, len);
            if let Some(t) = Target::parse(&bytes) {
                assert!(t.launcher > 0);
                let _ = t.addresses().count();
                assert!(t.scoped().all(|(a, i)| is_ipv6_link_local(&a) && i > 0));
            }
        }
    }
}
