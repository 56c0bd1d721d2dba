//! The exec settings applied in the container, after its mounts and before
//! the payload runs: inaccessible paths, the user (looked up in the
//! image's own /etc/passwd), working directory and the user's environment
//! ([`prepare`]); then resource limits, OOM score, CPU affinity,
//! no-new-privileges, the user switch and the capability sets ([`apply`]).
//!
//! Both run in the cloned child (single-threaded, root in the container's
//! namespaces, root directory already pivoted).

mod user;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use thiserror::Error;

use crate::config::Config;
use crate::ctl::passwd::User;

#[derive(Debug, Error)]
pub enum ExecError {
    #[error("Inaccessible path {path}: {err}")]
    Inaccessible { path: PathBuf, err: nix::Error },
    #[error("Failed to resolve user {0} in the container: no such user in its /etc/passwd")]
    NoUser(String),
    #[error("Failed to change to working directory {path}: {err}")]
    Chdir { path: PathBuf, err: nix::Error },
    #[error("{what}: {err}")]
    Sys { what: &'static str, err: nix::Error },
}

fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> ExecError {
    move |err| ExecError::Sys { what, err }
}

/// What [`prepare`] found, for [`apply`] and the exec.
#[derive(Debug)]
pub struct Prepared {
    /// The payload's environment (`NAME=VALUE`).
    pub env: Vec<String>,
    /// The user to switch to (`None`: stay root).
    pub user: Option<User>,
}

/// Where the inaccessible nodes live (as systemd's /run/systemd/inaccessible).
const INACCESSIBLE_DIR: &str = "/run/host/inaccessible";

/// Over-mounts the inaccessible paths, looks the user up, changes to the
/// working directory and completes the environment. `envp` is the
/// environment the launcher computed ([`Config::environment`]).
pub fn prepare(cfg: &Config, envp: &[String]) -> Result<Prepared, ExecError> {
    if !cfg.inaccessible.is_empty() {
        make_inaccessible(&cfg.inaccessible)?;
    }
    let user = match &cfg.user {
        Some(spec) => Some(user::lookup(spec).ok_or_else(|| ExecError::NoUser(spec.clone()))?),
        None => None,
    };
    let mut env = envp.to_vec();
    if let Some(u) = &user {
        user::environment(&mut env, u, &cfg.env);
    }
    let home = user.as_ref().map(|u| PathBuf::from(&u.home));
    match (&cfg.chdir, &home) {
        (Some(wd), _) => chdir(wd)?,
        // The user's home if it exists, as systemd-nspawn; else /.
        (None, Some(h)) => {
            if nix::unistd::chdir(h.as_path()).is_err() {
                chdir(Path::new("/"))?;
            }
        }
        (None, None) => chdir(Path::new("/"))?,
    }
    Ok(Prepared { env, user })
}

fn chdir(path: &Path) -> Result<(), ExecError> {
    nix::unistd::chdir(path).map_err(|err| ExecError::Chdir {
        path: path.to_path_buf(),
        err,
    })
}

/// Mounts an empty, mode-0000, read-only node over each path: a directory
/// over a directory, a regular file over anything else.
fn make_inaccessible(paths: &[PathBuf]) -> Result<(), ExecError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let base = Path::new(INACCESSIBLE_DIR);
    let dir = base.join("dir");
    let reg = base.join("reg");
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |err: nix::Error| ExecError::Inaccessible { path, err }
    };
    let io = |e: std::io::Error| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(base)
        .map_err(io)
        .map_err(fail(base))?;
    std::fs::DirBuilder::new()
        .mode(0o000)
        .create(&dir)
        .map_err(io)
        .map_err(fail(&dir))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&reg)
        .map_err(io)
        .map_err(fail(&reg))?;
    // Our root is the container's now; resolving through it with
    // openat2 also refuses magic links (/proc/PID/root/...), and the node
    // is mounted onto the resolved descriptor.
    let root = crate::rootdir::RootDir::open(Path::new("/")).map_err(fail(Path::new("/")))?;
    for p in paths {
        let fd = root.open_path(p).map_err(fail(p))?;
        let md = nix::sys::stat::fstat(&fd).map_err(fail(p))?;
        let src = if md.st_mode & libc::S_IFMT == libc::S_IFDIR {
            &dir
        } else {
            &reg
        };
        let at = crate::rootdir::fd_path(fd.as_fd());
        mount::<Path, str, str, str>(Some(src), at.as_str(), None, MsFlags::MS_BIND, None)
            .map_err(fail(p))?;
        // The descriptor is of what lies below the new bind: resolve again.
        let top = root.open_path(p).map_err(fail(p))?;
        mount::<str, str, str, str>(
            None,
            crate::rootdir::fd_path(top.as_fd()).as_str(),
            None,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None,
        )
        .map_err(fail(p))?;
    }
    Ok(())
}

/// Applies resource limits, OOM score, CPU affinity and no-new-privileges,
/// then switches to the user and sets the capability sets as
/// systemd-nspawn does: for root, effective, permitted and inheritable are
/// the retained set (`cfg.caps`); for any other user, all are empty.
/// Runs after the bounding set is dropped and the system call filter is
/// installed (which needs CAP_SYS_ADMIN, so it comes before the switch).
pub fn apply(cfg: &Config, p: &Prepared) -> Result<(), ExecError> {
    use nix::sys::resource::setrlimit;
    for (res, l) in &cfg.rlimits {
        let r = resource(*res).ok_or(ExecError::Sys {
            what: "set resource limit",
            err: nix::Error::EINVAL,
        })?;
        setrlimit(r, l.soft, l.hard).map_err(sys("set resource limit"))?;
    }
    if let Some(adj) = cfg.oom_score_adjust {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
            .map_err(sys("set OOM score adjustment"))?;
    }
    if let Some(cpus) = &cfg.cpu_affinity {
        let mut set = nix::sched::CpuSet::new();
        for c in cpus {
            set.set(*c).map_err(sys("set CPU affinity"))?;
        }
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .map_err(sys("set CPU affinity"))?;
    }
    if cfg.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(sys("set no-new-privileges"))?;
    }
    match &p.user {
        Some(u) if u.uid != 0 => {
            user::switch(u)?;
            user::set_capabilities(0)
        }
        _ => user::set_capabilities(cfg.caps),
    }
}

/// The nix resource of a kernel `RLIMIT_*` number.
fn resource(n: u32) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    let all = [
        R::RLIMIT_CPU,
        R::RLIMIT_FSIZE,
        R::RLIMIT_DATA,
        R::RLIMIT_STACK,
        R::RLIMIT_CORE,
        R::RLIMIT_RSS,
        R::RLIMIT_NOFILE,
        R::RLIMIT_AS,
        R::RLIMIT_NPROC,
        R::RLIMIT_MEMLOCK,
        R::RLIMIT_LOCKS,
        R::RLIMIT_SIGPENDING,
        R::RLIMIT_MSGQUEUE,
        R::RLIMIT_NICE,
        R::RLIMIT_RTPRIO,
        R::RLIMIT_RTTIME,
    ];
    all.into_iter().find(|r| *r as u32 == n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RLIMITS;

    #[test]
    fn every_rlimit_has_a_resource() {
        for (name, n) in RLIMITS {
            assert!(resource(n).is_some(), "{name}");
        }
    }
}
