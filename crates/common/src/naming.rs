//! Interface names and MAC addresses, exactly as systemd-nspawn makes them,
//! so existing networkd configurations and scripts keep working:
//!
//! - a host-side name longer than the kernel's 15 bytes keeps its first 11
//!   bytes and gets 4 characters of a keyed SipHash-2-4 of the full name
//!   (systemd's `shorten_ifname()`, naming scheme v250 and later);
//! - MACs are SipHash-2-4 of the host's machine ID followed by the machine
//!   name (and an index for extra links), keyed per link role, with the
//!   locally-administered bit set and the multicast bit cleared
//!   (systemd's `generate_mac()`), so a restarted machine gets the same MAC
//!   and therefore the same DHCP lease.

use crate::names::IFNAME_MAX;

/// A 128-bit hash key (the bytes of systemd's `SD_ID128_MAKE(...)`).
pub type HashKey = [u8; 16];

pub const HOST_HASH_KEY: HashKey = [
    0x1a, 0x37, 0x6f, 0xc7, 0x46, 0xec, 0x45, 0x0b, 0xad, 0xa3, 0xd5, 0x31, 0x06, 0x60, 0x5d, 0xb1,
];
pub const CONTAINER_HASH_KEY: HashKey = [
    0xc3, 0xc4, 0xf9, 0x19, 0xb5, 0x57, 0xb2, 0x1c, 0xe6, 0xcf, 0x14, 0x27, 0x03, 0x9c, 0xee, 0xa2,
];
pub const VETH_EXTRA_HOST_HASH_KEY: HashKey = [
    0x48, 0xc7, 0xf6, 0xb7, 0xea, 0x9d, 0x4c, 0x9e, 0xb7, 0x28, 0xd4, 0xde, 0x91, 0xd5, 0xbf, 0x66,
];
pub const VETH_EXTRA_CONTAINER_HASH_KEY: HashKey = [
    0xaf, 0x50, 0x17, 0x61, 0xce, 0xf9, 0x4d, 0x35, 0x84, 0x0d, 0x2b, 0x20, 0x54, 0xbe, 0xce, 0x59,
];
pub const MACVLAN_HASH_KEY: HashKey = [
    0x00, 0x13, 0x6d, 0xbc, 0x66, 0x83, 0x44, 0x81, 0xbb, 0x0c, 0xf9, 0x51, 0x1f, 0x24, 0xa6, 0x6f,
];
pub const SHORTEN_IFNAME_HASH_KEY: HashKey = [
    0xe1, 0x90, 0xa4, 0x04, 0xa8, 0xef, 0x4b, 0x51, 0x8c, 0xcc, 0xc3, 0x3a, 0x9f, 0x11, 0xfc, 0xa2,
];

