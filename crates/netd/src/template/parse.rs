//! Reading one `.network` file: netd's key table (a [`Schema`] of
//! `(section, key, parser)` rows, as systemd's `networkd-network-gperf.gperf`)
//! driven by [`netspawn_common::unitfile::table`], and the value parsers of
//! its keys. Booleans, word lists and time spans are the shared ones of
//! [`netspawn_common::unitfile::values`]; what is here is specific to
//! `.network` files (addresses, DNS servers, address families, globs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use netspawn_common::unitfile::table::{self, Key, Schema};
use netspawn_common::unitfile::values::{self, parse_timespan_usec, Extract};
use netspawn_common::unitfile::{self, parse_boolean};

use super::model::*;
use super::virt::{CONTAINER_IDS, VM_IDS};
use super::NetFileError;

/// `FILE:LINE: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub file: NetworkFile,
    pub warnings: Vec<String>,
}

/// Parses the text of a `.network` file; `file` names it in messages and
/// gives [`NetworkFile::name`].
pub fn parse(text: &str, file: &Path) -> Result<Parsed, NetFileError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = NetworkFile {
        name,
        path: file.to_path_buf(),
        matching: Match::default(),
        network: Network::default(),
        dhcp_server: DhcpServerConfig::default(),
        ipv6_send_ra: Ipv6SendRaConfig::default(),
        ipv6_prefixes: Vec::new(),
    };
    let lines = table::parse(text, &SCHEMA, &mut out).map_err(|e| NetFileError {
        file: file.to_path_buf(),
        line: e.line,
        msg: e.msg,
    })?;
    let mut warnings: Vec<String> = lines
        .into_iter()
        .map(|w| format!("{}:{}: {}", file.display(), w.line, w.msg))
        .collect();
    if out.matching.is_empty() {
        warnings.push(format!(
            "{}: No valid settings found in the [Match] section, the file will match all \
             interfaces. If that is intended, please add Name=* in the [Match] section.",
            file.display()
        ));
    }
    Ok(Parsed {
        file: out,
        warnings,
    })
}

/// Like [`parse`], for the raw bytes of a file: a line that is not UTF-8 is
/// an error naming that line.
pub fn parse_bytes(data: &[u8], file: &Path) -> Result<Parsed, NetFileError> {
    let text = unitfile::decode(data).map_err(|e| NetFileError {
        file: file.to_path_buf(),
        line: e.line,
        msg: e.msg,
    })?;
    parse(text, file)
}

/// The key table.
static SCHEMA: Schema<NetworkFile> = Schema {
    sections: &["Match", "Network", "DHCPServer", "IPv6SendRA", "IPv6Prefix"],
    ignored_sections: IGNORED_SECTIONS,
    ignored_section: |s| format!("Section '{s}' is ignored by netd."),
    keys: KEYS,
    ignored_key: |k, s| format!("Key '{k}' in section '{s}' is ignored by netd."),
};

