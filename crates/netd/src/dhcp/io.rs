//! The DHCP server's socket: one UDP socket on 0.0.0.0:67 per served link.
//!
//! The socket is bound to the link's device (SO_BINDTODEVICE, set before bind), so several links
//! each have their own socket on port 67 (SO_REUSEADDR), a broadcast reply leaves by the right
//! device, and nothing is served on any other interface. Every request's arriving interface is
//! checked as well (IP_PKTINFO): one that did not arrive on the link is dropped, whatever the
//! routing or the device binding let through. Everything else happens in
//! [`Server::handle`]; this module only receives, asks the caller for the request's context (the
//! machine's host name, which MACs are running machines'), and sends what `handle` returned,
//! after `handle` has already made the lease change durable.

use std::ffi::OsString;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::libc;
use nix::sys::socket::{
    recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrIn,
};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::server::{client_hwaddr, Destination, Outcome, RequestContext, Server};

/// DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// DHCP client port.
pub const CLIENT_PORT: u16 = 68;

/// Errors of the DHCP socket.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// Creating or configuring the socket failed.
    #[error("DHCP socket on {ifname}: {action}: {source}")]
    Socket {
        /// The link.
        ifname: String,
        /// What failed.
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// Another thread panicked while holding the server.
    #[error("DHCP server on {0}: state lock poisoned")]
    Poisoned(String),
}

fn sock_err(ifname: &str, action: &'static str) -> impl FnOnce(nix::Error) -> IoError {
    let ifname = ifname.to_string();
    move |e| IoError::Socket {
        ifname,
        action,
        source: e.into(),
    }
}

/// Creates the link's DHCP socket (non-blocking, close-on-exec) in the calling thread's network
/// namespace: UDP 0.0.0.0:67, SO_REUSEADDR, SO_BROADCAST, SO_BINDTODEVICE=`ifname`.
pub fn bind_socket(ifname: &str) -> Result<StdUdpSocket, IoError> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::Udp,
    )
    .map_err(sock_err(ifname, "socket"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(sock_err(ifname, "SO_REUSEADDR"))?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(sock_err(ifname, "SO_BROADCAST"))?;
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(ifname))
        .map_err(sock_err(ifname, "SO_BINDTODEVICE"))?;
    bind_any(&fd, SERVER_PORT).map_err(|source| IoError::Socket {
        ifname: ifname.to_string(),
        action: "bind 0.0.0.0:67",
        source,
    })?;
    Ok(StdUdpSocket::from(fd))
}

/// One datagram: its length, sender and arriving interface (IP_PKTINFO).
fn recv_with_ifindex(
    socket: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr, Option<u32>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let arrived = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|m| match m {
            ControlMessageOwned::Ipv4PacketInfo(p) => u32::try_from(p.ipi_ifindex).ok(),
            _ => None,
        })
    });
    let peer = msg
        .address
        .map(|a| std::net::SocketAddr::V4(a.into()))
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    Ok((msg.bytes, peer, arrived))
}

/// bind(2) to 0.0.0.0:`port`.
fn bind_any(fd: &OwnedFd, port: u16) -> std::io::Result<()> {
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port)).map_err(Into::into)
}

/// Serves DHCP on `ifname` until `shutdown` completes. `context_for` gives the context of a
/// request from its client hardware address (empty when the packet has none): the machine's
/// name (option 12) and the MACs of the running machines, e.g. from the machine registry. The
/// server stays shared so the daemon can read leases and counters meanwhile.
pub async fn serve<H, S>(
    ifname: &str,
    server: Arc<Mutex<Server>>,
    context_for: H,
    shutdown: S,
) -> Result<(), IoError>
where
    H: Fn(&[u8]) -> RequestContext,
    S: Future<Output = ()>,
{
    let socket = bind_socket(ifname)?;
    serve_socket(socket, ifname, server, context_for, shutdown).await
}

/// As [`serve`], on a socket made by [`bind_socket`] (e.g. in another network namespace).
pub async fn serve_socket<H, S>(
    socket: StdUdpSocket,
    ifname: &str,
    server: Arc<Mutex<Server>>,
    context_for: H,
    shutdown: S,
) -> Result<(), IoError>
where
    H: Fn(&[u8]) -> RequestContext,
    S: Future<Output = ()>,
{
    // The device the socket is bound to is the only one requests may arrive on.
    let link = crate::sys::bound_ifindex(socket.as_fd()).map_err(|source| IoError::Socket {
        ifname: ifname.to_string(),
        action: "SO_BINDTOIFINDEX",
        source,
    })?;
    setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).map_err(sock_err(ifname, "IP_PKTINFO"))?;
    let socket = UdpSocket::from_std(socket).map_err(|source| IoError::Socket {
        ifname: ifname.to_string(),
        action: "register with tokio",
        source,
    })?;
    tokio::pin!(shutdown);
    // Larger than any Ethernet frame; DHCP messages are at most 576..1500 bytes in practice.
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    loop {
        let (len, peer, arrived) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = socket.async_io(Interest::READABLE, || recv_with_ifindex(&socket, &mut buf, &mut cmsg)) => match r {
                Ok(x) => x,
                Err(e) => {
                    // Transient (e.g. ENETDOWN while the link flaps); the daemon stops us when
                    // the link is gone.
                    tracing::debug!(ifname, error = %e, "DHCP receive failed");
                    continue;
                }
            },
        };
        if link != 0 && arrived != Some(link) {
            tracing::debug!(ifname, %peer, ?arrived, "DHCP request from another interface dropped");
            continue;
        }
        let packet = &buf[..len];
        // Asked even without a hardware address: the policy must not depend on the packet
        // carrying one.
        let ctx = context_for(client_hwaddr(packet).unwrap_or(&[]));
        let outcome = {
            let mut srv = server
                .lock()
                .map_err(|_| IoError::Poisoned(ifname.to_string()))?;
            // Saving the lease table (inside handle, before the ACK) writes a file (no fsync); that
            // is short and keeps the "saved before acknowledged" order trivially true.
            srv.handle(packet, SystemTime::now(), &ctx)
        };
        match outcome {
            Outcome::Reply { bytes, to } => {
                let dest = match to {
                    Destination::Broadcast => Ipv4Addr::BROADCAST,
                    Destination::Unicast(a) => a,
                };
                if let Err(e) = socket
                    .send_to(&bytes, SocketAddrV4::new(dest, CLIENT_PORT))
                    .await
                {
                    tracing::warn!(ifname, %dest, error = %e, "DHCP reply not sent");
                }
            }
            Outcome::Ignore => {}
            Outcome::Drop(reason) => {
                tracing::debug!(ifname, %peer, ?reason, "DHCP packet dropped");
            }
        }
    }
}
