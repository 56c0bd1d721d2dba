//! `libnss_mymachines.so.2`: a glibc NSS module that resolves running
//! netspawn machines by name (and their addresses back to names), and names
//! the host UIDs and GIDs of machines with a user namespace (`vu-NAME-U`,
//! `vg-NAME-G`), reading the machine registry directly: no systemd, no
//! D-Bus, no daemon.
//!
//! Modules: [`exports`] holds the `_nss_mymachines_*` entry points and the
//! protocol rules; [`lookup`] reads the registry's hosts view and
//! [`users`] its users view; [`addrs`] decides which
//! addresses are handed out; [`layout`] places answers in the caller's
//! buffer; [`ffi`] declares glibc's NSS types. (Editing nsswitch.conf is
//! the installer's job: `netspawnctl install-nss`, in the runtime crate.)

pub mod addrs;
pub mod exports;
pub mod ffi;
pub mod layout;
pub mod lookup;
pub mod users;

pub use exports::{
    _nss_mymachines_getgrgid_r, _nss_mymachines_getgrnam_r, _nss_mymachines_gethostbyaddr2_r,
    _nss_mymachines_gethostbyaddr_r, _nss_mymachines_gethostbyname2_r,
    _nss_mymachines_gethostbyname3_r, _nss_mymachines_gethostbyname4_r,
    _nss_mymachines_gethostbyname_r, _nss_mymachines_getpwnam_r, _nss_mymachines_getpwuid_r,
};
