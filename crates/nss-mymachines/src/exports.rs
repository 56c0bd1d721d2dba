//! The `_nss_mymachines_*` entry points glibc calls (hosts; passwd and
//! group for the UIDs and GIDs of machines with a user namespace), and the
//! protocol rules they all share (see [`guarded`] and [`guarded_ids`],
//! which has no `h_errno` column): errno untouched on success,
//! `catch_unwind` around the body, and the status/errno/h_errno triple glibc
//! expects for each outcome:
//!
//! | outcome       | return                | `*errnop`     | `*h_errnop`      |
//! |---------------|-----------------------|---------------|------------------|
//! | answer        | `NSS_STATUS_SUCCESS`  | untouched     | `NETDB_SUCCESS`  |
//! | no such host  | `NSS_STATUS_NOTFOUND` | untouched     | `HOST_NOT_FOUND` |
//! | buffer short  | `NSS_STATUS_TRYAGAIN` | `ERANGE`      | `NETDB_INTERNAL` |
//! | cannot answer | `NSS_STATUS_UNAVAIL`  | the error     | `NO_RECOVERY` (`NO_DATA` for a bad family) |
//!
//! Signals are not blocked, unlike in systemd's modules: those talk to
//! machined over a socket and wait in `poll`, where a caller's signal handler
//! could interrupt them with `EINTR`. A lookup here makes only system calls
//! that never fail with `EINTR` (`readlink` and `getdents` on local
//! filesystems, `kill(PID, 0)`), and blocking and restoring the mask would
//! cost two more system calls on every lookup.
//!
//! About `catch_unwind`: the workspace's release profile sets
//! `panic = "abort"`, and with that strategy a panic aborts the process
//! before any unwinding, so `catch_unwind` catches nothing there (it compiles
//! to a plain call). It only helps in unwinding builds (dev/test), where it
//! stops a panic from unwinding into glibc's C frames (undefined behaviour).
//! What actually protects callers is that no code path here can panic: no
//! `unwrap`/`expect`, no unchecked indexing or arithmetic on sizes derived
//! from input, and every parse of the registry is fallible. Allocation
//! failure still aborts, as it does in any Rust code.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::addrs::{self, Family};
use crate::ffi::{self, GaihAddrtuple, NssStatus};
use crate::layout;
use crate::lookup;
use crate::users;
use netspawn_common::users::{IdKind, GID_NOBODY, HOME, SHELL};

/// What a lookup body decided; [`guarded`] turns it into the C protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    NotFound,
    TooSmall,
    Unavail { errno: c_int, h_errno: c_int },
}

impl From<layout::TooSmall> for Outcome {
    fn from(_: layout::TooSmall) -> Outcome {
        Outcome::TooSmall
    }
}

impl From<lookup::LookupError> for Outcome {
    fn from(e: lookup::LookupError) -> Outcome {
        Outcome::Unavail {
            errno: e.0,
            h_errno: ffi::NO_RECOVERY,
        }
    }
}

const INVALID: Outcome = Outcome::Unavail {
    errno: libc::EINVAL,
    h_errno: ffi::NO_RECOVERY,
};

const BAD_FAMILY: Outcome = Outcome::Unavail {
    errno: libc::EAFNOSUPPORT,
    h_errno: ffi::NO_DATA,
};

/// Runs one body: `catch_unwind` around it, errno restored after it.
fn run(body: impl FnOnce() -> Outcome) -> Outcome {
    let saved_errno = ffi::errno();
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or(Outcome::Unavail {
        errno: libc::EIO,
        h_errno: ffi::NO_RECOVERY,
    });
    // errnop is normally &errno: restore first, then report.
    ffi::set_errno(saved_errno);
    outcome
}

/// Runs one hosts entry point's body under the shared protocol rules.
fn guarded(errnop: *mut c_int, h_errnop: *mut c_int, body: impl FnOnce() -> Outcome) -> NssStatus {
    let (status, errno, h_errno) = match run(body) {
        Outcome::Success => {
            ffi::clear_h_errno();
            (NssStatus::Success, None, ffi::NETDB_SUCCESS)
        }
        Outcome::NotFound => (NssStatus::NotFound, None, ffi::HOST_NOT_FOUND),
        Outcome::TooSmall => (NssStatus::TryAgain, Some(libc::ERANGE), ffi::NETDB_INTERNAL),
        Outcome::Unavail { errno, h_errno } => (NssStatus::Unavail, Some(errno), h_errno),
    };
    // SAFETY: glibc passes valid pointers; null ones are skipped.
    unsafe {
        if let (Some(e), false) = (errno, errnop.is_null()) {
            *errnop = e;
        }
        if !h_errnop.is_null() {
            *h_errnop = h_errno;
        }
    }
    status
}

