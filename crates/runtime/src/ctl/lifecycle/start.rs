//! `netspawnctl start NAME…`: runs machines in the background the way
//! systemd's `systemd-nspawn@.service` runs systemd-nspawn, and returns once
//! each is registered.
//!
//! The launcher gets the unit's command line ([`launcher_args`]): booted,
//! with a veth, in a user namespace (`-U`: a machine started for a user is
//! a security boundary, issue 9), and the machine's `.nspawn` file over the
//! command line (`--settings=override`). systemd's `--link-journal=try-guest`
//! is left out: netspawn does not link journals (`logs --journal` reads the
//! guest's own).
//!
//! The launcher is detached: its own session and process group, standard
//! input `/dev/null`, working directory `/`, so nothing of netspawnctl's
//! terminal or lifetime reaches it. Its standard output and error (the
//! console, forwarded read-only, and its own messages) go through a pipe to
//! a log pump, a second detached process (a forked copy of netspawnctl
//! running what `netspawnctl log-pump NAME` runs, named `log-pump`), which
//! keeps them in the size-capped console log ([`super::consolelog`]). The
//! pump is started first and reports that it holds the log before the
//! launcher runs; it ends when the launcher (and the network keeper, which
//! lets go of the pipe at once) has closed it.
//!
//! A name that is invalid, running or has no image is refused before
//! anything is started. A launcher that exits before its machine is
//! registered, or is not registered within [`START_TIMEOUT`], is reported in
//! one line naming the log, and nothing is left running: the pump is waited
//! for, a launcher that overran is killed (its keeper undoes the rest).

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use netspawn_common::names::check_machine_name;
use netspawn_common::paths::Paths;
use netspawn_common::registry::Registry;

use super::consolelog::{self, LogFiles};
use super::logs;
use super::{enable, LifecycleError};
use crate::ctl::{registry, CtlError};

/// How long `start` waits for a machine to be registered.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the pump may take to open its log, and to finish after its
/// launcher failed.
const PUMP_TIMEOUT: Duration = Duration::from_secs(10);

/// The launcher's arguments for machine `name`: the `ExecStart=` of
/// systemd's `systemd-nspawn@.service` (`--quiet --keep-unit --boot
/// --link-journal=try-guest --network-veth -U --settings=override
/// --machine=%i`) without `--link-journal=`, which netspawn does not have.
/// `dist/netspawn@.service.in` runs the same.
pub fn launcher_args(name: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "--quiet",
        "--keep-unit",
        "--boot",
        "--network-veth",
        "-U",
        "--settings=override",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("--machine={name}"));
    v
}

/// The `netspawn` binary: the one next to netspawnctl, else `netspawn` on
/// the search path.
pub(crate) fn netspawn_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("netspawn")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("netspawn"))
}

/// What `start` was asked.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub names: Vec<String>,
    /// `--enabled`: every enabled machine that is not running.
    pub enabled: bool,
}

/// `start NAME…` / `start --enabled`. Every machine is attempted; each one
/// that fails is one line on stderr, and the status is 1 if any failed.
pub fn start(o: &StartOptions) -> Result<i32, CtlError> {
    let names: Vec<String> = if o.enabled {
        if !o.names.is_empty() {
            return Err(CtlError::Usage(
                "start --enabled starts the enabled machines: give it no names".into(),
            ));
        }
        let reg = registry();
        enable::enabled_names()?
            .into_iter()
            .filter(|n| !matches!(reg.get(n), Ok(Some(_))))
            .collect()
    } else if o.names.is_empty() {
        return Err(CtlError::Usage(
            "start needs machine names (or --enabled)".into(),
        ));
    } else {
        let mut seen = std::collections::HashSet::new();
        o.names
            .iter()
            .filter(|n| seen.insert(n.as_str()))
            .cloned()
            .collect()
    };
    let paths = Paths::from_env();
    let mut failures: Vec<CtlError> = Vec::new();
    let mut checked = Vec::new();
    for name in &names {
        match check(&paths, name) {
            Ok(()) => checked.push(name.as_str()),
            Err(e) => failures.push(e),
        }
    }
    let machines: Vec<(&str, Vec<String>)> =
        checked.iter().map(|n| (*n, launcher_args(n))).collect();
    let mut pending = Vec::new();
    for launched in launch_all(&paths, &machines, &[]) {
        match launched {
            Ok(p) => pending.push(p),
            Err(e) => failures.push(e.into()),
        }
    }
    failures.extend(
        wait_all(pending, START_TIMEOUT)
            .into_iter()
            .map(CtlError::from),
    );
    match failures.pop() {
        None => Ok(0),
        Some(last) => {
            for e in failures {
                eprintln!("netspawnctl: {e}");
            }
            Err(last)
        }
    }
}

