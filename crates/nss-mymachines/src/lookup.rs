//! Reading the machine registry from inside whatever process called the
//! resolver.
//!
//! The module runs in arbitrary programs, some privileged, so the registry is
//! untrusted input read defensively: the location comes from
//! `secure_getenv` (a setuid program ignores `NETSPAWN_RUN_DIR`), a name is
//! validated before it becomes a path, files are opened without following
//! symlinks and without blocking (a FIFO planted in the directory cannot hang
//! the caller), only regular files are read, and reads are capped at
//! [`MAX_ENTRY_SIZE`]. Anything odd reads as "no such machine". Nothing here
//! writes: unlike `Registry::list`, the module never reaps stale entries,
//! since it must not change state behind the calling program's back.

use std::ffi::{c_int, CStr, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use netspawn_common::names::machine_name_is_valid;
use netspawn_common::paths::ENV_RUN_DIR;
use netspawn_common::registry::{Entry, MAX_ENTRY_SIZE};

/// Where the registry lives when `NETSPAWN_RUN_DIR` is unset (or ignored).
pub const DEFAULT_RUN_DIR: &str = "/run/netspawn";

/// A failed lookup that is not simply "absent": the errno to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupError(pub c_int);

fn os_error(e: &io::Error) -> LookupError {
    LookupError(e.raw_os_error().unwrap_or(libc::EIO))
}

/// True for errors that just mean "there is no such entry".
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::ENXIO)
    )
}

/// The registry directory: `$NETSPAWN_RUN_DIR/machines`, read with
/// `secure_getenv` so that setuid and otherwise secure-mode programs always
/// use [`DEFAULT_RUN_DIR`].
pub fn machines_dir() -> PathBuf {
    let var: Vec<u8> = ENV_RUN_DIR.bytes().chain(std::iter::once(0)).collect();
    let from_env = CStr::from_bytes_with_nul(&var).ok().and_then(|key| {
        // SAFETY: key is NUL-terminated; the returned pointer (if any) points
        // into the environment and is copied before anything else runs.
        let value = unsafe { crate::ffi::secure_getenv(key.as_ptr()) };
        if value.is_null() {
            return None;
        }
        // SAFETY: secure_getenv returns a NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(value) }.to_bytes();
        (!bytes.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(bytes)))
    });
    from_env
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
        .join("machines")
}

/// Reads one registry file: `Ok(None)` if it is missing, not a regular file,
/// too large or not UTF-8.
pub fn read_entry_text(path: &Path) -> Result<Option<String>, LookupError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(os_error(&e)),
    };
    let meta = file.metadata().map_err(|e| os_error(&e))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let cap = MAX_ENTRY_SIZE as u64 + 1;
    let hint = usize::try_from(meta.len().min(cap)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(hint);
    read_capped(file, cap, &mut bytes)?;
    if bytes.len() > MAX_ENTRY_SIZE {
        return Ok(None);
    }
    Ok(String::from_utf8(bytes).ok())
}

fn read_capped(file: File, cap: u64, out: &mut Vec<u8>) -> Result<(), LookupError> {
    file.take(cap)
        .read_to_end(out)
        .map(|_| ())
        .map_err(|e| os_error(&e))
}

/// True if process `pid` runs and started at `start` (clock ticks since boot,
/// field 22 of `/proc/PID/stat`): the same test as `Entry::is_alive`, done
/// with one `read` into a stack buffer. Generating `/proc/PID/stat` is the
/// dearest step of a lookup, and `fs::read_to_string` adds a `statx`, a second
/// read and an allocation to it; reading bytes also copes with a command name
/// that is not UTF-8.
pub fn launcher_alive(pid: u32, start: u64) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(mut file) = File::open(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The line is well under 1 KiB (52 numeric fields and a 16-byte name).
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    stat_start_time(buf.get(..len).unwrap_or(&[])) == Some(start)
}

/// Field 22 of a `/proc/PID/stat` line, or None for a zombie. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// after the last ')'.
fn stat_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let after = stat.get(close + 1..)?;
    let mut fields = after.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty());
    // Field 3, the state: a zombie launcher is dead.
    if matches!(fields.next()?, b"Z" | b"X" | b"x") {
        return None;
    }
    let field = fields.nth(18)?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Parses registry text and keeps it only if it is the entry for `name` and
/// its launcher is alive.
fn live_entry(text: &str, name: &str) -> Option<Entry> {
    let entry = Entry::parse(text).ok()?;
    (entry.name == name && launcher_alive(entry.launcher, entry.launcher_start)).then_some(entry)
}

/// The live machine called `name`, read directly from `dir/name` (no scan).
pub fn machine_by_name(dir: &Path, name: &str) -> Result<Option<Entry>, LookupError> {
    if !machine_name_is_valid(name) {
        return Ok(None);
    }
    Ok(read_entry_text(&dir.join(name))?.and_then(|text| live_entry(&text, name)))
}

