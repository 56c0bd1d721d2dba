//! Network templates: `.network` files in systemd.network(5) syntax, the
//! search path they are loaded from, and which file applies to a link.
//!
//! The line syntax is systemd's unit-file syntax, as for `.nspawn` files
//! (crates/runtime/src/settings.rs): `[Section]` headers, `Key=Value` with
//! whitespace around `=` trimmed, `#`/`;` comment lines (dropped even inside
//! a continuation), lines continued with a trailing backslash (which becomes
//! a space), `\n`, `\r\n` or `\r` line ends, a leading BOM ignored.
//!
//! netd understands [Match] `Name=`, `Driver=`, `Kind=`, `Virtualization=`;
//! [Network] `Address=`, `DHCPServer=`, `IPMasquerade=`,
//! `LinkLocalAddressing=`, `DNS=`, `DHCP=`, `KeepMaster=`; [DHCPServer]
//! `PoolOffset=`, `PoolSize=`, `EmitDNS=`, `DNS=`, `EmitRouter=`,
//! `DefaultLeaseTimeSec=`, `MaxLeaseTimeSec=`. Other keys and sections that
//! systemd knows are warnings saying netd ignores them; unknown ones are
//! "Unknown ..." warnings; `X-` keys and sections are ignored silently.
//!
//! Differences from systemd-networkd, on purpose:
//! - a malformed line or an invalid value is an error (`FILE:LINE: msg`)
//!   instead of a logged-and-ignored assignment, so a typo never silently
//!   changes a link's configuration;
//! - a [Match] key netd cannot test (`MACAddress=`, `Path=`, `Type=`, ...)
//!   makes the file match no link (with a warning), instead of the file
//!   matching more links than its author meant;
//! - drop-in directories (`NAME.network.d/*.conf`) are not read.
//!
//! Loading follows networkd's precedence: files are collected by file name
//! over directories in decreasing priority, a file masks those of the same
//! name in lower directories (an empty file or a symlink to `/dev/null` masks
//! the name entirely), and the first file in lexical order of file names
//! whose [Match] matches a link applies to it. The templates of
//! `network-templates/` are built into the binary as the lowest-priority
//! directory; see [`search_path`] for the directories above them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use thiserror::Error;

/// Longest logical line (after joining continuations), as systemd's
/// `LONG_LINE_MAX`; bounds the work a hostile file can cause.
pub use netspawn_common::unitfile::LONG_LINE_MAX;
use netspawn_common::unitfile::{self, parse_boolean, Item, WHITESPACE};

/// Largest `.network` file read; bigger ones are an error rather than a
/// reason to read without bound.
pub const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// Colon-separated directories searched for `.network` files, highest
/// priority first; replaces [`DEFAULT_NETWORK_PATH`] when set and not empty
/// (tests use it). The built-in templates stay below it either way.
pub const ENV_NETWORK_PATH: &str = "NETSPAWN_NETWORK_PATH";

/// Directories searched for `.network` files when [`ENV_NETWORK_PATH`] is not
/// set, highest priority first: the administrator's, then the package's.
pub const DEFAULT_NETWORK_PATH: [&str; 2] = ["/etc/netspawn/network", "/usr/lib/netspawn/network"];

/// The directory name shown in messages about a built-in template.
pub const BUILTIN_DIR: &str = "(built-in)";

/// The templates of `network-templates/`, built in: (file name, text).
pub const BUILTIN: [(&str, &str); 4] = [
    (
        "80-container-host0.network",
        include_str!("../../../network-templates/80-container-host0.network"),
    ),
    (
        "80-container-vb.network",
        include_str!("../../../network-templates/80-container-vb.network"),
    ),
    (
        "80-container-ve.network",
        include_str!("../../../network-templates/80-container-ve.network"),
    ),
    (
        "80-container-vz.network",
        include_str!("../../../network-templates/80-container-vz.network"),
    ),
];

/// Default `DefaultLeaseTimeSec=`: 1h, as networkd.
pub const DEFAULT_LEASE_SECS: u32 = 3600;
/// Default `MaxLeaseTimeSec=`: 12h, as networkd.
pub const DEFAULT_MAX_LEASE_SECS: u32 = 12 * 3600;
/// A lease time of `infinity`: DHCP's "infinite lease" value (RFC 2131).
pub const INFINITE_LEASE: u32 = u32::MAX;

/// A `.network` file that cannot be used, or a directory that cannot be read.
/// `Display` is `FILE:LINE: msg`, or `FILE: msg` when no line is concerned
/// (`line` 0), on one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{}: {msg}", file.display(), LineSuffix(*line))]
pub struct NetFileError {
    pub file: PathBuf,
    /// 1-based; for a line continued with backslashes, the last physical
    /// line; 0 when the error is not about a line (I/O, file too large).
    pub line: usize,
    pub msg: String,
}

/// `:LINE`, or nothing for line 0.
struct LineSuffix(usize);

impl fmt::Display for LineSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            Ok(())
        } else {
            write!(f, ":{}", self.0)
        }
    }
}

/// What netd knows about a link when it picks its `.network` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFacts {
    /// The interface name.
    pub name: String,
    /// Alternative names (IFLA_ALT_IFNAME); `Name=` matches them too, as in
    /// networkd (netspawn sets a shortened link's full name as one).
    pub altnames: Vec<String>,
    /// The link kind (IFLA_INFO_KIND: `veth`, `bridge`, ...), `None` for
    /// links without one (physical devices).
    pub kind: Option<String>,
    /// The driver (`ethtool -i`: `veth` for veth links, `bridge` for
    /// bridges), `None` if unknown.
    pub driver: Option<String>,
}

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

/// Whether, and in what, netd itself runs (systemd-detect-virt's answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Virtualization {
    /// On bare metal, or in a VM that was not detected.
    #[default]
    None,
    /// In a virtual machine of this technology (`kvm`, `qemu`, ...).
    Vm(String),
    /// In a container of this technology (`systemd-nspawn`, `docker`, ...).
    Container(String),
}

/// Technologies systemd-detect-virt names for virtual machines.
const VM_IDS: [&str; 19] = [
    "qemu",
    "kvm",
    "amazon",
    "zvm",
    "vmware",
    "microsoft",
    "oracle",
    "powervm",
    "xen",
    "bochs",
    "uml",
    "parallels",
    "bhyve",
    "qnx",
    "acrn",
    "apple",
    "sre",
    "google",
    "vm-other",
];

