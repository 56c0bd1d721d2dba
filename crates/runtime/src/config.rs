//! The resolved launch configuration: command-line flags and the machine's
//! `.nspawn` settings file merged, validated, with every default filled in.
//! Everything here is checked before anything is created, so bad input
//! changes nothing.

use std::path::{Path, PathBuf};

use netspawn_common::names::{check_machine_name, ifname_is_valid, machine_name_from_path};
use netspawn_common::paths::Paths;
use thiserror::Error;

use crate::caps::{self, CapSet};
use crate::cli::Args;
use crate::console::ConsoleMode;
use crate::seccomp::{self, SyscallFilter};
use crate::spec::{self, BindSpec, PortSpec, TmpfsSpec};
use crate::sys::is_executable_in_root;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("Invalid machine name '{0}': {1}")]
    MachineName(String, netspawn_common::names::NameError),
    #[error("Invalid hostname '{0}': {1}")]
    Hostname(String, netspawn_common::names::NameError),
    #[error("Cannot derive a machine name from {0}; use --machine=NAME")]
    NoName(PathBuf),
    #[error("Directory {0} does not exist")]
    NoDirectory(PathBuf),
    #[error("{0} is not a directory")]
    NotDirectory(PathBuf),
    #[error("Directory {0} has no /bin/sh (nor /bin/bash); pass a command to run")]
    NoShell(PathBuf),
    #[error("Directory {0} does not look like a bootable OS tree: no init found (tried {1})")]
    NoInit(PathBuf, String),
    #[error("Command '{cmd}' not found in directory {root}")]
    NoCommand { cmd: String, root: PathBuf },
    #[error("Invalid {flag} value '{value}': {reason}")]
    Value {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Spec(#[from] spec::SpecError),
    #[error("{0}")]
    Caps(#[from] caps::CapsError),
    #[error("{0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Conflict(String),
}

/// How the container is connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// Own network namespace (any of the options below implies it).
    pub private: bool,
    pub veth: bool,
    pub veth_extra: Vec<String>,
    pub bridge: Option<String>,
    pub zone: Option<String>,
    pub macvlan: Vec<String>,
    pub ipvlan: Vec<String>,
    pub interfaces: Vec<String>,
    pub ports: Vec<PortSpec>,
}

impl Network {
    /// True if links other than lo must be made.
    pub fn has_links(&self) -> bool {
        self.veth
            || !self.veth_extra.is_empty()
            || self.bridge.is_some()
            || self.zone.is_some()
            || !self.macvlan.is_empty()
            || !self.ipvlan.is_empty()
            || !self.interfaces.is_empty()
    }
}

/// Everything the launcher needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub machine: String,
    pub hostname: String,
    /// 32 lowercase hex digits.
    pub uuid: String,
    pub boot: bool,
    pub as_pid2: bool,
    /// The payload's argv (for `-b`: init and its parameters).
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub chdir: Option<PathBuf>,
    pub read_only: bool,
    pub binds: Vec<BindSpec>,
    pub tmpfs: Vec<TmpfsSpec>,
    pub quiet: bool,
    pub register: bool,
    pub network: Network,
    pub caps: CapSet,
    pub syscall_filter: SyscallFilter,
    /// Signal sent to PID 1 when we are asked to stop (None: SIGKILL).
    pub kill_signal: Option<i32>,
    pub console: ConsoleMode,
    /// Configure host0 with our own DHCP client before a plain command runs
    /// (not for `-b`, whose guest runs its own; off with `--network-config=none`).
    pub dhcp_host0: bool,
}

/// Default PATH inside the container (systemd-nspawn's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where systemd-nspawn looks for init, in order.
pub const INIT_PATHS: &[&str] = &[
    "/usr/lib/systemd/systemd",
    "/lib/systemd/systemd",
    "/sbin/init",
];

/// Parses a boolean as systemd does.
fn boolean(flag: &'static str, v: &str) -> Result<bool, ConfigError> {
    spec::parse_boolean(v).ok_or_else(|| ConfigError::Value {
        flag,
        value: v.to_string(),
        reason: "expected a boolean".into(),
    })
}

