//! The `netspawn` command line, with systemd-nspawn's flag names. Values are
//! parsed once, here, by typed value parsers (the same ones `.nspawn` keys
//! use); [`Args::into_command`] turns them into [`Settings`], the [`Mask`]
//! of groups the command line sets, and the [`Options`] only the command line
//! has.

use std::path::PathBuf;

use clap::Parser;
use netspawn_common::names::ifname_is_valid;
use netspawn_common::unitfile::values;

use super::merge::{Mask, SettingsMode};
use super::model::{CpuSet, Ownership, PrivateUsers, Rlimit, Settings, StartMode, Volatile};
use super::property::{slice_path, Property};
use super::resolve::ConfigError;
use crate::caps::{self, CapSet};
use crate::console::ConsoleMode;
use crate::seccomp::SyscallFilter;
use crate::spec::{self, BindSpec, OverlaySpec, PortSpec, TmpfsSpec};

fn bind_rw(s: &str) -> Result<BindSpec, spec::SpecError> {
    spec::parse_bind(s, false)
}

fn bind_ro(s: &str) -> Result<BindSpec, spec::SpecError> {
    spec::parse_bind(s, true)
}

fn overlay_rw(s: &str) -> Result<OverlaySpec, spec::SpecError> {
    spec::parse_overlay(s, false)
}

fn overlay_ro(s: &str) -> Result<OverlaySpec, spec::SpecError> {
    spec::parse_overlay(s, true)
}

fn boolean(s: &str) -> Result<bool, String> {
    values::boolean(s)
}

/// An interface name flag (`--network-bridge=` …): "not a valid interface
/// name", as the launcher has always said.
fn ifname(s: &str) -> Result<String, String> {
    if ifname_is_valid(s) {
        Ok(s.to_string())
    } else {
        Err("not a valid interface name".to_string())
    }
}

fn zone(s: &str) -> Result<String, String> {
    if s.contains(':') {
        // `NAME:internal` (docker's and podman's way) is not how netspawn
        // makes a zone internal: say what is.
        return Err(
            "a zone takes no options; for an internal zone, give vz-NAME a .network \
                    template with DNSDefaultRoute=no and IPMasquerade=no"
                .to_string(),
        );
    }
    if ifname_is_valid(&format!("vz-{s}")) {
        Ok(s.to_string())
    } else {
        Err("\"vz-\" + zone must be a valid interface name (at most 12 characters)".to_string())
    }
}

fn private_users(s: &str) -> Result<PrivateUsers, String> {
    PrivateUsers::parse(s)
}

fn ownership(s: &str) -> Result<Ownership, String> {
    Ownership::parse(s)
}

fn volatile(s: &str) -> Result<Volatile, String> {
    Volatile::parse(s)
}

fn property(s: &str) -> Result<Property, String> {
    Property::parse(s).map_err(|e| e.to_string())
}

