//! netspawn: a systemd-nspawn-compatible container launcher.
//!
//! The launcher (`netspawn`) and the control tool (`netspawnctl`) are thin
//! binaries over this library. One module per concern:

pub mod bootstrap;
pub mod btrfs;
pub mod caps;
pub mod cgroup;
pub mod config;
pub mod console;
pub mod ctl;
pub mod devices;
pub mod ephemeral;
pub mod exec;
pub mod init;
pub mod launch;
pub mod lock;
pub mod mount;
pub mod netd_client;
pub mod network;
pub mod overlay;
pub mod ready;
pub mod rootdir;
pub mod seccomp;
pub mod spec;
pub mod sys;
pub mod tagged;
pub mod template;
pub mod tty;
pub mod userns;
