//! Reading the registry's hosts view (see `netspawn_common::hosts`) from
//! inside whatever process called the resolver.
//!
//! A name lookup is one `readlink` of `<run_dir>/hosts/NAME` and one
//! `kill(PID, 0)`: the cheapest way to read a machine's addresses and check
//! that its launcher still runs, since this cost is added to every host
//! lookup that reaches the module. The launcher removes the link before it
//! exits and its keeper removes it if the launcher is killed, so the
//! `kill` check only guards against a link left by a launcher and keeper
//! that were both killed (PID reuse aside, which the keeper's cleanup makes
//! moot in practice).
//!
//! The module runs in arbitrary programs, some privileged, so the view is
//! untrusted input read defensively: the location comes from
//! `secure_getenv` (a setuid program ignores `NETSPAWN_RUN_DIR`), a name is
//! validated before it becomes a path, the link itself is read (never
//! followed), and a target that does not parse, or anything that is not a
//! link, reads as "no such machine". Nothing here writes: unlike
//! `Registry::list`, the module never reaps stale entries, since it must
//! not change state behind the calling program's back.

use std::ffi::{c_int, CStr, OsStr};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use netspawn_common::hosts::{Target, MAX_TARGET};
use netspawn_common::names::machine_name_is_valid;
use netspawn_common::paths::ENV_RUN_DIR;

use crate::addrs::{self, Family};

/// Where the registry lives when `NETSPAWN_RUN_DIR` is unset (or ignored).
pub const DEFAULT_RUN_DIR: &str = "/run/netspawn";

/// A failed lookup that is not simply "absent": the errno to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupError(pub c_int);

pub(crate) fn os_error(e: &io::Error) -> LookupError {
    LookupError(e.raw_os_error().unwrap_or(libc::EIO))
}

/// True for errors that just mean "there is no such machine": nothing
/// there, a path that is not a directory, or something that is not a link.
pub(crate) fn is_absent(errno: c_int) -> bool {
    matches!(
        errno,
        libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EINVAL | libc::ENAMETOOLONG
    )
}

/// Calls `f` with the run directory: `$NETSPAWN_RUN_DIR`, read with
/// `secure_getenv` so that setuid and otherwise secure-mode programs always
/// use [`DEFAULT_RUN_DIR`]. The bytes are borrowed from the environment only
/// for the call (no copy, no allocation on the lookup path).
pub(crate) fn with_run_dir<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    // SAFETY: the key is NUL-terminated; the returned pointer (if any)
    // points into the environment, which nothing here changes during `f`.
    let value = unsafe { crate::ffi::secure_getenv(RUN_DIR_KEY.as_ptr()) };
    let from_env = if value.is_null() {
        &[][..]
    } else {
        // SAFETY: secure_getenv returns a NUL-terminated string.
        unsafe { CStr::from_ptr(value) }.to_bytes()
    };
    if from_env.is_empty() {
        f(DEFAULT_RUN_DIR.as_bytes())
    } else {
        f(from_env)
    }
}

/// [`ENV_RUN_DIR`] as a C string.
const RUN_DIR_KEY: &CStr = c"NETSPAWN_RUN_DIR";
const _: () = assert!(RUN_DIR_KEY.count_bytes() == ENV_RUN_DIR.len());

/// The hosts view: `<run dir>/hosts` (see [`with_run_dir`]).
pub fn hosts_dir() -> PathBuf {
    with_run_dir(|dir| PathBuf::from(OsStr::from_bytes(dir)).join("hosts"))
}

/// Room for `DIR/NAME` and its NUL on the stack; a longer directory (only
/// possible through `NETSPAWN_RUN_DIR`) is refused as the kernel would.
pub(crate) const PATH_ROOM: usize = libc::PATH_MAX as usize;

