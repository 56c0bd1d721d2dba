//! Reading the registry's users view (see `netspawn_common::users`): which
//! running machine a host UID or GID belongs to, and back.
//!
//! - by name (`vu-NAME-U`, `vg-NAME-G`): one `readlink` of
//!   `<run_dir>/userns/NAME` and one `kill(PID, 0)`;
//! - by ID: one `readlink` of `<run_dir>/uids/S:65536`, the standard range
//!   that holds the ID (`S` is the ID with its low 16 bits cleared), and
//!   one `kill`; failing that (a range of another size or alignment, a
//!   dead launcher, or no machine at all), one listing of
//!   `<run_dir>/uids/other` (the other ranges; usually empty) with
//!   `getdents64` into a stack buffer, whose link names alone say which
//!   ranges hold the ID, and a `readlink` for those only.
//!
//! Nothing here allocates or writes. IDs below 65536 are the host's and are
//! never looked up; a machine whose `vu-` name would not be a valid user
//! name (a dot in the machine name, longer than 31 bytes) has no names, as
//! in systemd. The same rules as for the hosts view apply (see
//! [`crate::lookup`]): the run directory from `secure_getenv`, links read
//! and never followed, anything unparsable reads as absent.

use std::ffi::CStr;

use netspawn_common::names::HOST_NAME_MAX;
use netspawn_common::registry::UidRange;
use netspawn_common::users::{self, IdKind, HOST_ID_LIMIT};

use crate::lookup::{self, LookupError};

/// At most this many links holding one ID are read in a scan (there is
/// one unless ranges overlap, which the launcher refuses).
const MAX_CANDIDATES: usize = 16;
/// The stack buffer a directory is listed into.
const DIRENT_BUF: usize = 2048;

/// A small string built on the stack.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    pub fn new() -> Text<N> {
        Text {
            buf: [0; N],
            len: 0,
        }
    }

    /// Appends `bytes`; false (and nothing appended) if they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let Some(dst) = self
            .len
            .checked_add(bytes.len())
            .and_then(|end| self.buf.get_mut(self.len..end))
        else {
            return false;
        };
        dst.copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    /// Appends `v` in decimal.
    pub fn push_u32(&mut self, mut v: u32) -> bool {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                *d = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        self.push(digits.get(i..).unwrap_or(&[]))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// The text as `&str` (it is built from ASCII and machine names, which
    /// are ASCII; anything else reads as empty).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text::new()
    }
}

/// One answer: host ID `id` is ID `inner` of machine `machine`.
#[derive(Clone, Copy)]
pub struct Found {
    pub kind: IdKind,
    pub id: u32,
    pub inner: u32,
    machine: Text<HOST_NAME_MAX>,
}

impl Found {
    fn new(kind: IdKind, machine: &str, range: UidRange, inner: u32) -> Option<Found> {
        let id = users::host_id(range, inner)?;
        let mut m = Text::new();
        if !m.push(machine.as_bytes()) {
            return None;
        }
        let found = Found {
            kind,
            id,
            inner,
            machine: m,
        };
        // systemd names nothing it could not spell as a valid user name.
        users::valid_user_group_name(found.name().as_bytes()).then_some(found)
    }

    pub fn machine(&self) -> &str {
        self.machine.as_str()
    }

    /// `vu-NAME-U` or `vg-NAME-G`.
    pub fn name(&self) -> Text<96> {
        let mut t = Text::new();
        t.push(self.kind.prefix().as_bytes());
        t.push(self.machine.as_bytes());
        t.push(b"-");
        t.push_u32(self.inner);
        t
    }

    /// `UID U of Container NAME` (or `GID …`), systemd's description.
    pub fn description(&self) -> Text<128> {
        let mut t = Text::new();
        t.push(self.kind.label().as_bytes());
        t.push(b" ");
        t.push_u32(self.inner);
        t.push(b" of Container ");
        t.push(self.machine.as_bytes());
        t
    }
}

/// The running machine the user or group `name` (`vu-NAME-U`, `vg-NAME-G`)
/// belongs to, in the registry at `run_dir`.
pub fn by_name(run_dir: &[u8], kind: IdKind, name: &[u8]) -> Result<Option<Found>, LookupError> {
    let Some((machine, inner)) = users::parse_id_name(kind, name) else {
        return Ok(None);
    };
    let mut buf = [0u8; users::MAX_TARGET + 1];
    let Some((pid, range)) = lookup::read_target(run_dir, b"/userns/", machine, &mut buf)?
        .and_then(users::parse_name_target)
    else {
        return Ok(None);
    };
    let Some(found) = Found::new(kind, machine, range, inner) else {
        return Ok(None);
    };
    Ok(lookup::launcher_running(pid).then_some(found))
}

