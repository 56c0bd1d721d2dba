//! The ERANGE protocol, call by call: every entry point is called directly
//! (through the rlib) with every buffer size from 1 byte up, at aligned and
//! misaligned addresses. Each call must either answer correctly, entirely
//! inside the buffer, or return TRYAGAIN with errno ERANGE and h_errno
//! NETDB_INTERNAL without touching the buffer; and it must answer for every
//! size from the exact needed size on. errno must be untouched on success, as
//! glibc passes `&errno` as `errnop`.
//!
//! One test function only: it sets NETSPAWN_RUN_DIR for the whole process.

mod common;

use std::ffi::{c_char, c_int, CStr};
use std::net::IpAddr;

use common::{Registry, TempDir};
use nss_mymachines::ffi::{GaihAddrtuple, NssStatus, HOST_NOT_FOUND, NETDB_INTERNAL};
use nss_mymachines::*;

const SENTINEL_ERRNO: c_int = 4242;
const CANARY: u8 = 0xA5;

fn errno_ptr() -> *mut c_int {
    // SAFETY: glibc's errno location is always valid.
    unsafe { libc::__errno_location() }
}

/// What a successful call produced, read back through its pointers.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    name: String,
    addrs: Vec<IpAddr>,
    /// Each tuple's `scopeid` (gethostbyname4_r only; empty for a hostent).
    scopes: Vec<u32>,
}

/// Checks that `p .. p+len` lies in `[lo, hi)`.
fn inside(p: *const u8, len: usize, lo: *const u8, hi: *const u8) -> bool {
    let (p, lo, hi) = (p as usize, lo as usize, hi as usize);
    p >= lo && p + len <= hi
}

/// Reads a hostent answer, checking every pointer stays in the buffer.
///
/// # Safety
/// `h` must have been filled by a successful call.
unsafe fn read_hostent(h: &libc::hostent, lo: *const u8, hi: *const u8) -> Answer {
    let name = CStr::from_ptr(h.h_name);
    assert!(inside(h.h_name.cast(), name.to_bytes().len() + 1, lo, hi));
    assert!(inside(h.h_aliases.cast(), 8, lo, hi));
    assert_eq!(h.h_aliases as usize % 8, 0, "aliases aligned");
    assert!((*h.h_aliases).is_null(), "no aliases");
    assert_eq!(h.h_addr_list as usize % 8, 0, "addr list aligned");
    let alen = h.h_length as usize;
    let mut addrs = Vec::new();
    let mut i = 0;
    loop {
        let slot = h.h_addr_list.add(i);
        assert!(inside(slot.cast(), 8, lo, hi));
        let a = *slot;
        if a.is_null() {
            break;
        }
        assert!(inside(a.cast(), alen, lo, hi));
        let bytes = std::slice::from_raw_parts(a.cast::<u8>(), alen);
        addrs.push(match (h.h_addrtype, alen) {
            (libc::AF_INET, 4) => IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap()),
            (libc::AF_INET6, 16) => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap()),
            other => panic!("bad family/length {other:?}"),
        });
        i += 1;
    }
    Answer {
        name: name.to_string_lossy().into_owned(),
        addrs,
        scopes: Vec::new(),
    }
}

/// Reads a gethostbyname4_r tuple list, checking it stays in the buffer
/// (except the first tuple if it is the caller's own).
///
/// # Safety
/// `first` must come from a successful call.
unsafe fn read_tuples(
    first: *const GaihAddrtuple,
    first_is_callers: bool,
    lo: *const u8,
    hi: *const u8,
) -> Answer {
    let mut t = first;
    let mut addrs = Vec::new();
    let mut scopes = Vec::new();
    let mut name = None;
    while !t.is_null() {
        let callers = first_is_callers && std::ptr::eq(t, first);
        assert!(callers || inside(t.cast(), size_of::<GaihAddrtuple>(), lo, hi));
        assert_eq!(t as usize % 8, 0, "tuple aligned");
        let tuple = &*t;
        let n = CStr::from_ptr(tuple.name);
        assert!(inside(tuple.name.cast(), n.to_bytes().len() + 1, lo, hi));
        name = Some(n.to_string_lossy().into_owned());
        let mut bytes = [0u8; 16];
        for (i, w) in tuple.addr.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        addrs.push(match tuple.family {
            libc::AF_INET => IpAddr::from(<[u8; 4]>::try_from(&bytes[..4]).unwrap()),
            libc::AF_INET6 => IpAddr::from(bytes),
            f => panic!("bad family {f}"),
        });
        scopes.push(tuple.scopeid);
        t = tuple.next;
    }
    Answer {
        name: name.unwrap_or_default(),
        addrs,
        scopes,
    }
}