impl Virtualization {
    /// Detects a container the way systemd does for one: `/run/systemd/container`,
    /// else `container=` in PID 1's environment (as netspawn and other
    /// managers set it). Virtual machines are not detected (reported as
    /// [`Virtualization::None`]); nothing in netd's templates depends on them.
    pub fn detect() -> Virtualization {
        if let Ok(s) = std::fs::read_to_string("/run/systemd/container") {
            let s = s.trim();
            if !s.is_empty() {
                return Virtualization::Container(s.to_string());
            }
        }
        if let Ok(env) = std::fs::read("/proc/1/environ") {
            for var in env.split(|b| *b == 0) {
                if let Some(v) = var.strip_prefix(b"container=") {
                    if !v.is_empty() {
                        return Virtualization::Container(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
        }
        Virtualization::None
    }
}

impl VirtCondition {
    /// systemd's `condition_test_virtualization()` for the cases netd can
    /// tell apart.
    pub fn test(&self, virt: &Virtualization) -> bool {
        let result = if let Some(b) = parse_boolean(&self.value) {
            b == (*virt != Virtualization::None)
        } else {
            match (self.value.as_str(), virt) {
                ("vm", Virtualization::Vm(_)) => true,
                ("container", Virtualization::Container(_)) => true,
                (v, Virtualization::Vm(id) | Virtualization::Container(id)) => v == id,
                (_, Virtualization::None) => false,
            }
        };
        result != self.negate
    }
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

impl Match {
    /// True when nothing is set, so the file matches every link (networkd
    /// warns about that; so does [`parse`]).
    pub fn is_empty(&self) -> bool {
        self.name.is_empty()
            && self.driver.is_empty()
            && self.kind.is_empty()
            && self.virtualization.is_none()
            && self.untestable.is_empty()
    }

    /// True if every condition set holds for `link`, netd running in `virt`
    /// (networkd's `net_match_config()`).
    pub fn matches(&self, link: &LinkFacts, virt: &Virtualization) -> bool {
        if !self.untestable.is_empty() {
            return false;
        }
        if !test_patterns(&self.driver, link.driver.as_deref())
            || !test_patterns(&self.kind, link.kind.as_deref())
        {
            return false;
        }
        let name_ok = test_patterns(&self.name, Some(&link.name))
            || link
                .altnames
                .iter()
                .any(|a| test_patterns(&self.name, Some(a)));
        if !name_ok {
            return false;
        }
        self.virtualization.as_ref().is_none_or(|c| c.test(virt))
    }
}

/// networkd's `net_condition_test_strv()`: an empty list holds; a negated
/// glob that matches fails the test; otherwise the test holds if some
/// positive glob matches, or if there are only negated ones. An absent
/// value matches no glob.
fn test_patterns(patterns: &[Pattern], value: Option<&str>) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let mut matched = false;
    let mut has_positive = false;
    for p in patterns {
        if !p.negate {
            has_positive = true;
        }
        if value.is_some_and(|v| fnmatch(&p.glob, v)) {
            if p.negate {
                return false;
            }
            matched = true;
        }
    }
    if has_positive {
        matched
    } else {
        true
    }
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
    /// `DNS=`: the link's DNS servers.
    pub dns: Vec<DnsServer>,
    /// `DHCP=`: which DHCP clients run on the link (a guest-side setting).
    pub dhcp: Families,
    /// `KeepMaster=`: leave the link in its bridge. netd never changes a
    /// link's master, so it only affects the link-local default.
    pub keep_master: bool,
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
}

/// The result of parsing one file: the file and its warnings (each already
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
    let mut p = Parser {
        file,
        section: SectionState::None,
        out: NetworkFile {
            name,
            path: file.to_path_buf(),
            matching: Match::default(),
            network: Network::default(),
            dhcp_server: DhcpServerConfig::default(),
        },
        warnings: Vec::new(),
    };
    p.run(text)?;
    if p.out.matching.is_empty() {
        p.warnings.push(format!(
            "{}: No valid settings found in the [Match] section, the file will match all \
             interfaces. If that is intended, please add Name=* in the [Match] section.",
            file.display()
        ));
    }
    Ok(Parsed {
        file: p.out,
        warnings: p.warnings,
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

/// The `.network` files in effect, in the order they are tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Parsed files, sorted by file name.
    pub files: Vec<NetworkFile>,
    /// The files that mask a name (empty, or a symlink to `/dev/null`).
    pub masked: Vec<PathBuf>,
    /// Warnings of all files, each `FILE:LINE: ...` on one line.
    pub warnings: Vec<String>,
    /// What netd runs in, for `Virtualization=`; [`load`] detects it.
    pub virtualization: Virtualization,
}

impl Loaded {
    /// The file that applies to `link`: the first, in lexical order of file
    /// names, whose [Match] section matches (networkd's rule).
    pub fn find_match(&self, link: &LinkFacts) -> Option<&NetworkFile> {
        self.files
            .iter()
            .find(|f| f.matching.matches(link, &self.virtualization))
    }

    /// Every static `Address=` of every file, as subnets: the pool must not
    /// hand these out even before a link using them appears (networkd checks
    /// configured-but-unassigned addresses too).
    pub fn static_networks(&self) -> Vec<IpNetwork> {
        let mut out = Vec::new();
        for f in &self.files {
            out.extend(f.network.static_addresses().copied());
        }
        out
    }
}

/// The directories to load from, highest priority first: [`ENV_NETWORK_PATH`]
/// if set and not empty, else [`DEFAULT_NETWORK_PATH`]. (The built-in
/// templates come below these in [`load`].)
pub fn search_path() -> Vec<PathBuf> {
    match std::env::var(ENV_NETWORK_PATH) {
        Ok(v) if !v.is_empty() => v
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => DEFAULT_NETWORK_PATH.iter().map(PathBuf::from).collect(),
    }
}

/// Loads the `.network` files of `dirs` (highest priority first) over the
/// built-in templates ([`BUILTIN`]), and detects [`Virtualization`].
pub fn load(dirs: &[PathBuf]) -> Result<Loaded, NetFileError> {
    let mut loaded = load_with(dirs, &BUILTIN)?;
    loaded.virtualization = Virtualization::detect();
    Ok(loaded)
}

/// Where the text of a file in effect comes from.
enum Source<'a> {
    Path(PathBuf),
    Builtin(&'a str),
    Masked(PathBuf),
}

/// Like [`load`] with the given built-in files (name, text) as the lowest
/// priority directory, and [`Virtualization::None`]. A missing directory is
/// skipped; one that cannot be read, or a file that cannot be read or parsed,
/// is an error. Only regular files (or symlinks to them) named `*.network`,
/// not hidden, are read.
pub fn load_with(dirs: &[PathBuf], builtin: &[(&str, &str)]) -> Result<Loaded, NetFileError> {
    let io_error = |file: &Path, e: std::io::Error| NetFileError {
        file: file.to_path_buf(),
        line: 0,
        msg: e.to_string(),
    };
    let mut chosen: BTreeMap<String, Source> = BTreeMap::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(dir, e)),
        };
        // Sorted, so errors and masking are reported the same on every run.
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(".network") {
                continue;
            }
            names.push(name);
        }
        names.sort();
        for name in names {
            if chosen.contains_key(&name) {
                continue;
            }
            let path = dir.join(&name);
            let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
            let source = if is_masking(&path, &meta) {
                Source::Masked(path)
            } else if meta.is_file() {
                Source::Path(path)
            } else {
                // A directory named *.network is not a network file.
                continue;
            };
            chosen.insert(name, source);
        }
    }
    for (name, text) in builtin {
        chosen
            .entry((*name).to_string())
            .or_insert(Source::Builtin(text));
    }

    let mut loaded = Loaded::default();
    for (name, source) in chosen {
        let parsed = match source {
            Source::Masked(path) => {
                loaded.masked.push(path);
                continue;
            }
            Source::Builtin(text) => parse(text, &Path::new(BUILTIN_DIR).join(&name))?,
            Source::Path(path) => {
                let data = read_bounded(&path).map_err(|e| io_error(&path, e))?;
                parse_bytes(&data, &path)?
            }
        };
        loaded.files.push(parsed.file);
        loaded.warnings.extend(parsed.warnings);
    }
    Ok(loaded)
}

/// networkd's masking rule: an empty file, or anything that is `/dev/null`
/// (a symlink to it).
fn is_masking(path: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if meta.is_file() && meta.len() == 0 {
        return true;
    }
    if meta.file_type().is_char_device() {
        return std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == meta.rdev())
            || std::fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null"));
    }
    false
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut data = Vec::new();
    f.take(MAX_FILE_SIZE + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is larger than {MAX_FILE_SIZE} bytes"),
        ));
    }
    Ok(data)
}

