//! IPv6 on the container's `host0`: stateless address autoconfiguration
//! (SLAAC, RFC 4862) from netd's router advertisements, done by the
//! container's own kernel.
//!
//! Before `host0` comes up, [`prepare`] sets its optimistic duplicate
//! address detection (RFC 4429: `optimistic_dad`, `use_optimistic`), so its
//! link-local address and the address it makes from netd's prefix are usable
//! at once instead of a second later; these are the container link's own
//! sysctls, in the container's network namespace (a booted guest gets the
//! same, whatever its network manager then does). For a plain command
//! [`Solicitation::start`] sends a router solicitation at once (the kernel
//! would send its own only after a second: `rtr_solicit_delay`), and its
//! `wait` returns once the kernel has made the address (woken by the
//! kernel's address event), so the payload starts with it; the launcher
//! runs its DHCP exchange in between.

use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use netlink::{in_netns, Group, Rtnl, RtnlError, Watch};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrIn6,
};

/// The sysctls of `host0` set before it comes up: (name, value).
pub const HOST0_SYSCTLS: [(&str, &str); 4] = [
    ("accept_ra", "1"),
    ("autoconf", "1"),
    ("optimistic_dad", "1"),
    ("use_optimistic", "1"),
];

/// A router solicitation without options (RFC 4861 §4.1; the checksum is
/// the kernel's).
const ROUTER_SOLICIT: [u8; 8] = [133, 0, 0, 0, 0, 0, 0, 0];
/// All routers on the link.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// How often the solicitation is repeated while no address has come.
const RESEND: Duration = Duration::from_millis(250);

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> RtnlError {
    move |err| RtnlError::Io {
        what: what.into(),
        err,
    }
}

fn nix_err(what: &'static str) -> impl FnOnce(nix::Error) -> RtnlError {
    move |e| RtnlError::Kernel {
        what: what.into(),
        errno: e as i32,
    }
}

/// Sets [`HOST0_SYSCTLS`] on `ifname` inside the namespace `netns`. A
/// kernel without IPv6 (no `/proc/sys/net/ipv6`) is not an error.
pub fn prepare(netns: BorrowedFd<'_>, ifname: &str) -> Result<(), RtnlError> {
    let r = in_netns(netns, || {
        let dir = format!("/proc/sys/net/ipv6/conf/{ifname}");
        if !std::path::Path::new(&dir).exists() {
            return Ok(());
        }
        for (k, v) in HOST0_SYSCTLS {
            std::fs::write(format!("{dir}/{k}"), v)?;
        }
        Ok::<_, std::io::Error>(())
    })?;
    r.map_err(io_err("set host0's IPv6 sysctls"))
}

/// Sends one router solicitation on `ifname` inside `netns`.
fn solicit(netns: BorrowedFd<'_>, ifname: &str, ifindex: u32) -> Result<(), RtnlError> {
    let fd = in_netns(netns, || {
        socket(
            AddressFamily::Inet6,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::IcmpV6,
        )
    })?
    .map_err(nix_err("router solicitation socket"))?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )
    .map_err(nix_err("bind the router solicitation socket to host0"))?;
    setsockopt(&fd, sockopt::Ipv6MulticastHops, &255)
        .map_err(nix_err("router solicitation hop limit"))?;
    let dst = SockaddrIn6::from(std::net::SocketAddrV6::new(ALL_ROUTERS, 0, 0, ifindex));
    sendto(fd.as_raw_fd(), &ROUTER_SOLICIT, &dst, MsgFlags::empty())
        .map_err(nix_err("send a router solicitation"))?;
    Ok(())
}

/// The global (not link-local) IPv6 addresses on the link `index`.
fn global_addresses(inside: &mut dyn Rtnl, index: u32) -> Vec<Ipv6Addr> {
    inside
        .link_addresses(index)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| match a.address {
            std::net::IpAddr::V6(v6) if !netlink::is_ipv6_link_local(&a.address) => Some(v6),
            _ => None,
        })
        .filter(|a| !a.is_loopback())
        .collect()
}

