//! Running a container: the launcher's side (cgroups, registry, console,
//! signals, waiting, reboot) and the container's side (namespaces, file
//! system, hostname, capabilities, seccomp, exec), cut along
//! systemd-nspawn's seams: [`register`] (the registry entry), [`links`]
//! (network links), [`host0`] (netd and DHCP for host0), [`ports`] (port
//! forwards), [`keeper`] (starting the teardown keeper), [`supervise`] (the
//! run loop) and [`child`] (the container's side). This module holds the
//! sequence: claim, clone, links, go-ahead, register, supervise, clean up.
//!
//! The launcher clones the container's PID 1 into new mount, PID, UTS, IPC
//! (and network) namespaces. The child waits on a socketpair until the
//! launcher has put it into its cgroups, then builds its file system, drops
//! privileges and execs. Errors in the child travel back over the socketpair
//! (which is close-on-exec, so end-of-file means the exec succeeded). PID 1
//! gets SIGKILL when the launcher dies, which takes the whole container down.
//!
//! With `-U` an outer child, cloned before the machine's cgroup exists,
//! makes the file system with the host's privileges while the launcher
//! makes the cgroup and hands it (with the pty and resolv.conf) to the
//! container's root; told the cgroup is ready, the outer child clones PID 1
//! into it and into a user namespace, which then owns the others (see
//! [`child`]); the launcher writes its maps before the go-ahead. Idmapped
//! trees for `map` ownership are made before the clones.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use netspawn_common::paths::Paths;
use netspawn_common::registry::{NameClaim, Registry};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use thiserror::Error;

use crate::cgroup::{CgroupError, Cgroups, Hierarchies};
use crate::config::Config;
use crate::console::ConsoleMode;
use crate::lock::{ImageLock, LockError};
use crate::mount::{self, MountConfig};
use crate::network;
use crate::tty::{self, Pty, RawTerminal};

mod child;
mod host0;
mod keeper;
mod links;
mod ports;
mod register;
mod supervise;
pub mod sync;