/// One row per key netd reads, and the keys systemd.network(5) defines that
/// netd accepts and does not act on (warned about as ignored, so the user
/// knows the file is not wrong). [Match] keys netd cannot test make the file
/// match no link.
static KEYS: &[Key<NetworkFile>] = &[
    // [Match]
    Key::parse("Match", "Name", |f, v| {
        patterns(&mut f.matching.name, v, PatternKind::IfName)
    }),
    Key::parse("Match", "Driver", |f, v| {
        patterns(&mut f.matching.driver, v, PatternKind::Word)
    }),
    Key::parse("Match", "Kind", |f, v| {
        patterns(&mut f.matching.kind, v, PatternKind::Word)
    }),
    Key::parse("Match", "Virtualization", |f, v| {
        f.matching.virtualization = parse_virt_condition(v)?;
        Ok(None)
    }),
    Key::parse_key("Match", "MACAddress", untestable),
    Key::parse_key("Match", "PermanentMACAddress", untestable),
    Key::parse_key("Match", "Path", untestable),
    Key::parse_key("Match", "Type", untestable),
    Key::parse_key("Match", "Property", untestable),
    Key::parse_key("Match", "WLANInterfaceType", untestable),
    Key::parse_key("Match", "SSID", untestable),
    Key::parse_key("Match", "BSSID", untestable),
    Key::parse_key("Match", "Host", untestable),
    Key::parse_key("Match", "KernelCommandLine", untestable),
    Key::parse_key("Match", "KernelVersion", untestable),
    Key::parse_key("Match", "Credential", untestable),
    Key::parse_key("Match", "Architecture", untestable),
    Key::parse_key("Match", "Firmware", untestable),
    // [Network]
    Key::parse("Network", "Address", address),
    Key::parse("Network", "DHCPServer", |f, v| {
        f.network.dhcp_server = values::boolean(v)?;
        check_dhcp_subnet(f)?;
        Ok(None)
    }),
    Key::parse("Network", "IPMasquerade", |f, v| {
        let (families, deprecated) = parse_masquerade(v)?;
        f.network.ip_masquerade = families;
        Ok(deprecated.then(|| {
            format!(
                "IPMasquerade={v} is deprecated, and it is handled as \"ipv4\" instead of \"both\". \
                 Please use \"ipv4\" or \"both\"."
            )
        }))
    }),
    Key::parse("Network", "LinkLocalAddressing", |f, v| {
        f.network.link_local_addressing = if v.is_empty() {
            None
        } else {
            Some(parse_families(v)?)
        };
        Ok(None)
    }),
    Key::parse("Network", "DNS", |f, v| {
        if v.is_empty() {
            f.network.dns.clear();
        }
        for word in values::words(v, Extract::PLAIN)? {
            f.network.dns.push(upstream_server(&word)?);
        }
        Ok(None)
    }),
    Key::parse("Network", "DHCP", |f, v| {
        let (families, note) = parse_dhcp_client(v)?;
        f.network.dhcp = families;
        Ok(note)
    }),
    Key::parse("Network", "DNSDefaultRoute", |f, v| {
        f.network.dns_default_route = if v.is_empty() {
            None
        } else {
            Some(values::boolean(v)?)
        };
        Ok(None)
    }),
    Key::parse("Network", "LLMNR", |f, v| {
        f.network.llmnr = match v {
            "" => None,
            "resolve" => Some(false),
            _ => Some(values::boolean(v)?),
        };
        Ok(None)
    }),
    Key::parse("Network", "KeepMaster", |f, v| {
        f.network.keep_master = values::boolean(v)?;
        Ok(None)
    }),
    Key::ignored("Network", "Description"),
    Key::ignored("Network", "RequiredForOnline"),
    Key::ignored("Network", "RequiredFamilyForOnline"),
    Key::ignored("Network", "ActivationPolicy"),
    Key::ignored("Network", "IPv6LinkLocalAddressGenerationMode"),
    Key::ignored("Network", "IPv6StableSecretAddress"),
    Key::ignored("Network", "IPv4LLStartAddress"),
    Key::ignored("Network", "IPv4LLRoute"),
    Key::ignored("Network", "DefaultRouteOnDevice"),
    Key::ignored("Network", "MulticastDNS"),
    Key::ignored("Network", "DNSOverTLS"),
    Key::ignored("Network", "DNSSEC"),
    Key::ignored("Network", "DNSSECNegativeTrustAnchors"),
    Key::ignored("Network", "LLDP"),
    Key::ignored("Network", "EmitLLDP"),
    Key::ignored("Network", "BindCarrier"),
    Key::ignored("Network", "Gateway"),
    Key::ignored("Network", "GatewayOnLink"),
    Key::ignored("Network", "Domains"),
    Key::ignored("Network", "NTP"),
    Key::ignored("Network", "IPForward"),
    Key::ignored("Network", "IPv4Forwarding"),
    Key::ignored("Network", "IPv6Forwarding"),
    Key::ignored("Network", "IPv6PrivacyExtensions"),
    Key::ignored("Network", "IPv6AcceptRA"),
    Key::ignored("Network", "IPv6DuplicateAddressDetection"),
    Key::ignored("Network", "IPv6HopLimit"),
    Key::ignored("Network", "IPv6RetransmissionTimeSec"),
    Key::ignored("Network", "IPv4AcceptLocal"),
    Key::ignored("Network", "IPv4RouteLocalnet"),
    Key::ignored("Network", "IPv4ReversePathFilter"),
    Key::ignored("Network", "IPv4ProxyARP"),
    Key::ignored("Network", "IPv6ProxyNDP"),
    Key::ignored("Network", "IPv6ProxyNDPAddress"),
    Key::parse("Network", "IPv6SendRA", |f, v| {
        f.network.ipv6_send_ra = values::boolean(v)?;
        Ok(None)
    }),
    Key::ignored("Network", "DHCPPrefixDelegation"),
    Key::ignored("Network", "IPv6MTUBytes"),
    Key::ignored("Network", "Bridge"),
    Key::ignored("Network", "Bond"),
    Key::ignored("Network", "VRF"),
    Key::ignored("Network", "IPoIB"),
    Key::ignored("Network", "IPVLAN"),
    Key::ignored("Network", "IPVTAP"),
    Key::ignored("Network", "L2TP"),
    Key::ignored("Network", "MACsec"),
    Key::ignored("Network", "MACVLAN"),
    Key::ignored("Network", "MACVTAP"),
    Key::ignored("Network", "Tunnel"),
    Key::ignored("Network", "VLAN"),
    Key::ignored("Network", "VXLAN"),
    Key::ignored("Network", "Xfrm"),
    Key::ignored("Network", "BatmanAdvanced"),
    Key::ignored("Network", "ConfigureWithoutCarrier"),
    Key::ignored("Network", "IgnoreCarrierLoss"),
    Key::ignored("Network", "KeepConfiguration"),
    // [DHCPServer]
    Key::parse("DHCPServer", "PoolOffset", |f, v| {
        f.dhcp_server.pool_offset = parse_u32(v)?;
        Ok(None)
    }),
    Key::parse("DHCPServer", "PoolSize", |f, v| {
        f.dhcp_server.pool_size = parse_u32(v)?;
        Ok(None)
    }),
    Key::parse("DHCPServer", "EmitDNS", |f, v| {
        f.dhcp_server.emit_dns = values::boolean(v)?;
        Ok(None)
    }),
    Key::parse("DHCPServer", "DNS", |f, v| {
        if v.is_empty() {
            f.dhcp_server.dns.clear();
        }
        for word in values::words(v, Extract::PLAIN)? {
            f.dhcp_server.dns.push(if word == "_server_address" {
                DhcpDns::ServerAddress
            } else {
                DhcpDns::Addr(parse_ipv4(&word)?)
            });
        }
        Ok(None)
    }),
    Key::parse("DHCPServer", "EmitRouter", |f, v| {
        f.dhcp_server.emit_router = values::boolean(v)?;
        Ok(None)
    }),
    Key::parse("DHCPServer", "RapidCommit", |f, v| {
        f.dhcp_server.rapid_commit = values::boolean(v)?;
        Ok(None)
    }),
    Key::parse("DHCPServer", "DefaultLeaseTimeSec", |f, v| {
        f.dhcp_server.default_lease_secs = if v.is_empty() {
            DEFAULT_LEASE_SECS
        } else {
            parse_lease_time(v)?
        };
        Ok(None)
    }),
    Key::parse("DHCPServer", "MaxLeaseTimeSec", |f, v| {
        f.dhcp_server.max_lease_secs = if v.is_empty() {
            DEFAULT_MAX_LEASE_SECS
        } else {
            parse_lease_time(v)?
        };
        Ok(None)
    }),
    // [IPv6SendRA]
    Key::parse("IPv6SendRA", "RouterLifetimeSec", |f, v| {
        f.ipv6_send_ra.router_lifetime_secs = parse_lifetime(v, Some(9000))?;
        Ok(None)
    }),
    Key::parse("IPv6SendRA", "RouterPreference", |f, v| {
        f.ipv6_send_ra.router_preference = match v {
            "high" => RouterPreference::High,
            "medium" | "normal" | "default" => RouterPreference::Medium,
            "low" => RouterPreference::Low,
            _ => {
                return Err(format!(
                    "{v:?} is not one of \"high\", \"medium\" or \"low\""
                ))
            }
        };
        Ok(None)
    }),
    Key::parse("IPv6SendRA", "Managed", |f, v| {
        f.ipv6_send_ra.managed = values::boolean(v)?;
        Ok(None)
    }),
    Key::parse("IPv6SendRA", "OtherInformation", |f, v| {
        f.ipv6_send_ra.other_information = values::boolean(v)?;
        Ok(None)
    }),
    Key::parse("IPv6SendRA", "EmitDNS", |f, v| {
        f.ipv6_send_ra.emit_dns = values::boolean(v)?;
        Ok(None)
    }),
    Key::parse("IPv6SendRA", "DNS", |f, v| {
        if v.is_empty() {
            f.ipv6_send_ra.dns.clear();
        }
        for word in values::words(v, Extract::PLAIN)? {
            f.ipv6_send_ra.dns.push(parse_ipv6_unicast(&word)?);
        }
        Ok(None)
    }),
    Key::parse("IPv6SendRA", "EmitDomains", |f, v| {
        f.ipv6_send_ra.emit_domains = values::boolean(v)?;
        Ok(None)
    }),
    Key::ignored("IPv6SendRA", "RetransmitSec"),
    Key::ignored("IPv6SendRA", "HopLimit"),
    Key::ignored("IPv6SendRA", "UplinkInterface"),
    Key::ignored("IPv6SendRA", "Domains"),
    Key::ignored("IPv6SendRA", "DNSLifetimeSec"),
    Key::ignored("IPv6SendRA", "HomeAgent"),
    Key::ignored("IPv6SendRA", "HomeAgentLifetimeSec"),
    Key::ignored("IPv6SendRA", "HomeAgentPreference"),
    // [IPv6Prefix]: each section starts with its Prefix=; the other keys
    // set the prefix above them.
    Key::parse("IPv6Prefix", "Prefix", |f, v| {
        let p = parse_ra_prefix(v)?;
        f.ipv6_prefixes.push(Ipv6PrefixConfig::new(p));
        Ok(None)
    }),
    Key::parse_key("IPv6Prefix", "AddressAutoconfiguration", |f, k, v| {
        last_prefix(f, k)?.autoconf = values::boolean(v)?;
        Ok(None)
    }),
    Key::parse_key("IPv6Prefix", "OnLink", |f, k, v| {
        last_prefix(f, k)?.on_link = values::boolean(v)?;
        Ok(None)
    }),
    Key::parse_key("IPv6Prefix", "Assign", |f, k, v| {
        last_prefix(f, k)?.assign = values::boolean(v)?;
        Ok(None)
    }),
    Key::parse_key("IPv6Prefix", "PreferredLifetimeSec", |f, k, v| {
        let secs = parse_lifetime(v, None)?;
        last_prefix(f, k)?.preferred_secs = secs;
        Ok(None)
    }),
    Key::parse_key("IPv6Prefix", "ValidLifetimeSec", |f, k, v| {
        let secs = parse_lifetime(v, None)?;
        last_prefix(f, k)?.valid_secs = secs;
        Ok(None)
    }),
    Key::ignored("IPv6Prefix", "Token"),
    Key::ignored("IPv6Prefix", "RouteMetric"),
    Key::ignored("DHCPServer", "ServerAddress"),
    Key::ignored("DHCPServer", "UplinkInterface"),
    Key::ignored("DHCPServer", "EmitNTP"),
    Key::ignored("DHCPServer", "NTP"),
    Key::ignored("DHCPServer", "EmitSIP"),
    Key::ignored("DHCPServer", "SIP"),
    Key::ignored("DHCPServer", "EmitPOP3"),
    Key::ignored("DHCPServer", "POP3"),
    Key::ignored("DHCPServer", "EmitSMTP"),
    Key::ignored("DHCPServer", "SMTP"),
    Key::ignored("DHCPServer", "EmitLPR"),
    Key::ignored("DHCPServer", "LPR"),
    Key::ignored("DHCPServer", "Router"),
    Key::ignored("DHCPServer", "EmitTimezone"),
    Key::ignored("DHCPServer", "Timezone"),
    Key::ignored("DHCPServer", "BootServerAddress"),
    Key::ignored("DHCPServer", "BootServerName"),
    Key::ignored("DHCPServer", "BootFilename"),
    Key::ignored("DHCPServer", "SendOption"),
    Key::ignored("DHCPServer", "SendVendorOption"),
    Key::ignored("DHCPServer", "BindToInterface"),
    Key::ignored("DHCPServer", "RelayTarget"),
    Key::ignored("DHCPServer", "RelayAgentCircuitId"),
    Key::ignored("DHCPServer", "RelayAgentRemoteId"),
    Key::ignored("DHCPServer", "PersistLeases"),
    Key::ignored("DHCPServer", "IPv6OnlyPreferredSec"),
    Key::ignored("DHCPServer", "LocalLeaseDomain"),
];

