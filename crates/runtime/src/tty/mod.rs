//! Terminals, for the launcher's console and for netspawnctl's `shell` and
//! `login` alike: allocating a pty ([`pty`]), raw mode restored on every way
//! out ([`raw`]), the window size, the one forwarder between our terminal
//! and a pty master ([`forward`]) and its Ctrl-] ×3 escape ([`escape`]).

use std::os::fd::{AsRawFd, BorrowedFd};

use thiserror::Error;

pub mod escape;
pub mod forward;
pub mod pty;
pub mod raw;

pub use escape::EscapeDetector;
pub use forward::{Escaped, ForwardOptions, Forwarder, Slots};
pub use pty::{open_pty, Pty};
pub use raw::RawTerminal;

/// Why a terminal could not be set up or served.
#[derive(Debug, Error)]
pub enum TtyError {
    #[error("allocate a pty: {0}")]
    Pty(nix::Error),
    #[error("set up the terminal: {0}")]
    Terminal(nix::Error),
    #[error("write to the terminal: {0}")]
    Output(nix::Error),
}

/// Copies the window size of `from` (our terminal) to `to` (the pty master).
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read/write a winsize struct we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Writes the whole buffer, retrying on short writes and waiting while a
/// non-blocking descriptor is full.
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
