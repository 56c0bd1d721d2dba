//! The lab a topology file describes, checked: every name resolved to the
//! machine or zone it means (with the lab's prefix), replicas expanded,
//! addresses and routes parsed, `after` free of cycles. Everything a file
//! can get wrong is found here, before anything is created, and named with
//! its `FILE:LINE`. Pure: no I/O but what the caller gives.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use netspawn_common::names::{check_machine_name, ifname_is_valid};

use super::file::{self, CommandSpec, TopologyFile};
use super::impair::Impairment;
use super::TopoError;

/// Most replicas one `count` may ask for.
pub const MAX_COUNT: u32 = 1000;

/// A checked lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    /// The lab's name: the prefix of its machines and zones.
    pub name: String,
    pub file: PathBuf,
    pub zones: Vec<Zone>,
    pub machines: Vec<Machine>,
    pub links: Vec<P2pLink>,
}

/// A zone: the bridge `vz-NAME`, NAME being `LAB-SHORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub short: String,
    pub name: String,
    /// The IPv4 subnet the file pins (its network address); `None`: a /24
    /// of netd's pool.
    pub subnet: Option<Cidr>,
    /// No masquerade, and no names forwarded upstream (an internal zone).
    pub internal: bool,
    /// Router advertisements and a unique local /64 (the default).
    pub ipv6: bool,
}

impl Zone {
    /// Whether the zone needs a `.network` file of its own (anything but
    /// netd's defaults for zones).
    pub fn customized(&self) -> bool {
        self.subnet.is_some() || self.internal || !self.ipv6
    }

    /// The host side's address in a pinned subnet: its first address.
    pub fn host_address(&self) -> Option<std::net::Ipv4Addr> {
        match self.subnet?.addr {
            IpAddr::V4(a) => Some(std::net::Ipv4Addr::from(u32::from(a) + 1)),
            IpAddr::V6(_) => None,
        }
    }
}

/// An address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("'{p}' is not a prefix length (0..{max})"))?;
        Ok(Cidr { addr, prefix })
    }

    /// Whether `a` lies in this address's subnet.
    pub fn contains(&self, a: &IpAddr) -> bool {
        netlink::prefix_contains(&self.addr, self.prefix, a)
    }
}

/// A static route inside a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// `None`: the default route.
    pub to: Option<Cidr>,
    pub via: IpAddr,
}

impl RouteSpec {
    pub fn parse(s: &str) -> Result<RouteSpec, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let [to, "via", via] = words[..] else {
            return Err(format!(
                "route '{s}' is not 'PREFIX via GATEWAY' or 'default via GATEWAY'"
            ));
        };
        let via: IpAddr = via
            .parse()
            .map_err(|_| format!("gateway '{via}' is not an IP address"))?;
        let to = if to == "default" {
            None
        } else {
            Some(Cidr::parse(to)?)
        };
        if let Some(t) = to {
            if t.addr.is_ipv4() != via.is_ipv4() {
                return Err(format!("route '{s}' mixes IPv4 and IPv6"));
            }
        }
        Ok(RouteSpec { to, via })
    }
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to {
            Some(t) => write!(f, "{t} via {}", self.via),
            None => write!(f, "default via {}", self.via),
        }
    }
}

/// When a machine counts as ready beyond running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection to this port on the machine's loopback succeeds.
    Tcp(u16),
    /// This command, run inside the machine by `/bin/sh -c`, exits 0.
    Cmd(String),
}

impl Probe {
    pub fn parse(s: &str) -> Result<Probe, String> {
        if let Some(p) = s.strip_prefix("tcp:") {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .map(Probe::Tcp)
                .ok_or_else(|| format!("'{p}' is not a TCP port"))
        } else if let Some(c) = s.strip_prefix("cmd:") {
            if c.trim().is_empty() {
                Err("wait_for = \"cmd:\" needs a command".into())
            } else {
                Ok(Probe::Cmd(c.to_string()))
            }
        } else {
            Err(format!(
                "wait_for '{s}' is neither \"tcp:PORT\" nor \"cmd:COMMAND\""
            ))
        }
    }
}

