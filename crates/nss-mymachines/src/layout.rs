//! Where an answer goes in the caller's buffer (hosts, passwd and group).
//!
//! glibc hands every reentrant lookup a buffer of its choosing and expects
//! all strings, pointer arrays and addresses of the answer to live inside it.
//! The answer is sized completely before anything is written ([`HostentPlan`],
//! [`TuplePlan`]: pure, checked arithmetic), so a short buffer is reported
//! without touching it. Pointer arrays and tuples are aligned for the
//! buffer's real address (a caller of `gethostbyname_r` may pass any
//! `char[]`), so the needed size depends on that address by up to 7 bytes.
//!
//! The writers are `unsafe` only because they write through the caller's raw
//! pointer; every offset they use comes from a plan checked against `buflen`.

use std::ffi::{c_char, c_int};
use std::mem::{align_of, size_of};
use std::net::{IpAddr, Ipv6Addr};
use std::ptr;

use crate::addrs::{af_of, octets};
use crate::ffi::GaihAddrtuple;

const PTR_SIZE: usize = size_of::<*mut c_char>();
const PTR_ALIGN: usize = align_of::<*mut c_char>();
const TUPLE_SIZE: usize = size_of::<GaihAddrtuple>();
const TUPLE_ALIGN: usize = align_of::<GaihAddrtuple>();

/// Bytes to skip at `addr` so that the next byte is `align`-aligned
/// (`align` a power of two).
pub fn pad_for(addr: usize, align: usize) -> usize {
    addr.wrapping_neg() & (align.wrapping_sub(1))
}

/// Layout of a `struct hostent` answer: the aliases array (just NULL), the
/// address pointer array (`n` pointers and NULL), the `n` addresses of `alen`
/// bytes each, then the NUL-terminated name. Offsets are from the start of the
/// buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostentPlan {
    pub aliases: usize,
    pub addr_list: usize,
    pub addrs: usize,
    pub name: usize,
    /// Bytes of the buffer used: the answer fits if `total <= buflen`.
    pub total: usize,
}

impl HostentPlan {
    /// Plans an answer with `n` addresses of `alen` bytes and a name of
    /// `name_len` bytes (without NUL) for a buffer at address `buf_addr`.
    /// `None` only if the sizes overflow `usize`.
    pub fn new(buf_addr: usize, n: usize, alen: usize, name_len: usize) -> Option<HostentPlan> {
        let aliases = pad_for(buf_addr, PTR_ALIGN);
        let addr_list = aliases.checked_add(PTR_SIZE)?;
        let addrs = addr_list.checked_add(n.checked_add(1)?.checked_mul(PTR_SIZE)?)?;
        let name = addrs.checked_add(n.checked_mul(alen)?)?;
        let total = name.checked_add(name_len)?.checked_add(1)?;
        Some(HostentPlan {
            aliases,
            addr_list,
            addrs,
            name,
            total,
        })
    }
}

/// Layout of a `gethostbyname4_r` answer: `n` contiguous `gaih_addrtuple`s,
/// then the NUL-terminated name they all point to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TuplePlan {
    pub tuples: usize,
    pub name: usize,
    /// Bytes of the buffer used.
    pub total: usize,
}

impl TuplePlan {
    /// Plans `n` tuples and a name of `name_len` bytes for a buffer at `buf_addr`.
    pub fn new(buf_addr: usize, n: usize, name_len: usize) -> Option<TuplePlan> {
        let tuples = pad_for(buf_addr, TUPLE_ALIGN);
        let name = tuples.checked_add(n.checked_mul(TUPLE_SIZE)?)?;
        let total = name.checked_add(name_len)?.checked_add(1)?;
        Some(TuplePlan {
            tuples,
            name,
            total,
        })
    }
}

/// The buffer is too small (or the sizes overflow): report ERANGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSmall;

/// Pointers into the buffer making up a `struct hostent`.
#[derive(Debug, Clone, Copy)]
pub struct HostentParts {
    pub name: *mut c_char,
    pub aliases: *mut *mut c_char,
    pub addr_list: *mut *mut c_char,
}

/// Copies `name` plus a NUL to `dst`.
///
/// # Safety
/// `dst` must be valid for `name.len() + 1` bytes of writes.
unsafe fn put_name(dst: *mut u8, name: &str) {
    ptr::copy_nonoverlapping(name.as_ptr(), dst, name.len());
    dst.add(name.len()).write(0);
}

