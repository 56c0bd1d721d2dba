//! Raw mode for our terminal while it is forwarded, restored when dropped
//! (normal end, escape or error alike).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::termios::{self, SetArg, Termios};

use super::TtyError;

/// Puts a terminal in raw mode; restores it when dropped.
pub struct RawTerminal {
    fd: OwnedFd,
    saved: Termios,
}

impl RawTerminal {
    pub fn enter(fd: BorrowedFd<'_>) -> Result<RawTerminal, TtyError> {
        let saved = termios::tcgetattr(fd).map_err(TtyError::Terminal)?;
        // Our own descriptor first: once raw, nothing may fail before the
        // guard exists to restore it.
        let fd = fd.try_clone_to_owned().map_err(|e| {
            TtyError::Terminal(nix::Error::from_raw(
                e.raw_os_error().unwrap_or(libc::EBADF),
            ))
        })?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd.as_fd(), SetArg::TCSANOW, &raw).map_err(TtyError::Terminal)?;
        Ok(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}