/// A router solicitation on its way: started by [`Solicitation::start`]
/// (which sends the first one at once), finished by [`Solicitation::wait`].
/// In between the caller can do other work (the launcher runs its DHCP
/// exchange) while netd answers and the kernel makes the address.
pub struct Solicitation {
    /// IPv6 address events inside the namespace, joined before the first
    /// solicitation went out, so the address's arrival is never missed.
    watch: Option<Watch>,
    index: u32,
    ifname: String,
    /// When the last solicitation was sent (`None`: none was needed).
    sent: Option<Instant>,
    started: Instant,
}

impl Solicitation {
    /// Joins the namespace's IPv6 address events and, unless `ifname`
    /// already has a global address, sends a router solicitation.
    pub fn start(
        netns: BorrowedFd<'_>,
        inside: &mut dyn Rtnl,
        ifname: &str,
    ) -> Result<Solicitation, RtnlError> {
        let link = inside.link(ifname)?.ok_or_else(|| RtnlError::Other {
            what: format!("find {ifname}"),
            msg: "no such link".into(),
        })?;
        // Without the watch the wait still works, by looking every few
        // milliseconds (a kernel without the group is not an error).
        let watch = Watch::open_in(netns, &[Group::Ipv6Addr])
            .map_err(|e| tracing::debug!("IPv6 address events: {e}"))
            .ok();
        let mut s = Solicitation {
            watch,
            index: link.index,
            ifname: ifname.to_string(),
            sent: None,
            started: Instant::now(),
        };
        if global_addresses(inside, s.index).is_empty() {
            s.solicit(netns);
        }
        Ok(s)
    }

    fn solicit(&mut self, netns: BorrowedFd<'_>) {
        if let Err(e) = solicit(netns, &self.ifname, self.index) {
            tracing::debug!("{e}");
        }
        self.sent = Some(Instant::now());
    }

    /// Waits until the kernel has a global address on the link from the
    /// router advertisements, for at most `timeout` since [`start`]
    /// (repeating the solicitation every [`RESEND`]); the address, or `None`
    /// when none came. Woken by the kernel's address events, not a timer.
    ///
    /// [`start`]: Solicitation::start
    pub fn wait(
        mut self,
        netns: BorrowedFd<'_>,
        inside: &mut dyn Rtnl,
        timeout: Duration,
    ) -> Result<Option<Ipv6Addr>, RtnlError> {
        loop {
            if let Some(a) = global_addresses(inside, self.index).first() {
                return Ok(Some(*a));
            }
            let now = Instant::now();
            let deadline = self.started + timeout;
            if now >= deadline {
                return Ok(None);
            }
            let resend = self.sent.map_or(now, |t| t + RESEND);
            if now >= resend {
                self.solicit(netns);
                continue;
            }
            let until = deadline.min(resend) - now;
            match &self.watch {
                Some(w) => {
                    let mut fds = [PollFd::new(w.fd(), PollFlags::POLLIN)];
                    let ms = until.as_millis().clamp(1, i32::MAX as u128) as i32;
                    match poll(
                        &mut fds,
                        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                    ) {
                        Ok(_) | Err(nix::Error::EINTR) => w.drain(),
                        Err(e) => return Err(nix_err("wait for IPv6 address events")(e)),
                    }
                }
                None => std::thread::sleep(until.min(POLL_WITHOUT_EVENTS)),
            }
        }
    }
}

/// How often the address is looked for when the event socket could not be
/// opened.
const POLL_WITHOUT_EVENTS: Duration = Duration::from_millis(2);

#[cfg(test)]
mod tests {
    use super::*;
    use netlink::fake::FakeRtnl;

    #[test]
    fn an_address_already_there_ends_the_wait_at_once() {
        let mut f = FakeRtnl::with_links(&[("lo", None), ("host0", Some("veth"))]);
        let i = f.link("host0").unwrap().unwrap().index;
        f.add_address(i, "fe80::2".parse().unwrap(), 64).unwrap();
        assert!(global_addresses(&mut f, i).is_empty(), "link-local only");
        f.add_address(i, "fd00:1::2".parse().unwrap(), 64).unwrap();
        assert_eq!(
            global_addresses(&mut f, i),
            ["fd00:1::2".parse::<Ipv6Addr>().unwrap()]
        );
        let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        use std::os::fd::AsFd;
        let got = Solicitation::start(ns.as_fd(), &mut f, "host0")
            .and_then(|s| s.wait(ns.as_fd(), &mut f, Duration::ZERO))
            .unwrap();
        assert_eq!(got, Some("fd00:1::2".parse().unwrap()));
    }
}
