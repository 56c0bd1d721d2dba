//! Turning merged [`Settings`] into the launch [`Config`], group by group:
//! [`exec`] (what runs, as whom, with which environment), [`files`],
//! [`network`], [`security`] (capabilities, system calls, privileges) and
//! [`resources`] (limits, OOM score, CPU affinity). Everything is checked
//! before anything is created, so bad input changes nothing. Settings
//! netspawn does not implement are refused here with one line naming them.

mod exec;
mod files;
mod network;
mod resources;
mod security;

use std::path::{Path, PathBuf};

use netspawn_common::names::{check_machine_name, machine_name_from_path};
use netspawn_common::paths::Paths;
use thiserror::Error;

use super::cli::Options;
use super::model::{CpuSet, Rlimit, Settings};
use crate::caps::{self, CapSet};
use crate::console::ConsoleMode;
use crate::seccomp::{self, SyscallFilter};
use crate::spec::{self, BindSpec, TmpfsSpec};

pub use exec::{find_command, init_is_busybox, random_uuid, DEFAULT_PATH, INIT_PATHS};
pub use network::Network;
pub use spec::parse_signal;

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
    /// Paths over-mounted with inaccessible nodes (in the container).
    pub inaccessible: Vec<PathBuf>,
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
    /// Wait for the payload's READY=1 before the machine counts as ready.
    pub notify_ready: bool,
    /// The user to run the payload as (looked up in the container).
    pub user: Option<String>,
    pub no_new_privileges: bool,
    /// Resource limits as (kernel resource number, limit).
    pub rlimits: Vec<(u32, Rlimit)>,
    pub oom_score_adjust: Option<i32>,
    pub cpu_affinity: Option<CpuSet>,
}

/// Resolves the merged settings and the command line's options.
pub fn resolve(s: Settings, o: &Options, paths: &Paths) -> Result<Config, ConfigError> {
    let (root, machine) = root_and_machine(o, paths)?;
    let hostname = s.hostname.clone().unwrap_or_else(|| machine.clone());
    check_machine_name(&hostname).map_err(|e| ConfigError::Hostname(hostname.clone(), e))?;
    refuse_unsupported(&s, o)?;

    let files = files::resolve(&s, &root)?;
    let net = network::resolve(&s)?;
    let security = security::resolve(&s, &net)?;
    let resources = resources::resolve(&s);
    let exec = exec::resolve(&s, o, &root, &files)?;
    let uuid = match &s.machine_id {
        Some(id) => id.clone(),
        None => exec::image_machine_id(&root).unwrap_or_else(random_uuid),
    };
    let dhcp_host0 = !exec.boot
        && o.network_config != Some(false)
        && (net.veth || net.zone.is_some() || net.bridge.is_some());
    Ok(Config {
        root,
        machine,
        hostname,
        uuid,
        boot: exec.boot,
        as_pid2: exec.as_pid2,
        command: exec.command,
        env: exec.env,
        chdir: s.working_directory.clone(),
        read_only: files.read_only,
        binds: files.binds,
        tmpfs: files.tmpfs,
        inaccessible: files.inaccessible,
        quiet: o.quiet,
        register: o.register.unwrap_or(true),
        network: net,
        caps: security.caps,
        syscall_filter: security.syscall_filter,
        kill_signal: exec.kill_signal,
        console: exec.console,
        dhcp_host0,
        notify_ready: s.notify_ready.unwrap_or(false),
        user: exec.user,
        no_new_privileges: security.no_new_privileges,
        rlimits: resources.rlimits,
        oom_score_adjust: resources.oom_score_adjust,
        cpu_affinity: resources.cpu_affinity,
    })
}

/// Machine name and root directory, as systemd-nspawn derives them.
fn root_and_machine(o: &Options, paths: &Paths) -> Result<(PathBuf, String), ConfigError> {
    let root = match (&o.directory, &o.machine) {
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
    let machine = match &o.machine {
        Some(m) => m.clone(),
        None => machine_name_from_path(&root).ok_or_else(|| ConfigError::NoName(root.clone()))?,
    };
    check_machine_name(&machine).map_err(|e| ConfigError::MachineName(machine.clone(), e))?;
    Ok((root, machine))
}

/// Settings a later issue implements: refused, never silently ignored.
fn refuse_unsupported(s: &Settings, o: &Options) -> Result<(), ConfigError> {
    use super::model::{Ownership, PrivateUsers, Volatile};
    let no = |what: String| Err(ConfigError::Unsupported(what));
    if let Some(p) = o.property.first() {
        return no(format!(
            "--property={p} is not supported by netspawn (no resource control yet)"
        ));
    }
    if o.template.is_some() {
        return no("--template= is not supported by netspawn".into());
    }
    if s.ephemeral == Some(true) {
        return no("-x/--ephemeral (Ephemeral=) is not supported by netspawn".into());
    }
    match s.volatile {
        None | Some(Volatile::No) => {}
        Some(v) => {
            let name = match v {
                Volatile::Yes => "yes",
                Volatile::State => "state",
                _ => "overlay",
            };
            return no(format!(
                "--volatile={name} (Volatile=) is not supported by netspawn (only \"no\")"
            ));
        }
    }
    match s.private_users {
        None | Some(PrivateUsers::No) => {}
        Some(p) => {
            let what = match p {
                _ if o.private_users_short => "-U".to_string(),
                PrivateUsers::Yes => "--private-users=yes".into(),
                PrivateUsers::Pick => "--private-users=pick".into(),
                PrivateUsers::Identity => "--private-users=identity".into(),
                PrivateUsers::Base { shift, range } => {
                    format!("--private-users={shift}:{range} (a UID base)")
                }
                PrivateUsers::No => unreachable!("matched above"),
            };
            return no(format!(
                "{what} (user namespaces) is not supported by netspawn (only \"no\")"
            ));
        }
    }
    match s.private_users_ownership {
        None | Some(Ownership::Off | Ownership::Auto) => {}
        Some(_) => {
            return no(
                "--private-users-ownership= needs user namespaces, which netspawn does not support"
                    .into(),
            )
        }
    }
    Ok(())
}

impl Config {
    /// The payload's environment: our defaults, then `-E` assignments. A
    /// `--user=` changes HOME, USER, LOGNAME and SHELL in the container
    /// ([`crate::exec`]), below the `-E` ones.
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

/// True if `p` is `dir` or below it.
fn below(p: &Path, dir: &Path) -> bool {
    p.starts_with(dir)
}
