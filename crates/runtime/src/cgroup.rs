//! The machine's control groups. The container lives in
//! `<cgroup2>/<parent>/<NAME>` on the unified hierarchy (which its cgroup
//! namespace shows as its root, so a booted systemd manages its own tree),
//! and, on hosts that still have the cgroup v1 `devices` controller, in
//! `devices/<parent>/<NAME>` with an allow list of the standard devices.
//! Works on pure v2 hosts and on hybrid ones (cgroup2 at /sys/fs/cgroup/unified).
//!
//! Resource control (`--property=`, `netspawnctl set-property`) uses, per
//! controller, the v1 hierarchy where the host mounts one (hybrid and v1
//! hosts: `memory/<parent>/<NAME>`, `cpu/…`, `pids/…`, `blkio/…`,
//! `cpuset/…`, made only for the properties asked for, joined like the
//! devices one) and otherwise the unified one (the controller enabled in
//! the ancestors' `cgroup.subtree_control`). What the host cannot enforce
//! is refused, naming the controller. [`plan`] turns properties into file
//! writes without I/O; [`apply`] does them.
//!
//! Cleanup: the launcher removes its machine's cgroups when it ends, and after
//! a `kill -9` the keeper does, waiting up to [`KEEPER_BUDGET`] for the last
//! process to go. What neither could remove (a launcher killed before it
//! started its keeper, a cgroup that stayed busy) the next launch sweeps:
//! [`sweep_stale`] removes every sibling machine cgroup whose owner is gone,
//! killing what still runs in it (an orphan of a dead machine).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netspawn_common::names::machine_name_is_valid;
use netspawn_common::registry::{process_start_time, Registry};
use thiserror::Error;

use crate::config::property::{Limits, MemLimit, Property, PropertyKind, WEIGHT_DEFAULT};

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("no cgroup2 file system is mounted on this host")]
    NoUnified,
    #[error("cgroup {path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error("{property}= cannot be enforced on this host: {why}")]
    Unenforceable { property: &'static str, why: String },
    #[error("{property}= value {value} rejected by the kernel ({path}): {err}")]
    Rejected {
        property: &'static str,
        value: String,
        path: PathBuf,
        err: io::Error,
    },
}

/// Devices the container may use (cgroup v1 `devices.allow` rules); the same
/// set as the nodes bind-mounted into its /dev, plus ptys.
pub const DEVICE_ALLOW: &[&str] = &[
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c 5:0 rwm",    // tty
    "c 5:1 rwm",    // console
    "c 5:2 rwm",    // ptmx
    "c 136:* rwm",  // pts
    "c 10:200 rwm", // net/tun
];

/// A resource controller netspawn's properties use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Cpu,
    Pids,
    Io,
    Cpuset,
}

impl Controller {
    pub const ALL: [Controller; 5] = [
        Controller::Memory,
        Controller::Cpu,
        Controller::Pids,
        Controller::Io,
        Controller::Cpuset,
    ];

    /// The name in the unified hierarchy.
    pub fn v2_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
            Controller::Io => "io",
            Controller::Cpuset => "cpuset",
        }
    }

    /// The name of the v1 hierarchy's controller.
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Io => "blkio",
            c => c.v2_name(),
        }
    }

    /// The controller a property needs.
    pub fn of(k: PropertyKind) -> Controller {
        match k {
            PropertyKind::MemoryMax | PropertyKind::MemoryHigh | PropertyKind::MemorySwapMax => {
                Controller::Memory
            }
            PropertyKind::CpuQuota | PropertyKind::CpuWeight => Controller::Cpu,
            PropertyKind::TasksMax => Controller::Pids,
            PropertyKind::IoWeight => Controller::Io,
            PropertyKind::AllowedCpus => Controller::Cpuset,
        }
    }
}

/// Where the cgroup file systems are mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    pub unified: PathBuf,
    /// The v1 devices controller, if the host has one mounted.
    pub devices: Option<PathBuf>,
    /// The v1 hierarchies of resource controllers the host mounts.
    pub v1: Vec<(Controller, PathBuf)>,
    /// The controllers the unified hierarchy's root offers
    /// (`cgroup.controllers`; filled by [`Hierarchies::detect`]).
    pub v2: Vec<String>,
}

/// Parses /proc/self/mountinfo text for the cgroup mounts.
pub fn parse_mountinfo(text: &str) -> Option<Hierarchies> {
    let mut unified = None;
    let mut devices = None;
    let mut v1: Vec<(Controller, PathBuf)> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let _source = r.next();
        let opts = r.next().unwrap_or("");
        let mp = PathBuf::from(mount_point.replace("\\040", " "));
        if fstype == "cgroup2" && unified.is_none() {
            unified = Some(mp);
        } else if fstype == "cgroup" && opts.split(',').any(|o| o == "devices") && devices.is_none()
        {
            devices = Some(mp);
        } else if fstype == "cgroup" {
            for c in Controller::ALL {
                if opts.split(',').any(|o| o == c.v1_name()) && !v1.iter().any(|(x, _)| *x == c) {
                    v1.push((c, mp.clone()));
                }
            }
        }
    }
    Some(Hierarchies {
        unified: unified?,
        devices,
        v1,
        v2: Vec::new(),
    })
}