/// One machine (a replica of a counted one is a machine of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The name in the file (`web1` for the first replica of `web`).
    pub short: String,
    /// The machine's name: `LAB-SHORT`.
    pub name: String,
    pub image: String,
    pub ephemeral: bool,
    pub user_namespace: bool,
    pub boot: bool,
    /// The payload of a machine that is not booted.
    pub command: Vec<String>,
    /// Zones (full names) with the interface name inside; the first is `host0`.
    pub zones: Vec<(String, String)>,
    /// Static addresses: interface inside, address.
    pub addresses: Vec<(String, Cidr)>,
    pub routes: Vec<RouteSpec>,
    /// Machines (full names) that must be ready first.
    pub after: Vec<String>,
    pub wait_for: Option<Probe>,
    pub notify_ready: bool,
    /// IP forwarding on inside (default: with two or more interfaces).
    pub forward: bool,
    pub settings: Option<String>,
    pub env: Vec<(String, String)>,
    pub exec: Vec<String>,
    pub binds: Vec<String>,
}

impl Machine {
    /// Interfaces inside the machine the file names (zones' and links').
    pub fn interfaces(&self, lab: &Lab) -> Vec<String> {
        let mut v: Vec<String> = self.zones.iter().map(|(_, i)| i.clone()).collect();
        for l in &lab.links {
            for e in [&l.a, &l.b] {
                if e.machine == self.name {
                    v.push(e.ifname.clone());
                }
            }
        }
        v
    }
}

/// One end of a point-to-point link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The machine's full name.
    pub machine: String,
    pub short: String,
    pub ifname: String,
}

/// A point-to-point link (a veth pair, one end in each machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2pLink {
    pub a: Endpoint,
    pub b: Endpoint,
    /// Impairments of the traffic leaving `a`, and leaving `b`.
    pub impair_a: Impairment,
    pub impair_b: Impairment,
}

impl P2pLink {
    /// The link's name in verbs (`a:eth1-b:eth1`, short names).
    pub fn label(&self) -> String {
        format!(
            "{}:{}-{}:{}",
            self.a.short, self.a.ifname, self.b.short, self.b.ifname
        )
    }
}

/// Where errors point.
struct Src<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Src<'_> {
    fn at(&self, span: Range<usize>, msg: impl Into<String>) -> TopoError {
        TopoError::At {
            file: self.path.to_path_buf(),
            line: file::line_of(self.text, span.start),
            msg: msg.into(),
        }
    }
}

/// Parses and checks the topology file `path` whose text is `text`.
pub fn load(path: &Path, text: &str) -> Result<Lab, TopoError> {
    let src = Src { path, text };
    let f = file::parse(text).map_err(|(at, msg)| match at {
        Some(off) => src.at(off..off, msg),
        None => TopoError::File {
            file: path.to_path_buf(),
            msg,
        },
    })?;
    check(&src, f)
}

/// The name a lab gets when its file gives none: the file's name without
/// its extensions (`lab.toml` → `lab`, `x.clab.yml` → `x`).
pub fn default_lab_name(path: &Path) -> String {
    let n = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    n.split('.').next().unwrap_or("").to_string()
}