fn slice(s: &str) -> Result<String, String> {
    slice_path(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn settings_mode(s: &str) -> Result<SettingsMode, String> {
    s.parse::<SettingsMode>().map_err(|e| e.to_string())
}

fn network_config(s: &str) -> Result<bool, String> {
    match s {
        "auto" => Ok(true),
        "none" => Ok(false),
        _ => Err("expected auto or none".into()),
    }
}

/// What `netspawn --help` says first: what the tool is, and, as plainly as
/// systemd-nspawn(1) says it of itself, what it is not (issue 9, item 3).
pub const LONG_ABOUT: &str = "\
A systemd-nspawn-compatible container launcher with networking built in

Without a user namespace, the container's root is the host's root with fewer capabilities: \
this is not a security boundary.
A payload that is root can mount a fresh procfs (which exposes /proc/sys/kernel/core_pattern) \
or a cgroup v1 hierarchy (which exposes release_agent), and through either run code as root on \
the host. Only user namespaces (-U) make the container a boundary; without one \
run only images and payloads you would run on the host itself.";

/// Spawn a command or OS in a light-weight container.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "netspawn",
    version,
    about,
    long_about = LONG_ABOUT,
    disable_help_subcommand = true
)]
pub struct Args {
    /// Root directory for the container
    #[arg(short = 'D', long = "directory", value_name = "PATH")]
    pub directory: Option<PathBuf>,
    /// Set the machine name for the container (image from the image directory if -D is not given)
    #[arg(short = 'M', long = "machine", value_name = "NAME")]
    pub machine: Option<String>,
    /// Set the hostname for the container
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostname: Option<String>,
    /// Set a specific container UUID (32 hex digits)
    #[arg(long = "uuid", value_name = "UUID", value_parser = spec::parse_machine_id)]
    pub uuid: Option<String>,
    /// Boot an OS: run its init as PID 1
    #[arg(short = 'b', long = "boot")]
    pub boot: bool,
    /// Maintain a stub init as PID 1, invoke the command as PID 2
    #[arg(short = 'a', long = "as-pid2")]
    pub as_pid2: bool,
    /// Change to the specified working directory before invoking the process
    #[arg(long = "chdir", value_name = "PATH", value_parser = spec::parse_absolute_path)]
    pub chdir: Option<PathBuf>,
    /// Set an environment variable in the container (NAME alone: our value, or empty)
    #[arg(short = 'E', long = "setenv", value_name = "NAME[=VALUE]", value_parser = spec::parse_setenv)]
    pub setenv: Vec<(String, String)>,
    /// Run the command as the specified user (from the container's /etc/passwd)
    #[arg(short = 'u', long = "user", value_name = "USER", value_parser = spec::parse_user)]
    pub user: Option<String>,
    /// Bind mount a file or directory from the host into the container
    #[arg(long = "bind", value_name = "SRC[:DST[:OPTS]]", value_parser = bind_rw)]
    pub bind: Vec<BindSpec>,
    /// Bind mount a file or directory from the host read-only
    #[arg(long = "bind-ro", value_name = "SRC[:DST[:OPTS]]", value_parser = bind_ro)]
    pub bind_ro: Vec<BindSpec>,
    /// Mount an empty tmpfs to the specified directory
    #[arg(long = "tmpfs", value_name = "PATH[:OPTIONS]", value_parser = spec::parse_tmpfs)]
    pub tmpfs: Vec<TmpfsSpec>,
    /// Mount an overlay file system: LOWER…:UPPER[:DEST] (an empty UPPER: a tmpfs)
    #[arg(long = "overlay", value_name = "PATH[:PATH…]:PATH", value_parser = overlay_rw)]
    pub overlay: Vec<OverlaySpec>,
    /// Mount a read-only overlay file system: LOWER…:UPPER[:DEST]
    #[arg(long = "overlay-ro", value_name = "PATH[:PATH…]:PATH", value_parser = overlay_ro)]
    pub overlay_ro: Vec<OverlaySpec>,
    /// Over-mount a file or directory with an inaccessible one
    #[arg(long = "inaccessible", value_name = "PATH", value_parser = spec::parse_absolute_path)]
    pub inaccessible: Vec<PathBuf>,
    /// Mount the root directory read-only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Run the system in volatile mode: yes (tmpfs root, the image's /usr), state (tmpfs /var) or overlay
    #[arg(long = "volatile", value_name = "MODE", num_args = 0..=1, default_missing_value = "yes", value_parser = volatile)]
    pub volatile: Option<Volatile>,
    /// Suppress informational messages
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Do not pipe output into a pager (netspawn never does)
    #[arg(long = "no-pager")]
    pub no_pager: bool,
    /// Disable network in the container (only a loopback device unless links are asked for)
    #[arg(long = "private-network")]
    pub private_network: bool,
    /// Add a virtual Ethernet connection between host and container
    #[arg(short = 'n', long = "network-veth")]
    pub network_veth: bool,
    /// Add an additional virtual Ethernet link between host and container
    #[arg(long = "network-veth-extra", value_name = "HOSTIF[:CONTAINERIF]", value_parser = spec::parse_veth_extra)]
    pub network_veth_extra: Vec<(String, String)>,
    /// Add a virtual Ethernet connection to the container and attach it to an existing bridge on the host
    #[arg(long = "network-bridge", value_name = "INTERFACE", value_parser = ifname)]
    pub network_bridge: Option<String>,
    /// Similar, but attach the new interface to an automatically managed bridge "vz-ZONE"
    #[arg(long = "network-zone", value_name = "NAME", value_parser = zone)]
    pub network_zone: Option<String>,
    /// Create a macvlan network interface based on an existing host interface
    #[arg(long = "network-macvlan", value_name = "INTERFACE", value_parser = ifname)]
    pub network_macvlan: Vec<String>,
    /// Create an ipvlan network interface based on an existing host interface
    #[arg(long = "network-ipvlan", value_name = "INTERFACE", value_parser = ifname)]
    pub network_ipvlan: Vec<String>,
    /// Assign an existing network interface to the container
    #[arg(long = "network-interface", value_name = "INTERFACE", value_parser = ifname)]
    pub network_interface: Vec<String>,
    /// Expose a container IP port on the host
    #[arg(
        short = 'p',
        long = "port",
        value_name = "[PROTOCOL:]HOSTPORT[:CONTAINERPORT]",
        value_parser = spec::parse_port
    )]
    pub port: Vec<PortSpec>,
    /// In addition to the default, retain the specified capability
    #[arg(long = "capability", value_name = "CAP", value_parser = caps::parse_list)]
    pub capability: Vec<CapSet>,
    /// Drop the specified capability from the default set
    #[arg(long = "drop-capability", value_name = "CAP", value_parser = caps::parse_list)]
    pub drop_capability: Vec<CapSet>,
    /// Do not let the payload gain privileges (setuid binaries, file capabilities)
    #[arg(long = "no-new-privileges", value_name = "BOOLEAN", value_parser = boolean)]
    pub no_new_privileges: Option<bool>,
    /// Configure the system call filter
    #[arg(long = "system-call-filter", value_name = "LIST", value_parser = spec::parse_syscall_filter_arg)]
    pub system_call_filter: Vec<SyscallFilter>,
    /// Set a resource limit for the payload
    #[arg(long = "rlimit", value_name = "NAME=LIMIT", value_parser = spec::parse_rlimit_arg)]
    pub rlimit: Vec<(usize, Rlimit)>,
    /// Adjust the OOM score value for the payload
    #[arg(long = "oom-score-adjust", value_name = "VALUE", allow_hyphen_values = true, value_parser = spec::parse_oom_score_adjust)]
    pub oom_score_adjust: Option<i32>,
    /// Adjust the CPU affinity of the container
    #[arg(long = "cpu-affinity", value_name = "CPUS", value_parser = spec::parse_cpu_set)]
    pub cpu_affinity: Option<CpuSet>,
    /// Send this signal to PID 1 when netspawn is asked to terminate
    #[arg(long = "kill-signal", value_name = "SIGNAL", value_parser = spec::parse_signal_arg)]
    pub kill_signal: Option<i32>,
    /// Set a resource-control property (MemoryMax=, CPUQuota=, TasksMax=, …) on the machine's cgroup
    #[arg(long = "property", value_name = "NAME=VALUE", value_parser = property)]
    pub property: Vec<Property>,
    /// Place the machine's cgroup in this slice (a-b.slice nests in a.slice)
    #[arg(long = "slice", value_name = "SLICE", value_parser = slice)]
    pub slice: Option<String>,
    /// Run in a new user namespace (--private-users=pick --private-users-ownership=auto)
    #[arg(short = 'U', action = clap::ArgAction::SetTrue)]
    pub private_users_short: bool,
    /// User namespacing: a range picked free, the root's, BASE[:N], identity or no
    #[arg(long = "private-users", value_name = "BOOL|pick|UIDBASE[:NUIDS]", num_args = 0..=1, default_missing_value = "yes", value_parser = private_users)]
    pub private_users: Option<PrivateUsers>,
    /// Adjust file ownership for user namespacing: off, chown, map (idmapped mounts) or auto
    #[arg(long = "private-users-ownership", value_name = "MODE", value_parser = ownership)]
    pub private_users_ownership: Option<Ownership>,
    /// Run on a throw-away layer over the image, removed when the machine ends
    #[arg(short = 'x', long = "ephemeral")]
    pub ephemeral: bool,
    /// Create the container's directory from a template (a btrfs snapshot or a copy) if missing or empty
    #[arg(long = "template", value_name = "PATH")]
    pub template: Option<PathBuf>,
    /// Use a settings file: yes, no, override, trusted
    #[arg(long = "settings", value_name = "MODE", value_parser = settings_mode)]
    pub settings: Option<SettingsMode>,
    /// Register the container in the machine registry
    #[arg(long = "register", value_name = "BOOLEAN", num_args = 0..=1, default_missing_value = "yes", value_parser = boolean)]
    pub register: Option<bool>,
    /// Do not allocate a scope unit (accepted for compatibility; netspawn never does)
    #[arg(long = "keep-unit")]
    pub keep_unit: bool,
    /// Select how stdin/stdout/stderr and /dev/console are set up for the container
    #[arg(long = "console", value_name = "MODE", value_enum)]
    pub console: Option<ConsoleMode>,
    /// Equivalent to --console=pipe
    #[arg(short = 'P', long = "pipe")]
    pub pipe: bool,
    /// Wait for the container to report readiness (READY=1) before reporting our own
    #[arg(long = "notify-ready", value_name = "BOOLEAN", value_parser = boolean)]
    pub notify_ready: Option<bool>,
    /// Configure the container's host0 from netd (our extension): auto or none
    #[arg(long = "network-config", value_name = "MODE", value_parser = network_config)]
    pub network_config: Option<bool>,
    /// The command (and its arguments) to run; with -b, arguments for init
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What only the command line says: where the image is, how to talk to the
/// user, whether and how to read a settings file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub directory: Option<PathBuf>,
    pub machine: Option<String>,
    pub quiet: bool,
    pub settings: SettingsMode,
    pub register: Option<bool>,
    pub console: Option<ConsoleMode>,
    pub pipe: bool,
    /// `--network-config=`: Some(false) for `none`.
    pub network_config: Option<bool>,
    /// `--property=`, in order (a later one of a kind wins).
    pub property: Vec<Property>,
    /// `--slice=`: a valid slice name.
    pub slice: Option<String>,
    /// `--template=`: the directory to make the machine's from.
    pub template: Option<PathBuf>,
    /// `-U` was given (refused, named in the message).
    pub private_users_short: bool,
}