// ---------------------------------------------------------------------------
// Sections and keys.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Match,
    Network,
    DhcpServer,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Match => "Match",
            Section::Network => "Network",
            Section::DhcpServer => "DHCPServer",
        }
    }
}

enum SectionState {
    /// Before the first section header.
    None,
    /// Inside a section netd skips (it was warned about, or is `X-`).
    Ignored,
    Known(Section),
}

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
    "IPv6SendRA",
    "IPv6Prefix",
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

/// [Match] keys netd cannot test: a file that sets one matches no link.
const UNTESTABLE_MATCH_KEYS: &[&str] = &[
    "MACAddress",
    "PermanentMACAddress",
    "Path",
    "Type",
    "Property",
    "WLANInterfaceType",
    "SSID",
    "BSSID",
    "Host",
    "KernelCommandLine",
    "KernelVersion",
    "Credential",
    "Architecture",
    "Firmware",
];

/// [Network] keys netd ignores (systemd knows them).
const IGNORED_NETWORK_KEYS: &[&str] = &[
    "Description",
    "RequiredForOnline",
    "RequiredFamilyForOnline",
    "ActivationPolicy",
    "IPv6LinkLocalAddressGenerationMode",
    "IPv6StableSecretAddress",
    "IPv4LLStartAddress",
    "IPv4LLRoute",
    "DefaultRouteOnDevice",
    "LLMNR",
    "MulticastDNS",
    "DNSOverTLS",
    "DNSSEC",
    "DNSSECNegativeTrustAnchors",
    "LLDP",
    "EmitLLDP",
    "BindCarrier",
    "Gateway",
    "GatewayOnLink",
    "Domains",
    "DNSDefaultRoute",
    "NTP",
    "IPForward",
    "IPv4Forwarding",
    "IPv6Forwarding",
    "IPv6PrivacyExtensions",
    "IPv6AcceptRA",
    "IPv6DuplicateAddressDetection",
    "IPv6HopLimit",
    "IPv6RetransmissionTimeSec",
    "IPv4AcceptLocal",
    "IPv4RouteLocalnet",
    "IPv4ReversePathFilter",
    "IPv4ProxyARP",
    "IPv6ProxyNDP",
    "IPv6ProxyNDPAddress",
    "IPv6SendRA",
    "DHCPPrefixDelegation",
    "IPv6MTUBytes",
    "Bridge",
    "Bond",
    "VRF",
    "IPoIB",
    "IPVLAN",
    "IPVTAP",
    "L2TP",
    "MACsec",
    "MACVLAN",
    "MACVTAP",
    "Tunnel",
    "VLAN",
    "VXLAN",
    "Xfrm",
    "BatmanAdvanced",
    "ConfigureWithoutCarrier",
    "IgnoreCarrierLoss",
    "KeepConfiguration",
];

/// [DHCPServer] keys netd ignores (systemd knows them).
const IGNORED_DHCP_SERVER_KEYS: &[&str] = &[
    "ServerAddress",
    "UplinkInterface",
    "EmitNTP",
    "NTP",
    "EmitSIP",
    "SIP",
    "EmitPOP3",
    "POP3",
    "EmitSMTP",
    "SMTP",
    "EmitLPR",
    "LPR",
    "Router",
    "EmitTimezone",
    "Timezone",
    "BootServerAddress",
    "BootServerName",
    "BootFilename",
    "SendOption",
    "SendVendorOption",
    "BindToInterface",
    "RelayTarget",
    "RelayAgentCircuitId",
    "RelayAgentRemoteId",
    "RapidCommit",
    "PersistLeases",
    "IPv6OnlyPreferredSec",
    "LocalLeaseDomain",
];

