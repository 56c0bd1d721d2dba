//! The container's side (systemd-nspawn's inner child): runs in the cloned
//! child and never returns. It waits for the launcher's go-ahead, builds the
//! file system (while the launcher makes the links; the last steps wait for
//! its word that they are ready), sets hostname and loopback, pivots into the root, drops
//! privileges and execs the payload (as PID 1, or as PID 2 under a minimal
//! init). Any error travels back to the launcher over the sync socket.
//!
//! With a user namespace, an outer child ([`outer_main`], still the host's
//! root, in a new mount namespace) first makes the root, binds, tmpfs
//! mounts and read-only remounts (moving the launcher's idmapped trees into
//! place for `map` ownership), then clones PID 1 into the user namespace
//! and the others: the mount namespace is copied into one owned by the new
//! user namespace, which locks those mounts and their flags, so root inside
//! cannot remount a read-only one writable (systemd's outer and inner
//! child). PID 1 becomes the namespace's root (the launcher writes the maps
//! before the go-ahead) and makes only what needs its namespaces.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::unistd;

use super::sync::{self, SyncError, SyncMessage};
use crate::config::Config;
use crate::mount;
use crate::rootdir::RootDir;
use crate::tty::Pty;

/// What the container's PID 1 starts from (inherited over the clone).
pub(super) struct Start<'a> {
    pub cfg: &'a Config,
    /// The mount steps PID 1 makes: all of them, or with a user namespace
    /// those that need its namespaces.
    pub plan: &'a [mount::MountOp],
    pub sync: OwnedFd,
    pub notify: OwnedFd,
    pub pty: Option<&'a Pty>,
    pub envp: &'a [String],
    /// PID 1 is in a new user namespace (its root made by the outer child).
    pub in_userns: bool,
    /// What covers the root (made by PID 1, or by the outer child).
    pub layer: &'a mount::RootLayer,
}

/// How the outer child makes the root and clones PID 1 (user namespaces).
pub(super) struct Outer<'a> {
    /// The mount steps made with the host's privileges.
    pub host_plan: &'a [mount::MountOp],
    /// Idmapped trees to move into place (`map` ownership).
    pub trees: mount::Idmapped,
    /// PID 1's namespaces, the user namespace among them.
    pub flags: CloneFlags,
    /// The machine's cgroup2 directory, to clone PID 1 into once the
    /// launcher has made it ([`SyncMessage::CgroupReady`]).
    pub cgroup: &'a Path,
    /// The container's root on the host.
    pub owner: u32,
}

pub(super) fn child_main(start: Start<'_>) -> ! {
    let Start {
        cfg,
        plan,
        sync,
        notify,
        pty,
        envp,
        in_userns,
        layer,
    } = start;
    let layer = if in_userns {
        &mount::RootLayer::Image
    } else {
        layer
    };
    let err = match child_setup(cfg, plan, &sync, notify, pty, envp, in_userns, layer) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = sync::send(&sync, &SyncMessage::Failed(err));
    // SAFETY: _exit skips atexit handlers and destructors the parent owns.
    unsafe { libc::_exit(1) }
}

/// The outer child: makes the root with the host's privileges (while the
/// launcher makes the machine's cgroup), then clones PID 1 into the cgroup
/// (as the launcher's child, CLONE_PARENT), tells the launcher its PID and
/// exits.
pub(super) fn outer_main(start: Start<'_>, outer: Outer<'_>) -> ! {
    let code = match outer_setup(start, outer) {
        Ok(()) => 0,
        Err((sync, err)) => {
            let _ = sync::send(&sync, &SyncMessage::Failed(err));
            1
        }
    };
    // SAFETY: _exit skips atexit handlers and destructors the parent owns.
    unsafe { libc::_exit(code) }
}