/// Writes a hostent answer with `addrs` (all of family `af`, whose size is
/// `alen`) and `name` into the buffer.
///
/// # Safety
/// `buffer` must be valid for writes of `buflen` bytes.
pub unsafe fn write_hostent(
    buffer: *mut c_char,
    buflen: usize,
    name: &str,
    af: c_int,
    alen: usize,
    addrs: &[IpAddr],
) -> Result<HostentParts, TooSmall> {
    let plan = HostentPlan::new(buffer as usize, addrs.len(), alen, name.len()).ok_or(TooSmall)?;
    if plan.total > buflen || addrs.iter().any(|a| af_of(a) != af) {
        return Err(TooSmall);
    }
    let base = buffer.cast::<u8>();
    let aliases = base.add(plan.aliases).cast::<*mut c_char>();
    let addr_list = base.add(plan.addr_list).cast::<*mut c_char>();
    aliases.write_unaligned(ptr::null_mut());
    for (i, a) in addrs.iter().enumerate() {
        let (bytes, len) = octets(a);
        // af_of(a) == af, so len == alen.
        let dst = base.add(plan.addrs + i * alen);
        ptr::copy_nonoverlapping(bytes.as_ptr(), dst, len.min(alen));
        addr_list.add(i).write_unaligned(dst.cast::<c_char>());
    }
    addr_list.add(addrs.len()).write_unaligned(ptr::null_mut());
    let name_ptr = base.add(plan.name);
    put_name(name_ptr, name);
    Ok(HostentParts {
        name: name_ptr.cast::<c_char>(),
        aliases,
        addr_list,
    })
}

/// Writes a `gethostbyname4_r` answer (a linked list of tuples, one per
/// address, all pointing at `name`) and returns the first tuple: `addrs`
/// first, then the link-local `scoped` ones with their `scopeid` (the
/// lookup gives one or the other, see `lookup::Found`).
///
/// # Safety
/// `buffer` must be valid for writes of `buflen` bytes.
pub unsafe fn write_tuples(
    buffer: *mut c_char,
    buflen: usize,
    name: &str,
    addrs: &[IpAddr],
    scoped: &[(Ipv6Addr, u32)],
) -> Result<*mut GaihAddrtuple, TooSmall> {
    let n = addrs.len().checked_add(scoped.len()).ok_or(TooSmall)?;
    let plan = TuplePlan::new(buffer as usize, n, name.len()).ok_or(TooSmall)?;
    if plan.total > buflen || n == 0 {
        return Err(TooSmall);
    }
    let base = buffer.cast::<u8>();
    let name_ptr = base.add(plan.name);
    put_name(name_ptr, name);
    let first = base.add(plan.tuples).cast::<GaihAddrtuple>();
    let all = addrs
        .iter()
        .map(|a| (*a, 0))
        .chain(scoped.iter().map(|&(a, i)| (IpAddr::V6(a), i)));
    for (i, (a, scopeid)) in all.enumerate() {
        let next = if i + 1 < n {
            first.add(i + 1)
        } else {
            ptr::null_mut()
        };
        let (bytes, _) = octets(&a);
        let mut words = [0u32; 4];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_ne_bytes(chunk.try_into().unwrap_or([0; 4]));
        }
        first.add(i).write_unaligned(GaihAddrtuple {
            next,
            name: name_ptr.cast::<c_char>(),
            family: af_of(&a),
            addr: words,
            scopeid,
        });
    }
    Ok(first)
}

/// Layout of a passwd or group answer: `ptrs` pointer slots (aligned for
/// the buffer's address; a group's member list), then NUL-terminated
/// strings of the given lengths. Returns the offsets of the pointer slots
/// and of each string, and the bytes used; None if the sizes overflow.
pub fn strings_plan<const N: usize>(
    buf_addr: usize,
    ptrs: usize,
    lens: [usize; N],
) -> Option<(usize, [usize; N], usize)> {
    let slots = if ptrs == 0 {
        0
    } else {
        pad_for(buf_addr, PTR_ALIGN)
    };
    let mut at = slots.checked_add(ptrs.checked_mul(PTR_SIZE)?)?;
    let mut offsets = [0usize; N];
    for (off, len) in offsets.iter_mut().zip(lens) {
        *off = at;
        at = at.checked_add(len)?.checked_add(1)?;
    }
    Some((slots, offsets, at))
}