use links::NetState;
use register::Registration;
use sync::SyncMessage;

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("Machine '{0}' already exists")]
    Busy(String),
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("{0}")]
    Cgroup(#[from] CgroupError),
    #[error("{0}")]
    Console(#[from] tty::TtyError),
    #[error("registry: {0}")]
    Registry(std::io::Error),
    #[error("{what}: {err}")]
    Sys { what: &'static str, err: nix::Error },
    #[error("{0}")]
    Net(#[from] network::NetError),
    #[error("{0}")]
    Netd(#[from] crate::netd_client::NetdError),
    #[error("{0}")]
    Dhcp(String),
    #[error("{0}")]
    Userns(#[from] crate::userns::UsernsError),
    #[error("{0}")]
    Ephemeral(#[from] crate::ephemeral::EphemeralError),
    #[error("{0}")]
    Overlay(#[from] crate::overlay::OverlayError),
    /// An error reported by the container's side before exec.
    #[error("{0}")]
    Child(String),
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> LaunchError {
    move |err| LaunchError::Sys { what, err }
}

/// Signals the launcher handles itself (blocked and read from a signalfd).
fn handled_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGWINCH,
        Signal::SIGQUIT,
    ] {
        s.add(sig);
    }
    s
}

/// How the container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Killed(i32),
}

impl Outcome {
    /// netspawn's exit status: the payload's, 128+N for a signal; for a
    /// booted OS, SIGINT (what the kernel sends to PID 1 when the guest
    /// powers off or halts) is a clean shutdown.
    pub fn exit_status(self, boot: bool) -> i32 {
        match self {
            Outcome::Exited(c) => c,
            Outcome::Killed(s) if boot && s == libc::SIGINT => 0,
            Outcome::Killed(s) => 128 + s,
        }
    }
}

/// Everything the launcher holds for one machine; dropping it releases all.
struct Held {
    /// `-x`: the machine's ephemeral layer.
    layer: Option<crate::ephemeral::Layer>,
    /// `--overlay=`: what the container mounts.
    overlays: Vec<crate::overlay::OverlayMount>,
    /// What was made for the machine beside the image and the overlays
    /// (removed first, while the image is still locked; by its keeper
    /// after `kill -9`).
    _scratch: crate::ephemeral::Scratch,
    registry: Option<(Registry, NameClaim)>,
    run_dir: PathBuf,
    _image_lock: ImageLock,
    hierarchies: Hierarchies,
    cgroup_name: String,
    /// The resolv.conf made for host0 (removed at exit, by the keeper after
    /// `kill -9`).
    resolv_conf: Option<PathBuf>,
    /// The user namespace's range and idmap, with `-U`/`--private-users=`.
    userns: Option<crate::userns::Active>,
}

/// Runs the container to completion and returns netspawn's exit status.
pub fn run(cfg: &Config, paths: &Paths) -> Result<i32, LaunchError> {
    // `-x` of a btrfs subvolume: a snapshot beside it is the machine's
    // directory (locked, and removed, as its own), as systemd-nspawn makes it.
    let mut scratch = crate::ephemeral::Scratch::default();
    let snapshot_cfg;
    let cfg = match cfg.ephemeral {
        true => match crate::ephemeral::snapshot(&cfg.root, &mut scratch) {
            Some(root) => {
                snapshot_cfg = Config {
                    root,
                    ephemeral: false,
                    ..cfg.clone()
                };
                &snapshot_cfg
            }
            None => cfg,
        },
        false => cfg,
    };
    let held = hold(cfg, paths, scratch)?;
    let mut net = links::prepare(cfg, paths)?;

    let host_os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok());

    if !cfg.quiet {
        eprintln!(
            "Spawning container {} on {}.",
            cfg.machine,
            cfg.root.display()
        );
        if cfg.console == ConsoleMode::Interactive {
            eprintln!("Press Ctrl-] three times within 1s to kill container.");
        }
    }
    let _raw = match cfg.console {
        ConsoleMode::Interactive => Some(RawTerminal::enter(std::io::stdin().as_fd())?),
        _ => None,
    };

    let (old_mask, sigfd) = block_signals()?;

    let result = boot_until_done(cfg, &held, net.as_mut(), host_os_release.as_deref(), &sigfd);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    drop(_raw);
    let outcome = result?;
    let status = outcome.exit_status(cfg.boot);
    tracing::debug!(status, "cleaned up, exiting");
    if !cfg.quiet {
        report(cfg, outcome, status);
    }
    Ok(status)
}

/// Claims the name and the image before anything is created.
fn hold(
    cfg: &Config,
    paths: &Paths,
    mut scratch: crate::ephemeral::Scratch,
) -> Result<Held, LaunchError> {
    let registry = register::claim(cfg, paths)?;
    // Machines that never write the image share it (`-x` writes to its layer).
    let image_lock = ImageLock::acquire(&paths.locks_dir(), &cfg.root, cfg.image_read_only())?;
    let hierarchies = Hierarchies::detect()?;
    // What earlier machines could not remove (a launcher killed before its
    // keeper ran): never a cgroup whose name or launcher is still alive.
    crate::cgroup::sweep_stale(&hierarchies, &paths.cgroup_parent, &Registry::new(paths));
    let userns = match &cfg.userns {
        Some(spec) => {
            crate::userns::prepare(spec, &cfg.machine, &cfg.root, &paths.locks_dir(), || {
                Registry::new(paths)
                    .list()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e.name != cfg.machine)
                    .filter_map(|e| e.userns.map(|r| (e.name, r)))
                    .collect()
            })?
        }
        None => None,
    };
    let layer = match cfg.ephemeral {
        true => {
            // Seen through an idmapped mount, the image's owner is shifted.
            let shift = userns
                .as_ref()
                .filter(|u| u.idmap.is_some())
                .map_or(0, |u| u.range.shift);
            Some(crate::ephemeral::Layer::create(
                &cfg.root,
                shift,
                &mut scratch,
            )?)
        }
        false => None,
    };
    let overlays = if cfg.overlays.is_empty() {
        Vec::new()
    } else {
        let root =
            crate::rootdir::RootDir::open(&cfg.root).map_err(sys("open the root directory"))?;
        cfg.overlays
            .iter()
            .map(|o| crate::overlay::prepare(o, &root, &mut scratch))
            .collect::<Result<Vec<_>, _>>()?
    };
    scratch.guard(&[image_lock.as_raw_fd()])?;
    let cgroup_name = if cfg.register {
        cfg.machine.clone()
    } else {
        format!("{}.{}", cfg.machine, std::process::id())
    };
    Ok(Held {
        _scratch: scratch,
        overlays,
        layer,
        registry,
        run_dir: paths.run_dir.clone(),
        _image_lock: image_lock,
        hierarchies,
        cgroup_name,
        resolv_conf: cfg
            .dhcp_host0
            .then(|| host0::resolv_conf_path(cfg, &paths.run_dir)),
        userns,
    })
}

/// Boots the container, again after each reboot of a booted guest, until it ends.
fn boot_until_done(
    cfg: &Config,
    held: &Held,
    mut net: Option<&mut NetState>,
    host_os_release: Option<&str>,
    sigfd: &SignalFd,
) -> Result<Outcome, LaunchError> {
    loop {
        // A fresh pty per boot: the kernel hangs up the old one when the
        // guest's session ends.
        let pty = match cfg.console {
            ConsoleMode::Pipe => None,
            _ => Some(tty::open_pty()?),
        };
        // The payload may ask for its terminal's size at once: set it before it starts.
        if let (Some(p), ConsoleMode::Interactive) = (&pty, cfg.console) {
            tty::copy_window_size(std::io::stdin().as_fd(), p.master.as_fd());
        }
        let (outcome, keeper) = run_once(
            cfg,
            held,
            net.as_deref_mut(),
            pty.as_ref(),
            host_os_release,
            sigfd,
        )?;
        if cfg.boot && outcome == Outcome::Killed(libc::SIGHUP) {
            // The next boot makes the same links again: let the old ones go first.
            if let Some(k) = keeper {
                k.finish();
            }
            if !cfg.quiet {
                eprintln!("Container {} is being rebooted.", cfg.machine);
            }
            continue;
        }
        return Ok(outcome);
    }
}

/// Blocks the signals the launcher handles and returns the old mask with a
/// signalfd that reads them.
fn block_signals() -> Result<(SigSet, SignalFd), LaunchError> {
    let mut old_mask = SigSet::empty();
    nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&handled_signals()),
        Some(&mut old_mask),
    )
    .map_err(sys("block signals"))?;
    let sigfd = SignalFd::with_flags(
        &handled_signals(),
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .map_err(sys("signalfd"))?;
    Ok((old_mask, sigfd))
}

/// systemd-nspawn's last line: how the container ended.
fn report(cfg: &Config, outcome: Outcome, status: i32) {
    match outcome {
        Outcome::Killed(s) if cfg.boot && s == libc::SIGINT => {
            eprintln!("Container {} has been shut down.", cfg.machine)
        }
        _ if status == 0 => eprintln!("Container {} exited successfully.", cfg.machine),
        Outcome::Exited(c) => {
            eprintln!("Container {} failed with error code {c}.", cfg.machine)
        }
        Outcome::Killed(s) => eprintln!(
            "Container {} terminated by signal {}.",
            cfg.machine,
            signal_name(s)
        ),
    }
}

fn signal_name(s: i32) -> String {
    Signal::try_from(s)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("{s}"))
}

/// One boot of the container: from clone to the death of its PID 1.
fn run_once(
    cfg: &Config,
    held: &Held,
    net: Option<&mut NetState>,
    pty: Option<&Pty>,
    host_os_release: Option<&str>,
    sigfd: &SignalFd,
) -> Result<(Outcome, Option<network::keeper::Keeper>), LaunchError> {
    // With a user namespace the outer child makes the root while the
    // machine's cgroup is made here.
    let outer = held
        .userns
        .as_ref()
        .map(|u| spawn_outer(cfg, held, u, pty, host_os_release))
        .transpose()?;
    let (cgroups, policy) = Cgroups::create(
        &held.hierarchies,
        &cfg.cgroup_parent,
        &held.cgroup_name,
        &cfg.limits,
    )?;
    tracing::debug!(?policy, "device policy");
    let result = run_in_cgroups(cfg, held, net, pty, host_os_release, sigfd, &cgroups, outer);
    if let Some((reg, claim)) = &held.registry {
        let _ = reg.remove(claim, &cfg.machine);
    }
    if let Some(path) = &held.resolv_conf {
        let _ = std::fs::remove_file(path);
    }
    cgroups.destroy();
    result
}

#[allow(clippy::too_many_arguments)]
fn run_in_cgroups(
    cfg: &Config,
    held: &Held,
    net: Option<&mut NetState>,
    pty: Option<&Pty>,
    host_os_release: Option<&str>,
    sigfd: &SignalFd,
    cgroups: &Cgroups,
    outer: Option<Outer>,
) -> Result<(Outcome, Option<network::keeper::Keeper>), LaunchError> {
    let cloned = match outer {
        Some(o) => o.start(held, pty, cgroups)?,
        None => clone_child(cfg, held, pty, host_os_release, cgroups)?,
    };
    let child = cloned.pid;
    if let Err(e) = cgroups.add(child.as_raw(), cloned.in_cgroup) {
        return Err(kill_child(child, e.into()));
    }
    let range = cloned
        .userns
        .then(|| held.userns.as_ref().map(|u| u.range))
        .flatten();
    if let Some(range) = range {
        if let Err(e) = crate::userns::write_maps(child.as_raw(), range) {
            let e = io_err("write the user namespace's maps", e);
            return Err(kill_child(child, e));
        }
    }
    let net_plan_interfaces = net
        .as_ref()
        .map(|n| n.plan.registry_interfaces())
        .unwrap_or_default();
    let veths = net
        .as_ref()
        .map(|n| n.plan.veth_pairs())
        .unwrap_or_default();
    // The child builds its file system while the links are made; it waits
    // for them before the last steps and the payload.
    go_ahead(child, &cloned.sync)?;
    let keeper = start_network(cfg, held, net, child, cgroups)?;
    if let Err(e) = send_or_failure(child, &cloned.sync, &SyncMessage::Network) {
        return Err(undone(keeper, e));
    }
    if let Err(e) = wait_for_exec(child, cloned.sync) {
        return Err(undone(keeper, e));
    }
    // Registered once the payload runs, never before: `shell`, `login`,
    // `copy-to` and the others enter the leader's namespaces and root,
    // which are the host's until the child has pivoted into the image.
    let mut watch = register::address_watch(cfg, held, child, veths);
    let addresses = watch
        .as_mut()
        .and_then(|w| w.addresses().ok())
        .unwrap_or_default();
    let registration = Registration::write(
        cfg,
        held,
        child,
        cgroups,
        net_plan_interfaces,
        addresses,
        range,
    )
    .map_err(|err| kill_child(child, LaunchError::Registry(err)));
    let mut registration = match registration {
        Ok(r) => r,
        Err(e) => return Err(undone(keeper, e)),
    };
    if let Some(u) = &held.userns {
        u.reap_helper();
    }
    let mut outer = cloned.outer;
    if let Some(o) = outer.as_mut() {
        o.try_reap();
    }
    let outcome = supervise::supervise(
        cfg,
        child,
        pty,
        sigfd,
        &cloned.notify,
        watch.as_mut(),
        &mut |c| registration.on_change(c),
    )?;
    Ok((outcome, keeper))
}

/// The cloned PID 1, waiting for the go-ahead on `sync`.
struct Cloned {
    pid: Pid,
    /// Born in its cgroup (clone3 with CLONE_INTO_CGROUP).
    in_cgroup: bool,
    sync: OwnedFd,
    /// The launcher's end of the container's /run/host/notify.
    notify: OwnedFd,
    /// Cloned into a new user namespace.
    userns: bool,
    /// The outer child (user namespaces), which exits once it has told us
    /// PID 1's PID: not waited for on the way to the container's start
    /// (its exit tears down its mount namespace, which waits for an RCU
    /// grace period), reaped once the container runs.
    outer: Option<Reap>,
}

/// A child of the launcher that has exited or is about to: reaped when
/// this goes, or before if [`Reap::try_reap`] finds it gone.
struct Reap(Option<Pid>);

impl Reap {
    /// Reaps the child if it has exited, without waiting.
    fn try_reap(&mut self) {
        if let Some(pid) = self.0 {
            if !matches!(
                waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(nix::Error::EINTR)
            ) {
                self.0 = None;
            }
        }
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            while let Err(nix::Error::EINTR) = waitpid(pid, None) {}
        }
    }
}