struct Parser<'a> {
    file: &'a Path,
    section: SectionState,
    out: NetworkFile,
    warnings: Vec<String>,
}

impl Parser<'_> {
    fn error(&self, line: usize, msg: impl Into<String>) -> NetFileError {
        NetFileError {
            file: self.file.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }

    fn warn(&mut self, line: usize, msg: impl fmt::Display) {
        self.warnings
            .push(format!("{}:{line}: {msg}", self.file.display()));
    }

    fn run(&mut self, text: &str) -> Result<(), NetFileError> {
        let file = self.file;
        unitfile::parse(
            text,
            |e| NetFileError {
                file: file.to_path_buf(),
                line: e.line,
                msg: e.msg,
            },
            |n, item| self.item(n, item),
        )
    }

    fn item(&mut self, n: usize, item: Item<'_>) -> Result<(), NetFileError> {
        let l = match item {
            Item::Section(name) => {
                self.section = match name {
                    "Match" => SectionState::Known(Section::Match),
                    "Network" => SectionState::Known(Section::Network),
                    "DHCPServer" => SectionState::Known(Section::DhcpServer),
                    _ if name.starts_with("X-") => SectionState::Ignored,
                    _ if IGNORED_SECTIONS.contains(&name) => {
                        self.warn(n, format_args!("Section '{name}' is ignored by netd."));
                        SectionState::Ignored
                    }
                    _ => {
                        self.warn(n, format_args!("Unknown section '{name}'. Ignoring."));
                        SectionState::Ignored
                    }
                };
                return Ok(());
            }
            Item::Line(l) => l,
        };
        let section = match self.section {
            SectionState::Known(s) => s,
            SectionState::Ignored => return Ok(()),
            SectionState::None => return Err(self.error(n, unitfile::outside_of_any_section(l))),
        };
        let (key, value) = unitfile::split_assignment(l).map_err(|msg| self.error(n, msg))?;
        self.assign(section, key, value, n)
    }

    fn assign(
        &mut self,
        section: Section,
        key: &str,
        value: &str,
        n: usize,
    ) -> Result<(), NetFileError> {
        let file = self.file;
        let invalid = |what: String| NetFileError {
            file: file.to_path_buf(),
            line: n,
            msg: format!("Invalid {key}= value: {what}"),
        };
        // Recorded after the match, which holds a mutable borrow of the output.
        let mut warning: Option<String> = None;
        let out = &mut self.out;
        match (section, key) {
            (Section::Match, "Name") => {
                assign_patterns(&mut out.matching.name, value, PatternKind::IfName)
                    .map_err(invalid)?;
            }
            (Section::Match, "Driver") => {
                assign_patterns(&mut out.matching.driver, value, PatternKind::Word)
                    .map_err(invalid)?;
            }
            (Section::Match, "Kind") => {
                assign_patterns(&mut out.matching.kind, value, PatternKind::Word)
                    .map_err(invalid)?;
            }
            (Section::Match, "Virtualization") => {
                out.matching.virtualization = parse_virt_condition(value).map_err(invalid)?;
            }
            (Section::Match, _) if UNTESTABLE_MATCH_KEYS.contains(&key) => {
                let list = &mut out.matching.untestable;
                list.retain(|k| k != key);
                if !value.is_empty() {
                    list.push(key.to_string());
                    warning = Some(format!(
                        "Key '{key}' in section 'Match' is not supported by netd; \
                         this file will match no link."
                    ));
                }
            }
            (Section::Network, "Address") => {
                if value.is_empty() {
                    out.network.addresses.clear();
                } else {
                    out.network
                        .addresses
                        .push(parse_address(value).map_err(invalid)?);
                }
            }
            (Section::Network, "DHCPServer") => {
                out.network.dhcp_server = strict_bool(value).map_err(invalid)?;
            }
            (Section::Network, "IPMasquerade") => {
                let (f, deprecated) = parse_masquerade(value).map_err(invalid)?;
                out.network.ip_masquerade = f;
                if deprecated {
                    warning = Some(format!(
                        "IPMasquerade={value} is deprecated, and it is handled as \"ipv4\" \
                         instead of \"both\". Please use \"ipv4\" or \"both\"."
                    ));
                }
            }
            (Section::Network, "LinkLocalAddressing") => {
                out.network.link_local_addressing = if value.is_empty() {
                    None
                } else {
                    Some(parse_families(value).map_err(invalid)?)
                };
            }
            (Section::Network, "DNS") => {
                if value.is_empty() {
                    out.network.dns.clear();
                }
                for word in value.split(WHITESPACE).filter(|w| !w.is_empty()) {
                    out.network
                        .dns
                        .push(parse_dns_server(word).map_err(invalid)?);
                }
            }
            (Section::Network, "DHCP") => {
                let (f, note) = parse_dhcp_client(value).map_err(invalid)?;
                out.network.dhcp = f;
                warning = note;
            }
            (Section::Network, "KeepMaster") => {
                out.network.keep_master = strict_bool(value).map_err(invalid)?;
            }
            (Section::DhcpServer, "PoolOffset") => {
                out.dhcp_server.pool_offset = parse_u32(value).map_err(invalid)?;
            }
            (Section::DhcpServer, "PoolSize") => {
                out.dhcp_server.pool_size = parse_u32(value).map_err(invalid)?;
            }
            (Section::DhcpServer, "EmitDNS") => {
                out.dhcp_server.emit_dns = strict_bool(value).map_err(invalid)?;
            }
            (Section::DhcpServer, "DNS") => {
                if value.is_empty() {
                    out.dhcp_server.dns.clear();
                }
                for word in value.split(WHITESPACE).filter(|w| !w.is_empty()) {
                    let dns = if word == "_server_address" {
                        DhcpDns::ServerAddress
                    } else {
                        DhcpDns::Addr(parse_ipv4(word).map_err(invalid)?)
                    };
                    out.dhcp_server.dns.push(dns);
                }
            }
            (Section::DhcpServer, "EmitRouter") => {
                out.dhcp_server.emit_router = strict_bool(value).map_err(invalid)?;
            }
            (Section::DhcpServer, "DefaultLeaseTimeSec") => {
                out.dhcp_server.default_lease_secs = if value.is_empty() {
                    DEFAULT_LEASE_SECS
                } else {
                    parse_lease_time(value).map_err(invalid)?
                };
            }
            (Section::DhcpServer, "MaxLeaseTimeSec") => {
                out.dhcp_server.max_lease_secs = if value.is_empty() {
                    DEFAULT_MAX_LEASE_SECS
                } else {
                    parse_lease_time(value).map_err(invalid)?
                };
            }
            (Section::Network, _) if IGNORED_NETWORK_KEYS.contains(&key) => {
                warning = Some(ignored_key(key, section));
            }
            (Section::DhcpServer, _) if IGNORED_DHCP_SERVER_KEYS.contains(&key) => {
                warning = Some(ignored_key(key, section));
            }
            // X- keys are extensions, ignored silently as in systemd.
            _ if key.starts_with("X-") => {}
            _ => {
                // Escaped, so control characters in a key cannot break the line.
                warning = Some(format!(
                    "Unknown key name '{}' in section '{}', ignoring.",
                    key.escape_debug(),
                    section.name()
                ));
            }
        }
        if let Some(w) = warning {
            self.warn(n, w);
        }
        Ok(())
    }
}

