//! The machine's control groups. The container lives in
//! `<cgroup2>/<parent>/<NAME>` on the unified hierarchy (which its cgroup
//! namespace shows as its root, so a booted systemd manages its own tree),
//! and, on hosts that still have the cgroup v1 `devices` controller, in
//! `devices/<parent>/<NAME>` with an allow list of the standard devices.
//! Works on pure v2 hosts and on hybrid ones (cgroup2 at /sys/fs/cgroup/unified).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
        for p in &self.paths {
            destroy_tree(p);
        }
    }
}

fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn destroy_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for de in rd.flatten() {
            if de.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                destroy_tree(&de.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
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
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                tracing::warn!("could not remove cgroup {}: {e}", dir.display());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
