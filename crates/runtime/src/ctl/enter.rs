//! Entering a running machine: a process that joins the machine's cgroups and
//! namespaces, its root, its capability bounding set and a user of the
//! machine, as `machinectl shell` gets from machined, and as later features
//! (copy-to/copy-from, bind, reading the machine's addresses) will reuse.
//!
//! Shape: netspawnctl forks a helper that joins the machine's cgroups (while it
//! still sees the host's /sys), then `setns()`s into every namespace of the
//! leader that differs from ours (the user namespace last, as systemd does),
//! `chroot`s into the leader's root and drops the bounding set to the
//! leader's. Joining a PID namespace only affects children, so the helper then
//! forks the real process, which optionally takes a new pty from the
//! machine's own `/dev/ptmx` as its controlling terminal, takes the payload's
//! no_new_privs and system call filter (rebuilt from the registry entry),
//! switches credentials, and runs the payload.
//!
//! Nothing of the host is shown to the machine: the caller runs from a sealed
//! copy of netspawnctl ([`super::sealed`], checked here) and the helper is
//! non-dumpable before it joins the PID namespace, so the process the machine
//! sees until the exec can neither be written through `/proc/PID/exe` nor
//! ptraced by the machine's unprivileged users. The helper waits for it and reports its exit status back over
//! a socket pair, on which setup errors and the pty master also travel
//! (typed messages: [`super::message`]).
//!
//! The caller must be single-threaded (netspawnctl is): the children run Rust
//! code after `fork()`.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use netspawn_common::registry::Entry;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use thiserror::Error;

use super::message::{self, HelperMessage, RecvError};
use super::passwd::User;
use super::procfs;

/// Why a process could not be started in a machine.
#[derive(Debug, Error)]
pub enum EnterError {
    /// The leader's /proc entries are gone or unreadable.
    #[error("machine '{machine}' is not running any more (leader PID {leader}: {err})")]
    LeaderGone {
        machine: String,
        leader: u32,
        err: String,
    },
    /// A step on our side failed.
    #[error("{step}: {err}")]
    Setup { step: String, err: nix::Error },
    /// A step inside the machine failed (reported by the helper or the process).
    #[error("{0}")]
    InMachine(String),
    /// The helper sent something that is not a message.
    #[error("bad message from the helper process for machine '{machine}': {err}")]
    Protocol {
        machine: String,
        err: crate::tagged::FrameError,
    },
    /// The helper exited without saying why.
    #[error("the helper process for machine '{0}' exited before the command started")]
    HelperDied(String),
    /// The machine's system call filter cannot be rebuilt: entering without
    /// it would give the process more than the payload has.
    #[error("machine '{machine}': cannot rebuild its system call filter: {err}")]
    Filter {
        machine: String,
        err: crate::seccomp::SeccompError,
    },
    /// We are not running from a sealed copy of netspawnctl.
    #[error(transparent)]
    Seal(#[from] super::sealed::SealError),
}

fn setup(step: impl Into<String>) -> impl FnOnce(nix::Error) -> EnterError {
    let step = step.into();
    move |err| EnterError::Setup { step, err }
}

/// How to start a process in a machine.
#[derive(Debug, Clone)]
pub struct EnterOptions {
    /// Credentials to switch to (from the machine's passwd/group).
    pub user: User,
    /// Working directory inside the machine; "/" is used if it cannot be entered.
    pub cwd: String,
    /// Give the process a new pty, allocated from the machine's `/dev/ptmx`,
    /// as its controlling terminal and stdin/stdout/stderr. Otherwise the
    /// process inherits our stdin/stdout/stderr.
    pub pty: bool,
}

/// What the payload learns about its situation.
#[derive(Debug, Clone)]
pub struct InMachine {
    /// The pty's name relative to the machine's /dev ("pts/3"), if one was made.
    pub pty_name: Option<String>,
}

/// How a process in a machine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The status as a shell reports it: the exit code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(n) => 128 + n,
        }
    }
}

/// A process running inside a machine, started by [`enter_machine`].
#[derive(Debug)]
pub struct MachineProcess {
    machine: String,
    helper: Pid,
    helper_pidfd: OwnedFd,
    pid: u32,
    sock: OwnedFd,
    pty_master: Option<OwnedFd>,
    pty_name: Option<String>,
    reaped: bool,
}

