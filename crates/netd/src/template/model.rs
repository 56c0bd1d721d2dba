//! What a `.network` file says, as netd reads it: the `[Match]`,
//! `[Network]` and `[DHCPServer]` sections with networkd's defaults. Pure
//! data; [`super::parse`] fills it, [`super::matching`] tests `[Match]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnetwork::{IpNetwork, Ipv6Network};

/// Default `DefaultLeaseTimeSec=`: 1h, as networkd.
pub const DEFAULT_LEASE_SECS: u32 = 3600;
/// Default `MaxLeaseTimeSec=`: 12h, as networkd.
pub const DEFAULT_MAX_LEASE_SECS: u32 = 12 * 3600;
/// A lease time of `infinity`: DHCP's "infinite lease" value (RFC 2131).
pub const INFINITE_LEASE: u32 = u32::MAX;

/// One word of a `Name=`/`Driver=`/`Kind=` list: a shell glob (fnmatch(3)
/// without flags), negated when its assignment started with `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub glob: String,
    pub negate: bool,
}

/// A `Virtualization=` condition: a boolean, `vm`, `container`, or a
/// technology name as systemd-detect-virt prints it; `!` negates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtCondition {
    pub value: String,
    pub negate: bool,
}

/// The [Match] section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    /// `Name=`: globs for the interface name or any alternative name.
    pub name: Vec<Pattern>,
    /// `Driver=`.
    pub driver: Vec<Pattern>,
    /// `Kind=`.
    pub kind: Vec<Pattern>,
    /// `Virtualization=`: only the last assignment counts, as in systemd.
    pub virtualization: Option<VirtCondition>,
    /// [Match] keys netd cannot test that are set: while any is, the file
    /// matches no link.
    pub untestable: Vec<String>,
}

/// Address families a setting applies to: systemd's `no`/`ipv4`/`ipv6`/
/// `yes` (or `both`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Families {
    #[default]
    No,
    Ipv4,
    Ipv6,
    Both,
}

impl Families {
    /// True for `ipv4` and `both`.
    pub fn ipv4(self) -> bool {
        matches!(self, Families::Ipv4 | Families::Both)
    }

    /// True for `ipv6` and `both`.
    pub fn ipv6(self) -> bool {
        matches!(self, Families::Ipv6 | Families::Both)
    }
}

/// A `DNS=` server of the [Network] section:
/// `ADDR[:PORT][%IFNAME][#SNI]`, an IPv6 address with a port in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsServer {
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub ifname: Option<String>,
    pub server_name: Option<String>,
}

/// The [Network] section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// `Address=` in file order, as written (the host bits kept). An
    /// unspecified address (`0.0.0.0/N`, `::/N`) asks for a subnet of prefix
    /// `N` from the address pool: see [`is_pool_request`].
    pub addresses: Vec<IpNetwork>,
    /// `DHCPServer=`: serve DHCPv4 on the link.
    pub dhcp_server: bool,
    /// `IPMasquerade=`. `yes` means `ipv4`, as current networkd (with a
    /// deprecation warning).
    pub ip_masquerade: Families,
    /// `LinkLocalAddressing=` as written; `None` when not set, see
    /// [`Network::link_local`] for the default.
    pub link_local_addressing: Option<Families>,
    /// `DNS=`: the upstream servers for DNS queries arriving on the link
    /// (empty: the host's resolvers).
    pub dns: Vec<DnsServer>,
    /// `DHCP=`: which DHCP clients run on the link (a guest-side setting).
    pub dhcp: Families,
    /// `KeepMaster=`: leave the link in its bridge. netd never changes a
    /// link's master, so it only affects the link-local default.
    pub keep_master: bool,
    /// `IPv6SendRA=`: send router advertisements on the link (the prefixes
    /// of `[IPv6Prefix]` and of the link's IPv6 `Address=` subnets).
    pub ipv6_send_ra: bool,
    /// `DNSDefaultRoute=`: `Some(false)` makes the link internal for netd's
    /// DNS: names that are not machines' are refused there, never
    /// forwarded upstream (with `IPMasquerade=no`, an internal zone).
    pub dns_default_route: Option<bool>,
    /// `LLMNR=`: `Some(false)` (`no`, or `resolve`: resolving only, no
    /// responder) turns netd's LLMNR responder off on the link; it is on by
    /// default, as networkd's.
    pub llmnr: Option<bool>,
}

impl Network {
    /// `LinkLocalAddressing=`, or its default: `no` with `KeepMaster=yes`,
    /// else `ipv6` (networkd's rule, minus the cases netd does not handle).
    pub fn link_local(&self) -> Families {
        match self.link_local_addressing {
            Some(f) => f,
            None if self.keep_master => Families::No,
            None => Families::Ipv6,
        }
    }

    /// The `Address=` entries that ask for a subnet from the pool.
    pub fn pool_requests(&self) -> impl Iterator<Item = &IpNetwork> {
        self.addresses.iter().filter(|a| is_pool_request(a))
    }

    /// The `Address=` entries that are static addresses.
    pub fn static_addresses(&self) -> impl Iterator<Item = &IpNetwork> {
        self.addresses.iter().filter(|a| !is_pool_request(a))
    }
}

/// True for `0.0.0.0/N` and `::/N`: a request for a subnet of prefix `N`
/// from the address pool rather than an address.
pub fn is_pool_request(addr: &IpNetwork) -> bool {
    addr.ip().is_unspecified()
}