/// systemd.network(5) sections netd does not read: warned about as ignored
/// rather than unknown, so the user knows the file is not wrong.
const IGNORED_SECTIONS: &[&str] = &[
    "Link",
    "SR-IOV",
    "Address",
    "Neighbor",
    "IPv6AddressLabel",
    "RoutingPolicyRule",
    "NextHop",
    "Route",
    "DHCP",
    "DHCPv4",
    "DHCPv6",
    "DHCPPrefixDelegation",
    "IPv6AcceptRA",
    "DHCPServerStaticLease",
    "IPv6RoutePrefix",
    "IPv6PREF64Prefix",
    "Bridge",
    "BridgeFDB",
    "BridgeMDB",
    "BridgeVLAN",
    "LLDP",
    "CAN",
    "IPoIB",
    "QDisc",
    "NetworkEmulator",
    "TokenBucketFilter",
    "PIE",
    "FlowQueuePIE",
    "StochasticFairBlue",
    "StochasticFairnessQueueing",
    "BFIFO",
    "PFIFO",
    "PFIFOHeadDrop",
    "PFIFOFast",
    "CAKE",
    "ControlledDelay",
    "DeficitRoundRobinScheduler",
    "DeficitRoundRobinSchedulerClass",
    "EnhancedTransmissionSelection",
    "GenericRandomEarlyDetection",
    "FairQueueingControlledDelay",
    "FairQueueing",
    "TrivialLinkEqualizer",
    "HierarchyTokenBucket",
    "HierarchyTokenBucketClass",
    "HeavyHitterFilter",
    "QuickFairQueueing",
    "QuickFairQueueingClass",
];

/// `Address=`: every address is configured on the link (the first IPv4 one
/// serves DHCP, the first IPv6 one DNS and router advertisements). The pool
/// gives a link one subnet per family, so a second pool request of a
/// family is an error.
fn address(f: &mut NetworkFile, value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        f.network.addresses.clear();
        return Ok(None);
    }
    let a = parse_address(value)?;
    if is_pool_request(&a)
        && f.network
            .pool_requests()
            .any(|r| r.is_ipv4() == a.is_ipv4())
    {
        let fam = if a.is_ipv4() { "IPv4" } else { "IPv6" };
        return Err(format!(
            "{value:?} asks for a second {fam} subnet from the pool; netd gives a link one"
        ));
    }
    if let Some(why) = unservable(&a) {
        return Err(format!("{value:?} {why}; it cannot serve a link"));
    }
    f.network.addresses.push(a);
    check_dhcp_subnet(f)?;
    Ok(None)
}

/// The `[IPv6Prefix]` a key after `Prefix=` sets.
fn last_prefix<'a>(f: &'a mut NetworkFile, key: &str) -> Result<&'a mut Ipv6PrefixConfig, String> {
    f.ipv6_prefixes
        .last_mut()
        .ok_or_else(|| format!("{key}= before any Prefix= in [IPv6Prefix]; put Prefix= first"))
}

/// `[IPv6Prefix] Prefix=`: an IPv6 prefix of 64 bits or shorter (SLAAC
/// needs a /64), host bits zero, not link-local, multicast or loopback.
fn parse_ra_prefix(value: &str) -> Result<Ipv6Network, String> {
    let n: Ipv6Network = value
        .parse()
        .map_err(|_| format!("{value:?} is not an IPv6 prefix"))?;
    let ip = n.ip();
    let bits = u128::from(ip);
    if n.prefix() > 64 || n.prefix() < 1 {
        return Err(format!(
            "{value:?}: the prefix length must be between 1 and 64 (addresses are made from              /64s)"
        ));
    }
    if ip != n.network() {
        return Err(format!(
            "{value:?} has host bits set (write {}/{})",
            n.network(),
            n.prefix()
        ));
    }
    if ip.is_multicast() || ip.is_loopback() || ip.is_unspecified() || bits >> 118 == 0x3fa {
        return Err(format!("{value:?} is not a unicast prefix a link can use"));
    }
    Ok(n)
}

/// An IPv6 unicast address (`[IPv6SendRA] DNS=`).
fn parse_ipv6_unicast(word: &str) -> Result<Ipv6Addr, String> {
    let a: Ipv6Addr = word
        .parse()
        .map_err(|_| format!("{word:?} is not an IPv6 address"))?;
    if a.is_multicast() || a.is_unspecified() || a.is_loopback() {
        return Err(format!("{word:?} is not a unicast address"));
    }
    Ok(a)
}

/// A lifetime in whole seconds (a time span; `infinity` is 0xffffffff),
/// at most `max` seconds if given.
fn parse_lifetime(value: &str, max: Option<u32>) -> Result<u32, String> {
    let Some(usec) = parse_timespan_usec(value)? else {
        return match max {
            Some(m) => Err(format!("{value:?} is longer than {m}s")),
            None => Ok(u32::MAX),
        };
    };
    let secs = usec.div_ceil(1_000_000);
    match max {
        Some(m) if secs > u128::from(m) => Err(format!("{value:?} is longer than {m}s")),
        _ => u32::try_from(secs)
            .ok()
            .filter(|s| *s != u32::MAX)
            .ok_or_else(|| format!("{value:?} is too long (use \"infinity\")")),
    }
}

/// Why `a` (a static address or a pool request) cannot be a link's
/// address, if it cannot: the container would otherwise fail later with a
/// DHCP timeout that names nothing.
fn unservable(a: &IpNetwork) -> Option<String> {
    let ip = match a {
        // `::/N` asks the pool; IPv6 statics are kept but not configured.
        IpNetwork::V6(n) if n.ip().is_unspecified() => return None,
        IpNetwork::V6(n) if n.ip().is_loopback() => return Some("is a loopback address".into()),
        IpNetwork::V6(n) if n.ip().is_multicast() => return Some("is a multicast address".into()),
        IpNetwork::V6(_) => return None,
        // `0.0.0.0/N` asks the pool for a subnet.
        IpNetwork::V4(n) if n.ip().is_unspecified() => return None,
        IpNetwork::V4(n) => n,
    };
    let in_net = |net: &str| {
        net.parse::<Ipv4Network>()
            .is_ok_and(|n| n.contains(ip.ip()))
    };
    let class = [
        (
            "0.0.0.0/8",
            "is in 0.0.0.0/8 (\"this network\"; 0.0.0.0/N asks the pool for a subnet)",
        ),
        ("127.0.0.0/8", "is a loopback address"),
        (
            "169.254.0.0/16",
            "is an IPv4 link-local address (169.254.0.0/16)",
        ),
        ("224.0.0.0/4", "is a multicast address"),
        ("255.255.255.255/32", "is the limited broadcast address"),
        ("240.0.0.0/4", "is in the reserved 240.0.0.0/4"),
    ];
    if let Some((_, why)) = class.iter().find(|(net, _)| in_net(net)) {
        return Some((*why).to_string());
    }
    // A /31 (RFC 3021) and a /32 have no network or broadcast address.
    if ip.prefix() <= 30 {
        let subnet = format!("{}/{}", ip.network(), ip.prefix());
        if ip.ip() == ip.network() {
            return Some(format!("is the network address of {subnet}"));
        }
        if ip.ip() == ip.broadcast() {
            return Some(format!("is the broadcast address of {subnet}"));
        }
    }
    None
}

/// `DHCPServer=yes` needs room for clients in the subnet of the link's
/// first IPv4 address (the one that serves DHCP): not a /31 or /32. Checked
/// when either key is set, so the error names the line that made the pair.
fn check_dhcp_subnet(f: &NetworkFile) -> Result<(), String> {
    if !f.network.dhcp_server {
        return Ok(());
    }
    match f.network.addresses.iter().find(|a| a.is_ipv4()) {
        Some(a) if a.prefix() >= 31 => Err(format!(
            "DHCPServer=yes would serve {a} (the link's first IPv4 address), and a /{} has no \
             address to hand out",
            a.prefix()
        )),
        _ => Ok(()),
    }
}

