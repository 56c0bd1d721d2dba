//! `libnss_mymachines.so.2`: a glibc NSS module that resolves running
//! netspawn machines by name (and their addresses back to names), reading the
//! machine registry directly: no systemd, no D-Bus, no daemon.
//!
//! Modules: [`exports`] holds the `_nss_mymachines_*` entry points and the
//! protocol rules; [`lookup`] reads the registry; [`addrs`] decides which
//! addresses are handed out; [`layout`] places answers in the caller's
//! buffer; [`ffi`] declares glibc's NSS types; [`nsswitch`] edits the
//! `hosts:` line of `/etc/nsswitch.conf` for the installer.

pub mod addrs;
pub mod exports;
pub mod ffi;
pub mod layout;
pub mod lookup;
pub mod nsswitch;

pub use exports::{
    _nss_mymachines_gethostbyaddr2_r, _nss_mymachines_gethostbyaddr_r,
    _nss_mymachines_gethostbyname2_r, _nss_mymachines_gethostbyname3_r,
    _nss_mymachines_gethostbyname4_r, _nss_mymachines_gethostbyname_r,
};
pub use nsswitch::{nsswitch_add_mymachines, nsswitch_remove_mymachines};
