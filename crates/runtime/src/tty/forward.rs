//! The one forwarder between our terminal and a pty master, for the
//! launcher's console and netspawnctl's `shell`/`login`. It does not own a
//! loop: each caller polls its own descriptors (signals, a process's exit,
//! notifications) together with the forwarder's, which [`Forwarder::register`]
//! adds to the poll set and [`Forwarder::handle`] serves. Typed input is
//! buffered and written as the pty takes it; the escape (Ctrl-] ×3) is
//! checked on it and reported instead of forwarded.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::{EscapeDetector, TtyError};

/// Largest amount of typed-ahead input buffered for the pty.
const INPUT_BUFFER: usize = 64 * 1024;
/// How long to leave a hung-up pty alone before reading it again.
const VHANGUP_PAUSE: Duration = Duration::from_millis(100);

/// Options of a [`Forwarder`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardOptions {
    /// Keep going when the pty's terminal side is closed or hung up (a getty
    /// calls vhangup() and reopens it); only the caller decides when the
    /// session ends.
    pub ignore_vhangup: bool,
}

/// The user pressed the escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escaped;

/// Where [`Forwarder::register`] put its descriptors in the poll set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slots {
    input: Option<usize>,
    master: Option<usize>,
}

/// Forwards `input` (typed) to a pty master and the master's output to
/// `output`; either direction may be off.
pub struct Forwarder<'a> {
    master: BorrowedFd<'a>,
    input: Option<BorrowedFd<'a>>,
    output: Option<BorrowedFd<'a>>,
    opts: ForwardOptions,
    escape: EscapeDetector,
    pending: Vec<u8>,
    input_open: bool,
    master_ok: bool,
    paused_until: Option<Instant>,
    buf: Vec<u8>,
}

fn has(fd: &PollFd<'_>, flags: PollFlags) -> bool {
    fd.revents().is_some_and(|r| r.intersects(flags))
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), TtyError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(TtyError::Terminal)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(TtyError::Terminal)?;
    Ok(())
}