impl Hierarchies {
    pub fn detect() -> Result<Hierarchies, CgroupError> {
        let text = fs::read_to_string("/proc/self/mountinfo").map_err(|err| CgroupError::Io {
            path: "/proc/self/mountinfo".into(),
            err,
        })?;
        let mut h = parse_mountinfo(&text).ok_or(CgroupError::NoUnified)?;
        h.v2 = fs::read_to_string(h.unified.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Ok(h)
    }

    /// The v1 hierarchy of controller `c`, if the host mounts one.
    pub fn v1_root(&self, c: Controller) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(x, _)| *x == c)
            .map(|(_, p)| p.as_path())
    }

    /// Where controller `c` is, if anywhere.
    pub fn mode(&self, c: Controller) -> Option<Mode> {
        match self.v1_root(c) {
            Some(p) => Some(Mode::V1(p.to_path_buf())),
            None if self.v2.iter().any(|n| n == c.v2_name()) => Some(Mode::V2),
            None => None,
        }
    }
}

/// Where a controller lives on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A v1 hierarchy mounted there.
    V1(PathBuf),
    /// The unified hierarchy.
    V2,
}

/// The machine's cgroup directories. Dropping does nothing; call [`Cgroups::destroy`].
#[derive(Debug, Clone)]
pub struct Cgroups {
    /// Unified first, then v1 ones.
    pub paths: Vec<PathBuf>,
}

/// How the device policy is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePolicy {
    /// A BPF program on the unified cgroup (no v1 directory needed).
    Bpf,
    /// The cgroup v1 `devices` controller's allow list.
    V1,
    /// Neither is available: only `nodev` mounts protect device nodes.
    NodevOnly,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |err| CgroupError::Io {
        path: path.to_path_buf(),
        err,
    }
}

impl Cgroups {
    /// Creates the machine's cgroups (removing leftovers of an earlier run of
    /// the same machine first: the caller holds the machine's name).
    pub fn create(
        h: &Hierarchies,
        parent: &str,
        name: &str,
        limits: &Limits,
    ) -> Result<(Cgroups, DevicePolicy), CgroupError> {
        let rel = Path::new(parent).join(name);
        let unified = Self::unified_path(h, parent, name);
        let v1 = h.devices.as_ref().map(|d| d.join(&rel));
        // Leftovers of an earlier run in any hierarchy go first.
        Cgroups {
            paths: std::iter::once(unified.clone()).chain(v1.clone()).collect(),
        }
        .destroy();
        // What the host cannot enforce is refused before anything is made.
        let writes = if limits.is_empty() {
            Vec::new()
        } else {
            plan(limits, &HostFacts::read(h))?
        };
        let (mut cg, policy) = Self::create_with_devices(unified, v1)?;
        match apply(h, &rel, &writes, false) {
            Ok(made) => {
                cg.paths.extend(made);
                Ok((cg, policy))
            }
            Err(e) => {
                cg.destroy();
                Err(e)
            }
        }
    }

    fn create_with_devices(
        unified: PathBuf,
        v1: Option<PathBuf>,
    ) -> Result<(Cgroups, DevicePolicy), CgroupError> {
        fs::create_dir_all(&unified).map_err(io_err(&unified))?;
        let mut cg = Cgroups {
            paths: vec![unified.clone()],
        };
        let bpf = fs::File::open(&unified)
            .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
            .and_then(|f| crate::devices::attach(std::os::fd::AsFd::as_fd(&f)));
        match (bpf, v1) {
            (Ok(()), _) => Ok((cg, DevicePolicy::Bpf)),
            (Err(e), Some(dev)) => {
                tracing::debug!(
                    "BPF device policy unavailable ({e}); using the v1 devices controller"
                );
                cg.paths.push(dev.clone());
                let r = (|| {
                    fs::create_dir_all(&dev).map_err(io_err(&dev))?;
                    fs::write(dev.join("devices.deny"), "a").map_err(io_err(&dev))?;
                    for rule in DEVICE_ALLOW {
                        fs::write(dev.join("devices.allow"), rule).map_err(io_err(&dev))?;
                    }
                    Ok(())
                })();
                match r {
                    Ok(()) => Ok((cg, DevicePolicy::V1)),
                    Err(e) => {
                        cg.destroy();
                        Err(e)
                    }
                }
            }
            (Err(e), None) => {
                tracing::warn!("no device policy available ({e}): device nodes are protected by nodev mounts only");
                Ok((cg, DevicePolicy::NodevOnly))
            }
        }
    }

    /// The unified-hierarchy directory [`Cgroups::create`] makes for `name`.
    pub fn unified_path(h: &Hierarchies, parent: &str, name: &str) -> PathBuf {
        h.unified.join(parent).join(name)
    }

    /// An fd of the unified directory, for `clone3(CLONE_INTO_CGROUP)`.
    pub fn unified_fd(&self) -> io::Result<fs::File> {
        fs::File::open(self.unified())
    }

    /// Moves a process into the machine's cgroups (all of them, or only the
    /// v1 ones when it was born in the unified one).
    pub fn add(&self, pid: i32, skip_unified: bool) -> Result<(), CgroupError> {
        for p in self.paths.iter().skip(usize::from(skip_unified)) {
            fs::write(p.join("cgroup.procs"), pid.to_string()).map_err(io_err(p))?;
        }
        Ok(())
    }

    /// The unified-hierarchy directory.
    pub fn unified(&self) -> &Path {
        &self.paths[0]
    }

