//! netspawnctl, machinectl's counterpart: everything the `netspawnctl` binary
//! does, one module per verb group. The binary only parses arguments and calls
//! these functions, which print to stdout and return the exit status.
//!
//! - [`list`]: `list` and `list-images` tables (text and JSON);
//! - [`status`]: `status`, with the machine's process tree;
//! - [`shell`]: `shell` and `login`;
//! - [`signal`]: `poweroff`, `reboot`, `terminate`, `kill`;
//! - [`images`]: the image directory, its verbs (import, export, pull,
//!   clone…) and `bootstrap`;
//! - [`show`]: `show` and the property lines `show-image` shares;
//! - [`bind`], [`copy`]: `bind`, `copy-to` and `copy-from` into a running machine;
//! - [`lifecycle`]: `start`, `logs`, `enable`/`disable` and `install`
//!   (machines in the background and at boot);
//! - [`limits`]: `set-property` and the usage figures of `status`; [`top`]:
//!   the systemd-cgtop of machines;
//! - [`topology`]: `up`, `down`, `status FILE`, `graph`: labs from files;
//! - [`nss`]: `install-nss`/`uninstall-nss`, with [`nsswitch`] editing the
//!   `hosts:` line;
//! - [`enter`]: [`enter_machine`], how a process joins a running machine;
//!   [`sealed`]: the sealed copy of netspawnctl the entering verbs run from;
//! - [`pty`]: terminal forwarding; [`procfs`], [`osrelease`], [`passwd`],
//!   [`table`], [`timefmt`]: the pieces they share.

pub mod bind;
pub mod copy;
pub mod enter;
pub mod images;
pub mod lifecycle;
pub mod limits;
pub mod list;
pub mod message;
pub mod nss;
pub mod nsswitch;
pub mod osrelease;
pub mod passwd;
pub mod procfs;
pub mod pty;
pub mod sealed;
pub mod shell;
pub mod show;
pub mod signal;
pub mod status;
pub mod table;
pub mod timefmt;
pub mod top;
pub mod topology;

pub use enter::{
    enter_machine, EnterError, EnterOptions, ExitStatus, MachineCommand, MachineProcess,
};

use netspawn_common::names::NameError;
use netspawn_common::paths::Paths;
use netspawn_common::registry::{Entry, Registry};
use thiserror::Error;

/// Everything a netspawnctl verb can fail with; each message is one line.
#[derive(Debug, Error)]
pub enum CtlError {
    #[error("No machine '{0}' known")]
    NoMachine(String),
    #[error("read the machine registry {}: {err}", .path.display())]
    Registry {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error("Invalid machine name '{name}': {reason}")]
    InvalidName { name: String, reason: NameError },
    #[error("No user '{user}' known in machine '{machine}'")]
    NoUser { user: String, machine: String },
    /// A bad argument value.
    #[error("{0}")]
    Usage(String),
    #[error("send {} to PID {pid}: {err}", signal::signal_name(*.sig))]
    Signal { pid: u32, sig: i32, err: nix::Error },
    #[error(transparent)]
    Enter(#[from] EnterError),
    #[error(transparent)]
    Pty(#[from] pty::PtyError),
    #[error("read the image directory {}: {err}", .path.display())]
    Images {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    #[error(transparent)]
    Cgroup(crate::cgroup::CgroupError),
    #[error(transparent)]
    Image(#[from] images::ImageError),
    #[error(transparent)]
    Lifecycle(#[from] lifecycle::LifecycleError),
    #[error(transparent)]
    Topology(#[from] topology::TopoError),
    #[error("write output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<images::tar::TarError> for CtlError {
    fn from(e: images::tar::TarError) -> CtlError {
        CtlError::Image(e.into())
    }
}

impl From<images::pull::PullError> for CtlError {
    fn from(e: images::pull::PullError) -> CtlError {
        CtlError::Image(e.into())
    }
}

/// How tables are printed (`-o/--output=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Human table with header and footer.
    #[default]
    Short,
    /// One line of JSON.
    Json,
    /// Indented JSON.
    JsonPretty,
}

/// Options shared by the listing verbs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOptions {
    pub output: OutputMode,
    /// `--no-legend`: no header and no "N machines listed." footer.
    pub no_legend: bool,
}

/// The registry, at the location the environment selects.
pub fn registry() -> Registry {
    Registry::new(&Paths::from_env())
}

/// The live entry for machine `name`, or [`CtlError::NoMachine`].
pub fn lookup(name: &str) -> Result<Entry, CtlError> {
    let reg = registry();
    match reg.get(name) {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(CtlError::NoMachine(name.to_string())),
        Err(err) => Err(CtlError::Registry {
            path: reg.dir().to_path_buf(),
            err,
        }),
    }
}

/// The live entry for machine `name` if it is a container that `verb` can
/// act inside. A CNI attachment (class `pod`) is registered with its holder
/// process as the leader, which lives in the host's namespaces: entering it,
/// copying into its root or signalling "all of its processes" would act on
/// the host, so those verbs are refused for it.
pub fn lookup_container(name: &str, verb: &str) -> Result<Entry, CtlError> {
    let e = lookup(name)?;
    if e.class == "pod" {
        return Err(CtlError::Usage(format!(
            "machine '{name}' is a CNI attachment (class pod), not a container netspawn runs: \
             '{verb}' would act on the host; use the container engine's own command"
        )));
    }
    Ok(e)
}

/// `poweroff NAME...`: SIGRTMIN+4 to each booted machine's init (SIGTERM to a
/// machine that runs a plain command), once it takes it.
pub fn poweroff(names: &[String]) -> Result<i32, CtlError> {
    for name in names {
        let e = lookup(name)?;
        send_stop(name, e.leader, signal::poweroff_signal(&e))?;
    }
    Ok(0)
}

/// `reboot NAME...`: SIGINT (ctrl-alt-del) to each machine's init, once it
/// takes it.
pub fn reboot(names: &[String]) -> Result<i32, CtlError> {
    for name in names {
        let e = lookup_container(name, "reboot")?;
        send_stop(name, e.leader, signal::REBOOT_SIGNAL)?;
    }
    Ok(0)
}

/// Sends `poweroff`'s or `reboot`'s signal when PID 1 takes it (a young
/// init gets a few seconds to install its handlers); says so when PID 1
/// does not, since the kernel then drops it and the machine runs on.
fn send_stop(name: &str, leader: u32, sig: i32) -> Result<(), CtlError> {
    if !signal::send_when_taken(leader, sig)? {
        eprintln!(
            "netspawnctl: PID 1 of machine '{name}' neither handles nor blocks {}, so the \
             kernel drops it and the machine runs on; 'netspawnctl terminate {name}' stops it",
            signal::signal_name(sig)
        );
    }
    Ok(())
}

/// `terminate NAME...`: SIGKILL to each machine's PID 1, which takes the whole
/// PID namespace down with it.
pub fn terminate(names: &[String]) -> Result<i32, CtlError> {
    for name in names {
        let e = lookup(name)?;
        signal::send(e.leader, libc::SIGKILL)?;
    }
    Ok(0)
}

/// `kill [--kill-whom=] [--signal=] NAME...`.
pub fn kill(names: &[String], whom: signal::KillWhom, sig: i32) -> Result<i32, CtlError> {
    for name in names {
        let e = match whom {
            signal::KillWhom::All => lookup_container(name, "kill --kill-whom=all")?,
            signal::KillWhom::Leader => lookup(name)?,
        };
        signal::kill_machine(&e, whom, sig)?;
    }
    Ok(0)
}