/// A file descriptor of one of the leader's namespaces that we must join.
struct NsFd {
    kind: &'static str,
    flag: CloneFlags,
    fd: OwnedFd,
}

/// Namespaces in the order we join them; the user namespace comes last so
/// that joining the others still uses our (host) privileges.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("user", CloneFlags::CLONE_NEWUSER),
];

/// The namespaces of `leader` that differ from ours, opened. Opening them
/// before forking pins them and turns "leader gone" into a clean error.
fn open_namespaces(entry: &Entry) -> Result<Vec<NsFd>, EnterError> {
    let leader = entry.leader.to_string();
    let gone = |err: String| EnterError::LeaderGone {
        machine: entry.name.clone(),
        leader: entry.leader,
        err,
    };
    let mut out = Vec::new();
    for (kind, flag) in NAMESPACES {
        let theirs = std::fs::read_link(format!("/proc/{leader}/ns/{kind}"));
        let theirs = match theirs {
            Ok(t) => t,
            // A kernel without this namespace type: nothing to join.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && *kind != "pid" => {
                if std::path::Path::new(&format!("/proc/{leader}")).exists() {
                    continue;
                }
                return Err(gone(e.to_string()));
            }
            Err(e) => return Err(gone(e.to_string())),
        };
        if procfs::namespace_id("self", kind).as_ref() == Some(&theirs) {
            continue;
        }
        let path = format!("/proc/{leader}/ns/{kind}");
        let fd = nix::fcntl::open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| gone(format!("open {path}: {e}")))?;
        out.push(NsFd {
            kind,
            flag: *flag,
            fd,
        });
    }
    Ok(out)
}

/// Starts `payload` in a new process inside the machine `entry` describes:
/// in the machine's cgroups, all of its namespaces that differ from ours
/// (cgroup, IPC, UTS, network, PID, mount, user), its root directory, the
/// leader's capability bounding set, as `opts.user`, in `opts.cwd`, with every
/// descriptor above 2 closed on exec. The payload's `Ok(code)` is the process's
/// exit code; `Err(message)` is reported as [`EnterError::InMachine`] by
/// [`MachineProcess::wait`] (exit code 127). To run a program, the payload
/// calls [`MachineCommand::exec`].
///
/// Returns once the process is about to run the payload (or setup failed).
/// Must be called from a single-threaded process; blocked signals are
/// unblocked and SIGPIPE is reset to its default in the new process.
pub fn enter_machine<F>(
    entry: &Entry,
    opts: &EnterOptions,
    payload: F,
) -> Result<MachineProcess, EnterError>
where
    F: FnOnce(&InMachine) -> Result<i32, String>,
{
    let gone = |err: String| EnterError::LeaderGone {
        machine: entry.name.clone(),
        leader: entry.leader,
        err,
    };
    if entry.leader == 0 {
        return Err(gone("no leader PID registered".into()));
    }
    let namespaces = open_namespaces(entry)?;
    let root_path = format!("/proc/{}/root", entry.leader);
    let root = nix::fcntl::open(
        root_path.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| gone(format!("open {root_path}: {e}")))?;
    if !super::sealed::running_sealed() {
        return Err(super::sealed::SealError::NotSealed.into());
    }
    let bounding = procfs::bounding_set(entry.leader)
        .ok_or_else(|| gone("cannot read its capability bounding set".into()))?;
    let filter = machine_filter(entry, bounding)?;
    let no_new_privs = entry.no_new_privs
        || procfs::no_new_privs(entry.leader)
            .ok_or_else(|| gone("cannot read its no_new_privs flag".into()))?;
    // With the v1 directories set-property made after the start.
    let cgroup_procs: Vec<String> = crate::cgroup::Cgroups::current(&entry.cgroups)
        .iter()
        .map(|c| c.join("cgroup.procs").to_string_lossy().into_owned())
        .collect();
    let cwd = CString::new(opts.cwd.as_bytes()).unwrap_or_else(|_| c"/".to_owned());

    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(setup("create socket pair"))?;

    // SAFETY: netspawnctl is single-threaded; see the module comment.
    let helper = match unsafe { nix::unistd::fork() }.map_err(setup("fork"))? {
        ForkResult::Child => {
            drop(ours);
            let ctx = HelperContext {
                sock: theirs.as_raw_fd(),
                namespaces: &namespaces,
                root: &root,
                bounding,
                filter: &filter,
                no_new_privs,
                cgroup_procs: &cgroup_procs,
                user: &opts.user,
                cwd: &cwd,
                pty: opts.pty,
            };
            helper_main(ctx, payload)
        }
        ForkResult::Parent { child } => child,
    };
    drop(theirs);
    drop(namespaces);
    drop(root);

    let mut pid = None;
    let mut ready = None;
    let reap = |helper| {
        let _ = waitpid(helper, None);
    };
    while pid.is_none() || ready.is_none() {
        match message::recv(ours.as_raw_fd(), false) {
            Ok(Some((HelperMessage::Pid(p), _))) => pid = Some(p),
            Ok(Some((HelperMessage::Ready { pty_name }, fd))) => ready = Some((pty_name, fd)),
            Ok(Some((HelperMessage::Error(body), _))) => {
                reap(helper);
                return Err(EnterError::InMachine(body));
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                reap(helper);
                return Err(EnterError::HelperDied(entry.name.clone()));
            }
            Err(RecvError::Io(e)) => {
                reap(helper);
                return Err(EnterError::Setup {
                    step: "read from the helper process".into(),
                    err: e,
                });
            }
            Err(RecvError::Frame(e)) => {
                // The helper is confused: stop it rather than wait on it.
                let _ = nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGKILL);
                reap(helper);
                return Err(EnterError::Protocol {
                    machine: entry.name.clone(),
                    err: e,
                });
            }
        }
    }
    let (pid, (pty_name, pty_master)) = (pid.unwrap_or(0), ready.unwrap_or_default());
    let helper_pidfd = pidfd_open(helper).map_err(setup("pidfd_open"))?;
    Ok(MachineProcess {
        machine: entry.name.clone(),
        helper,
        helper_pidfd,
        pid,
        sock: ours,
        pty_master: if opts.pty { pty_master } else { None },
        pty_name: (opts.pty && !pty_name.is_empty()).then_some(pty_name),
        reaped: false,
    })
}