fn check(src: &Src<'_>, f: TopologyFile) -> Result<Lab, TopoError> {
    let lab_name = match &f.lab.name {
        Some(n) => {
            check_machine_name(n.get_ref())
                .map_err(|e| src.at(n.span(), format!("lab name '{}': {e}", n.get_ref())))?;
            n.get_ref().clone()
        }
        None => {
            let n = default_lab_name(src.path);
            check_machine_name(&n).map_err(|e| TopoError::File {
                file: src.path.to_path_buf(),
                msg: format!("the file's name gives lab name '{n}': {e}; set [lab] name = \"...\""),
            })?;
            n
        }
    };

    // Zones.
    let mut zones = Vec::new();
    for (short, z) in &f.zones {
        let name = format!("{lab_name}-{}", short.get_ref());
        if !ifname_is_valid(&format!("vz-{name}")) || short.get_ref().contains(':') {
            return Err(src.at(
                short.span(),
                format!(
                    "zone '{}': 'vz-{name}' is no valid interface name (lab name + '-' + zone name: at most 12 characters)",
                    short.get_ref()
                ),
            ));
        }
        let subnet =
            match &z.subnet {
                Some(s) => Some(parse_subnet(s.get_ref()).map_err(|msg| {
                    src.at(s.span(), format!("zone '{}': {msg}", short.get_ref()))
                })?),
                None => None,
            };
        if let (Some(c), Some(s)) = (subnet, &z.subnet) {
            if let Some(other) = zones
                .iter()
                .find(|o: &&Zone| o.subnet.is_some_and(|d| overlaps(&c, &d)))
            {
                return Err(src.at(
                    s.span(),
                    format!(
                        "zone '{}': subnet {c} overlaps zone '{}' ({})",
                        short.get_ref(),
                        other.short,
                        other.subnet.map(|d| d.to_string()).unwrap_or_default()
                    ),
                ));
            }
        }
        zones.push(Zone {
            short: short.get_ref().clone(),
            name,
            subnet,
            internal: z.internal.as_ref().is_some_and(|v| *v.get_ref()),
            ipv6: z.ipv6.as_ref().is_none_or(|v| *v.get_ref()),
        });
    }

    // Machines: names first (replicas expanded), so references resolve.
    let mut shorts: BTreeMap<String, Range<usize>> = BTreeMap::new();
    // Short name in the file -> the replicas' short names.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, m) in &f.machines {
        let count = match &m.count {
            Some(c) if *c.get_ref() == 0 || *c.get_ref() > MAX_COUNT => {
                return Err(src.at(c.span(), format!("count must be 1..{MAX_COUNT}")));
            }
            Some(c) => Some(*c.get_ref()),
            None => None,
        };
        let names: Vec<String> = match count {
            None => vec![key.get_ref().clone()],
            Some(n) => (1..=n).map(|i| format!("{}{i}", key.get_ref())).collect(),
        };
        for n in &names {
            let full = format!("{lab_name}-{n}");
            check_machine_name(&full)
                .map_err(|e| src.at(key.span(), format!("machine name '{full}': {e}")))?;
            if let Some(prev) = shorts.insert(n.clone(), key.span()) {
                return Err(src.at(
                    key.span(),
                    format!(
                        "machine '{n}' is declared twice (also at line {})",
                        file::line_of(src.text, prev.start)
                    ),
                ));
            }
        }
        groups.insert(key.get_ref().clone(), names);
    }
    let full = |s: &str| format!("{lab_name}-{s}");

    // Links.
    let mut links = Vec::new();
    // (machine short, ifname) -> where it was named.
    let mut ifaces: BTreeMap<(String, String), Range<usize>> = BTreeMap::new();
    let mut claim = |m: &str, ifname: &str, span: Range<usize>| -> Result<(), TopoError> {
        if let Some(prev) = ifaces.insert((m.to_string(), ifname.to_string()), span.clone()) {
            return Err(src.at(
                span,
                format!(
                    "interface '{ifname}' of machine '{m}' is given twice (also at line {})",
                    file::line_of(src.text, prev.start)
                ),
            ));
        }
        Ok(())
    };
    for l in &f.links {
        let eps = l.endpoints.get_ref();
        let span = l.endpoints.span();
        if eps.len() != 2 {
            return Err(src.at(span, format!("a link has two endpoints, not {}", eps.len())));
        }
        let mut ends = Vec::new();
        for e in eps {
            let Some((m, ifname)) = e.split_once(':') else {
                return Err(src.at(span, format!("endpoint '{e}' is not MACHINE:INTERFACE")));
            };
            if !shorts.contains_key(m) {
                return Err(src.at(
                    span,
                    format!("link endpoint '{e}': no machine '{m}' in this file"),
                ));
            }
            check_ifname(ifname)
                .map_err(|msg| src.at(span.clone(), format!("link endpoint '{e}': {msg}")))?;
            claim(m, ifname, span.clone())?;
            ends.push(Endpoint {
                machine: full(m),
                short: m.to_string(),
                ifname: ifname.to_string(),
            });
        }
        if ends[0].machine == ends[1].machine {
            return Err(src.at(span, "a link joins two different machines"));
        }
        let b = ends.pop().expect("two ends");
        let a = ends.pop().expect("two ends");
        let (mut impair_a, mut impair_b) = (Impairment::default(), Impairment::default());
        if let Some(t) = &l.impair {
            let at = |msg: String| src.at(t.span(), format!("impair: {msg}"));
            for (k, v) in t.get_ref() {
                if let Some(table) = v.as_table() {
                    // Per direction: the end the traffic leaves.
                    let target = if *k == format!("{}:{}", a.short, a.ifname) {
                        &mut impair_a
                    } else if *k == format!("{}:{}", b.short, b.ifname) {
                        &mut impair_b
                    } else {
                        return Err(at(format!("'{k}' is no end of this link")));
                    };
                    for (k2, v2) in table {
                        let val = v2
                            .as_str()
                            .ok_or_else(|| at(format!("{k2}: give a string such as \"10mbit\"")))?;
                        target.set(k2, val).map_err(at)?;
                    }
                } else {
                    let val = v
                        .as_str()
                        .ok_or_else(|| at(format!("{k}: give a string such as \"10mbit\"")))?;
                    impair_a.set(k, val).map_err(at)?;
                    impair_b.set(k, val).map_err(at)?;
                }
            }
        }
        if let Some(t) = &l.impair {
            for imp in [&impair_a, &impair_b] {
                imp.check()
                    .map_err(|msg| src.at(t.span(), format!("impair: {msg}")))?;
            }
        }
        links.push(P2pLink {
            a,
            b,
            impair_a,
            impair_b,
        });
    }

    let mut machines = Vec::new();
    // `forward` as written, per machine (the default needs the links).
    let mut forward = Vec::new();
    for (key, m) in &f.machines {
        let names = &groups[key.get_ref()];
        let image = m
            .image
            .as_ref()
            .or(f.defaults.image.as_ref())
            .map(|s| s.get_ref().clone())
            .ok_or_else(|| {
                src.at(
                    key.span(),
                    format!(
                        "machine '{}' has no image (set image = \"...\" here or in [defaults])",
                        key.get_ref()
                    ),
                )
            })?;
        if image.is_empty() || image.contains('/') && !image.starts_with('/') {
            return Err(src.at(
                key.span(),
                format!("image '{image}': an image name or an absolute path"),
            ));
        }
        let boot = m.boot.or(f.defaults.boot).unwrap_or(false);
        let command = match m.command.as_ref().map(|c| (c.span(), c.get_ref())) {
            Some((span, _)) if boot => {
                return Err(src.at(
                    span,
                    "a booted machine has no command (boot = true runs the image's init)",
                ));
            }
            Some((span, CommandSpec::Argv(v))) if v.is_empty() => {
                return Err(src.at(span, "command is empty"));
            }
            Some((_, CommandSpec::Argv(v))) => v.clone(),
            Some((span, CommandSpec::Shell(s))) if s.trim().is_empty() => {
                return Err(src.at(span, "command is empty"));
            }
            Some((_, CommandSpec::Shell(s))) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            None if boot => Vec::new(),
            None => {
                return Err(src.at(
                    key.span(),
                    format!("machine '{}' needs boot = true or a command", key.get_ref()),
                ))
            }
        };
        // Zones.
        let mut mzones = Vec::new();
        for (i, z) in m.zones.iter().enumerate() {
            let (zname, ifname) = match z.get_ref().split_once(':') {
                Some((zn, ifn)) => (zn.to_string(), ifn.to_string()),
                None => (z.get_ref().clone(), format!("host{i}")),
            };
            let Some(zone) = zones.iter().find(|x| x.short == zname) else {
                return Err(src.at(
                    z.span(),
                    format!("no zone '{zname}' in this file (declare [zones.{zname}])"),
                ));
            };
            if i == 0 && ifname != "host0" {
                return Err(src.at(
                    z.span(),
                    "a machine's first zone is its host0 (name no other interface for it)",
                ));
            }
            if mzones.iter().any(|(zn, _)| *zn == zone.name) {
                return Err(src.at(z.span(), format!("zone '{zname}' is given twice")));
            }
            check_ifname(&ifname).map_err(|msg| src.at(z.span(), msg))?;
            mzones.push((zone.name.clone(), ifname));
        }
        for n in names {
            for (_, ifname) in &mzones {
                claim(n, ifname, key.span())?;
            }
        }
        // Addresses.
        let mut addresses = Vec::new();
        if !m.addresses.is_empty() && names.len() > 1 {
            return Err(src.at(
                key.span(),
                "static addresses cannot be given to replicas (count): each would get the same",
            ));
        }
        for (ifname, list) in &m.addresses {
            let has = mzones.iter().any(|(_, i)| i == ifname.get_ref())
                || links.iter().any(|l| {
                    [&l.a, &l.b]
                        .iter()
                        .any(|e| e.short == names[0] && e.ifname == *ifname.get_ref())
                });
            if !has {
                return Err(src.at(
                    ifname.span(),
                    format!(
                        "machine '{}' has no interface '{}' (its zones and links name them)",
                        names[0],
                        ifname.get_ref()
                    ),
                ));
            }
            let zone = mzones
                .iter()
                .find(|(_, i)| i == ifname.get_ref())
                .and_then(|(zn, _)| zones.iter().find(|z| z.name == *zn));
            for a in list.get_ref().to_vec() {
                let c = Cidr::parse(&a).map_err(|msg| src.at(list.span(), msg))?;
                if let Some(z) = zone {
                    check_in_zone(z, &c).map_err(|msg| {
                        src.at(
                            list.span(),
                            format!("machine '{}', {}: {msg}", names[0], ifname.get_ref()),
                        )
                    })?;
                }
                addresses.push((ifname.get_ref().clone(), c));
            }
        }
        let mut routes = Vec::new();
        for r in &m.routes {
            let spec = RouteSpec::parse(r.get_ref()).map_err(|msg| src.at(r.span(), msg))?;
            let reachable = addresses.iter().any(|(_, c)| c.contains(&spec.via));
            if !reachable && mzones.is_empty() {
                return Err(src.at(
                    r.span(),
                    format!(
                        "route '{spec}': gateway {} is in none of the machine's subnets",
                        spec.via
                    ),
                ));
            }
            routes.push(spec);
        }
        let mut after = Vec::new();
        for a in &m.after {
            let targets: Vec<String> = match groups.get(a.get_ref()) {
                Some(g) => g.clone(),
                None if shorts.contains_key(a.get_ref()) => vec![a.get_ref().clone()],
                None => {
                    return Err(src.at(
                        a.span(),
                        format!("after: no machine '{}' in this file", a.get_ref()),
                    ))
                }
            };
            after.extend(targets.iter().map(|s| full(s)));
        }
        let wait_for = match &m.wait_for {
            Some(w) => Some(Probe::parse(w.get_ref()).map_err(|msg| src.at(w.span(), msg))?),
            None => None,
        };
        let settings = match &m.settings {
            Some(s) => {
                check_settings(s.get_ref()).map_err(|msg| src.at(s.span(), msg))?;
                Some(s.get_ref().clone())
            }
            None => None,
        };
        for n in names {
            forward.push(m.forward);
            machines.push(Machine {
                short: n.clone(),
                name: full(n),
                image: image.clone(),
                ephemeral: m.ephemeral.or(f.defaults.ephemeral).unwrap_or(true),
                user_namespace: m
                    .user_namespace
                    .or(f.defaults.user_namespace)
                    .unwrap_or(true),
                boot,
                command: command.clone(),
                zones: mzones.clone(),
                addresses: addresses.clone(),
                routes: routes.clone(),
                after: after.clone(),
                wait_for: wait_for.clone(),
                notify_ready: m.notify_ready.unwrap_or(false),
                forward: false,
                settings: settings.clone(),
                env: m.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                exec: m.exec.clone(),
                binds: m.binds.clone(),
            });
        }
        for k in m.env.keys() {
            if k.is_empty() || k.contains('=') {
                return Err(src.at(key.span(), format!("env: '{k}' is no variable name")));
            }
        }
    }

    // Addresses of the two ends of a link must share a subnet.
    for l in &links {
        let addr_of = |e: &Endpoint| -> Vec<Cidr> {
            machines
                .iter()
                .filter(|m| m.name == e.machine)
                .flat_map(|m| m.addresses.iter())
                .filter(|(i, _)| *i == e.ifname)
                .map(|(_, c)| *c)
                .collect()
        };
        let (aa, bb) = (addr_of(&l.a), addr_of(&l.b));
        for a in &aa {
            for b in bb.iter().filter(|b| b.addr.is_ipv4() == a.addr.is_ipv4()) {
                if !a.contains(&b.addr) || !b.contains(&a.addr) {
                    return Err(TopoError::File {
                        file: src.path.to_path_buf(),
                        msg: format!(
                            "link {}: address {b} of {}:{} is outside the subnet of {a} at the other end",
                            l.label(),
                            l.b.short,
                            l.b.ifname
                        ),
                    });
                }
                if a.addr == b.addr {
                    return Err(TopoError::File {
                        file: src.path.to_path_buf(),
                        msg: format!("link {}: both ends have address {}", l.label(), a.addr),
                    });
                }
            }
        }
    }

    let mut lab = Lab {
        name: lab_name,
        file: src.path.to_path_buf(),
        zones,
        machines,
        links,
    };
    for (i, set) in forward.into_iter().enumerate() {
        let n = lab.machines[i].interfaces(&lab).len();
        lab.machines[i].forward = set.unwrap_or(n >= 2);
    }
    if let Some(cycle) = after_cycle(&lab) {
        let line = f
            .machines
            .keys()
            .find(|k| groups[k.get_ref()].iter().any(|s| *s == cycle[0]))
            .map(|k| file::line_of(src.text, k.span().start))
            .unwrap_or(1);
        return Err(TopoError::At {
            file: src.path.to_path_buf(),
            line,
            msg: format!("'after' makes a cycle: {}", cycle.join(" -> ")),
        });
    }
    Ok(lab)
}