/// The query name as UTF-8, or None (such a name cannot be a machine's).
///
/// # Safety
/// `name` must be null or a NUL-terminated string.
unsafe fn query_name<'a>(name: *const c_char) -> Option<&'a str> {
    if name.is_null() {
        return None;
    }
    CStr::from_ptr(name).to_str().ok()
}

/// The live machine's usable addresses of `family`, or the outcome to return.
fn addresses_of(name: &str, family: Family) -> Result<Vec<IpAddr>, Outcome> {
    lookup::machine_by_name_here(name, family)?.ok_or(Outcome::NotFound)
}

/// getaddrinfo's entry point: every address (IPv4 and IPv6) of the machine
/// `name`, as a list of `gaih_addrtuple` in `buffer`.
///
/// # Safety
/// Called by glibc with valid pointers: `name` NUL-terminated, `pat` valid
/// (`*pat` null or pointing to a tuple to fill), `buffer` valid for `buflen`
/// bytes, `errnop`/`h_errnop` valid, `ttlp` null or valid.
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_gethostbyname4_r(
    name: *const c_char,
    pat: *mut *mut GaihAddrtuple,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
) -> NssStatus {
    guarded(errnop, h_errnop, || {
        if pat.is_null() || buffer.is_null() {
            return INVALID;
        }
        let Some(name) = query_name(name) else {
            return Outcome::NotFound;
        };
        // The routable addresses, or for a machine that has none its
        // link-local ones with their scope (see lookup::Found).
        let found = match lookup::machine_all_by_name_here(name) {
            Ok(Some(found)) => found,
            Ok(None) => return Outcome::NotFound,
            Err(e) => return e.into(),
        };
        let scoped = found.scoped.as_slice();
        let first = match layout::write_tuples(buffer, buflen, name, &found.addrs, scoped) {
            Ok(first) => first,
            Err(e) => return e.into(),
        };
        // glibc may hand in a tuple of its own to fill (older callers did).
        if (*pat).is_null() {
            *pat = first;
        } else {
            **pat = *first;
        }
        if !ttlp.is_null() {
            *ttlp = 0;
        }
        Outcome::Success
    })
}