/// A machine whose launcher runs and is not registered yet.
#[derive(Debug)]
pub(crate) struct Pending {
    name: String,
    launcher: Child,
    pump: Pump,
    log: LogFiles,
}

/// Checks that `name` may be started: a valid name, not running, an image.
fn check(paths: &Paths, name: &str) -> Result<(), CtlError> {
    check_machine_name(name).map_err(|reason| CtlError::InvalidName {
        name: name.to_string(),
        reason,
    })?;
    match crate::ctl::lookup(name) {
        Ok(_) => return Err(LifecycleError::AlreadyRunning(name.to_string()).into()),
        Err(CtlError::NoMachine(_)) => {}
        Err(e) => return Err(e),
    }
    if !paths.image_dir.join(name).is_dir() {
        return Err(LifecycleError::NoImage {
            name: name.to_string(),
            dir: paths.image_dir.clone(),
        }
        .into());
    }
    Ok(())
}

/// Starts the log pumps of the machines, then their launchers with their
/// arguments (and `env` added to ours), detached, as `start` does; the
/// machines are not registered yet. The checks are the caller's (`start`
/// and topology files make different ones).
///
/// One result per machine (name, launcher arguments), in their order.
/// Their log pumps start together and each launcher
/// once its pump holds the log: a pump is a process of its own that takes a
/// few milliseconds to come up, and a lab started one pump after the other
/// spent most of its launch time on them.
pub(crate) fn launch_all(
    paths: &Paths,
    machines: &[(&str, Vec<String>)],
    env: &[(String, String)],
) -> Vec<Result<Pending, LifecycleError>> {
    // The pipes are close-on-exec, and a pump (a fork, no exec) closes
    // every descriptor it does not need: a pump started later does not keep
    // an earlier pipe's write end open (that pump would never see its end).
    let starting: Vec<_> = machines
        .iter()
        .map(|(name, _)| {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
                LifecycleError::Pump {
                    name: name.to_string(),
                    msg: format!("make a pipe: {e}"),
                }
            })?;
            Ok((start_pump(name, r)?, w))
        })
        .collect();
    machines
        .iter()
        .zip(starting)
        .map(|((name, args), started)| {
            let (pump, w) = started?;
            let pump = pump.ready()?;
            let launcher = match spawn_launcher(args, env, w) {
                Ok(c) => c,
                Err(e) => {
                    // The pump sees end-of-file now that the pipe's last writer is gone.
                    finish(pump);
                    return Err(e);
                }
            };
            Ok(Pending {
                name: name.to_string(),
                launcher,
                pump,
                log: LogFiles::new(&paths.logs_dir(), name),
            })
        })
        .collect()
}

