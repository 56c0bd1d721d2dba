//! NAT and port forwards for container links, in netd's own nftables table.
//!
//! netd owns exactly one table, `table inet netspawn`, and never reads or
//! writes any other. The whole desired state (masquerade, port forwards per
//! owner) is rendered with the typed `nftables` schema and applied as one
//! `nft -j -f -` transaction that deletes and recreates the table, so
//! [`Nat::apply`] is atomic and idempotent and can be re-run at any time;
//! [`Nat::ensure`] re-applies when the kernel's table no longer matches (after
//! `nft flush ruleset`, say), and [`monitor`] says when to check.
//!
//! Masquerade does not change the table per link: a container link is put into
//! an interface group ([`GROUP_BASE`] and up, by netlink, which costs
//! microseconds) and two fixed rules masquerade what arrives from a link in a
//! masquerading group and leaves by an interface that is not a container link.
//! A transaction that deletes anything waits for an RCU grace period in the
//! kernel (10–30 ms), and running `nft` at all costs a few milliseconds: with
//! the rules fixed, a machine's link coming or going runs no `nft` at all, and
//! [`Nat::apply`] runs it only when the table really changes (the first link,
//! port forwards, the uplinks' guards). [`Nat::set_standing`] keeps the fixed
//! rules (and the uplinks' forwarding) while links come and go.
//!
//! Forwarding is switched on per interface only, never globally (see
//! [`sysctl`]): IPv4 `conf/IF/forwarding` and IPv6 `conf/IF/force_forwarding`
//! on the container links and on the interfaces replies come back on
//! ("uplinks"). An uplink on which netd had to switch forwarding on is guarded
//! by a `forward` chain that lets through only replies and port-forwarded
//! connections, so the host does not become a general router for its LAN.
//! Every knob netd changes is remembered and restored once unneeded.
//!
//! Port forwards reach the container from the host's own addresses, from other
//! hosts, and from the host's 127.0.0.1: DNAT in `output` as well as
//! `prerouting`, `route_localnet` on the container link (the kernel otherwise
//! drops 127.0.0.0/8 on a non-loopback link) and masquerade of 127.0.0.0/8
//! sources leaving by that link. IPv6 has no such knob for `::1`: the
//! `output` DNAT leaves `::1` alone and `crate::proxy` relays it in user space.

mod libnft;
pub mod monitor;
mod render;
pub mod sysctl;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use ipnetwork::IpNetwork;
use nftables::helper::{self, NftablesError};
use nftables::schema::Nftables;

pub use render::Summary;
use sysctl::{Knob, SysctlKey, Sysctls};

/// The interface group of a container link netd serves without masquerade.
/// Links whose traffic is masqueraded are in the next groups:
/// `GROUP_BASE + 1` IPv4, `+ 2` IPv4 and IPv6, `+ 3` IPv6; traffic leaving
/// by any link in `GROUP_BASE..=GROUP_BASE + 3` (another container link) is
/// never masqueraded. (0x4e53: "NS".)
pub const GROUP_BASE: u32 = 0x4e53_0000;

/// Puts links into interface groups: how [`Nat`] marks the container links
/// whose traffic the fixed masquerade rules match.
pub trait LinkGroups: Send + fmt::Debug {
    /// Puts the link `ifname` into `group`; a link that is gone is an error.
    fn set_group(&mut self, ifname: &str, group: u32) -> Result<(), String>;
}

/// [`LinkGroups`] over a netlink socket in the network namespace of the
/// thread that first uses it.
#[derive(Default)]
pub struct NetlinkGroups {
    nl: Option<netlink::Netlink>,
}

impl fmt::Debug for NetlinkGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetlinkGroups")
    }
}

impl LinkGroups for NetlinkGroups {
    fn set_group(&mut self, ifname: &str, group: u32) -> Result<(), String> {
        let nl = match &mut self.nl {
            Some(nl) => nl,
            None => self
                .nl
                .insert(netlink::Netlink::open().map_err(|e| e.to_string())?),
        };
        nl.set_group_by_name(ifname, group)
            .map_err(|e| e.to_string())
    }
}

pub use monitor::{watch_and_restore, NftMonitor};

/// The name of netd's table (family `inet`).
pub const TABLE: &str = "netspawn";