fn io_err(what: &'static str, e: std::io::Error) -> LaunchError {
    LaunchError::Sys {
        what,
        err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Before PID 1 is cloned into its user namespace: to the container's
/// root what the launcher made for it (its console and its cgroup, which a
/// booted guest manages).
fn hand_over(
    range: crate::userns::UidRange,
    pty: Option<&Pty>,
    cgroups: &Cgroups,
) -> Result<(), LaunchError> {
    if let Some(p) = pty {
        nix::unistd::fchown(
            &p.slave,
            Some(nix::unistd::Uid::from_raw(range.shift)),
            Some(nix::unistd::Gid::from_raw(range.shift)),
        )
        .map_err(sys("hand the console to the container"))?;
    }
    let dir = cgroups.unified();
    for f in [
        "",
        "cgroup.procs",
        "cgroup.subtree_control",
        "cgroup.threads",
    ] {
        let p = dir.join(f);
        match crate::userns::chown_to_root(&p, range) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            r => r.map_err(|e| io_err("hand the cgroup to the container", e))?,
        }
    }
    Ok(())
}

/// The outer child of a launch with a user namespace (see [`child`]),
/// cloned before the machine's cgroup exists: it makes the root while the
/// launcher makes the cgroup, then waits for [`SyncMessage::CgroupReady`].
/// Dropped before that, it ends (its end of `sync` hangs up) and is reaped.
struct Outer {
    /// Closed first on drop: the outer child sees the launcher go away.
    sync: OwnedFd,
    notify: OwnedFd,
    reap: Reap,
}

/// The sockets between the launcher and PID 1 (the launcher's end of
/// `sync` first, then the child's) and the launcher's end of the
/// container's /run/host/notify.
fn child_sockets() -> Result<(OwnedFd, OwnedFd, OwnedFd), LaunchError> {
    let (sync_parent, sync_child) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(sys("socketpair"))?;
    let notify = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(sys("notify socket"))?;
    Ok((sync_parent, sync_child, notify))
}

/// Makes the (empty) resolv.conf the container binds before host0's DHCP
/// fills it in place; owned by the container's root with a user namespace.
fn make_resolv_conf(
    path: &std::path::Path,
    range: Option<crate::userns::UidRange>,
) -> Result<(), LaunchError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::File::create(path)
        .and_then(|_| match range {
            Some(r) => crate::userns::chown_to_root(path, r),
            None => Ok(()),
        })
        .map_err(|e| io_err("make the container's resolv.conf", e))
}

