//! Readiness: what the payload tells us on /run/host/notify (sd_notify's
//! `READY=1`), and telling our own service manager (`$NOTIFY_SOCKET`) that
//! the machine is ready, as systemd-nspawn does: at once, or with
//! `--notify-ready=yes` when the payload says so.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{self, MsgFlags, UnixAddr};

/// What changed in a running machine, for the registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The addresses inside its network namespace.
    Addresses(crate::network::addrs::Seen),
    /// The payload reported READY=1.
    Ready,
}

/// True if a notification datagram carries `READY=1`.
pub fn says_ready(datagram: &[u8]) -> bool {
    datagram.split(|b| *b == b'\n').any(|l| l == b"READY=1")
}

/// Drains the notify socket, logging what the payload says; true if it said
/// READY=1.
pub fn read_notifications(fd: BorrowedFd<'_>, machine: &str) -> bool {
    let mut buf = [0u8; 4096];
    let mut ready = false;
    while let Ok(n) = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
        ready |= says_ready(&buf[..n]);
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            match line {
                "READY=1" => tracing::info!("container {machine} is ready"),
                "STOPPING=1" => tracing::info!("container {machine} is stopping"),
                other => tracing::debug!("notification from {machine}: {other}"),
            }
        }
    }
    ready
}

/// Sends `READY=1` to `$NOTIFY_SOCKET` if we have one (a path or an
/// abstract `@name`). Failures are logged, never fatal.
pub fn tell_manager() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => UnixAddr::new_abstract(name.as_bytes()),
        None => UnixAddr::new(path.as_str()),
    };
    let sent = addr.and_then(|addr| {
        let fd = socket::socket(
            socket::AddressFamily::Unix,
            socket::SockType::Datagram,
            socket::SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        socket::sendto(fd.as_raw_fd(), b"READY=1\n", &addr, MsgFlags::empty())
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify {path}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines() {
        for (d, want) in [
            (&b"READY=1"[..], true),
            (b"STATUS=x\nREADY=1\n", true),
            (b"READY=0", false),
            (b"XREADY=1", false),
            (b"", false),
        ] {
            assert_eq!(says_ready(d), want, "{d:?}");
        }
    }
}
