//! `--overlay=`/`--overlay-ro=` (`Overlay=`/`OverlayReadOnly=`): the
//! directories of each overlay are opened by the launcher before the clone
//! (a `+` one resolved inside the image's root, never through a symlink out
//! of it), and the container mounts the overlay through those descriptors
//! (`/proc/self/fd/N`) onto its destination, resolved inside the root too.
//!
//! A writable overlay needs a work directory on the upper's file system: a
//! hidden `.#NAME` plus 16 hex digits beside the upper directory, made here
//! and removed with the machine (by the keeper after `kill -9`), as
//! systemd-nspawn places it. An empty upper is a fresh tmpfs (systemd uses
//! a directory in /var/tmp): nothing is left on disk.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use thiserror::Error;

use crate::ephemeral::Scratch;
use crate::rootdir::{fd_path, Make, RootDir};
use crate::spec::{OverlayDir, OverlaySpec};

#[derive(Debug, Error)]
pub enum OverlayError {
    #[error("overlay directory {path}: {err}")]
    Dir { path: String, err: nix::Error },
}

/// What the container mounts: the spec, with the name of the work
/// directory the launcher made beside the upper one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    pub lower: Vec<OverlayDir>,
    pub upper: Option<OverlayDir>,
    /// In the upper directory's parent (a writable overlay with an upper).
    pub work: Option<OsString>,
    pub dest: PathBuf,
    pub read_only: bool,
}

/// The directories of an overlay, opened in the mount namespace that
/// mounts it (overlayfs takes its layers only from there).
#[derive(Debug)]
pub struct Layers {
    lower: Vec<OwnedFd>,
    upper: Option<OwnedFd>,
    work: Option<OwnedFd>,
}