/// The command line, split as the pipeline uses it.
#[derive(Debug, Clone, Default)]
pub struct Command {
    pub settings: Settings,
    /// The groups the command line sets.
    pub mask: Mask,
    pub options: Options,
}

impl Args {
    /// Splits the parsed command line into settings, their mask and options.
    pub fn into_command(self) -> Result<Command, ConfigError> {
        let a = self;
        if a.boot && a.as_pid2 {
            return Err(ConfigError::Conflict(
                "--boot and --as-pid2 may not be combined".into(),
            ));
        }
        let mut m = Mask::default();
        m.set(
            Mask::START_MODE,
            a.boot || a.as_pid2 || !a.command.is_empty(),
        );
        m.set(Mask::ENVIRONMENT, !a.setenv.is_empty());
        m.set(Mask::USER, a.user.is_some());
        m.set(
            Mask::CAPABILITY,
            !a.capability.is_empty() || !a.drop_capability.is_empty(),
        );
        m.set(Mask::KILL_SIGNAL, a.kill_signal.is_some());
        m.set(Mask::MACHINE_ID, a.uuid.is_some());
        m.set(
            Mask::NETWORK,
            a.private_network
                || a.network_veth
                || !a.network_veth_extra.is_empty()
                || a.network_bridge.is_some()
                || a.network_zone.is_some()
                || !a.network_macvlan.is_empty()
                || !a.network_ipvlan.is_empty()
                || !a.network_interface.is_empty(),
        );
        m.set(Mask::EXPOSE_PORTS, !a.port.is_empty());
        m.set(Mask::READ_ONLY, a.read_only);
        m.set(Mask::VOLATILE_MODE, a.volatile.is_some());
        m.set(
            Mask::CUSTOM_MOUNTS,
            !a.bind.is_empty()
                || !a.bind_ro.is_empty()
                || !a.tmpfs.is_empty()
                || !a.overlay.is_empty()
                || !a.overlay_ro.is_empty()
                || !a.inaccessible.is_empty(),
        );
        m.set(Mask::WORKING_DIRECTORY, a.chdir.is_some());
        m.set(
            Mask::USERNS,
            a.private_users.is_some()
                || a.private_users_short
                || a.private_users_ownership.is_some(),
        );
        m.set(Mask::NOTIFY_READY, a.notify_ready.is_some());
        m.set(Mask::OOM_SCORE_ADJUST, a.oom_score_adjust.is_some());
        m.set(Mask::CPU_AFFINITY, a.cpu_affinity.is_some());
        m.set(Mask::EPHEMERAL, a.ephemeral);
        m.set(Mask::SYSCALL_FILTER, !a.system_call_filter.is_empty());
        m.set(Mask::NO_NEW_PRIVILEGES, a.no_new_privileges.is_some());
        m.set(Mask::HOSTNAME, a.hostname.is_some());

        let mut environment: Vec<(String, String)> = Vec::new();
        for (k, v) in a.setenv {
            environment.retain(|(ek, _)| *ek != k);
            environment.push((k, v));
        }
        let mut syscall_filter = SyscallFilter::default();
        for f in a.system_call_filter {
            syscall_filter.allow.extend(f.allow);
            syscall_filter.deny.extend(f.deny);
        }
        let mut rlimits = [None; 16];
        for (i, l) in a.rlimit {
            m.set(Mask::rlimit(i), true);
            rlimits[i] = Some(l);
        }
        let or_all = |v: &[CapSet]| (!v.is_empty()).then(|| v.iter().fold(0, |x, y| x | y));
        let mut binds = a.bind;
        binds.extend(a.bind_ro);
        let settings = Settings {
            start_mode: if a.boot {
                Some(StartMode::Boot)
            } else if a.as_pid2 {
                Some(StartMode::Pid2)
            } else {
                None
            },
            parameters: a.command,
            environment,
            working_directory: a.chdir,
            hostname: a.hostname,
            capability: or_all(&a.capability),
            drop_capability: or_all(&a.drop_capability),
            syscall_filter,
            kill_signal: a.kill_signal,
            notify_ready: a.notify_ready,
            private_users: if a.private_users_short {
                Some(PrivateUsers::Pick)
            } else {
                a.private_users
            },
            user: a.user,
            no_new_privileges: a.no_new_privileges,
            rlimits,
            oom_score_adjust: a.oom_score_adjust,
            cpu_affinity: a.cpu_affinity,
            machine_id: a.uuid,
            ephemeral: a.ephemeral.then_some(true),
            binds,
            tmpfs: a.tmpfs,
            overlays: a.overlay.into_iter().chain(a.overlay_ro).collect(),
            inaccessible: a.inaccessible,
            read_only: a.read_only.then_some(true),
            volatile: a.volatile,
            private_users_ownership: a.private_users_ownership,
            private_network: a.private_network.then_some(true),
            virtual_ethernet: a.network_veth.then_some(true),
            virtual_ethernet_extra: a.network_veth_extra,
            bridge: a.network_bridge,
            zone: a.network_zone,
            ports: a.port,
            interfaces: a.network_interface,
            macvlan: a.network_macvlan,
            ipvlan: a.network_ipvlan,
        };
        let options = Options {
            directory: a.directory,
            machine: a.machine,
            quiet: a.quiet,
            settings: a.settings.unwrap_or_default(),
            register: a.register,
            console: a.console,
            pipe: a.pipe,
            network_config: a.network_config,
            property: a.property,
            slice: a.slice,
            template: a.template,
            private_users_short: a.private_users_short,
        };
        Ok(Command {
            settings,
            mask: m,
            options,
        })
    }
}

