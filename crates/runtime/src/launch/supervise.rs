//! Supervising the running container (systemd-nspawn's run loop): the
//! console forwarded, signals turned into stop requests for PID 1,
//! sd_notify messages read, addresses watched, until PID 1 dies.
//!
//! A stop request's signal waits until PID 1 takes it. The kernel drops a
//! signal sent to a PID namespace's init that neither handles nor blocks
//! it, so a request that came while the image's init was still starting
//! (systemd before it blocks the signals it reads from a signalfd) would be
//! lost, and the machine would run on until a second request killed it.
//! The supervisor keeps such a request pending and sends it once /proc
//! shows that PID 1 takes the signal, looking every 20 ms for 5 s, then
//! every 250 ms (systemd-nspawn sends it once).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{LaunchError, Outcome};
use crate::config::Config;
use crate::console::ConsoleMode;
use crate::network;
use crate::tty::{self, Escaped, ForwardOptions, Forwarder, Pty};

/// Forwards the console and signals until PID 1 dies.
pub(super) fn supervise(
    cfg: &Config,
    child: Pid,
    pty: Option<&Pty>,
    sigfd: &SignalFd,
    notify: &OwnedFd,
    mut watch: Option<&mut network::addrs::AddressWatch>,
    on_change: &mut dyn FnMut(crate::ready::Change),
) -> Result<Outcome, LaunchError> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let forward_in = cfg.console.forwards_input();
    let mut console = console_forwarder(cfg.console, pty, stdin.as_fd(), stdout.as_fd())?;
    let mut stop_requests = 0;
    let mut pending: Option<Pending> = None;
    loop {
        let mut fds = vec![
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(notify.as_fd(), PollFlags::POLLIN),
        ];
        let watch_idx = watch.as_ref().map(|w| {
            // SAFETY: the watch outlives this loop iteration; the borrow is
            // detached so the watch can be used mutably once poll returns.
            let fd = unsafe { BorrowedFd::borrow_raw(w.fd().as_raw_fd()) };
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            fds.len() - 1
        });
        let slots = console
            .as_mut()
            .map(|c| c.register(&mut fds))
            .unwrap_or_default();
        let mut timeout = console.as_ref().map_or(PollTimeout::NONE, |c| c.timeout());
        if let Some(p) = &pending {
            let pending_poll = p.poll();
            if timeout.is_none() || timeout > pending_poll {
                timeout = pending_poll;
            }
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                return Err(LaunchError::Sys {
                    what: "poll",
                    err: e,
                })
            }
        }
        let ready = |i: usize, fds: &[PollFd]| fds[i].revents().is_some_and(|r| !r.is_empty());
        if let Some(c) = console.as_mut() {
            match c.handle(&fds, slots) {
                Ok(Some(Escaped)) => {
                    eprint!("\r\nContainer {} terminated by user.\r\n", cfg.machine);
                    let _ = kill(child, Signal::SIGKILL);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("console: {e}"),
            }
        }
        if ready(1, &fds) && crate::ready::read_notifications(notify.as_fd(), &cfg.machine) {
            on_change(crate::ready::Change::Ready);
        }
        if let (Some(i), Some(w)) = (watch_idx, watch.as_deref_mut()) {
            if ready(i, &fds) {
                w.drain();
                if let Ok(a) = w.addresses() {
                    on_change(crate::ready::Change::Addresses(a));
                }
            }
        }
        if ready(0, &fds) {
            let stop = Stop {
                requests: &mut stop_requests,
                pending: &mut pending,
            };
            handle_signals(cfg, child, sigfd, pty, forward_in, stop);
            if let Some(outcome) = reaped(child) {
                return Ok(finish(console.as_mut(), outcome));
            }
        }
        if let Some(Pending { sig, .. }) = pending {
            if crate::sys::takes_signal(child.as_raw(), sig) {
                tracing::debug!("PID 1 now takes signal {sig}, sending the pending stop request");
                pending = None;
                // SAFETY: plain kill(2) with a validated signal number.
                unsafe { libc::kill(child.as_raw(), sig) };
            }
        }
    }
}

