//! The typed settings both the command line and a `.nspawn` file produce
//! (systemd's `Settings` of `nspawn-settings.h`). `None`/empty means "not
//! set here": the other source or the default applies.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::caps::CapSet;
use crate::seccomp::SyscallFilter;
use crate::spec::{BindSpec, OverlaySpec, PortSpec, TmpfsSpec};

/// How the payload is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// The payload is PID 1 (the default).
    Pid1,
    /// A stub init is PID 1, the payload PID 2 (`-a`, `ProcessTwo=`).
    Pid2,
    /// The image's init is PID 1 (`-b`, `Boot=`).
    Boot,
}

/// `--volatile=`/`Volatile=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volatile {
    No,
    Yes,
    State,
    Overlay,
}

impl Volatile {
    /// A boolean, `state` or `overlay`.
    pub fn parse(v: &str) -> Result<Volatile, String> {
        match (netspawn_common::unitfile::parse_boolean(v), v) {
            (Some(true), _) => Ok(Volatile::Yes),
            (Some(false), _) => Ok(Volatile::No),
            (None, "state") => Ok(Volatile::State),
            (None, "overlay") => Ok(Volatile::Overlay),
            _ => Err(format!(
                "{v:?} (expected a boolean, \"state\" or \"overlay\")"
            )),
        }
    }
}

/// `--private-users=`/`PrivateUsers=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateUsers {
    No,
    Yes,
    Pick,
    Identity,
    /// A UID base and range (`UID[:RANGE]`; the range defaults to 65536).
    Base {
        shift: u32,
        range: u32,
    },
}

impl PrivateUsers {
    /// A boolean, `pick`, `identity`, `UID` or `UID:RANGE` (decimal, range
    /// at least 1, not past 2^32-1 together). A number is a UID base, never
    /// a boolean, as in systemd (`0` is the base 0).
    pub fn parse(v: &str) -> Result<PrivateUsers, String> {
        let bad =
            || format!("{v:?} (expected a boolean, \"pick\", \"identity\", UID or UID:RANGE)");
        let num = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 10 {
                return None;
            }
            s.parse().ok()
        };
        if !v.is_empty() && v.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            let (shift, range) = match v.split_once(':') {
                Some((s, r)) => (num(s), num(r)),
                None => (num(v), Some(0x10000)),
            };
            return match (shift, range) {
                (Some(s), Some(r)) if r >= 1 && s + r <= u64::from(u32::MAX) => {
                    Ok(PrivateUsers::Base {
                        shift: s as u32,
                        range: r as u32,
                    })
                }
                _ => Err(bad()),
            };
        }
        match (netspawn_common::unitfile::parse_boolean(v), v) {
            (Some(true), _) => Ok(PrivateUsers::Yes),
            (Some(false), _) => Ok(PrivateUsers::No),
            (None, "pick") => Ok(PrivateUsers::Pick),
            (None, "identity") => Ok(PrivateUsers::Identity),
            _ => Err(bad()),
        }
    }
}

/// `--private-users-ownership=`/`PrivateUsersOwnership=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Off,
    Chown,
    Map,
    Foreign,
    Auto,
}

impl Ownership {
    /// `off`, `chown`, `map`, `foreign`, `auto`, or a boolean (`auto`/`off`).
    pub fn parse(v: &str) -> Result<Ownership, String> {
        match (netspawn_common::unitfile::parse_boolean(v), v) {
            (Some(true), _) | (None, "auto") => Ok(Ownership::Auto),
            (Some(false), _) | (None, "off") => Ok(Ownership::Off),
            (None, "chown") => Ok(Ownership::Chown),
            (None, "map") => Ok(Ownership::Map),
            (None, "foreign") => Ok(Ownership::Foreign),
            _ => Err(format!("{v:?} (expected off, chown, map, foreign or auto)")),
        }
    }
}

/// One resource limit value: `u64::MAX` is infinity.
pub type Limit = u64;

/// A soft and a hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub soft: Limit,
    pub hard: Limit,
}

/// The resource limits systemd knows, in `RLIMIT_*` order of their names
/// (`--rlimit=NOFILE=…`, `LimitNOFILE=`), with the kernel's resource number.
pub const RLIMITS: [(&str, u32); 16] = [
    ("CPU", libc::RLIMIT_CPU),
    ("FSIZE", libc::RLIMIT_FSIZE),
    ("DATA", libc::RLIMIT_DATA),
    ("STACK", libc::RLIMIT_STACK),
    ("CORE", libc::RLIMIT_CORE),
    ("RSS", libc::RLIMIT_RSS),
    ("NOFILE", libc::RLIMIT_NOFILE),
    ("AS", libc::RLIMIT_AS),
    ("NPROC", libc::RLIMIT_NPROC),
    ("MEMLOCK", libc::RLIMIT_MEMLOCK),
    ("LOCKS", libc::RLIMIT_LOCKS),
    ("SIGPENDING", libc::RLIMIT_SIGPENDING),
    ("MSGQUEUE", libc::RLIMIT_MSGQUEUE),
    ("NICE", libc::RLIMIT_NICE),
    ("RTPRIO", libc::RLIMIT_RTPRIO),
    ("RTTIME", libc::RLIMIT_RTTIME),
];

/// CPUs by number (`--cpu-affinity=`, `CPUAffinity=`).
pub type CpuSet = BTreeSet<usize>;