    /// Kills whatever still runs in the cgroups and removes them (children
    /// first). Idempotent: a missing directory is success. Best effort: it
    /// gives up on a directory that stays busy for over a second.
    pub fn destroy(&self) {
        self.destroy_within(Duration::from_secs(1));
    }

    /// [`Cgroups::destroy`], retrying a busy directory (EBUSY: processes
    /// still exiting) for up to `budget` per directory. Returns whether
    /// every directory is gone.
    pub fn destroy_within(&self, budget: Duration) -> bool {
        let mut all = true;
        for p in self.paths.iter().chain(&self.siblings()) {
            all &= destroy_tree(p, budget);
        }
        all
    }

    /// Every directory the machine lives in now: [`Cgroups::paths`] (what
    /// the registry lists) and the v1 ones `netspawnctl set-property` made
    /// since (the launcher owns the registry entry, so they are not in it).
    /// What a process entering the machine joins.
    pub fn current(paths: &[PathBuf]) -> Vec<PathBuf> {
        let cg = Cgroups {
            paths: paths.to_vec(),
        };
        let mut out = cg.paths.clone();
        out.extend(cg.siblings().into_iter().filter(|p| p.is_dir()));
        out
    }

    /// The machine's directories in the v1 resource hierarchies that are
    /// not in [`Cgroups::paths`]: `netspawnctl set-property` may have made
    /// them after the start.
    fn siblings(&self) -> Vec<PathBuf> {
        let Some(first) = self.paths.first() else {
            return Vec::new();
        };
        let Ok(h) = Hierarchies::detect() else {
            return Vec::new();
        };
        let Ok(rel) = first.strip_prefix(&h.unified) else {
            return Vec::new();
        };
        h.v1.iter()
            .map(|(_, root)| root.join(rel))
            .filter(|p| !self.paths.contains(p))
            .collect()
    }
}

/// What percentages resolve against, and where each controller is.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Bytes of physical memory (`MemoryMax=N%`).
    pub physical_memory: u64,
    /// The host's task limit (`TasksMax=N%`), as systemd's
    /// `system_tasks_max()`: the smaller of pid_max-1 and threads-max.
    pub tasks_max: u64,
    pub modes: Vec<(Controller, Option<Mode>)>,
}

impl HostFacts {
    pub fn read(h: &Hierarchies) -> HostFacts {
        let num = |p: &str| {
            fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let tasks_max = match (
            num("/proc/sys/kernel/pid_max"),
            num("/proc/sys/kernel/threads-max"),
        ) {
            (Some(p), Some(t)) => (p.saturating_sub(1)).min(t),
            (Some(p), None) => p.saturating_sub(1),
            (None, Some(t)) => t,
            (None, None) => 4194303,
        };
        // SAFETY: sysinfo fills the struct it is given.
        let physical_memory = unsafe {
            let mut si: libc::sysinfo = std::mem::zeroed();
            if libc::sysinfo(&mut si) == 0 {
                (si.totalram as u64).saturating_mul(u64::from(si.mem_unit.max(1)))
            } else {
                0
            }
        };
        HostFacts {
            physical_memory,
            tasks_max,
            modes: Controller::ALL.iter().map(|c| (*c, h.mode(*c))).collect(),
        }
    }

    fn mode(&self, c: Controller) -> Option<&Mode> {
        self.modes
            .iter()
            .find(|(x, _)| *x == c)
            .and_then(|(_, m)| m.as_ref())
    }
}

/// What to write into a control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    /// v1 `memory.memsw.limit_in_bytes`: this many bytes of swap on top of
    /// the memory limit in force (read when writing).
    SwapOnTopOfMemory(u64),
    /// v1 `cpuset.cpus` of every CPU: the parent's.
    ParentCpus,
}

/// One property's write into the machine's directory of `controller`: the
/// first of `files` that exists gets its value (several for controllers
/// that have moved their knobs: `io.weight` or `io.bfq.weight`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub property: PropertyKind,
    pub controller: Controller,
    pub mode: Mode,
    pub files: Vec<(&'static str, Value)>,
}

/// cgroup v1 `cpu.shares` for a `CPUWeight=` (systemd's conversion).
pub fn weight_to_shares(w: u64) -> u64 {
    (w * 1024 / WEIGHT_DEFAULT).clamp(2, 262_144)
}

/// cgroup v1 `blkio.weight` for an `IOWeight=` (systemd's conversion).
pub fn weight_to_blkio(w: u64) -> u64 {
    (w * 500 / WEIGHT_DEFAULT).clamp(10, 1000)
}

/// BFQ's weight (1–1000, default 100) for an `IOWeight=` (1–10000, default
/// 100), piecewise linear as systemd maps it.
pub fn weight_to_bfq(w: u64) -> u64 {
    if w <= WEIGHT_DEFAULT {
        100 - (WEIGHT_DEFAULT - w) * 99 / 99
    } else {
        100 + (w - WEIGHT_DEFAULT) * 900 / 9900
    }
}

/// The CFS period netspawn uses (systemd's default `CPUQuotaPeriodSec=`).
pub const CPU_PERIOD_USEC: u64 = 100_000;

