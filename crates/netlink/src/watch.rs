//! [`Watch`]: a non-blocking netlink socket that joins multicast groups
//! (links, IPv4 and IPv6 addresses) in one network namespace and turns what
//! arrives into [`Event`]s. Poll its descriptor (or wrap it in tokio's
//! `AsyncFd`), then [`Watch::read`] what is pending, or [`Watch::drain`] it
//! when a caller only needs to know that something changed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::model::{Address, Link};
use crate::real::{address_from, link_from};
use crate::{in_netns, RtnlError};

/// A multicast group to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// New, changed and removed links (`RTNLGRP_LINK`).
    Link,
    /// IPv4 addresses (`RTNLGRP_IPV4_IFADDR`).
    Ipv4Addr,
    /// IPv6 addresses (`RTNLGRP_IPV6_IFADDR`).
    Ipv6Addr,
}

impl Group {
    /// The group's bit in a netlink socket address (`RTMGRP_*`).
    fn mask(self) -> u32 {
        match self {
            Group::Link => 0x1,
            Group::Ipv4Addr => 0x10,
            Group::Ipv6Addr => 0x100,
        }
    }
}

/// What the kernel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A link appeared or changed (`RTM_NEWLINK`).
    NewLink(Link),
    /// A link went away (`RTM_DELLINK`).
    DelLink(Link),
    NewAddress(Address),
    DelAddress(Address),
    /// The socket's buffer overflowed and events were lost: re-read the
    /// state instead of trusting the events seen so far.
    Overrun,
}

/// A socket subscribed to link and/or address events.
pub struct Watch {
    sock: Socket,
}

impl Watch {
    /// Opens a watch on `groups` in the calling thread's network namespace.
    pub fn open(groups: &[Group]) -> Result<Watch, RtnlError> {
        let what = "netlink event socket";
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(RtnlError::io(what))?;
        let mask = groups.iter().fold(0, |m, g| m | g.mask());
        sock.bind(&SocketAddr::new(0, mask))
            .map_err(RtnlError::io(what))?;
        sock.set_non_blocking(true).map_err(RtnlError::io(what))?;
        Ok(Watch { sock })
    }

    /// Opens a watch on `groups` inside the network namespace `netns`.
    pub fn open_in(netns: BorrowedFd<'_>, groups: &[Group]) -> Result<Watch, RtnlError> {
        in_netns(netns, || Watch::open(groups))?
    }

    /// The descriptor to poll for events.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Discards every pending event.
    pub fn drain(&self) {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = self.sock.recv(&mut &mut buf[..], libc::MSG_DONTWAIT) {
            if n == 0 {
                break;
            }
        }
    }

    /// Every pending event, in order; empty when there is none. Reads until
    /// the socket is empty, so edge-triggered pollers may wait again after.
    /// Only the kernel's datagrams count (a process could unicast to us).
    pub fn read(&self) -> Result<Vec<Event>, RtnlError> {
        let mut out = Vec::new();
        // Larger than any one message the kernel multicasts.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.sock.recv_from(&mut &mut buf[..], libc::MSG_DONTWAIT) {
                Ok((0, _)) => break,
                Ok((n, from)) if from.port_number() == 0 => out.extend(parse(&buf[..n])),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.push(Event::Overrun),
                Err(e) => return Err(RtnlError::io("read netlink events")(e)),
            }
        }
        Ok(out)
    }

    /// The watch registered with the current tokio runtime's reactor, for a
    /// daemon to await: `readable()`, then [`Watch::read`] through the
    /// guard, then `clear_ready()`. Must be called within a tokio runtime.
    pub fn into_async(self) -> Result<AsyncFd<Watch>, RtnlError> {
        // SAFETY: the socket belongs to the Watch, stays open until the
        // Watch is dropped, and `as_raw_fd` always returns it.
        unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) }
            .map_err(|e| RtnlError::io("register netlink event socket")(e.into()))
    }
}