/// Reads the target of the link `DIR SUB NAME` (`SUB` being `/`,
/// `/hosts/`, `/userns/` or `/uids/`) into `buf`: `Ok(None)` if there
/// is no such link (or it is something else, or its target is too long to
/// be ours: one that fills `buf` may be cut). One `readlink`, no
/// descriptor, no allocation.
pub(crate) fn read_target<'a>(
    dir: &[u8],
    sub: &[u8],
    name: &str,
    buf: &'a mut [u8],
) -> Result<Option<&'a [u8]>, LookupError> {
    let mut path = [0u8; PATH_ROOM];
    let parts: [&[u8]; 4] = [dir, sub, name.as_bytes(), b"\0"];
    let mut len = 0;
    for part in parts {
        let Some(dst) = path.get_mut(len..len + part.len()) else {
            return Ok(None);
        };
        dst.copy_from_slice(part);
        len += part.len();
    }
    let Some(path) = path
        .get(..len)
        .and_then(|p| CStr::from_bytes_with_nul(p).ok())
    else {
        // A NUL inside the directory name: no such path.
        return Ok(None);
    };
    // SAFETY: path is NUL-terminated; buf is valid for buf.len() bytes.
    let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let Ok(n) = usize::try_from(n) else {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(errno) if is_absent(errno) => Ok(None),
            _ => Err(os_error(&err)),
        };
    };
    // A full buffer may be a cut target: the caller's holds ours and a byte more.
    if n >= buf.len() {
        return Ok(None);
    }
    Ok(buf.get(..n))
}

/// True if process `pid` exists (it may belong to another user: `EPERM`
/// says it exists too). `Target::parse` keeps PIDs in `1..=i32::MAX`, so
/// this never addresses a process group.
pub(crate) fn launcher_running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The usable addresses of `family` (see [`addrs::select`]) of the running
/// machine called `name`, from its link in the hosts view `dir`, or None.
pub fn machine_by_name(
    dir: &Path,
    name: &str,
    family: Family,
) -> Result<Option<Vec<IpAddr>>, LookupError> {
    Ok(by_name_at(dir.as_os_str().as_bytes(), b"/", name, family)?
        .map(|f| f.addrs)
        .filter(|a| !a.is_empty()))
}

/// [`machine_by_name`] in the hosts view of the run directory the
/// environment names (see [`with_run_dir`]): the path is built on the stack.
pub fn machine_by_name_here(
    name: &str,
    family: Family,
) -> Result<Option<Vec<IpAddr>>, LookupError> {
    Ok(
        with_run_dir(|run_dir| by_name_at(run_dir, b"/hosts/", name, family))?
            .map(|f| f.addrs)
            .filter(|a| !a.is_empty()),
    )
}

/// Everything a caller that can carry a scope id gets for `name` (see
/// [`Found`]), from the hosts view `dir`.
pub fn machine_all_by_name(dir: &Path, name: &str) -> Result<Option<Found>, LookupError> {
    by_name_at(dir.as_os_str().as_bytes(), b"/", name, Family::Any)
}

/// [`machine_all_by_name`] in the run directory the environment names.
pub fn machine_all_by_name_here(name: &str) -> Result<Option<Found>, LookupError> {
    with_run_dir(|run_dir| by_name_at(run_dir, b"/hosts/", name, Family::Any))
}

/// A running machine's answer: its usable addresses of the family asked
/// for or, for a machine that has none and a caller that can carry a scope
/// (gethostbyname4_r), its IPv6 link-local addresses with the index of the
/// host-side link that reaches each. Never both, never neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub addrs: Vec<IpAddr>,
    pub scoped: Scoped,
}

/// Most link-local addresses one answer carries (a machine has one per
/// link; more in a hostile link target are left out).
pub const MAX_SCOPED: usize = 16;

/// Link-local addresses with their interface index, on the stack, in the
/// order the launcher wrote them, each once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scoped {
    items: [(Ipv6Addr, u32); MAX_SCOPED],
    len: usize,
}

