//! `up`, `down` and `status` of a lab.
//!
//! `up` launches every machine with the real `netspawn` through `start`'s
//! detached launcher ([`crate::ctl::lifecycle::start::launch`]): its own log
//! pump, its own session, `-U` and `-x` unless the file says otherwise. It
//! runs in waves: a machine is launched once every machine of its `after`
//! is ready, all that can go at once go at once. Once both ends of a
//! point-to-point link are registered the link is made, a machine's further
//! zone legs once it is registered; addresses follow their interfaces, routes
//! and `exec` commands follow once all of a machine's links exist. A machine
//! is ready when it runs (and said `READY=1` where `notify_ready` asks for
//! it), its links to machines that do not wait for it exist, and its
//! `wait_for` probe succeeds. `up` returns when all are ready; when anything
//! fails it removes the whole lab (as `down`) and names what failed.
//!
//! Every launched machine is recorded in `RUN_DIR/labs/LAB/launched` (name,
//! launcher and pump PIDs with their start times) before `up` waits for it,
//! so a `down` after `kill -9` of `up` finds machines that were not
//! registered yet. `down` waits for those to register (or fail), kills every
//! machine's PID 1, waits until launchers and log pumps are gone (a pump
//! ends when the machine's network keeper has removed its links), removes
//! what `up` may have left on the host between two netlink calls, and the
//! lab's zone bridges if empty.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netlink::{Netlink, Rtnl};
use netspawn_common::paths::Paths;
use netspawn_common::registry::{process_start_time, Entry, Registry};

use super::graph::Live;
use super::links;
use super::model::{Lab, Machine, Probe};
use super::{zonefile, TopoError};
use crate::ctl::lifecycle::start::{self, Pending, Progress};
use crate::ctl::signal;
use crate::netd_client::NetdClient;
use crate::network::zone::Zones;

/// How long a machine may take to be registered, and a probe to succeed.
pub const MACHINE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `down` waits for machines to go.
pub const DOWN_TIMEOUT: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_millis(5);

/// The addresses of the lab's running machines, from the registry.
pub fn live_addresses(lab: &Lab) -> Live {
    let reg = crate::ctl::registry();
    let mut out = Live::new();
    for m in &lab.machines {
        if let Ok(Some(e)) = reg.get(&m.name) {
            out.insert(
                m.name.clone(),
                e.addresses.iter().map(|a| a.to_string()).collect(),
            );
        }
    }
    out
}

/// The lab's state directory.
pub fn lab_dir(paths: &Paths, lab: &str) -> PathBuf {
    paths.run_dir.join("labs").join(lab)
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TopoError {
    let path = path.to_path_buf();
    move |err| TopoError::Io { what, path, err }
}

/// The image directory machine `m` runs.
fn image_path(paths: &Paths, m: &Machine) -> PathBuf {
    if m.image.starts_with('/') {
        PathBuf::from(&m.image)
    } else {
        paths.image_dir.join(&m.image)
    }
}

/// The launcher's arguments for machine `m`.
pub fn launcher_args(paths: &Paths, m: &Machine) -> Vec<String> {
    let mut v = vec![
        "--quiet".to_string(),
        "--keep-unit".into(),
        format!("--machine={}", m.name),
        format!("--directory={}", image_path(paths, m).display()),
    ];
    if m.user_namespace {
        v.push("-U".into());
    }
    if m.ephemeral {
        v.push("--ephemeral".into());
    }
    match m.zones.first() {
        Some((zone, _)) => v.push(format!("--network-zone={zone}")),
        None => v.push("--private-network".into()),
    }
    if m.notify_ready {
        v.push("--notify-ready=yes".into());
    }
    // With extra settings, `env` goes into the settings file instead: a
    // command-line --setenv would make the launcher ignore the file's
    // Environment= (the command line wins per setting, as in systemd).
    if m.settings.is_none() {
        for (k, val) in &m.env {
            v.push(format!("--setenv={k}={val}"));
        }
    }
    for b in &m.binds {
        v.push(format!("--bind={b}"));
    }
    if m.boot {
        v.push("--boot".into());
    } else {
        v.push("--".into());
        v.extend(m.command.iter().cloned());
    }
    v
}

/// Everything `up` checks before it makes anything: images there, no
/// machine of the lab running.
fn preflight(lab: &Lab, paths: &Paths) -> Result<(), TopoError> {
    for m in &lab.machines {
        let img = image_path(paths, m);
        if !img.is_dir() {
            return Err(TopoError::File {
                file: lab.file.clone(),
                msg: format!(
                    "machine '{}': no image '{}' ({} is no directory)",
                    m.short,
                    m.image,
                    img.display()
                ),
            });
        }
    }
    if lab.zones.iter().any(|z| z.subnet.is_some()) {
        zonefile::check_clashes(lab, paths, &mut Netlink::open()?)?;
    }
    let reg = Registry::new(paths);
    for m in &lab.machines {
        if let Ok(Some(_)) = reg.get(&m.name) {
            return Err(TopoError::Usage(format!(
                "lab '{}' is up already (machine {} runs): 'netspawnctl down {}' first",
                lab.name,
                m.name,
                lab.file.display()
            )));
        }
    }
    Ok(())
}

/// A record of one launched machine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Launched {
    name: String,
    launcher: (u32, u64),
    pump: (u32, u64),
}

