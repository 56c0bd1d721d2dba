//! The holder: a small process per attachment that stands where a launcher
//! stands for a netspawn machine. It claims the attachment's name (the
//! name lock netd reads to know which machines run, so the lease is a
//! machine's), owns the registry entry (its PID is the entry's launcher, so
//! netd's DNS and the NSS module treat the entry as live while it runs) and
//! removes the entry when DEL or GC stops it. A CNI plugin must exit after
//! each command; this is what outlives it. It holds no namespace and no
//! descriptor of the container. It looks for the attachment's host link
//! every few seconds and goes (removing the entry) when the link has: a
//! runtime that deleted the container's network namespace without DEL (it
//! crashed) leaves no live name behind, only the record, which its next DEL
//! or GC removes.
//!
//! Protocol with the plugin, over the holder's stdin and stdout: the holder
//! prints `CLAIMED` (or `ERR message`); the plugin writes the registry
//! entry and closes stdin; the holder writes it and prints `OK`. If stdin
//! closes empty (the ADD failed), the holder exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use netspawn_common::paths::Paths;
use netspawn_common::registry::{process_start_time, Entry, Registry};
use nix::sys::signal::{SigSet, Signal};

use crate::spec::{CniError, Code};

/// The hidden first argument that makes `netspawn-cni` a holder.
pub const HOLD_ARG: &str = "--netspawn-cni-hold";
/// The hidden first argument that makes `netspawn-cni` remove an empty
/// zone bridge in the background.
pub const LEAVE_ARG: &str = "--netspawn-cni-leave-zone";

/// Starts a detached process (its own session, no descriptor of ours) that
/// removes `vz-ZONE` if it is still empty when it holds the zone lock.
pub fn leave_zone_later(zone: &str) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut c = std::process::Command::new(exe);
    c.arg(LEAVE_ARG)
        .arg(zone)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if let Ok(child) = c.spawn() {
        // Reparented when we exit; nothing to wait for.
        std::mem::forget(child);
    }
}

/// A holder started by this ADD.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
    pub start: u64,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(Code::Io, format!("{what}: {e}"))
}

impl Holder {
    /// Starts a holder that claims `name` and, once registered, lives as
    /// long as the host link `host_ifname`. A name a running machine (or
    /// another attachment) has is refused with code 4: the name comes from
    /// `CNI_ARGS`.
    pub fn start(name: &str, host_ifname: &str) -> Result<Holder, CniError> {
        let exe = std::env::current_exe().map_err(|e| io_err("find our own binary", e))?;
        let mut child = std::process::Command::new(exe)
            .arg(HOLD_ARG)
            .arg(name)
            .arg(host_ifname)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io_err("start the attachment's holder", e))?;
        let pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stdin = child.stdin.take();
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let line = line.trim_end();
        if line != "CLAIMED" {
            let _ = child.kill();
            let _ = child.wait();
            let msg = line.strip_prefix("ERR ").unwrap_or(line);
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("name {name:?} (CNI_ARGS K8S_POD_NAME or the container ID): {msg}"),
            ));
        }
        Ok(Holder {
            child,
            stdin,
            stdout,
            pid,
            start: process_start_time(pid).unwrap_or(0),
        })
    }

    /// Hands the holder the registry entry to write and lets it go.
    pub fn register(mut self, entry: &Entry) -> Result<(), CniError> {
        let mut stdin = self.stdin.take().expect("stdin until register");
        stdin
            .write_all(entry.format().as_bytes())
            .map_err(|e| io_err("hand the registry entry to the holder", e))?;
        drop(stdin);
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        if line.trim_end() != "OK" {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Err(io_err(
                "the holder could not write the registry entry",
                line.trim_end().strip_prefix("ERR ").unwrap_or("it exited"),
            ));
        }
        // The holder lives on alone; it is reparented when we exit.
        std::mem::forget(self.child);
        Ok(())
    }

    /// Stops a holder that was never handed an entry (a failed ADD).
    pub fn abort(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Stops the holder `pid` started at `start` (SIGTERM, then SIGKILL after
/// 10 s) and waits until it is gone; gone already is fine.
pub fn stop(pid: u32, start: u64) {
    if pid == 0 || process_start_time(pid) != Some(start) {
        return;
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_start_time(pid) == Some(start) {
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Whether the holder `pid` started at `start` still runs.
pub fn alive(pid: u32, start: u64) -> bool {
    pid != 0 && process_start_time(pid) == Some(start)
}

/// How often the holder looks for its host link. Link events would wake
/// every holder on every ADD and DEL (work growing with the number of
/// attachments); a look by name (`if_nametoindex`, one ioctl) every few
/// seconds costs nothing on the ADD path.
const LINK_CHECK: u16 = 2000;

/// Whether the link `name` exists in our network namespace (true when that
/// cannot be told).
fn link_exists(name: &str) -> bool {
    match nix::net::if_::if_nametoindex(name) {
        Ok(_) => true,
        Err(e) => e != nix::errno::Errno::ENODEV,
    }
}

/// Waits for one of `signals` (blocked) or for the link `host_ifname` to go.
fn wait(signals: &SigSet, host_ifname: &str) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let Ok(sfd) = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC) else {
        let _ = signals.wait();
        return;
    };
    loop {
        if !link_exists(host_ifname) {
            return;
        }
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(LINK_CHECK)) {
            Ok(n) if n > 0 => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                let _ = signals.wait();
                return;
            }
        }
    }
}

/// The holder process: see the module comment. Returns the exit status.
pub fn run(name: &str, host_ifname: &str) -> i32 {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    let _ = signals.thread_block();
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    let paths = Paths::from_env();
    let reg = Registry::new(&paths);
    let mut out = std::io::stdout();
    let claim = match reg.claim(name) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "ERR {e}");
            return 1;
        }
    };
    if writeln!(out, "CLAIMED").and_then(|()| out.flush()).is_err() {
        return 1;
    }
    let mut text = String::new();
    let _ = std::io::stdin()
        .take(netspawn_common::registry::MAX_ENTRY_SIZE as u64)
        .read_to_string(&mut text);
    if text.is_empty() {
        return 0;
    }
    let mut entry = match Entry::parse(&text) {
        Ok(e) if e.name == name => e,
        _ => {
            let _ = writeln!(out, "ERR bad registry entry");
            return 1;
        }
    };
    let me = std::process::id();
    entry.launcher = me;
    entry.leader = me;
    entry.launcher_start = process_start_time(me).unwrap_or(0);
    if let Err(e) = reg.write(&claim, &entry) {
        let _ = writeln!(out, "ERR {e}");
        return 1;
    }
    let _ = writeln!(out, "OK");
    let _ = out.flush();
    // Nothing of the plugin's stays open: the runtime reads the plugin's
    // stdout to its end.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which we own.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    wait(&signals, host_ifname);
    let _ = reg.remove(&claim, name);
    0
}