/// A [Network] `DNS=` server netd can forward to: an address, port 53.
/// A port, `%IFNAME` or `#SERVERNAME` (DNS over TLS) is refused: netd's
/// forwarder reads its servers as resolv.conf lines, which have none.
fn upstream_server(word: &str) -> Result<DnsServer, String> {
    let s = parse_dns_server(word)?;
    if s.port.is_some_and(|p| p != 53) || s.ifname.is_some() || s.server_name.is_some() {
        return Err(format!(
            "{word:?}: netd forwards to port 53 of an address only (no port, %interface or \
             #server name)"
        ));
    }
    Ok(s)
}

/// A [Match] key netd cannot test: while one is set, the file matches no
/// link (an empty value unsets it).
fn untestable(f: &mut NetworkFile, key: &str, value: &str) -> Result<Option<String>, String> {
    let list = &mut f.matching.untestable;
    list.retain(|k| k != key);
    if value.is_empty() {
        return Ok(None);
    }
    list.push(key.to_string());
    Ok(Some(format!(
        "Key '{key}' in section 'Match' is not supported by netd; this file will match no link."
    )))
}

// ---------------------------------------------------------------------------
// Values.

/// A boolean or `ipv4`/`ipv6` (`LinkLocalAddressing=`).
fn parse_families(value: &str) -> Result<Families, String> {
    match value {
        "ipv4" => Ok(Families::Ipv4),
        "ipv6" => Ok(Families::Ipv6),
        _ => match parse_boolean(value) {
            Some(true) => Ok(Families::Both),
            Some(false) => Ok(Families::No),
            None => Err(format!("{value:?} is not a boolean, \"ipv4\" or \"ipv6\"")),
        },
    }
}

/// `IPMasquerade=`: `ipv4`, `ipv6`, `both`, `no`, or (deprecated) a boolean,
/// where true means `ipv4` as current networkd; the flag says "deprecated".
/// An empty value means `no`.
fn parse_masquerade(value: &str) -> Result<(Families, bool), String> {
    match value {
        "" => Ok((Families::No, false)),
        "ipv4" => Ok((Families::Ipv4, false)),
        "ipv6" => Ok((Families::Ipv6, false)),
        "both" => Ok((Families::Both, false)),
        _ => match parse_boolean(value) {
            Some(true) => Ok((Families::Ipv4, true)),
            Some(false) => Ok((Families::No, false)),
            None => Err(format!(
                "{value:?} is not one of \"ipv4\", \"ipv6\", \"both\" or \"no\""
            )),
        },
    }
}

/// `DHCP=`: a boolean, `ipv4` or `ipv6`; the old `both`, `v4`, `v6` are
/// accepted with a warning, as networkd. An empty value means `no`.
fn parse_dhcp_client(value: &str) -> Result<(Families, Option<String>), String> {
    let deprecated = |f: Families, instead: &str| {
        Ok((
            f,
            Some(format!(
                "DHCP={value} is deprecated, please use DHCP={instead} instead."
            )),
        ))
    };
    match value {
        "" => Ok((Families::No, None)),
        "ipv4" => Ok((Families::Ipv4, None)),
        "ipv6" => Ok((Families::Ipv6, None)),
        "both" => deprecated(Families::Both, "yes"),
        "v4" => deprecated(Families::Ipv4, "ipv4"),
        "v6" => deprecated(Families::Ipv6, "ipv6"),
        _ => match parse_boolean(value) {
            Some(true) => Ok((Families::Both, None)),
            Some(false) => Ok((Families::No, None)),
            None => Err(format!("{value:?} is not a boolean, \"ipv4\" or \"ipv6\"")),
        },
    }
}

fn parse_u32(value: &str) -> Result<u32, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{value:?} is not a number"));
    }
    value
        .parse()
        .map_err(|_| format!("{value:?} is out of range (0...{})", u32::MAX))
}

fn parse_ipv4(word: &str) -> Result<Ipv4Addr, String> {
    word.parse()
        .map_err(|_| format!("{word:?} is not an IPv4 address"))
}

/// `ADDR[/PREFIX]`; the prefix defaults to the full length (networkd's
/// `in_addr_prefix_from_string_auto()`). A pool request (`0.0.0.0/N`,
/// `::/N`) needs `N` of at least 8 for IPv4 and 64 for IPv6, as networkd.
fn parse_address(value: &str) -> Result<IpNetwork, String> {
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{p:?} is not a prefix length"));
            }
            let n: u8 = p
                .parse()
                .map_err(|_| format!("{p:?} is not a prefix length"))?;
            if n > max {
                return Err(format!("prefix length {n} is longer than {max}"));
            }
            n
        }
    };
    if ip.is_unspecified() {
        let min = if ip.is_ipv4() { 8 } else { 64 };
        if prefix < min {
            return Err(format!(
                "an address from the pool needs a prefix length of at least {min}, not {prefix}"
            ));
        }
    }
    let net = match ip {
        IpAddr::V4(a) => Ipv4Network::new(a, prefix).map(IpNetwork::V4),
        IpAddr::V6(a) => Ipv6Network::new(a, prefix).map(IpNetwork::V6),
    };
    net.map_err(|e| e.to_string())
}

/// One [Network] `DNS=` word: `ADDR`, `V4:PORT`, `[V6]:PORT`, then optional
/// `%IFNAME` and `#SERVERNAME`.
fn parse_dns_server(word: &str) -> Result<DnsServer, String> {
    let bad = || format!("{word:?} is not a DNS server address");
    let (rest, server_name) = match word.split_once('#') {
        Some((r, s)) if !s.is_empty() => (r, Some(s.to_string())),
        Some(_) => return Err(bad()),
        None => (word, None),
    };
    let (rest, ifname) = match rest.split_once('%') {
        Some((r, i)) if ifname_is_valid(i) => (r, Some(i.to_string())),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    let parse_port = |p: &str| -> Result<u16, String> {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad()),
            Ok(port) => Ok(port),
        }
    };
    let (addr, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (a, after) = inner.split_once(']').ok_or_else(bad)?;
        let a: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':').ok_or_else(bad)?)?),
        };
        (IpAddr::V6(a), port)
    } else if let Ok(a) = rest.parse::<IpAddr>() {
        (a, None)
    } else {
        let (a, p) = rest.split_once(':').ok_or_else(bad)?;
        let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
        (IpAddr::V4(a), Some(parse_port(p)?))
    };
    Ok(DnsServer {
        addr,
        port,
        ifname,
        server_name,
    })
}

/// `Virtualization=`: `[!]VALUE`; empty clears.
fn parse_virt_condition(value: &str) -> Result<Option<VirtCondition>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let (negate, v) = match value.strip_prefix('!') {
        Some(v) => (true, v),
        None => (false, value),
    };
    let known = parse_boolean(v).is_some()
        || matches!(v, "vm" | "container" | "private-users")
        || VM_IDS.contains(&v)
        || CONTAINER_IDS.contains(&v);
    if !known {
        return Err(format!("{v:?} is not a virtualization technology"));
    }
    Ok(Some(VirtCondition {
        value: v.to_string(),
        negate,
    }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PatternKind {
    /// `Name=`: words split as networkd's `config_parse_match_ifnames()`
    /// (`extract_first_word()` without flags: no unquoting), each a valid
    /// interface (alternative) name apart from glob characters.
    IfName,
    /// `Driver=`, `Kind=`: words split as `config_parse_match_strv()`
    /// (`EXTRACT_UNQUOTE|EXTRACT_RETAIN_ESCAPE`): they may be quoted.
    Word,
}

/// networkd's `config_parse_match_strv()`/`config_parse_match_ifnames()`:
/// a whitespace-separated list; a leading `!` negates every word of this
/// assignment; the list accumulates over lines; an empty value resets it.
fn patterns(
    list: &mut Vec<Pattern>,
    value: &str,
    kind: PatternKind,
) -> Result<Option<String>, String> {
    if value.is_empty() {
        list.clear();
        return Ok(None);
    }
    let (negate, rest) = match value.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, value),
    };
    let words = values::words(
        rest,
        match kind {
            PatternKind::IfName => Extract::PLAIN,
            PatternKind::Word => Extract::STRV,
        },
    )?;
    if words.is_empty() {
        return Err(format!("{value:?} has no pattern after '!'"));
    }
    for glob in words {
        if kind == PatternKind::IfName && !ifname_is_valid(&glob) {
            return Err(format!("{glob:?} is not a valid interface name or pattern"));
        }
        list.push(Pattern { glob, negate });
    }
    Ok(None)
}

