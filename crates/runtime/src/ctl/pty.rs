//! Forwarding our terminal to a pty in a machine (for `shell` and `login`)
//! with the one forwarder of [`crate::tty`]: raw mode while connected,
//! window size kept in sync (SIGWINCH → TIOCSWINSZ), Ctrl-] pressed three
//! times within a second ends the session (as with systemd-nspawn and
//! machinectl), and the terminal is restored on every way out. Also the
//! signal plumbing shared with the non-pty case.

use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use thiserror::Error;

use super::enter::MachineProcess;
pub use crate::tty::ForwardOptions;
use crate::tty::{self, Forwarder, RawTerminal, TtyError};

/// Errors while forwarding.
#[derive(Debug, Error)]
pub enum PtyError {
    #[error("{step}: {err}")]
    Sys { step: &'static str, err: nix::Error },
    #[error("{0}")]
    Tty(#[from] TtyError),
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> PtyError {
    move |err| PtyError::Sys { step, err }
}

/// The signals netspawnctl handles itself while a process runs in a machine.
/// Blocking them before [`super::enter::enter_machine`] leaves no window in
/// which they would kill us; the machine's process unblocks them.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGWINCH,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// Blocks [`handled_signals`] and returns a descriptor that reads them.
pub fn signal_fd() -> Result<SignalFd, PtyError> {
    let set = handled_signals();
    set.thread_block().map_err(sys("block signals"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys("create signalfd"))
}

/// Decides what a signal we received means for the process in the machine:
/// the signal to forward, if any. Terminal-generated SIGINT/SIGQUIT (sent by
/// the kernel) already reach the process through the terminal when it shares
/// ours, so only those sent by someone (kill) are forwarded; SIGWINCH is ours.
pub fn forwarded_signal(signo: i32, sent_by_kernel: bool, shares_terminal: bool) -> Option<i32> {
    match signo {
        libc::SIGTERM | libc::SIGHUP => Some(signo),
        libc::SIGINT | libc::SIGQUIT if !(sent_by_kernel && shares_terminal) => Some(signo),
        _ => None,
    }
}

/// Waits for a process that shares our stdin/stdout/stderr, forwarding
/// SIGTERM/SIGHUP (and SIGINT/SIGQUIT not coming from the terminal).
pub fn wait_passthrough(proc: &MachineProcess, sigfd: &SignalFd) -> Result<(), PtyError> {
    loop {
        let mut fds = [
            PollFd::new(proc.exit_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(sys("poll")(e)),
            Ok(_) => {}
        }
        if has(&fds[0], PollFlags::POLLIN) {
            return Ok(());
        }
        if has(&fds[1], PollFlags::POLLIN) {
            while let Ok(Some(si)) = sigfd.read_signal() {
                let by_kernel = si.ssi_code == libc::SI_KERNEL;
                if let Some(s) = forwarded_signal(si.ssi_signo as i32, by_kernel, true) {
                    let _ = proc.signal(s);
                }
            }
        }
    }
}

fn has(fd: &PollFd<'_>, flags: PollFlags) -> bool {
    fd.revents().is_some_and(|r| r.intersects(flags))
}

/// How a forwarding session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The process in the machine exited.
    Exited,
    /// The user pressed Ctrl-] three times.
    Escaped,
}

/// Connects our stdin/stdout (both terminals) to the process's pty until the
/// process exits or the user escapes. Our terminal is in raw mode meanwhile
/// and restored afterwards. Signals come from `sigfd` ([`signal_fd`]).
pub fn forward(
    proc: &MachineProcess,
    sigfd: &SignalFd,
    opts: ForwardOptions,
) -> Result<Ended, PtyError> {
    let Some(master) = proc.pty_master() else {
        return Err(PtyError::Sys {
            step: "forward the pty",
            err: nix::Error::EBADF,
        });
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let (input, output) = (stdin.as_fd(), stdout.as_fd());
    let mut forwarder = Forwarder::new(master, Some(input), Some(output), opts)?;
    tty::copy_window_size(output, master);
    let _raw = RawTerminal::enter(input)?;
    loop {
        let mut fds = vec![
            PollFd::new(proc.exit_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        let slots = forwarder.register(&mut fds);
        match poll(&mut fds, forwarder.timeout()) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(sys("poll")(e)),
            Ok(_) => {}
        }
        if has(&fds[1], PollFlags::POLLIN) {
            while let Ok(Some(si)) = sigfd.read_signal() {
                let signo = si.ssi_signo as i32;
                if signo == libc::SIGWINCH {
                    tty::copy_window_size(output, master);
                } else if let Some(s) =
                    forwarded_signal(signo, si.ssi_code == libc::SI_KERNEL, false)
                {
                    let _ = proc.signal(s);
                }
            }
        }
        if forwarder.handle(&fds, slots)?.is_some() {
            return Ok(Ended::Escaped);
        }
        if has(&fds[0], PollFlags::POLLIN) {
            forwarder.finish();
            return Ok(Ended::Exited);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_signals_are_forwarded() {
        assert_eq!(
            forwarded_signal(libc::SIGTERM, false, true),
            Some(libc::SIGTERM)
        );
        assert_eq!(
            forwarded_signal(libc::SIGHUP, true, true),
            Some(libc::SIGHUP)
        );
        // Ctrl-C on a shared terminal already reached the process.
        assert_eq!(forwarded_signal(libc::SIGINT, true, true), None);
        assert_eq!(
            forwarded_signal(libc::SIGINT, false, true),
            Some(libc::SIGINT)
        );
        assert_eq!(
            forwarded_signal(libc::SIGINT, true, false),
            Some(libc::SIGINT)
        );
        assert_eq!(forwarded_signal(libc::SIGWINCH, false, false), None);
    }
}
