//! Undoing a machine's network setup. [`Teardown`] lists what was made;
//! [`spawn`] forks a small keeper process that holds the container's network
//! namespace open and waits for the launcher to go away (normal exit, crash
//! or `kill -9` alike: its pipe reaches end-of-file), then moves borrowed
//! interfaces back, deletes the host-side links and removes empty zone
//! bridges. The launcher itself returns at once; the kernel's slow veth
//! deletion happens in the keeper.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use netlink::{Netlink, Rtnl};
use nix::unistd::{ForkResult, Pid};

use super::zone::Zones;
use super::NetError;

/// What to undo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Host-side links to delete (their peers go with them).
    pub delete: Vec<String>,
    /// Zones whose bridge goes if it is left empty.
    pub zones: Vec<String>,
    /// Host interfaces lent to the container, to move back under their names.
    pub move_back: Vec<String>,
    /// The machine's registry entry, its hosts link and its cgroups: the
    /// launcher removes them when it exits normally; after `kill -9` the
    /// keeper does (the hosts link and the users view's links first, so
    /// resolvers stop at once).
    pub registry_entry: Option<std::path::PathBuf>,
    pub hosts_link: Option<std::path::PathBuf>,
    pub cgroups: Vec<std::path::PathBuf>,
    /// Files the launcher made for the machine in the run directory (host0's
    /// resolv.conf), removed with the registry entry.
    pub files: Vec<std::path::PathBuf>,
    /// The machine-name lock the keeper shares with the launcher (its file
    /// and the inherited descriptor): the keeper lets go of it last, so it
    /// removes the file once the teardown is done and the launcher is gone.
    pub name_lock: Option<(std::path::PathBuf, RawFd)>,
}

impl Teardown {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.zones.is_empty() && self.move_back.is_empty()
    }

    /// Undoes everything it can and returns every failure (gone is success).
    pub fn run(
        &self,
        host: &mut dyn Rtnl,
        inside: Option<&mut dyn Rtnl>,
        host_ns: BorrowedFd<'_>,
        zones: &Zones,
    ) -> Vec<NetError> {
        let mut errors = Vec::new();
        if let Some(inside) = inside {
            for name in &self.move_back {
                match inside.link(name) {
                    Ok(Some(l)) => {
                        if let Err(e) = inside.move_to(l.index, host_ns, name) {
                            errors.push(e.into());
                        }
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(e.into()),
                }
            }
        }
        for name in &self.delete {
            match host.link(name) {
                Ok(Some(l)) => {
                    if let Err(e) = host.delete(l.index) {
                        errors.push(e.into());
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e.into()),
            }
        }
        for z in &self.zones {
            if let Err(e) = zones.leave(host, z) {
                errors.push(e);
            }
        }
        errors
    }

    /// Runs the teardown with fresh sockets (host and, if interfaces must
    /// go back, inside `container_ns`).
    pub fn run_fresh(&self, container_ns: BorrowedFd<'_>, zones: &Zones) -> Vec<NetError> {
        match Sockets::open(self, container_ns) {
            Ok(mut s) => s.run(self, zones),
            Err(e) => vec![e],
        }
    }
}

/// The keeper's own netlink sockets (host, and inside the container's
/// namespace when interfaces go back), opened up front.
struct Sockets {
    host: Netlink,
    inside: Option<Netlink>,
    host_ns: std::fs::File,
}

impl Sockets {
    fn open(teardown: &Teardown, container_ns: BorrowedFd<'_>) -> Result<Sockets, NetError> {
        let host = Netlink::open()?;
        let host_ns =
            std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| NetError::Lock {
                path: "/proc/thread-self/ns/net".into(),
                err: e,
            })?;
        let inside = if teardown.move_back.is_empty() {
            None
        } else {
            Some(Netlink::open_in(container_ns)?)
        };
        Ok(Sockets {
            host,
            inside,
            host_ns,
        })
    }

    fn run(&mut self, teardown: &Teardown, zones: &Zones) -> Vec<NetError> {
        teardown.run(
            &mut self.host,
            self.inside.as_mut().map(|i| i as &mut dyn Rtnl),
            self.host_ns.as_fd(),
            zones,
        )
    }
}

/// The byte that sends a keeper away without a teardown ([`Keeper::dismiss`]);
/// end-of-file without it is the launcher's end (or death): tear down.
const DISMISS: u8 = b'x';
/// The byte that asks for the teardown while the launcher goes on
/// ([`Keeper::finish`], between reboots): the name lock's file stays.
const FINISH: u8 = b'f';
/// How long a keeper waits for its launcher to exit before it removes the
/// name lock's file (past it, the file is left; the next holder removes it).
const LAUNCHER_EXIT_WAIT_MS: u16 = 10_000;

/// A running keeper. Dropping it lets the keeper tear down in the background.
#[derive(Debug)]
pub struct Keeper {
    pid: Pid,
    pipe: Option<OwnedFd>,
}