/// SipHash-2-4 of `data` with a 16-byte key.
pub fn siphash24(data: &[u8], key: &HashKey) -> u64 {
    let k0 = u64::from_le_bytes(key[..8].try_into().unwrap_or_default());
    let k1 = u64::from_le_bytes(key[8..].try_into().unwrap_or_default());
    let mut v = [
        k0 ^ 0x736f6d6570736575,
        k1 ^ 0x646f72616e646f6d,
        k0 ^ 0x6c7967656e657261,
        k1 ^ 0x7465646279746573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let m = u64::from_le_bytes(c.try_into().unwrap_or_default());
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let rem = chunks.remainder();
    last[..rem.len()].copy_from_slice(rem);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

const URLSAFE_BASE64: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Shortens an interface name to the kernel's limit as systemd does; names
/// that fit are returned unchanged.
pub fn shorten_ifname(name: &str) -> String {
    if name.len() <= IFNAME_MAX {
        return name.to_string();
    }
    let h = siphash24(name.as_bytes(), &SHORTEN_IFNAME_HASH_KEY);
    let mut out: Vec<u8> = name.as_bytes()[..IFNAME_MAX - 4].to_vec();
    for shift in [18, 12, 6, 0] {
        out.push(URLSAFE_BASE64[((h >> shift) & 63) as usize]);
    }
    // Cutting at byte 11 may split a multi-byte character: keep the bytes valid.
    String::from_utf8_lossy(&out).into_owned()
}

/// The host-side name of a machine's link: `ve-NAME` (own link) or
/// `vb-NAME` (bridge or zone member), shortened if needed.
pub fn host_ifname(bridged: bool, machine: &str) -> String {
    shorten_ifname(&format!("{}{machine}", if bridged { "vb-" } else { "ve-" }))
}

/// A MAC address.
pub type Mac = [u8; 6];

/// The machine-stable MAC for one link role (`key`) and index.
pub fn generate_mac(machine_id: &[u8; 16], machine: &str, key: &HashKey, idx: u64) -> Mac {
    let mut v = Vec::with_capacity(16 + machine.len() + 8);
    v.extend_from_slice(machine_id);
    v.extend_from_slice(machine.as_bytes());
    if idx > 0 {
        v.extend_from_slice(&idx.to_le_bytes());
    }
    let h = siphash24(&v, key).to_le_bytes();
    let mut mac = [h[0], h[1], h[2], h[3], h[4], h[5]];
    mac[0] &= 0xfe; // unicast
    mac[0] |= 0x02; // locally administered
    mac
}

/// Parses a machine ID (32 hex digits, as in /etc/machine-id).
pub fn parse_machine_id(text: &str) -> Option<[u8; 16]> {
    let t = text.trim();
    if t.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The host's machine ID from /etc/machine-id (or /var/lib/dbus/machine-id).
pub fn host_machine_id() -> Option<[u8; 16]> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| {
            let data = crate::fsread::read_regular(
                std::path::Path::new(p),
                4096,
                crate::fsread::Follow::Symlinks,
            )
            .ok()?;
            parse_machine_id(std::str::from_utf8(&data).ok()?)
        })
}

/// Formats a MAC as aa:bb:cc:dd:ee:ff.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_reference_vectors() {
        // From the SipHash paper: key 00..0f, messages 00..(n-1).
        let key: HashKey = core::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0u8..64).collect();
        assert_eq!(siphash24(&msg[..0], &key), 0x726fdb47dd0e0e31);
        assert_eq!(siphash24(&msg[..1], &key), 0x74f839c593dc67fd);
        assert_eq!(siphash24(&msg[..8], &key), 0x93f5f5799a932462);
        assert_eq!(siphash24(&msg[..15], &key), 0xa129ca6149be45e5);
        assert_eq!(siphash24(&msg[..63], &key), 0x958a324ceb064572);
    }

    #[test]
    fn short_names_are_kept_and_long_ones_hashed() {
        assert_eq!(shorten_ifname("ve-web"), "ve-web");
        assert_eq!(shorten_ifname("ve-123456789012"), "ve-123456789012");
        let long = shorten_ifname("ve-averylongmachinename");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("ve-averylon"));
        assert!(long[11..].bytes().all(|b| URLSAFE_BASE64.contains(&b)));
        // Stable, and different names differ.
        assert_eq!(long, shorten_ifname("ve-averylongmachinename"));
        assert_ne!(long, shorten_ifname("ve-averylongmachinename2"));
        assert_eq!(host_ifname(true, "db"), "vb-db");
    }

    #[test]
    fn macs_are_stable_local_unicast_and_distinct_per_role() {
        let id = parse_machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4").unwrap();
        let a = generate_mac(&id, "web", &HOST_HASH_KEY, 0);
        assert_eq!(a, generate_mac(&id, "web", &HOST_HASH_KEY, 0));
        assert_eq!(a[0] & 0x01, 0);
        assert_eq!(a[0] & 0x02, 0x02);
        assert_ne!(a, generate_mac(&id, "web", &CONTAINER_HASH_KEY, 0));
        assert_ne!(a, generate_mac(&id, "db", &HOST_HASH_KEY, 0));
        assert_ne!(
            generate_mac(&id, "web", &MACVLAN_HASH_KEY, 0),
            generate_mac(&id, "web", &MACVLAN_HASH_KEY, 1)
        );
        assert_eq!(format_mac(&[2, 0xab, 0, 1, 2, 3]), "02:ab:00:01:02:03");
        assert_eq!(parse_machine_id("xyz"), None);
    }
}
