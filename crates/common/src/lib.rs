//! What the netspawn launcher, netspawnctl, netd and the NSS module share:
//! where state lives ([`paths`]), which machine names are valid ([`names`]),
//! the on-disk format of the machine registry ([`registry`], with its
//! [`hosts`] and [`users`] views for the NSS module), the DHCPv4 wire view
//! netd's server and the launcher's client check received packets with
//! ([`dhcp_wire`]), how files others may have put in place are read
//! ([`fsread`]), and lock files that their last holder removes ([`lockfile`]).
//!
//! This crate uses only `std` and `libc`, so the NSS module can link it
//! without pulling in anything heavy.

pub mod dhcp_wire;
pub mod fnv;
pub mod fsread;
pub mod hosts;
pub mod lockfile;
pub mod names;
pub mod naming;
pub mod netd;
pub mod paths;
pub mod registry;
#[cfg(test)]
mod testgen;
pub mod unitfile;
pub mod users;