fn outer_setup(start: Start<'_>, mut outer: Outer<'_>) -> Result<(), (OwnedFd, String)> {
    let made = (|| {
        crate::sys::set_parent_death_signal(Signal::SIGKILL)
            .map_err(e("set parent death signal"))?;
        mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None)
            .map_err(e("make mounts private"))?;
        match outer.trees.root.take() {
            Some(tree) => {
                let at = RootDir::open(&start.cfg.root).map_err(e("open the root directory"))?;
                crate::userns::idmap::move_onto(tree.as_fd(), at.as_fd())
                    .map_err(e("mount the idmapped root directory"))?;
            }
            None => bind_root(start.cfg)?,
        }
        mount::layer_root(&start.cfg.root, start.layer, Some(outer.owner))
            .map_err(|err| err.to_string())?;
        let root = RootDir::open(&start.cfg.root).map_err(e("open the root directory"))?;
        mount::apply(outer.host_plan, &root, &mut outer.trees, Some(outer.owner))
            .map_err(|err| err.to_string())?;
        // PID 1 finds its root as its working directory (a new mount
        // namespace carries it over to the copy of this mount), since it may
        // not be allowed to walk the host path to it.
        unistd::fchdir(&root).map_err(e("enter the root directory"))
    })();
    if let Err(err) = made {
        return Err((start.sync, err));
    }
    match sync::recv(&start.sync) {
        Ok(Some(SyncMessage::CgroupReady)) => {}
        Ok(None) | Err(SyncError::Io(_)) => return Err((start.sync, "launcher went away".into())),
        Ok(Some(other)) => {
            let err = format!("unexpected message from the launcher: {other:?}");
            return Err((start.sync, err));
        }
        Err(SyncError::Frame(err)) => {
            let err = format!("bad message from the launcher: {err}");
            return Err((start.sync, err));
        }
    }
    // Without it, PID 1 is cloned as it is and the launcher moves it.
    let cgroup = nix::fcntl::open(
        outer.cgroup,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok();
    let flags = outer.flags | CloneFlags::CLONE_PARENT;
    // SAFETY: single-threaded; the child goes on to exec or _exit.
    let cloned = match &cgroup {
        Some(fd) => match unsafe { crate::sys::clone3_into_cgroup(flags.bits(), fd.as_raw_fd()) } {
            Err(nix::Error::ENOSYS | nix::Error::EINVAL | nix::Error::E2BIG) => None,
            r => Some(r.map(|c| (c, true))),
        },
        None => None,
    };
    // SAFETY: as above.
    let cloned = cloned
        .unwrap_or_else(|| unsafe { crate::sys::clone_fork(flags.bits()) }.map(|c| (c, false)));
    match cloned {
        Err(err) => Err((start.sync, format!("clone the container: {err}"))),
        Ok((None, _)) => child_main(start),
        Ok((Some(pid), in_cgroup)) => {
            let msg = SyncMessage::Started {
                pid: pid.as_raw() as u32,
                in_cgroup,
            };
            match sync::send(&start.sync, &msg) {
                Ok(()) => Ok(()),
                Err(err) => Err((start.sync, format!("report the container's PID: {err}"))),
            }
        }
    }
}

enum Never {}

/// Formats a failed step as the message the launcher prints.
fn e(what: &str) -> impl FnOnce(nix::Error) -> String {
    let what = what.to_string();
    move |err: nix::Error| format!("{what}: {err}")
}

#[allow(clippy::too_many_arguments)]
fn child_setup(
    cfg: &Config,
    plan: &[mount::MountOp],
    sync: &OwnedFd,
    notify: OwnedFd,
    pty: Option<&Pty>,
    envp: &[String],
    in_userns: bool,
    layer: &mount::RootLayer,
) -> Result<Never, String> {
    wait_for_go(sync)?;
    // Compiled while the launcher makes the links; loaded last.
    let filter =
        crate::seccomp::build(&cfg.syscall_filter, cfg.caps).map_err(|err| err.to_string())?;
    if in_userns {
        crate::userns::become_root().map_err(e("become root in the user namespace"))?;
        die_with_launcher(sync)?;
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(e("create cgroup namespace"))?;
    let (root, links_ready) = build_file_system(cfg, plan, sync, notify, in_userns, layer)?;
    unistd::sethostname(&cfg.hostname).map_err(e("set hostname"))?;
    if cfg.network.private {
        loopback_up().map_err(e("bring up lo"))?;
    }
    enter_root(root)?;
    let prepared = crate::exec::prepare(cfg, envp).map_err(|err| err.to_string())?;
    let exec = Exec::resolve(cfg, &prepared.env)?;
    crate::sys::cloexec_from(3).map_err(e("close host file descriptors"))?;
    crate::caps::drop_bounding_set(cfg.caps).map_err(|err| err.to_string())?;
    if !links_ready {
        wait_for(sync, SyncMessage::Network)?;
    }
    lock_down(cfg, &prepared, &filter)?;
    // `--user=` changed our IDs.
    die_with_launcher(sync)?;
    if cfg.as_pid2 {
        run_as_pid2(sync, pty, &exec)
    } else {
        // A booted init in a user namespace gets the console as its standard
        // descriptors but not as its controlling terminal: its getty takes
        // it (TIOCSCTTY), which it could not steal from PID 1 there (that
        // needs CAP_SYS_ADMIN in the host's user namespace).
        become_session(pty, !(cfg.boot && in_userns))?;
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(e("unblock signals"))?;
        Err(exec.exec())
    }
}

/// A change of IDs clears the parent death signal: sets it again, then
/// makes sure the launcher did not go in between (its end hangs up).
fn die_with_launcher(sync: &OwnedFd) -> Result<(), String> {
    crate::sys::set_parent_death_signal(Signal::SIGKILL).map_err(e("set parent death signal"))?;
    let mut fds = [nix::poll::PollFd::new(
        sync.as_fd(),
        nix::poll::PollFlags::empty(),
    )];
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO);
    if fds[0]
        .revents()
        .is_some_and(|r| r.intersects(nix::poll::PollFlags::POLLHUP))
    {
        return Err("launcher went away".into());
    }
    Ok(())
}

