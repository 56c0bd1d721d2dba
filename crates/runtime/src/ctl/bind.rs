//! `bind NAME SRC [DST] [--read-only] [--mkdir]`: a host directory or file
//! bind-mounted into a running machine, the way systemd does it on a kernel
//! with the new mount API: `open_tree(OPEN_TREE_CLONE)` of SRC in the host
//! (made read-only with `mount_setattr` for `--read-only`), then a child
//! joins the machine's mount namespace and `move_mount`s the detached tree
//! onto DST, which is resolved in the machine's root with
//! `openat2(RESOLVE_IN_ROOT)` (`--mkdir` makes what is missing, level by
//! level): the machine's symlinks never lead the mount out of it.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::ForkResult;

use super::CtlError;
use crate::rootdir::{Make, RootDir};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// A detached copy of the mount tree at `src` (recursive, as `--bind`).
fn open_tree(src: &Path) -> std::io::Result<OwnedFd> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(src.as_os_str()))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated path; returns a new descriptor we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn move_mount(tree: BorrowedFd<'_>, onto: BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: both descriptors are valid; empty paths mean the descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            onto.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `bind`.
pub fn bind(
    name: &str,
    src: &Path,
    dst: Option<&str>,
    read_only: bool,
    mkdir: bool,
) -> Result<i32, CtlError> {
    let e = super::lookup_container(name, "bind")?;
    let src = std::path::absolute(src)
        .map_err(|err| CtlError::Usage(format!("Invalid path '{}': {err}", src.display())))?;
    let dst = match dst {
        Some(d) if d.starts_with('/') => PathBuf::from(d),
        Some(d) => {
            return Err(CtlError::Usage(format!(
                "Path in the machine must be absolute: '{d}'"
            )))
        }
        None => src.clone(),
    };
    let meta = std::fs::metadata(&src)
        .map_err(|err| CtlError::Usage(format!("Cannot bind '{}': {err}", src.display())))?;
    let tree = open_tree(&src)
        .map_err(|err| CtlError::Usage(format!("Cannot bind '{}': {err}", src.display())))?;
    if read_only {
        crate::sys::mount_setattr_rdonly_fd(tree.as_fd(), true).map_err(|err| {
            CtlError::Usage(format!("Cannot make '{}' read-only: {err}", src.display()))
        })?;
    }
    let gone = |what: &str, err: nix::Error| {
        CtlError::Usage(format!(
            "machine '{name}' is not running any more ({what}: {})",
            err.desc()
        ))
    };
    let root_path = format!("/proc/{}/root", e.leader);
    let root = RootDir::open(Path::new(&root_path)).map_err(|err| gone(&root_path, err))?;
    let ns_path = format!("/proc/{}/ns/mnt", e.leader);
    let mntns = nix::fcntl::open(
        ns_path.as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|err| gone(&ns_path, err))?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|err| CtlError::Usage(format!("pipe: {err}")))?;
    // SAFETY: netspawnctl is single-threaded here; the child only makes
    // system calls and writes one message before _exit.
    match unsafe { nix::unistd::fork() }.map_err(|err| CtlError::Usage(format!("fork: {err}")))? {
        ForkResult::Child => {
            drop(rd);
            let result = (|| -> Result<(), String> {
                nix::sched::setns(&mntns, CloneFlags::CLONE_NEWNS)
                    .map_err(|e| format!("join the mount namespace of machine '{name}': {e}"))?;
                let target = if mkdir {
                    let make = if meta.is_dir() {
                        Make::Dir(0o755)
                    } else {
                        Make::File
                    };
                    root.chase(&dst, make)
                } else {
                    root.open_path(&dst)
                }
                .map_err(|e| {
                    format!(
                        "Cannot open '{}' in machine '{name}': {}{}",
                        dst.display(),
                        e.desc(),
                        if e == nix::errno::Errno::ENOENT && !mkdir {
                            " (--mkdir makes it)"
                        } else {
                            ""
                        }
                    )
                })?;
                move_mount(tree.as_fd(), target.as_fd()).map_err(|e| {
                    format!(
                        "Cannot mount '{}' on '{}' in machine '{name}': {e}",
                        src.display(),
                        dst.display()
                    )
                })
            })();
            let code = match result {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = nix::unistd::write(&wr, msg.as_bytes());
                    1
                }
            };
            // SAFETY: _exit in the forked child, without running the parent's
            // atexit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut msg = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut msg);
            let status = nix::sys::wait::waitpid(child, None);
            match status {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(0),
                _ if !msg.is_empty() => Err(CtlError::Usage(msg)),
                other => Err(CtlError::Usage(format!(
                    "bind into machine '{name}' failed: {other:?}"
                ))),
            }
        }
    }
}
