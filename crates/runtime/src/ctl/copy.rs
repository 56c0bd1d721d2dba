//! `copy-to` and `copy-from`: files and trees between the host and a
//! running machine, as machinectl copies them (owners, modes, times, xattrs,
//! hard links, device nodes kept; `--force` replaces what is in the way,
//! else an existing destination is refused). What `copy-from` brings out is
//! the machine's, so hostile: it loses set-user-ID and set-group-ID bits and
//! `security.*`/`trusted.*` attributes (file capabilities), and a device
//! node in it stops the copy.
//!
//! Paths inside the machine are resolved in its root as the machine sees it
//! (`/proc/LEADER/root`, with its mounts) by `openat2(RESOLVE_IN_ROOT)`: a
//! symlink in the machine pointing at `/etc` means the machine's `/etc`, and
//! nothing the machine controls leads the copy out to the host. The last
//! component is never followed (a symlink is copied as a symlink), and every
//! step below is an `*at` call on a directory descriptor ([`tree::Copier`]).

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use super::images::tree;
use super::CtlError;
use crate::sys::{RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS};

/// The machine's root directory as its leader sees it.
fn machine_root(name: &str) -> Result<OwnedFd, CtlError> {
    let e = super::lookup_container(name, "copy-to/copy-from")?;
    let path = format!("/proc/{}/root", e.leader);
    tree::open_dir(Path::new(&path)).map_err(|err| {
        CtlError::Usage(format!(
            "machine '{name}' is not running any more ({path}: {err})"
        ))
    })
}

/// Splits an absolute path into its parent and last component; "/" and
/// paths ending in `..` or `.` have no last component to copy to or from.
fn split(path: &Path, what: &str) -> Result<(PathBuf, CString), CtlError> {
    let bad = || CtlError::Usage(format!("Invalid {what} path '{}'", path.display()));
    match path.components().next_back() {
        Some(Component::Normal(n)) => Ok((
            path.parent().unwrap_or(Path::new("/")).to_path_buf(),
            tree::cname(n).map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

fn machine_path(p: &str) -> Result<PathBuf, CtlError> {
    if !p.starts_with('/') {
        return Err(CtlError::Usage(format!(
            "Path in the machine must be absolute: '{p}'"
        )));
    }
    Ok(PathBuf::from(p))
}

/// The directory `path` inside the machine, resolved in its root.
fn open_in_machine(root: &OwnedFd, path: &Path, machine: &str) -> Result<OwnedFd, CtlError> {
    crate::sys::openat2(
        root.as_fd(),
        path,
        libc::O_PATH | libc::O_DIRECTORY,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
    .map_err(|e| {
        CtlError::Usage(format!(
            "Cannot open directory '{}' in machine '{machine}': {}",
            path.display(),
            e.desc()
        ))
    })
}

fn open_on_host(path: &Path) -> Result<OwnedFd, CtlError> {
    tree::open_dir(path)
        .map_err(|e| CtlError::Usage(format!("Cannot open directory '{}': {e}", path.display())))
}

fn copy(
    src_dir: &OwnedFd,
    src_name: &CString,
    dst_dir: &OwnedFd,
    dst_name: &CString,
    force: bool,
    from_machine: bool,
    shown: (&str, &str),
) -> Result<i32, CtlError> {
    if let Err(e) = tree::lstat_at(src_dir.as_fd(), src_name) {
        return Err(CtlError::Usage(format!("Cannot copy '{}': {e}", shown.0)));
    }
    if !force && tree::lstat_at(dst_dir.as_fd(), dst_name).is_ok() {
        return Err(CtlError::Usage(format!(
            "'{}' already exists (use --force to replace it)",
            shown.1
        )));
    }
    let copier = tree::Copier::new(force);
    let mut copier = if from_machine {
        copier.untrusted()
    } else {
        copier
    };
    copier
        .copy(src_dir.as_fd(), src_name, dst_dir.as_fd(), dst_name)
        .map_err(|e| {
            CtlError::Usage(format!(
                "Copy of '{}' to '{}' failed: {e}",
                shown.0, shown.1
            ))
        })?;
    Ok(0)
}

/// `copy-to NAME HOST-PATH [MACHINE-PATH] [--force]`.
pub fn copy_to(name: &str, src: &Path, dst: Option<&str>, force: bool) -> Result<i32, CtlError> {
    let src = std::path::absolute(src)
        .map_err(|e| CtlError::Usage(format!("Invalid path '{}': {e}", src.display())))?;
    let dst = match dst {
        Some(d) => machine_path(d)?,
        None => src.clone(),
    };
    let root = machine_root(name)?;
    let (sp, sn) = split(&src, "source")?;
    let (dp, dn) = split(&dst, "destination")?;
    let sdir = open_on_host(&sp)?;
    let ddir = open_in_machine(&root, &dp, name)?;
    let shown_dst = format!("{name}:{}", dst.display());
    copy(
        &sdir,
        &sn,
        &ddir,
        &dn,
        force,
        false,
        (&src.to_string_lossy(), &shown_dst),
    )
}

/// `copy-from NAME MACHINE-PATH [HOST-PATH] [--force]`.
pub fn copy_from(name: &str, src: &str, dst: Option<&Path>, force: bool) -> Result<i32, CtlError> {
    let src = machine_path(src)?;
    let dst = match dst {
        Some(d) => std::path::absolute(d)
            .map_err(|e| CtlError::Usage(format!("Invalid path '{}': {e}", d.display())))?,
        None => src.clone(),
    };
    let root = machine_root(name)?;
    let (sp, sn) = split(&src, "source")?;
    let (dp, dn) = split(&dst, "destination")?;
    let sdir = open_in_machine(&root, &sp, name)?;
    let ddir = open_on_host(&dp)?;
    let shown_src = format!("{name}:{}", src.display());
    copy(
        &sdir,
        &sn,
        &ddir,
        &dn,
        force,
        true,
        (&shown_src, &dst.to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths() {
        let (p, n) = split(Path::new("/etc/hostname"), "x").unwrap();
        assert_eq!(p, Path::new("/etc"));
        assert_eq!(n.as_bytes(), b"hostname");
        assert!(split(Path::new("/"), "x").is_err());
        assert!(split(Path::new("/a/.."), "x").is_err());
        assert!(machine_path("etc").is_err());
    }
}