/// The machine's system call filter, as its launcher recorded it (the
/// `--system-call-filter=` adjustments and the capabilities it was built
/// for). Entries written before launchers recorded it get the default filter
/// for the leader's bounding set. Names that are not system calls or groups
/// are an error: entering fails rather than with a weaker filter.
fn machine_filter(entry: &Entry, bounding: u64) -> Result<crate::seccomp::Filter, EnterError> {
    use crate::seccomp::{self, SeccompError, SyscallFilter};
    let err = |err| EnterError::Filter {
        machine: entry.name.clone(),
        err,
    };
    let mut filter = SyscallFilter::default();
    let mut caps = bounding;
    if let Some(rec) = &entry.syscall_filter {
        for (words, prefix) in [(&rec.allow, ""), (&rec.deny, "~")] {
            for w in words {
                if w.starts_with('~') || w.starts_with('-') {
                    return Err(err(SeccompError::UnknownSyscall(w.clone())));
                }
                seccomp::parse_arg(&mut filter, &format!("{prefix}{w}")).map_err(err)?;
            }
        }
        // The filter the payload got depends on its kept capabilities; never
        // more than the leader's bounding set allows now.
        caps = rec.caps.map_or(bounding, |c| c & bounding);
    }
    seccomp::build(&filter, caps).map_err(err)
}

fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a PID and flags and returns a new descriptor.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if r < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

