//! Running a container: the launcher's side (cgroups, registry, console,
//! signals, waiting, reboot) and the container's side (namespaces, file
//! system, hostname, capabilities, seccomp, exec).
//!
//! The launcher clones the container's PID 1 into new mount, PID, UTS, IPC
//! (and network) namespaces. The child waits on a socketpair until the
//! launcher has put it into its cgroups, then builds its file system, drops
//! privileges and execs. Errors in the child travel back over the socketpair
//! (which is close-on-exec, so end-of-file means the exec succeeded). PID 1
//! gets SIGKILL when the launcher dies, which takes the whole container down.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use netspawn_common::paths::Paths;
use netspawn_common::registry::{Entry, NameClaim, Registry};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{self, Pid};
use thiserror::Error;

use crate::cgroup::{CgroupError, Cgroups, Hierarchies};
use crate::config::Config;
use crate::console::{self, ConsoleMode, EscapeDetector, Pty, RawTerminal};
use crate::lock::{ImageLock, LockError};
use crate::mount::{self, MountConfig};
use crate::network;

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("Machine '{0}' already exists")]
    Busy(String),
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("{0}")]
    Cgroup(#[from] CgroupError),
    #[error("{0}")]
    Console(#[from] console::ConsoleError),
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
    registry: Option<(Registry, NameClaim)>,
    run_dir: PathBuf,
    _image_lock: ImageLock,
    hierarchies: Hierarchies,
    cgroup_name: String,
}

/// The machine's network links: what to make and the host's netlink socket.
struct NetState {
    plan: network::Plan,
    host: network::rtnl::Netlink,
    zones: network::zone::Zones,
    /// netd, when a link it serves (ve-, vz-) or a port forward is involved.
    netd: Option<crate::netd_client::NetdClient>,
}

/// Runs the container to completion and returns netspawn's exit status.
pub fn run(cfg: &Config, paths: &Paths) -> Result<i32, LaunchError> {
    // Claim the name and the image before creating anything.
    let registry = if cfg.register {
        let reg = Registry::new(paths);
        let claim = reg.claim(&cfg.machine).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => LaunchError::Busy(cfg.machine.clone()),
            _ => LaunchError::Registry(e),
        })?;
        Some((reg, claim))
    } else {
        None
    };
    let image_lock = ImageLock::acquire(&paths.locks_dir(), &cfg.root, cfg.read_only)?;
    let hierarchies = Hierarchies::detect()?;
    let cgroup_name = if cfg.register {
        cfg.machine.clone()
    } else {
        format!("{}.{}", cfg.machine, std::process::id())
    };
    let held = Held {
        registry,
        run_dir: paths.run_dir.clone(),
        _image_lock: image_lock,
        hierarchies,
        cgroup_name,
    };
    let mut net = if cfg.network.has_links() {
        let machine_id = network::naming::host_machine_id().unwrap_or_else(|| {
            tracing::warn!(
                "no machine ID in /etc/machine-id: MACs are stable per name but not per host"
            );
            [0; 16]
        });
        let plan = network::plan(&cfg.machine, &machine_id, &cfg.network);
        let mut host = network::rtnl::Netlink::open().map_err(network::NetError::from)?;
        network::check(&plan, &mut host)?;
        let served =
            cfg.network.veth || cfg.network.zone.is_some() || !cfg.network.ports.is_empty();
        let netd = if served {
            Some(crate::netd_client::NetdClient::connect_or_start(paths)?)
        } else {
            None
        };
        Some(NetState {
            plan,
            host,
            zones: network::zone::Zones::new(paths.locks_dir()),
            netd,
        })
    } else {
        None
    };

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

    let result: Result<Outcome, LaunchError> = (|| loop {
        // A fresh pty per boot: the kernel hangs up the old one when the
        // guest's session ends.
        let pty = match cfg.console {
            ConsoleMode::Pipe => None,
            _ => Some(console::open_pty()?),
        };
        // The payload may ask for its terminal's size at once: set it before it starts.
        if let (Some(p), ConsoleMode::Interactive) = (&pty, cfg.console) {
            console::copy_window_size(std::io::stdin().as_fd(), p.master.as_fd());
        }
        let (outcome, keeper) = run_once(
            cfg,
            &held,
            net.as_mut(),
            pty.as_ref(),
            host_os_release.as_deref(),
            &sigfd,
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
    })();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    drop(_raw);
    let outcome = result?;
    let status = outcome.exit_status(cfg.boot);
    tracing::debug!(status, "cleaned up, exiting");
    if !cfg.quiet {
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
    Ok(status)
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
    let (cgroups, policy) = Cgroups::create(
        &held.hierarchies,
        &std::env::var(netspawn_common::paths::ENV_CGROUP_PARENT)
            .unwrap_or_else(|_| "netspawn".into()),
        &held.cgroup_name,
    )?;
    tracing::debug!(?policy, "device policy");
    let result = run_in_cgroups(cfg, held, net, pty, host_os_release, sigfd, &cgroups);
    if let Some((reg, claim)) = &held.registry {
        let _ = reg.remove(claim, &cfg.machine);
    }
    if cfg.dhcp_host0 {
        let _ = std::fs::remove_file(resolv_conf_path(cfg, &held.run_dir));
    }
    cgroups.destroy();
    result
}

fn run_in_cgroups(
    cfg: &Config,
    held: &Held,
    net: Option<&mut NetState>,
    pty: Option<&Pty>,
    host_os_release: Option<&str>,
    sigfd: &SignalFd,
    cgroups: &Cgroups,
) -> Result<(Outcome, Option<network::keeper::Keeper>), LaunchError> {
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
    // So the container can send credentials-free notifications of any size we read.
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if cfg.network.private {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let mount_cfg = MountConfig {
        read_only: cfg.read_only,
        private_network: cfg.network.private,
        binds: cfg.binds.clone(),
        tmpfs: cfg.tmpfs.clone(),
        console: pty.map(|p| p.slave_path.clone()),
        host_os_release: host_os_release.map(str::to_string),
        container_uuid: cfg.uuid.clone(),
        resolv_conf: cfg.dhcp_host0.then(|| resolv_conf_path(cfg, &held.run_dir)),
    };
    let term = match cfg.console {
        ConsoleMode::Interactive => Some(std::env::var("TERM").unwrap_or_else(|_| "vt220".into())),
        ConsoleMode::Pipe => std::env::var("TERM").ok(),
        _ => Some("vt220".into()),
    };
    let envp = cfg.environment(term.as_deref());
    // Everything the child needs is computed before the clone.
    let plan = mount::plan(&mount_cfg, &cfg.root);

    // Born in its cgroup where the kernel can (no migration wait), else moved after.
    let cg_fd = cgroups.unified_fd().ok();
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
    let (child, in_cgroup) = match cloned.map_err(sys("clone"))? {
        (None, _) => {
            drop(sync_parent);
            child_main(cfg, &plan, sync_child, notify, pty, &envp)
        }
        (Some(pid), in_cgroup) => (pid, in_cgroup),
    };
    drop(cg_fd);
    drop(sync_child);

    let kill_child = |e: LaunchError| {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        e
    };
    if let Err(e) = cgroups.add(child.as_raw(), in_cgroup) {
        return Err(kill_child(e.into()));
    }
    let net_plan_interfaces = net
        .as_ref()
        .map(|n| n.plan.registry_interfaces())
        .unwrap_or_default();
    // Links, made while the child waits for the go-ahead.
    let keeper = match net {
        Some(n) => match setup_network(n, child, held, cgroups) {
            Ok(k) => {
                // From here on the keeper undoes the links if anything fails.
                if let Err(e) = serve_guest(n, cfg, child, &held.run_dir) {
                    return Err(kill_child(e));
                }
                Some(k)
            }
            Err(e) => return Err(kill_child(e)),
        },
        // A private network without links can still get addresses (set
        // inside): a keeper removes the registry entry and hosts link if the
        // launcher is killed, as it does for machines with links.
        None if cfg.network.private && held.registry.is_some() => {
            match registry_keeper(child, held, cgroups) {
                Ok(k) => Some(k),
                Err(e) => return Err(kill_child(e)),
            }
        }
        None => None,
    };
    // Let the child go on, then wait for its exec (EOF) or its error message.
    if let Err(e) = unistd::write(&sync_parent, b"g") {
        return Err(kill_child(LaunchError::Sys {
            what: "start container",
            err: e,
        }));
    }
    let mut buf = [0u8; 4096];
    let n = loop {
        match unistd::read(&sync_parent, &mut buf) {
            Err(nix::Error::EINTR) => continue,
            r => break r.unwrap_or(0),
        }
    };
    if n > 0 {
        let _ = waitpid(child, None);
        return Err(LaunchError::Child(
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    }
    drop(sync_parent);
    let net_interfaces = net_plan_interfaces.clone();
    // The addresses inside a private network namespace, kept current in the registry.
    let mut watch = match (cfg.network.private, &held.registry) {
        (true, Some(_)) => std::fs::File::open(format!("/proc/{}/ns/net", child.as_raw()))
            .ok()
            .and_then(|ns| {
                network::addrs::AddressWatch::open_in(ns.as_fd())
                    .map_err(|e| tracing::warn!("cannot watch addresses: {e}"))
                    .ok()
            }),
        _ => None,
    };
    let addresses = watch
        .as_mut()
        .and_then(|w| w.addresses().ok())
        .unwrap_or_default();
    let mut entry = None;
    // Registered once the payload runs, so readers never see the launcher's image as the leader.
    if let Some((reg, claim)) = &held.registry {
        let e = Entry {
            name: cfg.machine.clone(),
            uuid: cfg.uuid.clone(),
            leader: child.as_raw() as u32,
            launcher: std::process::id(),
            launcher_start: crate::sys::self_start_time(),
            root: cfg.root.clone(),
            class: "container".into(),
            service: "netspawn".into(),
            state: "running".into(),
            boot: cfg.boot,
            ready: !cfg.notify_ready,
            timestamp_usec: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            cgroups: cgroups.paths.clone(),
            private_network: cfg.network.private,
            interfaces: net_interfaces,
            addresses,
        };
        if let Err(err) = reg.write(claim, &e) {
            return Err(kill_child(LaunchError::Registry(err)));
        }
        entry = Some(e);
    }
    if !cfg.notify_ready {
        crate::ready::tell_manager();
    }
    let mut told = !cfg.notify_ready;
    let mut on_addresses = |change: crate::ready::Change| {
        if !told && change == crate::ready::Change::Ready {
            told = true;
            crate::ready::tell_manager();
        }
        if let (Some(e), Some((reg, claim))) = (entry.as_mut(), &held.registry) {
            let changed = match change {
                crate::ready::Change::Addresses(addrs) if e.addresses != addrs => {
                    tracing::debug!(?addrs, "addresses changed");
                    e.addresses = addrs;
                    true
                }
                crate::ready::Change::Ready if !e.ready => {
                    e.ready = true;
                    true
                }
                _ => false,
            };
            if changed {
                if let Err(err) = reg.write(claim, e) {
                    tracing::warn!("registry: {err}");
                }
            }
        }
    };
    let outcome = supervise(
        cfg,
        child,
        pty,
        sigfd,
        &notify,
        watch.as_mut(),
        &mut on_addresses,
    )?;
    Ok((outcome, keeper))
}

/// Asks netd to serve the machine's link (address, DHCP, DNS) and waits
/// until it does; registers port forwards.
fn serve_guest(
    n: &mut NetState,
    cfg: &Config,
    child: Pid,
    run_dir: &Path,
) -> Result<(), LaunchError> {
    let primary = n.plan.links.iter().find_map(|l| match l {
        network::PlannedLink::Veth {
            host,
            container,
            container_mac,
            ..
        } if container == "host0" => Some((host.clone(), *container_mac)),
        _ => None,
    });
    let Some((ifname, mac)) = primary else {
        return Ok(());
    };
    let mut managed = false;
    if let Some(netd) = n.netd.as_mut() {
        let answer = netd.request(&netspawn_common::netd::Request::Link {
            ifname: ifname.clone(),
            timeout_ms: 10_000,
        })?;
        tracing::debug!("netd: {ifname}: {answer}");
        managed = answer.starts_with("address=");
    }
    if cfg.dhcp_host0 {
        configure_host0(cfg, child, mac, managed, run_dir)?;
    }
    let Some(netd) = n.netd.as_mut() else {
        return Ok(());
    };
    if !cfg.network.ports.is_empty() {
        let forwards = cfg
            .network
            .ports
            .iter()
            .map(|p| netspawn_common::netd::Forward {
                udp: p.proto == crate::spec::Proto::Udp,
                host_port: p.host_port,
                container_port: p.container_port,
            })
            .collect();
        netd.request(&netspawn_common::netd::Request::Ports {
            owner: cfg.machine.clone(),
            ifname,
            mac: network::naming::format_mac(&mac),
            forwards,
        })?;
    }
    Ok(())
}

/// Where the launcher writes the container's resolv.conf.
fn resolv_conf_path(cfg: &Config, run_dir: &Path) -> PathBuf {
    let name = if cfg.register {
        cfg.machine.clone()
    } else {
        format!("{}.{}", cfg.machine, std::process::id())
    };
    run_dir.join("resolv").join(format!("{name}.conf"))
}

/// Our own DHCP client configures host0 (address, default route) from
/// inside the container's namespace, and writes the resolv.conf the
/// container will see. On a link netd serves, failure is an error; on a
/// LAN bridge without a DHCP server, host0 stays bare with a warning.
fn configure_host0(
    cfg: &Config,
    child: Pid,
    mac: network::naming::Mac,
    managed: bool,
    run_dir: &Path,
) -> Result<(), LaunchError> {
    let started = Instant::now();
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", child.as_raw())).map_err(|e| {
        LaunchError::Sys {
            what: "open the container's network namespace",
            err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    })?;
    let timeout = std::time::Duration::from_secs(if managed { 10 } else { 5 });
    let lease =
        match network::dhcp_client::acquire(ns.as_fd(), "host0", mac, &cfg.hostname, timeout) {
            Ok(l) => l,
            Err(e) if !managed => {
                tracing::warn!("{e}; host0 stays unconfigured");
                if !cfg.quiet {
                    eprintln!("netspawn: {e}; host0 stays unconfigured.");
                }
                return Ok(());
            }
            Err(e) => return Err(LaunchError::Dhcp(e.to_string())),
        };
    let mut inside =
        network::rtnl::Netlink::open_in(ns.as_fd()).map_err(network::NetError::from)?;
    network::dhcp_client::configure(&mut inside, "host0", &lease)
        .map_err(|e| LaunchError::Dhcp(e.to_string()))?;
    let path = resolv_conf_path(cfg, run_dir);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&path, network::dhcp_client::resolv_conf(&lease)).map_err(|e| {
        LaunchError::Sys {
            what: "write the container's resolv.conf",
            err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    })?;
    tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, address = %lease.address, "host0 configured by DHCP");
    Ok(())
}

/// Starts a keeper that only removes the machine's registry entry, hosts
/// link and cgroups after the launcher is gone (it has no links to undo).
fn registry_keeper(
    child: Pid,
    held: &Held,
    cgroups: &Cgroups,
) -> Result<network::keeper::Keeper, LaunchError> {
    let sys = |what: &'static str, e: std::io::Error| LaunchError::Sys {
        what,
        err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", child.as_raw()))
        .map_err(|e| sys("open the container's network namespace", e))?;
    let teardown = network::keeper::Teardown {
        registry_entry: held.registry.as_ref().map(|(r, c)| r.entry_path(&c.name)),
        hosts_link: held.registry.as_ref().map(|(r, c)| r.hosts_path(&c.name)),
        cgroups: cgroups.paths.clone(),
        ..Default::default()
    };
    let zones = network::zone::Zones::new(held.run_dir.join("locks"));
    network::keeper::spawn(teardown, ns.into(), zones, &[held._image_lock.as_raw_fd()])
        .map_err(|e| sys("start the network keeper", e))
}

/// Makes the machine's links for the cloned child and starts the keeper
/// that will undo them. A failure half-way undoes what was made.
fn setup_network(
    n: &mut NetState,
    child: Pid,
    held: &Held,
    cgroups: &Cgroups,
) -> Result<network::keeper::Keeper, LaunchError> {
    use std::os::fd::AsRawFd as _;
    let started = Instant::now();
    let ns: OwnedFd = std::fs::File::open(format!("/proc/{}/ns/net", child.as_raw()))
        .map_err(|e| LaunchError::Sys {
            what: "open the container's network namespace",
            err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?
        .into();
    let mut undo = network::Teardown::default();
    let made = network::setup(
        &n.plan,
        &mut n.host,
        child.as_raw() as u32,
        ns.as_fd(),
        &n.zones,
        &mut undo,
    )
    .and_then(|()| {
        let mut inside = network::rtnl::Netlink::open_in(ns.as_fd())?;
        network::configure_container(&n.plan, &mut inside)
    });
    if let Err(e) = made {
        let host_ns = std::fs::File::open("/proc/thread-self/ns/net").ok();
        let mut inside = network::rtnl::Netlink::open_in(ns.as_fd()).ok();
        if let Some(host_ns) = &host_ns {
            for err in undo.run(
                &mut n.host,
                inside.as_mut().map(|i| i as &mut dyn network::rtnl::Rtnl),
                host_ns.as_fd(),
                &n.zones,
            ) {
                tracing::warn!("undoing network setup: {err}");
            }
        }
        return Err(e.into());
    }
    let close: Vec<i32> = vec![held._image_lock.as_raw_fd()];
    undo.registry_entry = held
        .registry
        .as_ref()
        .map(|(reg, c)| reg.entry_path(&c.name));
    undo.hosts_link = held
        .registry
        .as_ref()
        .map(|(reg, c)| reg.hosts_path(&c.name));
    undo.cgroups = cgroups.paths.clone();
    let keeper = network::keeper::spawn(undo, ns, n.zones.clone(), &close);
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "network links set up"
    );
    keeper.map_err(|e| LaunchError::Sys {
        what: "start the network keeper",
        err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })
}

/// Forwards the console and signals until PID 1 dies.
fn supervise(
    cfg: &Config,
    child: Pid,
    pty: Option<&Pty>,
    sigfd: &SignalFd,
    notify: &OwnedFd,
    mut watch: Option<&mut network::addrs::AddressWatch>,
    on_addresses: &mut dyn FnMut(crate::ready::Change),
) -> Result<Outcome, LaunchError> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let forward_out = matches!(
        cfg.console,
        ConsoleMode::Interactive | ConsoleMode::ReadOnly
    );
    let forward_in = cfg.console == ConsoleMode::Interactive;
    if let Some(p) = pty {
        let _ = nix::fcntl::fcntl(
            &p.master,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        if forward_in {
            console::copy_window_size(stdin.as_fd(), p.master.as_fd());
        }
    }
    let mut stdin_open = forward_in;
    let mut escape = EscapeDetector::default();
    let mut stop_requests = 0;
    let mut buf = vec![0u8; 16 * 1024];
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
        let master_idx = match (pty, forward_out) {
            (Some(p), true) => {
                fds.push(PollFd::new(p.master.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let stdin_idx = if stdin_open && pty.is_some() {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            Some(fds.len() - 1)
        } else {
            None
        };
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                return Err(LaunchError::Sys {
                    what: "poll",
                    err: e,
                })
            }
        }
        let ready = |i: usize, fds: &[PollFd]| fds[i].revents().is_some_and(|r| !r.is_empty());
        if let (Some(i), Some(p)) = (master_idx, pty) {
            if ready(i, &fds) {
                let _ = console::pump(p.master.as_fd(), stdout.as_fd(), &mut buf);
            }
        }
        if let (Some(i), Some(p)) = (stdin_idx, pty) {
            if ready(i, &fds) {
                match unistd::read(stdin.as_fd(), &mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        if escape.feed(&buf[..n], Instant::now()) {
                            eprint!("\r\nContainer {} terminated by user.\r\n", cfg.machine);
                            let _ = kill(child, Signal::SIGKILL);
                        } else {
                            let _ = console::write_all(p.master.as_fd(), &buf[..n]);
                        }
                    }
                }
            }
        }
        if ready(1, &fds) && crate::ready::read_notifications(notify.as_fd(), &cfg.machine) {
            on_addresses(crate::ready::Change::Ready);
        }
        if let (Some(i), Some(w)) = (watch_idx, watch.as_deref_mut()) {
            if ready(i, &fds) {
                w.drain();
                if let Ok(a) = w.addresses() {
                    on_addresses(crate::ready::Change::Addresses(a));
                }
            }
        }
        if ready(0, &fds) {
            while let Ok(Some(info)) = sigfd.read_signal() {
                let signo = info.ssi_signo as i32;
                match Signal::try_from(signo) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(Signal::SIGWINCH) => {
                        if let (Some(p), true) = (pty, forward_in) {
                            console::copy_window_size(stdin.as_fd(), p.master.as_fd());
                        }
                    }
                    Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT) => {
                        stop_requests += 1;
                        let sig = match cfg.kill_signal {
                            Some(s) if stop_requests == 1 => s,
                            _ => libc::SIGKILL,
                        };
                        tracing::debug!("stop requested, sending signal {sig} to PID 1");
                        // SAFETY: plain kill(2) with a validated signal number.
                        unsafe { libc::kill(child.as_raw(), sig) };
                    }
                    _ => {}
                }
            }
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => {
                    return Ok(finish(pty, forward_out, &mut buf, Outcome::Exited(code)))
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return Ok(finish(
                        pty,
                        forward_out,
                        &mut buf,
                        Outcome::Killed(sig as i32),
                    ))
                }
                _ => {}
            }
        }
    }
}