/// A zone's `subnet`: an IPv4 network address with a prefix of 8 to 30
/// (room for the host's address and the machines').
fn parse_subnet(s: &str) -> Result<Cidr, String> {
    let c = Cidr::parse(s).map_err(|e| format!("subnet {e}"))?;
    let IpAddr::V4(a) = c.addr else {
        return Err(format!(
            "subnet '{s}' is not IPv4 (a zone's IPv6 /64 comes from netd's unique local prefix)"
        ));
    };
    if !(8..=30).contains(&c.prefix) {
        return Err(format!(
            "subnet '{s}': the prefix must be 8..30 (the host and the machines need addresses)"
        ));
    }
    let mask = u32::MAX << (32 - c.prefix);
    if u32::from(a) & !mask != 0 {
        return Err(format!(
            "subnet '{s}' is not a network address (did you mean {}/{}?)",
            std::net::Ipv4Addr::from(u32::from(a) & mask),
            c.prefix
        ));
    }
    let bad = a.is_loopback()
        || a.is_multicast()
        || a.is_link_local()
        || a.octets()[0] >= 240
        || a.octets()[0] == 0;
    if bad {
        return Err(format!(
            "subnet '{s}' cannot serve a zone (loopback, link-local, multicast or reserved)"
        ));
    }
    Ok(c)
}