/// Errors of the NAT module. Each is one line naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// The host port is already forwarded (by another machine, or by the same
    /// one to a different place).
    #[error("port {proto}:{host_port} is already forwarded by machine {owner}")]
    PortBusy {
        /// Protocol of the port.
        proto: Proto,
        /// The busy host port.
        host_port: u16,
        /// The owner that holds it.
        owner: String,
    },
    /// A port of 0.
    #[error("invalid port forward {0}: ports are 1..=65535")]
    BadPort(String),
    /// A link name that is not a valid interface name.
    #[error("invalid interface name {0:?}")]
    BadLinkName(String),
    /// A subnet that cannot be masqueraded (prefix length 0).
    #[error("refusing to masquerade {0}: prefix length 0 would cover every address")]
    BadSubnet(IpNetwork),
    /// `nft` failed (its error message is in `detail`).
    #[error("{action} table inet {TABLE}: {detail}")]
    Nft {
        /// What was being done.
        action: &'static str,
        /// nft's message, or why nft could not run.
        detail: String,
    },
    /// A sysctl could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Sysctl {
        /// "read" or "write".
        action: &'static str,
        /// The sysctl file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Several sysctl steps failed (each was attempted).
    #[error("forwarding sysctls: {0}")]
    Sysctls(String),
    /// The journal of changed sysctls could not be read or written.
    #[error("sysctl journal {}: {detail}", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// Transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`, as nftables and `-p` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `IPMasquerade=` of a link, as systemd.network(5) has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Masquerade {
    /// `no`: no masquerade (the link may still receive port forwards).
    #[default]
    No,
    /// `ipv4` (and systemd's deprecated `yes`).
    Ipv4,
    /// `ipv6`.
    Ipv6,
    /// `both`.
    Both,
}

impl FromStr for Masquerade {
    type Err = String;

    /// Parses `IPMasquerade=` values: `ipv4`, `ipv6`, `both`, `no`, and the
    /// booleans systemd still accepts (`yes` meaning `ipv4`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ipv4" | "yes" | "true" | "on" | "1" => Ok(Masquerade::Ipv4),
            "ipv6" => Ok(Masquerade::Ipv6),
            "both" => Ok(Masquerade::Both),
            "no" | "false" | "off" | "0" => Ok(Masquerade::No),
            _ => Err(format!("invalid IPMasquerade= value {s:?}")),
        }
    }
}

/// One `-p/--port=` forward: `proto` `host_port` on the host's addresses to
/// `container_addr`:`container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortForward {
    /// Protocol.
    pub proto: Proto,
    /// Port on the host, 1..=65535.
    pub host_port: u16,
    /// The container's address (its family decides IPv4 or IPv6 DNAT).
    pub container_addr: IpAddr,
    /// Port in the container, 1..=65535.
    pub container_port: u16,
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} -> {}:{}",
            self.proto, self.host_port, self.container_addr, self.container_port
        )
    }
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }

    fn of_net(net: &IpNetwork) -> Self {
        IpFamily::of(net.ip())
    }

    /// `ipv4` or `ipv6` (nftables' `meta nfproto` values).
    pub fn name(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        }
    }
}

/// NAT settings of one container link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LinkNat {
    subnets: BTreeSet<IpNetwork>,
    masquerade: Masquerade,
}

/// An uplink where netd switched forwarding on, for one family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Guard {
    family: IpFamily,
    ifname: String,
}

impl LinkNat {
    /// The interface group this link belongs in (see [`GROUP_BASE`]): which
    /// of its subnets' families are masqueraded.
    fn group(&self) -> u32 {
        let fams: BTreeSet<IpFamily> = self
            .subnets
            .iter()
            .map(IpFamily::of_net)
            .filter(|f| self.masquerade.covers(*f))
            .collect();
        GROUP_BASE
            + match (fams.contains(&IpFamily::V4), fams.contains(&IpFamily::V6)) {
                (false, false) => 0,
                (true, false) => 1,
                (true, true) => 2,
                (false, true) => 3,
            }
    }

    fn masquerades(&self) -> bool {
        self.group() != GROUP_BASE
    }
}

/// Everything `render` needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct State {
    /// Container links (a link expected but not yet configured has no subnet).
    links: BTreeMap<String, LinkNat>,
    forwards: BTreeMap<String, Vec<PortForward>>,
    /// Links with IPv4 forwards, which get localhost forwarding (derived).
    localnet_links: BTreeSet<String>,
    /// Uplinks netd switched forwarding on for (derived at `apply`).
    guards: BTreeSet<Guard>,
    /// The families whose masquerade rules and uplink forwarding stay while
    /// no link needs them (see [`Nat::set_standing`]).
    standing: BTreeSet<IpFamily>,
}