/// Copies what the container left in the pty to our output.
fn finish(pty: Option<&Pty>, forward_out: bool, buf: &mut [u8], outcome: Outcome) -> Outcome {
    tracing::debug!(?outcome, "container PID 1 exited");
    if let (Some(p), true) = (pty, forward_out) {
        let stdout = std::io::stdout();
        while let Ok((true, n)) = console::pump(p.master.as_fd(), stdout.as_fd(), buf) {
            if n == 0 {
                break;
            }
        }
    }
    let _ = std::io::stdout().flush();
    outcome
}

// ---------------------------------------------------------------------------
// The container's side. Runs in the cloned child; never returns.

fn child_main(
    cfg: &Config,
    plan: &[mount::MountOp],
    sync: OwnedFd,
    notify: OwnedFd,
    pty: Option<&Pty>,
    envp: &[String],
) -> ! {
    let err = match child_setup(cfg, plan, &sync, notify, pty, envp) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = unistd::write(&sync, err.as_bytes());
    // SAFETY: _exit skips atexit handlers and destructors the parent owns.
    unsafe { libc::_exit(1) }
}

enum Never {}

fn child_setup(
    cfg: &Config,
    plan: &[mount::MountOp],
    sync: &OwnedFd,
    notify: OwnedFd,
    pty: Option<&Pty>,
    envp: &[String],
) -> Result<Never, String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: nix::Error| format!("{what}: {err}")
    };
    // Die with the launcher; then wait until it has placed us in our cgroups.
    crate::sys::set_parent_death_signal(Signal::SIGKILL).map_err(e("set parent death signal"))?;
    let mut go = [0u8; 1];
    if !matches!(unistd::read(sync, &mut go), Ok(1)) {
        return Err("launcher went away".into());
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(e("create cgroup namespace"))?;

    // File system.
    mount::<str, str, str, str>(None, "/", None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None)
        .map_err(e("make mounts private"))?;
    mount::<Path, Path, str, str>(
        Some(&cfg.root),
        &cfg.root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(e("bind the root directory"))?;
    mount::apply(plan).map_err(|err| err.to_string())?;
    // The notify socket, bound relative to /run/host so long root paths fit.
    let host_dir = mount::in_root(&cfg.root, Path::new("/run/host"));
    unistd::chdir(&host_dir).map_err(e("enter /run/host"))?;
    let addr = UnixAddr::new("notify").map_err(e("notify socket address"))?;
    socket::bind(notify.as_raw_fd(), &addr).map_err(e("bind /run/host/notify"))?;
    drop(notify);

    unistd::sethostname(&cfg.hostname).map_err(e("set hostname"))?;
    if cfg.network.private {
        loopback_up().map_err(e("bring up lo"))?;
    }

    unistd::chdir(&cfg.root).map_err(e("enter root"))?;
    crate::sys::pivot_root(Path::new("."), Path::new(".")).map_err(e("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(e("detach old root"))?;
    let exec = crate::exec::prepare(cfg, envp).map_err(|err| err.to_string())?;
    let envp = exec.env.as_slice();

    // Resolve the program inside the container now that it is our root.
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
    let c = |s: &str| {
        std::ffi::CString::new(s).map_err(|_| format!("argument contains a NUL byte: {s:?}"))
    };
    let prog_c = c(&program)?;
    let argv: Vec<std::ffi::CString> =
        cfg.command.iter().map(|s| c(s)).collect::<Result<_, _>>()?;
    let envv: Vec<std::ffi::CString> = envp.iter().map(|s| c(s)).collect::<Result<_, _>>()?;

    crate::sys::cloexec_from(3).map_err(e("close host file descriptors"))?;
    crate::caps::drop_bounding_set(cfg.caps).map_err(|err| err.to_string())?;
    crate::seccomp::install(&cfg.syscall_filter, cfg.caps).map_err(|err| err.to_string())?;
    crate::exec::apply(cfg, &exec).map_err(|err| err.to_string())?;

    let become_session = |pty: Option<&Pty>| -> Result<(), String> {
        unistd::setsid().map_err(e("setsid"))?;
        if let Some(p) = pty {
            for fd in 0..3 {
                // SAFETY: dup2 onto the standard descriptors.
                if unsafe { libc::dup2(p.slave.as_raw_fd(), fd) } < 0 {
                    return Err(format!("set up console: {}", nix::Error::last()));
                }
            }
            // SAFETY: TIOCSCTTY takes an int argument.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
                return Err(format!(
                    "acquire controlling terminal: {}",
                    nix::Error::last()
                ));
            }
        }
        Ok(())
    };

    if cfg.as_pid2 {
        // PID 1 keeps every signal blocked and collects them with sigwait.
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None)
            .map_err(e("block signals"))?;
        // SAFETY: we are single-threaded.
        match unsafe { unistd::fork() }.map_err(e("fork PID 2"))? {
            unistd::ForkResult::Child => {
                become_session(pty)?;
                nix::sys::signal::sigprocmask(
                    SigmaskHow::SIG_SETMASK,
                    Some(&SigSet::empty()),
                    None,
                )
                .map_err(e("unblock signals"))?;
                let err = unistd::execve(&prog_c, &argv, &envv).unwrap_err();
                Err(format!("Failed to execute {program}: {}", err.desc()))
            }
            unistd::ForkResult::Parent { child } => {
                // SAFETY: closing our copy of the sync socket; PID 2 keeps its own until exec.
                unsafe { libc::close(sync.as_raw_fd()) };
                crate::init::run(child)
            }
        }
    } else {
        become_session(pty)?;
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(e("unblock signals"))?;
        let err = unistd::execve(&prog_c, &argv, &envv).unwrap_err();
        Err(format!("Failed to execute {program}: {}", err.desc()))
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