impl MachineProcess {
    /// The process's PID in the host's PID namespace.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The pty master, when [`EnterOptions::pty`] was set.
    pub fn pty_master(&self) -> Option<BorrowedFd<'_>> {
        self.pty_master.as_ref().map(|f| f.as_fd())
    }

    /// Closes our end of the pty (the machine's side sees a hangup).
    pub fn close_pty(&mut self) {
        self.pty_master = None;
    }

    /// The pty's name inside the machine ("pts/3").
    pub fn pty_name(&self) -> Option<&str> {
        self.pty_name.as_deref()
    }

    /// A descriptor that becomes readable (poll) once the process has ended.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.helper_pidfd.as_fd()
    }

    /// Sends a signal to the process. A process that is gone counts as signalled.
    pub fn signal(&self, sig: i32) -> Result<(), EnterError> {
        super::signal::send(self.pid, sig).map_err(|e| EnterError::InMachine(e.to_string()))
    }

    /// Waits for the process to end and returns how it ended.
    pub fn wait(mut self) -> Result<ExitStatus, EnterError> {
        self.reap()
    }

    fn reap(&mut self) -> Result<ExitStatus, EnterError> {
        let helper_status = loop {
            match waitpid(self.helper, None) {
                Err(nix::Error::EINTR) => continue,
                r => break r,
            }
        };
        self.reaped = true;
        let helper_status = helper_status.map_err(setup("wait for the helper process"))?;
        // The helper sends the status before it exits, so everything is queued.
        let mut status = None;
        let mut error = None;
        while let Ok(Some((msg, _))) = message::recv(self.sock.as_raw_fd(), true) {
            match msg {
                HelperMessage::Error(body) => error = Some(body),
                HelperMessage::Exited(code) => status = Some(ExitStatus::Exited(code)),
                HelperMessage::Signaled(sig) => status = Some(ExitStatus::Signaled(sig)),
                _ => {}
            }
        }
        if let Some(e) = error {
            return Err(EnterError::InMachine(e));
        }
        match (status, helper_status) {
            (Some(s), _) => Ok(s),
            (None, WaitStatus::Signaled(_, sig, _)) => Err(EnterError::InMachine(format!(
                "the helper process for machine '{}' was killed by {sig}",
                self.machine
            ))),
            _ => Err(EnterError::HelperDied(self.machine.clone())),
        }
    }
}