/// Settings from one source. See [`crate::config::merge`] for how two are
/// merged; the groups are [`crate::config::Mask`]'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    // [Exec]
    /// `-b`/`-a` (or a command), `Boot=`/`ProcessTwo=`.
    pub start_mode: Option<StartMode>,
    /// The command, or init's arguments with `Boot=yes` (`Parameters=`).
    pub parameters: Vec<String>,
    /// `-E`, `Environment=`: in order, one per name.
    pub environment: Vec<(String, String)>,
    /// `--chdir=`, `WorkingDirectory=`: absolute, normalised.
    pub working_directory: Option<PathBuf>,
    /// `--hostname=`, `Hostname=`.
    pub hostname: Option<String>,
    /// `--capability=`, `Capability=`.
    pub capability: Option<CapSet>,
    /// `--drop-capability=`, `DropCapability=`.
    pub drop_capability: Option<CapSet>,
    /// `--system-call-filter=`, `SystemCallFilter=`.
    pub syscall_filter: SyscallFilter,
    /// `--kill-signal=`, `KillSignal=`: a signal number.
    pub kill_signal: Option<i32>,
    /// `--notify-ready=`, `NotifyReady=`.
    pub notify_ready: Option<bool>,
    /// `--private-users=`/`-U`, `PrivateUsers=`.
    pub private_users: Option<PrivateUsers>,
    /// `-u/--user=`, `User=`: a name or UID of the image's /etc/passwd.
    pub user: Option<String>,
    /// `--no-new-privileges=`, `NoNewPrivileges=`.
    pub no_new_privileges: Option<bool>,
    /// `--rlimit=`, `Limit*=`: by index into [`RLIMITS`].
    pub rlimits: [Option<Rlimit>; 16],
    /// `--oom-score-adjust=`, `OOMScoreAdjust=`: -1000..=1000.
    pub oom_score_adjust: Option<i32>,
    /// `--cpu-affinity=`, `CPUAffinity=`.
    pub cpu_affinity: Option<CpuSet>,
    /// `--uuid=`, `MachineID=`: 32 lowercase hex digits.
    pub machine_id: Option<String>,
    /// `-x/--ephemeral`, `Ephemeral=`.
    pub ephemeral: Option<bool>,

    // [Files]
    /// `--bind=`/`--bind-ro=`, `Bind=`/`BindReadOnly=`, in order.
    pub binds: Vec<BindSpec>,
    /// `--tmpfs=`, `TemporaryFileSystem=`.
    pub tmpfs: Vec<TmpfsSpec>,
    /// `--overlay=`/`--overlay-ro=`, `Overlay=`/`OverlayReadOnly=`, in order.
    pub overlays: Vec<OverlaySpec>,
    /// `--inaccessible=`, `Inaccessible=`: absolute paths in the container.
    pub inaccessible: Vec<PathBuf>,
    /// `--read-only`, `ReadOnly=`.
    pub read_only: Option<bool>,
    /// `--volatile=`, `Volatile=`.
    pub volatile: Option<Volatile>,
    /// `--private-users-ownership=`, `PrivateUsersOwnership=`.
    pub private_users_ownership: Option<Ownership>,

    // [Network]
    /// `--private-network`, `Private=`.
    pub private_network: Option<bool>,
    /// `-n`, `VirtualEthernet=`.
    pub virtual_ethernet: Option<bool>,
    /// `--network-veth-extra=`, `VirtualEthernetExtra=`: (host, container).
    pub virtual_ethernet_extra: Vec<(String, String)>,
    /// `--network-bridge=`, `Bridge=`.
    pub bridge: Option<String>,
    /// `--network-zone=`, `Zone=`: without the `vz-` prefix.
    pub zone: Option<String>,
    /// `-p`, `Port=`.
    pub ports: Vec<PortSpec>,
    /// `--network-interface=`, `Interface=`.
    pub interfaces: Vec<String>,
    /// `--network-macvlan=`, `MACVLAN=`.
    pub macvlan: Vec<String>,
    /// `--network-ipvlan=`, `IPVLAN=`.
    pub ipvlan: Vec<String>,
}

impl Settings {
    /// True if a private network namespace is asked for, explicitly or
    /// through any setting that implies one (systemd's
    /// `settings_private_network()`).
    pub fn private_network(&self) -> bool {
        self.private_network == Some(true)
            || self.network_veth()
            || !self.interfaces.is_empty()
            || !self.macvlan.is_empty()
            || !self.ipvlan.is_empty()
            || !self.virtual_ethernet_extra.is_empty()
    }

    /// True if a veth link is asked for (`VirtualEthernet=yes`, or implied
    /// by `Bridge=`/`Zone=`).
    pub fn network_veth(&self) -> bool {
        self.virtual_ethernet == Some(true) || self.bridge.is_some() || self.zone.is_some()
    }

    /// True if any network setting is present, including explicit `no`s
    /// (systemd's `settings_network_configured()`).
    pub fn network_configured(&self) -> bool {
        self.private_network.is_some()
            || self.virtual_ethernet.is_some()
            || self.bridge.is_some()
            || self.zone.is_some()
            || !self.interfaces.is_empty()
            || !self.macvlan.is_empty()
            || !self.ipvlan.is_empty()
            || !self.virtual_ethernet_extra.is_empty()
    }
}
