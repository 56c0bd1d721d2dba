//! Idmapped mounts (`--private-users-ownership=map`): the launcher clones
//! a mount tree (`open_tree(OPEN_TREE_CLONE)`), gives it the container's
//! mapping (`mount_setattr(MOUNT_ATTR_IDMAP)` with a user namespace that
//! has the same maps) and the container's outer child moves the detached
//! tree into place (`move_mount`). Files owned by 0 on disk then belong to
//! the container's root, and what it creates is stored as 0. Setting an
//! idmap needs the host's privileges, so it is done before the clones; the
//! user namespace comes from a short-lived helper process.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use super::UidRange;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn check(r: libc::c_long) -> nix::Result<libc::c_long> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// The helper process [`userns_fd`] made the namespace with, reaped by
/// [`Helper::try_reap`] once it has exited, else when this is dropped. It
/// exits as soon as it gets the CPU, but on a busy host that can take
/// milliseconds: the launcher does not wait for it on its way to the
/// container's start. It runs in the launcher's memory, on its own stack,
/// which is freed only once it is reaped.
#[derive(Debug)]
pub struct Helper {
    pid: Option<nix::unistd::Pid>,
    _stack: Vec<u8>,
}

impl Helper {
    /// Reaps the helper if it has exited, without waiting.
    pub fn try_reap(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        if let Some(pid) = self.pid {
            if !matches!(
                waitpid(pid, Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR)
            ) {
                self.pid = None;
            }
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            while let Err(Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
        }
    }
}

/// The helper's stack: it makes one system call.
const HELPER_STACK: usize = 16 * 1024;

/// The helper's whole life: close its copy of the pipe's write end, block
/// until the launcher closes its own (the namespace is set up and opened,
/// or the launcher died), then exit. It shares the launcher's memory, so it
/// touches nothing but its own stack, at whose bottom the launcher left the
/// pipe's two descriptors: raw close(2) and read(2) (whose errno, set only
/// on an error, is not looked at), then the exit the clone(3) wrapper makes.
extern "C" fn helper_main(fds: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `fds` points at two descriptors the launcher wrote before
    // the clone and never touches again.
    let [rd, wr] = unsafe { std::ptr::read_unaligned(fds as *const [libc::c_int; 2]) };
    let mut b = [0u8; 1];
    // SAFETY: a close of our copy of a descriptor, then a read into a
    // buffer on this stack.
    unsafe {
        libc::syscall(libc::SYS_close, wr as libc::c_long);
        libc::syscall(libc::SYS_read, rd as libc::c_long, b.as_mut_ptr(), 1);
    }
    0
}

/// A user namespace whose maps put 0.. onto `range`: a helper process is
/// cloned into a new one, its maps written and its namespace opened; the
/// helper is then told to exit (EOF on a pipe) and reaped when the
/// returned [`Helper`] goes. The helper shares the launcher's memory
/// (CLONE_VM, on a stack of its own): no copy of the launcher's page
/// tables to make and tear down.
pub fn userns_fd(range: UidRange) -> nix::Result<(OwnedFd, Helper)> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut stack = vec![0u8; HELPER_STACK];
    // The pipe's descriptors at the bottom, for helper_main; the stack
    // grows down from its (16-byte aligned) top.
    let fds: [libc::c_int; 2] = [rd.as_raw_fd(), wr.as_raw_fd()];
    let base = stack.as_mut_ptr();
    // SAFETY: the stack is far larger than two descriptors.
    unsafe { std::ptr::write_unaligned(base.cast::<[libc::c_int; 2]>(), fds) };
    let top = (base as usize + HELPER_STACK) & !15;
    // SAFETY: the child runs helper_main on its own stack, which lives in
    // the returned Helper until the child is reaped, and reads only that
    // stack and the pipe.
    let pid = unsafe {
        libc::clone(
            helper_main,
            top as *mut libc::c_void,
            libc::CLONE_NEWUSER | libc::CLONE_VM | libc::SIGCHLD,
            base.cast(),
        )
    };
    if pid < 0 {
        return Err(Errno::last());
    }
    let helper = Helper {
        pid: Some(nix::unistd::Pid::from_raw(pid)),
        _stack: stack,
    };
    drop(rd);
    let result = super::write_maps(pid, range)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
        .and_then(|()| {
            nix::fcntl::open(
                format!("/proc/{pid}/ns/user").as_str(),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
        });
    drop(wr);
    result.map(|ns| (ns, helper))
}

/// A detached copy of the mount tree at `path` (with what is mounted below
/// it if `recursive`), idmapped with `userns`.
pub fn clone_tree(path: &Path, recursive: bool, userns: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let rec = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: NUL-terminated path; the returned descriptor is ours.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec,
        )
    })?;
    // SAFETY: open_tree returned a new descriptor.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: empty path with AT_EMPTY_PATH; the struct outlives the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | rec,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    })?;
    Ok(tree)
}

/// Binds the working directory's mount tree (recursively) onto itself and
/// returns a descriptor of the new top, without walking any path: in a user
/// namespace the host directories above an image may not be searchable
/// (`/var/tmp/x` with mode 0700 belongs to the host's root, which the
/// namespace does not map).
pub fn rebind_cwd() -> nix::Result<OwnedFd> {
    let here = nix::fcntl::open(
        ".",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: empty path with AT_EMPTY_PATH; the returned descriptor is ours.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            here.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE
                | AT_RECURSIVE
                | libc::AT_EMPTY_PATH as libc::c_uint
                | libc::O_CLOEXEC as libc::c_uint,
        )
    })?;
    // SAFETY: open_tree returned a new descriptor.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    move_onto(tree.as_fd(), here.as_fd())?;
    // Once attached, the tree's descriptor is the new mount's top.
    Ok(tree)
}

/// Moves a detached tree onto the directory or file `target` (a descriptor).
pub fn move_onto(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: empty paths with the EMPTY_PATH flags for both descriptors.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// Needs root (CAP_SYS_ADMIN); skipped without it.
    #[test]
    fn an_idmapped_tree_shows_the_range() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let d = std::env::temp_dir().join(format!("netspawn-idmap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::create_dir_all(d.join("dst")).unwrap();
        std::fs::write(d.join("src/f"), "x").unwrap();
        let range = UidRange::new(0x0008_0000, 65536).unwrap();
        let (ns, _helper) = userns_fd(range).unwrap();
        drop(clone_tree(&d.join("src"), true, ns.as_fd()).unwrap());
        let tree = clone_tree(&d.join("src"), false, ns.as_fd()).unwrap();
        // Attach it in a private mount namespace of a child, and look.
        // SAFETY: the child only makes system calls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok()
                    && nix::mount::mount::<str, str, str, str>(
                        None,
                        "/",
                        None,
                        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                        None,
                    )
                    .is_ok()
                    && std::fs::File::open(d.join("dst"))
                        .ok()
                        .is_some_and(|t| move_onto(tree.as_fd(), t.as_fd()).is_ok())
                    && std::fs::metadata(d.join("dst/f"))
                        .is_ok_and(|m| m.uid() == 0x0008_0000 && m.gid() == 0x0008_0000);
                // SAFETY: leave the forked test process at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        assert_eq!(std::fs::metadata(d.join("src/f")).unwrap().uid(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }
}