/// The file writes that enforce `limits` on this host, without I/O. A
/// property whose controller the host lacks is refused here.
pub fn plan(limits: &Limits, host: &HostFacts) -> Result<Vec<Write>, CgroupError> {
    let mut out = Vec::new();
    for p in limits.iter() {
        let kind = p.kind();
        let c = Controller::of(kind);
        let mode = host.mode(c).cloned().ok_or_else(|| CgroupError::Unenforceable {
            property: kind.name(),
            why: format!(
                "the host has no {} controller (neither a cgroup v1 {} hierarchy nor {} in the unified hierarchy)",
                c.v2_name(),
                c.v1_name(),
                c.v2_name()
            ),
        })?;
        let v1 = matches!(mode, Mode::V1(_));
        let t = |s: String| Value::Text(s);
        let mem = |m: &MemLimit| match (m.bytes(host.physical_memory), v1) {
            (Some(b), _) => b.to_string(),
            (None, true) => "-1".into(),
            (None, false) => "max".into(),
        };
        let files: Vec<(&'static str, Value)> = match (p, v1) {
            (Property::MemoryMax(m), false) => vec![("memory.max", t(mem(m)))],
            (Property::MemoryMax(m), true) => vec![("memory.limit_in_bytes", t(mem(m)))],
            (Property::MemoryHigh(m), false) => vec![("memory.high", t(mem(m)))],
            (Property::MemoryHigh(m), true) => vec![("memory.soft_limit_in_bytes", t(mem(m)))],
            (Property::MemorySwapMax(m), false) => vec![("memory.swap.max", t(mem(m)))],
            (Property::MemorySwapMax(m), true) => match m.bytes(host.physical_memory) {
                Some(b) => vec![("memory.memsw.limit_in_bytes", Value::SwapOnTopOfMemory(b))],
                None => vec![("memory.memsw.limit_in_bytes", t("-1".into()))],
            },
            (Property::CpuQuota(q), false) => {
                let quota = q.map(|p| (u64::from(p) * CPU_PERIOD_USEC / 10_000).max(1000));
                let v = match quota {
                    Some(us) => format!("{us} {CPU_PERIOD_USEC}"),
                    None => format!("max {CPU_PERIOD_USEC}"),
                };
                vec![("cpu.max", t(v))]
            }
            (Property::CpuQuota(q), true) => {
                let quota = q.map(|p| (u64::from(p) * CPU_PERIOD_USEC / 10_000).max(1000));
                out.push(Write {
                    property: kind,
                    controller: c,
                    mode: mode.clone(),
                    files: vec![("cpu.cfs_period_us", t(CPU_PERIOD_USEC.to_string()))],
                });
                vec![(
                    "cpu.cfs_quota_us",
                    t(quota.map_or("-1".into(), |q| q.to_string())),
                )]
            }
            (Property::CpuWeight(w), false) => vec![("cpu.weight", t(w.to_string()))],
            (Property::CpuWeight(w), true) => {
                vec![("cpu.shares", t(weight_to_shares(*w).to_string()))]
            }
            (Property::TasksMax(l), _) => {
                let v = l
                    .count(host.tasks_max)
                    .map_or("max".to_string(), |n| n.to_string());
                vec![("pids.max", t(v))]
            }
            (Property::IoWeight(w), false) => vec![
                ("io.weight", t(format!("default {w}"))),
                ("io.bfq.weight", t(weight_to_bfq(*w).to_string())),
            ],
            (Property::IoWeight(w), true) => vec![
                ("blkio.weight", t(weight_to_blkio(*w).to_string())),
                ("blkio.bfq.weight", t(weight_to_bfq(*w).to_string())),
            ],
            (Property::AllowedCpus(set), _) if set.is_empty() => {
                vec![(
                    "cpuset.cpus",
                    if v1 {
                        Value::ParentCpus
                    } else {
                        t(String::new())
                    },
                )]
            }
            (Property::AllowedCpus(set), _) => vec![(
                "cpuset.cpus",
                t(crate::config::property::format_cpu_set(set)),
            )],
        };
        out.push(Write {
            property: kind,
            controller: c,
            mode,
            files,
        });
    }
    Ok(out)
}

/// Whether the host can enforce `limits`, checked before a launch prints
/// or makes anything: each controller exists, and on v1 hierarchies the
/// optional knobs (swap accounting, I/O weights) are there at the root. (A
/// v2 root has no such files: those are checked when the machine's own
/// directory exists.)
pub fn preflight(limits: &Limits) -> Result<(), CgroupError> {
    if limits.is_empty() {
        return Ok(());
    }
    // No cgroup2 at all: the launch says so itself.
    let Ok(h) = Hierarchies::detect() else {
        return Ok(());
    };
    for w in plan(limits, &HostFacts::read(&h))? {
        let optional = matches!(
            w.property,
            PropertyKind::MemorySwapMax | PropertyKind::IoWeight
        );
        if let (Mode::V1(root), true) = (&w.mode, optional) {
            let mut probe = w.clone();
            probe.files.retain(|(f, _)| root.join(f).exists());
            if probe.files.is_empty() {
                // The same error apply would give.
                return write_one(&w, root);
            }
        }
    }
    Ok(())
}

