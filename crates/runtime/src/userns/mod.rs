//! User namespaces (`-U`, `--private-users=`, `--private-users-ownership=`),
//! as systemd-nspawn(1) describes them: [`pick`] chooses the container's
//! UID/GID range (free of running machines, under a lock), [`shift`] chowns
//! an image into a range once, [`idmap`] makes idmapped mounts so an image
//! stays owned by 0 on disk. This module decides, before the clone, what a
//! launch uses ([`prepare`]) and writes the new namespace's maps.

pub mod idmap;
pub mod pick;
pub mod shift;

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

pub use netspawn_common::registry::UidRange;
use thiserror::Error;

/// The range every container gets unless told otherwise (16 bits of IDs).
pub const RANGE_16: u32 = 0x10000;

/// How the range is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `pick` (and `-U`): the image root's range if free, else a free one.
    Pick,
    /// `yes`: the range of the root directory's owner, 65536 IDs.
    FromRoot,
    /// `BASE[:N]` and `identity` (0:65536).
    Fixed(UidRange),
}

/// What is done so the image's files belong to the container's users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Off,
    Chown,
    Map,
    Auto,
}

/// The resolved `--private-users=` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub mode: Mode,
    pub ownership: Ownership,
    /// `-U`/`pick`: without user namespaces in the kernel, go on without one.
    pub fallback: bool,
    /// `--read-only`: the image is never chowned (`auto` maps or does nothing).
    pub read_only: bool,
}

#[derive(Debug, Error)]
pub enum UsernsError {
    #[error("{0}")]
    Pick(#[from] pick::PickError),
    #[error("{0}")]
    Shift(#[from] shift::ShiftError),
    #[error("The kernel has no user namespaces (/proc/sys/user/max_user_namespaces is 0)")]
    Unavailable,
    #[error("--private-users-ownership=map: {0}")]
    NoIdmap(String),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

/// What a launch uses, decided before the clone.
#[derive(Debug)]
pub struct Active {
    pub range: UidRange,
    /// A user namespace with the container's mapping, for idmapped mounts
    /// (`map`); None when the image is chowned or left alone.
    pub idmap: Option<OwnedFd>,
    /// The idmapped tree of the root that showed `map` works, kept for the
    /// first boot (made again for a reboot).
    pub root_tree: RefCell<Option<OwnedFd>>,
    /// The range's own lock, held for the machine's life.
    _range_lock: File,
    /// The process that made the idmap's namespace, reaped once gone.
    helper: RefCell<idmap::Helper>,
}

impl Active {
    /// Reaps the idmap's helper process if it has exited by now.
    pub fn reap_helper(&self) {
        self.helper.borrow_mut().try_reap();
    }
}

/// False if the kernel allows no user namespaces at all.
pub fn available() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map(|s| s.trim() != "0")
        .unwrap_or(true)
}

/// Picks the range for machine `name` (under the lock in `locks_dir`,
/// checked against the running machines `taken` and the ranges other
/// launchers hold) and gets the image's ownership ready. None: no user
/// namespace after all (`-U` on a kernel without them).
pub fn prepare(
    spec: &Spec,
    name: &str,
    root: &Path,
    locks_dir: &Path,
    taken: impl FnOnce() -> Vec<(String, UidRange)>,
) -> Result<Option<Active>, UsernsError> {
    if !available() {
        if spec.fallback {
            eprintln!("User namespaces are not available in this kernel, running without.");
            return Ok(None);
        }
        return Err(UsernsError::Unavailable);
    }
    let owner = pick::root_owner(root)?;
    let host = pick::HostIds::new();
    let range_lock;
    let range = {
        // Held only for the pick: from then on the range's own lock file
        // says it is ours.
        let _pick = pick::lock(locks_dir)?;
        let mut taken = taken();
        taken.extend(pick::held_ranges(locks_dir)?);
        let range = pick::choose(spec.mode, owner, &taken, |id| host.has(id))?;
        range_lock =
            pick::try_range_lock(locks_dir, range, name)?.ok_or(pick::PickError::InUse(range))?;
        range
    };
    // A user namespace with the container's maps: proof that the kernel
    // lets us make one (else `-U` goes on without), and the idmap for `map`.
    let (ns, helper) = match idmap::userns_fd(range) {
        Ok(made) => made,
        Err(e) if spec.fallback => {
            eprintln!("Cannot make a user namespace ({e}), running without.");
            return Ok(None);
        }
        Err(e) => {
            return Err(UsernsError::Io {
                what: "create a user namespace".into(),
                err: e.into(),
            })
        }
    };
    // An image shifted already (its root not owned by 0) is chowned, into
    // the same range (nothing to do) or a new one, as systemd does: an
    // idmapped mount would show its files as nobody's.
    let shifted = owner.0 != 0;
    let ownership = match spec.ownership {
        Ownership::Auto if shifted && spec.read_only => Ownership::Off,
        Ownership::Auto if shifted => Ownership::Chown,
        Ownership::Map if shifted => {
            return Err(UsernsError::NoIdmap(format!(
                "{} is owned by {}, not 0: it is shifted already",
                root.display(),
                owner.0
            )))
        }
        o => o,
    };
    let mut idmap = None;
    let mut root_tree = None;
    match ownership {
        Ownership::Off => {}
        Ownership::Chown => {
            shift::shift_tree(root, range)?;
        }
        Ownership::Map | Ownership::Auto => match idmap::clone_tree(root, true, ns.as_fd()) {
            Ok(tree) => {
                root_tree = Some(tree);
                idmap = Some(ns)
            }
            Err(e) if ownership == Ownership::Map => {
                return Err(UsernsError::NoIdmap(format!(
                    "cannot make an idmapped mount of {}: {e}",
                    root.display()
                )))
            }
            Err(e) if spec.read_only => {
                tracing::debug!(
                    "no idmapped mount of {}: {e}; read-only, left as it is",
                    root.display()
                );
            }
            Err(e) => {
                tracing::debug!("no idmapped mount of {}: {e}; chown", root.display());
                shift::shift_tree(root, range)?;
            }
        },
    }
    Ok(Some(Active {
        range,
        idmap,
        root_tree: RefCell::new(root_tree),
        _range_lock: range_lock,
        helper: RefCell::new(helper),
    }))
}

/// The `uid_map`/`gid_map` line: container 0.. onto the range.
pub fn map_line(range: UidRange) -> String {
    format!("0 {} {}\n", range.shift, range.range)
}

/// Writes the maps of process `pid`'s new user namespace (from the parent
/// namespace, so setgroups(2) stays allowed for the container).
pub fn write_maps(pid: i32, range: UidRange) -> std::io::Result<()> {
    let line = map_line(range);
    std::fs::write(format!("/proc/{pid}/uid_map"), &line)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &line)
}

/// In the child, once its maps are written: become the namespace's root
/// (the kernel keeps the host's IDs until then), keeping the capabilities.
pub fn become_root() -> nix::Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))?;
    setgroups(&[])?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))?;
    // A change of IDs makes the process non-dumpable, which would leave
    // its /proc files to the host's root until exec.
    // SAFETY: a plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Hands `path` (a file netspawn made for the container) to its root.
pub fn chown_to_root(path: &Path, range: UidRange) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(range.shift), Some(range.shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lines() {
        assert_eq!(
            map_line(UidRange::new(524288, 65536).unwrap()),
            "0 524288 65536\n"
        );
        assert_eq!(map_line(UidRange::new(0, 65536).unwrap()), "0 0 65536\n");
    }
}