/// Makes the command's process a session (and process group) leader of
/// its own, away from our terminal and our process group's signals.
fn detach(cmd: &mut Command) {
    cmd.stdin(Stdio::null()).current_dir("/");
    // SAFETY: setsid(2) is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

/// A log pump's process: a forked copy of netspawnctl running
/// [`logs::pump_in`], not an exec of `netspawnctl log-pump` (the exec of this
/// binary, its dynamic loading and start-up cost about 2 ms of CPU per
/// machine, a sixth of the CPU of bringing a lab of 50 machines up).
#[derive(Debug)]
pub(crate) struct Pump {
    pid: nix::unistd::Pid,
}

impl Pump {
    pub(crate) fn id(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Whether it has ended (and is reaped); true too if it cannot be
    /// waited for.
    fn ended(&self) -> bool {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        !matches!(
            waitpid(self.pid, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    }

    fn kill(&self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// A log pump that has been started and may not hold its log yet.
struct PumpStart {
    name: String,
    pump: Pump,
    /// The read end of the pump's standard error.
    said: OwnedFd,
}

/// Starts the log pump reading `r`, detached (a session of its own, in
/// `/`, standard output `/dev/null`); [`PumpStart::ready`] waits until it
/// holds the log.
fn start_pump(name: &str, r: OwnedFd) -> Result<PumpStart, LifecycleError> {
    use nix::fcntl::OFlag;
    let dir = Paths::from_env().logs_dir();
    let max_bytes = consolelog::max_bytes_from_env();
    let header = logs::pump_header(name);
    // Every descriptor above 2 is closed in the child; where close_range(2)
    // is missing (Linux before 5.9) or refused, one by one up to this limit.
    let max_fd = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft.min(1 << 20) as i32);
    let fail = |e: nix::Error| LifecycleError::Spawn {
        what: "the log pump",
        path: "netspawnctl".into(),
        err: e.into(),
    };
    let (said, tell) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(fail)?;
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(fail)?;
    // SAFETY: the child sets up its descriptors with async-signal-safe calls
    // only, then runs `pump_in`, which takes no lock another thread of ours
    // could hold (see there), and leaves with _exit: none of our
    // destructors or buffered output runs twice.
    match unsafe { nix::unistd::fork() }.map_err(fail)? {
        nix::unistd::ForkResult::Child => unsafe {
            libc::setsid();
            let ok = libc::dup2(r.as_raw_fd(), 0) == 0
                && libc::dup2(null.as_raw_fd(), 1) == 1
                && libc::dup2(tell.as_raw_fd(), 2) == 2
                && libc::chdir(c"/".as_ptr()) == 0;
            if !ok {
                // Said on the ready pipe: end-of-file alone means ready.
                let line = b"netspawnctl: set up the log pump's descriptors\n";
                libc::write(tell.as_raw_fd(), line.as_ptr().cast(), line.len());
                libc::_exit(1);
            }
            // Nothing else of ours: another pump's pipe end kept open here
            // would keep that pump from ever seeing its end.
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                for fd in 3..max_fd {
                    libc::close(fd);
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            // What ps shows as its name (its command line is ours).
            libc::prctl(libc::PR_SET_NAME, c"log-pump".as_ptr());
            // A panic must not unwind into the parent's code (debug builds
            // unwind; release builds abort).
            let run =
                std::panic::AssertUnwindSafe(|| logs::pump_in(&dir, name, max_bytes, &header));
            let code = match std::panic::catch_unwind(run) {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let line = format!("netspawnctl: {e}\n");
                    libc::write(2, line.as_ptr().cast(), line.len());
                    1
                }
                Err(_) => 1,
            };
            libc::_exit(code)
        },
        nix::unistd::ForkResult::Parent { child } => Ok(PumpStart {
            name: name.to_string(),
            pump: Pump { pid: child },
            said,
        }),
    }
    // `r`, `tell` and `null` are closed here: the pump has its own copies.
}

impl PumpStart {
    /// Waits until the pump holds the log (it closes its standard error
    /// then; what it wrote there before is its error).
    fn ready(self) -> Result<Pump, LifecycleError> {
        let PumpStart { name, pump, said } = self;
        let said = read_to_eof(said, PUMP_TIMEOUT);
        let fail = |msg: String| LifecycleError::Pump { name, msg };
        match said {
            Some(text) if text.trim().is_empty() => Ok(pump),
            Some(text) => {
                finish(pump);
                let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                Err(fail(
                    line.trim_start_matches("netspawnctl: ").trim().to_string(),
                ))
            }
            None => {
                finish(pump);
                Err(fail(format!(
                    "still held by another writer after {} s",
                    PUMP_TIMEOUT.as_secs()
                )))
            }
        }
    }
}

/// Reads `fd` to its end; `None` if that takes longer than `timeout`.
fn read_to_eof(fd: OwnedFd, timeout: Duration) -> Option<String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = Instant::now() + timeout;
    let mut file = std::fs::File::from(fd);
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return Some(String::from_utf8_lossy(&text).into_owned()),
        }
        match file.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&text).into_owned()),
            Ok(n) if text.len() < 64 * 1024 => text.extend_from_slice(&buf[..n]),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Some(String::from_utf8_lossy(&text).into_owned()),
        }
    }
}

/// Starts the launcher with `args`, its output into `w`.
fn spawn_launcher(
    args: &[String],
    env: &[(String, String)],
    w: OwnedFd,
) -> Result<Child, LifecycleError> {
    let bin = netspawn_binary();
    let spawn_err = |err| LifecycleError::Spawn {
        what: "netspawn",
        path: bin.clone(),
        err,
    };
    let w2 = w.try_clone().map_err(spawn_err)?;
    let mut cmd = Command::new(&bin);
    cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    detach(&mut cmd);
    cmd.stdout(Stdio::from(w2))
        .stderr(Stdio::from(w))
        // Ours to answer, not the machine's: a netspawnctl run by a service
        // manager must not have the launcher report to it.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES");
    cmd.spawn().map_err(spawn_err)
    // `cmd` goes here, and with it our copies of the pipe's write end.
}