fn alive(p: (u32, u64)) -> bool {
    p.0 != 0 && process_start_time(p.0) == Some(p.1)
}

fn read_launched(dir: &Path) -> Vec<Launched> {
    let text = std::fs::read_to_string(dir.join("launched")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [name, lp, ls, pp, ps] = f[..] else {
                return None;
            };
            Some(Launched {
                name: name.to_string(),
                launcher: (lp.parse().ok()?, ls.parse().ok()?),
                pump: (pp.parse().ok()?, ps.parse().ok()?),
            })
        })
        .collect()
}

/// What a machine is doing during `up`.
enum Phase {
    Waiting,
    Launched(Pending),
    Registered,
}

struct Node<'a> {
    m: &'a Machine,
    phase: Phase,
    leader: u32,
    launched_at: Instant,
    legs: bool,
    /// Routes added and `exec` run (all its links exist).
    finished: bool,
    probe: Option<std::thread::JoinHandle<Result<(), String>>>,
    probe_ok: bool,
    ready: bool,
}

/// What `up` was asked.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub file: PathBuf,
    pub quiet: bool,
}

/// `up FILE`.
pub fn up(o: &UpOptions) -> Result<i32, TopoError> {
    let lab = super::load(&o.file)?;
    let paths = Paths::from_env();
    preflight(&lab, &paths)?;
    let dir = lab_dir(&paths, &lab.name);
    std::fs::create_dir_all(&dir).map_err(io("make the lab's directory", &dir))?;
    let started = Instant::now();
    match bring_up(&lab, &paths, &dir) {
        Ok(()) => {
            if !o.quiet {
                eprintln!(
                    "lab '{}': {} machines, {} links ready in {:.2} s",
                    lab.name,
                    lab.machines.len(),
                    lab.links.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(0)
        }
        Err(e) => {
            // Machines that just started: no graceful poweroff.
            let left = teardown(&lab, &paths, Duration::ZERO);
            let mut what = e.to_string();
            if !left.is_empty() {
                what.push_str(&format!("; and removing it failed: {}", left.join("; ")));
            }
            Err(TopoError::Up {
                lab: lab.name.clone(),
                what,
            })
        }
    }
}

/// The machines each machine waits for, directly or not.
fn waits_for(lab: &Lab) -> BTreeMap<&str, BTreeSet<&str>> {
    let direct: BTreeMap<&str, Vec<&str>> = lab
        .machines
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.after.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    for m in &lab.machines {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = direct[m.name.as_str()].clone();
        while let Some(n) = todo.pop() {
            if seen.insert(n) {
                todo.extend(direct.get(n).into_iter().flatten().copied());
            }
        }
        out.insert(m.name.as_str(), seen);
    }
    out
}

fn settings_dir(dir: &Path) -> PathBuf {
    dir.join("nspawn")
}

fn bring_up(lab: &Lab, paths: &Paths, dir: &Path) -> Result<(), TopoError> {
    // Zones that ask for more than netd's defaults: their files first, read
    // by netd before the first machine makes the zone's bridge.
    // A connection to netd, made on first need (also for the legs' DHCP).
    let mut netd: Option<NetdClient> = None;
    if zonefile::write(lab, paths)? {
        let mut c = NetdClient::connect_or_start(paths)
            .map_err(|e| TopoError::Usage(format!("zone files: {e}")))?;
        c.request(&netspawn_common::netd::Request::Reload)
            .map_err(|e| TopoError::Usage(format!("zone files: {e}")))?;
        netd = Some(c);
    }
    // Extra .nspawn settings: files of the lab's own, searched first.
    let mut env: Vec<(String, String)> = Vec::new();
    if lab.machines.iter().any(|m| m.settings.is_some()) {
        let sdir = settings_dir(dir);
        std::fs::create_dir_all(&sdir).map_err(io("make", &sdir))?;
        for m in &lab.machines {
            if let Some(s) = &m.settings {
                let p = sdir.join(format!("{}.nspawn", m.name));
                let mut text = s.clone();
                if !m.env.is_empty() {
                    text.push_str("\n[Exec]\n");
                    for (k, v) in &m.env {
                        text.push_str(&format!("Environment={k}={v}\n"));
                    }
                }
                std::fs::write(&p, text).map_err(io("write", &p))?;
            }
        }
        let mut search = vec![sdir.display().to_string()];
        search.extend(paths.settings_path.iter().map(|p| p.display().to_string()));
        env.push((
            netspawn_common::paths::ENV_SETTINGS_PATH.to_string(),
            search.join(":"),
        ));
    }
    let record_path = dir.join("launched");
    let mut record = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record_path)
        .map_err(io("open", &record_path))?;

    let waits = waits_for(lab);
    let mut nodes: Vec<Node<'_>> = lab
        .machines
        .iter()
        .map(|m| Node {
            m,
            phase: Phase::Waiting,
            leader: 0,
            launched_at: Instant::now(),
            legs: m.zones.len() <= 1,
            finished: false,
            probe: None,
            probe_ok: m.wait_for.is_none(),
            ready: false,
        })
        .collect();
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.m.name.as_str(), i))
        .collect();
    let mut made = vec![false; lab.links.len()];
    let mut host = Netlink::open()?;
    let zones = Zones::new(paths.locks_dir());
    let reg = Registry::new(paths);
    let t0 = Instant::now();
    let us = move || t0.elapsed().as_micros() as u64;

    loop {
        let mut progress = false;
        // Launch what may go.
        let ready: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.ready)
            .map(|n| n.m.name.as_str())
            .collect();
        // Together: their log pumps come up at the same time.
        let go: Vec<usize> = (0..nodes.len())
            .filter(|&i| {
                let n = &nodes[i];
                matches!(n.phase, Phase::Waiting)
                    && n.m.after.iter().all(|a| ready.contains(a.as_str()))
            })
            .collect();
        let machines: Vec<(&str, Vec<String>)> = go
            .iter()
            .map(|&i| (nodes[i].m.name.as_str(), launcher_args(paths, nodes[i].m)))
            .collect();
        let launched = start::launch_all(paths, &machines, &env);
        // Every launcher that started is recorded before a failure is
        // reported, so the teardown finds it.
        let mut failed = None;
        for (&i, p) in go.iter().zip(launched) {
            let n = &mut nodes[i];
            let p = match p {
                Ok(p) => p,
                Err(e) => {
                    failed.get_or_insert(TopoError::Usage(format!("machine {}: {e}", n.m.short)));
                    continue;
                }
            };
            let (lp, pp) = (p.launcher_pid(), p.pump_pid());
            let _ = writeln!(
                record,
                "{} {lp} {} {pp} {}",
                n.m.name,
                process_start_time(lp).unwrap_or(0),
                process_start_time(pp).unwrap_or(0)
            );
            n.phase = Phase::Launched(p);
            n.launched_at = Instant::now();
            tracing::debug!(at_us = us(), "{}: launched", n.m.short);
            progress = true;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        // Registrations.
        for n in nodes.iter_mut() {
            if !matches!(n.phase, Phase::Launched(_)) {
                continue;
            }
            let Phase::Launched(p) = std::mem::replace(&mut n.phase, Phase::Registered) else {
                continue;
            };
            match p.poll(&reg) {
                Progress::Up(e) => {
                    n.leader = e.leader;
                    n.phase = Phase::Registered;
                    tracing::debug!(at_us = us(), "{}: registered", n.m.short);
                    progress = true;
                }
                Progress::Waiting(p) if n.launched_at.elapsed() >= MACHINE_TIMEOUT => {
                    return Err(TopoError::Usage(p.abort(MACHINE_TIMEOUT).to_string()));
                }
                Progress::Waiting(p) => n.phase = Phase::Launched(p),
                Progress::Failed(e) => return Err(TopoError::Usage(e.to_string())),
            }
        }
        // Links whose two ends run.
        for (k, l) in lab.links.iter().enumerate() {
            if made[k] {
                continue;
            }
            let (a, b) = (
                &nodes[index[l.a.machine.as_str()]],
                &nodes[index[l.b.machine.as_str()]],
            );
            if a.leader == 0 || b.leader == 0 {
                continue;
            }
            links::make_p2p(&mut host, l, a.leader, b.leader)?;
            for (end, leader, imp) in [(&l.a, a.leader, &l.impair_a), (&l.b, b.leader, &l.impair_b)]
            {
                if !imp.is_empty() {
                    super::impair::apply(leader, &end.ifname, imp).map_err(|e| {
                        TopoError::Usage(format!(
                            "link {}: impair {}:{}: {e}",
                            l.label(),
                            end.short,
                            end.ifname
                        ))
                    })?;
                }
            }
            for (end, leader) in [(&l.a, a.leader), (&l.b, b.leader)] {
                let m = nodes[index[end.machine.as_str()]].m;
                links::configure_addresses(m, leader, Some(&end.ifname))?;
            }
            made[k] = true;
            tracing::debug!(at_us = us(), "link {}: made", l.label());
            progress = true;
        }
        for n in nodes.iter_mut() {
            if n.leader == 0 || (n.ready && n.finished) {
                continue;
            }
            if !n.legs {
                links::make_zone_legs(&mut host, &zones, n.m, n.leader, &mut netd, paths)?;
                tracing::debug!(at_us = us(), "{}: zone legs made", n.m.short);
                n.legs = true;
                progress = true;
            }
            let mine = |k: &usize| {
                let l = &lab.links[*k];
                l.a.machine == n.m.name || l.b.machine == n.m.name
            };
            let all_links = (0..lab.links.len()).filter(mine).all(|k| made[k]);
            if all_links && !n.finished {
                // host0 and the zone legs' static addresses, then routes.
                links::configure_addresses(n.m, n.leader, None)?;
                if n.m.forward {
                    links::enable_forwarding(n.m, n.leader)?;
                }
                links::configure_routes(n.m, n.leader)?;
                run_exec(n.m)?;
                tracing::debug!(at_us = us(), "{}: configured", n.m.short);
                n.finished = true;
                progress = true;
            }
            if n.ready {
                continue;
            }
            // Links to machines that do not wait for this one.
            let needed = (0..lab.links.len()).filter(mine).all(|k| {
                let l = &lab.links[k];
                let other = if l.a.machine == n.m.name { &l.b } else { &l.a };
                made[k] || waits[other.machine.as_str()].contains(n.m.name.as_str())
            });
            if !needed {
                continue;
            }
            if n.m.notify_ready {
                match reg.get(&n.m.name) {
                    Ok(Some(e)) if e.ready => {}
                    _ => continue,
                }
            }
            if !n.probe_ok {
                match n.probe.take() {
                    None => {
                        let (m, leader) = (n.m.clone(), n.leader);
                        n.probe = Some(std::thread::spawn(move || probe(&m, leader)));
                    }
                    Some(h) if h.is_finished() => match h.join() {
                        Ok(Ok(())) => n.probe_ok = true,
                        Ok(Err(e)) => return Err(TopoError::Usage(e)),
                        Err(_) => {
                            return Err(TopoError::Usage(format!(
                                "{}: the probe failed",
                                n.m.short
                            )))
                        }
                    },
                    Some(h) => n.probe = Some(h),
                }
                if !n.probe_ok {
                    continue;
                }
            }
            n.ready = true;
            tracing::debug!(at_us = us(), "{}: ready", n.m.short);
            progress = true;
        }
        if nodes.iter().all(|n| n.ready && n.finished) {
            return Ok(());
        }
        if !progress {
            std::thread::sleep(TICK);
        }
    }
}