/// Fills `result` with the machine's addresses of family `af` (AF_UNSPEC
/// means AF_INET, as for the other hostent calls).
///
/// # Safety
/// As for [`_nss_mymachines_gethostbyname4_r`]; `result` valid, `canonp`
/// null or valid.
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_gethostbyname3_r(
    name: *const c_char,
    af: c_int,
    result: *mut libc::hostent,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
    canonp: *mut *mut c_char,
) -> NssStatus {
    guarded(errnop, h_errnop, || {
        if result.is_null() || buffer.is_null() {
            return INVALID;
        }
        let af = if af == libc::AF_UNSPEC {
            libc::AF_INET
        } else {
            af
        };
        let (Some(family), Some(alen)) = (Family::from_af(af), addrs::af_len(af)) else {
            return BAD_FAMILY;
        };
        let Some(name) = query_name(name) else {
            return Outcome::NotFound;
        };
        let addrs = match addresses_of(name, family) {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        let parts = match layout::write_hostent(buffer, buflen, name, af, alen, &addrs) {
            Ok(parts) => parts,
            Err(e) => return e.into(),
        };
        fill_hostent(result, parts, af, alen);
        if !ttlp.is_null() {
            *ttlp = 0;
        }
        if !canonp.is_null() {
            *canonp = parts.name;
        }
        Outcome::Success
    })
}

/// # Safety
/// `result` must be valid for writes.
unsafe fn fill_hostent(
    result: *mut libc::hostent,
    parts: layout::HostentParts,
    af: c_int,
    alen: usize,
) {
    (*result).h_name = parts.name;
    (*result).h_aliases = parts.aliases;
    (*result).h_addrtype = af;
    // alen is 4 or 16.
    (*result).h_length = c_int::try_from(alen).unwrap_or(0);
    (*result).h_addr_list = parts.addr_list;
}

/// `gethostbyname2_r`: as [`_nss_mymachines_gethostbyname3_r`] without TTL
/// and canonical name.
///
/// # Safety
/// As for [`_nss_mymachines_gethostbyname3_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    result: *mut libc::hostent,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> NssStatus {
    _nss_mymachines_gethostbyname3_r(
        name,
        af,
        result,
        buffer,
        buflen,
        errnop,
        h_errnop,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
}

/// `gethostbyname_r`: IPv4 addresses. (glibc's `RES_USE_INET6` option, which
/// once made this prefer IPv6, no longer exists.)
///
/// # Safety
/// As for [`_nss_mymachines_gethostbyname3_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_gethostbyname_r(
    name: *const c_char,
    result: *mut libc::hostent,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> NssStatus {
    _nss_mymachines_gethostbyname3_r(
        name,
        libc::AF_INET,
        result,
        buffer,
        buflen,
        errnop,
        h_errnop,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
}

/// Reverse lookup: the name of the live machine that has the address
/// `addr` (`len` bytes of family `af`). Scans the registry.
///
/// # Safety
/// `addr` valid for `len` bytes; the rest as for
/// [`_nss_mymachines_gethostbyname3_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_gethostbyaddr2_r(
    addr: *const c_void,
    len: libc::socklen_t,
    af: c_int,
    result: *mut libc::hostent,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
) -> NssStatus {
    guarded(errnop, h_errnop, || {
        if addr.is_null() || result.is_null() || buffer.is_null() {
            return INVALID;
        }
        let Some(alen) = addrs::af_len(af) else {
            return BAD_FAMILY;
        };
        if usize::try_from(len).ok() != Some(alen) {
            return INVALID;
        }
        let bytes = std::slice::from_raw_parts(addr.cast::<u8>(), alen);
        let Some(ip) = addrs::from_octets(af, bytes) else {
            return INVALID;
        };
        // Never answer for addresses the forward lookup would not give out.
        if !addrs::is_usable(&ip) {
            return Outcome::NotFound;
        }
        let found = match lookup::machine_by_address(&lookup::hosts_dir(), &ip) {
            Ok(found) => found,
            Err(e) => return e.into(),
        };
        let Some(name) = found else {
            return Outcome::NotFound;
        };
        let parts = match layout::write_hostent(buffer, buflen, &name, af, alen, &[ip]) {
            Ok(parts) => parts,
            Err(e) => return e.into(),
        };
        fill_hostent(result, parts, af, alen);
        if !ttlp.is_null() {
            *ttlp = 0;
        }
        Outcome::Success
    })
}

/// `gethostbyaddr_r`: as [`_nss_mymachines_gethostbyaddr2_r`] without TTL.
///
/// # Safety
/// As for [`_nss_mymachines_gethostbyaddr2_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_gethostbyaddr_r(
    addr: *const c_void,
    len: libc::socklen_t,
    af: c_int,
    result: *mut libc::hostent,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> NssStatus {
    _nss_mymachines_gethostbyaddr2_r(
        addr,
        len,
        af,
        result,
        buffer,
        buflen,
        errnop,
        h_errnop,
        std::ptr::null_mut(),
    )
}

/// Runs one passwd or group entry point's body: as [`guarded`], without
/// `h_errno` (those calls have none).
fn guarded_ids(errnop: *mut c_int, body: impl FnOnce() -> Outcome) -> NssStatus {
    let (status, errno) = match run(body) {
        Outcome::Success => (NssStatus::Success, None),
        Outcome::NotFound => (NssStatus::NotFound, None),
        Outcome::TooSmall => (NssStatus::TryAgain, Some(libc::ERANGE)),
        Outcome::Unavail { errno, .. } => (NssStatus::Unavail, Some(errno)),
    };
    if let (Some(e), false) = (errno, errnop.is_null()) {
        // SAFETY: glibc passes a valid errnop.
        unsafe { *errnop = e };
    }
    status
}

/// A found user written into `result` and the buffer: systemd's fields
/// (password `*`, group nobody, home `/`, no login shell).
///
/// # Safety
/// `result` valid for writes, `buffer` for `buflen` bytes.
unsafe fn fill_passwd(
    found: Option<users::Found>,
    result: *mut libc::passwd,
    buffer: *mut c_char,
    buflen: usize,
) -> Outcome {
    let Some(found) = found else {
        return Outcome::NotFound;
    };
    let (name, gecos) = (found.name(), found.description());
    let parts = [
        name.as_bytes(),
        b"*",
        gecos.as_bytes(),
        HOME.as_bytes(),
        SHELL.as_bytes(),
    ];
    let [name, passwd, gecos, dir, shell] = match layout::write_strings(buffer, buflen, 0, parts) {
        Ok((_, strings)) => strings,
        Err(e) => return e.into(),
    };
    result.write(libc::passwd {
        pw_name: name,
        pw_passwd: passwd,
        pw_uid: found.id,
        pw_gid: GID_NOBODY,
        pw_gecos: gecos,
        pw_dir: dir,
        pw_shell: shell,
    });
    Outcome::Success
}

/// A found group written into `result` and the buffer: password `*`, no
/// members.
///
/// # Safety
/// As for [`fill_passwd`].
unsafe fn fill_group(
    found: Option<users::Found>,
    result: *mut libc::group,
    buffer: *mut c_char,
    buflen: usize,
) -> Outcome {
    let Some(found) = found else {
        return Outcome::NotFound;
    };
    let name = found.name();
    let (members, [name, passwd]) =
        match layout::write_strings(buffer, buflen, 1, [name.as_bytes(), b"*"]) {
            Ok(written) => written,
            Err(e) => return e.into(),
        };
    result.write(libc::group {
        gr_name: name,
        gr_passwd: passwd,
        gr_gid: found.id,
        gr_mem: members,
    });
    Outcome::Success
}

/// The name as bytes, or None for a null pointer.
///
/// # Safety
/// `name` must be null or a NUL-terminated string.
unsafe fn name_bytes<'a>(name: *const c_char) -> Option<&'a [u8]> {
    (!name.is_null()).then(|| CStr::from_ptr(name).to_bytes())
}

/// `getpwnam_r`: the user `vu-NAME-U` of a running machine NAME with a
/// user namespace.
///
/// # Safety
/// Called by glibc: `name` NUL-terminated, `result` valid, `buffer` valid
/// for `buflen` bytes, `errnop` valid.
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_getpwnam_r(
    name: *const c_char,
    result: *mut libc::passwd,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
) -> NssStatus {
    guarded_ids(errnop, || {
        if result.is_null() || buffer.is_null() {
            return INVALID;
        }
        let Some(name) = name_bytes(name) else {
            return Outcome::NotFound;
        };
        match users::by_name_here(IdKind::User, name) {
            Ok(found) => fill_passwd(found, result, buffer, buflen),
            Err(e) => e.into(),
        }
    })
}

/// `getpwuid_r`: the user a host UID of a running machine's range is.
///
/// # Safety
/// As for [`_nss_mymachines_getpwnam_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_getpwuid_r(
    uid: libc::uid_t,
    result: *mut libc::passwd,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
) -> NssStatus {
    guarded_ids(errnop, || {
        if result.is_null() || buffer.is_null() {
            return INVALID;
        }
        match users::by_id_here(IdKind::User, uid) {
            Ok(found) => fill_passwd(found, result, buffer, buflen),
            Err(e) => e.into(),
        }
    })
}