/// Writes `ptrs` null pointers and the strings `parts` (each with a NUL)
/// into the buffer, as [`strings_plan`] places them; returns the pointer
/// slots and the strings.
///
/// # Safety
/// `buffer` must be valid for writes of `buflen` bytes.
pub unsafe fn write_strings<const N: usize>(
    buffer: *mut c_char,
    buflen: usize,
    ptrs: usize,
    parts: [&[u8]; N],
) -> Result<(*mut *mut c_char, [*mut c_char; N]), TooSmall> {
    let (slots, offsets, total) =
        strings_plan(buffer as usize, ptrs, parts.map(<[u8]>::len)).ok_or(TooSmall)?;
    if total > buflen {
        return Err(TooSmall);
    }
    let base = buffer.cast::<u8>();
    let slot_ptr = base.add(slots).cast::<*mut c_char>();
    for i in 0..ptrs {
        slot_ptr.add(i).write_unaligned(ptr::null_mut());
    }
    let mut out = [ptr::null_mut(); N];
    for ((dst, off), part) in out.iter_mut().zip(offsets).zip(parts) {
        let p = base.add(off);
        ptr::copy_nonoverlapping(part.as_ptr(), p, part.len());
        p.add(part.len()).write(0);
        *dst = p.cast::<c_char>();
    }
    Ok((slot_ptr, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding() {
        assert_eq!(pad_for(0x1000, 8), 0);
        assert_eq!(pad_for(0x1001, 8), 7);
        assert_eq!(pad_for(0x1007, 8), 1);
        assert_eq!(pad_for(0x1003, 4), 1);
        assert_eq!(pad_for(usize::MAX, 8), 1);
    }

    #[test]
    fn hostent_plan_sizes() {
        // "web", two IPv4: NULL alias (8) + 3 pointers (24) + 2*4 + "web\0" = 44.
        let p = HostentPlan::new(0x1000, 2, 4, 3).unwrap();
        assert_eq!(
            p,
            HostentPlan {
                aliases: 0,
                addr_list: 8,
                addrs: 32,
                name: 40,
                total: 44
            }
        );
        // Misaligned buffer: everything shifts by the padding.
        let q = HostentPlan::new(0x1003, 2, 4, 3).unwrap();
        assert_eq!((q.aliases, q.total), (5, 49));
        // One IPv6 address, 5-byte name: 8 + 16 + 16 + 6 = 46.
        assert_eq!(HostentPlan::new(0x2000, 1, 16, 5).unwrap().total, 46);
        assert_eq!(HostentPlan::new(0, usize::MAX / 2, 16, 1), None);
    }

    #[test]
    fn tuple_plan_sizes() {
        let p = TuplePlan::new(0x1000, 3, 3).unwrap();
        assert_eq!(
            p,
            TuplePlan {
                tuples: 0,
                name: 120,
                total: 124
            }
        );
        assert_eq!(TuplePlan::new(0x1001, 1, 3).unwrap().total, 7 + 40 + 4);
        assert_eq!(TuplePlan::new(0, usize::MAX / 8, 3), None);
    }

    #[test]
    fn hostent_is_written_inside_the_buffer() {
        let addrs: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()];
        let mut buf = vec![0xAAu8; 64];
        let exact = HostentPlan::new(buf.as_ptr() as usize + 1, 2, 4, 3)
            .unwrap()
            .total;
        // SAFETY: the pointer is valid for buf.len() - 1 bytes.
        unsafe {
            let b = buf.as_mut_ptr().add(1).cast::<c_char>();
            assert_eq!(
                write_hostent(b, exact - 1, "web", libc::AF_INET, 4, &addrs).err(),
                Some(TooSmall)
            );
            let parts = write_hostent(b, exact, "web", libc::AF_INET, 4, &addrs).unwrap();
            assert_eq!(parts.aliases as usize % 8, 0);
            assert!((*parts.aliases).is_null());
            let a0 = *parts.addr_list;
            assert_eq!(
                std::slice::from_raw_parts(a0.cast::<u8>(), 4),
                &[10, 0, 0, 2]
            );
            let a1 = *parts.addr_list.add(1);
            assert_eq!(
                std::slice::from_raw_parts(a1.cast::<u8>(), 4),
                &[10, 0, 0, 3]
            );
            assert!((*parts.addr_list.add(2)).is_null());
            assert_eq!(std::ffi::CStr::from_ptr(parts.name).to_str(), Ok("web"));
        }
        assert!(buf[1 + exact..].iter().all(|&b| b == 0xAA));
        // A mixed-family list is refused rather than written wrongly.
        let mixed: Vec<IpAddr> = vec!["fd00::1".parse().unwrap()];
        // SAFETY: as above.
        let r =
            unsafe { write_hostent(buf.as_mut_ptr().cast(), 64, "web", libc::AF_INET, 4, &mixed) };
        assert!(r.is_err());
    }

    #[test]
    fn strings_are_placed_after_aligned_slots() {
        assert_eq!(strings_plan(0x1000, 0, [3, 1]), Some((0, [0, 4], 6)));
        assert_eq!(strings_plan(0x1003, 1, [3]), Some((5, [13], 17)));
        assert_eq!(strings_plan(0, usize::MAX / 4, [1]), None);
        let mut buf = vec![0xAAu8; 64];
        let exact = strings_plan(buf.as_ptr() as usize + 1, 1, [3, 1])
            .unwrap()
            .2;
        // SAFETY: valid for buf.len() - 1 bytes from offset 1.
        unsafe {
            let b = buf.as_mut_ptr().add(1).cast::<c_char>();
            assert!(write_strings(b, exact - 1, 1, [b"abc", b"*"]).is_err());
            let (slots, [a, star]) = write_strings(b, exact, 1, [b"abc", b"*"]).unwrap();
            assert_eq!(slots as usize % 8, 0);
            assert!((*slots).is_null());
            assert_eq!(std::ffi::CStr::from_ptr(a).to_str(), Ok("abc"));
            assert_eq!(std::ffi::CStr::from_ptr(star).to_str(), Ok("*"));
        }
        assert!(buf[1 + exact..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn tuples_are_linked_and_aligned() {
        let addrs: Vec<IpAddr> = vec!["fd00::2".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let mut buf = vec![0u8; 200];
        // SAFETY: valid for 199 bytes from offset 1.
        unsafe {
            let first =
                write_tuples(buf.as_mut_ptr().add(1).cast(), 199, "db", &addrs, &[]).unwrap();
            assert_eq!(first as usize % 8, 0);
            let t0 = &*first;
            assert_eq!(t0.family, libc::AF_INET6);
            assert_eq!(t0.addr[0].to_ne_bytes(), [0xfd, 0, 0, 0]);
            let t1 = &*t0.next;
            assert_eq!(t1.family, libc::AF_INET);
            assert_eq!(t1.addr[0].to_ne_bytes(), [10, 0, 0, 2]);
            assert!(t1.next.is_null());
            assert_eq!(t0.name, t1.name);
            assert_eq!(std::ffi::CStr::from_ptr(t0.name).to_str(), Ok("db"));
            assert_eq!((t0.scopeid, t1.scopeid), (0, 0));
        }
    }

    #[test]
    fn link_local_tuples_come_last_with_their_scope() {
        let addrs: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap()];
        let ll: Ipv6Addr = "fe80::2".parse().unwrap();
        let mut buf = vec![0u8; 200];
        let exact = TuplePlan::new(buf.as_ptr() as usize, 2, 3).unwrap().total;
        // SAFETY: valid for buf.len() bytes.
        unsafe {
            let b = buf.as_mut_ptr().cast();
            assert!(write_tuples(b, exact - 1, "web", &addrs, &[(ll, 9)]).is_err());
            assert!(write_tuples(b, 200, "web", &[], &[]).is_err(), "nothing");
            let only = &*write_tuples(b, 200, "web", &[], &[(ll, 9)]).unwrap();
            assert_eq!((only.family, only.scopeid), (libc::AF_INET6, 9));
            assert!(only.next.is_null());
            let t0 = &*write_tuples(b, exact, "web", &addrs, &[(ll, 9)]).unwrap();
            assert_eq!((t0.family, t0.scopeid), (libc::AF_INET, 0));
            let t1 = &*t0.next;
            assert_eq!((t1.family, t1.scopeid), (libc::AF_INET6, 9));
            assert_eq!(t1.addr[0].to_ne_bytes(), [0xfe, 0x80, 0, 0]);
            assert!(t1.next.is_null());
        }
    }
}