/// Dies with the launcher; then waits until it has placed us in our cgroups.
fn wait_for_go(sync: &OwnedFd) -> Result<(), String> {
    crate::sys::set_parent_death_signal(Signal::SIGKILL).map_err(e("set parent death signal"))?;
    wait_for(sync, SyncMessage::Go)
}

/// Waits for `want` from the launcher.
fn wait_for(sync: &OwnedFd, want: SyncMessage) -> Result<(), String> {
    match sync::recv(sync) {
        Ok(Some(m)) if m == want => Ok(()),
        Ok(None) | Err(SyncError::Io(_)) => Err("launcher went away".into()),
        Ok(Some(other)) => Err(format!("unexpected message from the launcher: {other:?}")),
        Err(SyncError::Frame(e)) => Err(format!("bad message from the launcher: {e}")),
    }
}

/// Mounts the container's file system under its root and binds the notify
/// socket. Every path inside the image is resolved inside the root, opened
/// once here after its bind (see [`crate::rootdir`]). The launcher makes the
/// links meanwhile. A resolv.conf to bind that does not exist yet (host0 on
/// a LAN bridge: there may be no lease) is bound once the launcher says the
/// links are ready, and the steps after it (the root's remount) wait with
/// it; true then. Else the launcher made the file before the clone and
/// fills it in place.
fn build_file_system(
    cfg: &Config,
    plan: &[mount::MountOp],
    sync: &OwnedFd,
    notify: OwnedFd,
    in_userns: bool,
    layer: &mount::RootLayer,
) -> Result<(RootDir, bool), String> {
    // With a user namespace the outer child has made the root and what is
    // below it; binding it again (the copy's top is ours to pivot into,
    // what lies below stays locked) makes it the same for both. The outer
    // child left us in the root directory: no host path is walked.
    mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None)
        .map_err(e("make mounts private"))?;
    let root = if in_userns {
        // The outer child made the root's layer too.
        let top = crate::userns::idmap::rebind_cwd().map_err(e("bind the root directory"))?;
        RootDir::from_fd(top.as_fd(), &cfg.root).map_err(e("open the root directory"))?
    } else {
        bind_root(cfg)?;
        mount::layer_root(&cfg.root, layer, None).map_err(|err| err.to_string())?;
        RootDir::open(&cfg.root).map_err(e("open the root directory"))?
    };
    let late = plan
        .iter()
        .position(|op| matches!(op, mount::MountOp::ResolvConf { src } if !src.exists()));
    let (before, after) = plan.split_at(late.unwrap_or(plan.len()));
    mount::apply(before, &root, &mut mount::Idmapped::default(), None)
        .map_err(|err| err.to_string())?;
    if late.is_some() {
        wait_for(sync, SyncMessage::Network)?;
        mount::apply(after, &root, &mut mount::Idmapped::default(), None)
            .map_err(|err| err.to_string())?;
    }
    // The notify socket, bound relative to /run/host so long root paths fit.
    let host_dir = root
        .open_path(Path::new("/run/host"))
        .map_err(e("open /run/host"))?;
    unistd::fchdir(&host_dir).map_err(e("enter /run/host"))?;
    let addr = UnixAddr::new("notify").map_err(e("notify socket address"))?;
    socket::bind(notify.as_raw_fd(), &addr).map_err(e("bind /run/host/notify"))?;
    drop(notify);
    Ok((root, late.is_some()))
}

