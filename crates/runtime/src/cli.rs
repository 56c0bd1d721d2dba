//! The `netspawn` command line, with systemd-nspawn's flag names.

use std::path::PathBuf;

use clap::Parser;

use crate::console::ConsoleMode;

/// Spawn a command or OS in a light-weight container.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "netspawn", version, about, disable_help_subcommand = true)]
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
    #[arg(long = "uuid", value_name = "UUID")]
    pub uuid: Option<String>,
    /// Boot an OS: run its init as PID 1
    #[arg(short = 'b', long = "boot")]
    pub boot: bool,
    /// Maintain a stub init as PID 1, invoke the command as PID 2
    #[arg(short = 'a', long = "as-pid2")]
    pub as_pid2: bool,
    /// Change to the specified working directory before invoking the process
    #[arg(long = "chdir", value_name = "PATH")]
    pub chdir: Option<PathBuf>,
    /// Set an environment variable in the container
    #[arg(short = 'E', long = "setenv", value_name = "NAME[=VALUE]")]
    pub setenv: Vec<String>,
    /// Bind mount a file or directory from the host into the container
    #[arg(long = "bind", value_name = "SRC[:DST[:OPTS]]")]
    pub bind: Vec<String>,
    /// Bind mount a file or directory from the host read-only
    #[arg(long = "bind-ro", value_name = "SRC[:DST[:OPTS]]")]
    pub bind_ro: Vec<String>,
    /// Mount an empty tmpfs to the specified directory
    #[arg(long = "tmpfs", value_name = "PATH[:OPTIONS]")]
    pub tmpfs: Vec<String>,
    /// Mount the root directory read-only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Suppress informational messages
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Disable network in the container (only a loopback device)
    #[arg(long = "private-network")]
    pub private_network: bool,
    /// Add a virtual Ethernet connection between host and container
    #[arg(short = 'n', long = "network-veth")]
    pub network_veth: bool,
    /// Add an additional virtual Ethernet link between host and container
    #[arg(long = "network-veth-extra", value_name = "HOSTIF[:CONTAINERIF]")]
    pub network_veth_extra: Vec<String>,
    /// Add a virtual Ethernet connection to the container and attach it to an existing bridge on the host
    #[arg(long = "network-bridge", value_name = "INTERFACE")]
    pub network_bridge: Option<String>,
    /// Similar, but attach the new interface to an automatically managed bridge "vz-ZONE"
    #[arg(long = "network-zone", value_name = "NAME")]
    pub network_zone: Option<String>,
    /// Create a macvlan network interface based on an existing host interface
    #[arg(long = "network-macvlan", value_name = "INTERFACE")]
    pub network_macvlan: Vec<String>,
    /// Create an ipvlan network interface based on an existing host interface
    #[arg(long = "network-ipvlan", value_name = "INTERFACE")]
    pub network_ipvlan: Vec<String>,
    /// Assign an existing network interface to the container
    #[arg(long = "network-interface", value_name = "INTERFACE")]
    pub network_interface: Vec<String>,
    /// Expose a container IP port on the host
    #[arg(
        short = 'p',
        long = "port",
        value_name = "[PROTOCOL:]HOSTPORT[:CONTAINERPORT]"
    )]
    pub port: Vec<String>,
    /// In addition to the default, retain the specified capability
    #[arg(long = "capability", value_name = "CAP")]
    pub capability: Vec<String>,
    /// Drop the specified capability from the default set
    #[arg(long = "drop-capability", value_name = "CAP")]
    pub drop_capability: Vec<String>,
    /// Configure the system call filter
    #[arg(long = "system-call-filter", value_name = "LIST")]
    pub system_call_filter: Vec<String>,
    /// Send this signal to PID 1 when netspawn is asked to terminate
    #[arg(long = "kill-signal", value_name = "SIGNAL")]
    pub kill_signal: Option<String>,
    /// Set a unit property (accepted for compatibility: only meaningful with systemd's scope units)
    #[arg(long = "property", value_name = "NAME=VALUE")]
    pub property: Vec<String>,
    /// Run in a new user namespace (only "no" is supported)
    #[arg(short = 'U', action = clap::ArgAction::SetTrue)]
    pub private_users_short: bool,
    /// User namespacing (only "no" is supported)
    #[arg(long = "private-users", value_name = "BOOL|pick|UIDBASE[:NUIDS]", num_args = 0..=1, default_missing_value = "yes")]
    pub private_users: Option<String>,
    /// Adjust file ownership for user namespacing (only "off" is meaningful without -U)
    #[arg(long = "private-users-ownership", value_name = "MODE")]
    pub private_users_ownership: Option<String>,
    /// Run with a temporary snapshot of the disk image
    #[arg(short = 'x', long = "ephemeral")]
    pub ephemeral: bool,
    /// Create a directory tree from a template (not supported)
    #[arg(long = "template", value_name = "PATH")]
    pub template: Option<PathBuf>,
    /// Use a settings file: yes, no, override, trusted
    #[arg(long = "settings", value_name = "MODE")]
    pub settings: Option<String>,
    /// Register the container in the machine registry
    #[arg(long = "register", value_name = "BOOLEAN", num_args = 0..=1, default_missing_value = "yes")]
    pub register: Option<String>,
    /// Do not allocate a scope unit (accepted for compatibility; netspawn never does)
    #[arg(long = "keep-unit")]
    pub keep_unit: bool,
    /// Select how stdin/stdout/stderr and /dev/console are set up for the container
    #[arg(long = "console", value_name = "MODE", value_enum)]
    pub console: Option<ConsoleMode>,
    /// Equivalent to --console=pipe
    #[arg(short = 'P', long = "pipe")]
    pub pipe: bool,
    /// Wait for the container to report readiness (accepted; readiness is always tracked)
    #[arg(long = "notify-ready", value_name = "BOOLEAN")]
    pub notify_ready: Option<String>,
    /// Configure the container's host0 from netd (our extension): auto or none
    #[arg(long = "network-config", value_name = "MODE")]
    pub network_config: Option<String>,
    /// Bind mounts from a settings file (already parsed).
    #[arg(skip)]
    pub file_binds: Vec<crate::spec::BindSpec>,
    /// Temporary file systems from a settings file.
    #[arg(skip)]
    pub file_tmpfs: Vec<crate::spec::TmpfsSpec>,
    /// Port forwards from a settings file.
    #[arg(skip)]
    pub file_ports: Vec<crate::spec::PortSpec>,
    /// Capabilities a settings file adds / drops.
    #[arg(skip)]
    pub file_caps: (crate::caps::CapSet, crate::caps::CapSet),
    /// The command (and its arguments) to run; with -b, arguments for init
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
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

    #[test]
    fn command_after_options_is_taken_verbatim() {
        let a = p(&["-D", "/img", "-E", "A=1", "ls", "-l", "--bind=/x"]).unwrap();
        assert_eq!(a.directory.as_deref(), Some(std::path::Path::new("/img")));
        assert_eq!(a.setenv, vec!["A=1"]);
        assert_eq!(a.command, vec!["ls", "-l", "--bind=/x"]);
        let a = p(&["-D/img", "--", "-weird"]).unwrap();
        assert_eq!(a.command, vec!["-weird"]);
    }

    #[test]
    fn errors_are_one_line_naming_the_flag() {
        let e = p(&["--bogus-flag", "-D", "/img"]).unwrap_err();
        assert!(e.contains("--bogus-flag"), "{e}");
        assert!(!e.contains('\n'));
        let e = p(&["--console=sideways"]).unwrap_err();
        assert!(e.contains("sideways"), "{e}");
    }

    #[test]
    fn repeatable_and_optional_values() {
        let a = p(&[
            "--bind=/a",
            "--bind=/b:/c",
            "--register=no",
            "--private-users",
            "-b",
        ])
        .unwrap();
        assert_eq!(a.bind, vec!["/a", "/b:/c"]);
        assert_eq!(a.register.as_deref(), Some("no"));
        assert_eq!(a.private_users.as_deref(), Some("yes"));
        assert!(a.boot);
        let a = p(&["--register", "-D", "/x"]).unwrap();
        assert_eq!(a.register.as_deref(), Some("yes"));
    }
}
