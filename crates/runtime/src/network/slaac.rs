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
//! [`solicit_and_wait`] sends a router solicitation at once (the kernel would
//! send its own only after a second: `rtr_solicit_delay`), and waits until
//! the kernel has made the address, so the payload starts with it.

use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use netlink::{in_netns, Rtnl, RtnlError};
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

/// Solicits router advertisements on `ifname` and waits until the kernel
/// has an address from them, for at most `timeout`; the address, or
/// `None` when none came.
pub fn solicit_and_wait(
    netns: BorrowedFd<'_>,
    inside: &mut dyn Rtnl,
    ifname: &str,
    timeout: Duration,
) -> Result<Option<Ipv6Addr>, RtnlError> {
    let link = inside.link(ifname)?.ok_or_else(|| RtnlError::Other {
        what: format!("find {ifname}"),
        msg: "no such link".into(),
    })?;
    let started = Instant::now();
    let mut sent: Option<Instant> = None;
    loop {
        if let Some(a) = global_addresses(inside, link.index).first() {
            return Ok(Some(*a));
        }
        if started.elapsed() >= timeout {
            return Ok(None);
        }
        if sent.is_none_or(|t| t.elapsed() >= RESEND) {
            if let Err(e) = solicit(netns, ifname, link.index) {
                tracing::debug!("{e}");
            }
            sent = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

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
        let got = solicit_and_wait(ns.as_fd(), &mut f, "host0", Duration::ZERO).unwrap();
        assert_eq!(got, Some("fd00:1::2".parse().unwrap()));
    }
}
