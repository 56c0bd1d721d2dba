//! The C side of the glibc NSS protocol: the types and constants glibc uses
//! to talk to a hosts module (`enum nss_status`, `struct gaih_addrtuple`,
//! the `h_errno` codes), and the small pieces of process state an entry point
//! must leave as it found them (errno, the signal mask).
//!
//! The `libc` crate lacks `nss_status` and `gaih_addrtuple`, so they are
//! declared here with the layout of glibc's `<nss.h>`.

use std::ffi::{c_char, c_int};

/// `enum nss_status` from glibc's `<nss.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NssStatus {
    /// Temporary failure; with `ERANGE` in errno it means "give me a bigger buffer".
    TryAgain = -2,
    /// The service cannot answer at all (bad arguments, I/O error).
    Unavail = -1,
    /// No such name or address: glibc asks the next source.
    NotFound = 0,
    /// The answer is in the caller's structures.
    Success = 1,
    /// Only used by iterator functions; kept for completeness of the enum.
    Return = 2,
}

/// `struct gaih_addrtuple` from glibc's `<nss.h>`: one address of a
/// `gethostbyname4_r` answer, linked into a list.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GaihAddrtuple {
    /// Next tuple, or null.
    pub next: *mut GaihAddrtuple,
    /// Host name (the same string for every tuple of one answer).
    pub name: *mut c_char,
    /// `AF_INET` or `AF_INET6`.
    pub family: c_int,
    /// The address in network byte order (IPv4 uses the first 4 bytes).
    pub addr: [u32; 4],
    /// Interface index for link-local IPv6 (0 for every other address).
    pub scopeid: u32,
}

/// `h_errno`: no error.
pub const NETDB_SUCCESS: c_int = 0;
/// `h_errno`: see errno (glibc reads `ERANGE` there and retries).
pub const NETDB_INTERNAL: c_int = -1;
/// `h_errno`: the name or address is unknown.
pub const HOST_NOT_FOUND: c_int = 1;
/// `h_errno`: an unrecoverable error.
pub const NO_RECOVERY: c_int = 3;
/// `h_errno`: valid name, no data of the requested type.
pub const NO_DATA: c_int = 4;

extern "C" {
    /// glibc's thread-local `h_errno`.
    fn __h_errno_location() -> *mut c_int;
    /// glibc's `secure_getenv(3)`: `getenv` that returns null in secure
    /// execution (setuid/setgid/capabilities). The `libc` crate lacks it.
    pub fn secure_getenv(name: *const c_char) -> *mut c_char;
}

/// Reads this thread's errno.
pub fn errno() -> c_int {
    // SAFETY: glibc returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets this thread's errno.
pub fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value }
}

/// Clears this thread's global `h_errno`. glibc passes `&h_errno` as
/// `h_errnop` in most paths but not all, and a stale value left by an earlier
/// module has confused callers before (Red Hat bug 1125975), so success resets
/// both, as systemd's modules do.
pub fn clear_h_errno() {
    // SAFETY: glibc returns a valid pointer to this thread's h_errno.
    unsafe { *__h_errno_location() = NETDB_SUCCESS }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaih_addrtuple_matches_glibc_layout() {
        // glibc: next(8) name(8) family(4) addr[4](16) scopeid(4) = 40 bytes, 8-aligned.
        assert_eq!(size_of::<GaihAddrtuple>(), 40);
        assert_eq!(align_of::<GaihAddrtuple>(), 8);
        assert_eq!(std::mem::offset_of!(GaihAddrtuple, family), 16);
        assert_eq!(std::mem::offset_of!(GaihAddrtuple, addr), 20);
        assert_eq!(std::mem::offset_of!(GaihAddrtuple, scopeid), 36);
        assert_eq!(size_of::<NssStatus>(), size_of::<c_int>());
    }
}