/// [`by_name`] in the run directory the environment names.
pub fn by_name_here(kind: IdKind, name: &[u8]) -> Result<Option<Found>, LookupError> {
    lookup::with_run_dir(|dir| by_name(dir, kind, name))
}

/// Reads `uids/LINK` and checks it: the machine of range `range` holding
/// `id`, if its launcher runs.
fn from_id_link(
    run_dir: &[u8],
    sub: &[u8],
    link: &str,
    range: UidRange,
    kind: IdKind,
    id: u32,
) -> Result<Option<Found>, LookupError> {
    let mut buf = [0u8; users::MAX_TARGET + 1];
    let Some((pid, machine)) =
        lookup::read_target(run_dir, sub, link, &mut buf)?.and_then(users::parse_id_target)
    else {
        return Ok(None);
    };
    if !range.contains(id) || !lookup::launcher_running(pid) {
        return Ok(None);
    }
    Ok(Found::new(kind, machine, range, id - range.shift))
}

/// The running machine whose range holds host ID `id`, in the registry at
/// `run_dir`. If (against the launcher's rules) several do, the one with
/// the lowest range wins.
pub fn by_id(run_dir: &[u8], kind: IdKind, id: u32) -> Result<Option<Found>, LookupError> {
    if id < HOST_ID_LIMIT {
        return Ok(None);
    }
    if let Some(range) = users::standard_range_of(id) {
        let mut link = Text::<24>::new();
        link.push_u32(range.shift);
        link.push(b":");
        link.push_u32(range.range);
        if let Some(found) = from_id_link(run_dir, b"/uids/", link.as_str(), range, kind, id)? {
            return Ok(Some(found));
        }
    }
    let mut best: Option<Found> = None;
    let mut tried = 0;
    let mut failure = None;
    scan_links(run_dir, |name| {
        let Some(range) = users::parse_id_link_name(name) else {
            return true;
        };
        if !range.contains(id) || best.is_some_and(|b| b.id - b.inner <= range.shift) {
            return true;
        }
        tried += 1;
        let Ok(name) = std::str::from_utf8(name) else {
            return true;
        };
        match from_id_link(run_dir, b"/uids/other/", name, range, kind, id) {
            Ok(Some(found)) => best = Some(found),
            Ok(None) => {}
            Err(e) => failure = Some(e),
        }
        tried < MAX_CANDIDATES
    })?;
    match (best, failure) {
        (Some(found), _) => Ok(Some(found)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(None),
    }
}

/// [`by_id`] in the run directory the environment names.
pub fn by_id_here(kind: IdKind, id: u32) -> Result<Option<Found>, LookupError> {
    lookup::with_run_dir(|dir| by_id(dir, kind, id))
}

/// Closes a descriptor when dropped.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// Calls `each` with the name of every link (or entry of unknown type) in
/// `<run_dir>/uids/other`, until it returns false. A missing directory, or one
/// that is a symbolic link, has no entries. `getdents64` into a stack
/// buffer: no allocation.
fn scan_links(run_dir: &[u8], mut each: impl FnMut(&[u8]) -> bool) -> Result<(), LookupError> {
    let Some(fd) = open_uids(run_dir)? else {
        return Ok(());
    };
    // u64 words: the kernel writes 8-aligned records.
    let mut buf = [0u64; DIRENT_BUF / 8];
    loop {
        // SAFETY: buf is valid for DIRENT_BUF bytes of writes.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.0,
                buf.as_mut_ptr().cast::<u8>(),
                DIRENT_BUF,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return Err(lookup::os_error(&std::io::Error::last_os_error()));
        };
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel filled n <= DIRENT_BUF bytes of buf.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        if !each_dirent(bytes, &mut each) {
            return Ok(());
        }
    }
}