/// Clones the outer child (user namespaces), which makes the root with the
/// host's privileges and, once told the cgroup exists, clones PID 1 into
/// the user namespace and the others.
fn spawn_outer(
    cfg: &Config,
    held: &Held,
    u: &crate::userns::Active,
    pty: Option<&Pty>,
    host_os_release: Option<&str>,
) -> Result<Outer, LaunchError> {
    let (sync_parent, sync_child, notify) = child_sockets()?;
    // Everything the children need is computed before the clone.
    let plan = mount::plan(&mount_config(cfg, held, pty, host_os_release), &cfg.root);
    let envp = cfg.environment(console_term(cfg).as_deref());
    let layer = root_layer(cfg, held);
    let cgroup = Cgroups::unified_path(&held.hierarchies, &cfg.cgroup_parent, &held.cgroup_name);
    // The outer child binds it before the network exists; DHCP fills it in.
    if let Some(path) = &held.resolv_conf {
        make_resolv_conf(path, Some(u.range))?;
    }
    let trees = idmapped_trees(cfg, held)?;
    let (host_plan, plan) = mount::split_for_userns(plan, &cfg.root);
    // SAFETY: the launcher is single-threaded here.
    let pid = match unsafe { crate::sys::clone_fork(libc::CLONE_NEWNS) }.map_err(sys("clone"))? {
        None => {
            drop(sync_parent);
            let start = child::Start {
                cfg,
                plan: &plan,
                sync: sync_child,
                notify,
                pty,
                envp: &envp,
                in_userns: true,
                layer: &layer,
            };
            let outer = child::Outer {
                host_plan: &host_plan,
                trees,
                flags: clone_flags(cfg) | CloneFlags::CLONE_NEWUSER,
                cgroup: &cgroup,
                owner: u.range.shift,
            };
            child::outer_main(start, outer)
        }
        Some(pid) => pid,
    };
    drop(sync_child);
    drop(trees);
    Ok(Outer {
        sync: sync_parent,
        notify,
        reap: Reap(Some(pid)),
    })
}