/// Whether two prefixes share an address.
pub fn overlaps(a: &Cidr, b: &Cidr) -> bool {
    a.addr.is_ipv4() == b.addr.is_ipv4() && (a.contains(&b.addr) || b.contains(&a.addr))
}

/// A static address on a zone's interface: inside the zone's subnet when
/// the file pins one, not the host's address, the network or the broadcast
/// address. (A zone without `subnet` has netd's choice of /24: nothing to
/// check against.)
fn check_in_zone(z: &Zone, c: &Cidr) -> Result<(), String> {
    let Some(net) = z.subnet else {
        return Ok(());
    };
    if !c.addr.is_ipv4() {
        return Ok(());
    }
    if !net.contains(&c.addr) || c.prefix != net.prefix {
        return Err(format!("address {c} is outside zone '{}' ({net})", z.short));
    }
    let IpAddr::V4(a) = c.addr else {
        return Ok(());
    };
    let host = z.host_address().map(IpAddr::V4);
    let bits = u32::from(a) & !(u32::MAX << (32 - c.prefix));
    if Some(c.addr) == host || bits == 0 || bits == !(u32::MAX << (32 - c.prefix)) {
        return Err(format!(
            "address {c} cannot be a machine's in zone '{}' ({net}: the network, broadcast or host's address {})",
            z.short,
            host.map(|h| h.to_string()).unwrap_or_default()
        ));
    }
    Ok(())
}