/// Opens `<run_dir>/uids/other` (not through a symbolic link); None if there is
/// no such directory. Its own function so that the path's stack room is
/// given back before the links are read.
#[inline(never)]
fn open_uids(run_dir: &[u8]) -> Result<Option<Fd>, LookupError> {
    let mut path = Text::<{ lookup::PATH_ROOM }>::new();
    if !(path.push(run_dir) && path.push(b"/uids/other\0")) {
        return Ok(None);
    }
    let Ok(path) = CStr::from_bytes_with_nul(path.as_bytes()) else {
        return Ok(None);
    };
    // SAFETY: a NUL-terminated path; the descriptor is closed by Fd.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(errno) if lookup::is_absent(errno) => Ok(None),
            _ => Err(lookup::os_error(&err)),
        };
    }
    Ok(Some(Fd(fd)))
}

/// `struct linux_dirent64`: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
const RECLEN_AT: usize = 16;
const TYPE_AT: usize = 18;
const NAME_AT: usize = 19;

/// Walks the records of one `getdents64` answer; false if `each` said stop.
fn each_dirent(mut bytes: &[u8], each: &mut impl FnMut(&[u8]) -> bool) -> bool {
    while let Some(reclen) = bytes.get(RECLEN_AT..RECLEN_AT + 2) {
        let reclen = usize::from(u16::from_ne_bytes([
            reclen.first().copied().unwrap_or(0),
            reclen.get(1).copied().unwrap_or(0),
        ]));
        let (Some(record), Some(rest)) = (bytes.get(..reclen), bytes.get(reclen..)) else {
            return true;
        };
        if reclen <= NAME_AT {
            return true;
        }
        let kind = record.get(TYPE_AT).copied().unwrap_or(libc::DT_UNKNOWN);
        let name = record.get(NAME_AT..).unwrap_or(&[]);
        let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
        if (kind == libc::DT_LNK || kind == libc::DT_UNKNOWN) && !each(name) {
            return false;
        }
        bytes = rest;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    struct Run(PathBuf);
    impl Run {
        fn new(tag: &str) -> Run {
            let p = std::env::temp_dir()
                .join(format!("nss-mymachines-users-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(p.join("userns")).unwrap();
            fs::create_dir_all(p.join("uids/other")).unwrap();
            Run(p)
        }

        fn dir(&self) -> &[u8] {
            self.0.as_os_str().as_bytes()
        }

        /// Both links of a machine whose launcher is `pid`.
        fn add(&self, name: &str, shift: u32, range: u32, pid: u32) {
            symlink(
                format!("{pid} {shift} {range}"),
                self.0.join("userns").join(name),
            )
            .unwrap();
            let range = UidRange::new(shift, range).unwrap();
            symlink(
                format!("{pid} {name}"),
                self.0.join("uids").join(users::id_link_rel(range)),
            )
            .unwrap();
        }
    }
    impl Drop for Run {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn names(f: Option<Found>) -> Option<(String, u32, String)> {
        f.map(|f| {
            (
                f.name().as_str().to_string(),
                f.id,
                f.description().as_str().to_string(),
            )
        })
    }

    #[test]
    fn text_formats_numbers() {
        let mut t = Text::<32>::new();
        assert!(t.push_u32(0) && t.push(b" ") && t.push_u32(u32::MAX) && t.push(b" "));
        assert!(t.push_u32(10));
        assert_eq!(t.as_str(), "0 4294967295 10");
        let mut small = Text::<3>::new();
        assert!(!small.push_u32(1000));
        assert!(small.push_u32(100));
        assert!(!small.push(b"x"));
        assert_eq!(small.as_str(), "100");
    }

    #[test]
    fn names_and_ids_of_a_live_machine() {
        let r = Run::new("live");
        let me = std::process::id();
        r.add("web", 524288, 65536, me);
        let user = by_name(r.dir(), IdKind::User, b"vu-web-0").unwrap();
        assert_eq!(
            names(user),
            Some(("vu-web-0".into(), 524288, "UID 0 of Container web".into()))
        );
        let group = by_name(r.dir(), IdKind::Group, b"vg-web-5").unwrap();
        assert_eq!(
            names(group),
            Some(("vg-web-5".into(), 524293, "GID 5 of Container web".into()))
        );
        for id in [524288, 524293, 589823] {
            let f = by_id(r.dir(), IdKind::User, id).unwrap().expect("found");
            assert_eq!((f.machine(), f.id, f.inner), ("web", id, id - 524288));
        }
        for id in [0, 65535, 524287, 589824, u32::MAX] {
            assert!(by_id(r.dir(), IdKind::User, id).unwrap().is_none(), "{id}");
        }
        for bad in [
            &b"vu-web-65536"[..],
            b"vu-web-05",
            b"vg-web-0",
            b"vu-db-0",
            b"vu-../web-0",
            b"vu-web-0\n",
            b"web",
        ] {
            assert!(
                by_name(r.dir(), IdKind::User, bad).unwrap().is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn odd_ranges_are_found_by_scanning() {
        let r = Run::new("scan");
        let me = std::process::id();
        r.add("big", 655360, 131072, me);
        r.add("odd", 1000000, 100, me);
        r.add("dead", 2000000, 65536, dead_pid());
        r.add("low", 0, 65536, me);
        symlink("junk", r.0.join("uids/3000000:65536")).unwrap();
        symlink("junk", r.0.join("uids/other/3000000:100")).unwrap();
        symlink(
            format!("{me} web"),
            r.0.join("uids/other/.#4000000:65536.1"),
        )
        .unwrap();
        fs::write(r.0.join("uids/5000000:65536"), format!("{me} web")).unwrap();
        fs::write(r.0.join("uids/other/5000000:100"), format!("{me} web")).unwrap();
        // A standard range's link in other/ is not where it is looked for.
        symlink(format!("{me} web"), r.0.join("uids/6000000:100")).unwrap();
        let f = by_id(r.dir(), IdKind::User, 655360 + 65536 + 7)
            .unwrap()
            .unwrap();
        assert_eq!((f.machine(), f.inner), ("big", 65543));
        let f = by_id(r.dir(), IdKind::Group, 1000099).unwrap().unwrap();
        assert_eq!(f.name().as_str(), "vg-odd-99");
        for id in [1000100, 2000000, 3000000, 4000000, 5000000, 6000000, 100] {
            assert!(by_id(r.dir(), IdKind::User, id).unwrap().is_none(), "{id}");
        }
        assert!(by_name(r.dir(), IdKind::User, b"vu-dead-0")
            .unwrap()
            .is_none());
        // An identity mapping names nothing.
        assert!(by_name(r.dir(), IdKind::User, b"vu-low-0")
            .unwrap()
            .is_none());
        // Many machines: the scan finds the one among them.
        for i in 0..300u32 {
            r.add(&format!("m{i}"), 10_000_000 + i * 1000, 1000, me);
        }
        let f = by_id(r.dir(), IdKind::User, 10_000_000 + 250 * 1000 + 3)
            .unwrap()
            .unwrap();
        assert_eq!((f.machine(), f.inner), ("m250", 3));
        assert!(by_id(r.dir(), IdKind::User, 10_300_000).unwrap().is_none());
    }

    #[test]
    fn machines_without_a_valid_user_name_get_none() {
        let r = Run::new("invalid");
        let me = std::process::id();
        r.add("we.b", 524288, 65536, me);
        r.add("averyveryveryveryverylongname", 655360, 65536, me);
        assert!(by_id(r.dir(), IdKind::User, 524288).unwrap().is_none());
        assert!(by_id(r.dir(), IdKind::User, 655360).unwrap().is_none());
        assert!(by_name(r.dir(), IdKind::User, b"vu-we.b-0")
            .unwrap()
            .is_none());
    }

    #[test]
    fn missing_or_odd_directories_are_empty() {
        let r = Run::new("dirs");
        let me = std::process::id();
        for id in [524288, 600000] {
            assert!(by_id(b"/nonexistent", IdKind::User, id).unwrap().is_none());
        }
        fs::remove_dir(r.0.join("uids/other")).unwrap();
        let elsewhere = Run::new("dirs-target");
        elsewhere.add("web", 524288, 100, me);
        symlink(elsewhere.0.join("uids/other"), r.0.join("uids/other")).unwrap();
        assert!(by_id(r.dir(), IdKind::User, 524288).unwrap().is_none());
        let long = format!("/{}", "d/".repeat(lookup::PATH_ROOM));
        assert!(by_id(long.as_bytes(), IdKind::User, 600000)
            .unwrap()
            .is_none());
    }

    #[test]
    fn dirent_walk_is_bounded() {
        let mut seen = 0;
        assert!(each_dirent(&[0u8; 10], &mut |_| {
            seen += 1;
            true
        }));
        // reclen 0 would loop forever: it ends the walk.
        assert!(each_dirent(&[0u8; 64], &mut |_| {
            seen += 1;
            true
        }));
        assert_eq!(seen, 0);
    }
}