impl Outer {
    /// Once the machine's cgroup exists: hands it (and the console) to the
    /// container's root, lets the outer child clone PID 1 into it and
    /// takes PID 1's PID.
    fn start(
        self,
        held: &Held,
        pty: Option<&Pty>,
        cgroups: &Cgroups,
    ) -> Result<Cloned, LaunchError> {
        if let Some(u) = &held.userns {
            hand_over(u.range, pty, cgroups)?;
        }
        // The outer child may have failed already: its message says why.
        let _ = sync::send(&self.sync, &SyncMessage::CgroupReady);
        match sync::recv(&self.sync) {
            Ok(Some(SyncMessage::Started { pid, in_cgroup })) => Ok(Cloned {
                pid: Pid::from_raw(pid as i32),
                in_cgroup,
                sync: self.sync,
                notify: self.notify,
                userns: true,
                outer: Some(self.reap),
            }),
            Ok(Some(SyncMessage::Failed(m))) => Err(LaunchError::Child(m)),
            Ok(other) => Err(LaunchError::Child(format!(
                "the container's outer process ended without starting it ({other:?})"
            ))),
            Err(e) => Err(LaunchError::Child(format!(
                "the container's outer process: {e}"
            ))),
        }
    }
}

/// Clones the container's PID 1 into its new namespaces (without a user
/// namespace; see [`spawn_outer`] for one); the child runs
/// [`child::child_main`] and never comes back here.
fn clone_child(
    cfg: &Config,
    held: &Held,
    pty: Option<&Pty>,
    host_os_release: Option<&str>,
    cgroups: &Cgroups,
) -> Result<Cloned, LaunchError> {
    let (sync_parent, sync_child, notify) = child_sockets()?;
    // Everything the child needs is computed before the clone.
    let plan = mount::plan(&mount_config(cfg, held, pty, host_os_release), &cfg.root);
    let envp = cfg.environment(console_term(cfg).as_deref());
    let cg_fd = cgroups.unified_fd().ok();
    let layer = root_layer(cfg, held);
    // The resolv.conf host0's DHCP fills in (in place): made now when
    // host0's link is netd's (a lease is certain), so the child binds it
    // while the links are made; on a LAN bridge it is bound once the links
    // are ready, if DHCP made it.
    if let (Some(path), None) = (&held.resolv_conf, &cfg.network.bridge) {
        make_resolv_conf(path, None)?;
    }
    // Born in its cgroup where the kernel can (no migration wait), else moved after.
    let flags = clone_flags(cfg);
    // SAFETY: the launcher is single-threaded here.
    let cloned = match &cg_fd {
        Some(fd) => match unsafe { crate::sys::clone3_into_cgroup(flags.bits(), fd.as_raw_fd()) } {
            Err(nix::Error::ENOSYS | nix::Error::EINVAL | nix::Error::E2BIG) => None,
            r => Some(r.map(|c| (c, true))),
        },
        None => None,
    };
    // SAFETY: as above.
    let cloned = cloned
        .unwrap_or_else(|| unsafe { crate::sys::clone_fork(flags.bits()) }.map(|c| (c, false)));
    let (pid, in_cgroup) = match cloned.map_err(sys("clone"))? {
        (None, _) => {
            drop(sync_parent);
            child::child_main(child::Start {
                cfg,
                plan: &plan,
                sync: sync_child,
                notify,
                pty,
                envp: &envp,
                in_userns: false,
                layer: &layer,
            })
        }
        (Some(pid), in_cgroup) => (pid, in_cgroup),
    };
    Ok(Cloned {
        pid,
        in_cgroup,
        sync: sync_parent,
        notify,
        userns: false,
        outer: None,
    })
}