fn ignored_key(key: &str, section: Section) -> String {
    format!(
        "Key '{key}' in section '{}' is ignored by netd.",
        section.name()
    )
}

// ---------------------------------------------------------------------------
// Values.

fn strict_bool(value: &str) -> Result<bool, String> {
    parse_boolean(value).ok_or_else(|| format!("{value:?} is not a boolean"))
}

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
        let a: std::net::Ipv6Addr = a.parse().map_err(|_| bad())?;
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

/// Technologies systemd-detect-virt names for containers.
const CONTAINER_IDS: [&str; 11] = [
    "openvz",
    "lxc",
    "lxc-libvirt",
    "systemd-nspawn",
    "docker",
    "podman",
    "rkt",
    "wsl",
    "proot",
    "pouch",
    "container-other",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum PatternKind {
    /// `Name=`: words taken as they are (no unquoting), each a valid
    /// interface (alternative) name apart from glob characters.
    IfName,
    /// `Driver=`, `Kind=`: words may be quoted.
    Word,
}

/// networkd's `config_parse_match_strv()`/`config_parse_match_ifnames()`:
/// a whitespace-separated list; a leading `!` negates every word of this
/// assignment; the list accumulates over lines; an empty value resets it.
fn assign_patterns(list: &mut Vec<Pattern>, value: &str, kind: PatternKind) -> Result<(), String> {
    if value.is_empty() {
        list.clear();
        return Ok(());
    }
    let (negate, rest) = match value.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, value),
    };
    let words = match kind {
        PatternKind::IfName => rest
            .split(WHITESPACE)
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
        PatternKind::Word => split_quoted(rest)?,
    };
    if words.is_empty() {
        return Err(format!("{value:?} has no pattern after '!'"));
    }
    for glob in words {
        if kind == PatternKind::IfName && !ifname_is_valid(&glob) {
            return Err(format!("{glob:?} is not a valid interface name or pattern"));
        }
        list.push(Pattern { glob, negate });
    }
    Ok(())
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

/// Splits at whitespace; a word may be in double or single quotes (which are
/// removed); an unterminated quote is an error.
fn split_quoted(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut rest = s.trim_start_matches(WHITESPACE);
    while !rest.is_empty() {
        let first = rest.chars().next().unwrap_or(' ');
        if first == '"' || first == '\'' {
            let body = &rest[1..];
            let end = body
                .find(first)
                .ok_or_else(|| format!("unterminated quote in {s:?}"))?;
            words.push(body[..end].to_string());
            rest = &body[end + 1..];
            if !rest.is_empty() && !rest.starts_with(WHITESPACE) {
                return Err(format!("text right after a closing quote in {s:?}"));
            }
        } else {
            let end = rest.find(WHITESPACE).unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches(WHITESPACE);
    }
    Ok(words)
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

pub use netspawn_common::unitfile::values::parse_timespan_usec;

// ---------------------------------------------------------------------------
// Globs.

/// fnmatch(3) with no flags: `*`, `?`, `[...]` (ranges, `!`/`^` negation,
/// `[:class:]`), `\` quoting the next character. `*` and `?` match any
/// character, `/` and a leading `.` included. Runs in O(pattern × string).
pub fn fnmatch(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0usize, 0usize);
    // Where to resume after the last `*`: (pattern index after it, string index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() && p[pi] == '*' {
            while pi < p.len() && p[pi] == '*' {
                pi += 1;
            }
            star = Some((pi, si));
            continue;
        }
        if si == s.len() {
            return pi == p.len();
        }
        if pi < p.len() {
            if let Some(next) = match_one(&p, pi, s[si]) {
                pi = next;
                si += 1;
                continue;
            }
        }
        match star {
            Some((sp, ss)) if ss < s.len() => {
                star = Some((sp, ss + 1));
                pi = sp;
                si = ss + 1;
            }
            _ => return false,
        }
    }
}

/// Matches one pattern element at `p[pi]` (not `*`) against `c`; returns the
/// index after the element on a match.
fn match_one(p: &[char], pi: usize, c: char) -> Option<usize> {
    match p[pi] {
        '?' => Some(pi + 1),
        '[' => match match_bracket(p, pi, c) {
            Some((hit, next)) => hit.then_some(next),
            // An unclosed `[` is an ordinary character.
            None => (c == '[').then_some(pi + 1),
        },
        '\\' if pi + 1 < p.len() => (p[pi + 1] == c).then_some(pi + 2),
        x => (x == c).then_some(pi + 1),
    }
}

