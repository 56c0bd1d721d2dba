//! Thin wrappers over the raw system calls the launcher needs that `nix`
//! does not cover (clone with fork semantics, pivot_root, close_range,
//! openat2, mount_setattr). Each is a single syscall; callers own the policy.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::Pid;

/// `clone(2)` with fork semantics (no new stack): returns `None` in the child
/// and the child's PID in the parent. `flags` are `CLONE_NEW*` flags; SIGCHLD
/// is added so the parent can wait for the child normally.
///
/// # Safety
/// Same rules as `fork(2)`: the caller must be single-threaded, and the child
/// should avoid anything that could deadlock on locks held at the time of the
/// call.
pub unsafe fn clone_fork(flags: libc::c_int) -> nix::Result<Option<Pid>> {
    let r = libc::syscall(
        libc::SYS_clone,
        (flags | libc::SIGCHLD) as libc::c_ulong,
        0usize,
        0usize,
        0usize,
        0usize,
    );
    match r {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// `clone3(2)` with fork semantics, creating the child directly in the
/// cgroup2 directory `cgroup` (CLONE_INTO_CGROUP): no migration afterwards,
/// which would wait for an RCU grace period (10-15 ms). Returns `ENOSYS`
/// or `EINVAL` on kernels without it; the caller falls back to
/// [`clone_fork`] and a move.
///
/// # Safety
/// As [`clone_fork`].
pub unsafe fn clone3_into_cgroup(
    flags: libc::c_int,
    cgroup: std::os::fd::RawFd,
) -> nix::Result<Option<Pid>> {
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        // With CLONE_PARENT the child takes its parent's exit signal.
        exit_signal: if flags & libc::CLONE_PARENT != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        },
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup as u64,
    };
    let r = libc::syscall(
        libc::SYS_clone3,
        &args as *const CloneArgs,
        size_of::<CloneArgs>(),
    );
    match r {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> nix::Result<()> {
    nix::unistd::pivot_root(new_root, put_old)
}

/// Makes the mount that `fd` (an `O_PATH` descriptor of a mount's root) is
/// on read-only with `mount_setattr(2)`, and with `recursive` every mount
/// below it too (`AT_RECURSIVE`), leaving its other flags (nosuid, nodev,
/// ...) as they are. `ENOSYS` before Linux 5.12.
pub fn mount_setattr_rdonly_fd(fd: BorrowedFd<'_>, recursive: bool) -> nix::Result<()> {
    mount_setattr_rdonly_at(
        fd.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint,
        recursive,
    )
}

fn mount_setattr_rdonly_at(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
    recursive: bool,
) -> nix::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = flags | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: the path is NUL-terminated and the attribute struct is alive
    // for the call, with its size passed alongside.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Marks every descriptor from `first` upwards close-on-exec, so no host file
/// descriptor survives into the payload.
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    // CLOSE_RANGE_CLOEXEC = 1 << 2
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 4u32) };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack the flag: fall back to marking each open fd.
    for entry in std::fs::read_dir("/proc/self/fd").map_err(|_| Errno::last())? {
        let Ok(entry) = entry else { continue };
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        {
            if fd as u32 >= first {
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)` resolve flag: no `/proc/PID/fd`-style magic links on the way.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// `openat2(2)` resolve flag: `dirfd` is `/` for the walk (absolute symlinks
/// and `..` stay below it).
pub const RESOLVE_IN_ROOT: u64 = 0x10;

/// `openat2(2)`: opens `path` relative to `dirfd` with `flags` (O_CLOEXEC
/// added) and the `RESOLVE_*` bits in `resolve`. A leading `/` is dropped
/// and an empty path means `dirfd` itself. Retries the kernel's EAGAIN (a
/// mount or rename raced with a walk through "..") and EINTR.
pub fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
    resolve: u64,
) -> nix::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let path_c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    let mut tries = 0;
    loop {
        // SAFETY: the path is NUL-terminated and `how` is alive for the
        // call, with its size passed alongside; the result is a new
        // descriptor we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd.as_raw_fd(),
                path_c.as_ptr(),
                &how as *const OpenHow,
                size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: openat2 returned a fresh descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as i32) });
        }
        let err = Errno::last();
        tries += 1;
        if (err != Errno::EAGAIN && err != Errno::EINTR) || tries > 1000 {
            return Err(err);
        }
    }
}

/// Opens `path` as if `root` were `/` (symlinks resolved inside `root`, no
/// magic links), as `openat2(RESOLVE_IN_ROOT)` does. Used to look at an
/// image's files without following its absolute symlinks out to the host.
/// Opened non-blocking: a FIFO the image puts there cannot hang us.
pub fn open_in_root(root: &Path, path: &Path, flags: libc::c_int) -> nix::Result<OwnedFd> {
    let dir = nix::fcntl::open(
        root,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // openat2 refuses O_NONBLOCK next to O_PATH (which opens nothing).
    let flags = if flags & libc::O_PATH == 0 {
        flags | libc::O_NONBLOCK
    } else {
        flags
    };
    openat2(
        dir.as_fd(),
        path,
        flags,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
}

/// True if `path`, resolved inside `root`, is an executable regular file.
pub fn is_executable_in_root(root: &Path, path: &Path) -> bool {
    let Ok(fd) = open_in_root(root, path, libc::O_PATH) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(&fd) else {
        return false;
    };
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    (st.st_mode & libc::S_IFMT) == libc::S_IFREG
        && nix::unistd::access(proc_path.as_str(), nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Sets the signal sent to this process when its parent thread dies.
pub fn set_parent_death_signal(sig: nix::sys::signal::Signal) -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(sig)
}

/// Start time of the calling process (for the registry's PID-reuse check).
pub fn self_start_time() -> u64 {
    netspawn_common::registry::process_start_time(std::process::id()).unwrap_or(0)
}

/// Whether a signal sent to the process now would reach it rather than be
/// dropped, as the kernel drops a signal that a PID namespace's init (or any
/// process ignoring it) neither catches nor blocks: it has a handler
/// (`SigCgt` in /proc), it blocks the signal (`SigBlk`: a signalfd reader
/// such as systemd, or busybox init outside its wait), or it sleeps in
/// sigtimedwait(2), which busybox init waits in (the kernel then checks the
/// mask saved by that call, which /proc does not show; a waiter for other
/// signals than this one is taken at its word). A blocked signal counts as
/// taken although a process could unblock it later without a handler (the
/// kernel would drop it then): inits block what they mean to take. What
/// cannot be read counts as taken, so the signal goes out as it always did:
/// a process that is gone, or a /proc/PID/syscall that ptrace rules (Yama's
/// `ptrace_scope` 3, an LSM) keep from us.
pub fn takes_signal(pid: i32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let (Some(caught), Some(blocked)) = (
        in_signal_mask(&status, "SigCgt:", sig),
        in_signal_mask(&status, "SigBlk:", sig),
    ) else {
        return true;
    };
    caught
        || blocked
        || std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .map_or(true, |s| in_sigtimedwait(&s))
}

/// The numbers of rt_sigtimedwait(2) a task may be in: the native call, and
/// on x86_64 the i386 ones a 32-bit guest's init uses (177, and 421 for
/// rt_sigtimedwait_time64), which no x86_64 call has.
#[cfg(target_arch = "x86_64")]
const SIGTIMEDWAIT: &[libc::c_long] = &[libc::SYS_rt_sigtimedwait, 177, 421];
#[cfg(not(target_arch = "x86_64"))]
const SIGTIMEDWAIT: &[libc::c_long] = &[libc::SYS_rt_sigtimedwait];

/// Whether a /proc/PID/syscall text says the task sleeps in
/// rt_sigtimedwait(2) (it starts with the number of the call it is in;
/// `running`, or -1 outside a call).
fn in_sigtimedwait(syscall: &str) -> bool {
    syscall
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<libc::c_long>().ok())
        .is_some_and(|n| SIGTIMEDWAIT.contains(&n))
}

/// Whether the mask on the /proc status line that starts with `key` has the
/// signal's bit; `None` when the line is absent or malformed.
fn in_signal_mask(status: &str, key: &str, sig: i32) -> Option<bool> {
    let mask = status.lines().find_map(|l| l.strip_prefix(key))?;
    let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
    let bit = u32::try_from(sig).ok()?.checked_sub(1)?;
    Some(bit < 64 && mask & (1u64 << bit) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_masks_are_read_bit_by_signal() {
        // SIGHUP (1), SIGUSR2 (12) and SIGRTMIN+3 (37) caught; SIGTERM (15) blocked.
        let status = "Name:\tinit\nSigBlk:\t0000000000004000\nSigCgt:\t0000001000000801\n";
        let caught = |sig| in_signal_mask(status, "SigCgt:", sig);
        assert_eq!(caught(libc::SIGHUP), Some(true));
        assert_eq!(caught(libc::SIGUSR2), Some(true));
        assert_eq!(caught(37), Some(true));
        assert_eq!(caught(libc::SIGTERM), Some(false));
        assert_eq!(caught(65), Some(false));
        assert_eq!(caught(0), None);
        assert_eq!(in_signal_mask(status, "SigBlk:", libc::SIGTERM), Some(true));
        assert_eq!(
            in_signal_mask(status, "SigBlk:", libc::SIGUSR2),
            Some(false)
        );
        assert_eq!(in_signal_mask("Name:\tx\n", "SigCgt:", libc::SIGTERM), None);
        assert_eq!(
            in_signal_mask("SigCgt:\tzz\n", "SigCgt:", libc::SIGTERM),
            None
        );
    }

    #[test]
    fn the_call_a_task_sleeps_in_is_read_from_its_syscall_file() {
        let nr = libc::SYS_rt_sigtimedwait;
        assert!(in_sigtimedwait(&format!(
            "{nr} 0x5eb308 0x0 0x0 0x8 0x0 0x1b0 0x7ffff32dd540 0x41675f\n"
        )));
        assert!(!in_sigtimedwait("61 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8\n"));
        assert!(!in_sigtimedwait("running\n"));
        assert!(!in_sigtimedwait("-1 0x7ffd 0x4016\n"));
        assert!(!in_sigtimedwait(""));
    }

    #[test]
    fn a_process_takes_a_signal_it_catches_or_blocks_but_not_one_it_leaves_alone() {
        // This test's own process: SIGWINCH has its default action and is
        // not blocked by the test harness.
        let me = std::process::id() as i32;
        assert!(!takes_signal(me, libc::SIGWINCH));
        // A process that is gone counts as reached.
        assert!(takes_signal(i32::MAX, libc::SIGTERM));
    }

    #[test]
    fn open_in_root_stays_inside() {
        let tmp = std::env::temp_dir().join(format!("netspawn-sys-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("bin")).unwrap();
        std::fs::write(tmp.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            tmp.join("bin/tool"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        // An absolute symlink resolves inside the root, not on the host.
        std::os::unix::fs::symlink("/bin/tool", tmp.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.join("bin/escape")).unwrap();
        assert!(is_executable_in_root(&tmp, Path::new("/bin/sh")));
        assert!(is_executable_in_root(&tmp, Path::new("bin/tool")));
        assert!(!is_executable_in_root(&tmp, Path::new("/bin/escape")));
        assert!(!is_executable_in_root(&tmp, Path::new("/bin/missing")));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