/// Makes `<root>/<rel>` in a v1 hierarchy, each new cpuset level with its
/// parent's CPUs and memory nodes (a cpuset without them takes no task).
/// Returns whether the leaf is new.
fn ensure_v1_dir(root: &Path, rel: &Path, cpuset: bool) -> Result<bool, CgroupError> {
    let mut cur = root.to_path_buf();
    let mut new = false;
    for comp in rel.components() {
        let next = cur.join(comp);
        new = match fs::create_dir(&next) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(err) => return Err(CgroupError::Io { path: next, err }),
        };
        if cpuset {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let mine = fs::read_to_string(next.join(f)).unwrap_or_default();
                if mine.trim().is_empty() {
                    let theirs = fs::read_to_string(cur.join(f)).map_err(io_err(&cur))?;
                    fs::write(next.join(f), theirs.trim()).map_err(io_err(&next))?;
                }
            }
        }
        cur = next;
    }
    Ok(new)
}

/// Enables controller `c` for the children of every directory from the
/// unified root down to `parent`.
fn enable_v2(unified: &Path, parent: &Path, c: Controller) -> Result<(), CgroupError> {
    let mut dirs = vec![unified.to_path_buf()];
    for comp in parent.components() {
        let next = dirs[dirs.len() - 1].join(comp);
        dirs.push(next);
    }
    for d in dirs {
        let ctl = d.join("cgroup.subtree_control");
        let on = fs::read_to_string(&ctl).unwrap_or_default();
        if on.split_whitespace().any(|x| x == c.v2_name()) {
            continue;
        }
        fs::write(&ctl, format!("+{}", c.v2_name())).map_err(|e| CgroupError::Unenforceable {
            property: "",
            why: format!(
                "cannot enable the {} controller in {}: {e}",
                c.v2_name(),
                d.display()
            ),
        })?;
    }
    Ok(())
}

/// Every process in the unified directory `dir` and below it.
pub fn procs_below(dir: &Path) -> Vec<i32> {
    let mut out = procs(dir);
    if let Ok(rd) = fs::read_dir(dir) {
        for de in rd.flatten() {
            if de.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(procs_below(&de.path()));
            }
        }
    }
    out
}

/// Moves every process of the machine (its unified subtree) into the v1
/// directory `dir`, again until no new one turns up (processes fork meanwhile).
fn migrate(unified: &Path, dir: &Path) -> Result<(), CgroupError> {
    for _ in 0..5 {
        let there: std::collections::BTreeSet<i32> = procs(dir).into_iter().collect();
        let missing: Vec<i32> = procs_below(unified)
            .into_iter()
            .filter(|p| !there.contains(p))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for pid in missing {
            match fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                Ok(()) => {}
                // Gone meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(err) => {
                    return Err(CgroupError::Io {
                        path: dir.to_path_buf(),
                        err,
                    })
                }
            }
        }
    }
    Ok(())
}

/// Does `writes` for the machine whose cgroup is `rel` below each
/// hierarchy's root: makes its v1 directories as needed (for a running
/// machine, `live`, moving its processes in), enables unified controllers
/// in the ancestors, and writes the files. Returns the v1 directories used.
pub fn apply(
    h: &Hierarchies,
    rel: &Path,
    writes: &[Write],
    live: bool,
) -> Result<Vec<PathBuf>, CgroupError> {
    let unified = h.unified.join(rel);
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut ready: Vec<Controller> = Vec::new();
    for w in writes {
        let dir = match &w.mode {
            Mode::V1(root) => root.join(rel),
            Mode::V2 => unified.clone(),
        };
        if !ready.contains(&w.controller) {
            match &w.mode {
                Mode::V1(root) => {
                    let new = ensure_v1_dir(root, rel, w.controller == Controller::Cpuset)?;
                    if !dirs.contains(&dir) {
                        dirs.push(dir.clone());
                    }
                    if live && new {
                        migrate(&unified, &dir)?;
                    }
                }
                Mode::V2 => {
                    let parent = rel.parent().unwrap_or(Path::new(""));
                    enable_v2(&h.unified, parent, w.controller).map_err(|e| match e {
                        CgroupError::Unenforceable { why, .. } => CgroupError::Unenforceable {
                            property: w.property.name(),
                            why,
                        },
                        e => e,
                    })?;
                }
            }
            ready.push(w.controller);
        }
        write_one(w, &dir)?;
    }
    Ok(dirs)
}

fn write_one(w: &Write, dir: &Path) -> Result<(), CgroupError> {
    let Some((file, value)) = w.files.iter().find(|(f, _)| dir.join(f).exists()) else {
        let names: Vec<&str> = w.files.iter().map(|(f, _)| *f).collect();
        let (kind, name) = match w.mode {
            Mode::V1(_) => ("cgroup v1", w.controller.v1_name()),
            Mode::V2 => ("unified", w.controller.v2_name()),
        };
        let hint = match (w.property, w.controller) {
            (PropertyKind::MemorySwapMax, _) => " (swap accounting is off)",
            (_, Controller::Io) => " (no weight-based I/O scheduler: BFQ or io.cost)",
            _ => "",
        };
        return Err(CgroupError::Unenforceable {
            property: w.property.name(),
            why: format!(
                "the {kind} {name} controller has no {}{hint}",
                names.join(" or ")
            ),
        });
    };
    let path = dir.join(file);
    let text = match value {
        Value::Text(t) => t.clone(),
        Value::SwapOnTopOfMemory(swap) => {
            let mem = fs::read_to_string(dir.join("memory.limit_in_bytes"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            // The kernel reports "no limit" as a huge page-aligned number.
            if mem >= 1 << 62 {
                "-1".to_string()
            } else {
                mem.saturating_add(*swap).to_string()
            }
        }
        Value::ParentCpus => {
            let parent = dir.parent().unwrap_or(dir);
            fs::read_to_string(parent.join("cpuset.cpus"))
                .map_err(io_err(parent))?
                .trim()
                .to_string()
        }
    };
    let write = || fs::write(&path, &text);
    let r = match write() {
        // v1: the memory limit may not go above memory+swap's; lift that first.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && *file == "memory.limit_in_bytes" => {
            let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), "-1");
            write()
        }
        r => r,
    };
    r.map_err(|err| CgroupError::Rejected {
        property: w.property.name(),
        value: text.clone(),
        path: path.clone(),
        err,
    })
}