fn io(e: std::io::Error) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Checks the directories of `spec` before anything runs (the lower ones
/// exist), makes the upper one if missing, and for a writable overlay a
/// work directory beside it, in `scratch`.
pub fn prepare(
    spec: &OverlaySpec,
    root: &RootDir,
    scratch: &mut Scratch,
) -> Result<OverlayMount, OverlayError> {
    for d in &spec.lower {
        open_dir(d, root, false).map_err(fail(d))?;
    }
    let mut work = None;
    if let Some(d) = &spec.upper {
        open_dir(d, root, true).map_err(fail(d))?;
        if !spec.read_only {
            let (parent, leaf) = parent_of(d, root).map_err(fail(d))?;
            let mut name = OsString::from(".#");
            name.push(&leaf);
            name.push(format!("{:016x}", crate::ephemeral::random_u64()));
            scratch.make_dir(parent, &name).map_err(fail(d))?;
            work = Some(name);
        }
    }
    Ok(OverlayMount {
        lower: spec.lower.clone(),
        upper: spec.upper.clone(),
        work,
        dest: spec.dest.clone(),
        read_only: spec.read_only,
    })
}

fn fail(d: &OverlayDir) -> impl FnOnce(nix::Error) -> OverlayError {
    let plus = if d.in_container { "+" } else { "" };
    let path = format!("{plus}{}", d.path.display());
    move |err| OverlayError::Dir { path, err }
}

/// Opens the overlay's directories (`+` ones inside `root`, the
/// container's root).
pub fn open(m: &OverlayMount, root: &RootDir) -> Result<Layers, OverlayError> {
    let lower = m
        .lower
        .iter()
        .map(|d| open_dir(d, root, false).map_err(fail(d)))
        .collect::<Result<Vec<_>, _>>()?;
    let upper = match &m.upper {
        Some(d) => Some(open_dir(d, root, false).map_err(fail(d))?),
        None => None,
    };
    let work = match (&m.upper, &m.work) {
        (Some(d), Some(w)) => {
            let (parent, _) = parent_of(d, root).map_err(fail(d))?;
            Some(
                nix::fcntl::openat(
                    &parent,
                    w.as_os_str(),
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(fail(d))?,
            )
        }
        _ => None,
    };
    Ok(Layers { lower, upper, work })
}

/// Opens a directory of an overlay (`O_PATH`); `make`: made if missing.
fn open_dir(d: &OverlayDir, root: &RootDir, make: bool) -> nix::Result<OwnedFd> {
    let fd = if d.in_container {
        root.chase(
            &d.path,
            if make {
                Make::Dir(0o755)
            } else {
                Make::Nothing
            },
        )?
    } else {
        if make {
            std::fs::create_dir_all(&d.path).map_err(io)?;
        }
        nix::fcntl::open(
            &d.path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?
    };
    let st = nix::sys::stat::fstat(&fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(nix::Error::ENOTDIR);
    }
    Ok(fd)
}

/// The directory that holds `d` and `d`'s name in it.
fn parent_of(d: &OverlayDir, root: &RootDir) -> nix::Result<(OwnedFd, OsString)> {
    let leaf = d.path.file_name().ok_or(nix::Error::EINVAL)?.to_os_string();
    let parent = d.path.parent().unwrap_or(Path::new("/"));
    let fd = if d.in_container {
        root.open_path(parent)?
    } else {
        nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?
    };
    Ok((fd, leaf))
}

/// The option string of an overlay: the lower layers top first (the last
/// written), then the upper and work directories, or for a writable
/// overlay without an upper of its own those in the tmpfs `tmpfs` (a
/// descriptor path). A read-only overlay has its upper (or the tmpfs's
/// empty `upper`) as its top layer.
pub fn options(l: &Layers, read_only: bool, tmpfs: Option<&str>) -> String {
    let p = |fd: &OwnedFd| fd_path(fd.as_fd());
    let mut lower: Vec<String> = l.lower.iter().rev().map(p).collect();
    if read_only {
        match (&l.upper, tmpfs) {
            (Some(u), _) => lower.insert(0, p(u)),
            // An empty top layer: overlayfs wants two layers without an upper.
            (None, Some(t)) => lower.insert(0, format!("{t}/upper")),
            (None, None) => {}
        }
    }
    let lowerdir = lower.join(":");
    match (&l.upper, &l.work, read_only, tmpfs) {
        (_, _, true, _) => format!("lowerdir={lowerdir}"),
        (Some(u), Some(w), false, _) => {
            format!("lowerdir={lowerdir},upperdir={},workdir={}", p(u), p(w))
        }
        (_, _, false, Some(t)) => {
            format!("lowerdir={lowerdir},upperdir={t}/upper,workdir={t}/work")
        }
        // (A writable overlay has a work directory or a tmpfs.)
        _ => format!("lowerdir={lowerdir}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_checked_made_and_opened_inside_the_root() {
        let base = std::env::temp_dir().join(format!("netspawn-ovl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("lower")).unwrap();
        std::fs::create_dir_all(base.join("host-lower")).unwrap();
        // A symlink in the image to the host's base: "+" paths stay inside.
        std::os::unix::fs::symlink(&base, root.join("out")).unwrap();
        let r = RootDir::open(&root).unwrap();
        let spec = crate::spec::parse_overlay(
            &format!(
                "{}:+/lower:+/out/upper:/m",
                base.join("host-lower").display()
            ),
            false,
        )
        .unwrap();
        let mut scratch = Scratch::default();
        let m = prepare(&spec, &r, &mut scratch).unwrap();
        let inside = root.join(base.strip_prefix("/").unwrap());
        // The upper was made inside the root, not through the symlink.
        assert!(inside.join("upper").is_dir());
        assert!(!base.join("upper").exists());
        let work = inside.join(m.work.as_ref().unwrap());
        assert!(work.is_dir());
        assert!(work
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".#upper"));
        let l = open(&m, &r).unwrap();
        let o = options(&l, false, None);
        assert!(o.starts_with("lowerdir=/proc/self/fd/"), "{o}");
        assert_eq!(o.matches("/proc/self/fd/").count(), 4, "{o}");
        let ro = options(&l, true, None);
        assert_eq!(ro.matches("/proc/self/fd/").count(), 3, "{ro}");
        assert!(!ro.contains("upperdir"), "{ro}");
        drop(l);
        drop(scratch);
        assert!(!work.exists());
        // A missing lower is refused, named.
        let spec = crate::spec::parse_overlay("+/nope:/u:/m", false).unwrap();
        let e = prepare(&spec, &r, &mut Scratch::default()).unwrap_err();
        assert!(e.to_string().contains("+/nope"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