/// Parses a signal name or number: "SIGTERM", "TERM", "15", "SIGRTMIN+3", "RTMIN+3".
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse().ok()?
        };
        let n = libc::SIGRTMIN() + off;
        return (n <= libc::SIGRTMAX()).then_some(n);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')?.parse().ok()?
        };
        let n = libc::SIGRTMAX() - off;
        return (n >= libc::SIGRTMIN()).then_some(n);
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// A random UUID as 32 hex digits (version 4 bits set).
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Fall back to something unique enough; getrandom does not fail on Linux >= 3.17.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b[..8].copy_from_slice(&(t.as_nanos() as u64).to_le_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Finds `cmd` inside `root`: as a path if it has a '/', else along PATH.
pub fn find_command(root: &Path, cmd: &str, path_var: &str) -> Option<String> {
    if cmd.contains('/') {
        return is_executable_in_root(root, Path::new(cmd)).then(|| cmd.to_string());
    }
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| format!("{}/{cmd}", d.trim_end_matches('/')))
        .find(|p| is_executable_in_root(root, Path::new(p)))
}

/// True if `init` inside `root` is busybox (e.g. /sbin/init -> ../bin/busybox).
pub fn init_is_busybox(root: &Path, init: &str) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(fd) = crate::sys::open_in_root(root, Path::new(init), libc::O_PATH) else {
        return false;
    };
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.file_name().is_some_and(|n| n == "busybox"))
        .unwrap_or(false)
}