/// Parses `argv`, turning clap's multi-line errors into one line.
/// `Ok(Err(text))` is help or version output to print and exit 0.
pub fn parse<I, T>(argv: I) -> Result<Result<Args, String>, String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match Args::try_parse_from(argv) {
        Ok(a) => Ok(Ok(a)),
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                Ok(Err(e.to_string()))
            }
            _ => Err(first_line(&e.to_string())),
        },
    }
}

/// The first meaningful line of a clap error, without its "error: " prefix.
pub fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    line.trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, String> {
        parse(std::iter::once("netspawn").chain(args.iter().copied())).map(|r| r.unwrap())
    }

    fn cmd(args: &[&str]) -> Command {
        p(args).unwrap().into_command().unwrap()
    }

    #[test]
    fn command_after_options_is_taken_verbatim() {
        let a = p(&["-D", "/img", "-E", "A=1", "ls", "-l", "--bind=/x"]).unwrap();
        assert_eq!(a.directory.as_deref(), Some(std::path::Path::new("/img")));
        assert_eq!(a.setenv, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(a.command, vec!["ls", "-l", "--bind=/x"]);
        let a = p(&["-D/img", "--", "-weird"]).unwrap();
        assert_eq!(a.command, vec!["-weird"]);
    }

    #[test]
    fn errors_are_one_line_naming_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--bogus-flag", "-D", "/img"], "--bogus-flag"),
            (&["--console=sideways"], "sideways"),
            (&["--register=maybe"], "--register"),
            (&["--uuid=xyz"], "--uuid"),
            (&["--rlimit=NOFILE=lots"], "--rlimit"),
            (&["--rlimit=BOGUS=1"], "BOGUS"),
            (&["--oom-score-adjust=2000"], "--oom-score-adjust"),
            (&["--cpu-affinity=a"], "--cpu-affinity"),
            (&["--user=a:b"], "--user"),
            (&["--no-new-privileges=perhaps"], "--no-new-privileges"),
            (&["--private-users=lots"], "--private-users"),
            (&["--volatile=sometimes"], "--volatile"),
            (&["--network-zone=waytoolongzonename"], "--network-zone"),
            (&["--network-zone=lab:internal"], "DNSDefaultRoute=no"),
            (&["--property=MemoryMax=lots"], "--property"),
            (&["--property=Bogus=1"], "unknown property"),
            (&["--slice=a--b.slice"], "--slice"),
            (&["--slice=machine"], "invalid slice name"),
        ];
        for (args, needle) in cases {
            let e = p(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn values_are_typed() {
        let c = cmd(&[
            "--register=no",
            "--private-users=0",
            "-b",
            "--rlimit=RLIMIT_NOFILE=10:20",
            "--oom-score-adjust",
            "-300",
            "--cpu-affinity=1,3-4",
            "-u",
            "nobody",
            "--no-new-privileges=yes",
            "--kill-signal=TERM",
            "--volatile",
            "--no-pager",
        ]);
        assert_eq!(c.options.register, Some(false));
        assert_eq!(
            c.settings.private_users,
            Some(PrivateUsers::Base {
                shift: 0,
                range: 65536
            })
        );
        assert_eq!(c.settings.start_mode, Some(StartMode::Boot));
        assert_eq!(c.settings.rlimits[6], Some(Rlimit { soft: 10, hard: 20 }));
        assert_eq!(c.settings.oom_score_adjust, Some(-300));
        assert_eq!(
            c.settings.cpu_affinity,
            Some([1, 3, 4].into_iter().collect())
        );
        assert_eq!(c.settings.user.as_deref(), Some("nobody"));
        assert_eq!(c.settings.no_new_privileges, Some(true));
        assert_eq!(c.settings.kill_signal, Some(libc::SIGTERM));
        assert_eq!(c.settings.volatile, Some(Volatile::Yes));
        assert_eq!(cmd(&["--register"]).options.register, Some(true));
    }

    #[test]
    fn setenv_without_a_value_takes_ours_or_empty() {
        let c = cmd(&["-E", "NETSPAWN_SURELY_UNSET_VAR", "-E", "A=1", "-E", "A=2"]);
        assert_eq!(
            c.settings.environment,
            vec![
                ("NETSPAWN_SURELY_UNSET_VAR".to_string(), String::new()),
                ("A".to_string(), "2".to_string())
            ]
        );
    }

    #[test]
    fn the_mask_names_the_groups_given() {
        let cases: &[(&[&str], Mask)] = &[
            (&[], Mask::default()),
            (&["/bin/true"], Mask::START_MODE),
            (&["-a"], Mask::START_MODE),
            (&["-E", "A=1"], Mask::ENVIRONMENT),
            (&["-u", "x"], Mask::USER),
            (&["--drop-capability=CAP_MKNOD"], Mask::CAPABILITY),
            (
                &["--uuid=0123456789abcdef0123456789abcdef"],
                Mask::MACHINE_ID,
            ),
            (&["--private-network"], Mask::NETWORK),
            (&["--network-zone=z"], Mask::NETWORK),
            (&["--inaccessible=/x"], Mask::CUSTOM_MOUNTS),
            (&["--tmpfs=/x"], Mask::CUSTOM_MOUNTS),
            (&["--notify-ready=no"], Mask::NOTIFY_READY),
            (&["--rlimit=CORE=0"], Mask::rlimit(4)),
            (&["--system-call-filter=uname"], Mask::SYSCALL_FILTER),
            (&["-U"], Mask::USERNS),
        ];
        for (args, want) in cases {
            assert_eq!(cmd(args).mask, *want, "{args:?}");
        }
        let e = p(&["-b", "-a"]).unwrap().into_command().unwrap_err();
        assert!(e.to_string().contains("may not be combined"), "{e}");
    }
}