/// Calls `call(buffer, size)` for every size in 1..=max with the buffer at
/// `offset` bytes past an 8-aligned address. Returns the smallest size that
/// succeeded, after checking the protocol on every call.
fn sweep(
    what: &str,
    max: usize,
    offset: usize,
    want: &Answer,
    call: &dyn Fn(*mut c_char, usize, *mut c_int) -> (NssStatus, Option<Answer>),
) -> usize {
    let mut first_ok = None;
    for size in 1..=max {
        let words = (offset + size + 64) / 8 + 1;
        let mut storage = vec![u64::from_ne_bytes([CANARY; 8]); words];
        let base = storage.as_mut_ptr().cast::<u8>();
        // SAFETY: offset + size + 64 < words * 8.
        let buf = unsafe { base.add(offset) };
        let mut h_errno: c_int = 777;
        // SAFETY: errno_ptr is valid.
        unsafe { *errno_ptr() = SENTINEL_ERRNO };
        let (status, answer) = call(buf.cast(), size, &mut h_errno);
        // SAFETY: as above.
        let errno = unsafe { *errno_ptr() };
        let bytes: &[u8] = bytemuck_bytes(&storage);
        let after = &bytes[offset + size..];
        assert!(
            after.iter().all(|&b| b == CANARY),
            "{what}: wrote past a {size}-byte buffer"
        );
        match status {
            NssStatus::Success => {
                assert_eq!(errno, SENTINEL_ERRNO, "{what}: errno changed on success");
                assert_eq!(h_errno, 0, "{what}: h_errno on success");
                assert_eq!(answer.as_ref(), Some(want), "{what}: size {size}");
                first_ok.get_or_insert(size);
            }
            NssStatus::TryAgain => {
                assert_eq!(errno, libc::ERANGE, "{what}: size {size}");
                assert_eq!(h_errno, NETDB_INTERNAL, "{what}: size {size}");
                assert!(
                    first_ok.is_none(),
                    "{what}: size {size} failed after {first_ok:?} succeeded"
                );
                assert!(
                    bytes[offset..offset + size].iter().all(|&b| b == CANARY),
                    "{what}: buffer written before it was known to be big enough"
                );
            }
            other => panic!("{what}: size {size}: unexpected {other:?}"),
        }
    }
    first_ok.unwrap_or_else(|| panic!("{what}: no size up to {max} succeeded"))
}

fn bytemuck_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding; the byte view covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len() * 8) }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn byname2(
    name: &'static CStr,
    af: c_int,
) -> impl Fn(*mut c_char, usize, *mut c_int) -> (NssStatus, Option<Answer>) {
    move |buf, len, h| {
        // SAFETY: all pointers are valid; zeroed hostent is a valid out-param.
        unsafe {
            let mut he: libc::hostent = std::mem::zeroed();
            let st = _nss_mymachines_gethostbyname2_r(
                name.as_ptr(),
                af,
                &mut he,
                buf,
                len,
                errno_ptr(),
                h,
            );
            let ans = (st == NssStatus::Success)
                .then(|| read_hostent(&he, buf.cast(), buf.add(len).cast()));
            (st, ans)
        }
    }
}

