//! The registry's hosts view: `<run_dir>/hosts/NAME`, one symbolic link per
//! running machine that has addresses, whose *target text* holds what a
//! resolver needs: `PID ADDR ADDR ...` (the launcher's PID, then the
//! addresses seen inside the machine's network namespace).
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

use std::net::IpAddr;

/// The longest link target a reader accepts and a writer produces (a
/// symlink target is at most `PATH_MAX - 1` bytes).
pub const MAX_TARGET: usize = 4095;

/// The link target for a machine whose launcher is `launcher`: its PID and
/// then the addresses, space-separated. Addresses that would make the target
/// longer than [`MAX_TARGET`] are left out (a hundred IPv6 addresses fit).
pub fn format_target(launcher: u32, addresses: &[IpAddr]) -> String {
    let mut out = launcher.to_string();
    for a in addresses {
        let text = a.to_string();
        if out.len() + 1 + text.len() > MAX_TARGET {
            break;
        }
        out.push(' ');
        out.push_str(&text);
    }
    out
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
    /// address, separated by single spaces. Anything else is `None`, so a
    /// damaged or foreign link never yields a partial answer.
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
            .any(|a| a.is_empty() || a.parse::<IpAddr>().is_err())
        {
            return None;
        }
        Some(Target {
            launcher,
            addresses,
        })
    }

    /// The addresses, in the order the launcher wrote them.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + 'a {
        self.addresses.split(' ').filter_map(|a| a.parse().ok())
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
        let alphabet = b"0123456789 .:abcdef\xff\0/";
        for len in 0..300 {
            let bytes = crate::testgen::picks(&mut state, alphabet, len);
            if let Some(t) = Target::parse(&bytes) {
                assert!(t.launcher > 0);
                let _ = t.addresses().count();
            }
        }
    }
}
