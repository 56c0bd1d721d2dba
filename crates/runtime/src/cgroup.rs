//! The machine's control groups. The container lives in
//! `<cgroup2>/<parent>/<NAME>` on the unified hierarchy (which its cgroup
//! namespace shows as its root, so a booted systemd manages its own tree),
//! and, on hosts that still have the cgroup v1 `devices` controller, in
//! `devices/<parent>/<NAME>` with an allow list of the standard devices.
//! Works on pure v2 hosts and on hybrid ones (cgroup2 at /sys/fs/cgroup/unified).
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

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("no cgroup2 file system is mounted on this host")]
    NoUnified,
    #[error("cgroup {path}: {err}")]
    Io { path: PathBuf, err: io::Error },
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

/// Where the cgroup file systems are mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    pub unified: PathBuf,
    /// The v1 devices controller, if the host has one mounted.
    pub devices: Option<PathBuf>,
}

/// Parses /proc/self/mountinfo text for the cgroup mounts.
pub fn parse_mountinfo(text: &str) -> Option<Hierarchies> {
    let mut unified = None;
    let mut devices = None;
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
        }
    }
    Some(Hierarchies {
        unified: unified?,
        devices,
    })
}

impl Hierarchies {
    pub fn detect() -> Result<Hierarchies, CgroupError> {
        let text = fs::read_to_string("/proc/self/mountinfo").map_err(|err| CgroupError::Io {
            path: "/proc/self/mountinfo".into(),
            err,
        })?;
        parse_mountinfo(&text).ok_or(CgroupError::NoUnified)
    }
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
    ) -> Result<(Cgroups, DevicePolicy), CgroupError> {
        let unified = h.unified.join(parent).join(name);
        let v1 = h.devices.as_ref().map(|d| d.join(parent).join(name));
        // Leftovers of an earlier run in either hierarchy go first.
        Cgroups {
            paths: std::iter::once(unified.clone()).chain(v1.clone()).collect(),
        }
        .destroy();
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
        for p in &self.paths {
            all &= destroy_tree(p, budget);
        }
        all
    }
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
    let roots = std::iter::once(&h.unified).chain(h.devices.as_ref());
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
                devices: Some("/sys/fs/cgroup/devices".into())
            })
        );
        let v2 = "30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            parse_mountinfo(v2),
            Some(Hierarchies {
                unified: "/sys/fs/cgroup".into(),
                devices: None
            })
        );
        assert_eq!(parse_mountinfo("garbage\n1 2 3\n"), None);
    }
}