impl Scoped {
    fn from_iter(iter: impl Iterator<Item = (Ipv6Addr, u32)>) -> Scoped {
        let mut s = Scoped {
            items: [(Ipv6Addr::UNSPECIFIED, 0); MAX_SCOPED],
            len: 0,
        };
        for pair in iter {
            if s.as_slice().contains(&pair) {
                continue;
            }
            let Some(slot) = s.items.get_mut(s.len) else {
                break;
            };
            *slot = pair;
            s.len += 1;
        }
        s
    }

    /// The pairs.
    pub fn as_slice(&self) -> &[(Ipv6Addr, u32)] {
        self.items.get(..self.len).unwrap_or(&[])
    }
}

fn by_name_at(
    dir: &[u8],
    sub: &[u8],
    name: &str,
    family: Family,
) -> Result<Option<Found>, LookupError> {
    if !machine_name_is_valid(name) {
        return Ok(None);
    }
    let mut buf = [0u8; MAX_TARGET + 1];
    let Some(target) = read_target(dir, sub, name, &mut buf)?.and_then(Target::parse) else {
        return Ok(None);
    };
    let usable = addrs::select(&target.addresses().collect::<SmallList>(), family);
    // Link-local addresses only for a machine that has nothing else: glibc's
    // getaddrinfo sorts by RFC 6724 (rule 6 and 8 favour fe80::/10 over
    // ULA, global and IPv4 destinations), so one answered beside a routable
    // address would become the caller's first answer.
    let scoped = if usable.is_empty() && family == Family::Any {
        Scoped::from_iter(target.scoped())
    } else {
        Scoped::from_iter(std::iter::empty())
    };
    if (usable.is_empty() && scoped.len == 0) || !launcher_running(target.launcher) {
        return Ok(None);
    }
    Ok(Some(Found {
        addrs: usable,
        scoped,
    }))
}

/// The addresses of one link, on the stack for the usual few (a link holds
/// at most about a hundred; the rest go to the heap).
struct SmallList {
    head: [IpAddr; 8],
    len: usize,
    rest: Vec<IpAddr>,
}

impl FromIterator<IpAddr> for SmallList {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> SmallList {
        let mut list = SmallList {
            head: [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED); 8],
            len: 0,
            rest: Vec::new(),
        };
        for a in iter {
            match list.head.get_mut(list.len) {
                Some(slot) => {
                    *slot = a;
                    list.len += 1;
                }
                None => list.rest.push(a),
            }
        }
        list
    }
}

impl<'a> IntoIterator for &'a SmallList {
    type Item = &'a IpAddr;
    type IntoIter = std::iter::Chain<std::slice::Iter<'a, IpAddr>, std::slice::Iter<'a, IpAddr>>;
    fn into_iter(self) -> Self::IntoIter {
        self.head
            .get(..self.len)
            .unwrap_or(&[])
            .iter()
            .chain(self.rest.iter())
    }
}

