//! Address pools: the subnets netd hands to links whose `.network` file asks
//! for `Address=0.0.0.0/N` or `Address=::/N`, and their persistence.
//!
//! As networkd (`src/network/networkd-address-pool.c`), IPv4 subnets come
//! from the private ranges 192.168.0.0/16, 172.16.0.0/12 and 10.0.0.0/8,
//! tried in that order, and a subnet is free when it overlaps no address or
//! route of the host and no subnet already handed out. networkd picks a
//! random subnet in each range (up to 1024 tries); netd instead starts at a
//! subnet chosen by a stable hash of the key (the link name, `ve-web`,
//! `vz-lab`) and walks forward, so the same machine or zone gets the same
//! subnet whenever it is free, and a full range is always found full.
//!
//! IPv6 (`::/N`, N from 64 to 126): a unique local /48 (RFC 4193) per host,
//! then a /N in it chosen the same way as for IPv4. The /48's 40-bit global
//! ID is random (RFC 4193 §3.2), drawn when netd first runs on a host and
//! kept in the state file with the subnets, so every link keeps its /64
//! across restarts of netd and of the host. (A state file written before
//! the /48 was kept there gets the /48 that netd used then: a stable hash of
//! the machine ID.) networkd takes random bits of fd00::/8 per link
//! instead; a site prefix per host keeps a host's links in one /48.
//!
//! The host side of a link gets the first address after the subnet address
//! ([`Assignment::host`]). [`Pools`] is pure; [`Pools::load`] and
//! [`Pools::save`] keep it in `<state_dir>/pools.json` (written atomically)
//! so a restart of netd keeps every link's subnet.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The IPv4 ranges subnets are taken from, in the order they are tried
/// (networkd's).
pub const IPV4_RANGES: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
];

/// Longest IPv4 prefix netd hands out: a /30 still has one address for the
/// host side and one for a container.
pub const MAX_IPV4_PREFIX: u8 = 30;
/// Shortest IPv6 prefix from the pool (networkd's limit: 40 bits of global
/// ID and 16 of subnet ID leave 64).
pub const MIN_IPV6_PREFIX: u8 = 64;
/// Longest IPv6 prefix netd hands out.
pub const MAX_IPV6_PREFIX: u8 = 126;

/// The file under the state directory that holds the assignments.
pub const STATE_FILE: &str = "pools.json";

/// Why a subnet could not be handed out, or the state not kept.
#[derive(Debug, Error)]
pub enum PoolError {
    #[error("{0} is not a pool request (0.0.0.0/N or ::/N)")]
    NotAPoolRequest(IpNetwork),
    #[error("cannot take a {request} subnet from the address pool: {reason}")]
    BadPrefix { request: IpNetwork, reason: String },
    #[error(
        "no free /{prefix} subnet left in the address pool ({ranges}) for {key}: \
         every candidate overlaps a host address or route, or another link's subnet"
    )]
    Exhausted {
        key: String,
        prefix: u8,
        ranges: String,
    },
    #[error("address pool state {}: {msg}", path.display())]
    State { path: PathBuf, msg: String },
    #[error("address pool state {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A subnet handed to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Who holds it: the link name (plus anything the caller adds to tell
    /// several requests of one link apart).
    pub key: String,
    /// The subnet, host bits zero (`192.168.87.16/28`).
    pub subnet: IpNetwork,
}

impl Assignment {
    /// The host side's address: the first after the subnet address, with the
    /// subnet's prefix (`192.168.87.17/28`).
    pub fn host(&self) -> IpNetwork {
        match self.subnet {
            IpNetwork::V4(n) => {
                let a = Ipv4Addr::from(u32::from(n.network()).wrapping_add(1));
                IpNetwork::V4(Ipv4Network::new(a, n.prefix()).unwrap_or(n))
            }
            IpNetwork::V6(n) => {
                let a = Ipv6Addr::from(u128::from(n.network()).wrapping_add(1));
                IpNetwork::V6(Ipv6Network::new(a, n.prefix()).unwrap_or(n))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

fn family_of(n: &IpNetwork) -> Family {
    match n {
        IpNetwork::V4(_) => Family::V4,
        IpNetwork::V6(_) => Family::V6,
    }
}

/// The subnets handed out, at most one per key and address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pools {
    by_key: BTreeMap<(String, Family), IpNetwork>,
    ula_site: Ipv6Network,
}

/// Where the pool state lives under netd's state directory.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// The unique local /48 of this host: `fd` and 40 bits of a stable hash of
/// `machine_id` (the contents of /etc/machine-id).
pub fn ula_site(machine_id: &str) -> Ipv6Network {
    site_of(stable_hash(b"ula-site", machine_id.trim().as_bytes()))
}

/// A unique local /48 with a random global ID (RFC 4193 §3.2), from the
/// kernel's random numbers; if they cannot be read, from a hash of the
/// machine ID and the time.
pub fn random_ula_site(machine_id: &str) -> Ipv6Network {
    use std::io::Read;
    let mut b = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b[..5]));
    let bits = match random {
        Ok(()) => u64::from_be_bytes(b) >> 24,
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            stable_hash(machine_id.as_bytes(), &now.to_le_bytes())
        }
    };
    site_of(bits)
}

