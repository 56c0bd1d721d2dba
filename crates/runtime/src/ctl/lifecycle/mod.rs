//! Machines that run in the background and start at boot: machinectl's
//! `start`, `enable` and `disable`, plus `logs` (the console log a started
//! machine keeps) and `install` (the boot hook).
//!
//! - [`start`]: `start NAME…` / `start --enabled`, the launcher detached the
//!   way `systemd-nspawn@.service` runs it, with its log pump;
//! - [`consolelog`]: the size-capped console log, its writer and readers;
//! - [`logs`]: `logs NAME [-f] [-n N] [--journal]`, and the pump's main;
//! - [`enable`]: `enable`/`disable` (a unit symlink where PID 1 is systemd, a
//!   record under `/etc/netspawn/enabled/` elsewhere) and `install`.

pub mod cni;
pub mod consolelog;
pub mod enable;
pub mod logs;
pub mod start;

use std::path::PathBuf;

use thiserror::Error;

/// What the lifecycle verbs fail with; each message is one line.
#[derive(Debug, Error)]
pub enum LifecycleError {
    #[error("No image '{name}' in {}", .dir.display())]
    NoImage { name: String, dir: PathBuf },
    #[error("Machine '{0}' is already running")]
    AlreadyRunning(String),
    #[error("start {what} {}: {err}", .path.display())]
    Spawn {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("console log of '{name}': {msg}")]
    Pump { name: String, msg: String },
    #[error("Machine '{name}' failed to start: {reason} (console log: {})", .log.display())]
    Failed {
        name: String,
        reason: String,
        log: PathBuf,
    },
    #[error("Machine '{name}' was not registered within {secs} s; stopped it (console log: {})", .log.display())]
    Timeout {
        name: String,
        secs: u64,
        log: PathBuf,
    },
    #[error("No console log of machine '{name}' ({}): only machines started with 'netspawnctl start' have one", .path.display())]
    NoLog { name: String, path: PathBuf },
    #[error("Machine '{name}' has no journal: {reason}")]
    NoJournal { name: String, reason: String },
    #[error("{what} {}: {err}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{unit} is not installed in {}: run 'netspawnctl install' first", .dir.display())]
    NotInstalled { unit: &'static str, dir: PathBuf },
}

impl LifecycleError {
    /// An I/O error with what was being done and to which path.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |err| LifecycleError::Io { what, path, err }
    }
}
