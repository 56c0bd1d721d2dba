//! The container's console: a pty whose slave becomes the container's
//! /dev/console and standard streams, forwarded to the launcher's terminal.
//! Pressing Ctrl-] three times within a second ends the session, as in
//! systemd-nspawn.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::termios::{self, SetArg, Termios};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConsoleError {
    #[error("allocate a pty: {0}")]
    Pty(nix::Error),
    #[error("set up the terminal: {0}")]
    Terminal(nix::Error),
}

/// How the container's console is wired (systemd-nspawn's `--console=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsoleMode {
    /// A pty, forwarded both ways to our terminal.
    Interactive,
    /// A pty; the container's output is forwarded, input is not.
    ReadOnly,
    /// A pty nobody reads or writes.
    Passive,
    /// No pty: the container gets our standard input, output and error.
    Pipe,
}

/// An allocated pty pair.
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// The slave's path on the host (/dev/pts/N), bind-mounted as /dev/console.
    pub slave_path: PathBuf,
}

/// Allocates a pty pair on the host's devpts.
pub fn open_pty() -> Result<Pty, ConsoleError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(ConsoleError::Pty)?;
    nix::pty::grantpt(&master).map_err(ConsoleError::Pty)?;
    nix::pty::unlockpt(&master).map_err(ConsoleError::Pty)?;
    let name = nix::pty::ptsname_r(&master).map_err(ConsoleError::Pty)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(ConsoleError::Pty)?;
    let master: OwnedFd = master.into();
    Ok(Pty {
        master,
        slave,
        slave_path: PathBuf::from(name),
    })
}

/// Puts a terminal in raw mode; restores it when dropped.
pub struct RawTerminal {
    fd: OwnedFd,
    saved: Termios,
}

impl RawTerminal {
    pub fn enter(fd: BorrowedFd<'_>) -> Result<RawTerminal, ConsoleError> {
        let saved = termios::tcgetattr(fd).map_err(ConsoleError::Terminal)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(ConsoleError::Terminal)?;
        let fd = fd.try_clone_to_owned().map_err(|e| {
            ConsoleError::Terminal(nix::Error::from_raw(
                e.raw_os_error().unwrap_or(libc::EBADF),
            ))
        })?;
        Ok(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies the window size of `from` (our terminal) to `to` (the pty master).
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read/write a winsize struct we own.
    unsafe {
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// The escape sequence: three Ctrl-] (0x1d) within one second.
#[derive(Debug, Default)]
pub struct EscapeDetector {
    count: u32,
    first: Option<Instant>,
}

pub const ESCAPE_BYTE: u8 = 0x1d;

impl EscapeDetector {
    /// Feeds input bytes; true once the escape sequence is complete.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) -> bool {
        for &b in bytes {
            if b != ESCAPE_BYTE {
                self.count = 0;
                self.first = None;
                continue;
            }
            match self.first {
                Some(t) if now.duration_since(t) < Duration::from_secs(1) => self.count += 1,
                _ => {
                    self.first = Some(now);
                    self.count = 1;
                }
            }
            if self.count >= 3 {
                return true;
            }
        }
        false
    }
}

/// Reads what is available on `from` and writes all of it to `to`.
/// Returns false on end of file or a hang-up.
pub fn pump(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(bool, usize)> {
    let n = match nix::unistd::read(from, buf) {
        Ok(0) => return Ok((false, 0)),
        Ok(n) => n,
        Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => return Ok((true, 0)),
        Err(nix::Error::EIO) => return Ok((false, 0)),
        Err(e) => return Err(e),
    };
    write_all(to, &buf[..n])?;
    Ok((true, n))
}

/// Writes the whole buffer, retrying on short writes.
pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(nix::Error::EAGAIN) => {
                let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(100u16));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_needs_three_within_a_second() {
        let t0 = Instant::now();
        let mut d = EscapeDetector::default();
        assert!(!d.feed(&[0x1d, 0x1d], t0));
        assert!(d.feed(&[0x1d], t0 + Duration::from_millis(500)));

        let mut d = EscapeDetector::default();
        assert!(!d.feed(&[0x1d, 0x1d], t0));
        assert!(
            !d.feed(&[0x1d], t0 + Duration::from_millis(1500)),
            "too slow: starts over"
        );
        assert!(!d.feed(&[0x1d], t0 + Duration::from_millis(1600)));
        assert!(d.feed(&[0x1d], t0 + Duration::from_millis(1700)));

        let mut d = EscapeDetector::default();
        assert!(!d.feed(&[0x1d, 0x1d, b'a', 0x1d], t0), "other input resets");
        assert!(d.feed(b"\x1d\x1d\x1d", t0));
    }

    #[test]
    fn pty_round_trip() {
        let pty = open_pty().unwrap();
        assert!(pty.slave_path.starts_with("/dev/pts"));
        write_all(pty.slave.as_fd(), b"hello").unwrap();
        let mut buf = [0u8; 64];
        let (open, n) = pump(pty.master.as_fd(), pty.master.as_fd(), &mut [0u8; 0])
            .map(|_| (true, 0))
            .unwrap_or((true, 0));
        let _ = (open, n);
        let n = nix::unistd::read(pty.master.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
    }
}