/// Binds the root directory onto itself, with what is mounted below it.
fn bind_root(cfg: &Config) -> Result<(), String> {
    mount::<Path, Path, str, str>(
        Some(&cfg.root),
        &cfg.root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(e("bind the root directory"))
}

/// Makes the container's root our root (the working directory is the
/// user's or `--chdir`'s, entered by `exec::prepare`).
fn enter_root(root: RootDir) -> Result<(), String> {
    unistd::fchdir(&root).map_err(e("enter root"))?;
    drop(root);
    crate::sys::pivot_root(Path::new("."), Path::new(".")).map_err(e("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(e("detach old root"))?;
    Ok(())
}

/// The payload, resolved and converted before privileges are dropped.
struct Exec {
    program: String,
    prog_c: CString,
    argv: Vec<CString>,
    envv: Vec<CString>,
}

impl Exec {
    /// Resolves the program inside the container now that it is our root.
    fn resolve(cfg: &Config, envp: &[String]) -> Result<Exec, String> {
        let path_var = envp
            .iter()
            .find_map(|v| v.strip_prefix("PATH="))
            .unwrap_or(crate::config::DEFAULT_PATH);
        let program = crate::config::find_command(Path::new("/"), &cfg.command[0], path_var)
            .ok_or_else(|| {
                format!(
                    "Failed to execute {}: No such file or directory",
                    cfg.command[0]
                )
            })?;
        let c =
            |s: &str| CString::new(s).map_err(|_| format!("argument contains a NUL byte: {s:?}"));
        let prog_c = c(&program)?;
        let argv: Vec<CString> = cfg.command.iter().map(|s| c(s)).collect::<Result<_, _>>()?;
        let envv: Vec<CString> = envp.iter().map(|s| c(s)).collect::<Result<_, _>>()?;
        Ok(Exec {
            program,
            prog_c,
            argv,
            envv,
        })
    }

    /// Replaces the process with the payload; returns the error if that fails.
    fn exec(&self) -> String {
        let err = unistd::execve(&self.prog_c, &self.argv, &self.envv).unwrap_err();
        format!("Failed to execute {}: {}", self.program, err.desc())
    }
}

/// Installs seccomp, then applies the exec settings (the user switch must
/// come after the filter, which needs CAP_SYS_ADMIN to install); the host's
/// descriptors are close-on-exec and the bounding set is dropped already.
fn lock_down(
    cfg: &Config,
    prepared: &crate::exec::Prepared,
    filter: &crate::seccomp::Filter,
) -> Result<(), String> {
    filter.load().map_err(|err| err.to_string())?;
    crate::exec::apply(cfg, prepared).map_err(|err| err.to_string())?;
    Ok(())
}

/// A new session, with the console as controlling terminal and standard streams.
fn become_session(pty: Option<&Pty>, controlling: bool) -> Result<(), String> {
    unistd::setsid().map_err(e("setsid"))?;
    if let Some(p) = pty {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            if unsafe { libc::dup2(p.slave.as_raw_fd(), fd) } < 0 {
                return Err(format!("set up console: {}", nix::Error::last()));
            }
        }
        // SAFETY: TIOCSCTTY takes an int argument.
        if controlling && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(format!(
                "acquire controlling terminal: {}",
                nix::Error::last()
            ));
        }
    }
    Ok(())
}

/// `--as-pid2`: PID 1 stays a minimal init; the payload is its child.
fn run_as_pid2(sync: &OwnedFd, pty: Option<&Pty>, exec: &Exec) -> Result<Never, String> {
    // PID 1 keeps every signal blocked and collects them with sigwait.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None)
        .map_err(e("block signals"))?;
    // SAFETY: we are single-threaded.
    match unsafe { unistd::fork() }.map_err(e("fork PID 2"))? {
        unistd::ForkResult::Child => {
            become_session(pty, true)?;
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(e("unblock signals"))?;
            Err(exec.exec())
        }
        unistd::ForkResult::Parent { child } => {
            // SAFETY: closing our copy of the sync socket; PID 2 keeps its own until exec.
            unsafe { libc::close(sync.as_raw_fd()) };
            crate::init::run(child)
        }
    }
}

/// Brings `lo` up in the current network namespace.
fn loopback_up() -> nix::Result<()> {
    let sock = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; SIOCGIFFLAGS/SIOCSIFFLAGS read and write its flags.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(nix::Error::last());
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(nix::Error::last());
        }
    }
    Ok(())
}
