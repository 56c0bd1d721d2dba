//! Which of a machine's addresses the module hands out, and in which form.
//!
//! The registry lists the routable addresses seen inside the machine's
//! network namespace; these are the ones reachable from the host by
//! address alone (loopback, unspecified and multicast addresses do not name
//! the machine, and a stray link-local one without its scope is useless).
//! IPv6 link-local addresses come separately, with the host-side interface
//! index, and only `gethostbyname4_r` hands them out (see
//! `lookup::Found`).

use std::ffi::c_int;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address family a lookup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Both (gethostbyname4_r / getaddrinfo with AF_UNSPEC).
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

impl Family {
    /// Maps a C address family; `None` for families the module cannot serve.
    pub fn from_af(af: c_int) -> Option<Family> {
        match af {
            libc::AF_UNSPEC => Some(Family::Any),
            libc::AF_INET => Some(Family::V4),
            libc::AF_INET6 => Some(Family::V6),
            _ => None,
        }
    }

    fn admits(self, addr: &IpAddr) -> bool {
        matches!(
            (self, addr),
            (Family::Any, _) | (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

fn v4_usable(a: &Ipv4Addr) -> bool {
    !(a.is_link_local()
        || a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || a.is_broadcast())
}

fn v6_usable(a: &Ipv6Addr) -> bool {
    let seg0 = a.segments()[0];
    // fe80::/10 is link-local unicast.
    let link_local = seg0 & 0xffc0 == 0xfe80;
    !(link_local || a.is_loopback() || a.is_unspecified() || a.is_multicast())
}

/// True if the address may be handed out for a machine (whatever the family).
pub fn is_usable(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => v4_usable(a),
        IpAddr::V6(a) => v6_usable(a),
    }
}

/// The addresses of `all` to answer with for `family`, in registry order,
/// without duplicates.
pub fn select<'a>(all: impl IntoIterator<Item = &'a IpAddr>, family: Family) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for a in all {
        if family.admits(a) && is_usable(a) && !out.contains(a) {
            out.push(*a);
        }
    }
    out
}

/// The C address family of an address.
pub fn af_of(addr: &IpAddr) -> c_int {
    match addr {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    }
}

/// Size in bytes of an address of the C family `af` (`in_addr` / `in6_addr`).
pub fn af_len(af: c_int) -> Option<usize> {
    match af {
        libc::AF_INET => Some(4),
        libc::AF_INET6 => Some(16),
        _ => None,
    }
}

/// The address in network byte order; IPv4 fills the first 4 bytes.
pub fn octets(addr: &IpAddr) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            let [b0, b1, b2, b3] = a.octets();
            out[0] = b0;
            out[1] = b1;
            out[2] = b2;
            out[3] = b3;
            (out, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

/// Reads an address of family `af` from `len` bytes (gethostbyaddr's input).
pub fn from_octets(af: c_int, bytes: &[u8]) -> Option<IpAddr> {
    match (af, bytes.len()) {
        (libc::AF_INET, 4) => {
            let b: [u8; 4] = bytes.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        (libc::AF_INET6, 16) => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn link_local_loopback_and_friends_are_excluded() {
        let all = ips(&[
            "169.254.3.4",
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "10.0.0.2",
            "fe80::1",
            "febf::1",
            "::1",
            "::",
            "ff02::1",
            "fd00::2",
            "2001:db8::7",
            "fec0::1",
        ]);
        assert_eq!(
            select(&all, Family::Any),
            ips(&["10.0.0.2", "fd00::2", "2001:db8::7", "fec0::1"])
        );
    }

    #[test]
    fn family_filter_keeps_registry_order_and_drops_duplicates() {
        let all = ips(&["fd00::2", "10.0.0.2", "192.168.1.9", "10.0.0.2", "fd00::3"]);
        assert_eq!(select(&all, Family::V4), ips(&["10.0.0.2", "192.168.1.9"]));
        assert_eq!(select(&all, Family::V6), ips(&["fd00::2", "fd00::3"]));
        assert_eq!(
            select(&all, Family::Any),
            ips(&["fd00::2", "10.0.0.2", "192.168.1.9", "fd00::3"])
        );
        assert!(select(&[], Family::Any).is_empty());
    }

    #[test]
    fn families_and_octets() {
        assert_eq!(Family::from_af(libc::AF_UNSPEC), Some(Family::Any));
        assert_eq!(Family::from_af(libc::AF_INET6), Some(Family::V6));
        assert_eq!(Family::from_af(libc::AF_UNIX), None);
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let (b, n) = octets(&a);
        assert_eq!((&b[..n], af_of(&a)), (&[10u8, 1, 2, 3][..], libc::AF_INET));
        assert_eq!(from_octets(libc::AF_INET, &b[..4]), Some(a));
        assert_eq!(from_octets(libc::AF_INET, &b[..3]), None);
        assert_eq!(from_octets(libc::AF_INET6, &b[..4]), None);
        let six: IpAddr = "fd00::2".parse().unwrap();
        let (b6, n6) = octets(&six);
        assert_eq!(n6, 16);
        assert_eq!(from_octets(libc::AF_INET6, &b6), Some(six));
        assert_eq!(af_len(libc::AF_INET6), Some(16));
        assert_eq!(af_len(libc::AF_UNIX), None);
    }
}