/// `netspawnctl shell NAME /bin/sh -c CMD`, its output to our standard
/// error; the exit status.
fn shell_in(machine: &str, cmd: &str, quiet: bool) -> Result<std::process::ExitStatus, String> {
    let exe = std::env::current_exe().map_err(|e| format!("find netspawnctl: {e}"))?;
    let mut c = Command::new(exe);
    c.args(["-q", "shell", machine, "/bin/sh", "-c", cmd])
        .stdin(Stdio::null());
    if quiet {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    } else {
        c.stdout(std::io::stderr());
    }
    let mut child: Child = c
        .spawn()
        .map_err(|e| format!("run netspawnctl shell: {e}"))?;
    child
        .wait()
        .map_err(|e| format!("wait for netspawnctl shell: {e}"))
}

/// Runs the machine's `exec` commands, in order; one that fails fails `up`.
fn run_exec(m: &Machine) -> Result<(), TopoError> {
    for cmd in &m.exec {
        let st = shell_in(&m.name, cmd, false).map_err(TopoError::Usage)?;
        if !st.success() {
            return Err(TopoError::Usage(format!(
                "{}: exec '{cmd}' failed ({st})",
                m.short
            )));
        }
    }
    Ok(())
}

/// Waits until `m`'s probe succeeds, at most [`MACHINE_TIMEOUT`].
fn probe(m: &Machine, leader: u32) -> Result<(), String> {
    let deadline = Instant::now() + MACHINE_TIMEOUT;
    let ns = links::netns_of(leader).map_err(|e| e.to_string())?;
    loop {
        let ok = match &m.wait_for {
            None => true,
            Some(Probe::Tcp(port)) => netlink::in_netns(ns.as_fd(), || {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
                    Duration::from_millis(500),
                )
                .is_ok()
            })
            .map_err(|e| format!("{}: probe: {e}", m.short))?,
            Some(Probe::Cmd(c)) => shell_in(&m.name, c, true).is_ok_and(|s| s.success()),
        };
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{}: not ready: wait_for = {:?} did not succeed within {} s",
                m.short,
                match &m.wait_for {
                    Some(Probe::Tcp(p)) => format!("tcp:{p}"),
                    Some(Probe::Cmd(c)) => format!("cmd:{c}"),
                    None => String::new(),
                },
                MACHINE_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host-side veths netspawn made for `running` machines of `lab` (their
/// own, `vb-NAME` or `ve-NAME`, and their legs on zones), by index, taken
/// while they run. Not every name the registry lists: a link handed to a
/// machine with `--network-interface` goes back to the host.
fn lab_links(lab: &Lab, running: &[(String, Entry)]) -> Vec<netlink::Link> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (n, e) in running.iter().filter(|(_, e)| e.leader > 0) {
        let own = [true, false].map(|b| netspawn_common::naming::host_ifname(b, n));
        names.extend(e.interfaces.iter().filter(|i| own.contains(i)).cloned());
        for m in lab.machines.iter().filter(|m| m.name == *n) {
            names.extend(
                m.zones
                    .iter()
                    .skip(1)
                    .map(|(_, ifname)| links::leg_host_name(&m.name, ifname)),
            );
        }
    }
    match Netlink::open().and_then(|mut h| h.links()) {
        Ok(all) => all
            .into_iter()
            .filter(|l| l.kind.as_deref() == Some("veth") && names.contains(&l.name))
            .collect(),
        Err(e) => {
            tracing::debug!("down: the machines' links: {e}");
            Vec::new()
        }
    }
}

/// `down FILE`: booted machines get `poweroff_wait` to power off.
pub fn down(file: &Path, poweroff_wait: Duration) -> Result<i32, TopoError> {
    let lab = super::load(file)?;
    let paths = Paths::from_env();
    let left = teardown(&lab, &paths, poweroff_wait);
    if left.is_empty() {
        Ok(0)
    } else {
        Err(TopoError::Down {
            lab: lab.name,
            what: left.join("; "),
        })
    }
}

/// Removes everything of `lab`; what could not be removed, one line each.
/// Booted machines get `poweroff_wait` to power off (zero: killed at once).
fn teardown(lab: &Lab, paths: &Paths, poweroff_wait: Duration) -> Vec<String> {
    let mut errors = Vec::new();
    let dir = lab_dir(paths, &lab.name);
    let reg = Registry::new(paths);
    let launched = read_launched(&dir);
    let mut names: BTreeSet<String> = lab.machines.iter().map(|m| m.name.clone()).collect();
    names.extend(launched.iter().map(|l| l.name.clone()));
    let deadline = Instant::now() + DOWN_TIMEOUT;
    let t0 = Instant::now();
    let us = move || t0.elapsed().as_micros() as u64;

    // Launchers still on their way: let them register (or fail), so every
    // machine is stopped the one way that lets its keeper clean up.
    loop {
        let on_the_way: Vec<&Launched> = launched
            .iter()
            .filter(|l| alive(l.launcher))
            .filter(|l| !matches!(reg.get(&l.name), Ok(Some(e)) if e.launcher == l.launcher.0))
            .collect();
        if on_the_way.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for l in on_the_way {
                errors.push(format!(
                    "{}: its launcher never registered it; killed it",
                    l.name
                ));
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(l.launcher.0 as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            break;
        }
        std::thread::sleep(TICK);
    }

    // Stop every machine. A booted one first gets what `netspawnctl
    // poweroff` sends its init, and `poweroff_wait` to stop; a plain
    // command (and a booted machine still there after the wait) gets
    // SIGKILL to its PID 1, which takes the whole machine down.
    let kill9 = |pid: u32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let mut waiting: Vec<(String, (u32, u64))> = Vec::new();
    let mut powering_off: Vec<(String, (u32, u64))> = Vec::new();
    let running: Vec<(String, Entry)> = names
        .iter()
        .filter_map(|n| match reg.get(n) {
            Ok(Some(e)) => Some((n.clone(), e)),
            _ => None,
        })
        .collect();
    let leader = |e: &Entry| (e.leader, process_start_time(e.leader).unwrap_or(0));
    let asked_to_power_off =
        |e: &Entry| e.boot && e.leader > 0 && !poweroff_wait.is_zero() && alive(leader(e));
    // The machines' host-side links and the lab's zone bridges go with one
    // request (see `delete_together`: the kernel then waits for RCU grace
    // periods once for all of them instead of link by link; a bridge's
    // deletion still waits for one of its own under the rtnl lock, 25-60 ms
    // here). When every machine is to be killed, the kill goes out right
    // before the request (the kernel handles a netlink request inside the
    // send: there is no later moment to be told): a SIGKILLed payload
    // cannot notice, the machines die beside the bridges' grace periods,
    // and the request is not queued behind their namespaces' teardown,
    // which keeps the kernel's rtnl lock busy (50 machines: the links'
    // deletion took 45 ms before the kill, 150-260 ms after it) and which
    // begins only once a killed machine's processes are gone and its
    // keeper let its namespace go. Booted machines that power off keep their
    // links until they are down; then links and bridges go together, beside
    // the keepers. A zone that another machine joined is left alone, and so
    // is a link of ours that went meanwhile (a link made again under its
    // name has another index). The machines' legs on zones are made by
    // `up`, not by their launchers: the kernel would delete each with its
    // machine's namespace, but later, and the last step below would wait
    // for that one by one.
    let ours = lab_links(lab, &running);
    let kill_all = !running.iter().any(|(_, e)| asked_to_power_off(e));
    let zone_names: Vec<String> = lab.zones.iter().map(|z| z.name.clone()).collect();
    let zones = Zones::new(paths.locks_dir());
    let (deleting, requested) = std::sync::mpsc::channel::<()>();
    let remove = move || match Netlink::open() {
        // Only a head start: what fails here is tried again (and
        // reported) by the zones' `leave` below, once the machines are gone.
        Ok(mut host) => {
            let mut told = || {
                let _ = deleting.send(());
            };
            match zones.remove_all_with(&mut host, &zone_names, &ours, &mut told) {
                Ok(z) => tracing::debug!(at_us = us(), "down: links and zones {z:?} removed"),
                Err(e) => tracing::debug!("down: early removal of the zones: {e}"),
            }
        }
        Err(e) => tracing::debug!("down: early removal of the zones: netlink: {e}"),
    };
    let (mut bridges, mut after_stop) = (None, None);
    if kill_all {
        bridges = Some(std::thread::spawn(remove));
        // Until the request is about to go (or the thread ended without one).
        let _ = requested.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        tracing::debug!(at_us = us(), "down: links and zones going");
    } else {
        after_stop = Some(remove);
    }
    // The poweroff signals go out in the wait below, each once its init
    // takes it (one still starting would have it dropped by the kernel).
    let mut unsent: Vec<((u32, u64), i32)> = Vec::new();
    for (n, e) in &running {
        if e.leader > 0 {
            let leader = leader(e);
            if asked_to_power_off(e) {
                unsent.push((leader, signal::poweroff_signal(e)));
                powering_off.push((n.clone(), leader));
            } else {
                kill9(e.leader);
            }
        }
        waiting.push((n.clone(), (e.launcher, e.launcher_start)));
    }
    let until = Instant::now() + poweroff_wait;
    loop {
        unsent.retain(|&(p, sig)| {
            if !alive(p) {
                return false;
            }
            if !crate::sys::takes_signal(p.0 as i32, sig) {
                return true;
            }
            if signal::send(p.0, sig).is_err() {
                kill9(p.0);
            }
            false
        });
        powering_off.retain(|(_, p)| alive(*p));
        if powering_off.is_empty() {
            break;
        }
        if Instant::now() >= until {
            for (n, p) in &powering_off {
                eprintln!(
                    "netspawnctl: lab '{}': {n} did not power off within {} s; killed it",
                    lab.name,
                    poweroff_wait.as_secs_f64()
                );
                if alive(*p) {
                    kill9(p.0);
                }
            }
            break;
        }
        std::thread::sleep(TICK);
    }
    tracing::debug!(at_us = us(), "down: machines stopped");
    if let Some(remove) = after_stop {
        bridges = Some(std::thread::spawn(remove));
    }
    let pumps: Vec<(String, (u32, u64))> =
        launched.iter().map(|l| (l.name.clone(), l.pump)).collect();
    loop {
        let mut left: Vec<String> = Vec::new();
        for (n, launcher) in &waiting {
            // The name stays held by the machine's keeper until its links
            // (and, for the last member, the zone's bridge) are gone.
            if matches!(reg.get(n), Ok(Some(_)))
                || alive(*launcher)
                || matches!(reg.try_hold_idle(n), Ok(None))
            {
                left.push(n.clone());
            }
        }
        for (n, pump) in &pumps {
            if alive(*pump) && !left.contains(n) {
                left.push(n.clone());
            }
        }
        tracing::trace!(at_us = us(), "down: waiting for {left:?}");
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            errors.push(format!(
                "still running after {} s: {}",
                DOWN_TIMEOUT.as_secs(),
                left.join(", ")
            ));
            break;
        }
        std::thread::sleep(TICK);
    }

    tracing::debug!(at_us = us(), "down: machines gone");
    if let Some(b) = bridges {
        let _ = b.join();
    }
    tracing::debug!(at_us = us(), "down: bridges removed");
    // What `up` may have left between two calls, then the zones.
    match Netlink::open() {
        Ok(mut host) => {
            let mut names: Vec<String> = Vec::new();
            for m in &lab.machines {
                for (_, ifname) in m.zones.iter().skip(1) {
                    names.push(links::leg_host_name(&m.name, ifname));
                }
            }
            for n in names {
                if let Ok(Some(l)) = host.link(&n) {
                    if let Err(e) = host.delete(l.index) {
                        errors.push(format!("remove {n}: {e}"));
                    }
                }
            }
            let zones = Zones::new(paths.locks_dir());
            for z in &lab.zones {
                if let Err(e) = zones.leave(&mut host, &z.name) {
                    errors.push(format!("remove zone {}: {e}", z.name));
                }
            }
        }
        Err(e) => errors.push(format!("netlink: {e}")),
    }
    tracing::debug!(at_us = us(), "down: zones removed");
    // The zones' own .network files, once their bridges are gone; a running
    // netd forgets them (a later zone of that name gets the defaults again).
    let files = zonefile::existing(lab, paths);
    for f in &files {
        if let Err(e) = std::fs::remove_file(f) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(format!("remove {}: {e}", f.display()));
            }
        }
    }
    if !files.is_empty() {
        if let Some(mut c) = NetdClient::connect_running(paths) {
            if let Err(e) = c.request(&netspawn_common::netd::Request::Reload) {
                errors.push(format!("netd: reload: {e}"));
            }
        }
    }
    if errors.is_empty() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(format!("remove {}: {e}", dir.display()));
            }
        }
    }
    errors
}