fn byname4(
    name: &'static CStr,
    preset: bool,
) -> impl Fn(*mut c_char, usize, *mut c_int) -> (NssStatus, Option<Answer>) {
    move |buf, len, h| {
        // SAFETY: as above; `own` outlives its use.
        unsafe {
            let mut own: GaihAddrtuple = std::mem::zeroed();
            let mut pat: *mut GaihAddrtuple = if preset {
                &mut own
            } else {
                std::ptr::null_mut()
            };
            let mut ttl: i32 = -1;
            let st = _nss_mymachines_gethostbyname4_r(
                name.as_ptr(),
                &mut pat,
                buf,
                len,
                errno_ptr(),
                h,
                &mut ttl,
            );
            let ans = (st == NssStatus::Success).then(|| {
                assert_eq!(ttl, 0);
                if preset {
                    // glibc's own tuple holds the first answer, linked to the rest in the buffer.
                    assert!(std::ptr::eq(pat, &own));
                    read_tuples(&own, true, buf.cast(), buf.add(len).cast())
                } else {
                    read_tuples(pat, false, buf.cast(), buf.add(len).cast())
                }
            });
            (st, ans)
        }
    }
}

#[test]
fn every_buffer_size_answers_or_asks_for_more() {
    let dir = TempDir::new("bufsize");
    let reg = Registry::new(&dir.0);
    reg.add(
        "web",
        "10.0.0.2 fd00::2 10.0.0.3 fd00::3 fe80::1 169.254.0.9",
    );
    // The launcher keeps link-local addresses apart, with their scope.
    reg.link_raw(
        "web",
        netspawn_common::hosts::format_target_scoped(
            std::process::id(),
            &ips(&[
                "10.0.0.2",
                "fd00::2",
                "10.0.0.3",
                "fd00::3",
                "fe80::1",
                "169.254.0.9",
            ]),
            &[("fe80::7".parse().unwrap(), 7)],
        ),
    );
    let many: Vec<String> = (1..=20)
        .flat_map(|i| [format!("10.1.0.{i}"), format!("fd01::{i}")])
        .collect();
    reg.add("many", &many.join(" "));
    std::env::set_var("NETSPAWN_RUN_DIR", &reg.run_dir);

    let web = "web".to_string();
    let v4 = Answer {
        name: web.clone(),
        addrs: ips(&["10.0.0.2", "10.0.0.3"]),
        scopes: vec![],
    };
    let v6 = Answer {
        name: web.clone(),
        addrs: ips(&["fd00::2", "fd00::3"]),
        scopes: vec![],
    };
    // Beside routable addresses the link-local one is left out (getaddrinfo
    // would sort it first); hostent calls never give it.
    let all = Answer {
        name: web.clone(),
        addrs: ips(&["10.0.0.2", "fd00::2", "10.0.0.3", "fd00::3"]),
        scopes: vec![0, 0, 0, 0],
    };
    // A machine with only a link-local address: that one, with its scope.
    reg.link_raw(
        "ll",
        netspawn_common::hosts::format_target_scoped(
            std::process::id(),
            &[],
            &[("fe80::8".parse().unwrap(), 8)],
        ),
    );
    let ll = Answer {
        name: "ll".to_string(),
        addrs: ips(&["fe80::8"]),
        scopes: vec![8],
    };

    // Needed sizes from the layout (8-byte pointers): NULL alias + (n+1)
    // pointers + n addresses + "web\0"; tuples are 40 bytes each.
    for offset in 0..8 {
        let pad = (8 - offset) % 8;
        let what = format!("gethostbyname2_r AF_INET @+{offset}");
        assert_eq!(
            sweep(&what, 1024, offset, &v4, &byname2(c"web", libc::AF_INET)),
            pad + 8 + 24 + 8 + 4
        );
        let what = format!("gethostbyname2_r AF_INET6 @+{offset}");
        assert_eq!(
            sweep(&what, 1024, offset, &v6, &byname2(c"web", libc::AF_INET6)),
            pad + 8 + 24 + 32 + 4
        );
        let what = format!("gethostbyname4_r @+{offset}");
        assert_eq!(
            sweep(&what, 1024, offset, &all, &byname4(c"web", false)),
            pad + 4 * 40 + 4
        );
        let what = format!("gethostbyname4_r link-local only @+{offset}");
        assert_eq!(
            sweep(&what, 1024, offset, &ll, &byname4(c"ll", false)),
            pad + 40 + 3
        );
    }
    assert_eq!(
        sweep(
            "gethostbyname4_r preset tuple",
            1024,
            0,
            &all,
            &byname4(c"web", true)
        ),
        164
    );

    // hostent has no scope: the link-local-only machine is not found there.
    let mut buf = vec![0u8; 1024];
    let mut h: c_int = 0;
    for af in [libc::AF_INET6, libc::AF_INET] {
        let (st, _) = byname2(c"ll", af)(buf.as_mut_ptr().cast(), buf.len(), &mut h);
        assert_eq!(
            st,
            NssStatus::NotFound,
            "gethostbyname2_r({af}) of a link-local-only machine"
        );
    }

    let by_r = |buf: *mut c_char, len: usize, h: *mut c_int| {
        // SAFETY: all pointers valid.
        unsafe {
            let mut he: libc::hostent = std::mem::zeroed();
            let st =
                _nss_mymachines_gethostbyname_r(c"web".as_ptr(), &mut he, buf, len, errno_ptr(), h);
            (
                st,
                (st == NssStatus::Success)
                    .then(|| read_hostent(&he, buf.cast(), buf.add(len).cast())),
            )
        }
    };
    assert_eq!(sweep("gethostbyname_r", 1024, 0, &v4, &by_r), 44);

    let by3 = |buf: *mut c_char, len: usize, h: *mut c_int| {
        // SAFETY: all pointers valid.
        unsafe {
            let mut he: libc::hostent = std::mem::zeroed();
            let mut ttl = -1;
            let mut canon: *mut c_char = std::ptr::null_mut();
            let st = _nss_mymachines_gethostbyname3_r(
                c"web".as_ptr(),
                libc::AF_UNSPEC,
                &mut he,
                buf,
                len,
                errno_ptr(),
                h,
                &mut ttl,
                &mut canon,
            );
            let ans = (st == NssStatus::Success).then(|| {
                assert_eq!(ttl, 0);
                assert_eq!(canon, he.h_name);
                read_hostent(&he, buf.cast(), buf.add(len).cast())
            });
            (st, ans)
        }
    };
    assert_eq!(sweep("gethostbyname3_r AF_UNSPEC", 1024, 0, &v4, &by3), 44);

    let rev = |buf: *mut c_char, len: usize, h: *mut c_int| {
        let addr = [10u8, 0, 0, 3];
        // SAFETY: all pointers valid.
        unsafe {
            let mut he: libc::hostent = std::mem::zeroed();
            let st = _nss_mymachines_gethostbyaddr_r(
                addr.as_ptr().cast(),
                4,
                libc::AF_INET,
                &mut he,
                buf,
                len,
                errno_ptr(),
                h,
            );
            (
                st,
                (st == NssStatus::Success)
                    .then(|| read_hostent(&he, buf.cast(), buf.add(len).cast())),
            )
        }
    };
    let rev_want = Answer {
        name: web.clone(),
        addrs: ips(&["10.0.0.3"]),
        scopes: vec![],
    };
    assert_eq!(
        sweep("gethostbyaddr_r", 1024, 0, &rev_want, &rev),
        8 + 16 + 4 + 4
    );

    // An answer larger than 1024 bytes: all of 1..=1024 ask for more.
    let many_want = Answer {
        name: "many".into(),
        addrs: many.iter().map(|s| s.parse().unwrap()).collect(),
        scopes: vec![0; 40],
    };
    assert_eq!(
        sweep(
            "gethostbyname4_r 40 addresses",
            2048,
            0,
            &many_want,
            &byname4(c"many", false)
        ),
        40 * 40 + 5
    );

    not_found_and_bad_arguments();
    concurrent_lookups_while_entries_are_replaced(&reg);
    passwd_and_group_buffer_sizes(&reg);
}