/// Where the kernel interfaces are: `/proc/sys` and the route tables.
#[derive(Debug, Clone)]
pub struct NatPaths {
    /// The sysctl root, normally `/proc/sys`.
    pub sysctl: PathBuf,
    /// The calling thread's `/proc/.../net`, normally `/proc/thread-self/net`
    /// (per thread, as a thread may have entered another network namespace).
    pub proc_net: PathBuf,
    /// Where to keep the list of sysctls netd changed (with their original
    /// values) so that [`Nat::recover`] can undo them after a crash, e.g.
    /// `/run/netspawn/nat-sysctls.json`. `None`: not kept.
    pub journal: Option<PathBuf>,
}

impl Default for NatPaths {
    fn default() -> Self {
        NatPaths {
            sysctl: "/proc/sys".into(),
            proc_net: "/proc/thread-self/net".into(),
            journal: None,
        }
    }
}

/// netd's NAT: the desired state, the sysctls it changed, and the verbs that
/// push both to the kernel. Methods that change the state do no I/O; call
/// [`Nat::apply`] afterwards. All I/O happens in the caller's network
/// namespace (`nft` inherits it; sysctls and routes are read per thread).
#[derive(Debug)]
pub struct Nat {
    state: State,
    sysctls: Sysctls,
    proc_net: PathBuf,
    uplinks: Option<BTreeSet<String>>,
    warnings: Vec<String>,
    /// What the kernel's table holds as far as we know: `None` unknown,
    /// `Some(Summary::default())` no table.
    installed: Option<Summary>,
    /// Whether [`Nat::set_standing`] is on.
    standing: bool,
    groups: Box<dyn LinkGroups>,
    /// The groups we put links into.
    marked: BTreeMap<String, u32>,
    /// Container links announced before they have subnets ([`Expected`]).
    expected: Expected,
}

/// Container links announced before they have their subnets, so that no
/// [`Nat::apply`] meanwhile takes one for an uplink. A handle of its own,
/// shared with the [`Nat`] it came from ([`Nat::expected`]): a link's
/// pipeline announces its link without the `Nat`, which netd's start-up may
/// hold for a while (it makes the table), and so does not wait for it.
#[derive(Debug, Clone, Default)]
pub struct Expected(Arc<Mutex<BTreeSet<String>>>);

impl Expected {
    /// Announces container link `link`.
    pub fn expect(&self, link: &str) -> Result<(), NatError> {
        if !sysctl::valid_ifname(link) {
            return Err(NatError::BadLinkName(link.to_string()));
        }
        self.lock().insert(link.to_string());
        Ok(())
    }

    fn contains(&self, link: &str) -> bool {
        self.lock().contains(link)
    }

