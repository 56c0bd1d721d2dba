//! The one place that enters another network namespace and comes back:
//! sockets made inside stay bound to that namespace, so a thread needs to
//! be there only for the `socket(2)` (or whatever the closure does).

use std::os::fd::{AsFd, BorrowedFd};

use nix::sched::{setns, CloneFlags};

use crate::RtnlError;

/// Runs `f` with the calling thread inside the network namespace `netns`,
/// then returns the thread to the namespace it was in. Fails without
/// running `f` when the namespace cannot be entered; when the way back
/// fails, `f`'s result is dropped and the error says so.
pub fn in_netns<T>(netns: BorrowedFd<'_>, f: impl FnOnce() -> T) -> Result<T, RtnlError> {
    let own = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(RtnlError::io("open own network namespace"))?;
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(RtnlError::nix("enter network namespace"))?;
    let r = f();
    setns(own.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(RtnlError::nix("return to own network namespace"))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_ns_id() -> std::path::PathBuf {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    }

    #[test]
    fn runs_inside_and_comes_back() {
        // Entering the namespace we are in needs CAP_SYS_ADMIN all the same.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: setns needs root");
            return;
        }
        // A thread of its own, which makes a fresh namespace and returns
        // from it by hand, so the test's other threads are never moved.
        std::thread::spawn(|| {
            let before = own_ns_id();
            let own = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).unwrap();
            let fresh = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            let fresh_id = own_ns_id();
            setns(own.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
            assert_ne!(fresh_id, before);

            let inside = in_netns(fresh.as_fd(), own_ns_id).unwrap();
            assert_eq!(inside, fresh_id);
            assert_eq!(own_ns_id(), before, "back in the namespace it came from");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_file_that_is_no_namespace_is_refused_without_running_f() {
        let not_ns = std::fs::File::open("/dev/null").unwrap();
        let mut ran = false;
        let e = in_netns(not_ns.as_fd(), || ran = true).unwrap_err();
        assert!(!ran);
        assert!(matches!(e.errno(), Some(libc::EINVAL) | Some(libc::EPERM)));
        assert!(
            e.to_string().starts_with("enter network namespace: "),
            "{e}"
        );
    }
}
