//! Where netspawn keeps its state. Every location can be moved with an
//! environment variable, which is how the test suite keeps away from the
//! machine's real `/run`, `/var/lib/machines` and `/var/lib/netspawn`.

use std::path::PathBuf;

/// Runtime state (registry, locks, netd's socket). Default `/run/netspawn`.
pub const ENV_RUN_DIR: &str = "NETSPAWN_RUN_DIR";
/// Where images live. Default `/var/lib/machines`.
pub const ENV_IMAGE_DIR: &str = "NETSPAWN_IMAGE_DIR";
/// Persistent state (leases, pools). Default `/var/lib/netspawn`.
pub const ENV_STATE_DIR: &str = "NETSPAWN_STATE_DIR";
/// Colon-separated directories searched for `NAME.nspawn`.
/// Default `/etc/systemd/nspawn:/run/systemd/nspawn`.
pub const ENV_SETTINGS_PATH: &str = "NETSPAWN_SETTINGS_PATH";
/// Name of the cgroup directory under which machines are placed. Default `netspawn`.
pub const ENV_CGROUP_PARENT: &str = "NETSPAWN_CGROUP_PARENT";

/// The users view by machine name, below the run directory.
pub const USERNS_SUBDIR: &str = "userns";
/// The users view by ID range, below the run directory.
pub const UIDS_SUBDIR: &str = "uids";

/// Run-time `.network` files, below the run directory.
pub const NETWORK_SUBDIR: &str = "network";

/// The resolved set of locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub run_dir: PathBuf,
    pub image_dir: PathBuf,
    pub state_dir: PathBuf,
    pub settings_path: Vec<PathBuf>,
    pub cgroup_parent: String,
}

fn env_or(var: &str, default: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => default.to_string(),
    }
}

impl Paths {
    /// Reads the locations from the environment, falling back to the defaults.
    pub fn from_env() -> Paths {
        Paths {
            run_dir: env_or(ENV_RUN_DIR, "/run/netspawn").into(),
            image_dir: env_or(ENV_IMAGE_DIR, "/var/lib/machines").into(),
            state_dir: env_or(ENV_STATE_DIR, "/var/lib/netspawn").into(),
            settings_path: env_or(ENV_SETTINGS_PATH, "/etc/systemd/nspawn:/run/systemd/nspawn")
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
            cgroup_parent: env_or(ENV_CGROUP_PARENT, "netspawn"),
        }
    }

    /// The registry directory: one file per running machine.
    pub fn machines_dir(&self) -> PathBuf {
        self.run_dir.join("machines")
    }

    /// The registry's hosts view: one link per machine with addresses (see
    /// [`crate::hosts`]).
    pub fn hosts_dir(&self) -> PathBuf {
        self.run_dir.join("hosts")
    }

    /// The registry's users view by machine name: one link per machine with
    /// a user namespace (see [`crate::users`]).
    pub fn userns_dir(&self) -> PathBuf {
        self.run_dir.join(USERNS_SUBDIR)
    }

    /// The users view by ID range: one link per such machine, named
    /// `SHIFT:RANGE` (see [`crate::users`]).
    pub fn uids_dir(&self) -> PathBuf {
        self.run_dir.join(UIDS_SUBDIR)
    }

    /// `.network` files written at run time (networkd's
    /// `/run/systemd/network`): netd searches it between the
    /// administrator's directory and the package's; `netspawnctl up` puts
    /// the files of a lab's zones here.
    pub fn network_dir(&self) -> PathBuf {
        self.run_dir.join(NETWORK_SUBDIR)
    }

    /// Lock files (machine names, images).
    pub fn locks_dir(&self) -> PathBuf {
        self.run_dir.join("locks")
    }

    /// Console logs of machines started by `netspawnctl start`.
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}

/// Host configuration of netspawn itself (enabled machines, network
/// templates). Default `/etc/netspawn`.
pub const ENV_CONFIG_DIR: &str = "NETSPAWN_CONFIG_DIR";
/// Where `netspawnctl install` puts systemd units. Default `/etc/systemd/system`.
pub const ENV_SYSTEMD_DIR: &str = "NETSPAWN_SYSTEMD_DIR";
/// A directory whose existence means PID 1 is systemd (`sd_booted()`).
/// Default `/run/systemd/system`.
pub const ENV_SYSTEMD_RUN_DIR: &str = "NETSPAWN_SYSTEMD_RUN_DIR";
/// Where `netspawnctl install` puts the sysvinit script. Default `/etc/init.d`.
pub const ENV_INIT_DIR: &str = "NETSPAWN_INIT_DIR";

/// The host's boot configuration: where machines are enabled, and where the
/// units or the init script that start them at boot are installed. Separate
/// from [`Paths`] because only the lifecycle verbs read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPaths {
    pub config_dir: PathBuf,
    pub systemd_dir: PathBuf,
    pub systemd_run_dir: PathBuf,
    pub init_dir: PathBuf,
    /// True if the systemd unit directory is the real one (not moved by
    /// the environment), so telling systemd about new units is safe.
    pub systemd_dir_is_default: bool,
}

impl BootPaths {
    /// Reads the locations from the environment, falling back to the defaults.
    pub fn from_env() -> BootPaths {
        let systemd_dir = env_or(ENV_SYSTEMD_DIR, "");
        BootPaths {
            config_dir: env_or(ENV_CONFIG_DIR, "/etc/netspawn").into(),
            systemd_dir_is_default: systemd_dir.is_empty(),
            systemd_dir: if systemd_dir.is_empty() {
                "/etc/systemd/system".into()
            } else {
                systemd_dir.into()
            },
            systemd_run_dir: env_or(ENV_SYSTEMD_RUN_DIR, "/run/systemd/system").into(),
            init_dir: env_or(ENV_INIT_DIR, "/etc/init.d").into(),
        }
    }

    /// True if PID 1 is systemd (the test `sd_booted()` makes).
    pub fn systemd_booted(&self) -> bool {
        self.systemd_run_dir.is_dir()
    }

    /// One record per machine enabled without systemd: `<config>/enabled/NAME`.
    pub fn enabled_dir(&self) -> PathBuf {
        self.config_dir.join("enabled")
    }
}
