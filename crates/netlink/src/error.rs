//! The crate's one error type: what was being done, and why it failed. A
//! kernel refusal keeps its errno, so callers decide by number (`EEXIST`
//! is "already there", `ENODEV` is "already gone"), never by message text.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum RtnlError {
    /// The kernel refused a request (or a namespace switch) with this errno.
    #[error("{what}: {}", nix::Error::from_raw(*errno))]
    Kernel { what: String, errno: i32 },
    /// A local I/O failure (opening a socket, a namespace file, reading events).
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    /// Anything else (an unexpected answer from the kernel or the library).
    #[error("{what}: {msg}")]
    Other { what: String, msg: String },
}

impl RtnlError {
    /// The errno, if the kernel (or the system call behind an I/O error) gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Kernel { errno, .. } => Some(*errno),
            RtnlError::Io { err, .. } => err.raw_os_error(),
            RtnlError::Other { .. } => None,
        }
    }

    /// True when the kernel said the object exists already (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    pub(crate) fn kernel(what: impl Into<String>, errno: i32) -> RtnlError {
        RtnlError::Kernel {
            what: what.into(),
            errno,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RtnlError {
        let what = what.into();
        move |err| RtnlError::Io { what, err }
    }

    pub(crate) fn nix(what: impl Into<String>) -> impl FnOnce(nix::Error) -> RtnlError {
        let what = what.into();
        move |e| RtnlError::Kernel {
            what,
            errno: e as i32,
        }
    }
}

/// Maps an rtnetlink failure to [`RtnlError`], naming what was being done.
pub(crate) fn nl_err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RtnlError {
    let what = what.into();
    move |e| match e {
        rtnetlink::Error::NetlinkError(m) => match m.code {
            Some(c) => RtnlError::Kernel {
                what,
                errno: -c.get(),
            },
            None => RtnlError::Other {
                what,
                msg: "unexpected acknowledgement".into(),
            },
        },
        other => RtnlError::Other {
            what,
            msg: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_keep_their_number_and_read_like_the_kernel() {
        let e = RtnlError::kernel("create veth ve-web", libc::EEXIST);
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert!(e.is_exists());
        assert_eq!(e.to_string(), "create veth ve-web: EEXIST: File exists");
        let e = RtnlError::io("open x")(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.errno(), Some(libc::ENOENT));
        let e = RtnlError::Other {
            what: "list".into(),
            msg: "odd".into(),
        };
        assert_eq!(e.errno(), None);
        assert!(!e.is_exists());
    }
}
