//! Forwarding our terminal to a pty in a machine (for `shell` and `login`):
//! raw mode while connected, window size kept in sync (SIGWINCH →
//! TIOCSWINSZ), Ctrl-] pressed three times within a second ends the session
//! (as with systemd-nspawn and machinectl), and the terminal is restored on
//! every way out. Also the signal plumbing shared with the non-pty case.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use thiserror::Error;

use super::enter::MachineProcess;

/// Errors while forwarding.
#[derive(Debug, Error)]
pub enum PtyError {
    #[error("{step}: {err}")]
    Sys { step: &'static str, err: nix::Error },
    #[error("write to the terminal: {0}")]
    Output(std::io::Error),
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> PtyError {
    move |err| PtyError::Sys { step, err }
}

/// The escape byte, Ctrl-].
const ESCAPE: u8 = 0x1d;
/// Presses needed, and the window they must fall in.
const ESCAPE_PRESSES: u32 = 3;
const ESCAPE_WINDOW: Duration = Duration::from_secs(1);

/// Recognises Ctrl-] pressed three times within one second (any other byte
/// in between starts over), as systemd's pty forwarder does.
#[derive(Debug, Default)]
pub struct EscapeDetector {
    count: u32,
    first: Option<Instant>,
}

impl EscapeDetector {
    /// Feeds input typed at `now`; true once the escape sequence is complete.
    pub fn feed(&mut self, input: &[u8], now: Instant) -> bool {
        for b in input {
            if *b != ESCAPE {
                self.count = 0;
                self.first = None;
                continue;
            }
            match self.first {
                Some(t) if now.duration_since(t) <= ESCAPE_WINDOW => self.count += 1,
                _ => {
                    self.first = Some(now);
                    self.count = 1;
                }
            }
            if self.count >= ESCAPE_PRESSES {
                return true;
            }
        }
        false
    }
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

/// Puts a terminal in raw mode and restores it when dropped.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> Result<RawMode<'a>, PtyError> {
        let saved = termios::tcgetattr(fd).map_err(sys("read terminal settings"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(sys("set raw mode"))?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a pointer to a local winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// How a forwarding session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The process in the machine exited.
    Exited,
    /// The user pressed Ctrl-] three times.
    Escaped,
}

/// Options for [`forward`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardOptions {
    /// Keep going when the pty's terminal side is closed or hung up (a getty
    /// calls vhangup() and reopens it); only the process's exit ends the session.
    pub ignore_vhangup: bool,
}

/// Largest amount of typed-ahead input buffered for the machine.
const INPUT_BUFFER: usize = 64 * 1024;

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), PtyError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(sys("read pty flags"))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(sys("make the pty non-blocking"))?;
    Ok(())
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
    set_nonblocking(master)?;
    copy_window_size(output, master);
    let _raw = RawMode::enter(input)?;

    let mut escape = EscapeDetector::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut input_open = true;
    let mut master_ok = true;
    let mut paused_until: Option<Instant> = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = stdout.lock();
    loop {
        if let Some(t) = paused_until {
            if Instant::now() >= t {
                paused_until = None;
            }
        }
        let master_active = master_ok && paused_until.is_none();
        let mut master_events = PollFlags::empty();
        if master_active {
            master_events |= PollFlags::POLLIN;
            if !pending.is_empty() {
                master_events |= PollFlags::POLLOUT;
            }
        }
        let want_input = input_open && pending.len() < INPUT_BUFFER;
        let mut fds = [
            PollFd::new(proc.exit_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(
                input,
                if want_input {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                },
            ),
            PollFd::new(master, master_events),
        ];
        let timeout = if paused_until.is_some() {
            PollTimeout::from(100u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(sys("poll")(e)),
            Ok(_) => {}
        }
        let exited = has(&fds[0], PollFlags::POLLIN);
        let signalled = has(&fds[1], PollFlags::POLLIN);
        let typed = has(&fds[2], PollFlags::POLLIN | PollFlags::POLLHUP);
        let master_in = has(&fds[3], PollFlags::POLLIN);
        let master_out = has(&fds[3], PollFlags::POLLOUT);
        let master_hup = has(&fds[3], PollFlags::POLLHUP | PollFlags::POLLERR);

        if signalled {
            while let Ok(Some(si)) = sigfd.read_signal() {
                let signo = si.ssi_signo as i32;
                if signo == libc::SIGWINCH {
                    copy_window_size(output, master);
                } else if let Some(s) =
                    forwarded_signal(signo, si.ssi_code == libc::SI_KERNEL, false)
                {
                    let _ = proc.signal(s);
                }
            }
        }
        if typed {
            // SAFETY: read(2) into our buffer from our stdin.
            let n = unsafe { libc::read(input.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => input_open = false,
                n if n > 0 => {
                    let data = &buf[..n as usize];
                    if escape.feed(data, Instant::now()) {
                        return Ok(Ended::Escaped);
                    }
                    pending.extend_from_slice(data);
                }
                _ => match nix::Error::last() {
                    nix::Error::EINTR | nix::Error::EAGAIN => {}
                    _ => input_open = false,
                },
            }
        }
        if master_out && !pending.is_empty() {
            match nix::unistd::write(master, &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {}
                Err(_) => pending.clear(),
            }
        }
        if master_in || master_hup {
            match drain(master, &mut buf, &mut out) {
                Ok(true) => {}
                Ok(false) => {
                    // The terminal side is closed: a getty is reopening it, or
                    // the process is about to exit.
                    if opts.ignore_vhangup {
                        paused_until = Some(Instant::now() + Duration::from_millis(100));
                    } else {
                        master_ok = false;
                    }
                }
                Err(e) => return Err(PtyError::Output(e)),
            }
        }
        if exited {
            if master_ok {
                let _ = drain(master, &mut buf, &mut out);
            }
            return Ok(Ended::Exited);
        }
    }
}

/// Copies what the pty has to our stdout. Ok(false) when the pty reports
/// that its terminal side is closed (EIO).
fn drain(master: BorrowedFd<'_>, buf: &mut [u8], out: &mut impl Write) -> std::io::Result<bool> {
    loop {
        match nix::unistd::read(master, buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
            }
            Err(nix::Error::EAGAIN) => return Ok(true),
            Err(nix::Error::EINTR) => continue,
            Err(_) => return Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_escapes_within_a_second() {
        let t0 = Instant::now();
        let mut d = EscapeDetector::default();
        assert!(!d.feed(b"ls\r\x1d", t0));
        assert!(!d.feed(b"\x1d", t0 + Duration::from_millis(300)));
        assert!(d.feed(b"\x1d", t0 + Duration::from_millis(900)));

        let mut d = EscapeDetector::default();
        assert!(d.feed(b"\x1d\x1d\x1d", t0));

        // Too slow: the window restarts.
        let mut d = EscapeDetector::default();
        assert!(!d.feed(b"\x1d\x1d", t0));
        assert!(!d.feed(b"\x1d", t0 + Duration::from_millis(1500)));
        assert!(!d.feed(b"\x1d", t0 + Duration::from_millis(1600)));
        assert!(d.feed(b"\x1d", t0 + Duration::from_millis(1700)));

        // Anything else in between starts over.
        let mut d = EscapeDetector::default();
        assert!(!d.feed(b"\x1d\x1dx\x1d", t0));
    }

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