/// Waits for a pump that is about to end (its pipe closed); kills it if it
/// does not within [`PUMP_TIMEOUT`].
fn finish(pump: Pump) {
    let deadline = Instant::now() + PUMP_TIMEOUT;
    while Instant::now() < deadline {
        if pump.ended() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pump.kill();
}

/// Where a [`Pending`] machine is.
pub(crate) enum Progress {
    /// Registered by its launcher: the registry entry.
    Up(Box<netspawn_common::registry::Entry>),
    Waiting(Pending),
    Failed(LifecycleError),
}

impl Pending {
    /// The launcher's PID.
    pub(crate) fn launcher_pid(&self) -> u32 {
        self.launcher.id()
    }

    /// The log pump's PID: it ends once the launcher and its network keeper
    /// have let go of the console pipe, so after the machine's links are gone.
    pub(crate) fn pump_pid(&self) -> u32 {
        self.pump.id()
    }

    /// Registered, failed, or still on its way.
    pub(crate) fn poll(mut self, reg: &Registry) -> Progress {
        if let Ok(Some(e)) = reg.get(&self.name) {
            if e.launcher == self.launcher.id() {
                return Progress::Up(Box::new(e));
            }
        }
        match self.launcher.try_wait() {
            Ok(None) => Progress::Waiting(self),
            Ok(Some(status)) => Progress::Failed(self.failed(status)),
            Err(e) => Progress::Failed(LifecycleError::Failed {
                name: self.name.clone(),
                reason: format!("cannot wait for netspawn: {e}"),
                log: self.log.current.clone(),
            }),
        }
    }

    /// The launcher exited: the reason is its last message, once the pump
    /// has written everything.
    fn failed(self, status: ExitStatus) -> LifecycleError {
        finish(self.pump);
        let said = consolelog::read_all(&self.log)
            .ok()
            .flatten()
            .and_then(|s| {
                let last = consolelog::last_lines(&s.bytes, 1);
                let line = String::from_utf8_lossy(last).trim().to_string();
                line.strip_prefix("netspawn: ").map(str::to_string)
            });
        let reason = said.unwrap_or_else(|| match (status.code(), status.signal()) {
            (Some(c), _) => format!("netspawn exited with status {c}"),
            (None, Some(s)) => format!(
                "netspawn was killed by {}",
                crate::ctl::signal::signal_name(s)
            ),
            (None, None) => format!("netspawn ended: {status}"),
        });
        LifecycleError::Failed {
            name: self.name,
            reason,
            log: self.log.current,
        }
    }

    /// Not registered in time: the launcher is killed (its keeper undoes
    /// the links and the registry entry), and the pump ends with it.
    pub(crate) fn abort(mut self, timeout: Duration) -> LifecycleError {
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
        finish(self.pump);
        LifecycleError::Timeout {
            name: self.name,
            secs: timeout.as_secs(),
            log: self.log.current,
        }
    }
}

/// Waits until every machine is registered, has failed or has overrun.
fn wait_all(pending: Vec<Pending>, timeout: Duration) -> Vec<LifecycleError> {
    let deadline = Instant::now() + timeout;
    let reg = registry();
    let mut left = pending;
    let mut errors = Vec::new();
    while !left.is_empty() {
        let mut still = Vec::new();
        for p in left {
            match p.poll(&reg) {
                // The launcher and the pump go on without us.
                Progress::Up(_) => {}
                Progress::Failed(e) => errors.push(e),
                Progress::Waiting(p) if Instant::now() >= deadline => errors.push(p.abort(timeout)),
                Progress::Waiting(p) => still.push(p),
            }
        }
        left = still;
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_runs_what_systemd_nspawn_at_service_runs() {
        assert_eq!(
            launcher_args("web").join(" "),
            "--quiet --keep-unit --boot --network-veth -U --settings=override --machine=web"
        );
        // The shipped unit starts the same machine the same way.
        let unit = include_str!("../../../../../dist/netspawn@.service.in");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=@NETSPAWN@ "))
            .expect("ExecStart");
        assert_eq!(exec, launcher_args("%i").join(" "));
    }
}