/// A C string the answer points to, checked to lie inside the buffer.
///
/// # Safety
/// `p` must point to a NUL-terminated string.
unsafe fn field(p: *const c_char, lo: *const u8, hi: *const u8) -> String {
    let s = CStr::from_ptr(p);
    assert!(
        inside(p.cast(), s.to_bytes().len() + 1, lo, hi),
        "field outside the buffer"
    );
    s.to_string_lossy().into_owned()
}

/// Like [`sweep`] for the passwd and group calls (no h_errno): `call` gives
/// the status and, on success, the answer as a `getent` line.
fn sweep_ids(
    what: &str,
    offset: usize,
    want: &str,
    call: &dyn Fn(*mut c_char, usize, *mut c_int) -> (NssStatus, Option<String>),
) -> usize {
    let mut first_ok = None;
    for size in 1..=512 {
        let words = (offset + size + 64) / 8 + 1;
        let mut storage = vec![u64::from_ne_bytes([CANARY; 8]); words];
        // SAFETY: offset + size + 64 < words * 8.
        let buf = unsafe { storage.as_mut_ptr().cast::<u8>().add(offset) };
        let mut err: c_int = SENTINEL_ERRNO;
        // SAFETY: errno_ptr is valid.
        unsafe { *errno_ptr() = SENTINEL_ERRNO };
        let (status, answer) = call(buf.cast(), size, &mut err);
        // SAFETY: as above.
        let errno = unsafe { *errno_ptr() };
        assert_eq!(errno, SENTINEL_ERRNO, "{what}: errno changed");
        let bytes = bytemuck_bytes(&storage);
        assert!(
            bytes[offset + size..].iter().all(|&b| b == CANARY),
            "{what}: wrote past a {size}-byte buffer"
        );
        match status {
            NssStatus::Success => {
                assert_eq!(err, SENTINEL_ERRNO, "{what}: *errnop set on success");
                assert_eq!(answer.as_deref(), Some(want), "{what}: size {size}");
                first_ok.get_or_insert(size);
            }
            NssStatus::TryAgain => {
                assert_eq!(err, libc::ERANGE, "{what}: size {size}");
                assert!(
                    first_ok.is_none(),
                    "{what}: size {size} failed after success"
                );
                assert!(
                    bytes[offset..offset + size].iter().all(|&b| b == CANARY),
                    "{what}: buffer written before it was known to be big enough"
                );
            }
            other => panic!("{what}: size {size}: unexpected {other:?}"),
        }
    }
    first_ok.unwrap_or_else(|| panic!("{what}: no size succeeded"))
}