impl AsFd for Watch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// The events in one datagram; messages this watch has no use for, and
/// malformed ones, are skipped.
pub fn parse(mut datagram: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    // A netlink header is 16 bytes; its first word is the message's length.
    while datagram.len() >= 16 {
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        if len < 16 || len > datagram.len() {
            break;
        }
        if let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[..len]) {
            if let NetlinkPayload::InnerMessage(m) = m.payload {
                match m {
                    RouteNetlinkMessage::NewLink(l) => out.push(Event::NewLink(link_from(&l))),
                    RouteNetlinkMessage::DelLink(l) => out.push(Event::DelLink(link_from(&l))),
                    RouteNetlinkMessage::NewAddress(a) => {
                        out.extend(address_from(&a).map(Event::NewAddress))
                    }
                    RouteNetlinkMessage::DelAddress(a) => {
                        out.extend(address_from(&a).map(Event::DelAddress))
                    }
                    _ => {}
                }
            }
        }
        // Messages are 4-byte aligned.
        let step = (len + 3) & !3;
        datagram = &datagram[step.min(datagram.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
    use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};

    fn wire(msg: RouteNetlinkMessage) -> Vec<u8> {
        let mut m = NetlinkMessage::from(msg);
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    fn link_msg(index: u32, name: &str, master: Option<u32>) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(m) = master {
            l.attributes.push(LinkAttribute::Controller(m));
        }
        l
    }

    #[test]
    fn a_datagram_of_several_messages_gives_their_events_in_order() {
        let mut addr = AddressMessage::default();
        addr.header.index = 5;
        addr.header.prefix_len = 24;
        addr.header.family = rtnetlink::packet_route::AddressFamily::Inet;
        addr.attributes
            .push(AddressAttribute::Address("10.0.0.2".parse().unwrap()));
        let mut d = wire(RouteNetlinkMessage::NewLink(link_msg(5, "vb-web", Some(3))));
        d.extend(wire(RouteNetlinkMessage::NewAddress(addr.clone())));
        d.extend(wire(RouteNetlinkMessage::DelAddress(addr)));
        d.extend(wire(RouteNetlinkMessage::DelLink(link_msg(
            5, "vb-web", None,
        ))));
        let ev = parse(&d);
        assert_eq!(ev.len(), 4, "{ev:?}");
        assert!(
            matches!(&ev[0], Event::NewLink(l) if l.name == "vb-web" && l.index == 5 && l.master == Some(3))
        );
        let a = Address {
            index: 5,
            address: "10.0.0.2".parse().unwrap(),
            prefix_len: 24,
        };
        assert_eq!(ev[1], Event::NewAddress(a));
        assert_eq!(ev[2], Event::DelAddress(a));
        assert!(matches!(&ev[3], Event::DelLink(l) if l.name == "vb-web"));
    }

    #[test]
    fn truncated_and_garbage_input_is_skipped_without_panic() {
        let d = wire(RouteNetlinkMessage::NewLink(link_msg(2, "eth0", None)));
        for cut in 0..d.len() {
            assert!(parse(&d[..cut]).is_empty(), "cut at {cut}");
        }
        let mut bad = d.clone();
        bad[0..4].copy_from_slice(&(u32::MAX).to_ne_bytes());
        assert!(parse(&bad).is_empty());
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(parse(&bad).is_empty());
        assert!(parse(&[0xff; 40]).is_empty());
    }

    /// A datagram from a process, not the kernel, is no event (needs root).
    #[test]
    fn forged_events_from_a_process_are_ignored() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: unicasting to a netlink socket needs root");
            return;
        }
        let w = Watch::open(&[Group::Link]).unwrap();
        let mut ours = SocketAddr::new(0, 0);
        w.sock.get_address(&mut ours).unwrap();
        let mut forger = Socket::new(NETLINK_ROUTE).unwrap();
        forger.bind_auto().unwrap();
        let forged = wire(RouteNetlinkMessage::NewLink(link_msg(9, "ve-evil", None)));
        forger
            .send_to(&forged, &SocketAddr::new(ours.port_number(), 0), 0)
            .unwrap();
        let mut fds = [nix::poll::PollFd::new(w.fd(), nix::poll::PollFlags::POLLIN)];
        let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2000u16)).unwrap();
        assert_eq!(n, 1, "the forged datagram arrived");
        assert_eq!(w.read().unwrap(), vec![]);
    }

    /// The real socket, in a namespace of its own (needs root).
    #[test]
    fn sees_links_and_addresses_come_and_go() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: a private network namespace needs root");
            return;
        }
        use crate::{Netlink, NewLink, Rtnl};
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let w = Watch::open(&[Group::Link, Group::Ipv4Addr, Group::Ipv6Addr]).unwrap();
            assert!(w.read().unwrap().is_empty());
            let mut nl = Netlink::open().unwrap();
            nl.add(&NewLink::Bridge { name: "br-w".into() }).unwrap();
            let br = nl.link("br-w").unwrap().unwrap();
            nl.add_address(br.index, "10.8.0.1".parse().unwrap(), 24)
                .unwrap();
            nl.delete(br.index).unwrap();
            let ev = w.read().unwrap();
            assert!(
                ev.iter()
                    .any(|e| matches!(e, Event::NewLink(l) if l.name == "br-w")),
                "{ev:?}"
            );
            assert!(ev.iter().any(|e| matches!(e, Event::NewAddress(a)
                    if a.index == br.index && a.address == "10.8.0.1".parse::<std::net::IpAddr>().unwrap())));
            assert!(ev
                .iter()
                .any(|e| matches!(e, Event::DelLink(l) if l.name == "br-w")));
            nl.add(&NewLink::Bridge { name: "br-x".into() }).unwrap();
            w.drain();
            assert!(w.read().unwrap().is_empty());
        })
        .join()
        .unwrap();
    }
}