/// Matches `c` against the bracket expression at `p[start] == '['`; returns
/// whether it matched and the index after the closing `]`, or `None` if the
/// bracket is not closed. A `]` right after `[` or `[!` is an ordinary
/// member.
fn match_bracket(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut k = start + 1;
    let negate = matches!(p.get(k), Some('!' | '^'));
    if negate {
        k += 1;
    }
    let first = k;
    let mut hit = false;
    loop {
        let item = *p.get(k)?;
        if item == ']' && k > first {
            return Some((hit != negate, k + 1));
        }
        if item == '[' && p.get(k + 1) == Some(&':') {
            if let Some(end) = class_end(p, k + 2) {
                let name: String = p[k + 2..end - 2].iter().collect();
                hit |= class_matches(&name, c);
                k = end;
                continue;
            }
        }
        let (lo, next) = if item == '\\' && k + 1 < p.len() {
            (p[k + 1], k + 2)
        } else {
            (item, k + 1)
        };
        // `a-z` is a range unless the `-` is last (`[a-]`).
        if p.get(next) == Some(&'-') && p.get(next + 1).is_some_and(|h| *h != ']') {
            let (hi, after) = if p[next + 1] == '\\' && next + 2 < p.len() {
                (p[next + 2], next + 3)
            } else {
                (p[next + 1], next + 2)
            };
            hit |= lo <= c && c <= hi;
            k = after;
        } else {
            hit |= lo == c;
            k = next;
        }
    }
}

/// For a `[:name:]` class whose name starts at `from`, the index after `:]`.
fn class_end(p: &[char], from: usize) -> Option<usize> {
    let mut k = from;
    while k + 1 < p.len() {
        if p[k] == ':' && p[k + 1] == ']' {
            return Some(k + 2);
        }
        if !p[k].is_ascii_alphabetic() {
            return None;
        }
        k += 1;
    }
    None
}

