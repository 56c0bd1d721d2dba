//! netd's DNS server: A, AAAA and PTR for every running machine by name,
//! everything else forwarded to the host's upstream resolvers.
//!
//! - [`directory`]: which machines exist ([`MachineDirectory`], the cached
//!   [`RegistryDirectory`] over the machine registry);
//! - [`answer`]: the answer logic, sans I/O (packet in, decision out);
//! - [`fast`]: the UDP fast path for machine names (a cache of [`answer`]'s
//!   replies, no allocation per query);
//! - [`upstream`]: forwarding through hickory-resolver, following resolv.conf;
//! - [`llmnr`]: the LLMNR responder on container links (RFC 4795);
//! - [`search`]: the search domains a link's clients are given;
//! - [`server`]: UDP/TCP listeners added and removed at runtime;
//! - `shared`: what the listeners share (directory, upstream, counters);
//! - `udp`: a UDP listener's serving thread (batched receive and send);
//! - `tcp`: a TCP listener's accept loop and connections (capped, idle
//!   timeout).
//!
//! The server listens only on the addresses it is given (container links'
//! host-side addresses, loopback), never on a wildcard address, and answers
//! only queries that arrived on one of the links it serves or on loopback
//! (`IP_PKTINFO` on UDP, the handshake's interface on TCP): a host in
//! another network that routes to a link's address gets nothing, so netd is
//! not an open resolver.

pub mod answer;
pub mod directory;
pub mod fast;
pub mod llmnr;
pub mod search;
pub mod server;
mod shared;
mod tcp;
mod udp;
pub mod upstream;

use std::net::SocketAddr;

pub use answer::{LocalNames, DEFAULT_DOMAIN, HOST_NAME};
pub use directory::{MachineDirectory, RegistryDirectory, StaticDirectory};
pub use search::search_domains;
pub use server::{serve, DnsConfig, DnsServer, Stats, StatsSnapshot};
pub use tcp::MAX_TCP_CONNECTIONS;
pub use upstream::UpstreamConfig;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listen socket could not be set up.
    #[error("DNS: cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// A wildcard address was asked for: that would serve the host's uplink.
    #[error("DNS: refusing to listen on the wildcard address {0}")]
    Wildcard(SocketAddr),
}
