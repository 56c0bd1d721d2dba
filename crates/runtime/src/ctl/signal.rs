//! Signals to machines: signal-name parsing, and the `poweroff`, `reboot`,
//! `terminate` and `kill` verbs, with the signals machined uses for them.

use std::time::Duration;

use netspawn_common::registry::Entry;

use super::{procfs, CtlError};

/// Whom `kill` signals (machinectl's `--kill-whom=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillWhom {
    /// Only the machine's PID 1.
    Leader,
    /// Every process in the machine's PID namespace.
    All,
}

impl std::str::FromStr for KillWhom {
    type Err = CtlError;
    fn from_str(s: &str) -> Result<KillWhom, CtlError> {
        match s {
            "leader" => Ok(KillWhom::Leader),
            "all" => Ok(KillWhom::All),
            _ => Err(CtlError::Usage(format!(
                "Invalid --kill-whom= value '{s}': expected 'leader' or 'all'"
            ))),
        }
    }
}

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// `SIGRTMIN` as the C library defines it (glibc reserves the first few).
pub fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}

/// `SIGRTMAX`.
pub fn sigrtmax() -> i32 {
    libc::SIGRTMAX()
}

/// Parses a signal as `kill --signal=` takes it: a number, a name with or
/// without "SIG" (any case), or `RTMIN+N` / `RTMAX-N`.
pub fn parse_signal(s: &str) -> Result<i32, CtlError> {
    let bad = || CtlError::Usage(format!("Unknown signal '{s}'"));
    let (min, max) = (sigrtmin(), sigrtmax());
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=max).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = NAMES.iter().find(|(n, _)| *n == name) {
        return Ok(*n);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Result<i32, CtlError> {
        let off: i32 = rest.parse().map_err(|_| bad())?;
        let n = base + sign * off;
        if (min..=max).contains(&n) && off >= 0 {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return match rest.strip_prefix('+') {
            Some(r) => rt(min, r, 1),
            None if rest.is_empty() => Ok(min),
            None => Err(bad()),
        };
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return match rest.strip_prefix('-') {
            Some(r) => rt(max, r, -1),
            None if rest.is_empty() => Ok(max),
            None => Err(bad()),
        };
    }
    Err(bad())
}

/// Sends `sig` to one process (host PID). A process that is already gone
/// counts as signalled.
pub fn send(pid: u32, sig: i32) -> Result<(), CtlError> {
    let Ok(p) = i32::try_from(pid) else {
        return Err(CtlError::Signal {
            pid,
            sig,
            err: nix::Error::ESRCH,
        });
    };
    if p <= 0 {
        return Err(CtlError::Signal {
            pid,
            sig,
            err: nix::Error::ESRCH,
        });
    }
    // SAFETY: kill(2) with a positive PID and a plain signal number.
    let r = unsafe { libc::kill(p, sig) };
    if r == 0 {
        return Ok(());
    }
    match nix::Error::last() {
        nix::Error::ESRCH => Ok(()),
        err => Err(CtlError::Signal { pid, sig, err }),
    }
}

/// How long `poweroff` and `reboot` wait, at most, for a machine's PID 1 to
/// take their signal, counted from its start: an init that is still
/// starting (systemd, before it blocks the signals it takes) would have it
/// dropped by the kernel.
const YOUNG_LEADER: Duration = Duration::from_secs(5);
/// How often the wait looks again.
const TAKE_POLL: Duration = Duration::from_millis(20);
/// How many looks an old PID 1 gets before it is said not to take the
/// signal (one look may fall between its wake-up and its next wait).
const OLD_LOOKS: u32 = 3;

/// Sends a shutdown or reboot signal to a machine's PID 1 once it takes it
/// ([`crate::sys::takes_signal`]), waiting while PID 1 is younger than
/// [`YOUNG_LEADER`]. Returns whether PID 1 took it (or is gone): `false`
/// means it was sent to a PID 1 that neither handles nor blocks it, which
/// drops it. The process is told from one that took its PID meanwhile by
/// its start time.
pub fn send_when_taken(leader: u32, sig: i32) -> Result<bool, CtlError> {
    let start = netspawn_common::registry::process_start_time(leader);
    let (Ok(pid), Some(start)) = (i32::try_from(leader), start) else {
        // Not a process we can look at (gone, or no PID): as before.
        return send(leader, sig).map(|()| true);
    };
    let same = || netspawn_common::registry::process_start_time(leader) == Some(start);
    let mut old_looks = 0;
    loop {
        if !same() {
            return Ok(true);
        }
        if crate::sys::takes_signal(pid, sig) {
            return send(leader, sig).map(|()| true);
        }
        if age(start).is_none_or(|a| a >= YOUNG_LEADER) {
            old_looks += 1;
            if old_looks >= OLD_LOOKS {
                return send(leader, sig).map(|()| !same());
            }
        }
        std::thread::sleep(TAKE_POLL);
    }
}

/// How long a process that started at `start` (clock ticks since boot, as
/// in /proc/PID/stat) has been running, against /proc/uptime; `None` when
/// that cannot be read.
fn age(start: u64) -> Option<Duration> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf(3) only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        (uptime - start as f64 / hz as f64).max(0.0),
    ))
}