/// A stop request's signal that PID 1 does not take yet, and since when.
#[derive(Clone, Copy)]
struct Pending {
    sig: i32,
    since: std::time::Instant,
}

impl Pending {
    /// How long until the next look whether PID 1 takes the signal: often
    /// while an init may still be starting, then seldom (a PID 1 that never
    /// takes it waits for a second request, which kills it).
    fn poll(&self) -> PollTimeout {
        match self.since.elapsed() < PENDING_STOP_OFTEN {
            true => PollTimeout::from(20u16),
            false => PollTimeout::from(250u16),
        }
    }
}

/// How long a pending stop request looks often.
const PENDING_STOP_OFTEN: std::time::Duration = std::time::Duration::from_secs(5);

/// The stop requests received so far and the signal still waiting for
/// PID 1 to take it, if any.
struct Stop<'a> {
    requests: &'a mut u32,
    pending: &'a mut Option<Pending>,
}

/// The forwarder between our terminal and the console's pty, when the
/// console mode forwards anything; the window size is set first.
fn console_forwarder<'a>(
    mode: ConsoleMode,
    pty: Option<&'a Pty>,
    stdin: BorrowedFd<'a>,
    stdout: BorrowedFd<'a>,
) -> Result<Option<Forwarder<'a>>, LaunchError> {
    let Some(p) = pty else {
        return Ok(None);
    };
    let (forward_in, forward_out) = (mode.forwards_input(), mode.forwards_output());
    if forward_in {
        tty::copy_window_size(stdin, p.master.as_fd());
    }
    if !forward_in && !forward_out {
        return Ok(None);
    }
    // A booted guest's getty hangs the console up and reopens it.
    let opts = ForwardOptions {
        ignore_vhangup: true,
    };
    let input = forward_in.then_some(stdin);
    let output = forward_out.then_some(stdout);
    Ok(Some(Forwarder::new(p.master.as_fd(), input, output, opts)?))
}

/// Reads the signals we received: SIGWINCH resizes the console; a stop
/// request sends the kill signal to PID 1 (SIGKILL from the second on),
/// or leaves it pending while PID 1 would not take it.
fn handle_signals(
    cfg: &Config,
    child: Pid,
    sigfd: &SignalFd,
    pty: Option<&Pty>,
    forward_in: bool,
    stop: Stop<'_>,
) {
    while let Ok(Some(info)) = sigfd.read_signal() {
        let signo = info.ssi_signo as i32;
        match Signal::try_from(signo) {
            Ok(Signal::SIGCHLD) => {}
            Ok(Signal::SIGWINCH) => {
                if let (Some(p), true) = (pty, forward_in) {
                    tty::copy_window_size(std::io::stdin().as_fd(), p.master.as_fd());
                }
            }
            Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT) => {
                *stop.requests += 1;
                let sig = match cfg.kill_signal {
                    Some(s) if *stop.requests == 1 => s,
                    _ => libc::SIGKILL,
                };
                *stop.pending = None;
                if sig != libc::SIGKILL && !crate::sys::takes_signal(child.as_raw(), sig) {
                    tracing::debug!("stop requested, signal {sig} waits until PID 1 takes it");
                    *stop.pending = Some(Pending {
                        sig,
                        since: std::time::Instant::now(),
                    });
                    continue;
                }
                tracing::debug!("stop requested, sending signal {sig} to PID 1");
                // SAFETY: plain kill(2) with a validated signal number.
                unsafe { libc::kill(child.as_raw(), sig) };
            }
            _ => {}
        }
    }
}

/// How PID 1 ended, once it has.
fn reaped(child: Pid) -> Option<Outcome> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(Outcome::Exited(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(Outcome::Killed(sig as i32)),
        _ => None,
    }
}

/// Copies what the container left in the pty to our output.
fn finish(console: Option<&mut Forwarder<'_>>, outcome: Outcome) -> Outcome {
    tracing::debug!(?outcome, "container PID 1 exited");
    if let Some(c) = console {
        c.finish();
    }
    let _ = std::io::stdout().flush();
    outcome
}