/// What a machine's cgroups say about its use of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of memory charged to the machine.
    pub memory: Option<u64>,
    /// The memory limit in force: Some(None) for none.
    pub memory_max: Option<Option<u64>>,
    /// CPU time used, microseconds.
    pub cpu_usec: Option<u64>,
    /// Tasks (threads).
    pub tasks: Option<u64>,
    /// The task limit: Some(None) for none.
    pub tasks_max: Option<Option<u64>>,
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// A limit file's value: `max`, -1 or a huge v1 number are no limit.
fn read_limit(p: &Path) -> Option<Option<u64>> {
    let s = fs::read_to_string(p).ok()?;
    let s = s.trim();
    if s == "max" || s == "-1" {
        return Some(None);
    }
    let n: u64 = s.parse().ok()?;
    Some((n < 1 << 62).then_some(n))
}

/// Counts the threads in the unified directory `dir` and below.
fn threads_below(dir: &Path) -> u64 {
    let mut n = fs::read_to_string(dir.join("cgroup.threads"))
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0);
    if let Ok(rd) = fs::read_dir(dir) {
        for de in rd.flatten() {
            if de.file_type().is_ok_and(|t| t.is_dir()) {
                n += threads_below(&de.path());
            }
        }
    }
    n
}

/// The usage of the machine whose unified directory is `unified` (its v1
/// directories are found at the same place below each v1 root).
pub fn usage(h: &Hierarchies, unified: &Path) -> Usage {
    let rel = unified.strip_prefix(&h.unified).ok();
    let v1 = |c: Controller| {
        rel.and_then(|r| h.v1_root(c).map(|root| root.join(r)))
            .filter(|p| p.is_dir())
    };
    let mut u = Usage {
        cpu_usec: fs::read_to_string(unified.join("cpu.stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
            }),
        ..Usage::default()
    };
    if let Some(d) = v1(Controller::Memory) {
        u.memory = read_u64(&d.join("memory.usage_in_bytes"));
        u.memory_max = read_limit(&d.join("memory.limit_in_bytes"));
    } else {
        u.memory = read_u64(&unified.join("memory.current"));
        u.memory_max = read_limit(&unified.join("memory.max"));
    }
    if let Some(d) = v1(Controller::Pids) {
        u.tasks = read_u64(&d.join("pids.current"));
        u.tasks_max = read_limit(&d.join("pids.max"));
    } else {
        u.tasks = read_u64(&unified.join("pids.current"));
        u.tasks_max = read_limit(&unified.join("pids.max"));
    }
    if u.tasks.is_none() && unified.is_dir() {
        u.tasks = Some(threads_below(unified));
    }
    if u.cpu_usec.is_none() {
        u.cpu_usec = v1(Controller::Cpu)
            .and_then(|d| read_u64(&d.join("cpuacct.usage")))
            .map(|ns| ns / 1000);
    }
    u
}

/// How long the keeper keeps trying to remove a cgroup that is still busy.
pub const KEEPER_BUDGET: Duration = Duration::from_secs(10);

/// How long a launch spends on each stale cgroup it sweeps (a busy one is
/// left for the next launch).
const SWEEP_BUDGET: Duration = Duration::from_millis(200);

/// Who may own a machine cgroup called `dir`: a registered machine of that
/// name, and/or (for `NAME.PID`) an unregistered one whose launcher is PID.
/// None for names that are no machine's (left alone).
fn owners(dir: &str) -> Option<(Option<&str>, Option<u32>)> {
    let registered = machine_name_is_valid(dir).then_some(dir);
    let unregistered = dir.rsplit_once('.').and_then(|(name, pid)| {
        let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        (digits && machine_name_is_valid(name))
            .then(|| pid.parse::<u32>().ok())
            .flatten()
    });
    (registered.is_some() || unregistered.is_some()).then_some((registered, unregistered))
}

