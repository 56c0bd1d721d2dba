//! The DHCPv4 server netd runs on container links (issue 4, point 3).
//!
//! - [`server`]: the RFC 2131 state machine, sans I/O: packet in, reply out, lease decisions.
//! - [`lease`]: the lease table and its atomic, crash-safe persistence.
//! - [`machines`]: which machines are running (their name locks), for the lease policy.
//! - [`io`]: the thin async wrapper: one UDP socket on port 67 per link, bound to the device.
//!
//! The daemon builds a [`server::ServerConfig`] from the link's `.network` template, a
//! [`server::Server`] with a [`lease::FileStore`] under the state directory, and runs
//! [`io::serve`] on the link until the link goes away.

pub mod io;
pub mod lease;
pub mod machines;
pub mod server;

pub use lease::{FileStore, LeaseStore, LeaseTable, MemoryStore};
pub use server::{MoreMachines, Outcome, RequestContext, Server, ServerConfig, Stats};
