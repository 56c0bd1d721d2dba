//! What the launcher and the container's PID 1 say to each other before the
//! payload runs, over the sequenced-packet socket pair made before the clone
//! (one message per packet, framed by [`crate::tagged`]). The launcher sends
//! [`SyncMessage::Go`] once the child is in its cgroups (and its user
//! namespace's maps are written), and [`SyncMessage::Network`] once its links
//! are made and configured: the child builds its file system in between,
//! while the launcher makes the links. The child answers only if a step
//! fails ([`SyncMessage::Failed`]). The socket is close-on-exec: end-of-file
//! means the payload's exec succeeded.
//! With a user namespace an outer child makes the root while the launcher
//! makes the machine's cgroup; the launcher says [`SyncMessage::CgroupReady`]
//! once it exists, and the outer child clones PID 1 into it and says
//! [`SyncMessage::Started`] with its PID.

use std::os::fd::AsFd;

use thiserror::Error;

use crate::tagged::{self, Frame, FrameError, Message};

/// A message between the launcher and the container's PID 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// Launcher → child: placed in the cgroups (maps written); build the
    /// file system.
    Go,
    /// Launcher → child: the links are made and configured (host0's
    /// address, the resolv.conf to bind); go on to the payload.
    Network,
    /// Child → launcher: a step failed (the message names it); the child exits.
    Failed(String),
    /// Launcher → outer child (with a user namespace): the machine's cgroup
    /// exists (and belongs to the container's root); clone PID 1 into it.
    CgroupReady,
    /// Outer child → launcher (with a user namespace): PID 1 is cloned,
    /// with this PID in our namespace, born in its cgroup or not.
    Started { pid: u32, in_cgroup: bool },
}

mod tag {
    pub const GO: u8 = b'g';
    pub const NETWORK: u8 = b'n';
    pub const CGROUP_READY: u8 = b'c';
    pub const FAILED: u8 = b'E';
    pub const STARTED_IN_CGROUP: u8 = b'P';
    pub const STARTED: u8 = b'p';
}

impl Message for SyncMessage {
    fn to_frame(&self) -> (u8, Vec<u8>) {
        match self {
            SyncMessage::Go => (tag::GO, Vec::new()),
            SyncMessage::Network => (tag::NETWORK, Vec::new()),
            SyncMessage::CgroupReady => (tag::CGROUP_READY, Vec::new()),
            SyncMessage::Failed(m) => (tag::FAILED, tagged::text_payload(m).to_vec()),
            SyncMessage::Started { pid, in_cgroup } => (
                if *in_cgroup {
                    tag::STARTED_IN_CGROUP
                } else {
                    tag::STARTED
                },
                pid.to_le_bytes().to_vec(),
            ),
        }
    }

    fn from_frame(frame: Frame<'_>) -> Result<Self, FrameError> {
        match frame.tag {
            tag::GO => frame.empty("go-ahead").map(|()| SyncMessage::Go),
            tag::NETWORK => frame.empty("network ready").map(|()| SyncMessage::Network),
            tag::CGROUP_READY => frame
                .empty("cgroup ready")
                .map(|()| SyncMessage::CgroupReady),
            tag::FAILED => frame.text("failure").map(SyncMessage::Failed),
            tag::STARTED | tag::STARTED_IN_CGROUP => {
                frame.u32("started").map(|pid| SyncMessage::Started {
                    pid,
                    in_cgroup: frame.tag == tag::STARTED_IN_CGROUP,
                })
            }
            t => Err(FrameError::UnknownTag(t)),
        }
    }
}

/// Why a message could not be exchanged.
#[derive(Debug, Error)]
pub enum SyncError {
    #[error("{0}")]
    Io(nix::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Sends one message.
pub fn send(fd: impl AsFd, msg: &SyncMessage) -> Result<(), SyncError> {
    let bytes = msg.encode()?;
    loop {
        match nix::unistd::write(fd.as_fd(), &bytes) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SyncError::Io(e)),
            Ok(_) => return Ok(()),
        }
    }
}