/// For `map` ownership: the root and the host directories bound into the
/// container as detached idmapped trees (a bind whose file system cannot be
/// idmapped is bound as it is).
fn idmapped_trees(cfg: &Config, held: &Held) -> Result<mount::Idmapped, LaunchError> {
    let Some(userns) = held.userns.as_ref() else {
        return Ok(mount::Idmapped::default());
    };
    let Some(ns) = userns.idmap.as_ref() else {
        return Ok(mount::Idmapped::default());
    };
    // The tree that showed the file system supports it, else a new one.
    let kept = userns.root_tree.borrow_mut().take();
    let root = match kept {
        Some(tree) => tree,
        None => crate::userns::idmap::clone_tree(&cfg.root, true, ns.as_fd())
            .map_err(sys("make an idmapped mount of the root directory"))?,
    };
    let binds = cfg
        .binds
        .iter()
        .filter(|b| !b.source_in_container)
        .filter_map(|b| {
            match crate::userns::idmap::clone_tree(&b.source, b.recursive, ns.as_fd()) {
                Ok(t) => Some((b.source.clone(), t)),
                Err(e) => {
                    tracing::debug!(
                        "{}: no idmapped mount ({e}), bound as it is",
                        b.source.display()
                    );
                    None
                }
            }
        })
        .collect();
    Ok(mount::Idmapped {
        root: Some(root),
        binds,
    })
}

