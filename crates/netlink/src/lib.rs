//! netspawn's one netlink layer, used by the launcher and by netd.
//!
//! - [`Rtnl`]: the link, address and route verbs, in one network namespace;
//!   [`Netlink`] implements them over one rtnetlink socket (blocking, with a
//!   small current-thread runtime of its own) and [`fake::FakeRtnl`] in
//!   memory for unit tests.
//! - [`Watch`]: link and address events ([`Event`]) from the kernel's
//!   multicast groups, on a descriptor to poll.
//! - [`tc`]: the qdiscs and filters of link impairments (tbf, netem,
//!   clsact with a BPF filter), sent with [`Rtnl::tc`];
//! - [`in_netns`]: the one helper that runs code inside another network
//!   namespace and comes back (sockets made there stay bound to it).
//! - [`RtnlError`]: what failed, with the kernel's errno to test by number.
//!
//! In a tokio daemon (netd): open the [`Watch`] first and list the links
//! after, so no link falls between the two; await the watch through
//! [`Watch::into_async`]; call the verbs on `spawn_blocking` threads (a
//! [`Netlink`] blocks on a runtime of its own, which must not be entered
//! from a task); re-list when [`Event::Overrun`] says events were lost.
//! `tests/tokio_daemon.rs` does exactly that.

mod error;
pub mod fake;
mod model;
mod netns;
mod real;
mod rtnl;
pub mod tc;
mod watch;

pub use error::RtnlError;
pub use model::{
    is_ipv6_link_local, prefix_contains, prefix_network, Address, AddressScope, Family,
    In6AddrGenMode, Link, Mac, NewLink, Route, RouteProtocol, RouteScope, TABLE_MAIN,
};
pub use netns::in_netns;
pub use real::Netlink;
pub use rtnl::Rtnl;
pub use watch::{parse as parse_events, Event, Group, Watch};
