//! netspawn-netd: the per-host network daemon. One module per concern:
//! network templates (`template`), address pools (`pool`), the DHCPv4 server
//! (`dhcp`), DNS for machine names (`dns`), NAT and port forwards (`nat`).

pub mod daemon;
pub mod dhcp;
pub mod dns;
pub mod nat;
pub mod pool;
pub mod template;