/// What covers the image as the machine's root.
fn root_layer(cfg: &Config, held: &Held) -> mount::RootLayer {
    use crate::config::Volatile;
    match (&held.layer, cfg.volatile) {
        (_, Volatile::Yes) => mount::RootLayer::VolatileYes,
        (_, Volatile::Overlay) => mount::RootLayer::VolatileOverlay,
        (Some(l), _) => mount::RootLayer::Ephemeral {
            upper: l.upper(),
            work: l.work(),
        },
        (None, _) => mount::RootLayer::Image,
    }
}

/// The namespaces PID 1 is born in.
fn clone_flags(cfg: &Config) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if cfg.network.private {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

/// What the container's file system is built from.
fn mount_config(
    cfg: &Config,
    held: &Held,
    pty: Option<&Pty>,
    host_os_release: Option<&str>,
) -> MountConfig {
    use crate::config::Volatile;
    MountConfig {
        // A volatile root is writable (tmpfs, overlay) or read-only (state)
        // whatever --read-only says, as in systemd-nspawn.
        read_only: match cfg.volatile {
            Volatile::No => cfg.read_only,
            Volatile::State => true,
            Volatile::Yes | Volatile::Overlay => false,
        },
        volatile_state: cfg.volatile == Volatile::State,
        overlays: held.overlays.clone(),
        private_network: cfg.network.private,
        binds: cfg.binds.clone(),
        tmpfs: cfg.tmpfs.clone(),
        console: pty.map(|p| p.slave_path.clone()),
        host_os_release: host_os_release.map(str::to_string),
        container_uuid: cfg.uuid.clone(),
        resolv_conf: held.resolv_conf.clone(),
        userns: held.userns.is_some(),
    }
}

/// The payload's `$TERM`.
fn console_term(cfg: &Config) -> Option<String> {
    match cfg.console {
        ConsoleMode::Interactive => Some(std::env::var("TERM").unwrap_or_else(|_| "vt220".into())),
        ConsoleMode::Pipe => std::env::var("TERM").ok(),
        _ => Some("vt220".into()),
    }
}

/// Kills the cloned child after a failed step and returns the step's error.
fn kill_child(child: Pid, e: LaunchError) -> LaunchError {
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
    e
}

/// Makes the machine's links and starts the keeper that undoes them (or, for
/// a registered private network without links, a keeper of the registry).
/// On failure the child is killed.
/// A launch that failed once its links exist: the keeper tears them down
/// and is waited for, so nothing is left when the launcher reports `e`.
fn undone(keeper: Option<network::keeper::Keeper>, e: LaunchError) -> LaunchError {
    if let Some(k) = keeper {
        k.finish();
    }
    e
}

fn start_network(
    cfg: &Config,
    held: &Held,
    net: Option<&mut NetState>,
    child: Pid,
    cgroups: &Cgroups,
) -> Result<Option<network::keeper::Keeper>, LaunchError> {
    match net {
        Some(n) => match links::setup_network(n, child, held, cgroups) {
            Ok(k) => {
                // From here on the keeper undoes the links if anything fails.
                if let Err(e) = host0::serve_guest(n, cfg, child, &held.run_dir) {
                    return Err(undone(Some(k), kill_child(child, e)));
                }
                Ok(Some(k))
            }
            Err(e) => Err(kill_child(child, e)),
        },
        // A private network without links can still get addresses (set
        // inside): a keeper removes the registry entry and hosts link if the
        // launcher is killed, as it does for machines with links.
        None if cfg.network.private && held.registry.is_some() => {
            match keeper::registry_keeper(child, held, cgroups) {
                Ok(k) => Ok(Some(k)),
                Err(e) => Err(kill_child(child, e)),
            }
        }
        None => Ok(None),
    }
}

/// Lets the child build its file system (it is in its cgroups, its user
/// namespace's maps are written).
fn go_ahead(child: Pid, sync_parent: &OwnedFd) -> Result<(), LaunchError> {
    send_or_failure(child, sync_parent, &SyncMessage::Go)
}

/// Sends `msg`; if the child has gone, its own message says why.
fn send_or_failure(
    child: Pid,
    sync_parent: &OwnedFd,
    msg: &SyncMessage,
) -> Result<(), LaunchError> {
    let Err(e) = sync::send(sync_parent, msg) else {
        return Ok(());
    };
    let mut fds = [nix::poll::PollFd::new(
        sync_parent.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0);
    let failed = ready.then(|| sync::recv(sync_parent));
    if let Some(Ok(Some(SyncMessage::Failed(message)))) = failed {
        let _ = waitpid(child, None);
        return Err(LaunchError::Child(message));
    }
    let err = match e {
        sync::SyncError::Io(err) => err,
        sync::SyncError::Frame(_) => nix::Error::EINVAL,
    };
    Err(kill_child(
        child,
        LaunchError::Sys {
            what: "start container",
            err,
        },
    ))
}

/// Waits for the child's exec (EOF) or its error message.
fn wait_for_exec(child: Pid, sync_parent: OwnedFd) -> Result<(), LaunchError> {
    match sync::recv(&sync_parent) {
        // End-of-file: the payload's exec closed the child's end.
        Ok(None) | Err(sync::SyncError::Io(_)) => Ok(()),
        Ok(Some(SyncMessage::Failed(message))) => {
            let _ = waitpid(child, None);
            Err(LaunchError::Child(message))
        }
        Ok(Some(other)) => Err(kill_child(
            child,
            LaunchError::Child(format!("unexpected message from the container: {other:?}")),
        )),
        Err(sync::SyncError::Frame(e)) => Err(kill_child(
            child,
            LaunchError::Child(format!("bad message from the container: {e}")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_as_nspawn() {
        assert_eq!(Outcome::Exited(3).exit_status(false), 3);
        assert_eq!(Outcome::Killed(libc::SIGKILL).exit_status(false), 137);
        assert_eq!(Outcome::Killed(libc::SIGINT).exit_status(false), 130);
        assert_eq!(Outcome::Killed(libc::SIGINT).exit_status(true), 0);
        assert_eq!(Outcome::Killed(libc::SIGTERM).exit_status(true), 143);
    }
}