/// Receives one message; None at end-of-file.
///
/// A peer that exits with a message of ours unread resets the socket, and
/// the kernel reports that reset (once) before what the peer sent first: a
/// child that fails before it reads its go-ahead sends its failure and
/// exits. The reset is passed over so the failure is read, not lost.
pub fn recv(fd: impl AsFd) -> Result<Option<SyncMessage>, SyncError> {
    let mut buf = vec![0u8; tagged::MAX_FRAME];
    let mut reset = false;
    let n = loop {
        match nix::unistd::read(fd.as_fd(), &mut buf) {
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::ECONNRESET) if !reset => reset = true,
            Err(e) => return Err(SyncError::Io(e)),
            Ok(n) => break n,
        }
    };
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(SyncMessage::decode(&buf[..n])?))
}

#[cfg(test)]
mod tests {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    use super::*;

    #[test]
    fn messages_round_trip() {
        for msg in [
            SyncMessage::Go,
            SyncMessage::Network,
            SyncMessage::CgroupReady,
            SyncMessage::Failed("bind /run/host/notify: EADDRINUSE".into()),
            SyncMessage::Failed(String::new()),
            SyncMessage::Started {
                pid: 4242,
                in_cgroup: true,
            },
            SyncMessage::Started {
                pid: 1,
                in_cgroup: false,
            },
        ] {
            assert_eq!(SyncMessage::decode(&msg.encode().unwrap()).unwrap(), msg);
        }
    }

    #[test]
    fn a_failure_sent_before_the_peer_went_is_read_even_if_our_message_was_unread() {
        // The child fails before it reads our go-ahead and exits: closing a
        // socket with unread data resets its peer, and the reset is reported
        // before the queued failure. It must still be read.
        let (parent, child) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        send(&parent, &SyncMessage::Network).unwrap();
        send(&child, &SyncMessage::Failed("no such user".into())).unwrap();
        drop(child);
        assert_eq!(
            recv(&parent).unwrap(),
            Some(SyncMessage::Failed("no such user".into()))
        );
        assert_eq!(recv(&parent).unwrap(), None);
    }

    #[test]
    fn long_failures_are_cut_not_refused() {
        let msg = SyncMessage::Failed("x".repeat(tagged::MAX_PAYLOAD + 10));
        let back = SyncMessage::decode(&msg.encode().unwrap()).unwrap();
        assert_eq!(back, SyncMessage::Failed("x".repeat(tagged::MAX_PAYLOAD)));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(SyncMessage::decode(b"").is_err());
        assert!(SyncMessage::decode(b"g").is_err(), "truncated header");
        assert_eq!(
            SyncMessage::decode(b"q\0\0\0\0"),
            Err(FrameError::UnknownTag(b'q'))
        );
        assert_eq!(
            SyncMessage::decode(b"g\x01\0\0\0x"),
            Err(FrameError::Malformed("go-ahead"))
        );
        assert_eq!(
            SyncMessage::decode(b"n\x01\0\0\0x"),
            Err(FrameError::Malformed("network ready"))
        );
        assert_eq!(
            SyncMessage::decode(b"E\x01\0\0\0\xff"),
            Err(FrameError::Malformed("failure"))
        );
        assert!(matches!(
            SyncMessage::decode(b"E\x05\0\0\0ab"),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            SyncMessage::decode(b"E\xff\xff\xff\xffab"),
            Err(FrameError::Overlong(_))
        ));
    }

    #[test]
    fn over_a_socket_pair() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        send(&a, &SyncMessage::Go).unwrap();
        send(&a, &SyncMessage::Failed("no".into())).unwrap();
        assert_eq!(recv(&b).unwrap(), Some(SyncMessage::Go));
        assert_eq!(recv(&b).unwrap(), Some(SyncMessage::Failed("no".into())));
        drop(a);
        assert_eq!(recv(&b).unwrap(), None);
    }
}