/// `fd` and the 40 low bits of `global_id`, as a /48.
fn site_of(global_id: u64) -> Ipv6Network {
    let prefix = (0xfd_u128 << 120) | (u128::from(global_id & ((1 << 40) - 1)) << 80);
    // 48 is a valid prefix length, so the fallback is never taken.
    Ipv6Network::new(Ipv6Addr::from(prefix), 48)
        .unwrap_or_else(|_| Ipv6Network::from(Ipv6Addr::from(prefix)))
}

impl Pools {
    /// No subnets handed out; IPv6 subnets come from this host's
    /// [`ula_site`] (the machine ID's hash).
    pub fn new(machine_id: &str) -> Pools {
        Pools::with_site(ula_site(machine_id))
    }

    /// No subnets handed out; IPv6 subnets come from `site`.
    pub fn with_site(site: Ipv6Network) -> Pools {
        Pools {
            by_key: BTreeMap::new(),
            ula_site: site,
        }
    }

    /// The unique local /48 IPv6 subnets come from.
    pub fn ula_site(&self) -> Ipv6Network {
        self.ula_site
    }

    /// Hands `key` a subnet for `request` (`0.0.0.0/N` or `::/N` from an
    /// `Address=` line) that overlaps none of `host` (the host's addresses
    /// and routes, and static `Address=` subnets of the `.network` files;
    /// default routes are ignored) and no other key's subnet.
    ///
    /// If `key` already holds a subnet of that family and prefix, it keeps
    /// it (acquire is idempotent, and survives a restart through
    /// [`Pools::load`]), unless a host network that is not inside it
    /// overlaps it: the link's own address and route from an earlier run lie
    /// inside the subnet and do not count. Otherwise the search starts at a
    /// subnet chosen by a stable hash of `key` in each range.
    pub fn acquire(
        &mut self,
        key: &str,
        request: &IpNetwork,
        host: &[IpNetwork],
    ) -> Result<Assignment, PoolError> {
        if !request.ip().is_unspecified() {
            return Err(PoolError::NotAPoolRequest(*request));
        }
        let family = family_of(request);
        let want = request.prefix();
        let map_key = (key.to_string(), family);
        if let Some(old) = self.by_key.get(&map_key).copied() {
            let conflict = host
                .iter()
                .filter(|h| h.prefix() > 0)
                .any(|h| overlaps(h, &old) && h.prefix() < old.prefix());
            if old.prefix() == want && !conflict {
                return Ok(Assignment {
                    key: key.to_string(),
                    subnet: old,
                });
            }
            self.by_key.remove(&map_key);
        }
        let subnet = match family {
            Family::V4 => self.pick_v4(key, want, host)?,
            Family::V6 => self.pick_v6(key, want, host)?,
        };
        self.by_key.insert(map_key, subnet);
        Ok(Assignment {
            key: key.to_string(),
            subnet,
        })
    }

    /// What a new subnet must not overlap. Default routes (prefix 0) are
    /// left out: they overlap everything and say nothing about local use.
    fn taken(&self, family: Family, host: &[IpNetwork]) -> Vec<(u128, u8)> {
        host.iter()
            .filter(|h| h.prefix() > 0)
            .chain(self.by_key.values())
            .filter(|n| family_of(n) == family)
            .map(|n| (addr_bits(n), n.prefix()))
            .collect()
    }