/// Sends `sig` to the leader or to every process of the machine.
pub fn kill_machine(entry: &Entry, whom: KillWhom, sig: i32) -> Result<(), CtlError> {
    match whom {
        KillWhom::Leader => send(entry.leader, sig),
        KillWhom::All => {
            // A leader in our own PID namespace (a registry entry of a process
            // that is not a container's init) would make "all" mean every
            // process of the host.
            let ours = procfs::namespace_id("self", "pid");
            if ours.is_some() && procfs::namespace_id(&entry.leader.to_string(), "pid") == ours {
                return Err(CtlError::Usage(format!(
                    "machine '{}' has no PID namespace of its own (leader {} runs in the host's): \
                     refusing to signal all of its processes",
                    entry.name, entry.leader
                )));
            }
            let mut pids = procfs::processes_in_pid_namespace(entry.leader);
            if pids.is_empty() {
                // The namespace walk found nothing (leader just exited?): at
                // least try the leader so the caller gets a real answer.
                pids.push(entry.leader);
            }
            let mut first_err = None;
            for pid in pids {
                if let Err(e) = send(pid, sig) {
                    first_err.get_or_insert(e);
                }
            }
            first_err.map_or(Ok(()), Err)
        }
    }
}

/// The signal `poweroff` sends to a machine's leader: SIGRTMIN+4 (systemd's
/// "poweroff") to a booted init, or SIGUSR2 if that init is busybox (which
/// ignores SIGRTMIN+4 and powers off on SIGUSR2); SIGTERM to a plain
/// payload, which has no init to interpret either.
pub fn poweroff_signal(entry: &Entry) -> i32 {
    if !entry.boot {
        libc::SIGTERM
    } else if leader_is_busybox(entry.leader) {
        libc::SIGUSR2
    } else {
        sigrtmin() + 4
    }
}

/// True if the machine's PID 1 runs the busybox binary.
fn leader_is_busybox(leader: u32) -> bool {
    std::fs::read_link(format!("/proc/{leader}/exe"))
        .map(|p| p.file_name().is_some_and(|n| n == "busybox"))
        .unwrap_or(false)
}

/// The signal `reboot` sends to a machine's leader: SIGINT, which systemd and
/// sysvinit/busybox init treat as ctrl-alt-del (reboot).
pub const REBOOT_SIGNAL: i32 = libc::SIGINT;

/// Human name of a signal ("SIGTERM", "SIGRTMIN+4"), for messages.
pub fn signal_name(sig: i32) -> String {
    if let Some((n, _)) = NAMES.iter().find(|(_, v)| *v == sig) {
        return format!("SIG{n}");
    }
    let min = sigrtmin();
    if sig >= min && sig <= sigrtmax() {
        return format!("SIGRTMIN+{}", sig - min);
    }
    sig.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_realtime() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigint").unwrap(), libc::SIGINT);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("RTMIN+4").unwrap(), sigrtmin() + 4);
        assert_eq!(parse_signal("SIGRTMIN").unwrap(), sigrtmin());
        assert_eq!(parse_signal("RTMAX-1").unwrap(), sigrtmax() - 1);
        for bad in [
            "", "0", "-1", "999", "NOPE", "RTMIN+", "RTMIN+99", "RTMIN-1", "RTMAX+1", "SIG",
        ] {
            assert!(parse_signal(bad).is_err(), "{bad:?}");
        }
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(sigrtmin() + 4), "SIGRTMIN+4");
    }

    #[test]
    fn kill_whom_and_power_signals() {
        assert_eq!("all".parse::<KillWhom>().unwrap(), KillWhom::All);
        assert_eq!("leader".parse::<KillWhom>().unwrap(), KillWhom::Leader);
        assert!("everyone".parse::<KillWhom>().is_err());
        let mut e = Entry::default();
        assert_eq!(poweroff_signal(&e), libc::SIGTERM);
        e.boot = true;
        assert_eq!(poweroff_signal(&e), sigrtmin() + 4);
    }

    #[test]
    fn gone_process_counts_as_signalled() {
        // PID_MAX_LIMIT is 2^22: this PID cannot exist.
        assert!(send(1 << 23, 0).is_ok());
        assert!(send(0, libc::SIGTERM).is_err());
    }
}