impl Config {
    /// Resolves the command line (already merged with any settings file).
    pub fn from_args(a: &Args, paths: &Paths) -> Result<Config, ConfigError> {
        // Machine name and root directory, as systemd-nspawn derives them.
        let root = match (&a.directory, &a.machine) {
            (Some(d), _) => d.clone(),
            (None, Some(m)) => {
                check_machine_name(m).map_err(|e| ConfigError::MachineName(m.clone(), e))?;
                paths.image_dir.join(m)
            }
            (None, None) => {
                std::env::current_dir().map_err(|_| ConfigError::NoDirectory(".".into()))?
            }
        };
        let md = std::fs::metadata(&root).map_err(|_| ConfigError::NoDirectory(root.clone()))?;
        if !md.is_dir() {
            return Err(ConfigError::NotDirectory(root));
        }
        let root = root
            .canonicalize()
            .map_err(|_| ConfigError::NoDirectory(root.clone()))?;
        let machine = match &a.machine {
            Some(m) => m.clone(),
            None => {
                machine_name_from_path(&root).ok_or_else(|| ConfigError::NoName(root.clone()))?
            }
        };
        check_machine_name(&machine).map_err(|e| ConfigError::MachineName(machine.clone(), e))?;
        let hostname = a.hostname.clone().unwrap_or_else(|| machine.clone());
        check_machine_name(&hostname).map_err(|e| ConfigError::Hostname(hostname.clone(), e))?;
        let uuid = match &a.uuid {
            Some(u) => {
                let hex: String = u
                    .chars()
                    .filter(|c| *c != '-')
                    .collect::<String>()
                    .to_ascii_lowercase();
                if hex.len() != 32
                    || !hex.chars().all(|c| c.is_ascii_hexdigit())
                    || hex.chars().all(|c| c == '0')
                {
                    return Err(ConfigError::Value {
                        flag: "--uuid",
                        value: u.clone(),
                        reason: "expected 32 hex digits".into(),
                    });
                }
                hex
            }
            None => random_uuid(),
        };

        // Things we do not do (refused, never silently ignored).
        if a.private_users_short {
            return Err(ConfigError::Unsupported(
                "-U (user namespaces) is not supported by netspawn".into(),
            ));
        }
        if let Some(pu) = &a.private_users {
            if boolean("--private-users", pu).ok() != Some(false) {
                return Err(ConfigError::Unsupported(format!(
                    "--private-users={pu} is not supported by netspawn (only \"no\")"
                )));
            }
        }
        if let Some(o) = &a.private_users_ownership {
            if !matches!(o.as_str(), "off" | "auto") {
                return Err(ConfigError::Unsupported(format!("--private-users-ownership={o} needs user namespaces, which netspawn does not support")));
            }
        }
        if a.template.is_some() {
            return Err(ConfigError::Unsupported(
                "--template= is not supported by netspawn".into(),
            ));
        }
        if a.ephemeral {
            return Err(ConfigError::Unsupported(
                "-x/--ephemeral is not supported by netspawn".into(),
            ));
        }
        if a.boot && a.as_pid2 {
            return Err(ConfigError::Conflict(
                "--boot and --as-pid2 may not be combined".into(),
            ));
        }
        for p in &a.property {
            if !p.contains('=') {
                return Err(ConfigError::Value {
                    flag: "--property",
                    value: p.clone(),
                    reason: "expected NAME=VALUE".into(),
                });
            }
        }
        if let Some(mode) = &a.network_config {
            if !matches!(mode.as_str(), "auto" | "none") {
                return Err(ConfigError::Value {
                    flag: "--network-config",
                    value: mode.clone(),
                    reason: "expected auto or none".into(),
                });
            }
        }
        let register = match &a.register {
            Some(v) => boolean("--register", v)?,
            None => true,
        };
        if let Some(v) = &a.notify_ready {
            boolean("--notify-ready", v)?;
        }

        // Environment.
        let mut env = Vec::new();
        for e in &a.setenv {
            let (k, v) = if e.contains('=') {
                spec::parse_env_assignment(e)?
            } else {
                let v = std::env::var(e).map_err(|_| ConfigError::Value {
                    flag: "--setenv",
                    value: e.clone(),
                    reason: "expected NAME=VALUE (NAME alone takes the value from our environment, which lacks it)".into(),
                })?;
                spec::parse_env_assignment(&format!("{e}={v}"))?
            };
            env.retain(|(ek, _): &(String, String)| *ek != k);
            env.push((k, v));
        }

        // Files.
        let mut binds = Vec::new();
        for b in &a.bind {
            binds.push(spec::parse_bind(b, false)?);
        }
        for b in &a.bind_ro {
            binds.push(spec::parse_bind(b, true)?);
        }
        binds.extend(a.file_binds.iter().cloned());
        for b in &binds {
            let src = if b.source_in_container {
                crate::mount::in_root(&root, &b.source)
            } else {
                b.source.clone()
            };
            if std::fs::symlink_metadata(&src).is_err() {
                return Err(ConfigError::Value {
                    flag: "--bind",
                    value: b.source.display().to_string(),
                    reason: "source path does not exist".into(),
                });
            }
        }
        let mut tmpfs = a
            .tmpfs
            .iter()
            .map(|t| spec::parse_tmpfs(t))
            .collect::<Result<Vec<_>, _>>()?;
        tmpfs.extend(a.file_tmpfs.iter().cloned());
        if let Some(d) = &a.chdir {
            if !d.is_absolute() {
                return Err(ConfigError::Value {
                    flag: "--chdir",
                    value: d.display().to_string(),
                    reason: "must be an absolute path".into(),
                });
            }
        }

        // Network.
        let mut net = Network {
            private: a.private_network,
            veth: a.network_veth,
            veth_extra: a
                .network_veth_extra
                .iter()
                .map(|v| spec::parse_veth_extra(v).map(|(h, c)| format!("{h}:{c}")))
                .collect::<Result<Vec<_>, _>>()?,
            bridge: a.network_bridge.clone(),
            zone: a.network_zone.clone(),
            macvlan: a.network_macvlan.clone(),
            ipvlan: a.network_ipvlan.clone(),
            interfaces: a.network_interface.clone(),
            ports: a
                .port
                .iter()
                .map(|p| spec::parse_port(p))
                .collect::<Result<Vec<_>, _>>()?,
        };
        net.ports.extend(a.file_ports.iter().cloned());
        if let Some(b) = &net.bridge {
            if !ifname_is_valid(b) {
                return Err(ConfigError::Value {
                    flag: "--network-bridge",
                    value: b.clone(),
                    reason: "not a valid interface name".into(),
                });
            }
        }
        if let Some(z) = &net.zone {
            if !ifname_is_valid(&format!("vz-{z}")) {
                return Err(ConfigError::Value {
                    flag: "--network-zone",
                    value: z.clone(),
                    reason: "\"vz-\" + zone must be a valid interface name (at most 12 characters)"
                        .into(),
                });
            }
        }
        if net.bridge.is_some() && net.zone.is_some() {
            return Err(ConfigError::Conflict(
                "--network-bridge= and --network-zone= may not be combined".into(),
            ));
        }
        for (flag, list) in [
            ("--network-macvlan", &net.macvlan),
            ("--network-ipvlan", &net.ipvlan),
            ("--network-interface", &net.interfaces),
        ] {
            if let Some(bad) = list.iter().find(|i| !ifname_is_valid(i)) {
                return Err(ConfigError::Value {
                    flag,
                    value: bad.clone(),
                    reason: "not a valid interface name".into(),
                });
            }
        }
        if !net.ports.is_empty() && !net.veth && net.bridge.is_none() && net.zone.is_none() {
            return Err(ConfigError::Conflict("--port= requires a private network with a virtual Ethernet link (-n, --network-bridge= or --network-zone=)".into()));
        }
        if net.private && net.has_links() {
            // --private-network means "only lo"; asking for links too is a contradiction.
            let with = if net.veth {
                "--network-veth"
            } else if net.bridge.is_some() {
                "--network-bridge="
            } else if net.zone.is_some() {
                "--network-zone="
            } else {
                "network interface options"
            };
            return Err(ConfigError::Conflict(format!(
                "--private-network and {with} may not be combined"
            )));
        }
        if net.has_links() {
            net.private = true;
        }

        // Security.
        let mut caps = caps::DEFAULT;
        if net.private {
            caps |= caps::CAP_NET_ADMIN;
        }
        caps |= a.file_caps.0;
        caps &= !a.file_caps.1;
        for c in &a.capability {
            caps |= caps::parse_list(c)?;
        }
        for c in &a.drop_capability {
            caps &= !caps::parse_list(c)?;
        }
        let mut syscall_filter = SyscallFilter::default();
        for f in &a.system_call_filter {
            seccomp::parse_arg(&mut syscall_filter, f)?;
        }
        let kill_signal = match &a.kill_signal {
            Some(s) => Some(parse_signal(s).ok_or_else(|| ConfigError::Value {
                flag: "--kill-signal",
                value: s.clone(),
                reason: "unknown signal".into(),
            })?),
            None => None,
        };

        // What runs.
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or(DEFAULT_PATH);
        let command = if a.boot {
            let init = INIT_PATHS
                .iter()
                .find(|p| is_executable_in_root(&root, Path::new(p)))
                .ok_or_else(|| ConfigError::NoInit(root.clone(), INIT_PATHS.join(", ")))?;
            std::iter::once(init.to_string())
                .chain(a.command.iter().cloned())
                .collect::<Vec<_>>()
        } else if let Some(cmd) = a.command.first() {
            if find_command(&root, cmd, path_var).is_none() {
                return Err(ConfigError::NoCommand {
                    cmd: cmd.clone(),
                    root,
                });
            }
            a.command.clone()
        } else {
            let sh = ["/bin/bash", "/bin/sh"]
                .iter()
                .find(|p| is_executable_in_root(&root, Path::new(p)))
                .ok_or_else(|| ConfigError::NoShell(root.clone()))?;
            vec![sh.to_string()]
        };

        // systemd (and most inits) halt on SIGRTMIN+3; busybox init ignores it
        // and powers off on SIGUSR2 instead.
        let kill_signal = match kill_signal {
            None if a.boot && init_is_busybox(&root, &command[0]) => Some(libc::SIGUSR2),
            None if a.boot => Some(libc::SIGRTMIN() + 3),
            other => other,
        };

        let tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false)
            && nix::unistd::isatty(std::io::stdout()).unwrap_or(false);
        let console = match (a.console, a.pipe) {
            (Some(c), false) => c,
            (None, true) => ConsoleMode::Pipe,
            (Some(c), true) if c == ConsoleMode::Pipe => c,
            (Some(_), true) => {
                return Err(ConfigError::Conflict(
                    "--pipe and --console= may not be combined".into(),
                ))
            }
            (None, false) if tty => ConsoleMode::Interactive,
            (None, false) if a.boot => ConsoleMode::ReadOnly,
            (None, false) => ConsoleMode::Pipe,
        };
        if console == ConsoleMode::Interactive && !tty {
            return Err(ConfigError::Conflict(
                "--console=interactive needs standard input and output to be a terminal".into(),
            ));
        }

