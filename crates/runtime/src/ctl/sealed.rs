//! Never show a host binary to a machine (the runc CVE-2019-5736 class).
//!
//! A process that enters a machine is, until it execs the payload, visible in
//! the machine's PID namespace with netspawnctl as its executable. Root in the
//! machine could open `/proc/PID/exe` and overwrite the host's netspawnctl,
//! which the host's root runs next. So the verbs that enter first re-execute
//! netspawnctl from a sealed anonymous copy of itself (a memfd with every
//! seal: nothing can write, grow, shrink or unseal it), as runc does, and
//! make themselves non-dumpable, which keeps `/proc/PID/*` root-owned and
//! ptrace for the privileged only (an exec in the machine resets it).

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use thiserror::Error;

/// Why netspawnctl could not switch to a sealed copy of itself.
#[derive(Debug, Error)]
pub enum SealError {
    #[error("run from a sealed copy of netspawnctl: {step}: {err}")]
    Step { step: &'static str, err: nix::Error },
    #[error("run from a sealed copy of netspawnctl: still not sealed after re-executing (is /proc mounted?)")]
    NotSealed,
}

/// Set in the environment of the re-executed copy, so it happens once.
pub const MARKER: &str = "NETSPAWNCTL_SEALED_EXEC";

const ALL_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

fn last(what: &'static str) -> SealError {
    SealError::Step {
        step: what,
        err: nix::Error::last(),
    }
}

/// True if this process runs from a memfd that carries every seal.
pub fn running_sealed() -> bool {
    let Ok(exe) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & ALL_SEALS == ALL_SEALS
}

/// Makes sure netspawnctl runs from a sealed memfd copy of itself and is
/// non-dumpable. The first call re-executes the process (same arguments and
/// environment, plus [`MARKER`]) and does not return; in the copy it removes
/// the marker and returns. Call it first thing in a verb that enters a
/// machine, while single-threaded and before anything is set up.
pub fn ensure() -> Result<(), SealError> {
    if running_sealed() {
        if std::env::var_os(MARKER).is_some() {
            // Single-threaded, see above; the machine need not see it.
            std::env::remove_var(MARKER);
        }
        return make_undumpable();
    }
    if std::env::var_os(MARKER).is_some() {
        // We were re-executed and still are not sealed: never loop.
        return Err(SealError::NotSealed);
    }
    let copy = sealed_copy()?;
    let argv: Vec<CString> = std::env::args_os().map(cstring).collect::<Result<_, _>>()?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstring(kv)
        })
        .collect::<Result<_, _>>()?;
    envp.push(cstring(OsString::from(format!("{MARKER}=1")))?);
    // SAFETY: execveat on our memfd with AT_EMPTY_PATH and NUL-terminated
    // arrays of pointers into the CStrings above, which outlive the call.
    let err = unsafe {
        let mut a: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        a.push(std::ptr::null());
        let mut e: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        e.push(std::ptr::null());
        libc::syscall(
            libc::SYS_execveat,
            copy.as_raw_fd(),
            c"".as_ptr(),
            a.as_ptr(),
            e.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        nix::Error::last()
    };
    Err(SealError::Step {
        step: "execute the sealed copy",
        err,
    })
}

fn cstring(s: OsString) -> Result<CString, SealError> {
    CString::new(s.into_vec()).map_err(|_| SealError::Step {
        step: "pass the arguments on",
        err: nix::Error::EINVAL,
    })
}

/// A memfd holding a copy of our executable, with every seal set.
fn sealed_copy() -> Result<OwnedFd, SealError> {
    let mut exe = std::fs::File::open("/proc/self/exe").map_err(|e| SealError::Step {
        step: "open /proc/self/exe",
        err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    // SAFETY: memfd_create with a constant name and flags.
    let fd = unsafe {
        libc::memfd_create(
            c"netspawnctl".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(last("memfd_create"));
    }
    // SAFETY: memfd_create returned a fresh descriptor that we now own.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = std::fs::File::from(memfd);
    std::io::copy(&mut exe, &mut out).map_err(|e| SealError::Step {
        step: "copy the executable",
        err: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let memfd = OwnedFd::from(out);
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, ALL_SEALS) } < 0 {
        return Err(last("seal the copy"));
    }
    Ok(memfd)
}

/// PR_SET_DUMPABLE 0: our /proc entries become root's, and only a tracer
/// with CAP_SYS_PTRACE may attach. Inherited by fork, reset by exec.
pub fn make_undumpable() -> Result<(), SealError> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(last("make the process non-dumpable"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_sealed_and_refuses_writes() {
        let copy = sealed_copy().unwrap();
        // SAFETY: fcntl on a descriptor we own.
        let seals = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & ALL_SEALS, ALL_SEALS);
        let len = std::fs::metadata("/proc/self/exe").unwrap().len();
        assert_eq!(nix::sys::stat::fstat(&copy).unwrap().st_size as u64, len);
        assert_eq!(
            nix::unistd::write(&copy, b"x").unwrap_err(),
            nix::Error::EPERM
        );
        // Not even through a new open of /proc/self/fd/N.
        let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
            use std::io::Write;
            assert!(f.write_all(b"x").is_err(), "wrote to a sealed copy");
            assert!(f.set_len(0).is_err(), "truncated a sealed copy");
        }
        // The test binary itself does not run sealed.
        assert!(!running_sealed());
    }
}