/// The name of the live machine that has `addr`, scanning the directory.
/// If several machines claim it (separate private networks may reuse
/// addresses), the alphabetically first wins, so answers are stable.
pub fn machine_by_address(dir: &Path, addr: &IpAddr) -> Result<Option<String>, LookupError> {
    let listing = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(os_error(&e)),
    };
    let mut best: Option<String> = None;
    for dirent in listing.flatten() {
        let file_name = dirent.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        // Temporary files of an atomic write start with '.'; the name check rejects them too.
        if !machine_name_is_valid(name) {
            continue;
        }
        if best.as_deref().is_some_and(|b| b <= name) {
            continue;
        }
        // One unreadable entry must not hide the others.
        let Ok(Some(text)) = read_entry_text(&dirent.path()) else {
            continue;
        };
        let Ok(entry) = Entry::parse(&text) else {
            continue;
        };
        if entry.name == name
            && entry.addresses.contains(addr)
            && launcher_alive(entry.launcher, entry.launcher_start)
        {
            best = Some(entry.name);
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netspawn_common::registry::process_start_time;

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
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entry(name: &str, addrs: &str) -> String {
        let pid = std::process::id();
        let start = process_start_time(pid).unwrap();
        format!("NAME={name}\nLAUNCHER={pid}\nLAUNCHER_START={start}\nADDRESSES={addrs}\n")
    }

    #[test]
    fn by_name_reads_live_entries_only() {
        let t = TempDir::new("name");
        fs::write(t.0.join("web"), entry("web", "10.0.0.2 fd00::2")).unwrap();
        fs::write(t.0.join("other"), entry("web", "10.0.0.9")).unwrap();
        let pid = std::process::id();
        fs::write(
            t.0.join("stale"),
            format!("NAME=stale\nLAUNCHER={pid}\nLAUNCHER_START=1\nADDRESSES=10.0.0.3\n"),
        )
        .unwrap();
        fs::write(t.0.join("huge"), "A".repeat(MAX_ENTRY_SIZE + 10)).unwrap();
        fs::write(t.0.join("binary"), [0xffu8, 0xfe, 0, 1]).unwrap();
        fs::create_dir(t.0.join("adir")).unwrap();
        std::os::unix::fs::symlink(t.0.join("web"), t.0.join("link")).unwrap();

        let web = machine_by_name(&t.0, "web").unwrap().unwrap();
        assert_eq!(web.addresses.len(), 2);
        for absent in [
            "other", "stale", "huge", "binary", "adir", "link", "nothere", "../web", ".web", "",
        ] {
            assert_eq!(machine_by_name(&t.0, absent).unwrap(), None, "{absent}");
        }
        assert_eq!(machine_by_name(&t.0.join("missing"), "web").unwrap(), None);
    }

    #[test]
    fn liveness_matches_the_registry_crate() {
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        assert!(launcher_alive(me, start));
        assert!(!launcher_alive(me, start + 1));
        assert!(!launcher_alive(0, 0));
        assert!(!launcher_alive(u32::MAX, start));
        if let Some(init) = process_start_time(1) {
            assert!(launcher_alive(1, init));
        }
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!launcher_alive(pid, 0));
    }

    #[test]
    fn stat_lines() {
        let tail = " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20";
        let line = |comm: &[u8]| [b"42 (".as_slice(), comm, b")", tail.as_bytes()].concat();
        assert_eq!(stat_start_time(&line(b"netspawn")), Some(777));
        assert_eq!(stat_start_time(&line(b"a) (b c")), Some(777));
        assert_eq!(stat_start_time(&line(&[0xff, 0xfe])), Some(777));
        assert_eq!(stat_start_time(b"42 (x) S 1 2"), None);
        assert_eq!(stat_start_time(b""), None);
        assert_eq!(stat_start_time(b"no paren 1 2 3"), None);
    }

    #[test]
    fn fifo_does_not_block() {
        let t = TempDir::new("fifo");
        let path = t.0.join("pipe");
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: c is a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert_eq!(machine_by_name(&t.0, "pipe").unwrap(), None);
    }

    #[test]
    fn by_address_scans_and_prefers_the_first_name() {
        let t = TempDir::new("addr");
        fs::write(t.0.join("b"), entry("b", "10.0.0.7")).unwrap();
        fs::write(t.0.join("a"), entry("a", "10.0.0.7 fd00::7")).unwrap();
        fs::write(t.0.join("c"), entry("c", "10.0.0.8")).unwrap();
        fs::write(t.0.join(".#c.123"), entry("c", "10.0.0.9")).unwrap();
        fs::write(t.0.join("junk"), "\u{0}\n=\n").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
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
        assert_eq!(machine_by_address(&t.0, &ip("10.0.0.9")).unwrap(), None);
        assert_eq!(
            machine_by_address(&t.0.join("nope"), &ip("10.0.0.7")).unwrap(),
            None
        );
    }
}