fn check_ifname(name: &str) -> Result<(), String> {
    if !ifname_is_valid(name) {
        return Err(format!(
            "'{name}' is no valid interface name (1..15 characters, no '/', ':' or blanks)"
        ));
    }
    if name == "lo" {
        return Err("'lo' is the loopback interface".into());
    }
    Ok(())
}

/// A `.nspawn` text: section headers and `Key=Value` lines only (the
/// launcher checks the keys themselves when it reads the file).
fn check_settings(text: &str) -> Result<(), String> {
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with('[') && t.ends_with(']') {
            continue;
        }
        if !t.contains('=') {
            return Err(format!("settings line {}: '{t}' is not KEY=VALUE", i + 1));
        }
    }
    Ok(())
}

/// A cycle in `after`, as the machines' short names along it, if there is one.
pub fn after_cycle(lab: &Lab) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let index: BTreeMap<&str, usize> = lab
        .machines
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    let mut mark = vec![Mark::New; lab.machines.len()];
    fn visit(
        i: usize,
        lab: &Lab,
        index: &BTreeMap<&str, usize>,
        mark: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        mark[i] = Mark::Open;
        path.push(i);
        for a in &lab.machines[i].after {
            let Some(&j) = index.get(a.as_str()) else {
                continue;
            };
            match mark[j] {
                Mark::Open => {
                    let from = path.iter().position(|p| *p == j).unwrap_or(0);
                    let mut names: Vec<String> = path[from..]
                        .iter()
                        .map(|k| lab.machines[*k].short.clone())
                        .collect();
                    names.push(lab.machines[j].short.clone());
                    return Some(names);
                }
                Mark::New => {
                    if let Some(c) = visit(j, lab, index, mark, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        mark[i] = Mark::Done;
        None
    }
    for i in 0..lab.machines.len() {
        if mark[i] == Mark::New {
            let mut path = Vec::new();
            if let Some(c) = visit(i, lab, &index, &mut mark, &mut path) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(text: &str) -> Result<Lab, String> {
        load(Path::new("/labs/demo.toml"), text).map_err(|e| e.to_string())
    }

    const BASE: &str = "[defaults]\nimage = \"busybox\"\n[zones.lan]\n";

    #[test]
    fn names_are_prefixed_and_replicas_expanded() {
        let l = lab(&format!(
            "{BASE}[machines.web]\ncount = 3\ncommand = \"httpd\"\nzones = [\"lan\"]\n[machines.db]\nboot = true\nafter = [\"web\"]\n"
        ))
        .unwrap();
        assert_eq!(l.name, "demo");
        assert_eq!(l.zones[0].name, "demo-lan");
        let names: Vec<&str> = l.machines.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["demo-db", "demo-web1", "demo-web2", "demo-web3"]);
        let db = &l.machines[0];
        assert_eq!(db.after, ["demo-web1", "demo-web2", "demo-web3"]);
        assert!(db.ephemeral && db.user_namespace && db.boot);
        let web = &l.machines[1];
        assert_eq!(web.command, ["/bin/sh", "-c", "httpd"]);
        assert_eq!(web.zones, [("demo-lan".to_string(), "host0".to_string())]);
    }

    #[test]
    fn links_addresses_and_routes_resolve() {
        let l = lab(&format!(
            "{BASE}[machines.a]\ncommand = [\"sleep\", \"9\"]\nzones = [\"lan\"]\naddresses = {{ eth1 = \"10.0.0.1/30\" }}\nroutes = [\"10.1.0.0/24 via 10.0.0.2\"]\n\
             [machines.b]\ncommand = \"x\"\naddresses = {{ eth1 = [\"10.0.0.2/30\", \"fd00::2/64\"] }}\nroutes = [\"default via 10.0.0.1\"]\n\
             [[links]]\nendpoints = [\"a:eth1\", \"b:eth1\"]\n"
        ))
        .unwrap();
        assert_eq!(l.links[0].label(), "a:eth1-b:eth1");
        assert_eq!(l.links[0].b.machine, "demo-b");
        let b = l.machines.iter().find(|m| m.short == "b").unwrap();
        assert_eq!(b.addresses.len(), 2);
        assert_eq!(b.routes[0].to_string(), "default via 10.0.0.1");
    }

    #[test]
    fn bad_input_is_one_error_with_its_line() {
        let cases: &[(&str, &str)] = &[
            ("[machines.a]\ncommand = \"x\"\ncolor = 1\n", "demo.toml:6: unknown field `color`"),
            ("[machines.a]\ncommand = \"x\"\n[[links]]\nendpoints = [\"a:eth1\", \"zz:eth1\"]\n", "demo.toml:7: link endpoint 'zz:eth1': no machine 'zz'"),
            ("[machines.a]\ncommand = \"x\"\n[machines.b]\ncommand = \"x\"\n[[links]]\nendpoints = [\"a:eth1\", \"b:eth1\"]\n[[links]]\nendpoints = [\"a:eth1\", \"b:eth2\"]\n", "demo.toml:11: interface 'eth1' of machine 'a' is given twice (also at line 9)"),
            ("[machines.a]\ncommand = \"x\"\naddresses = { eth1 = \"10.0.0.1/30\" }\n[machines.b]\ncommand = \"x\"\naddresses = { eth1 = \"10.0.1.2/30\" }\n[[links]]\nendpoints = [\"a:eth1\", \"b:eth1\"]\n", "address 10.0.1.2/30 of b:eth1 is outside the subnet of 10.0.0.1/30"),
            ("[machines.a]\ncommand = \"x\"\nafter = [\"b\"]\n[machines.b]\ncommand = \"x\"\nafter = [\"a\"]\n", "'after' makes a cycle: a -> b -> a"),
            ("[machines.a]\ncommand = \"x\"\nafter = [\"q\"]\n", "demo.toml:6: after: no machine 'q'"),
            ("[machines.a]\ncommand = \"x\"\nzones = [\"wan\"]\n", "demo.toml:6: no zone 'wan'"),
            ("[machines.a]\n", "demo.toml:4: machine 'a' needs boot = true or a command"),
            ("[machines.a]\nboot = true\ncommand = \"x\"\n", "demo.toml:6: a booted machine has no command"),
            ("[machines.a]\ncommand = \"x\"\nwait_for = \"udp:1\"\n", "demo.toml:6: wait_for 'udp:1'"),
            ("[machines.a]\ncommand = \"x\"\naddresses = { eth9 = \"10.0.0.1/30\" }\n", "demo.toml:6: machine 'a' has no interface 'eth9'"),
            ("[machines.a]\ncommand = \"x\"\nroutes = [\"10.1.0.0/24 via 10.0.0.2\"]\n", "gateway 10.0.0.2 is in none of the machine's subnets"),
            ("[machines.a]\ncommand = \"x\"\n[machines.b]\ncommand = \"x\"\n[[links]]\nendpoints = [\"a:eth1\", \"b:eth1\"]\nimpair = { rate = \"9 parsecs\" }\n", "demo.toml:10: impair: rate"),
            ("[zones.lan2]\nsubnet = \"10.0.0.1/24\"\n", "demo.toml:5: zone 'lan2': subnet '10.0.0.1/24' is not a network address (did you mean 10.0.0.0/24?)"),
            ("[zones.lan2]\nsubnet = \"fd00::/64\"\n", "demo.toml:5: zone 'lan2': subnet 'fd00::/64' is not IPv4"),
            ("[zones.lan2]\nsubnet = \"10.0.0.0/31\"\n", "demo.toml:5: zone 'lan2': subnet '10.0.0.0/31': the prefix must be 8..30"),
            ("[zones.lan2]\nsubnet = \"127.0.0.0/24\"\n", "cannot serve a zone"),
            ("[zones.lan2]\nsubnet = \"ten\"\n", "demo.toml:5: zone 'lan2': subnet 'ten' is not ADDRESS/PREFIX"),
            ("[zones.lan2]\nsubnet = \"10.0.0.0/24\"\n[zones.lan3]\nsubnet = \"10.0.0.128/25\"\n", "demo.toml:7: zone 'lan3': subnet 10.0.0.128/25 overlaps zone 'lan2' (10.0.0.0/24)"),
            ("[zones.lan2]\ninternal = \"yes\"\n", "demo.toml:5: invalid type"),
            ("[zones.lan2]\nsubnet = \"10.0.0.0/24\"\n[machines.a]\ncommand = \"x\"\nzones = [\"lan2\"]\naddresses = { host0 = \"10.0.1.5/24\" }\n", "demo.toml:9: machine 'a', host0: address 10.0.1.5/24 is outside zone 'lan2' (10.0.0.0/24)"),
            ("[zones.lan2]\nsubnet = \"10.0.0.0/24\"\n[machines.a]\ncommand = \"x\"\nzones = [\"lan\", \"lan2:eth2\"]\naddresses = { eth2 = \"10.0.0.1/24\" }\n", "host's address 10.0.0.1"),
            ("[machines.a]\ncommand = \"x\"\n[machines.b]\ncommand = \"x\"\n[[links]]\nendpoints = [\"a:eth1\", \"b:eth1\"]\nimpair = { shaper = \"htb\" }\n", "demo.toml:10: impair: shaper htb needs a rate"),
            ("[machines.a]\ncommand = \"x\"\ncount = 0\n", "demo.toml:6: count must be"),
            ("[zones.averyveryverylongzone]\n", "is no valid interface name"),
            ("[machines.a]\ncommand = \"x\"\n[machines.a1]\ncommand = \"x\"\n[machines.b]\ncommand = \"x\"\n", ""),
        ];
        for (body, want) in cases {
            let r = lab(&format!("{BASE}{body}"));
            if want.is_empty() {
                assert!(r.is_ok(), "{body}: {r:?}");
                continue;
            }
            let e = r.expect_err(body);
            assert!(e.contains(want), "{body}\n got: {e}\nwant: {want}");
            assert!(!e.contains('\n'), "{e}");
        }
        // Replica names that clash with a machine of that name.
        let e = lab(&format!(
            "{BASE}[machines.a]\ncount = 2\ncommand = \"x\"\n[machines.a1]\ncommand = \"x\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("machine 'a1' is declared twice"), "{e}");
    }

    #[test]
    fn zone_keys_are_read() {
        let l = lab(&format!(
            "{BASE}[zones.lab]\nsubnet = \"10.5.0.0/24\"\ninternal = true\nipv6 = false\n\
             [machines.a]\ncommand = \"x\"\nzones = [\"lab\"]\naddresses = {{ host0 = \"10.5.0.9/24\" }}\n"
        ))
        .unwrap();
        let z = l.zones.iter().find(|z| z.short == "lab").unwrap();
        assert_eq!(z.subnet.unwrap().to_string(), "10.5.0.0/24");
        assert!(z.internal && !z.ipv6 && z.customized());
        assert_eq!(z.host_address().unwrap().to_string(), "10.5.0.1");
        let lan = l.zones.iter().find(|z| z.short == "lan").unwrap();
        assert!(lan.subnet.is_none() && !lan.internal && lan.ipv6 && !lan.customized());
    }

    #[test]
    fn the_lab_name_comes_from_the_file_name_unless_given() {
        assert_eq!(default_lab_name(Path::new("/x/my-lab.clab.yml")), "my-lab");
        let l = load(Path::new("/x/my-lab.toml"), "[lab]\nname = \"other\"\n").unwrap();
        assert_eq!(l.name, "other");
    }
}