fn getpw(
    by: &'static dyn Fn(*mut libc::passwd, *mut c_char, usize, *mut c_int) -> NssStatus,
) -> impl Fn(*mut c_char, usize, *mut c_int) -> (NssStatus, Option<String>) {
    move |buf, len, err| {
        // SAFETY: zeroed passwd is a valid out-value.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let status = by(&mut pw, buf, len, err);
        let (lo, hi) = (
            buf.cast::<u8>().cast_const(),
            buf.cast::<u8>().wrapping_add(len).cast_const(),
        );
        let answer = (status == NssStatus::Success).then(|| {
            // SAFETY: a successful call filled every field.
            unsafe {
                format!(
                    "{}:{}:{}:{}:{}:{}:{}",
                    field(pw.pw_name, lo, hi),
                    field(pw.pw_passwd, lo, hi),
                    pw.pw_uid,
                    pw.pw_gid,
                    field(pw.pw_gecos, lo, hi),
                    field(pw.pw_dir, lo, hi),
                    field(pw.pw_shell, lo, hi)
                )
            }
        });
        (status, answer)
    }
}

fn getgr(
    by: &'static dyn Fn(*mut libc::group, *mut c_char, usize, *mut c_int) -> NssStatus,
) -> impl Fn(*mut c_char, usize, *mut c_int) -> (NssStatus, Option<String>) {
    move |buf, len, err| {
        // SAFETY: zeroed group is a valid out-value.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let status = by(&mut gr, buf, len, err);
        let (lo, hi) = (
            buf.cast::<u8>().cast_const(),
            buf.cast::<u8>().wrapping_add(len).cast_const(),
        );
        let answer = (status == NssStatus::Success).then(|| {
            // SAFETY: a successful call filled every field.
            unsafe {
                assert!(inside(gr.gr_mem.cast(), 8, lo, hi), "member list outside");
                assert_eq!(gr.gr_mem as usize % 8, 0, "member list aligned");
                assert!((*gr.gr_mem).is_null(), "no members");
                format!(
                    "{}:{}:{}:",
                    field(gr.gr_name, lo, hi),
                    field(gr.gr_passwd, lo, hi),
                    gr.gr_gid
                )
            }
        });
        (status, answer)
    }
}