impl Drop for MachineProcess {
    fn drop(&mut self) {
        // Never leave a zombie helper behind; the process itself is the
        // machine's business (as with machinectl, it survives us).
        if !self.reaped {
            let _ = waitpid(self.helper, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
    }
}

/// A program to run inside a machine, prepared before forking so the child
/// does no parsing: the program's candidate paths (from `PATH` when it has no
/// slash), argv and environment.
#[derive(Debug, Clone)]
pub struct MachineCommand {
    program: String,
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
}

/// The default `PATH` when the machine's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl MachineCommand {
    /// Prepares `program` with `argv` (argv[0] included) and `env`. A program
    /// without '/' is searched in the environment's `PATH` (inside the machine).
    pub fn new(
        program: &str,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<MachineCommand, EnterError> {
        let nul = |what: &str| EnterError::InMachine(format!("{what} contains a NUL byte"));
        let cstr = |s: &str, what: &str| CString::new(s).map_err(|_| nul(what));
        let candidates = if program.contains('/') {
            vec![cstr(program, "the command")?]
        } else if program.is_empty() {
            return Err(EnterError::InMachine("empty command".into()));
        } else {
            let path = env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_str())
                .unwrap_or(DEFAULT_PATH);
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cstr(&format!("{}/{program}", d.trim_end_matches('/')), "PATH"))
                .collect::<Result<_, _>>()?
        };
        Ok(MachineCommand {
            program: program.to_string(),
            candidates,
            argv: argv
                .iter()
                .map(|a| cstr(a, "an argument"))
                .collect::<Result<_, _>>()?,
            env: env
                .iter()
                .map(|(k, v)| cstr(&format!("{k}={v}"), "the environment"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Replaces the process with the program; returns only on failure, with
    /// a message naming the program (`Failed to execute X: reason`).
    pub fn exec(&self) -> String {
        let mut err = nix::Error::ENOENT;
        let mut denied = false;
        for c in &self.candidates {
            match nix::unistd::execve(c, &self.argv, &self.env) {
                Err(nix::Error::ENOENT) | Err(nix::Error::ENOTDIR) => {}
                Err(nix::Error::EACCES) => denied = true,
                Err(e) => {
                    err = e;
                    break;
                }
                Ok(_) => unreachable!("execve returned without error"),
            }
        }
        if denied && err == nix::Error::ENOENT {
            err = nix::Error::EACCES;
        }
        format!("Failed to execute {}: {}", self.program, err.desc())
    }
}

struct HelperContext<'a> {
    sock: RawFd,
    namespaces: &'a [NsFd],
    root: &'a OwnedFd,
    bounding: u64,
    filter: &'a crate::seccomp::Filter,
    no_new_privs: bool,
    cgroup_procs: &'a [String],
    user: &'a User,
    cwd: &'a CString,
    pty: bool,
}

/// Reports a failed step to netspawnctl and exits.
fn die(sock: RawFd, step: &str, err: impl std::fmt::Display) -> ! {
    message::send(sock, &HelperMessage::Error(format!("{step}: {err}")), None);
    // SAFETY: _exit skips atexit handlers and destructors of the parent's state.
    unsafe { libc::_exit(1) }
}

/// The helper: joins the machine, forks the process, waits for it, reports.
fn helper_main<F>(ctx: HelperContext<'_>, payload: F) -> !
where
    F: FnOnce(&InMachine) -> Result<i32, String>,
{
    let sock = ctx.sock;
    // Inherited from the caller already (sealed::ensure); made sure of here,
    // before anything of ours can be seen in the machine's PID namespace.
    if let Err(e) = super::sealed::make_undumpable() {
        die(sock, "prepare the helper", e);
    }
    let me = std::process::id().to_string();
    // Join the cgroups first: the paths are host paths, visible only before
    // we enter the machine's mount namespace.
    for procs in ctx.cgroup_procs {
        if let Err(e) = std::fs::write(procs, &me) {
            die(sock, &format!("join cgroup ({procs})"), e);
        }
    }
    for ns in ctx.namespaces {
        if let Err(e) = nix::sched::setns(&ns.fd, ns.flag) {
            die(
                sock,
                &format!("enter the machine's {} namespace", ns.kind),
                e,
            );
        }
    }
    if let Err(e) = nix::unistd::fchdir(ctx.root) {
        die(sock, "change to the machine's root directory", e);
    }
    if let Err(e) = nix::unistd::chroot(".") {
        die(sock, "chroot into the machine's root directory", e);
    }
    if let Err(e) = crate::caps::drop_bounding_set(ctx.bounding) {
        die(sock, "limit the capability bounding set", e);
    }
    // SAFETY: still single-threaded.
    match unsafe { nix::unistd::fork() } {
        Err(e) => die(sock, "fork in the machine's PID namespace", e),
        Ok(ForkResult::Child) => process_main(&ctx, payload),
        Ok(ForkResult::Parent { child }) => {
            message::send(sock, &HelperMessage::Pid(child.as_raw() as u32), None);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::Error::EINTR) => continue,
                    r => break r,
                }
            };
            match status {
                Ok(WaitStatus::Exited(_, code)) => {
                    message::send(sock, &HelperMessage::Exited(code), None)
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    message::send(sock, &HelperMessage::Signaled(sig as i32), None)
                }
                Ok(_) => {}
                Err(e) => die(sock, "wait for the process in the machine", e),
            }
            // SAFETY: see die().
            unsafe { libc::_exit(0) }
        }
    }
}

/// Allocates a pty from the machine's `/dev/ptmx` and makes its other end
/// our controlling terminal and stdin/stdout/stderr. Returns the master and
/// the pty's name ("pts/N").
fn take_pty(sock: RawFd, owner: u32) -> (OwnedFd, String) {
    let master = match nix::fcntl::open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(m) => m,
        Err(e) => die(sock, "allocate a pty in the machine (/dev/ptmx)", e),
    };
    let m = master.as_raw_fd();
    let mut unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: pty ioctls on a descriptor we own, with pointers to locals.
    unsafe {
        if libc::ioctl(m, libc::TIOCSPTLCK, &mut unlock) < 0 {
            die(sock, "unlock the pty", nix::Error::last());
        }
        if libc::ioctl(m, libc::TIOCGPTN, &mut number) < 0 {
            die(sock, "get the pty number", nix::Error::last());
        }
    }
    // TIOCGPTPEER opens the peer of this very master, whatever /dev/pts is mounted.
    // SAFETY: as above; returns a new descriptor.
    let slave = unsafe { libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    if slave < 0 {
        die(sock, "open the pty's terminal end", nix::Error::last());
    }
    // SAFETY: ioctl returned a fresh descriptor.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    // The user owns their terminal, as login does.
    let _ = nix::unistd::fchown(&slave, Some(Uid::from_raw(owner)), None);
    if let Err(e) = nix::unistd::setsid() {
        die(sock, "start a session", e);
    }
    // SAFETY: TIOCSCTTY on our new session's terminal.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        die(sock, "set the controlling terminal", nix::Error::last());
    }
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            die(sock, "attach the pty", nix::Error::last());
        }
    }
    (master, format!("pts/{number}"))
}