    fn pick_v4(&self, key: &str, want: u8, host: &[IpNetwork]) -> Result<IpNetwork, PoolError> {
        let bad = |reason: String| PoolError::BadPrefix {
            request: IpNetwork::V4(
                Ipv4Network::new(Ipv4Addr::UNSPECIFIED, want)
                    .unwrap_or_else(|_| Ipv4Network::from(Ipv4Addr::UNSPECIFIED)),
            ),
            reason,
        };
        if want > MAX_IPV4_PREFIX {
            return Err(bad(format!(
                "the prefix length must be at most {MAX_IPV4_PREFIX}, to leave room for the \
                 host and a container"
            )));
        }
        if IPV4_RANGES.iter().all(|(_, p)| want <= *p) {
            return Err(bad(format!(
                "no private range is larger than a /{want} (the largest is 10.0.0.0/8)"
            )));
        }
        let taken = self.taken(Family::V4, host);
        for (i, (base, range_prefix)) in IPV4_RANGES.iter().enumerate() {
            if want <= *range_prefix {
                continue;
            }
            let count = 1u128 << (want - range_prefix);
            let start = u128::from(stable_hash(&[b'4', i as u8], key.as_bytes())) % count;
            let space = Space {
                base: u128::from(u32::from(*base)),
                bits: 32,
                want,
                count,
            };
            if let Some(net) = space.carve(start, &taken) {
                let addr = Ipv4Addr::from(u32::try_from(net).unwrap_or(0));
                return Ipv4Network::new(addr, want)
                    .map(IpNetwork::V4)
                    .map_err(|e| bad(e.to_string()));
            }
        }
        Err(PoolError::Exhausted {
            key: key.to_string(),
            prefix: want,
            ranges: IPV4_RANGES
                .iter()
                .map(|(a, p)| format!("{a}/{p}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn pick_v6(&self, key: &str, want: u8, host: &[IpNetwork]) -> Result<IpNetwork, PoolError> {
        let bad = |reason: String| PoolError::BadPrefix {
            request: IpNetwork::V6(
                Ipv6Network::new(Ipv6Addr::UNSPECIFIED, want)
                    .unwrap_or_else(|_| Ipv6Network::from(Ipv6Addr::UNSPECIFIED)),
            ),
            reason,
        };
        if !(MIN_IPV6_PREFIX..=MAX_IPV6_PREFIX).contains(&want) {
            return Err(bad(format!(
                "the prefix length must be between {MIN_IPV6_PREFIX} and {MAX_IPV6_PREFIX}"
            )));
        }
        let site = self.ula_site;
        let count = 1u128 << (want - site.prefix());
        let h = (u128::from(stable_hash(b"6hi", key.as_bytes())) << 64)
            | u128::from(stable_hash(b"6lo", key.as_bytes()));
        let space = Space {
            base: u128::from(site.network()),
            bits: 128,
            want,
            count,
        };
        let taken = self.taken(Family::V6, host);
        match space.carve(h % count, &taken) {
            Some(net) => Ipv6Network::new(Ipv6Addr::from(net), want)
                .map(IpNetwork::V6)
                .map_err(|e| bad(e.to_string())),
            None => Err(PoolError::Exhausted {
                key: key.to_string(),
                prefix: want,
                ranges: site.to_string(),
            }),
        }
    }

    /// The subnets `key` holds (IPv4 first).
    pub fn assigned(&self, key: &str) -> Vec<Assignment> {
        [Family::V4, Family::V6]
            .iter()
            .filter_map(|f| {
                self.by_key
                    .get(&(key.to_string(), *f))
                    .map(|subnet| Assignment {
                        key: key.to_string(),
                        subnet: *subnet,
                    })
            })
            .collect()
    }

    /// Gives back every subnet `key` holds (when its link goes away);
    /// returns them, empty if it held none.
    pub fn release(&mut self, key: &str) -> Vec<Assignment> {
        let out = self.assigned(key);
        for a in &out {
            self.by_key.remove(&(key.to_string(), family_of(&a.subnet)));
        }
        out
    }

    /// Keeps only the keys `keep` accepts (at start-up: the links that still
    /// exist) and returns the released ones.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> Vec<Assignment> {
        let mut released = Vec::new();
        self.by_key.retain(|(key, _), subnet| {
            let k = keep(key);
            if !k {
                released.push(Assignment {
                    key: key.clone(),
                    subnet: *subnet,
                });
            }
            k
        });
        released
    }

    /// Every assignment, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = Assignment> + '_ {
        self.by_key.iter().map(|((key, _), subnet)| Assignment {
            key: key.clone(),
            subnet: *subnet,
        })
    }

    /// The state as JSON: `{"assignments":[{"key":..,"subnet":..},..]}`.
    pub fn to_json(&self) -> String {
        let state = StateFile {
            ula_site: Some(self.ula_site.to_string()),
            assignments: self
                .iter()
                .map(|a| StateEntry {
                    key: a.key,
                    subnet: a.subnet.to_string(),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&state).unwrap_or_else(|_| String::from("{}"))
    }

    /// Reads [`Pools::to_json`]'s output. Entries must be subnets (host bits
    /// zero) of the IPv4 ranges or of fc00::/7, at most one per key and
    /// family, none overlapping another; the site a /48 of fd00::/8;
    /// anything else is an error naming it. Without a site (a file of an
    /// older netd), the machine ID's hash.
    pub fn from_json(text: &str, machine_id: &str) -> Result<Pools, String> {
        let state: StateFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut pools = match &state.ula_site {
            None => Pools::new(machine_id),
            Some(site) => {
                let n: Ipv6Network = site
                    .parse()
                    .map_err(|_| format!("ula_site {site:?} is not an IPv6 prefix"))?;
                if n.prefix() != 48 || u128::from(n.ip()) >> 120 != 0xfd || n.ip() != n.network() {
                    return Err(format!(
                        "ula_site {site} is not a unique local /48 (fdXX:XXXX:XXXX::/48)"
                    ));
                }
                Pools::with_site(n)
            }
        };
        for e in state.assignments {
            let subnet: IpNetwork = e
                .subnet
                .parse()
                .map_err(|_| format!("{:?} is not a subnet", e.subnet))?;
            if addr_bits(&subnet) != addr_bits_of_ip(subnet.ip()) {
                return Err(format!("{subnet} has host bits set"));
            }
            let in_pool = match subnet {
                IpNetwork::V4(n) => IPV4_RANGES.iter().any(|(a, p)| {
                    Ipv4Network::new(*a, *p).is_ok_and(|r| n.prefix() > *p && r.contains(n.ip()))
                }),
                IpNetwork::V6(n) => (u128::from(n.ip()) >> 121) == (0xfc >> 1),
            };
            if !in_pool {
                return Err(format!("{subnet} is not from the address pool"));
            }
            if let Some(other) = pools.iter().find(|a| overlaps(&a.subnet, &subnet)) {
                return Err(format!(
                    "{subnet} of {} overlaps {} of {}",
                    e.key, other.subnet, other.key
                ));
            }
            let k = (e.key.clone(), family_of(&subnet));
            if pools.by_key.insert(k, subnet).is_some() {
                return Err(format!("{} holds two subnets of one family", e.key));
            }
        }
        Ok(pools)
    }

    /// Reads the state file; a missing file is an empty pool with a new
    /// random site ([`random_ula_site`]), which the first save keeps.
    pub fn load(path: &Path, machine_id: &str) -> Result<Pools, PoolError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Pools::from_json(&text, machine_id).map_err(|msg| PoolError::State {
                path: path.to_path_buf(),
                msg,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Pools::with_site(random_ula_site(machine_id)))
            }
            Err(source) => Err(PoolError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the state file atomically (a synced temporary file renamed
    /// over it), creating its directory if needed.
    pub fn save(&self, path: &Path) -> Result<(), PoolError> {
        let io = |source| PoolError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(self.to_json().as_bytes()).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        // The rename is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    /// The unique local /48 (absent in files of older netds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ula_site: Option<String>,
    assignments: Vec<StateEntry>,
}

#[derive(Serialize, Deserialize)]
struct StateEntry {
    key: String,
    subnet: String,
}

/// The candidate subnets of one range: `count` blocks of prefix `want`
/// from `base`, addresses as integers of `bits` bits.
struct Space {
    base: u128,
    bits: u8,
    want: u8,
    count: u128,
}

impl Space {
    /// The first free block walking forward from index `start` and wrapping
    /// around, or `None` if every block overlaps one of `taken`
    /// (address, prefix) networks. A taken network that covers a block is
    /// skipped as a whole, so the walk is bounded by the number of taken
    /// networks, not of blocks.
    fn carve(&self, start: u128, taken: &[(u128, u8)]) -> Option<u128> {
        self.first_free(start, self.count, taken)
            .or_else(|| self.first_free(0, start, taken))
    }

    fn first_free(&self, lo: u128, hi: u128, taken: &[(u128, u8)]) -> Option<u128> {
        let shift = self.bits - self.want;
        let mut i = lo;
        while i < hi {
            let block = self.base + (i << shift);
            let hit = taken
                .iter()
                .find(|(t, tp)| prefix_overlap(block, self.want, *t, *tp, self.bits));
            match hit {
                None => return Some(block),
                Some((t, tp)) if *tp <= self.want => {
                    // Jump past the end of the covering network.
                    let end = last_addr(*t, *tp, self.bits);
                    let next = end
                        .checked_sub(self.base)
                        .map_or(self.count, |off| (off >> shift).saturating_add(1));
                    i = next.max(i + 1);
                }
                Some(_) => i += 1,
            }
        }
        None
    }
}

/// True if the networks `a/pa` and `b/pb` (addresses of `bits` bits)
/// share an address: the shorter prefix's network contains the other.
fn prefix_overlap(a: u128, pa: u8, b: u128, pb: u8, bits: u8) -> bool {
    let p = pa.min(pb);
    if p == 0 {
        return true;
    }
    let shift = u32::from(bits - p);
    (a >> shift) == (b >> shift)
}

/// The last address of the network `a/p`.
fn last_addr(a: u128, p: u8, bits: u8) -> u128 {
    let host_bits = u32::from(bits - p.min(bits));
    let mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    a | mask
}

fn addr_bits_of_ip(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The network address of `n` as an integer (host bits cleared).
fn addr_bits(n: &IpNetwork) -> u128 {
    addr_bits_of_ip(n.network())
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    if family_of(a) != family_of(b) {
        return false;
    }
    let bits = if family_of(a) == Family::V4 { 32 } else { 128 };
    prefix_overlap(addr_bits(a), a.prefix(), addr_bits(b), b.prefix(), bits)
}

/// A 64-bit hash that never changes between builds or releases (unlike
/// std's `DefaultHasher`): FNV-1a over `domain` then `data`, finished with
/// the SplitMix64 mixer so that nearby keys land far apart.
fn stable_hash(domain: &[u8], data: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in domain.iter().chain([0u8].iter()).chain(data.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MID: &str = "0123456789abcdef0123456789abcdef";

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn v4(prefix: u8) -> IpNetwork {
        net(&format!("0.0.0.0/{prefix}"))
    }

    fn v6(prefix: u8) -> IpNetwork {
        net(&format!("::/{prefix}"))
    }

    fn within(outer: &str, inner: &IpNetwork) -> bool {
        let o = net(outer);
        overlaps(&o, inner) && o.prefix() <= inner.prefix()
    }

    #[test]
    fn first_pick_is_stable_and_private() {
        for (key, prefix) in [("ve-web", 28), ("vz-lab", 24), ("ve-db", 28), ("", 30)] {
            let a = Pools::new(MID).acquire(key, &v4(prefix), &[]).unwrap();
            let b = Pools::new("another machine")
                .acquire(key, &v4(prefix), &[])
                .unwrap();
            assert_eq!(a, b, "{key}: same key, same subnet on any fresh pool");
            assert_eq!(a.subnet.prefix(), prefix);
            assert!(within("192.168.0.0/16", &a.subnet), "{a:?}");
            assert_eq!(a.subnet.ip(), a.subnet.network(), "host bits are zero");
            let host = a.host();
            assert_eq!(host.prefix(), prefix);
            assert_eq!(
                addr_bits_of_ip(host.ip()),
                addr_bits(&a.subnet) + 1,
                "the host side takes the first address"
            );
        }
    }

    #[test]
    fn keys_get_disjoint_subnets() {
        let mut pools = Pools::new(MID);
        let mut got: Vec<IpNetwork> = Vec::new();
        for i in 0..300 {
            let a = pools.acquire(&format!("ve-m{i}"), &v4(28), &[]).unwrap();
            assert!(got.iter().all(|g| !overlaps(g, &a.subnet)), "{a:?}");
            got.push(a.subnet);
        }
        let z = pools.acquire("vz-lab", &v4(24), &[]).unwrap();
        assert!(got.iter().all(|g| !overlaps(g, &z.subnet)));
    }

    #[test]
    fn host_networks_are_avoided() {
        let preferred = Pools::new(MID)
            .acquire("ve-web", &v4(28), &[])
            .unwrap()
            .subnet;
        let around = IpNetwork::new(preferred.network(), 24).unwrap();
        let host_addr = IpNetwork::new(host_ip(&preferred, 5), 24).unwrap();
        // (host networks, range the pick must be in)
        let table: Vec<(Vec<IpNetwork>, &str)> = vec![
            (vec![around], "192.168.0.0/16"),
            // An address with host bits, as the kernel lists it.
            (vec![host_addr], "192.168.0.0/16"),
            (vec![preferred], "192.168.0.0/16"),
            (vec![net("192.168.0.0/16")], "172.16.0.0/12"),
            (
                vec![net("192.168.0.0/17"), net("192.168.128.0/17")],
                "172.16.0.0/12",
            ),
            (
                vec![net("192.168.0.0/16"), net("172.16.0.0/12")],
                "10.0.0.0/8",
            ),
            // A default route says nothing about local use.
            (vec![net("0.0.0.0/0"), net("::/0")], "192.168.0.0/16"),
            // Other families do not matter.
            (vec![net("fd00::/8")], "192.168.0.0/16"),
        ];
        for (host, range) in table {
            let a = Pools::new(MID).acquire("ve-web", &v4(28), &host).unwrap();
            assert!(within(range, &a.subnet), "{host:?}: {a:?}");
            for h in host.iter().filter(|h| h.prefix() > 0) {
                assert!(!overlaps(h, &a.subnet), "{h} overlaps {a:?}");
            }
        }
        // Without conflicts, the preferred subnet.
        let a = Pools::new(MID)
            .acquire("ve-web", &v4(28), &[net("10.0.0.0/8")])
            .unwrap();
        assert_eq!(a.subnet, preferred);
    }

    fn host_ip(n: &IpNetwork, offset: u32) -> IpAddr {
        match n {
            IpNetwork::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + offset)),
            IpNetwork::V6(n) => {
                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + u128::from(offset)))
            }
        }
    }

    #[test]
    fn the_last_free_subnet_is_found() {
        // Every /24 of 192.168.0.0/16 but one is in use on the host; the walk
        // wraps around from wherever the key's hash starts.
        for free in [0u32, 1, 77, 254, 255] {
            let host: Vec<IpNetwork> = (0..256u32)
                .filter(|i| *i != free)
                .map(|i| net(&format!("192.168.{i}.0/24")))
                .collect();
            for key in ["vz-a", "vz-b", "vz-c"] {
                let a = Pools::new(MID).acquire(key, &v4(24), &host).unwrap();
                assert_eq!(a.subnet, net(&format!("192.168.{free}.0/24")), "{key}");
            }
        }
    }

    #[test]
    fn exhaustion_is_a_clear_error() {
        let all = [
            net("192.168.0.0/16"),
            net("172.16.0.0/12"),
            net("10.0.0.0/8"),
        ];
        let e = Pools::new(MID)
            .acquire("ve-web", &v4(28), &all)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "no free /28 subnet left in the address pool (192.168.0.0/16, 172.16.0.0/12, \
             10.0.0.0/8) for ve-web: every candidate overlaps a host address or route, or \
             another link's subnet"
        );
        // A /9 fits only in 10.0.0.0/8, twice.
        let mut pools = Pools::new(MID);
        let a = pools.acquire("a", &v4(9), &[]).unwrap();
        let b = pools.acquire("b", &v4(9), &[]).unwrap();
        assert!(!overlaps(&a.subnet, &b.subnet));
        assert!(matches!(
            pools.acquire("c", &v4(9), &[]),
            Err(PoolError::Exhausted { prefix: 9, .. })
        ));
        // Released, it goes to the next asker.
        assert_eq!(pools.release("a"), vec![a.clone()]);
        assert_eq!(pools.release("a"), vec![]);
        let c = pools.acquire("c", &v4(9), &[]).unwrap();
        assert_eq!(c.subnet, a.subnet);
    }

    #[test]
    fn bad_requests() {
        let table: &[(IpNetwork, &str)] = &[
            (
                net("10.0.0.1/28"),
                "10.0.0.1/28 is not a pool request (0.0.0.0/N or ::/N)",
            ),
            (
                v4(31),
                "cannot take a 0.0.0.0/31 subnet from the address pool: the prefix length must \
                 be at most 30, to leave room for the host and a container",
            ),
            (
                v4(8),
                "cannot take a 0.0.0.0/8 subnet from the address pool: no private range is \
                 larger than a /8 (the largest is 10.0.0.0/8)",
            ),
            (
                v6(48),
                "cannot take a ::/48 subnet from the address pool: the prefix length must be \
                 between 64 and 126",
            ),
            (v6(127), "between 64 and 126"),
        ];
        for (req, msg) in table {
            let e = Pools::new(MID).acquire("k", req, &[]).unwrap_err();
            assert!(e.to_string().contains(msg), "{req}: {e}");
        }
    }

    #[test]
    fn acquire_is_idempotent_and_keeps_its_subnet() {
        let mut pools = Pools::new(MID);
        let a = pools.acquire("ve-web", &v4(28), &[]).unwrap();
        // The link's own address and route from before do not count.
        let own = vec![a.host(), a.subnet];
        assert_eq!(pools.acquire("ve-web", &v4(28), &own).unwrap(), a);
        // A host network that contains it does: a new subnet.
        let lan = IpNetwork::new(a.subnet.network(), 20).unwrap();
        let b = pools.acquire("ve-web", &v4(28), &[lan]).unwrap();
        assert!(!overlaps(&b.subnet, &lan));
        // A different prefix length: a new subnet of that size.
        let c = pools.acquire("ve-web", &v4(26), &[]).unwrap();
        assert_eq!(c.subnet.prefix(), 26);
        assert_eq!(pools.iter().count(), 1);
        // IPv4 and IPv6 of one key coexist.
        let d = pools.acquire("ve-web", &v6(64), &[]).unwrap();
        assert_eq!(pools.assigned("ve-web"), vec![c.clone(), d.clone()]);
        assert_eq!(pools.release("ve-web"), vec![c, d]);
        assert!(pools.assigned("ve-web").is_empty());
    }

    #[test]
    fn ipv6_from_the_hosts_ula_site() {
        let site = ula_site(MID);
        assert_eq!(
            site,
            ula_site(&format!("{MID}\n")),
            "trailing newline ignored"
        );
        assert_ne!(site, ula_site("fedcba9876543210fedcba9876543210"));
        assert_eq!(site.prefix(), 48);
        assert_eq!(u128::from(site.network()) >> 120, 0xfd);
        let mut pools = Pools::new(MID);
        assert_eq!(pools.ula_site(), site);
        let a = pools.acquire("ve-web", &v6(64), &[]).unwrap();
        assert!(overlaps(&IpNetwork::V6(site), &a.subnet));
        assert_eq!(a.subnet.prefix(), 64);
        assert_eq!(a.host().ip(), host_ip(&a.subnet, 1));
        // Stable per key.
        assert_eq!(Pools::new(MID).acquire("ve-web", &v6(64), &[]).unwrap(), a);
        // Avoids host networks and other keys.
        let b = Pools::new(MID)
            .acquire("ve-web", &v6(64), &[a.subnet])
            .unwrap();
        assert_ne!(b.subnet, a.subnet);
        let c = pools.acquire("ve-db", &v6(64), &[]).unwrap();
        assert!(!overlaps(&a.subnet, &c.subnet));
        let d = pools.acquire("ve-x", &v6(126), &[]).unwrap();
        assert_eq!(d.subnet.prefix(), 126);
        // A host route over the whole site exhausts it.
        let e = Pools::new(MID)
            .acquire("ve-web", &v6(64), &[IpNetwork::V6(site)])
            .unwrap_err();
        assert!(e.to_string().contains(&format!("({site})")), "{e}");
    }

    #[test]
    fn state_round_trip() {
        let mut pools = Pools::new(MID);
        pools.acquire("ve-web", &v4(28), &[]).unwrap();
        pools.acquire("vz-lab", &v4(24), &[]).unwrap();
        pools.acquire("ve-web", &v6(64), &[]).unwrap();
        let json = pools.to_json();
        let back = Pools::from_json(&json, MID).unwrap();
        assert_eq!(back, pools);

        let dir = std::env::temp_dir().join(format!("netd-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = state_path(&dir.join("state"));
        let fresh = Pools::load(&path, MID).unwrap();
        assert_eq!(fresh.iter().count(), 0, "missing is empty");
        let site = fresh.ula_site();
        assert_eq!((u128::from(site.ip()) >> 120, site.prefix()), (0xfd, 48));
        // Random: another fresh pool draws another /48 (1 in 2^40 alike).
        assert_ne!(Pools::load(&path, MID).unwrap().ula_site(), site);
        // Kept once saved.
        fresh.save(&path).unwrap();
        assert_eq!(Pools::load(&path, MID).unwrap().ula_site(), site);
        // A file without a site (an older netd's): the machine ID's hash.
        std::fs::write(&path, "{\"assignments\":[]}").unwrap();
        assert_eq!(Pools::load(&path, MID).unwrap().ula_site(), ula_site(MID));
        for bad in ["fd00::/64", "fc00::/48", "2001:db8::/48", "fd00::1/48", "x"] {
            let text = format!("{{\"ula_site\":\"{bad}\",\"assignments\":[]}}");
            let e = Pools::from_json(&text, MID).unwrap_err();
            assert!(e.contains("ula_site"), "{bad}: {e}");
        }
        pools.save(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["pools.json"], "no temporary file left");
        let mut loaded = Pools::load(&path, MID).unwrap();
        assert_eq!(loaded, pools);
        // After a restart the same key gets the same subnet back.
        let again = loaded.acquire("vz-lab", &v4(24), &[]).unwrap();
        assert_eq!(pools.assigned("vz-lab"), vec![again]);
        // Start-up cleanup of links that are gone.
        let released = loaded.retain(|k| k == "vz-lab");
        assert_eq!(released.len(), 2);
        assert_eq!(loaded.iter().count(), 1);
        std::fs::write(&path, "{not json").unwrap();
        let e = Pools::load(&path, MID).unwrap_err();
        assert!(e
            .to_string()
            .starts_with(&format!("address pool state {}: ", path.display())));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn state_is_validated() {
        let entry = |k: &str, s: &str| format!("{{\"key\":\"{k}\",\"subnet\":\"{s}\"}}");
        let file = |entries: &[String]| format!("{{\"assignments\":[{}]}}", entries.join(","));
        let table: &[(Vec<String>, Option<&str>)] = &[
            (vec![entry("a", "192.168.1.0/24")], None),
            (
                vec![entry("a", "192.168.1.5/24")],
                Some("has host bits set"),
            ),
            (
                vec![entry("a", "8.8.8.0/24")],
                Some("is not from the address pool"),
            ),
            (
                vec![entry("a", "10.0.0.0/8")],
                Some("is not from the address pool"),
            ),
            (
                vec![entry("a", "2001:db8::/64")],
                Some("is not from the address pool"),
            ),
            (vec![entry("a", "fd12:3456:789a:1::/64")], None),
            (vec![entry("a", "banana")], Some("is not a subnet")),
            (
                vec![entry("a", "192.168.1.0/24"), entry("b", "192.168.1.16/28")],
                Some("192.168.1.16/28 of b overlaps 192.168.1.0/24 of a"),
            ),
            (
                vec![entry("a", "192.168.1.0/24"), entry("a", "192.168.2.0/24")],
                Some("a holds two subnets of one family"),
            ),
        ];
        for (entries, want) in table {
            let got = Pools::from_json(&file(entries), MID);
            match want {
                None => assert!(got.is_ok(), "{entries:?}: {got:?}"),
                Some(msg) => {
                    let e = got.unwrap_err();
                    assert!(e.contains(msg), "{entries:?}: {e}");
                }
            }
        }
        assert!(Pools::from_json("[]", MID).is_err());
    }

    #[test]
    fn overlap_and_hash_primitives() {
        let table: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.0/24", true),
            ("10.1.2.0/24", "10.0.0.0/8", true),
            ("10.1.2.0/24", "10.1.3.0/24", false),
            ("10.1.2.0/28", "10.1.2.16/28", false),
            ("10.1.2.7/24", "10.1.2.200/32", true),
            ("0.0.0.0/0", "1.2.3.4/32", true),
            ("fd00::/8", "fd12::/16", true),
            ("fd00::/8", "10.0.0.0/8", false),
            ("::/0", "fe80::/64", true),
        ];
        for (a, b, want) in table {
            assert_eq!(overlaps(&net(a), &net(b)), *want, "{a} {b}");
        }
        assert_eq!(last_addr(0, 0, 128), u128::MAX);
        assert_eq!(last_addr(0x0a00_0000, 8, 32), 0x0aff_ffff);
        // Fixed values: the hash must never change between releases, or
        // machines would move to other subnets after an upgrade.
        assert_eq!(stable_hash(b"", b""), stable_hash(b"", b""));
        assert_ne!(stable_hash(b"a", b"b"), stable_hash(b"", b"ab"));
        let a = Pools::new(MID).acquire("ve-web", &v4(28), &[]).unwrap();
        assert_eq!(a.subnet, net(GOLDEN_VE_WEB));
    }

    /// Where `ve-web` lands on an empty host; pinned so a change of the hash
    /// or the walk shows up here.
    const GOLDEN_VE_WEB: &str = "192.168.224.208/28";
}