/// Every buffer size for the four passwd/group calls, aligned and not;
/// and the answers for absent names and IDs.
fn passwd_and_group_buffer_sizes(reg: &Registry) {
    reg.add_userns("web", 524288, 65536, std::process::id());
    let user = "vu-web-5:*:524293:65534:UID 5 of Container web:/:/usr/sbin/nologin";
    // Five strings and their NULs, no pointers: the exact size whatever the alignment.
    let need: usize = [
        "vu-web-5",
        "*",
        "UID 5 of Container web",
        "/",
        "/usr/sbin/nologin",
    ]
    .iter()
    .map(|f| f.len() + 1)
    .sum();
    for offset in [0, 3] {
        // SAFETY (all calls): valid pointers from the sweep.
        let by_uid = sweep_ids(
            "getpwuid_r",
            offset,
            user,
            &getpw(&|pw, b, l, e| unsafe { _nss_mymachines_getpwuid_r(524293, pw, b, l, e) }),
        );
        let by_name = sweep_ids(
            "getpwnam_r",
            offset,
            user,
            &getpw(&|pw, b, l, e| unsafe {
                _nss_mymachines_getpwnam_r(c"vu-web-5".as_ptr(), pw, b, l, e)
            }),
        );
        assert_eq!((by_uid, by_name), (need, need));
        // A pointer slot (aligned) and "vg-web-5" and "*".
        let group = "vg-web-5:*:524293:";
        let need_group = (8 - offset) % 8 + 8 + 9 + 2;
        let by_gid = sweep_ids(
            "getgrgid_r",
            offset,
            group,
            &getgr(&|gr, b, l, e| unsafe { _nss_mymachines_getgrgid_r(524293, gr, b, l, e) }),
        );
        let by_gname = sweep_ids(
            "getgrnam_r",
            offset,
            group,
            &getgr(&|gr, b, l, e| unsafe {
                _nss_mymachines_getgrnam_r(c"vg-web-5".as_ptr(), gr, b, l, e)
            }),
        );
        assert_eq!((by_gid, by_gname), (need_group, need_group));
    }
    let mut buf = [0u8; 512];
    let mut err: c_int = SENTINEL_ERRNO;
    // SAFETY: zeroed passwd is a valid out-value; valid pointers.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        for uid in [0, 1000, 65535, 524287, 589824, u32::MAX] {
            let st =
                _nss_mymachines_getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), 512, &mut err);
            assert_eq!(st, NssStatus::NotFound, "{uid}");
        }
        for name in [c"vu-web-65536", c"root", c"vu-web", c"", c"vu-web-5\n"] {
            let st = _nss_mymachines_getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                512,
                &mut err,
            );
            assert_eq!(st, NssStatus::NotFound, "{name:?}");
        }
        let st = _nss_mymachines_getpwnam_r(
            std::ptr::null(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            512,
            &mut err,
        );
        assert_eq!(st, NssStatus::NotFound);
        let st = _nss_mymachines_getpwuid_r(
            524293,
            std::ptr::null_mut(),
            buf.as_mut_ptr().cast(),
            512,
            &mut err,
        );
        assert_eq!((st, err), (NssStatus::Unavail, libc::EINVAL));
    }
    assert_eq!(err, libc::EINVAL);
}

