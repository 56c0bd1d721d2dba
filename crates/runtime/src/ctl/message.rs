//! What the helper and the process in a machine tell netspawnctl (see
//! [`super::enter`]): one message per datagram on a sequenced-packet socket
//! pair, framed by [`crate::tagged`]; the pty master travels beside
//! [`HelperMessage::Ready`] as SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use thiserror::Error;

use crate::tagged::{self, Frame, FrameError, Message};

/// A message from the helper (or the process it forked) to netspawnctl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperMessage {
    /// The process's host PID.
    Pid(u32),
    /// Setup done; the payload starts now. The pty master comes with it
    /// (SCM_RIGHTS) when a pty was asked for, and `pty_name` is its name
    /// ("pts/N"; empty without a pty).
    Ready { pty_name: String },
    /// A step failed (the message names it); the sender exits.
    Error(String),
    /// The process exited with this code.
    Exited(i32),
    /// The process was killed by this signal.
    Signaled(i32),
}

mod tag {
    pub const PID: u8 = b'P';
    pub const READY: u8 = b'R';
    pub const ERROR: u8 = b'E';
    pub const EXITED: u8 = b'X';
    pub const SIGNALED: u8 = b'S';
}

impl Message for HelperMessage {
    fn to_frame(&self) -> (u8, Vec<u8>) {
        match self {
            HelperMessage::Pid(p) => (tag::PID, p.to_le_bytes().to_vec()),
            HelperMessage::Ready { pty_name } => {
                (tag::READY, tagged::text_payload(pty_name).to_vec())
            }
            HelperMessage::Error(m) => (tag::ERROR, tagged::text_payload(m).to_vec()),
            HelperMessage::Exited(c) => (tag::EXITED, c.to_le_bytes().to_vec()),
            HelperMessage::Signaled(s) => (tag::SIGNALED, s.to_le_bytes().to_vec()),
        }
    }

    fn from_frame(frame: Frame<'_>) -> Result<Self, FrameError> {
        match frame.tag {
            tag::PID => frame.u32("PID").map(HelperMessage::Pid),
            tag::READY => frame
                .text("ready")
                .map(|pty_name| HelperMessage::Ready { pty_name }),
            tag::ERROR => frame.text("error").map(HelperMessage::Error),
            tag::EXITED => frame.i32("exit status").map(HelperMessage::Exited),
            tag::SIGNALED => frame.i32("signal").map(HelperMessage::Signaled),
            t => Err(FrameError::UnknownTag(t)),
        }
    }
}

/// Why no message could be received.
#[derive(Debug, Error)]
pub enum RecvError {
    #[error("{0}")]
    Io(nix::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Sends a message, with a descriptor if given. Nothing to do if netspawnctl
/// went away: the exit status says the rest.
pub fn send(sock: RawFd, msg: &HelperMessage, fd: Option<RawFd>) {
    let Ok(data) = msg.encode() else {
        return;
    };
    let iov = [IoSlice::new(&data)];
    let fds = fd.map(|f| [f]);
    let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    let _ = sendmsg::<()>(sock, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None);
}

/// One received message and a passed descriptor if any. None at end of
/// stream (or, with `nonblocking`, when nothing is queued).
pub fn recv(
    sock: RawFd,
    nonblocking: bool,
) -> Result<Option<(HelperMessage, Option<OwnedFd>)>, RecvError> {
    let mut buf = vec![0u8; tagged::MAX_FRAME];
    let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let (bytes, fd) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg_space), flags) {
            Ok(m) => {
                let mut fd = None;
                if let Ok(cmsgs) = m.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for f in fds {
                                // SAFETY: the kernel just installed this descriptor for us.
                                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                                if fd.is_none() {
                                    fd = Some(owned);
                                }
                            }
                        }
                    }
                }
                break (m.bytes, fd);
            }
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::EAGAIN) if nonblocking => return Ok(None),
            Err(e) => return Err(RecvError::Io(e)),
        }
    };
    if bytes == 0 {
        return Ok(None);
    }
    Ok(Some((HelperMessage::decode(&buf[..bytes])?, fd)))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    use super::*;

    fn all() -> Vec<HelperMessage> {
        vec![
            HelperMessage::Pid(4_000_000),
            HelperMessage::Ready {
                pty_name: "pts/3".into(),
            },
            HelperMessage::Ready {
                pty_name: String::new(),
            },
            HelperMessage::Error("Failed to execute nope: No such file or directory".into()),
            HelperMessage::Exited(0),
            HelperMessage::Exited(255),
            HelperMessage::Signaled(libc::SIGKILL),
        ]
    }

    #[test]
    fn messages_round_trip() {
        for msg in all() {
            assert_eq!(HelperMessage::decode(&msg.encode().unwrap()).unwrap(), msg);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(HelperMessage::decode(b"").is_err());
        assert!(
            HelperMessage::decode(b"P\x04\0").is_err(),
            "truncated header"
        );
        assert!(matches!(
            HelperMessage::decode(b"P\x04\0\0\0\x01\x02"),
            Err(FrameError::Truncated { .. })
        ));
        assert_eq!(
            HelperMessage::decode(b"Z\0\0\0\0"),
            Err(FrameError::UnknownTag(b'Z'))
        );
        assert_eq!(
            HelperMessage::decode(b"P\x02\0\0\0\x01\x02"),
            Err(FrameError::Malformed("PID"))
        );
        assert_eq!(
            HelperMessage::decode(b"X\x05\0\0\0\0\0\0\0\0"),
            Err(FrameError::Malformed("exit status"))
        );
        assert_eq!(
            HelperMessage::decode(b"R\x01\0\0\0\xc3"),
            Err(FrameError::Malformed("ready"))
        );
        assert!(matches!(
            HelperMessage::decode(b"E\0\0\x01\0"),
            Err(FrameError::Overlong(_))
        ));
        // Every truncation of every message is an error, never a panic.
        for msg in all() {
            let bytes = msg.encode().unwrap();
            for cut in 0..bytes.len() {
                assert!(HelperMessage::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn over_a_socket_pair_with_a_descriptor() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let passed = std::fs::File::open("/dev/null").unwrap();
        send(a.as_raw_fd(), &HelperMessage::Pid(42), None);
        let ready = HelperMessage::Ready {
            pty_name: "pts/0".into(),
        };
        send(a.as_raw_fd(), &ready, Some(passed.as_raw_fd()));
        let (m, fd) = recv(b.as_raw_fd(), false).unwrap().unwrap();
        assert_eq!((m, fd.is_none()), (HelperMessage::Pid(42), true));
        let (m, fd) = recv(b.as_raw_fd(), false).unwrap().unwrap();
        assert_eq!((m, fd.is_some()), (ready, true));
        assert!(
            recv(b.as_raw_fd(), true).unwrap().is_none(),
            "nothing queued"
        );
        // Garbage on the wire is an error to the receiver.
        nix::unistd::write(&a, b"junk").unwrap();
        assert!(matches!(
            recv(b.as_raw_fd(), false),
            Err(RecvError::Frame(_))
        ));
        drop(a);
        assert!(recv(b.as_raw_fd(), false).unwrap().is_none());
    }
}
