//! Supervising the running container (systemd-nspawn's run loop): the
//! console forwarded, signals turned into stop requests for PID 1,
//! sd_notify messages read, addresses watched, until PID 1 dies.
//!
//! A stop request's signal waits until PID 1 handles it. The kernel drops
//! a signal sent to a PID namespace's init that has no handler for it, so
//! a request that came while the image's init was still starting (before
//! busybox init or systemd installed their handlers) would be lost, and
//! the machine would run on until a second request killed it. The
//! supervisor keeps such a request pending and sends it once /proc shows
//! that PID 1 takes the signal (systemd-nspawn sends it once).

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
    let mut pending: Option<i32> = None;
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
        // (as_millis panics on NONE.)
        let pending_poll = PollTimeout::from(PENDING_STOP_POLL_MS);
        if pending.is_some() && (timeout.is_none() || timeout > pending_poll) {
            timeout = pending_poll;
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
        if let Some(sig) = pending {
            if handles(child, sig) {
                tracing::debug!("PID 1 now takes signal {sig}, sending the pending stop request");
                pending = None;
                // SAFETY: plain kill(2) with a validated signal number.
                unsafe { libc::kill(child.as_raw(), sig) };
            }
        }
    }
}

/// How often a pending stop request looks again whether PID 1 takes it.
const PENDING_STOP_POLL_MS: u16 = 20;

/// The stop requests received so far and the signal still waiting for
/// PID 1 to take it, if any.
struct Stop<'a> {
    requests: &'a mut u32,
    pending: &'a mut Option<i32>,
}

/// Whether a signal sent to the process now would reach it rather than be
/// dropped: it has a handler (`SigCgt` in /proc), it blocks the signal
/// (`SigBlk`: a signalfd reader such as systemd, or a signal it will take
/// later), or it sleeps in sigtimedwait(2), which busybox init waits in
/// (the kernel checks the mask saved by that call, which /proc does not
/// show; a waiter for other signals than ours is taken at its word). A
/// process we cannot read (it is gone) counts as reached: the signal then
/// goes out and does no harm.
fn handles(pid: Pid, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let (Some(caught), Some(blocked)) = (
        in_mask(&status, "SigCgt:", sig),
        in_mask(&status, "SigBlk:", sig),
    ) else {
        return true;
    };
    caught || blocked || in_sigtimedwait(pid)
}

/// Whether the process sleeps in rt_sigtimedwait(2) (/proc/PID/syscall
/// starts with the number of the call it is in).
fn in_sigtimedwait(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some(&libc::SYS_rt_sigtimedwait.to_string()))
}

/// Whether the mask on the /proc status line that starts with `key` has
/// the signal's bit; `None` when the line is absent or malformed.
fn in_mask(status: &str, key: &str, sig: i32) -> Option<bool> {
    let mask = status.lines().find_map(|l| l.strip_prefix(key))?;
    let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
    let bit = u32::try_from(sig).ok()?.checked_sub(1)?;
    Some(bit < 64 && mask & (1u64 << bit) != 0)
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
                if sig != libc::SIGKILL && !handles(child, sig) {
                    tracing::debug!("stop requested, signal {sig} waits until PID 1 takes it");
                    *stop.pending = Some(sig);
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

#[cfg(test)]
mod tests {
    use super::in_mask;

    #[test]
    fn the_signal_masks_are_read_bit_by_signal() {
        // SIGHUP (1), SIGUSR2 (12) and SIGRTMIN+3 (37) caught.
        let status = "Name:\tinit\nSigBlk:\t0000000000004000\nSigCgt:\t0000001000000801\n";
        let caught = |sig| in_mask(status, "SigCgt:", sig);
        assert_eq!(caught(libc::SIGHUP), Some(true));
        assert_eq!(caught(libc::SIGUSR2), Some(true));
        assert_eq!(caught(37), Some(true));
        assert_eq!(caught(libc::SIGTERM), Some(false));
        assert_eq!(caught(65), Some(false));
        assert_eq!(caught(0), None);
        // SIGTERM (15) blocked.
        assert_eq!(in_mask(status, "SigBlk:", libc::SIGTERM), Some(true));
        assert_eq!(in_mask(status, "SigBlk:", libc::SIGUSR2), Some(false));
        assert_eq!(in_mask("Name:\tx\n", "SigCgt:", libc::SIGTERM), None);
        assert_eq!(in_mask("SigCgt:\tzz\n", "SigCgt:", libc::SIGTERM), None);
    }
}