/// A `DNS=` entry of the [DHCPServer] section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpDns {
    /// `_server_address`: the DHCP server's own address on the link.
    ServerAddress,
    Addr(Ipv4Addr),
}

/// The [DHCPServer] section, with networkd's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpServerConfig {
    /// `PoolOffset=`: offset of the first address handed out from the start
    /// of the subnet; 0 means the default (right after the subnet address).
    pub pool_offset: u32,
    /// `PoolSize=`: number of addresses handed out; 0 means the default (the
    /// rest of the subnet, without the broadcast address).
    pub pool_size: u32,
    /// `EmitDNS=` (default yes).
    pub emit_dns: bool,
    /// `DNS=`: the servers to hand out; empty means "netd's own DNS".
    pub dns: Vec<DhcpDns>,
    /// `EmitRouter=` (default yes): hand out the server address as router.
    pub emit_router: bool,
    /// `DefaultLeaseTimeSec=` in seconds (default 1h); [`INFINITE_LEASE`]
    /// for `infinity`.
    pub default_lease_secs: u32,
    /// `MaxLeaseTimeSec=` in seconds (default 12h); [`INFINITE_LEASE`] for
    /// `infinity`.
    pub max_lease_secs: u32,
    /// `RapidCommit=` (default yes, as networkd): a DISCOVER that asks for
    /// rapid commit (RFC 4039, option 80) is answered with an ACK at once.
    pub rapid_commit: bool,
}

impl Default for DhcpServerConfig {
    fn default() -> Self {
        DhcpServerConfig {
            pool_offset: 0,
            pool_size: 0,
            emit_dns: true,
            dns: Vec::new(),
            emit_router: true,
            default_lease_secs: DEFAULT_LEASE_SECS,
            max_lease_secs: DEFAULT_MAX_LEASE_SECS,
            rapid_commit: true,
        }
    }
}

/// `RouterPreference=` of `[IPv6SendRA]` (RFC 4191).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RouterPreference {
    Low,
    #[default]
    Medium,
    High,
}

/// Default `RouterLifetimeSec=`: 30 min, as networkd.
pub const DEFAULT_ROUTER_LIFETIME_SECS: u32 = 1800;
/// Default `PreferredLifetimeSec=` of an `[IPv6Prefix]`.
pub const DEFAULT_PREFERRED_LIFETIME_SECS: u32 = 1800;
/// Default `ValidLifetimeSec=` of an `[IPv6Prefix]`.
pub const DEFAULT_VALID_LIFETIME_SECS: u32 = 3600;

/// The `[IPv6SendRA]` section, with networkd's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6SendRaConfig {
    /// `RouterLifetimeSec=` (0: not a default router).
    pub router_lifetime_secs: u32,
    /// `RouterPreference=`.
    pub router_preference: RouterPreference,
    /// `Managed=`: the M flag (addresses by DHCPv6; netd runs no DHCPv6).
    pub managed: bool,
    /// `OtherInformation=`: the O flag.
    pub other_information: bool,
    /// `EmitDNS=` (default yes): an RDNSS option.
    pub emit_dns: bool,
    /// `DNS=`: the servers to announce; empty means netd's own address on
    /// the link.
    pub dns: Vec<Ipv6Addr>,
    /// `EmitDomains=` (default yes): a DNSSL option with the search domains
    /// netd knows for the link (see `ra::search_domains`).
    pub emit_domains: bool,
}

impl Default for Ipv6SendRaConfig {
    fn default() -> Self {
        Ipv6SendRaConfig {
            router_lifetime_secs: DEFAULT_ROUTER_LIFETIME_SECS,
            router_preference: RouterPreference::Medium,
            managed: false,
            other_information: false,
            emit_dns: true,
            dns: Vec::new(),
            emit_domains: true,
        }
    }
}

/// One `[IPv6Prefix]` section: a prefix the router advertisements carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6PrefixConfig {
    /// `Prefix=` (host bits zero).
    pub prefix: Ipv6Network,
    /// `AddressAutoconfiguration=` (the A flag, default yes).
    pub autoconf: bool,
    /// `OnLink=` (the L flag, default yes).
    pub on_link: bool,
    /// `PreferredLifetimeSec=`.
    pub preferred_secs: u32,
    /// `ValidLifetimeSec=`.
    pub valid_secs: u32,
    /// `Assign=`: the host side takes `PREFIX::1` of it too (default no).
    pub assign: bool,
}

impl Ipv6PrefixConfig {
    /// A prefix with the defaults.
    pub fn new(prefix: Ipv6Network) -> Self {
        Ipv6PrefixConfig {
            prefix,
            autoconf: true,
            on_link: true,
            preferred_secs: DEFAULT_PREFERRED_LIFETIME_SECS,
            valid_secs: DEFAULT_VALID_LIFETIME_SECS,
            assign: false,
        }
    }
}

/// One parsed `.network` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFile {
    /// The file name (`80-container-ve.network`): what precedence and order
    /// go by.
    pub name: String,
    /// Where it was read from (`(built-in)/NAME` for a built-in template).
    pub path: PathBuf,
    pub matching: Match,
    pub network: Network,
    pub dhcp_server: DhcpServerConfig,
    pub ipv6_send_ra: Ipv6SendRaConfig,
    /// The `[IPv6Prefix]` sections, in file order.
    pub ipv6_prefixes: Vec<Ipv6PrefixConfig>,
}