/// `getgrnam_r`: the group `vg-NAME-G`.
///
/// # Safety
/// As for [`_nss_mymachines_getpwnam_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_getgrnam_r(
    name: *const c_char,
    result: *mut libc::group,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
) -> NssStatus {
    guarded_ids(errnop, || {
        if result.is_null() || buffer.is_null() {
            return INVALID;
        }
        let Some(name) = name_bytes(name) else {
            return Outcome::NotFound;
        };
        match users::by_name_here(IdKind::Group, name) {
            Ok(found) => fill_group(found, result, buffer, buflen),
            Err(e) => e.into(),
        }
    })
}

/// `getgrgid_r`: the group a host GID of a running machine's range is.
///
/// # Safety
/// As for [`_nss_mymachines_getpwnam_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_getgrgid_r(
    gid: libc::gid_t,
    result: *mut libc::group,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
) -> NssStatus {
    guarded_ids(errnop, || {
        if result.is_null() || buffer.is_null() {
            return INVALID;
        }
        match users::by_id_here(IdKind::Group, gid) {
            Ok(found) => fill_group(found, result, buffer, buflen),
            Err(e) => e.into(),
        }
    })
}

/// Enumeration (`getent passwd` without a key) lists nothing from this
/// module, as systemd's machined does not enumerate its users either:
/// `setpwent`/`setgrent` succeed, `getpwent_r`/`getgrent_r` say "no more".
#[no_mangle]
pub extern "C" fn _nss_mymachines_setpwent(_stayopen: c_int) -> NssStatus {
    NssStatus::Success
}

/// See [`_nss_mymachines_setpwent`].
#[no_mangle]
pub extern "C" fn _nss_mymachines_endpwent() -> NssStatus {
    NssStatus::Success
}

/// See [`_nss_mymachines_setpwent`].
///
/// # Safety
/// Touches nothing it is given.
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_getpwent_r(
    _result: *mut libc::passwd,
    _buffer: *mut c_char,
    _buflen: usize,
    _errnop: *mut c_int,
) -> NssStatus {
    NssStatus::NotFound
}

/// See [`_nss_mymachines_setpwent`].
#[no_mangle]
pub extern "C" fn _nss_mymachines_setgrent(_stayopen: c_int) -> NssStatus {
    NssStatus::Success
}

/// See [`_nss_mymachines_setpwent`].
#[no_mangle]
pub extern "C" fn _nss_mymachines_endgrent() -> NssStatus {
    NssStatus::Success
}

/// See [`_nss_mymachines_setpwent`].
///
/// # Safety
/// Touches nothing it is given.
#[no_mangle]
pub unsafe extern "C" fn _nss_mymachines_getgrent_r(
    _result: *mut libc::group,
    _buffer: *mut c_char,
    _buflen: usize,
    _errnop: *mut c_int,
) -> NssStatus {
    NssStatus::NotFound
}