/// An interface name as networkd's `ifname_valid_full(...,
/// IFNAME_VALID_ALTERNATIVE)` accepts it: 1 to 127 bytes, no `/`, `:` or
/// whitespace, not `.` or `..`.
fn ifname_is_valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 127
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// A lease time: a systemd time span (seconds when no unit is given),
/// rounded up to whole seconds, at least 1s; `infinity` is
/// [`INFINITE_LEASE`].
fn parse_lease_time(value: &str) -> Result<u32, String> {
    let usec = parse_timespan_usec(value)?;
    let Some(usec) = usec else {
        return Ok(INFINITE_LEASE);
    };
    let secs = usec.div_ceil(1_000_000);
    if secs == 0 {
        return Err(format!("{value:?} is shorter than 1s"));
    }
    if secs >= u128::from(INFINITE_LEASE) {
        return Err(format!("{value:?} is too long (use \"infinity\")"));
    }
    u32::try_from(secs).map_err(|_| format!("{value:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::testutil::{link, ok, p};
    use crate::template::{Virtualization, BUILTIN, LONG_LINE_MAX};

    #[test]
    fn every_key() {
        let text = "\
[Match]
Name=ve-* vz-*
Driver=veth
Kind=veth bridge
Virtualization=!container

[Network]
Address=0.0.0.0/28
Address=::/64
Address=192.168.5.1/24
Address=10.1.2.3
DHCPServer=yes
IPMasquerade=both
LinkLocalAddressing=ipv6
DNS=1.1.1.1 [2001:db8::1]:53
DNS=9.9.9.9:53
DHCP=ipv4
KeepMaster=yes
DNSDefaultRoute=no
LLMNR=resolve

[DHCPServer]
PoolOffset=10
PoolSize=20
EmitDNS=no
DNS=_server_address 8.8.8.8
EmitRouter=false
DefaultLeaseTimeSec=30min
MaxLeaseTimeSec=2h 30min
RapidCommit=no
";
        let parsed = ok(text);
        assert_eq!(parsed.warnings, Vec::<String>::new());
        let f = parsed.file;
        assert_eq!(f.name, "t.network");
        let pat = |g: &str| Pattern {
            glob: g.into(),
            negate: false,
        };
        assert_eq!(f.matching.name, vec![pat("ve-*"), pat("vz-*")]);
        assert_eq!(f.matching.driver, vec![pat("veth")]);
        assert_eq!(f.matching.kind, vec![pat("veth"), pat("bridge")]);
        assert_eq!(
            f.matching.virtualization,
            Some(VirtCondition {
                value: "container".into(),
                negate: true
            })
        );
        let n = &f.network;
        let addrs: Vec<String> = n.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            ["0.0.0.0/28", "::/64", "192.168.5.1/24", "10.1.2.3/32"]
        );
        assert_eq!(n.pool_requests().count(), 2);
        assert_eq!(n.static_addresses().count(), 2);
        assert!(n.dhcp_server);
        assert_eq!(n.ip_masquerade, Families::Both);
        assert_eq!(n.link_local(), Families::Ipv6);
        assert_eq!(
            n.dns,
            vec![
                DnsServer {
                    addr: "1.1.1.1".parse().unwrap(),
                    port: None,
                    ifname: None,
                    server_name: None
                },
                DnsServer {
                    addr: "2001:db8::1".parse().unwrap(),
                    port: Some(53),
                    ifname: None,
                    server_name: None
                },
                DnsServer {
                    addr: "9.9.9.9".parse().unwrap(),
                    port: Some(53),
                    ifname: None,
                    server_name: None
                },
            ]
        );
        assert_eq!(n.dhcp, Families::Ipv4);
        assert!(n.keep_master);
        assert_eq!(n.dns_default_route, Some(false));
        assert_eq!(n.llmnr, Some(false));
        let d = &f.dhcp_server;
        assert_eq!(d.pool_offset, 10);
        assert_eq!(d.pool_size, 20);
        assert!(!d.emit_dns);
        assert_eq!(
            d.dns,
            vec![
                DhcpDns::ServerAddress,
                DhcpDns::Addr(Ipv4Addr::new(8, 8, 8, 8))
            ]
        );
        assert!(!d.emit_router);
        assert_eq!(d.default_lease_secs, 1800);
        assert_eq!(d.max_lease_secs, 9000);
        assert!(!d.rapid_commit);
    }

    #[test]
    fn defaults_and_resets() {
        let f = ok("[Match]\nName=x\n").file;
        assert_eq!(f.network, Network::default());
        assert_eq!(f.network.link_local(), Families::Ipv6);
        assert_eq!(f.dhcp_server, DhcpServerConfig::default());
        assert!(f.dhcp_server.emit_dns && f.dhcp_server.emit_router && f.dhcp_server.rapid_commit);
        assert_eq!(f.dhcp_server.default_lease_secs, 3600);
        assert_eq!(f.dhcp_server.max_lease_secs, 43200);

        let f = ok("[Match]\nName=x\n[Network]\nKeepMaster=yes\n").file;
        assert_eq!(f.network.link_local(), Families::No);

        let f = ok("\
[Match]
Name=x
[Network]
Address=10.0.0.1/24
Address=
Address=10.0.0.2/24
DNS=1.1.1.1
DNS=
LinkLocalAddressing=no
LinkLocalAddressing=
IPMasquerade=both
IPMasquerade=
DHCP=yes
DHCP=
[DHCPServer]
DNS=1.1.1.1
DNS=
DefaultLeaseTimeSec=5
DefaultLeaseTimeSec=
MaxLeaseTimeSec=5
MaxLeaseTimeSec=
")
        .file;
        assert_eq!(f.network.addresses.len(), 1);
        assert!(f.network.dns.is_empty());
        assert_eq!(f.network.link_local_addressing, None);
        assert_eq!(f.network.ip_masquerade, Families::No);
        assert_eq!(f.network.dhcp, Families::No);
        assert_eq!(f.dhcp_server, DhcpServerConfig::default());
    }

    #[test]
    fn family_values() {
        let table: &[(&str, &str, Families)] = &[
            ("IPMasquerade", "ipv4", Families::Ipv4),
            ("IPMasquerade", "ipv6", Families::Ipv6),
            ("IPMasquerade", "both", Families::Both),
            ("IPMasquerade", "no", Families::No),
            ("IPMasquerade", "yes", Families::Ipv4),
            ("IPMasquerade", "true", Families::Ipv4),
            ("LinkLocalAddressing", "yes", Families::Both),
            ("LinkLocalAddressing", "ipv4", Families::Ipv4),
            ("LinkLocalAddressing", "off", Families::No),
            ("DHCP", "yes", Families::Both),
            ("DHCP", "ipv6", Families::Ipv6),
            ("DHCP", "both", Families::Both),
            ("DHCP", "v4", Families::Ipv4),
            ("DHCP", "0", Families::No),
        ];
        for (key, value, want) in table {
            let f = ok(&format!("[Match]\nName=x\n[Network]\n{key}={value}\n")).file;
            let got = match *key {
                "IPMasquerade" => f.network.ip_masquerade,
                "LinkLocalAddressing" => f.network.link_local(),
                _ => f.network.dhcp,
            };
            assert_eq!(got, *want, "{key}={value}");
        }
        assert!(Families::Both.ipv4() && Families::Both.ipv6());
        assert!(Families::Ipv4.ipv4() && !Families::Ipv4.ipv6());
        assert!(!Families::No.ipv4() && !Families::No.ipv6());
    }

    #[test]
    fn warnings() {
        let f = "/etc/netspawn/network/t.network";
        let table: &[(&str, &str)] = &[
            (
                "[Match]\nName=x\n[Network]\nFoo=1\n",
                ":4: Unknown key name 'Foo' in section 'Network', ignoring.",
            ),
            (
                "[Match]\nName=x\n[DHCPServer]\nFoo=1\n",
                ":4: Unknown key name 'Foo' in section 'DHCPServer', ignoring.",
            ),
            (
                "[Match]\nName=x\nFoo=1\n",
                ":3: Unknown key name 'Foo' in section 'Match', ignoring.",
            ),
            (
                "[Match]\nName=x\n[Bogus]\nFoo=1\n",
                ":3: Unknown section 'Bogus'. Ignoring.",
            ),
            (
                "[Match]\nName=x\n[Network]\nLLDP=yes\n",
                ":4: Key 'LLDP' in section 'Network' is ignored by netd.",
            ),
            (
                "[Match]\nName=x\n[DHCPServer]\nRouter=1.2.3.4\n",
                ":4: Key 'Router' in section 'DHCPServer' is ignored by netd.",
            ),
            (
                "[Match]\nName=x\n[DHCP]\nUseTimezone=yes\n",
                ":3: Section 'DHCP' is ignored by netd.",
            ),
            (
                "[Match]\nName=x\n[Network]\nIPMasquerade=yes\n",
                ":4: IPMasquerade=yes is deprecated, and it is handled as \"ipv4\" instead of \
                 \"both\". Please use \"ipv4\" or \"both\".",
            ),
            (
                "[Match]\nName=x\n[Network]\nDHCP=both\n",
                ":4: DHCP=both is deprecated, please use DHCP=yes instead.",
            ),
            (
                "[Match]\nPath=pci-*\n",
                ":2: Key 'Path' in section 'Match' is not supported by netd; this file will \
                 match no link.",
            ),
            (
                "[Network]\nDHCP=yes\n",
                ": No valid settings found in the [Match] section, the file will match all \
                 interfaces. If that is intended, please add Name=* in the [Match] section.",
            ),
            (
                "[Match]\nName=x\n[Network]\nFo\\u{1}o=1\n",
                ":4: Unknown key name 'Fo\\\\u{1}o' in section 'Network', ignoring.",
            ),
        ];
        for (text, want) in table {
            let parsed = ok(text);
            assert_eq!(parsed.warnings, vec![format!("{f}{want}")], "{text:?}");
        }
        // X- keys and sections are silent.
        let parsed = ok("[Match]\nName=x\nX-Foo=1\n[X-Mine]\nBar=2\n[Network]\nX-Baz=3\n");
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    }

    #[test]
    fn addresses_that_cannot_serve_a_link_are_refused_with_their_line() {
        let refused: &[(&str, usize, &str)] = &[
            ("Address=127.0.0.1/8", 3, "is a loopback address"),
            ("Address=127.1.2.3", 3, "is a loopback address"),
            ("Address=::1", 3, "is a loopback address"),
            ("Address=::1/64", 3, "is a loopback address"),
            ("Address=ff02::1/64", 3, "is a multicast address"),
            ("Address=224.0.0.1/24", 3, "is a multicast address"),
            ("Address=239.255.255.250/32", 3, "is a multicast address"),
            (
                "Address=255.255.255.255/32",
                3,
                "is the limited broadcast address",
            ),
            ("Address=240.0.0.1/24", 3, "is in the reserved 240.0.0.0/4"),
            ("Address=250.1.2.3/8", 3, "is in the reserved 240.0.0.0/4"),
            ("Address=169.254.1.1/16", 3, "is an IPv4 link-local address"),
            ("Address=169.254.7.7/24", 3, "is an IPv4 link-local address"),
            ("Address=0.1.2.3/8", 3, "is in 0.0.0.0/8"),
            ("Address=0.0.0.1/24", 3, "is in 0.0.0.0/8"),
            (
                "Address=192.168.1.0/24",
                3,
                "is the network address of 192.168.1.0/24",
            ),
            (
                "Address=192.168.1.255/24",
                3,
                "is the broadcast address of 192.168.1.0/24",
            ),
            (
                "Address=10.0.0.0/8",
                3,
                "is the network address of 10.0.0.0/8",
            ),
            (
                "Address=10.0.0.4/30",
                3,
                "is the network address of 10.0.0.4/30",
            ),
            (
                "Address=10.0.0.7/30",
                3,
                "is the broadcast address of 10.0.0.4/30",
            ),
            (
                "Address=10.0.1.255/23",
                3,
                "is the broadcast address of 10.0.0.0/23",
            ),
            // A later line counts too, and an earlier good one does not hide it.
            (
                "Address=10.0.0.1/24\nAddress=127.0.0.1/8",
                4,
                "\"127.0.0.1/8\" is a loopback address; it cannot serve a link",
            ),
            // DHCPServer=yes on a /31 or /32, whichever key comes second.
            (
                "DHCPServer=yes\nAddress=10.0.0.1/32",
                4,
                "Invalid Address= value: DHCPServer=yes would serve 10.0.0.1/32",
            ),
            (
                "Address=10.0.0.1/32\nDHCPServer=yes",
                4,
                "Invalid DHCPServer= value: DHCPServer=yes would serve 10.0.0.1/32",
            ),
            (
                "Address=10.1.2.3\nDHCPServer=yes",
                4,
                "a /32 has no address",
            ),
            (
                "Address=10.0.0.0/31\nDHCPServer=yes",
                4,
                "a /31 has no address",
            ),
            (
                "DHCPServer=yes\nAddress=0.0.0.0/31",
                4,
                "a /31 has no address",
            ),
            (
                "DHCPServer=yes\nAddress=0.0.0.0/32",
                4,
                "a /32 has no address",
            ),
            // The first IPv4 address is the one that serves.
            (
                "DHCPServer=yes\nAddress=fd00::1/64\nAddress=10.0.0.1/32\nAddress=10.0.1.1/24",
                5,
                "would serve 10.0.0.1/32",
            ),
        ];
        for (body, line, msg) in refused {
            let text = format!("[Match]\n[Network]\n{body}\n");
            let e = match p(&text) {
                Ok(parsed) => panic!("{body:?} parsed: {:?}", parsed.file.network),
                Err(e) => e,
            };
            assert_eq!(e.line, *line, "{body:?}: {e}");
            assert!(e.msg.contains(msg), "{body:?}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("/etc/netspawn/network/t.network:{line}: ")),
                "{e}"
            );
        }
        let accepted = [
            "Address=10.0.0.1/24\nDHCPServer=yes",
            "Address=192.168.1.1/24",
            "Address=192.168.1.254/24",
            "Address=10.0.0.255/23",
            "Address=10.0.0.5/30\nDHCPServer=yes",
            "Address=10.0.0.0/31",
            "Address=10.0.0.1/31",
            "Address=10.1.2.3",
            "Address=10.1.2.3/32",
            "Address=100.64.0.1/10",
            "Address=172.16.0.1/12",
            "Address=0.0.0.0/8",
            "Address=0.0.0.0/28\nDHCPServer=yes",
            "Address=0.0.0.0/30\nDHCPServer=yes",
            "Address=0.0.0.0/32",
            "Address=::/64",
            "Address=fd00::1/64",
            "Address=fe80::1/64",
            // The serving address is the first IPv4 one; a /32 after it is fine.
            "DHCPServer=yes\nAddress=10.0.0.1/24\nAddress=10.0.5.1/32",
            "Address=10.0.0.1/32\nDHCPServer=no",
            "Address=10.0.0.1/32\nAddress=\nAddress=10.0.0.1/24\nDHCPServer=yes",
        ];
        for body in accepted {
            ok(&format!("[Match]\nName=x\n[Network]\n{body}\n"));
        }
        // The built-in templates stay valid.
        for (_, text) in BUILTIN {
            ok(text);
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let table: &[(&str, usize, &str)] = &[
            (
                "Name=x\n",
                1,
                "Assignment outside of any section: \"Name=x\"",
            ),
            ("[Match\n", 1, "Invalid section header \"[Match\""),
            ("[Ma\"tch]\n", 1, "Bad characters in section header"),
            ("[Match]\nName\n", 2, "Missing '=' in \"Name\""),
            ("[Match]\n=x\n", 2, "Missing key name before '='"),
            (
                "[Match]\nName=a/b\n",
                2,
                "Invalid Name= value: \"a/b\" is not a valid",
            ),
            ("[Match]\nName=a:b\n", 2, "Invalid Name= value"),
            (
                "[Match]\nName=!\n",
                2,
                "Invalid Name= value: \"!\" has no pattern",
            ),
            (
                "[Match]\nKind=\"veth\n",
                2,
                "Invalid Kind= value: \"\\\"veth\" has an unterminated quote",
            ),
            (
                "[Match]\nVirtualization=cloud\n",
                2,
                "Invalid Virtualization= value",
            ),
            (
                "[Network]\nAddress=10.0.0.300/24\n",
                2,
                "Invalid Address= value",
            ),
            (
                "[Network]\nAddress=10.0.0.1/33\n",
                2,
                "prefix length 33 is longer than 32",
            ),
            (
                "[Network]\nAddress=::1/129\n",
                2,
                "prefix length 129 is longer than 128",
            ),
            (
                "[Network]\nAddress=10.0.0.1/\n",
                2,
                "is not a prefix length",
            ),
            (
                "[Network]\nAddress=10.0.0.1/+4\n",
                2,
                "is not a prefix length",
            ),
            ("[Network]\nAddress=0.0.0.0/7\n", 2, "at least 8, not 7"),
            ("[Network]\nAddress=::/48\n", 2, "at least 64, not 48"),
            (
                "[Network]\nAddress=web\n",
                2,
                "\"web\" is not an IP address",
            ),
            (
                "[Network]\nDHCPServer=maybe\n",
                2,
                "Invalid DHCPServer= value: \"maybe\" is not a boolean",
            ),
            ("[Network]\nDHCPServer=\n", 2, "Invalid DHCPServer= value"),
            (
                "[Network]\nIPMasquerade=all\n",
                2,
                "Invalid IPMasquerade= value",
            ),
            (
                "[Network]\nLinkLocalAddressing=fallback\n",
                2,
                "Invalid LinkLocalAddressing=",
            ),
            ("[Network]\nDHCP=ipv5\n", 2, "Invalid DHCP= value"),
            ("[Network]\nKeepMaster=2\n", 2, "Invalid KeepMaster= value"),
            (
                "[Network]\nDNS=1.1.1.1 nope\n",
                2,
                "\"nope\" is not a DNS server address",
            ),
            ("[Network]\nDNS=1.1.1.1:0\n", 2, "Invalid DNS= value"),
            (
                "[Network]\nDNS=1.1.1.1:5353\n",
                2,
                "Invalid DNS= value: \"1.1.1.1:5353\": netd forwards to port 53 of an address only",
            ),
            (
                "[Network]\nDNS=fe80::1%eth0\n",
                2,
                "Invalid DNS= value: \"fe80::1%eth0\": netd forwards",
            ),
            (
                "[Network]\nDNS=1.1.1.1#dns.example\n",
                2,
                "Invalid DNS= value: \"1.1.1.1#dns.example\": netd forwards",
            ),
            (
                "[Network]\nAddress=0.0.0.0/28\nAddress=::/64\nAddress=0.0.0.0/24\n",
                4,
                "Invalid Address= value: \"0.0.0.0/24\" asks for a second IPv4 subnet from the pool",
            ),
            ("[Network]\nDNS=1.1.1.1:99999\n", 2, "Invalid DNS= value"),
            ("[Network]\nDNS=[::1\n", 2, "Invalid DNS= value"),
            ("[Network]\nDNS=1.1.1.1#\n", 2, "Invalid DNS= value"),
            ("[Network]\nDNS=1.1.1.1%\n", 2, "Invalid DNS= value"),
            (
                "[DHCPServer]\nPoolOffset=-1\n",
                2,
                "Invalid PoolOffset= value: \"-1\" is not a number",
            ),
            ("[DHCPServer]\nPoolSize=4294967296\n", 2, "is out of range"),
            ("[DHCPServer]\nPoolSize=\n", 2, "Invalid PoolSize= value"),
            ("[Network]\nLLMNR=perhaps\n", 2, "Invalid LLMNR= value"),
            (
                "[Network]\nDNSDefaultRoute=perhaps\n",
                2,
                "Invalid DNSDefaultRoute= value",
            ),
            (
                "[DHCPServer]\nEmitDNS=perhaps\n",
                2,
                "Invalid EmitDNS= value",
            ),
            (
                "[DHCPServer]\nEmitRouter=\n",
                2,
                "Invalid EmitRouter= value",
            ),
            (
                "[DHCPServer]\nDNS=::1\n",
                2,
                "Invalid DNS= value: \"::1\" is not an IPv4 address",
            ),
            (
                "[DHCPServer]\nDefaultLeaseTimeSec=1 fortnight\n",
                2,
                "is not a time span",
            ),
            ("[DHCPServer]\nMaxLeaseTimeSec=0\n", 2, "is shorter than 1s"),
            ("[DHCPServer]\nMaxLeaseTimeSec=200y\n", 2, "is too long"),
            (
                "[Match]\nName=x\n\n# c\n[Network]\nDHCPServer=x\n",
                6,
                "Invalid DHCPServer=",
            ),
            // A continued line is reported at its last physical line.
            (
                "[Network]\nDHCPServer=y\\\nes\\\nx\n",
                4,
                "Invalid DHCPServer=",
            ),
            ("[Match]\nName=a\0b\n", 2, "line contains a NUL byte"),
        ];
        for (text, line, msg) in table {
            let e = match p(text) {
                Ok(parsed) => panic!("{text:?} parsed: {parsed:?}"),
                Err(e) => e,
            };
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.msg.contains(msg), "{text:?}: {e}");
            let shown = e.to_string();
            assert!(
                shown.starts_with(&format!("/etc/netspawn/network/t.network:{line}: ")),
                "{shown}"
            );
            assert!(!shown.contains('\n'), "{shown:?}");
        }
    }

    /// Word lists are split as networkd splits them: `Kind=`/`Driver=`
    /// unquote (anywhere in a word, as `extract_first_word()`), `Name=` and
    /// `DNS=` take quotes literally; a backslash escapes the next character.
    #[test]
    fn words_as_networkd() {
        let globs = |l: &[Pattern]| l.iter().map(|p| p.glob.clone()).collect::<Vec<_>>();
        let f = ok("[Match]\nKind=\"veth\"x 'a b' c\\ d\nName=\"ve-web\" v\\e-*\n").file;
        assert_eq!(globs(&f.matching.kind), ["vethx", "a b", "c\\ d"]);
        assert_eq!(globs(&f.matching.name), ["\"ve-web\"", "ve-*"]);
        let e = p("[Match]\nName=x\n[Network]\nDNS='1.1.1.1'\n").unwrap_err();
        assert_eq!(
            e.msg,
            "Invalid DNS= value: \"'1.1.1.1'\" is not a DNS server address"
        );
    }

    #[test]
    fn line_syntax() {
        // CRLF, CR, BOM, comments inside a continuation, whitespace around '='.
        let f = ok(
            "\u{feff}[Match]\r\nName = ve-* \\\r\n# comment\r\n  vz-*\r[Network]\rDHCPServer =yes",
        )
        .file;
        assert_eq!(f.matching.name.len(), 2);
        assert!(f.network.dhcp_server);
        // A trailing continuation at end of file still counts.
        let f = ok("[Match]\nName=a \\").file;
        assert_eq!(f.matching.name.len(), 1);
        // An escaped backslash does not continue the line.
        let e = p("[Match]\nName=a\\\\\n[Network]\nDHCPServer=q\n").unwrap_err();
        assert_eq!(e.line, 4);
        // Not UTF-8: the line is named.
        let e = parse_bytes(b"[Match]\nName=x\r\nKind=\xff\n", Path::new("f.network")).unwrap_err();
        assert_eq!(e.to_string(), "f.network:3: line is not valid UTF-8");
        // Overlong lines are refused.
        let long = format!("[Match]\nName={}\n", "a".repeat(LONG_LINE_MAX));
        assert!(p(&long).unwrap_err().msg.contains("longer than"));
    }

    #[test]
    fn time_spans() {
        let table: &[(&str, Option<u32>)] = &[
            ("3600", Some(3600)),
            ("1h", Some(3600)),
            ("30min", Some(1800)),
            ("30 min", Some(1800)),
            ("2hours", Some(7200)),
            ("48hr", Some(172_800)),
            ("1h 30min", Some(5400)),
            ("55s500ms", Some(56)),
            ("1.5h", Some(5400)),
            ("0.5", Some(1)),
            ("1ms", Some(1)),
            ("1d", Some(86400)),
            ("1w", Some(604_800)),
            ("1M", Some(2_629_800)),
            ("1m", Some(60)),
            ("1y", Some(31_557_600)),
            ("100us", Some(1)),
            ("infinity", Some(INFINITE_LEASE)),
            ("0", None),
            ("0s", None),
            ("", None),
            ("h", None),
            ("1 fortnight", None),
            ("-5", None),
            ("5,3", None),
            ("1.h", Some(3600)),
            ("99999999999999999999999999999999999999999999", None),
            ("137y", None),
            ("136y", Some(4_291_833_600)),
        ];
        for (value, want) in table {
            assert_eq!(parse_lease_time(value).ok(), *want, "{value:?}");
        }
        assert_eq!(parse_timespan_usec("2.5s"), Ok(Some(2_500_000)));
        assert_eq!(
            parse_timespan_usec("300ms20s 5day").map(|u| u.map(|x| x / 1000)),
            Ok(Some(432_020_300))
        );
    }

    #[test]
    fn dns_servers() {
        // (word, Some((address, port, interface, server name)) or None if invalid)
        type Want<'a> = Option<(&'a str, Option<u16>, Option<&'a str>, Option<&'a str>)>;
        let table: &[(&str, Want)] = &[
            ("1.2.3.4", Some(("1.2.3.4", None, None, None))),
            ("1.2.3.4:53", Some(("1.2.3.4", Some(53), None, None))),
            ("::1", Some(("::1", None, None, None))),
            ("[::1]:853", Some(("::1", Some(853), None, None))),
            ("[::1]", Some(("::1", None, None, None))),
            ("fe80::1%eth0", Some(("fe80::1", None, Some("eth0"), None))),
            (
                "1.2.3.4#dns.example",
                Some(("1.2.3.4", None, None, Some("dns.example"))),
            ),
            ("1.2.3.4:1:2", None),
            ("[1.2.3.4]:53", None),
            ("[::1]53", None),
            ("host.example", None),
            ("1.2.3.4:", None),
        ];
        for (word, want) in table {
            let got = parse_dns_server(word).ok();
            let want = want.map(|(a, port, ifname, sni)| DnsServer {
                addr: a.parse().unwrap(),
                port,
                ifname: ifname.map(str::to_string),
                server_name: sni.map(str::to_string),
            });
            assert_eq!(got, want, "{word:?}");
        }
    }

    /// Random and mutated inputs never panic, and errors and warnings stay on
    /// one line naming the file (a stand-in for the fuzz target where
    /// cargo-fuzz cannot run).
    #[test]
    fn random_inputs_never_panic() {
        let seeds: Vec<&[u8]> = vec![
            BUILTIN[0].1.as_bytes(),
            BUILTIN[2].1.as_bytes(),
            b"[Match]\nName=ve-* !vb-[a-z]*\nKind=\"veth\"\n[Network]\nAddress=0.0.0.0/28\nDNS=[::1]:53%lo#x\n[DHCPServer]\nMaxLeaseTimeSec=1.5h 3min\n",
        ];
        let alphabet: &[u8] = b"[]=\\\n\r#;!*?\"' /:%.0123456789abcdefhmsxyzMNPSKDVT-\x00\xff";
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let facts = [
            link("ve-web", Some("veth"), Some("veth")),
            link("vz-lab", Some("bridge"), None),
            link("[]", None, None),
        ];
        for i in 0..100_000u32 {
            let mut data: Vec<u8> = seeds[i as usize % seeds.len()].to_vec();
            let edits = 1 + next() % 8;
            for _ in 0..edits {
                let pos = (next() as usize) % (data.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if pos < data.len() => data[pos] = byte,
                    1 if pos < data.len() => {
                        data.remove(pos);
                    }
                    _ => data.insert(pos, byte),
                }
            }
            match parse_bytes(&data, Path::new("fz.network")) {
                Ok(parsed) => {
                    for w in &parsed.warnings {
                        assert!(w.starts_with("fz.network:") && !w.contains('\n'), "{w:?}");
                    }
                    for l in &facts {
                        let _ = parsed.file.matching.matches(l, &Virtualization::None);
                    }
                }
                Err(e) => {
                    let s = e.to_string();
                    assert!(s.starts_with("fz.network:") && !s.contains('\n'), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn ipv6_send_ra_and_prefixes() {
        let f = ok(
            "[Match]\nName=x\n[Network]\nIPv6SendRA=yes\nAddress=::/64\n\
                    [IPv6SendRA]\nRouterLifetimeSec=10min\nRouterPreference=high\n\
                    Managed=yes\nOtherInformation=yes\nEmitDNS=no\nDNS=fd00::53 2001:db8::1\n\
                    EmitDomains=no\n\
                    [IPv6Prefix]\nPrefix=2001:db8:1::/64\nAssign=yes\nValidLifetimeSec=2h\n\
                    PreferredLifetimeSec=infinity\nOnLink=no\nAddressAutoconfiguration=no\n\
                    [IPv6Prefix]\nPrefix=fd12:3456::/48\n",
        )
        .file;
        assert!(f.network.ipv6_send_ra);
        let ra = &f.ipv6_send_ra;
        assert_eq!(ra.router_lifetime_secs, 600);
        assert_eq!(ra.router_preference, RouterPreference::High);
        assert!(ra.managed && ra.other_information && !ra.emit_dns && !ra.emit_domains);
        assert_eq!(
            ra.dns,
            vec![
                "fd00::53".parse::<Ipv6Addr>().unwrap(),
                "2001:db8::1".parse().unwrap()
            ]
        );
        assert_eq!(f.ipv6_prefixes.len(), 2);
        let p0 = &f.ipv6_prefixes[0];
        assert_eq!(p0.prefix, "2001:db8:1::/64".parse().unwrap());
        assert!(p0.assign && !p0.on_link && !p0.autoconf);
        assert_eq!((p0.valid_secs, p0.preferred_secs), (7200, u32::MAX));
        assert_eq!(
            f.ipv6_prefixes[1],
            Ipv6PrefixConfig::new("fd12:3456::/48".parse().unwrap())
        );
        // Defaults.
        let f = ok("[Match]\nName=x\n").file;
        assert!(!f.network.ipv6_send_ra);
        assert_eq!(f.ipv6_send_ra, Ipv6SendRaConfig::default());
        assert!(f.ipv6_prefixes.is_empty());
    }

    #[test]
    fn invalid_ipv6_keys_are_refused_in_one_line() {
        let table: &[(&str, &str)] = &[
            ("[Network]\nIPv6SendRA=maybe\n", "Invalid IPv6SendRA= value"),
            (
                "[Network]\nAddress=::/64\nAddress=::/80\n",
                "second IPv6 subnet",
            ),
            ("[IPv6Prefix]\nPrefix=fe80::/64\n", "not a unicast prefix"),
            ("[IPv6Prefix]\nPrefix=ff02::/64\n", "not a unicast prefix"),
            ("[IPv6Prefix]\nPrefix=::/64\n", "not a unicast prefix"),
            ("[IPv6Prefix]\nPrefix=fd00::/80\n", "between 1 and 64"),
            ("[IPv6Prefix]\nPrefix=fd00::1/64\n", "has host bits set"),
            (
                "[IPv6Prefix]\nPrefix=10.0.0.0/24\n",
                "is not an IPv6 prefix",
            ),
            ("[IPv6Prefix]\nOnLink=yes\n", "OnLink= before any Prefix="),
            ("[IPv6SendRA]\nRouterLifetimeSec=3h\n", "longer than 9000s"),
            (
                "[IPv6SendRA]\nRouterPreference=urgent\n",
                "Invalid RouterPreference=",
            ),
            ("[IPv6SendRA]\nDNS=10.0.0.1\n", "is not an IPv6 address"),
            ("[IPv6SendRA]\nDNS=ff02::1\n", "is not a unicast address"),
        ];
        for (body, want) in table {
            let text = format!("[Match]\nName=x\n{body}");
            let e = p(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(e.starts_with("/etc/netspawn/network/t.network:"), "{e}");
        }
    }
}