/// `status FILE`: one row per machine, as a table or JSON.
pub fn status(file: &Path, legend: bool, json: Option<bool>) -> Result<i32, TopoError> {
    let lab = super::load(file)?;
    let reg = crate::ctl::registry();
    let mut rows = Vec::new();
    for m in &lab.machines {
        let links = m.interfaces(&lab);
        let (state, addrs) = match reg.get(&m.name) {
            Ok(Some(e)) => (
                if e.state == "running" && !e.ready {
                    "starting".to_string()
                } else {
                    e.state.clone()
                },
                e.addresses
                    .iter()
                    .filter(|a| !matches!(a, std::net::IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80))
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>(),
            ),
            _ => ("stopped".to_string(), Vec::new()),
        };
        rows.push((m, state, addrs, links));
    }
    let out = match json {
        Some(pretty) => {
            let v: Vec<serde_json::Value> = rows
                .iter()
                .map(|(m, state, addrs, links)| {
                    serde_json::json!({
                        "machine": m.short,
                        "name": m.name,
                        "state": state,
                        "addresses": addrs,
                        "interfaces": links,
                    })
                })
                .collect();
            let v = serde_json::json!({ "lab": lab.name, "machines": v });
            let mut s = if pretty {
                serde_json::to_string_pretty(&v)
            } else {
                serde_json::to_string(&v)
            }
            .unwrap_or_default();
            s.push('\n');
            s
        }
        None => {
            let mut t = crate::ctl::table::Table::new(&["machine", "state", "addresses", "links"]);
            for (m, state, addrs, links) in &rows {
                t.push(vec![
                    m.short.clone(),
                    state.clone(),
                    addrs.join(","),
                    links.join(","),
                ]);
            }
            let mut out = t.render(legend);
            if legend {
                out.push_str(&format!("\nlab {}: {} machines.\n", lab.name, t.len()));
            }
            out
        }
    };
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(io("write", Path::new("standard output")))?;
    Ok(0)
}