/// The process in the machine: credentials, terminal, working directory,
/// then the payload.
fn process_main<F>(ctx: &HelperContext<'_>, payload: F) -> !
where
    F: FnOnce(&InMachine) -> Result<i32, String>,
{
    let sock = ctx.sock;
    // Rust ignores SIGPIPE and netspawnctl blocks signals it handles itself;
    // both would be inherited across exec.
    // SAFETY: resetting a disposition to its default and emptying the mask.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    let pty = ctx.pty.then(|| take_pty(sock, ctx.user.uid));
    // The payload's protections, while we are still root in the machine (a
    // filter needs CAP_SYS_ADMIN without no_new_privs). What follows up to
    // the exec (setgroups, setresgid, setresuid, chdir, sendmsg, close_range,
    // execve) is what the machine's filter must allow for entering to work.
    if ctx.no_new_privs {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            die(sock, "set no_new_privs", nix::Error::last());
        }
    }
    if let Err(e) = ctx.filter.load() {
        die(sock, "load the machine's system call filter", e);
    }
    let groups: Vec<Gid> = ctx.user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // A user namespace whose creator wrote "deny" to setgroups (as
        // `unshare --map-root-user` does) forbids it for everyone; the
        // groups we have then are the only ones anybody there can have.
        let denied = e == nix::Error::EPERM
            && std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
        if !denied {
            die(sock, "set supplementary groups", e);
        }
    }
    let (gid, uid) = (Gid::from_raw(ctx.user.gid), Uid::from_raw(ctx.user.uid));
    // EINVAL here means the ID has no mapping in the machine's user namespace.
    let unmapped = |e: nix::Error| {
        if e == nix::Error::EINVAL {
            format!("{e} (not mapped in the machine's user namespace)")
        } else {
            e.to_string()
        }
    };
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        die(sock, &format!("switch to group {gid}"), unmapped(e));
    }
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        die(
            sock,
            &format!("switch to user {}", ctx.user.name),
            unmapped(e),
        );
    }
    if nix::unistd::chdir(ctx.cwd.as_c_str()).is_err() {
        let _ = nix::unistd::chdir("/");
    }
    let info = InMachine {
        pty_name: pty.as_ref().map(|(_, n)| n.clone()),
    };
    match &pty {
        Some((master, name)) => message::send(
            sock,
            &HelperMessage::Ready {
                pty_name: name.clone(),
            },
            Some(master.as_raw_fd()),
        ),
        None => message::send(
            sock,
            &HelperMessage::Ready {
                pty_name: String::new(),
            },
            None,
        ),
    }
    drop(pty);
    // Nothing of ours survives an exec: mark everything above stderr
    // close-on-exec (CLOSE_RANGE_CLOEXEC), keeping `sock` usable until then.
    // SAFETY: close_range(2) with constant arguments.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    match payload(&info) {
        // SAFETY: see die().
        Ok(code) => unsafe { libc::_exit(code) },
        Err(text) => {
            message::send(sock, &HelperMessage::Error(text), None);
            // SAFETY: see die().
            unsafe { libc::_exit(127) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_codes() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
    }

    #[test]
    fn command_paths() {
        let env = vec![("PATH".to_string(), "/a:/b/::/c".to_string())];
        let c = MachineCommand::new("ls", &["ls".into()], &env).unwrap();
        assert_eq!(
            c.candidates,
            vec![
                c"/a/ls".to_owned(),
                c"/b/ls".to_owned(),
                c"/c/ls".to_owned()
            ]
        );
        let c = MachineCommand::new("/bin/sh", &["-sh".into()], &[]).unwrap();
        assert_eq!(c.candidates, vec![c"/bin/sh".to_owned()]);
        let c = MachineCommand::new("sh", &["sh".into()], &[]).unwrap();
        assert_eq!(c.candidates.len(), DEFAULT_PATH.split(':').count());
        assert!(MachineCommand::new("", &[], &[]).is_err());
        assert!(MachineCommand::new("a\0b", &[], &[]).is_err());
    }
}
