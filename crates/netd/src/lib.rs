//! netspawn-netd: the per-host network daemon. One module per concern:
//! network templates (`template`), address pools (`pool`), the DHCPv4 server
//! (`dhcp`), DNS for machine names (`dns`), NAT and port forwards (`nat`),
//! IPv6 router advertisements (`ra`), the user-space forwards from the
//! host's `[::1]` (`proxy`);
//! `sys` holds the few raw system calls nix offers only as `unsafe`.

pub mod daemon;
pub mod dhcp;
pub mod dns;
pub mod nat;
pub mod pool;
pub mod proxy;
pub mod ra;
pub mod sys;
pub mod template;