/// Several threads resolve while another replaces a hosts link atomically
/// (as `Registry::write` does, temporary link + rename): every call answers,
/// with one of the two address sets.
fn concurrent_lookups_while_entries_are_replaced(reg: &Registry) {
    let pid = std::process::id();
    let (one, two) = (format!("{pid} 10.3.0.1"), format!("{pid} 10.3.0.2 fd03::2"));
    reg.link_raw("flip", &one);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let tmp = reg.hosts.join(".#flip.tmp");
            let mut n = 0u32;
            // Bounded, so that a failing reader cannot leave it running forever.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 10_000_000 {
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(if n.is_multiple_of(2) { &two } else { &one }, &tmp)
                    .expect("tmp link");
                std::fs::rename(&tmp, reg.hosts.join("flip")).expect("rename");
                n += 1;
            }
            n
        });
        let readers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut storage = [0u64; 64];
                    for _ in 0..2000 {
                        let buf = storage.as_mut_ptr().cast::<c_char>();
                        let (mut e, mut h) = (0, 0);
                        let mut pat: *mut GaihAddrtuple = std::ptr::null_mut();
                        // SAFETY: all pointers valid; buffer is 512 bytes.
                        let (st, ans) = unsafe {
                            let st = _nss_mymachines_gethostbyname4_r(
                                c"flip".as_ptr(),
                                &mut pat,
                                buf,
                                512,
                                &mut e,
                                &mut h,
                                std::ptr::null_mut(),
                            );
                            (
                                st,
                                (st == NssStatus::Success).then(|| {
                                    read_tuples(pat, false, buf.cast(), buf.add(512).cast())
                                }),
                            )
                        };
                        assert_eq!(st, NssStatus::Success, "lookup during replacement");
                        let addrs = ans.map(|a| a.addrs).unwrap_or_default();
                        assert!(
                            addrs == ips(&["10.3.0.1"]) || addrs == ips(&["10.3.0.2", "fd03::2"]),
                            "torn answer {addrs:?}"
                        );
                    }
                })
            })
            .collect();
        let results: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in results {
            r.expect("reader");
        }
        assert!(writer.join().expect("writer") > 0);
    });
}

/// NOTFOUND leaves errno alone and sets HOST_NOT_FOUND; bad arguments give UNAVAIL.
fn not_found_and_bad_arguments() {
    let mut buf = [0u64; 128];
    let b = buf.as_mut_ptr().cast::<c_char>();
    let mut h: c_int = 0;
    // SAFETY: all pointers valid for the calls.
    unsafe {
        let mut he: libc::hostent = std::mem::zeroed();
        *errno_ptr() = SENTINEL_ERRNO;
        let st = _nss_mymachines_gethostbyname2_r(
            c"nosuch".as_ptr(),
            libc::AF_INET,
            &mut he,
            b,
            1024,
            errno_ptr(),
            &mut h,
        );
        assert_eq!(
            (st, h, *errno_ptr()),
            (NssStatus::NotFound, HOST_NOT_FOUND, SENTINEL_ERRNO)
        );

        let mut pat: *mut GaihAddrtuple = std::ptr::null_mut();
        let st = _nss_mymachines_gethostbyname4_r(
            c"../run/web".as_ptr(),
            &mut pat,
            b,
            1024,
            errno_ptr(),
            &mut h,
            std::ptr::null_mut(),
        );
        assert_eq!((st, h), (NssStatus::NotFound, HOST_NOT_FOUND));
        assert!(pat.is_null());

        let st = _nss_mymachines_gethostbyname2_r(
            c"web".as_ptr(),
            libc::AF_UNIX,
            &mut he,
            b,
            1024,
            errno_ptr(),
            &mut h,
        );
        assert_eq!((st, *errno_ptr()), (NssStatus::Unavail, libc::EAFNOSUPPORT));

        let addr = [10u8, 0, 0, 3];
        let st = _nss_mymachines_gethostbyaddr2_r(
            addr.as_ptr().cast(),
            3,
            libc::AF_INET,
            &mut he,
            b,
            1024,
            errno_ptr(),
            &mut h,
            std::ptr::null_mut(),
        );
        assert_eq!((st, *errno_ptr()), (NssStatus::Unavail, libc::EINVAL));

        *errno_ptr() = SENTINEL_ERRNO;
        let unknown = [10u8, 9, 9, 9];
        let st = _nss_mymachines_gethostbyaddr_r(
            unknown.as_ptr().cast(),
            4,
            libc::AF_INET,
            &mut he,
            b,
            1024,
            errno_ptr(),
            &mut h,
        );
        assert_eq!(
            (st, h, *errno_ptr()),
            (NssStatus::NotFound, HOST_NOT_FOUND, SENTINEL_ERRNO)
        );
    }
}