/// Removes the stale machine cgroups under `<hierarchy>/<parent>/` (the
/// unified one and the v1 ones we make): those whose machine name nobody
/// holds (checked, and held while removing, with the registry's name lock,
/// so a running machine's cgroup is never touched and no launcher of that
/// name starts meanwhile), and for `NAME.PID` cgroups of unregistered
/// machines, only once PID has exited. Whatever still runs in a stale cgroup
/// is killed: its machine's launcher and keeper are gone. Returns the
/// directories removed.
pub fn sweep_stale(h: &Hierarchies, parent: &str, registry: &Registry) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let roots = std::iter::once(&h.unified)
        .chain(h.devices.as_ref())
        .chain(h.v1.iter().map(|(_, p)| p));
    for root in roots {
        let Ok(rd) = fs::read_dir(root.join(parent)) else {
            continue;
        };
        for de in rd.flatten() {
            if !de.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(name) = de.file_name().into_string() else {
                continue;
            };
            let Some((registered, launcher)) = owners(&name) else {
                continue;
            };
            if launcher.is_some_and(|pid| process_start_time(pid).is_some()) {
                continue;
            }
            // Every name is also checked as a registered one ("web.1" may be
            // either); the claim is held until the directory is gone.
            let _claim = match registered.map(|n| registry.try_hold_idle(n)) {
                Some(Ok(Some(c))) => Some(c),
                Some(Ok(None)) => continue,
                Some(Err(e)) => {
                    tracing::debug!("cgroup sweep: {name}: {e}");
                    continue;
                }
                None => None,
            };
            let path = de.path();
            tracing::debug!("removing stale machine cgroup {}", path.display());
            if destroy_tree(&path, SWEEP_BUDGET) {
                removed.push(path);
            }
        }
    }
    removed
}

fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Removes `dir` and its children, killing what runs there, retrying each
/// busy directory for up to `budget`. True once the directory is gone.
fn destroy_tree(dir: &Path, budget: Duration) -> bool {
    if !dir.is_dir() {
        return true;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for de in rd.flatten() {
            if de.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                destroy_tree(&de.path(), budget);
            }
        }
    }
    let deadline = Instant::now() + budget;
    let mut pause = Duration::from_millis(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) if Instant::now() < deadline => {
                // Busy: kill what is left (cgroup.kill where the kernel has it).
                if fs::write(dir.join("cgroup.kill"), "1").is_err() {
                    for pid in procs(dir) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                // Exiting processes can take long on a loaded host: back
                // off to 50 ms between tries.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!("could not remove cgroup {}: {e}", dir.display());
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_own_a_cgroup() {
        assert_eq!(owners("web"), Some((Some("web"), None)));
        assert_eq!(owners("web.123"), Some((Some("web.123"), Some(123))));
        assert_eq!(owners("web.0123x"), Some((Some("web.0123x"), None)));
        assert_eq!(
            owners("web.99999999999"),
            Some((Some("web.99999999999"), None))
        );
        assert_eq!(owners("-bad"), None);
        assert_eq!(owners("-bad.12"), None);
        assert_eq!(owners(".12"), None);
    }

    #[test]
    fn hybrid_and_unified_hosts() {
        let hybrid = "\
29 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 29 0:32 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,devices
36 29 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
";
        assert_eq!(
            parse_mountinfo(hybrid),
            Some(Hierarchies {
                unified: "/sys/fs/cgroup/unified".into(),
                devices: Some("/sys/fs/cgroup/devices".into()),
                v1: vec![(Controller::Memory, "/sys/fs/cgroup/memory".into())],
                v2: vec![],
            })
        );
        let v2 = "30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            parse_mountinfo(v2),
            Some(Hierarchies {
                unified: "/sys/fs/cgroup".into(),
                devices: None,
                v1: vec![],
                v2: vec![],
            })
        );
        assert_eq!(parse_mountinfo("garbage\n1 2 3\n"), None);
    }

    fn facts(v1: bool) -> HostFacts {
        HostFacts {
            physical_memory: 1 << 30,
            tasks_max: 1000,
            modes: Controller::ALL
                .iter()
                .map(|c| {
                    let m = if v1 {
                        Mode::V1(format!("/cg/{}", c.v1_name()).into())
                    } else {
                        Mode::V2
                    };
                    (*c, (*c != Controller::Io || !v1).then_some(m))
                })
                .collect(),
        }
    }

    fn texts(ws: &[Write]) -> Vec<(&'static str, String)> {
        ws.iter()
            .flat_map(|w| w.files.first())
            .map(|(f, v)| (*f, format!("{v:?}")))
            .collect()
    }

    #[test]
    fn properties_become_control_files() {
        let limits: Limits = [
            "MemoryMax=50%",
            "MemoryHigh=infinity",
            "CPUQuota=50%",
            "CPUWeight=200",
            "TasksMax=10%",
            "AllowedCPUs=0-1",
        ]
        .iter()
        .map(|s| Property::parse(s).unwrap())
        .collect();
        let v2 = texts(&plan(&limits, &facts(false)).unwrap());
        let t = |s: &str| format!("{:?}", Value::Text(s.into()));
        assert_eq!(
            v2,
            vec![
                ("memory.max", t("536870912")),
                ("memory.high", t("max")),
                ("cpu.max", t("50000 100000")),
                ("cpu.weight", t("200")),
                ("pids.max", t("100")),
                ("cpuset.cpus", t("0-1")),
            ]
        );
        let v1 = texts(&plan(&limits, &facts(true)).unwrap());
        assert_eq!(
            v1,
            vec![
                ("memory.limit_in_bytes", t("536870912")),
                ("memory.soft_limit_in_bytes", t("-1")),
                ("cpu.cfs_period_us", t("100000")),
                ("cpu.cfs_quota_us", t("50000")),
                ("cpu.shares", t("2048")),
                ("pids.max", t("100")),
                ("cpuset.cpus", t("0-1")),
            ]
        );
        // A controller the host lacks is named.
        let io: Limits = [Property::IoWeight(10)].into_iter().collect();
        let e = plan(&io, &facts(true)).unwrap_err().to_string();
        assert!(e.starts_with("IOWeight= cannot be enforced"), "{e}");
        assert!(e.contains("blkio"), "{e}");
        assert!(plan(&io, &facts(false)).is_ok());
    }

    #[test]
    fn weights_convert_as_systemd() {
        assert_eq!(weight_to_shares(100), 1024);
        assert_eq!(weight_to_shares(1), 10);
        assert_eq!(weight_to_shares(10000), 102400);
        assert_eq!(weight_to_blkio(100), 500);
        assert_eq!(weight_to_blkio(1), 10);
        assert_eq!(weight_to_blkio(10000), 1000);
        assert_eq!(weight_to_bfq(100), 100);
        assert_eq!(weight_to_bfq(1), 1);
        assert_eq!(weight_to_bfq(10000), 1000);
    }

    /// A directory tree standing in for a cgroup file system (apply only
    /// makes directories and writes files).
    struct FakeFs(PathBuf);

    impl FakeFs {
        fn new(tag: &str) -> FakeFs {
            let d = std::env::temp_dir().join(format!("netspawn-cg-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            FakeFs(d)
        }

        fn file(&self, rel: &str, text: &str) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.0.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
        }
    }

    impl Drop for FakeFs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn limits(list: &[&str]) -> Limits {
        list.iter().map(|s| Property::parse(s).unwrap()).collect()
    }

    #[test]
    fn pure_v2_enables_controllers_in_the_ancestors() {
        let f = FakeFs::new("v2");
        let h = Hierarchies {
            unified: f.0.clone(),
            devices: None,
            v1: vec![],
            v2: vec!["memory".into(), "cpu".into(), "pids".into()],
        };
        f.file("cgroup.subtree_control", "cpu\n");
        f.file("a.slice/cgroup.subtree_control", "");
        for file in ["memory.max", "memory.high", "cpu.max", "pids.max"] {
            f.file(&format!("a.slice/web/{file}"), "max\n");
        }
        let l = limits(&[
            "MemoryMax=32M",
            "MemoryHigh=16M",
            "CPUQuota=150%",
            "TasksMax=9",
        ]);
        let writes = plan(&l, &HostFacts::read(&h)).unwrap();
        let made = apply(&h, Path::new("a.slice/web"), &writes, false).unwrap();
        assert!(
            made.is_empty(),
            "no v1 directory on a pure v2 host: {made:?}"
        );
        assert_eq!(f.read("a.slice/web/memory.max"), "33554432");
        assert_eq!(f.read("a.slice/web/memory.high"), "16777216");
        assert_eq!(f.read("a.slice/web/cpu.max"), "150000 100000");
        assert_eq!(f.read("a.slice/web/pids.max"), "9");
        // cpu was on at the root already; the slice gets the last one enabled.
        assert_eq!(f.read("cgroup.subtree_control"), "+pids");
        assert_eq!(f.read("a.slice/cgroup.subtree_control"), "+pids");
        // No swap accounting: refused, naming the controller.
        let e = apply(
            &h,
            Path::new("a.slice/web"),
            &plan(&limits(&["MemorySwapMax=0"]), &HostFacts::read(&h)).unwrap(),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("MemorySwapMax=") && e.contains("unified memory"),
            "{e}"
        );
        assert!(e.contains("swap accounting"), "{e}");
        // A controller the root does not offer.
        let e = plan(&limits(&["AllowedCPUs=0"]), &HostFacts::read(&h))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no cpuset controller"), "{e}");
    }

    #[test]
    fn v1_cpusets_inherit_before_use() {
        let f = FakeFs::new("v1");
        let cpuset = f.0.join("cpuset");
        let memory = f.0.join("memory");
        f.file("cpuset/cpuset.cpus", "0-3\n");
        f.file("cpuset/cpuset.mems", "0\n");
        f.file("memory/netspawn/web/memory.limit_in_bytes", "");
        f.file("memory/netspawn/web/memory.memsw.limit_in_bytes", "");
        let h = Hierarchies {
            unified: f.0.join("unified"),
            devices: None,
            v1: vec![
                (Controller::Cpuset, cpuset.clone()),
                (Controller::Memory, memory.clone()),
            ],
            v2: vec![],
        };
        // The fake kernel has no cpuset files in new directories: apply
        // copies the parent's into each level, then writes ours.
        let l = limits(&["AllowedCPUs=", "MemoryMax=1M"]);
        let writes = plan(&l, &HostFacts::read(&h)).unwrap();
        let rel = Path::new("netspawn/web");
        let made = apply(&h, rel, &writes, false).unwrap();
        assert_eq!(made, vec![memory.join(rel), cpuset.join(rel)]);
        assert_eq!(f.read("cpuset/netspawn/cpuset.cpus"), "0-3");
        assert_eq!(f.read("cpuset/netspawn/cpuset.mems"), "0");
        assert_eq!(f.read("cpuset/netspawn/web/cpuset.cpus"), "0-3");
        assert_eq!(
            f.read("memory/netspawn/web/memory.limit_in_bytes"),
            "1048576"
        );
        // Swap on top of the memory limit in force.
        let writes = plan(&limits(&["MemorySwapMax=1K"]), &HostFacts::read(&h)).unwrap();
        apply(&h, rel, &writes, false).unwrap();
        assert_eq!(
            f.read("memory/netspawn/web/memory.memsw.limit_in_bytes"),
            "1049600"
        );
    }
}