    /// Forgets `link` (it went away, or [`Nat::remove_link`]).
    pub fn forget(&self, link: &str) {
        self.lock().remove(link);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Nat {
    fn default() -> Self {
        Nat::new()
    }
}

impl Nat {
    /// An empty NAT state on the real `/proc`.
    pub fn new() -> Self {
        Nat::with_paths(NatPaths::default())
    }

    /// An empty NAT state reading and writing the kernel through `paths`.
    pub fn with_paths(paths: NatPaths) -> Self {
        Nat {
            state: State::default(),
            sysctls: Sysctls::new(paths.sysctl, paths.journal),
            proc_net: paths.proc_net,
            uplinks: None,
            warnings: Vec::new(),
            installed: None,
            standing: false,
            groups: Box::new(NetlinkGroups::default()),
            marked: BTreeMap::new(),
            expected: Expected::default(),
        }
    }

    /// The handle that announces links to this `Nat` without locking it.
    pub fn expected(&self) -> Expected {
        self.expected.clone()
    }

    /// The same, marking links through `groups` instead of netlink.
    pub fn with_groups(paths: NatPaths, groups: Box<dyn LinkGroups>) -> Self {
        Nat {
            groups,
            ..Nat::with_paths(paths)
        }
    }

    /// At startup: undo what a previous netd (killed before it could clean up)
    /// left behind: restore the sysctls in the journal and delete the table.
    /// Returns how many sysctls were restored.
    pub fn recover(&mut self) -> Result<usize, NatError> {
        let restored = self.sysctls.recover()?;
        // Listing costs no grace period in the kernel; deleting does, so
        // only a table that is there is deleted.
        if current_table().map_or(true, |t| t != Summary::default()) {
            let empty = render::render(&State::default());
            apply_ruleset(&empty).map_err(|e| nft_error("delete", e))?;
        }
        self.installed = Some(Summary::default());
        Ok(restored)
    }

    /// At startup, when the standing rules for `families` are wanted at
    /// once: [`Nat::recover`] and [`Nat::set_standing`] then [`Nat::apply`]
    /// in one `nft` run instead of two. The table is made by a transaction
    /// that fails if a table is there (left by an earlier netd), which is
    /// then replaced as a whole. Returns how many sysctls were restored.
    pub fn recover_standing(&mut self, families: &[IpFamily]) -> Result<usize, NatError> {
        let restored = self.sysctls.recover()?;
        self.installed = Some(Summary::default());
        self.set_standing(true, families);
        self.apply()?;
        Ok(restored)
    }

    /// Keeps the masquerade rules of the families in use now (or of
    /// `families`, before any link), and forwarding on the uplinks for them,
    /// while no link needs them, until switched off: machines that come and
    /// go one after the other then never change the table. Off, the next
    /// [`Nat::apply`] removes what no link needs.
    pub fn set_standing(&mut self, on: bool, families: &[IpFamily]) {
        self.standing = on;
        if on {
            self.state.standing.extend(families.iter().copied());
            let in_use = render::families_in_use(&self.state);
            self.state.standing.extend(in_use);
        } else {
            self.state.standing.clear();
        }
    }

    /// Whether [`Nat::set_standing`] is on.
    pub fn standing(&self) -> bool {
        self.standing
    }

    /// Whether any link or port forward needs the table.
    pub fn in_use(&self) -> bool {
        !self.state.links.is_empty() || !self.state.forwards.is_empty()
    }

    /// Register `subnet` on container link `link` with masquerade `mode`
    /// (`IPMasquerade=`; the mode applies to all of the link's subnets). A link
    /// with [`Masquerade::No`] is still known, so port forwards into it work.
    pub fn set_masquerade(
        &mut self,
        link: &str,
        subnet: IpNetwork,
        mode: Masquerade,
    ) -> Result<(), NatError> {
        if !sysctl::valid_ifname(link) {
            return Err(NatError::BadLinkName(link.to_string()));
        }
        if subnet.prefix() == 0 {
            return Err(NatError::BadSubnet(subnet));
        }
        let net = IpNetwork::new(subnet.network(), subnet.prefix())
            .map_err(|_| NatError::BadSubnet(subnet))?;
        let l = self.state.links.entry(link.to_string()).or_default();
        l.subnets.insert(net);
        l.masquerade = mode;
        Ok(())
    }

    /// Forget container link `link`: its masquerade, and the port forwards into
    /// its subnets (their container is gone with it). Unknown links are fine.
    pub fn remove_link(&mut self, link: &str) {
        self.expected.forget(link);
        let Some(l) = self.state.links.remove(link) else {
            return;
        };
        // Back into the default group, if it is still there.
        if self.marked.remove(link).is_some() {
            let _ = self.groups.set_group(link, 0);
        }
        for fwds in self.state.forwards.values_mut() {
            fwds.retain(|f| !l.subnets.iter().any(|n| n.contains(f.container_addr)));
        }
        self.state.forwards.retain(|_, v| !v.is_empty());
    }

    /// Set the interfaces replies arrive on. `None` (the default) means every
    /// interface that appears in the kernel's route tables, read at each
    /// `apply`, except loopback and the container links.
    pub fn set_uplinks(&mut self, uplinks: Option<Vec<String>>) -> Result<(), NatError> {
        if let Some(v) = &uplinks {
            if let Some(bad) = v.iter().find(|n| !sysctl::valid_ifname(n)) {
                return Err(NatError::BadLinkName(bad.clone()));
            }
        }
        self.uplinks = uplinks.map(|v| v.into_iter().collect());
        Ok(())
    }

    /// Add one port forward for `owner` (a machine name). See
    /// [`Nat::add_port_forwards`].
    pub fn add_port_forward(&mut self, owner: &str, fwd: PortForward) -> Result<(), NatError> {
        self.add_port_forwards(owner, &[fwd])
    }

    /// Add `fwds` for `owner`, all or none: if any host port is already
    /// forwarded by another owner (or by this one elsewhere in the same family),
    /// nothing is added and [`NatError::PortBusy`] names the holder. Adding a
    /// forward that exists already is a no-op.
    pub fn add_port_forwards(&mut self, owner: &str, fwds: &[PortForward]) -> Result<(), NatError> {
        let mut added: Vec<PortForward> = Vec::new();
        for f in fwds {
            if f.host_port == 0 || f.container_port == 0 {
                return Err(NatError::BadPort(f.to_string()));
            }
            let existing = self
                .state
                .forwards
                .iter()
                .flat_map(|(o, v)| v.iter().map(move |g| (o.as_str(), g)));
            let pending = added.iter().map(|g| (owner, g));
            for (o, g) in existing.chain(pending) {
                let same_port = g.proto == f.proto && g.host_port == f.host_port;
                let same_family = IpFamily::of(g.container_addr) == IpFamily::of(f.container_addr);
                if same_port && (o != owner || (same_family && g != f)) {
                    return Err(NatError::PortBusy {
                        proto: f.proto,
                        host_port: f.host_port,
                        owner: o.to_string(),
                    });
                }
            }
            if !added.contains(f) {
                added.push(*f);
            }
        }
        let v = self.state.forwards.entry(owner.to_string()).or_default();
        for f in added {
            if !v.contains(&f) {
                v.push(f);
            }
        }
        if v.is_empty() {
            self.state.forwards.remove(owner);
        }
        Ok(())
    }

    /// Remove every port forward of `owner`. Unknown owners are fine.
    pub fn remove_owner(&mut self, owner: &str) {
        self.state.forwards.remove(owner);
    }

    /// The port forwards of `owner`.
    pub fn port_forwards(&self, owner: &str) -> &[PortForward] {
        self.state.forwards.get(owner).map_or(&[], Vec::as_slice)
    }

    /// Problems of the last `apply` that did not stop it (e.g. IPv6 forwarding
    /// unavailable on this kernel), one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The sysctls netd currently holds switched on, with their original values.
    pub fn changed_sysctls(&self) -> Vec<(PathBuf, String)> {
        self.sysctls
            .changed()
            .iter()
            .map(|(k, v)| (k.knob.rel_path(&k.ifname), v.clone()))
            .collect()
    }

    /// The transaction that makes the kernel's table match the current state
    /// (pure; the uplink guards are those computed by the last `apply`).
    pub fn render(&self) -> Nftables<'static> {
        render::render(&self.rendered_state())
    }

    fn rendered_state(&self) -> State {
        let mut s = self.state.clone();
        s.localnet_links = localnet_links(&s);
        s
    }

    /// Push the state to the kernel: the table (one atomic transaction), then
    /// the forwarding sysctls (switching on what is needed, restoring what no
    /// longer is). The table goes first so that an uplink is guarded before
    /// forwarding is switched on for it; if `nft` fails, no sysctl changes.
    pub fn apply(&mut self) -> Result<(), NatError> {
        self.warnings.clear();
        let desired = self.desired_sysctls()?;
        self.state.guards = desired
            .iter()
            .filter(|(_, uplink)| **uplink)
            .map(|(k, _)| k)
            .filter(|k| matches!(self.sysctls.original(k), Ok(Some(v)) if v == "0"))
            .map(|k| Guard {
                family: match k.knob {
                    Knob::Ipv6ForceForwarding => IpFamily::V6,
                    _ => IpFamily::V4,
                },
                ifname: k.ifname.clone(),
            })
            .collect();
        self.push_table()?;
        self.mark_links();
        let keys: BTreeSet<SysctlKey> = desired.into_keys().collect();
        self.sysctls.sync(&keys)?;
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
        Ok(())
    }

    /// Check that the kernel's table still holds what [`Nat::render`] gives
    /// (same chains, same rules by their comments, in order; or no table when
    /// there is nothing to render) and re-apply if not. Returns whether it
    /// re-applied. Call it on nftables change events ([`NftMonitor`]) or
    /// periodically.
    pub fn ensure(&mut self) -> Result<bool, NatError> {
        let have = current_table()?;
        self.ensure_with(have)
    }

    /// [`Nat::ensure`] given the kernel's table as [`current_table`] found
    /// it (listed without holding the `Nat`, which takes milliseconds).
    pub fn ensure_with(&mut self, have: Summary) -> Result<bool, NatError> {
        let want = Summary::of(&self.render());
        let same = have == want;
        self.installed = Some(have);
        if same {
            return Ok(false);
        }
        tracing::info!("table inet {TABLE} differs from netd's state; re-applying");
        self.apply()?;
        Ok(true)
    }

    /// Makes the kernel's table what [`Nat::render`] gives, running `nft`
    /// only if it is not that already. A table known to be absent is made
    /// by a transaction that deletes nothing (no grace period to wait for).
    fn push_table(&mut self) -> Result<(), NatError> {
        let nft = self.render();
        let want = Summary::of(&nft);
        if self.installed.as_ref() == Some(&want) {
            return Ok(());
        }
        let fresh = (self.installed == Some(Summary::default()))
            .then(|| render::render_fresh(&self.rendered_state()))
            .flatten();
        self.installed = None;
        let done = match fresh {
            // Refused if a table appeared meanwhile: then replace it.
            Some(f) => apply_ruleset(&f).or_else(|_| apply_ruleset(&nft)),
            None => apply_ruleset(&nft),
        };
        done.map_err(|e| nft_error("apply", e))?;
        self.installed = Some(want);
        Ok(())
    }

    /// Puts every configured container link into its group (see
    /// [`GROUP_BASE`]); failures (a link gone meanwhile) are warnings.
    fn mark_links(&mut self) {
        for (name, l) in &self.state.links {
            if l.subnets.is_empty() {
                continue;
            }
            let g = l.group();
            if self.marked.get(name) == Some(&g) {
                continue;
            }
            match self.groups.set_group(name, g) {
                Ok(()) => {
                    self.marked.insert(name.clone(), g);
                }
                Err(e) => self.warnings.push(format!("{name}: interface group: {e}")),
            }
        }
        self.marked.retain(|n, _| self.state.links.contains_key(n));
    }

    /// The interface group each configured container link belongs in.
    pub fn link_groups(&self) -> BTreeMap<String, u32> {
        self.state
            .links
            .iter()
            .filter(|(_, l)| !l.subnets.is_empty())
            .map(|(n, l)| (n.clone(), l.group()))
            .collect()
    }

    /// Delete netd's table and restore every sysctl netd changed (on shutdown).
    /// The state is kept: a later `apply` puts everything back. Both steps are
    /// attempted; failures are reported together.
    pub fn remove_all(&mut self) -> Result<(), NatError> {
        self.state.guards.clear();
        let empty = render::render(&State::default());
        self.installed = None;
        let nft = apply_ruleset(&empty).map_err(|e| nft_error("delete", e));
        if nft.is_ok() {
            self.installed = Some(Summary::default());
        }
        let sys = self.sysctls.restore_all();
        match (nft, sys) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Err(a), Err(b)) => Err(NatError::Sysctls(format!("{a}; {b}"))),
        }
    }

    /// The sysctls the state needs, each marked `true` if it is an uplink's.
    fn desired_sysctls(&mut self) -> Result<BTreeMap<SysctlKey, bool>, NatError> {
        let mut want = BTreeMap::new();
        let has_v6 = self.sysctls.has_ipv6_force_forwarding();
        let key = |ifname: &str, knob| SysctlKey {
            ifname: ifname.to_string(),
            knob,
        };
        let fwd_knob = |fam| match fam {
            IpFamily::V4 => Knob::Ipv4Forwarding,
            IpFamily::V6 => Knob::Ipv6ForceForwarding,
        };
        let all_forwards: Vec<PortForward> =
            self.state.forwards.values().flatten().copied().collect();
        let mut v6_needed = false;
        for (link, l) in &self.state.links {
            for net in &l.subnets {
                let fam = IpFamily::of_net(net);
                let forwarded = all_forwards.iter().any(|f| net.contains(f.container_addr));
                if l.masquerade.covers(fam) || forwarded {
                    v6_needed |= fam == IpFamily::V6;
                    if fam == IpFamily::V4 || has_v6 {
                        want.insert(key(link, fwd_knob(fam)), false);
                    }
                }
                if forwarded && fam == IpFamily::V4 {
                    want.insert(key(link, Knob::Ipv4RouteLocalnet), false);
                }
            }
        }
        for f in &all_forwards {
            let known = self
                .state
                .links
                .values()
                .any(|l| l.subnets.iter().any(|n| n.contains(f.container_addr)));
            if !known {
                self.warnings.push(format!(
                    "port forward {f}: no container link has {}; forwarding and 127.0.0.1 \
                     access are not set up for it",
                    f.container_addr
                ));
            }
        }
        if v6_needed && !has_v6 {
            self.warnings.push(
                "this kernel has no per-interface IPv6 forwarding (force_forwarding, Linux 6.17); \
                 IPv6 masquerade and forwards need net.ipv6.conf.all.forwarding=1, which netd \
                 does not set because it stops the host accepting router advertisements"
                    .to_string(),
            );
        }
        let mut fams = render::families_in_use(&self.state);
        fams.extend(self.state.standing.iter().copied());
        for fam in fams {
            if fam == IpFamily::V6 && !has_v6 {
                continue;
            }
            for up in self.uplinks_for(fam) {
                if up != "lo" && !self.state.links.contains_key(&up) && !self.expected.contains(&up)
                {
                    want.insert(key(&up, fwd_knob(fam)), true);
                }
            }
        }
        Ok(want)
    }

    fn uplinks_for(&self, fam: IpFamily) -> BTreeSet<String> {
        if let Some(u) = &self.uplinks {
            return u.clone();
        }
        let (file, parse): (&str, fn(&str) -> BTreeSet<String>) = match fam {
            IpFamily::V4 => ("route", sysctl::parse_route_ifaces_v4),
            IpFamily::V6 => ("ipv6_route", sysctl::parse_route_ifaces_v6),
        };
        // No route table (IPv6 disabled, say) means no uplink for that family.
        std::fs::read_to_string(self.proc_net.join(file))
            .map(|t| parse(&t))
            .unwrap_or_default()
    }
}