/// The name of the running machine that has `addr`, scanning the hosts
/// view. If several machines claim it (separate private networks may reuse
/// addresses), the alphabetically first wins, so answers are stable.
pub fn machine_by_address(dir: &Path, addr: &IpAddr) -> Result<Option<String>, LookupError> {
    let listing = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.raw_os_error().is_some_and(is_absent) => return Ok(None),
        Err(e) => return Err(os_error(&e)),
    };
    let mut best: Option<String> = None;
    let mut buf = [0u8; MAX_TARGET + 1];
    for dirent in listing.flatten() {
        let file_name = dirent.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        // Temporary links of an atomic write start with '.'; the name check rejects them too.
        if !machine_name_is_valid(name) {
            continue;
        }
        if best.as_deref().is_some_and(|b| b <= name) {
            continue;
        }
        // One unreadable link must not hide the others.
        let Ok(Some(target)) = read_target(dir.as_os_str().as_bytes(), b"/", name, &mut buf) else {
            continue;
        };
        let Some(target) = Target::parse(target) else {
            continue;
        };
        if target.addresses().any(|a| a == *addr) && launcher_running(target.launcher) {
            best = Some(name.to_string());
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "nss-mymachines-lookup-{tag}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        /// A link for `name` owned by this (running) test process.
        fn add(&self, name: &str, addrs: &str) {
            self.raw(name, &format!("{} {addrs}", std::process::id()));
        }

        fn raw(&self, name: &str, target: &str) {
            let _ = fs::remove_file(self.0.join(name));
            symlink(target, self.0.join(name)).unwrap();
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A PID that no process has (a child that was waited for).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn by_name_reads_links_of_running_launchers_only() {
        let t = TempDir::new("name");
        t.add("web", "10.0.0.2 fd00::2");
        t.raw("dead", &format!("{} 10.0.0.3", dead_pid()));
        t.raw("garbage", "\u{1}\u{2} 10.0.0.4");
        t.raw("pidzero", "0 10.0.0.5");
        t.raw("group", "-1 10.0.0.5");
        t.raw(
            "partial",
            &format!("{} 10.0.0.6 nonsense", std::process::id()),
        );
        fs::write(t.0.join("file"), format!("{} 10.0.0.7", std::process::id())).unwrap();
        fs::create_dir(t.0.join("adir")).unwrap();
        let fifo = std::ffi::CString::new(t.0.join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: fifo is a valid path string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

        assert_eq!(
            machine_by_name(&t.0, "web", Family::Any).unwrap(),
            Some(vec![ip("10.0.0.2"), ip("fd00::2")])
        );
        for absent in [
            "dead", "garbage", "pidzero", "group", "partial", "file", "adir", "pipe", "nothere",
            "../web", ".web", "", "web/",
        ] {
            assert_eq!(
                machine_by_name(&t.0, absent, Family::Any).unwrap(),
                None,
                "{absent}"
            );
        }
        assert_eq!(
            machine_by_name(&t.0.join("missing"), "web", Family::Any).unwrap(),
            None
        );
        assert_eq!(
            machine_by_name(&t.0.join("file"), "web", Family::Any).unwrap(),
            None
        );
        let long = PathBuf::from(format!("/{}", "d/".repeat(PATH_ROOM)));
        assert_eq!(machine_by_name(&long, "web", Family::Any).unwrap(), None);
    }

    #[test]
    fn launcher_liveness() {
        assert!(launcher_running(std::process::id()));
        assert!(launcher_running(1));
        assert!(!launcher_running(0));
        assert!(!launcher_running(u32::MAX));
        assert!(!launcher_running(i32::MAX as u32 + 1));
        assert!(!launcher_running(dead_pid()));
    }

    #[test]
    fn family_and_usable_addresses_are_selected() {
        let t = TempDir::new("family");
        t.add("web", "fe80::1 10.0.0.2 10.0.0.2 fd00::2");
        t.add("ll", "fe80::1 169.254.0.1 127.0.0.1");
        assert_eq!(
            machine_by_name(&t.0, "web", Family::Any).unwrap(),
            Some(vec![ip("10.0.0.2"), ip("fd00::2")])
        );
        assert_eq!(
            machine_by_name(&t.0, "web", Family::V6).unwrap(),
            Some(vec![ip("fd00::2")])
        );
        assert_eq!(
            machine_by_name(&t.0, "web", Family::V4).unwrap(),
            Some(vec![ip("10.0.0.2")])
        );
        assert_eq!(machine_by_name(&t.0, "ll", Family::Any).unwrap(), None);
    }

    #[test]
    fn link_local_addresses_come_with_their_index_only_when_nothing_else_does() {
        let t = TempDir::new("scoped");
        t.add("web", "10.0.0.2 fe80::2%7 fd00::2 fe80::3%8 fe80::2%7");
        t.add("v4", "10.0.0.3 fe80::4%9");
        // Beside a routable address a link-local one is never answered
        // (getaddrinfo would sort it first).
        let all = machine_all_by_name(&t.0, "web").unwrap().unwrap();
        assert_eq!(all.addrs, vec![ip("10.0.0.2"), ip("fd00::2")]);
        assert_eq!(all.scoped.as_slice(), &[]);
        let v4 = machine_all_by_name(&t.0, "v4").unwrap().unwrap();
        assert_eq!(
            (v4.addrs, v4.scoped.as_slice()),
            (vec![ip("10.0.0.3")], &[][..])
        );
        assert_eq!(
            machine_by_name(&t.0, "web", Family::V6).unwrap(),
            Some(vec![ip("fd00::2")])
        );
        // A machine with only link-local addresses: each with its index,
        // in the launcher's order, once; never to a hostent call.
        t.add("llonly", "fe80::2%7 fe80::3%8 fe80::2%7");
        let ll = machine_all_by_name(&t.0, "llonly").unwrap().unwrap();
        assert!(ll.addrs.is_empty());
        assert_eq!(
            ll.scoped.as_slice(),
            &[
                ("fe80::2".parse().unwrap(), 7),
                ("fe80::3".parse().unwrap(), 8)
            ]
        );
        assert_eq!(machine_by_name(&t.0, "llonly", Family::V6).unwrap(), None);
        assert_eq!(machine_by_name(&t.0, "llonly", Family::Any).unwrap(), None);
        let many: Vec<String> = (1..=40).map(|i| format!("fe80::{i}%{i}")).collect();
        t.add("many", &many.join(" "));
        let got = machine_all_by_name(&t.0, "many").unwrap().unwrap();
        assert_eq!(got.scoped.as_slice().len(), MAX_SCOPED);
        // Scoped addresses never answer a reverse lookup (it has no scope).
        assert_eq!(machine_by_address(&t.0, &ip("fe80::2")).unwrap(), None);
    }

    #[test]
    fn the_longest_target_is_read_whole() {
        let t = TempDir::new("long");
        let addrs: Vec<IpAddr> = (0..300u16)
            .map(|i| ip(&format!("fd00:1111:2222:3333:4444:5555:6666:{i:x}")))
            .collect();
        let target = netspawn_common::hosts::format_target(std::process::id(), &addrs);
        assert!(target.len() > MAX_TARGET - 40);
        t.raw("big", &target);
        let got = machine_by_name(&t.0, "big", Family::V6).unwrap().unwrap();
        assert_eq!(got[..], addrs[..got.len()]);
    }

    #[test]
    fn by_address_scans_and_prefers_the_first_name() {
        let t = TempDir::new("addr");
        t.add("b", "10.0.0.7");
        t.add("a", "10.0.0.7 fd00::7");
        t.add("c", "10.0.0.8");
        t.add(".#c.123", "10.0.0.9");
        t.raw("d", &format!("{} 10.0.0.10", dead_pid()));
        t.raw("junk", "=\u{7f}");
        fs::write(t.0.join("e"), "1 10.0.0.11").unwrap();
        assert_eq!(
            machine_by_address(&t.0, &ip("10.0.0.7"))
                .unwrap()
                .as_deref(),
            Some("a")
        );
        assert_eq!(
            machine_by_address(&t.0, &ip("fd00::7")).unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(
            machine_by_address(&t.0, &ip("10.0.0.8"))
                .unwrap()
                .as_deref(),
            Some("c")
        );
        for absent in ["10.0.0.9", "10.0.0.10", "10.0.0.11"] {
            assert_eq!(machine_by_address(&t.0, &ip(absent)).unwrap(), None);
        }
        assert_eq!(
            machine_by_address(&t.0.join("nope"), &ip("10.0.0.7")).unwrap(),
            None
        );
    }
}