/// POSIX character classes, for ASCII (the C locale networkd runs in).
fn class_matches(name: &str, c: char) -> bool {
    match name {
        "alnum" => c.is_ascii_alphanumeric(),
        "alpha" => c.is_ascii_alphabetic(),
        "blank" => c == ' ' || c == '\t',
        "cntrl" => c.is_ascii_control(),
        "digit" => c.is_ascii_digit(),
        "graph" => c.is_ascii_graphic(),
        "lower" => c.is_ascii_lowercase(),
        "print" => c.is_ascii_graphic() || c == ' ',
        "punct" => c.is_ascii_punctuation(),
        "space" => c.is_ascii_whitespace() || c == '\x0b',
        "upper" => c.is_ascii_uppercase(),
        "xdigit" => c.is_ascii_hexdigit(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Parsed, NetFileError> {
        parse(text, Path::new("/etc/netspawn/network/t.network"))
    }

    fn ok(text: &str) -> Parsed {
        match p(text) {
            Ok(parsed) => parsed,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn link(name: &str, kind: Option<&str>, driver: Option<&str>) -> LinkFacts {
        LinkFacts {
            name: name.to_string(),
            altnames: Vec::new(),
            kind: kind.map(str::to_string),
            driver: driver.map(str::to_string),
        }
    }

    #[test]
    fn globs() {
        let table: &[(&str, &str, bool)] = &[
            ("ve-*", "ve-web", true),
            ("ve-*", "ve-", true),
            ("ve-*", "vb-web", false),
            ("ve-*", "xve-web", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("?", "", false),
            ("?", "é", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[!a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("[^a]", "b", true),
            ("[]]", "]", true),
            ("[!]]", "]", false),
            ("[!]]", "a", true),
            ("[a-]", "-", true),
            ("[a-]", "b", false),
            ("[[:digit:]]*", "1abc", true),
            ("[[:digit:]]*", "abc", false),
            ("[[:upper:][:digit:]]", "Q", true),
            ("[[:bogus:]]", "b", false),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("[\\]]", "]", true),
            ("[", "[", true),
            ("ab[", "ab[", true),
            ("ab[c", "ab[c", true),
            ("*a*b*c*", "xxaxxbxxc", true),
            ("*a*b*c*", "xxaxxcxxb", false),
            ("*/*", "a/b", true),
            ("*", ".hidden", true),
            ("vz-*", "vz-lab", true),
            ("ve-web", "ve-web", true),
            ("ve-web", "ve-we", false),
        ];
        for (pat, s, want) in table {
            assert_eq!(fnmatch(pat, s), *want, "fnmatch({pat:?}, {s:?})");
        }
        // Backtracking stays cheap on a pathological pattern.
        let s = "a".repeat(4000);
        assert!(!fnmatch(&"a*".repeat(200).replace("a*a*a*", "a*a*b*"), &s));
    }

    #[test]
    fn match_names_kinds_drivers() {
        let v = Virtualization::None;
        // (file text, link, expected)
        let table: &[(&str, LinkFacts, bool)] = &[
            ("[Match]\nName=ve-*\n", link("ve-web", None, None), true),
            ("[Match]\nName=ve-*\n", link("vb-web", None, None), false),
            (
                "[Match]\nName=eth0 ve-*\n",
                link("ve-web", None, None),
                true,
            ),
            (
                "[Match]\nName=eth0\nName=ve-*\n",
                link("ve-web", None, None),
                true,
            ),
            (
                "[Match]\nName=eth0\nName=\nName=vb-*\n",
                link("eth0", None, None),
                false,
            ),
            ("[Match]\nName=!ve-web\n", link("ve-db", None, None), true),
            ("[Match]\nName=!ve-web\n", link("ve-web", None, None), false),
            (
                "[Match]\nName=!ve-web ve-db\n",
                link("ve-db", None, None),
                false,
            ),
            (
                "[Match]\nName=ve-*\nName=!ve-web\n",
                link("ve-db", None, None),
                true,
            ),
            (
                "[Match]\nName=ve-*\nName=!ve-web\n",
                link("ve-web", None, None),
                false,
            ),
            (
                "[Match]\nName=ve-*\nName=!ve-web\n",
                link("eth0", None, None),
                false,
            ),
            ("[Match]\nKind=veth\n", link("x", Some("veth"), None), true),
            (
                "[Match]\nKind=veth\n",
                link("x", Some("bridge"), None),
                false,
            ),
            ("[Match]\nKind=veth\n", link("x", None, None), false),
            ("[Match]\nKind=!veth\n", link("x", None, None), true),
            (
                "[Match]\nKind=\"veth\" 'bridge'\n",
                link("x", Some("bridge"), None),
                true,
            ),
            (
                "[Match]\nDriver=veth\n",
                link("x", None, Some("veth")),
                true,
            ),
            (
                "[Match]\nDriver=veth\n",
                link("x", Some("veth"), None),
                false,
            ),
            (
                "[Match]\nDriver=br*\nName=vz-*\n",
                link("vz-a", None, Some("bridge")),
                true,
            ),
            (
                "[Match]\nDriver=br*\nName=vz-*\n",
                link("vz-a", None, Some("veth")),
                false,
            ),
            ("[Match]\nName=*\n", link("anything", None, None), true),
            ("[Network]\nDHCP=yes\n", link("anything", None, None), true),
            (
                "[Match]\nMACAddress=12:34:56:78:9a:bc\n",
                link("x", None, None),
                false,
            ),
            (
                "[Match]\nMACAddress=12:34:56:78:9a:bc\nMACAddress=\n",
                link("x", None, None),
                true,
            ),
            (
                "[Match]\nName=ve-*\nType=ether\n",
                link("ve-a", None, None),
                false,
            ),
        ];
        for (text, l, want) in table {
            let parsed = ok(text);
            assert_eq!(
                parsed.file.matching.matches(l, &v),
                *want,
                "{text:?} against {l:?}"
            );
        }
        // Alternative names match too.
        let f = ok("[Match]\nName=ve-a-very-long-machine-name\n").file;
        let mut l = link("ve-a-very-lo1f2", Some("veth"), None);
        assert!(!f.matching.matches(&l, &v));
        l.altnames.push("ve-a-very-long-machine-name".into());
        assert!(f.matching.matches(&l, &v));
    }

    #[test]
    fn virtualization_condition() {
        let none = Virtualization::None;
        let nspawn = Virtualization::Container("systemd-nspawn".into());
        let kvm = Virtualization::Vm("kvm".into());
        let table: &[(&str, &Virtualization, bool)] = &[
            ("container", &nspawn, true),
            ("container", &none, false),
            ("container", &kvm, false),
            ("!container", &none, true),
            ("vm", &kvm, true),
            ("yes", &kvm, true),
            ("yes", &none, false),
            ("no", &none, true),
            ("systemd-nspawn", &nspawn, true),
            ("docker", &nspawn, false),
            ("!docker", &nspawn, true),
            ("kvm", &kvm, true),
        ];
        for (value, virt, want) in table {
            let f = ok(&format!("[Match]\nVirtualization={value}\nName=host0\n")).file;
            assert_eq!(
                f.matching.matches(&link("host0", Some("veth"), None), virt),
                *want,
                "Virtualization={value} in {virt:?}"
            );
        }
        // An empty assignment clears the condition.
        let f = ok("[Match]\nVirtualization=container\nVirtualization=\nName=host0\n").file;
        assert!(f.matching.matches(&link("host0", None, None), &none));
    }

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
DNS=1.1.1.1 [2001:db8::1]:5353%eth0#dns.example
DNS=9.9.9.9:53
DHCP=ipv4
KeepMaster=yes

[DHCPServer]
PoolOffset=10
PoolSize=20
EmitDNS=no
DNS=_server_address 8.8.8.8
EmitRouter=false
DefaultLeaseTimeSec=30min
MaxLeaseTimeSec=2h 30min
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
                    port: Some(5353),
                    ifname: Some("eth0".into()),
                    server_name: Some("dns.example".into())
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
    }

    #[test]
    fn defaults_and_resets() {
        let f = ok("[Match]\nName=x\n").file;
        assert_eq!(f.network, Network::default());
        assert_eq!(f.network.link_local(), Families::Ipv6);
        assert_eq!(f.dhcp_server, DhcpServerConfig::default());
        assert!(f.dhcp_server.emit_dns && f.dhcp_server.emit_router);
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
                "Invalid Kind= value: unterminated quote",
            ),
            ("[Match]\nKind=\"veth\"x\n", 2, "Invalid Kind= value"),
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

    #[test]
    fn error_display_without_line() {
        let e = NetFileError {
            file: "/etc/netspawn/network".into(),
            line: 0,
            msg: "Permission denied".into(),
        };
        assert_eq!(e.to_string(), "/etc/netspawn/network: Permission denied");
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

    #[test]
    fn builtin_templates() {
        let loaded = load_with(&[], &BUILTIN).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let names: Vec<&str> = loaded.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "80-container-host0.network",
                "80-container-vb.network",
                "80-container-ve.network",
                "80-container-vz.network"
            ]
        );
        let find = |l: &LinkFacts| loaded.find_match(l).map(|f| f.name.as_str());
        assert_eq!(
            find(&link("ve-web", Some("veth"), Some("veth"))),
            Some("80-container-ve.network")
        );
        assert_eq!(
            find(&link("vz-lab", Some("bridge"), None)),
            Some("80-container-vz.network")
        );
        assert_eq!(
            find(&link("vb-web", Some("veth"), None)),
            Some("80-container-vb.network")
        );
        assert_eq!(find(&link("ve-web", Some("bridge"), None)), None);
        assert_eq!(find(&link("vz-lab", Some("veth"), None)), None);
        assert_eq!(find(&link("eth0", None, Some("e1000e"))), None);
        // host0 only inside a container.
        assert_eq!(find(&link("host0", Some("veth"), None)), None);
        let mut inside = loaded.clone();
        inside.virtualization = Virtualization::Container("systemd-nspawn".into());
        assert_eq!(
            inside
                .find_match(&link("host0", Some("veth"), None))
                .map(|f| f.name.as_str()),
            Some("80-container-host0.network")
        );

        let ve = loaded
            .files
            .iter()
            .find(|f| f.name == "80-container-ve.network")
            .unwrap();
        assert_eq!(ve.path, Path::new("(built-in)/80-container-ve.network"));
        assert_eq!(
            ve.network.addresses,
            vec!["0.0.0.0/28".parse::<IpNetwork>().unwrap()]
        );
        assert!(ve.network.dhcp_server);
        assert_eq!(ve.network.ip_masquerade, Families::Both);
        assert_eq!(ve.network.link_local(), Families::Both);
        let vz = loaded
            .files
            .iter()
            .find(|f| f.name == "80-container-vz.network")
            .unwrap();
        assert_eq!(
            vz.network.addresses,
            vec!["0.0.0.0/24".parse::<IpNetwork>().unwrap()]
        );
        assert!(vz.network.dhcp_server);
        assert_eq!(vz.network.ip_masquerade, Families::Both);
        let vb = loaded
            .files
            .iter()
            .find(|f| f.name == "80-container-vb.network")
            .unwrap();
        assert!(vb.network.addresses.is_empty() && !vb.network.dhcp_server);
        assert!(vb.network.keep_master);
        assert_eq!(vb.network.link_local(), Families::No);
        assert_eq!(vb.network.ip_masquerade, Families::No);
        let host0 = loaded
            .files
            .iter()
            .find(|f| f.name == "80-container-host0.network")
            .unwrap();
        assert_eq!(host0.network.dhcp, Families::Both);
        assert!(!host0.network.dhcp_server);
        assert!(loaded.static_networks().is_empty());
    }

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "netd-netfile-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn sub(&self, name: &str) -> PathBuf {
            let d = self.0.join(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn precedence_and_masking() {
        let t = TempDir::new("prec");
        let etc = t.sub("etc");
        let usr = t.sub("usr");
        let missing = t.0.join("missing");
        let builtin: [(&str, &str); 3] = [
            (
                "80-container-ve.network",
                "[Match]\nName=ve-*\n[Network]\nAddress=0.0.0.0/28\n",
            ),
            (
                "80-container-vz.network",
                "[Match]\nName=vz-*\n[Network]\nAddress=0.0.0.0/24\n",
            ),
            ("90-other.network", "[Match]\nName=ve-*\n"),
        ];
        // /etc overrides the built-in ve file with a /26.
        write(
            &etc,
            "80-container-ve.network",
            "[Match]\nName=ve-*\n[Network]\nAddress=0.0.0.0/26\n",
        );
        // /usr has a lower-priority copy that must be ignored.
        write(
            &usr,
            "80-container-ve.network",
            "[Match]\nName=ve-*\n[Network]\nAddress=0.0.0.0/30\n",
        );
        // /usr masks vz with an empty file.
        write(&usr, "80-container-vz.network", "");
        // /etc masks 90-other with a symlink to /dev/null.
        std::os::unix::fs::symlink("/dev/null", etc.join("90-other.network")).unwrap();
        // An earlier-sorting file in /usr that matches ve-web first.
        write(
            &usr,
            "10-web.network",
            "[Match]\nName=ve-web\n[Network]\nDHCPServer=yes\n",
        );
        // Not network files: other suffix, hidden, directory.
        write(&etc, "README", "junk");
        write(&etc, ".hidden.network", "junk");
        write(&etc, "x.network.bak", "junk");
        std::fs::create_dir(etc.join("dir.network")).unwrap();

        let loaded = load_with(&[etc.clone(), missing, usr.clone()], &builtin).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let names: Vec<(&str, &Path)> = loaded
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.path.as_path()))
            .collect();
        let ve_path = etc.join("80-container-ve.network");
        let web_path = usr.join("10-web.network");
        assert_eq!(
            names,
            [
                ("10-web.network", web_path.as_path()),
                ("80-container-ve.network", ve_path.as_path())
            ]
        );
        assert_eq!(
            loaded.masked,
            // By file name, as the files.
            vec![
                usr.join("80-container-vz.network"),
                etc.join("90-other.network")
            ]
        );
        let ve = &loaded.files[1];
        assert_eq!(ve.network.addresses[0].prefix(), 26);
        let f = |n: &str| {
            loaded
                .find_match(&link(n, Some("veth"), None))
                .map(|f| f.name.clone())
        };
        assert_eq!(f("ve-web").as_deref(), Some("10-web.network"));
        assert_eq!(f("ve-db").as_deref(), Some("80-container-ve.network"));
        assert_eq!(f("vz-lab"), None);
    }

    #[test]
    fn load_errors() {
        let t = TempDir::new("err");
        let etc = t.sub("etc");
        write(
            &etc,
            "50-bad.network",
            "[Match]\nName=x\n[Network]\nDHCPServer=maybe\n",
        );
        let e = load_with(std::slice::from_ref(&etc), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:4: Invalid DHCPServer= value: \"maybe\" is not a boolean",
                etc.join("50-bad.network").display()
            )
        );
        // A masked bad file is not read.
        let top = t.sub("top");
        write(&top, "50-bad.network", "");
        assert!(load_with(&[top.clone(), etc.clone()], &[]).is_ok());
        // A dangling symlink cannot be read.
        let dang = t.sub("dang");
        std::os::unix::fs::symlink(t.0.join("nowhere"), dang.join("60-x.network")).unwrap();
        let e = load_with(std::slice::from_ref(&dang), &[]).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e
            .to_string()
            .starts_with(&format!("{}: ", dang.join("60-x.network").display())));
        // A file where a directory should be.
        let file = t.0.join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(load_with(&[file], &[]).is_err());
        // Warnings carry the real path.
        let w = t.sub("warn");
        write(&w, "70-w.network", "[Match]\nName=x\n[Network]\nLLDP=yes\n");
        let loaded = load_with(std::slice::from_ref(&w), &[]).unwrap();
        assert_eq!(
            loaded.warnings,
            vec![format!(
                "{}:4: Key 'LLDP' in section 'Network' is ignored by netd.",
                w.join("70-w.network").display()
            )]
        );
    }

    #[test]
    fn static_networks_of_all_files() {
        let t = TempDir::new("static");
        let d = t.sub("d");
        write(
            &d,
            "a.network",
            "[Match]\nName=a\n[Network]\nAddress=192.168.7.1/24\nAddress=0.0.0.0/28\n",
        );
        write(
            &d,
            "b.network",
            "[Match]\nName=b\n[Network]\nAddress=fd00:1::1/64\n",
        );
        let loaded = load_with(&[d], &[]).unwrap();
        let nets: Vec<String> = loaded
            .static_networks()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["192.168.7.1/24", "fd00:1::1/64"]);
    }

    #[test]
    fn search_path_env() {
        // The only test that reads or writes this variable.
        std::env::set_var(ENV_NETWORK_PATH, "/a:/b::/c");
        assert_eq!(
            search_path(),
            [
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                PathBuf::from("/c")
            ]
        );
        std::env::set_var(ENV_NETWORK_PATH, "");
        assert_eq!(
            search_path(),
            [
                PathBuf::from("/etc/netspawn/network"),
                PathBuf::from("/usr/lib/netspawn/network")
            ]
        );
        std::env::remove_var(ENV_NETWORK_PATH);
        assert_eq!(search_path().len(), 2);
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
}