/// Links that carry IPv4 port forwards (so 127.0.0.1 on the host reaches them).
fn localnet_links(s: &State) -> BTreeSet<String> {
    let v4: Vec<IpAddr> = s
        .forwards
        .values()
        .flatten()
        .map(|f| f.container_addr)
        .filter(IpAddr::is_ipv4)
        .collect();
    s.links
        .iter()
        .filter(|(_, l)| l.subnets.iter().any(|n| v4.iter().any(|a| n.contains(*a))))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Makes the kernel's ruleset what `nft` says (one transaction), through
/// libnftables in-process, or `nft -j -f -` without it ([`libnft`]).
fn apply_ruleset(nft: &Nftables<'_>) -> Result<(), NftablesError> {
    let json = serde_json::to_string(nft).map_err(NftablesError::NftInvalidJson)?;
    match libnft::run(&json) {
        Some(Ok(_)) => Ok(()),
        Some(Err(stderr)) => Err(lib_failed("applying ruleset", stderr)),
        None => helper::apply_ruleset(nft),
    }
}

/// `nft -j list ...` of `args`, in-process when libnftables is there.
fn list_ruleset(args: &[&str]) -> Result<Nftables<'static>, NftablesError> {
    match libnft::run(&args.join(" ")) {
        Some(Ok(out)) => serde_json::from_str(&out).map_err(NftablesError::NftInvalidJson),
        Some(Err(stderr)) => Err(lib_failed("getting the current ruleset", stderr)),
        None => helper::get_current_ruleset_with_args(helper::DEFAULT_NFT, args),
    }
}

fn lib_failed(hint: &str, stderr: String) -> NftablesError {
    NftablesError::NftFailed {
        program: "libnftables".into(),
        hint: hint.into(),
        stdout: String::new(),
        stderr,
    }
}

/// The summary of the kernel's `table inet netspawn` (empty if absent).
pub fn current_table() -> Result<Summary, NatError> {
    let args = ["list", "table", "inet", TABLE];
    match list_ruleset(&args) {
        Ok(nft) => Ok(Summary::of(&nft)),
        Err(NftablesError::NftFailed { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            Ok(Summary::default())
        }
        Err(e) => Err(nft_error("list", e)),
    }
}

fn nft_error(action: &'static str, e: NftablesError) -> NatError {
    let detail = match e {
        NftablesError::NftFailed { stderr, .. } => {
            let s = stderr.trim();
            // nft's first line is the message; the rest repeats the input.
            s.lines().next().unwrap_or("nft failed").to_string()
        }
        NftablesError::NftExecution { program, inner } => {
            format!("cannot run {}: {inner}", program.to_string_lossy())
        }
        other => other.to_string(),
    };
    NatError::Nft { action, detail }
}

#[cfg(test)]
mod tests;