impl Keeper {
    /// Sends the keeper away without any teardown (the launcher undid what
    /// it made itself) and waits for it to go.
    pub fn dismiss(mut self) {
        if let Some(pipe) = self.pipe.take() {
            let _ = nix::unistd::write(&pipe, &[DISMISS]);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }

    /// Lets the keeper tear down and waits until it is done (used between
    /// reboots, when the same links are about to be made again).
    pub fn finish(mut self) {
        if let Some(pipe) = self.pipe.take() {
            // The launcher goes on with the name: the keeper keeps its file.
            let _ = nix::unistd::write(&pipe, &[FINISH]);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Forks the keeper. It inherits the launcher's descriptors (so the
/// machine-name lock stays taken until the teardown is complete) except
/// `close`, which it lets go of at once (e.g. the image lock).
pub fn spawn(
    teardown: Teardown,
    container_ns: OwnedFd,
    zones: Zones,
    close: &[RawFd],
) -> std::io::Result<Keeper> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the launcher is single-threaded; the child only makes syscalls
    // and new sockets, and leaves with _exit.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => {
            drop(r);
            Ok(Keeper {
                pid: child,
                pipe: Some(w),
            })
        }
        ForkResult::Child => {
            drop(w);
            keeper_main(&teardown, r, container_ns, &zones, close)
        }
    }
}

fn keeper_main(
    teardown: &Teardown,
    pipe: OwnedFd,
    ns: OwnedFd,
    zones: &Zones,
    close: &[RawFd],
) -> ! {
    // Own session: signals aimed at the launcher's process group (a
    // terminal's Ctrl-C, `timeout`) must not stop the cleanup.
    // The launcher, watched before setsid and before it can exit: the name
    // lock's file goes only once it has let go of the lock too.
    let launcher = pidfd_open(nix::unistd::getppid());
    let _ = nix::unistd::setsid();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    // Our sockets first. Nothing inherited is closed wholesale: the tokio
    // runtime and the standard library own descriptors we cannot see, and
    // closing them under their feet aborts. What must not outlive the
    // launcher (its image lock) is closed explicitly; our standard streams
    // go to /dev/null so readers of the launcher's output see end-of-file.
    let sockets = Sockets::open(teardown, ns.as_fd());
    for fd in close {
        // SAFETY: descriptors the launcher named for us to let go of; their
        // owners in this copy of the launcher's memory are never dropped
        // (we leave with _exit).
        unsafe { libc::close(*fd) };
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let mut b = [0u8; 1];
    let mut launcher_goes_on = false;
    loop {
        match nix::unistd::read(&pipe, &mut b) {
            Err(nix::Error::EINTR) => {}
            Ok(1) if b[0] == DISMISS => {
                // SAFETY: leave without running the launcher's destructors.
                unsafe { libc::_exit(0) }
            }
            Ok(1) if b[0] == FINISH => launcher_goes_on = true,
            Ok(1) => {}
            _ => break,
        }
    }
    // We still hold the machine's name, so nobody else can have written these.
    if let Some(link) = &teardown.hosts_link {
        let _ = std::fs::remove_file(link);
        // And the machine's names for its user namespace's IDs, beside it
        // (<run_dir>/hosts/NAME: the run directory is two levels up).
        if let (Some(run_dir), Some(name)) = (
            link.parent().and_then(|d| d.parent()),
            link.file_name().and_then(|n| n.to_str()),
        ) {
            let _ = netspawn_common::registry::remove_users_links(run_dir, name);
        }
    }
    match sockets {
        Ok(mut s) => {
            for e in s.run(teardown, zones) {
                tracing::warn!("teardown: {e}");
            }
        }
        Err(e) => tracing::warn!("teardown: {e}"),
    }
    if let Some(entry) = &teardown.registry_entry {
        let _ = std::fs::remove_file(entry);
    }
    for file in &teardown.files {
        let _ = std::fs::remove_file(file);
    }
    // The container's processes die with the launcher (parent-death signal)
    // but may still be exiting: retry on EBUSY for a while rather than leave
    // the directories behind (what stays is swept by the next launch).
    crate::cgroup::Cgroups {
        paths: teardown.cgroups.clone(),
    }
    .destroy_within(crate::cgroup::KEEPER_BUDGET);
    if let (Some((path, fd)), false) = (&teardown.name_lock, launcher_goes_on) {
        if launcher.as_ref().is_some_and(exited_within) {
            // SAFETY: the inherited descriptor of the name lock, borrowed
            // for fstat; never closed here (we leave with _exit).
            let file = std::mem::ManuallyDrop::new(unsafe {
                <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(*fd)
            });
            let _ = netspawn_common::lockfile::remove_held(path, &file);
        }
    }
    // SAFETY: leave without running the launcher's destructors.
    unsafe { libc::_exit(0) }
}

/// A pidfd for `pid` (None if the kernel has no pidfd_open or it is gone).
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) with no flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor just returned to us and owned by nobody else.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}

/// Waits until the process behind `pidfd` has exited (it polls readable),
/// at most [`LAUNCHER_EXIT_WAIT_MS`].
fn exited_within(pidfd: &OwnedFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    loop {
        match nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::from(LAUNCHER_EXIT_WAIT_MS),
        ) {
            Err(nix::Error::EINTR) => continue,
            Ok(n) => return n > 0,
            Err(_) => return false,
        }
    }
}