        let dhcp_host0 = !a.boot
            && a.network_config.as_deref() != Some("none")
            && (net.veth || net.zone.is_some() || net.bridge.is_some());
        Ok(Config {
            root,
            machine,
            hostname,
            uuid,
            boot: a.boot,
            as_pid2: a.as_pid2,
            command,
            env,
            chdir: a.chdir.clone(),
            read_only: a.read_only,
            binds,
            tmpfs,
            quiet: a.quiet,
            register,
            network: net,
            caps,
            syscall_filter,
            kill_signal,
            console,
            dhcp_host0,
        })
    }

    /// The payload's environment: our defaults, then `-E` assignments.
    pub fn environment(&self, term: Option<&str>) -> Vec<String> {
        let mut out: Vec<(String, String)> = vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("container".into(), "netspawn".into()),
            ("container_uuid".into(), self.uuid.clone()),
            ("HOME".into(), "/root".into()),
            ("USER".into(), "root".into()),
            ("LOGNAME".into(), "root".into()),
            ("NOTIFY_SOCKET".into(), "/run/host/notify".into()),
        ];
        if let Some(t) = term {
            out.push(("TERM".into(), t.into()));
        }
        for (k, v) in &self.env {
            out.retain(|(ok, _)| ok != k);
            out.push((k.clone(), v.clone()));
        }
        out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("term"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("RTMAX-1"), Some(libc::SIGRTMAX() - 1));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("RTMIN+99"), None);
    }

    #[test]
    fn uuids_are_random_v4() {
        let a = random_uuid();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_uuid());
        assert_eq!(&a[12..13], "4");
    }
}