impl<'a> Forwarder<'a> {
    /// A forwarder for `master` (made non-blocking); `input` is forwarded to
    /// it and its output to `output` where given.
    pub fn new(
        master: BorrowedFd<'a>,
        input: Option<BorrowedFd<'a>>,
        output: Option<BorrowedFd<'a>>,
        opts: ForwardOptions,
    ) -> Result<Forwarder<'a>, TtyError> {
        set_nonblocking(master)?;
        Ok(Forwarder {
            master,
            input,
            output,
            opts,
            escape: EscapeDetector::default(),
            pending: Vec::new(),
            input_open: input.is_some(),
            master_ok: true,
            paused_until: None,
            buf: vec![0u8; 16 * 1024],
        })
    }

    /// Adds the descriptors to watch to `fds` and says where they are.
    pub fn register<'f>(&mut self, fds: &mut Vec<PollFd<'f>>) -> Slots
    where
        'a: 'f,
    {
        if self.paused_until.is_some_and(|t| Instant::now() >= t) {
            self.paused_until = None;
        }
        let mut slots = Slots::default();
        if let Some(input) = self.input {
            if self.input_open && self.pending.len() < INPUT_BUFFER {
                fds.push(PollFd::new(input, PollFlags::POLLIN));
                slots.input = Some(fds.len() - 1);
            }
        }
        if self.master_ok && self.paused_until.is_none() {
            let mut events = PollFlags::empty();
            if self.output.is_some() {
                events |= PollFlags::POLLIN;
            }
            if !self.pending.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            if !events.is_empty() {
                fds.push(PollFd::new(self.master, events));
                slots.master = Some(fds.len() - 1);
            }
        }
        slots
    }

    /// The poll timeout the forwarder needs: short while a hung-up pty rests.
    pub fn timeout(&self) -> PollTimeout {
        if self.paused_until.is_some() {
            PollTimeout::from(VHANGUP_PAUSE.as_millis() as u16)
        } else {
            PollTimeout::NONE
        }
    }

    /// Serves what poll reported on the forwarder's descriptors. Returns
    /// `Some(Escaped)` when the input held the escape (that input is not
    /// forwarded); an error only when our output cannot be written.
    pub fn handle(
        &mut self,
        fds: &[PollFd<'_>],
        slots: Slots,
    ) -> Result<Option<Escaped>, TtyError> {
        if let Some(i) = slots.input {
            if has(&fds[i], PollFlags::POLLIN | PollFlags::POLLHUP) && self.read_input() {
                return Ok(Some(Escaped));
            }
        }
        if let Some(i) = slots.master {
            if has(&fds[i], PollFlags::POLLOUT) && !self.pending.is_empty() {
                self.write_pending();
            }
            let hup = PollFlags::POLLHUP | PollFlags::POLLERR;
            if self.output.is_some() && has(&fds[i], PollFlags::POLLIN | hup) && !self.drain()? {
                // The terminal side is closed: a getty is reopening it, or
                // the process is about to exit.
                if self.opts.ignore_vhangup {
                    self.paused_until = Some(Instant::now() + VHANGUP_PAUSE);
                } else {
                    self.master_ok = false;
                }
            }
        }
        Ok(None)
    }

    /// Copies what is left in the pty to our output (the process has ended).
    pub fn finish(&mut self) {
        if self.master_ok && self.output.is_some() {
            let _ = self.drain();
        }
    }

    /// Reads typed input into the pending buffer; true on the escape.
    fn read_input(&mut self) -> bool {
        let Some(input) = self.input else {
            return false;
        };
        match nix::unistd::read(input, &mut self.buf) {
            Ok(0) => self.input_open = false,
            Ok(n) => {
                let data = &self.buf[..n];
                if self.escape.feed(data, Instant::now()) {
                    return true;
                }
                self.pending.extend_from_slice(data);
            }
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
            Err(_) => self.input_open = false,
        }
        false
    }

    /// Writes as much pending input as the pty takes.
    fn write_pending(&mut self) {
        match nix::unistd::write(self.master, &self.pending) {
            Ok(n) => {
                self.pending.drain(..n);
            }
            Err(nix::Error::EAGAIN | nix::Error::EINTR) => {}
            Err(_) => self.pending.clear(),
        }
    }

    /// Copies what the pty has to our output. Ok(false) when the pty reports
    /// that its terminal side is closed (EIO).
    fn drain(&mut self) -> Result<bool, TtyError> {
        let Some(output) = self.output else {
            return Ok(true);
        };
        loop {
            match nix::unistd::read(self.master, &mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => super::write_all(output, &self.buf[..n]).map_err(TtyError::Output)?,
                Err(nix::Error::EAGAIN) => return Ok(true),
                Err(nix::Error::EINTR) => continue,
                Err(_) => return Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::poll::poll;

    use super::super::open_pty;
    use super::*;

    /// Polls once and serves the forwarder.
    fn step(f: &mut Forwarder<'_>) -> Option<Escaped> {
        let mut fds = Vec::new();
        let slots = f.register(&mut fds);
        poll(&mut fds, PollTimeout::from(1000u16)).unwrap();
        f.handle(&fds, slots).unwrap()
    }

    #[test]
    fn input_reaches_the_pty_and_its_output_comes_back() {
        // "Our terminal" is a pipe pair; the pty's slave plays the process.
        let pty = open_pty().unwrap();
        let (in_r, in_w) = nix::unistd::pipe().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let mut raw = nix::sys::termios::tcgetattr(pty.slave.as_fd()).unwrap();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(pty.slave.as_fd(), nix::sys::termios::SetArg::TCSANOW, &raw)
            .unwrap();
        let mut f = Forwarder::new(
            pty.master.as_fd(),
            Some(in_r.as_fd()),
            Some(out_w.as_fd()),
            ForwardOptions::default(),
        )
        .unwrap();

        nix::unistd::write(&in_w, b"ping").unwrap();
        assert_eq!(step(&mut f), None); // read input
        assert_eq!(step(&mut f), None); // write it to the pty
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(&pty.slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");

        nix::unistd::write(&pty.slave, b"pong").unwrap();
        assert_eq!(step(&mut f), None);
        let n = nix::unistd::read(&out_r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");

        nix::unistd::write(&in_w, b"\x1d\x1d\x1d").unwrap();
        assert_eq!(step(&mut f), Some(Escaped));
    }
}
