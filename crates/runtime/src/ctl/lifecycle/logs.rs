//! `netspawnctl logs NAME [-f] [-n N] [--journal]`, and the log pump's main
//! (`netspawnctl log-pump NAME`, started by `start`, hidden from `--help`).
//!
//! Without `--journal`, `logs` prints the machine's console log (both
//! files, oldest first; `-n N` the last N lines) and with `-f` goes on
//! printing what the pump adds until the pump has gone, that is until the
//! machine has stopped. `--journal` runs the host's `journalctl -D` on the
//! guest's persistent journal, `/var/log/journal/MACHINE-ID` inside its root
//! (resolved inside the root, so an image's symlinks cannot point it at the
//! host's journal).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;

use netspawn_common::fsread;
use netspawn_common::names::check_machine_name;
use netspawn_common::paths::Paths;

use super::consolelog::{self, LogFiles};
use super::LifecycleError;
use crate::ctl::timefmt::{format_timestamp, now_usec};
use crate::ctl::{registry, CtlError};
use crate::rootdir::{fd_path, RootDir};

/// What `logs` was asked.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub name: String,
    /// `-f/--follow`.
    pub follow: bool,
    /// `-n/--lines=N`: only the last N lines (all without it).
    pub lines: Option<usize>,
    /// `--journal`: the guest's journal instead of the console log.
    pub journal: bool,
}

fn check_name(name: &str) -> Result<(), CtlError> {
    check_machine_name(name).map_err(|reason| CtlError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// `logs`.
pub fn logs(o: &LogsOptions) -> Result<i32, CtlError> {
    check_name(&o.name)?;
    if o.journal {
        return journal(o);
    }
    let files = LogFiles::new(&Paths::from_env().logs_dir(), &o.name);
    let snap = consolelog::read_all(&files)
        .map_err(LifecycleError::io("read the console log", &files.current))?
        .ok_or_else(|| LifecycleError::NoLog {
            name: o.name.clone(),
            path: files.current.clone(),
        })?;
    let shown = match o.lines {
        Some(n) => consolelog::last_lines(&snap.bytes, n),
        None => &snap.bytes,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(shown)?;
    out.flush()?;
    if o.follow {
        consolelog::follow(&files, snap.current, &mut out)?;
    }
    Ok(0)
}

/// `logs --journal`: execs `journalctl -D` on the guest's journal directory.
fn journal(o: &LogsOptions) -> Result<i32, CtlError> {
    let no = |reason: String| LifecycleError::NoJournal {
        name: o.name.clone(),
        reason,
    };
    let root = match registry().get(&o.name) {
        Ok(Some(e)) => e.root,
        _ => Paths::from_env().image_dir.join(&o.name),
    };
    let rootdir =
        RootDir::open(&root).map_err(|_| no(format!("there is no image at {}", root.display())))?;
    let id = rootdir
        .open_path(Path::new("/etc/machine-id"))
        .ok()
        .and_then(|fd| fsread::read_regular_fd(fd, 64).ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| s.len() == 32 && s.bytes().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| no(format!("{} has no valid /etc/machine-id", root.display())))?;
    let inside = format!("/var/log/journal/{id}");
    let dir = rootdir
        .open_path(Path::new(&inside))
        .ok()
        .filter(|fd| {
            nix::sys::stat::fstat(fd)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .unwrap_or(false)
        })
        .ok_or_else(|| no(format!("{} has no {inside}", root.display())))?;
    // journalctl opens the directory through our descriptor, which it inherits.
    nix::fcntl::fcntl(
        dir.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(|e| no(format!("pass its journal directory on: {e}")))?;
    let mut cmd = std::process::Command::new("journalctl");
    cmd.arg("-D").arg(fd_path(dir.as_fd()));
    if o.follow {
        cmd.arg("-f");
    }
    if let Some(n) = o.lines {
        cmd.arg(format!("--lines={n}"));
    }
    let err = cmd.exec();
    Err(match err.kind() {
        std::io::ErrorKind::NotFound => no("the host has no journalctl to read it with".into()),
        _ => LifecycleError::Spawn {
            what: "journalctl",
            path: "journalctl".into(),
            err,
        },
    }
    .into())
}

/// `log-pump NAME`: copies standard input into the machine's console log
/// until end-of-file. Standard error is the starter's pipe: an error goes
/// there, and once the log is held it is closed (pointed at `/dev/null`),
/// which tells `start` to go on. (`start` runs the same in a forked copy of
/// itself, [`pump_in`]; the command is kept for starters of their own.)
pub fn pump(name: &str, max_bytes: u64) -> Result<i32, CtlError> {
    check_name(name)?;
    pump_in(
        &Paths::from_env().logs_dir(),
        name,
        max_bytes,
        &pump_header(name),
    )
}

/// The line a pump starts the log with.
pub(crate) fn pump_header(name: &str) -> String {
    format!(
        "-- netspawnctl start {name}: {} --\n",
        format_timestamp(now_usec())
    )
}

/// [`pump`] with the log directory and the first line given: what a forked
/// pump runs. It takes no lock another thread of the process it was forked
/// from could have held (no standard stream of Rust's, no logging, no
/// local time: glibc's time zone lock is not reset at a fork, which is why
/// the caller makes `header`); it allocates, which glibc's malloc allows
/// after a fork.
pub(crate) fn pump_in(
    dir: &Path,
    name: &str,
    max_bytes: u64,
    header: &str,
) -> Result<i32, CtlError> {
    check_name(name)?;
    // Hang-ups and interrupts are not ours to act on: the launcher decides
    // when the output ends.
    for sig in [
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGINT,
    ] {
        // SAFETY: installing SIG_IGN, no handler code.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
    }
    std::fs::create_dir_all(dir).map_err(LifecycleError::io("make the log directory", dir))?;
    let files = LogFiles::new(dir, name);
    let mut w = consolelog::Writer::open(files.clone(), max_bytes)
        .map_err(LifecycleError::io("open", &files.current))?;
    w.write(header.as_bytes())
        .map_err(LifecycleError::io("write", &files.current))?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(LifecycleError::io("open", "/dev/null"))?;
    nix::unistd::dup2_stderr(null.as_fd())
        .map_err(|e| LifecycleError::io("redirect standard error to", "/dev/null")(e.into()))?;
    drop(null);
    // Standard input, read as a plain descriptor: not through Rust's
    // `stdin()`, whose lock a thread of a forking process may have held.
    // SAFETY: descriptor 0 is ours for the pump's life and is not closed
    // here (ManuallyDrop).
    let mut input = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(0)
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            // A full disk must not stop the machine's console: what cannot
            // be written is dropped, and reading goes on.
            Ok(n) => {
                let _ = w.write(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = w.finish();
    Ok(0)
}
