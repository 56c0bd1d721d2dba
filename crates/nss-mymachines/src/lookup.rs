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

use crate::addrs::{self, Family};

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

/// Entries up to this size are read with one `read` into a stack buffer;
/// launchers write a few hundred bytes.
const STACK_ENTRY: usize = 4096;

/// One registry file's bytes: in the caller's stack buffer when small, else
/// on the heap. (Borrowed rather than owned: moving a 4 KiB array through
/// `Result<Option<..>>` costs more than parsing it.)
enum EntryBytes<'a> {
    Stack(&'a [u8]),
    Heap(Vec<u8>),
}

impl EntryBytes<'_> {
    fn as_bytes(&self) -> &[u8] {
        match self {
            EntryBytes::Stack(bytes) => bytes,
            EntryBytes::Heap(v) => v,
        }
    }
}

/// Reads one registry file: `Ok(None)` if it is missing, a directory, too
/// large, or otherwise not something a launcher wrote. A launcher's entry
/// (under [`STACK_ENTRY`], ending in a newline) costs `open`, one `read` and
/// `close`: on local filesystems a short read of a regular file is its end.
/// Data not ending in a newline is read on until end of file, so a
/// filesystem that returns short reads cannot cut an entry in the middle of
/// a line. A full buffer is checked with `fstat` (regular file?) and read on,
/// capped at [`MAX_ENTRY_SIZE`]. FIFOs cannot block (`O_NONBLOCK`) and read
/// as empty; symlinks are not followed.
fn read_entry<'a>(
    path: &Path,
    buf: &'a mut [u8; STACK_ENTRY],
) -> Result<Option<EntryBytes<'a>>, LookupError> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(os_error(&e)),
    };
    let mut len = 0;
    while let Some(free) = buf.get_mut(len..).filter(|f| !f.is_empty()) {
        match file.read(free) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_not_a_file(&e) => return Ok(None),
            Err(e) => return Err(os_error(&e)),
        }
        if buf.get(..len).is_some_and(|b| b.ends_with(b"\n")) {
            break;
        }
    }
    if len < STACK_ENTRY {
        return Ok(buf.get(..len).map(EntryBytes::Stack));
    }
    let meta = file.metadata().map_err(|e| os_error(&e))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(STACK_ENTRY * 2);
    bytes.extend_from_slice(buf);
    // The cap counts what is already read: one byte over the limit is enough to refuse.
    let rest = (MAX_ENTRY_SIZE + 1).saturating_sub(STACK_ENTRY) as u64;
    read_capped(file, rest, &mut bytes)?;
    if bytes.len() > MAX_ENTRY_SIZE {
        return Ok(None);
    }
    Ok(Some(EntryBytes::Heap(bytes)))
}

/// Read errors that mean "this is not an entry file" (a directory, a FIFO
/// without data, a device that refuses).
fn is_not_a_file(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EISDIR) | Some(libc::EAGAIN) | Some(libc::EINVAL) | Some(libc::ENXIO)
    )
}

/// Reads one registry file as text: `Ok(None)` if it is missing, not a
/// regular file, too large or not UTF-8.
pub fn read_entry_text(path: &Path) -> Result<Option<String>, LookupError> {
    let mut buf = [0u8; STACK_ENTRY];
    Ok(read_entry(path, &mut buf)?.and_then(|b| String::from_utf8(b.as_bytes().to_vec()).ok()))
}

fn read_capped(file: File, cap: u64, out: &mut Vec<u8>) -> Result<(), LookupError> {
    file.take(cap)
        .read_to_end(out)
        .map(|_| ())
        .map_err(|e| os_error(&e))
}

/// The fields of a registry entry the module needs, borrowed from its text.
/// [`Entry::parse`] would build every field (a dozen allocations); this reads
/// only four and gives the same values: the last occurrence of a key wins,
/// lines are split as `str::lines` does, and a value holding a backslash
/// (escaped by the writer) sends the whole entry to [`Entry::parse`] instead.
#[derive(Debug, Default, PartialEq, Eq)]
struct EntryView<'a> {
    name: &'a str,
    launcher: u32,
    launcher_start: u64,
    addresses: &'a str,
}

/// What [`EntryView::parse`] found: the view, or a sign that the entry needs
/// the full parser.
enum Parsed<'a> {
    View(EntryView<'a>),
    Escaped,
}

impl<'a> EntryView<'a> {
    fn parse(text: &'a str) -> Parsed<'a> {
        let mut v = EntryView::default();
        // Entry::parse reads numbers as u64 (0 if malformed) and truncates the PIDs.
        let num = |s: &str| s.parse::<u64>().unwrap_or(0);
        // Byte-wise (the text is UTF-8 and every split is at an ASCII byte),
        // splitting lines as `str::lines` does: at '\n', dropping a '\r' before it.
        let mut rest = text;
        while !rest.is_empty() {
            let (line, next) = match memchr(b'\n', rest.as_bytes()) {
                Some(i) => {
                    let line = rest.get(..i).unwrap_or("");
                    (
                        line.strip_suffix('\r').unwrap_or(line),
                        rest.get(i + 1..).unwrap_or(""),
                    )
                }
                None => (rest, ""),
            };
            rest = next;
            let Some(eq) = memchr(b'=', line.as_bytes()) else {
                continue;
            };
            let (Some(key), Some(value)) = (line.get(..eq), line.get(eq + 1..)) else {
                continue;
            };
            let slot = match key {
                "NAME" | "LAUNCHER" | "LAUNCHER_START" | "ADDRESSES" => key,
                _ => continue,
            };
            if memchr(b'\\', value.as_bytes()).is_some() {
                return Parsed::Escaped;
            }
            match slot {
                "NAME" => v.name = value,
                "LAUNCHER" => v.launcher = num(value) as u32,
                "LAUNCHER_START" => v.launcher_start = num(value),
                _ => v.addresses = value,
            }
        }
        Parsed::View(v)
    }

    fn addresses(&self) -> impl Iterator<Item = IpAddr> + 'a {
        self.addresses
            .split_whitespace()
            .filter_map(|a| a.parse().ok())
    }
}

/// The first position of `byte` in `hay`: glibc's vectorised `memchr`, which
/// finds line ends in an entry several times faster than a byte loop.
fn memchr(byte: u8, hay: &[u8]) -> Option<usize> {
    // SAFETY: hay is valid for hay.len() bytes; the result is null or points into it.
    let found = unsafe { libc::memchr(hay.as_ptr().cast(), c_int::from(byte), hay.len()) };
    if found.is_null() {
        return None;
    }
    (found as usize).checked_sub(hay.as_ptr() as usize)
}

/// Decodes registry bytes into the entry for `name`, if that is what they
/// hold: `(launcher, launcher_start, addresses)`.
fn entry_for(bytes: &[u8], name: &str) -> Option<(u32, u64, Vec<IpAddr>)> {
    if bytes.len() > MAX_ENTRY_SIZE {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    match EntryView::parse(text) {
        Parsed::View(v) => {
            // Entry::parse refuses an invalid NAME; `name` is valid, so equality suffices.
            (v.name == name).then(|| (v.launcher, v.launcher_start, v.addresses().collect()))
        }
        Parsed::Escaped => {
            let e = Entry::parse(text).ok()?;
            (e.name == name).then_some((e.launcher, e.launcher_start, e.addresses))
        }
    }
}

/// `/proc/PID/stat` for a PID, built on the stack.
struct StatPath {
    buf: [u8; 32],
    len: usize,
}

impl StatPath {
    fn new(pid: u32) -> StatPath {
        let mut buf = [0u8; 32];
        let mut digits = [0u8; 10];
        let mut n = pid;
        let mut d = digits.len();
        // A u32 has at most 10 digits.
        while let Some(slot) = d.checked_sub(1).and_then(|i| digits.get_mut(i)) {
            // n % 10 < 10: the cast cannot truncate.
            *slot = b'0' + (n % 10) as u8;
            d -= 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let parts: [&[u8]; 3] = [b"/proc/", &digits[d..], b"/stat\0"];
        let mut len = 0;
        for part in parts {
            // At most 6 + 10 + 6 bytes: always fits.
            if let Some(dst) = buf.get_mut(len..len + part.len()) {
                dst.copy_from_slice(part);
                len += part.len();
            }
        }
        StatPath { buf, len }
    }

    fn as_cstr(&self) -> Option<&CStr> {
        CStr::from_bytes_with_nul(self.buf.get(..self.len)?).ok()
    }
}

/// True if process `pid` runs and started at `start` (clock ticks since boot,
/// field 22 of `/proc/PID/stat`): the same test as `Entry::is_alive`, done
/// with `open`, one `read` into a stack buffer and `close`, without any
/// allocation. Generating `/proc/PID/stat` is the dearest step of a lookup;
/// the kernel hands the whole line to the first `read` when the buffer is
/// large enough, so no second `read` is needed to see its end. Reading bytes
/// also copes with a command name that is not UTF-8.
pub fn launcher_alive(pid: u32, start: u64) -> bool {
    if pid == 0 {
        return false;
    }
    let path = StatPath::new(pid);
    let Some(path) = path.as_cstr() else {
        return false;
    };
    // SAFETY: path is NUL-terminated; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    // Field 22 ends within ~500 bytes even with a 64-byte name and 20-digit
    // fields; a longer line is cut, which loses nothing needed.
    let mut buf = [0u8; 1024];
    let n = loop {
        // SAFETY: buf is valid for buf.len() bytes; fd is open.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
    let Ok(len) = usize::try_from(n) else {
        return false;
    };
    stat_start_time(buf.get(..len).unwrap_or(&[])) == Some(start)
}

/// Where the command name (field 2) of a `/proc/PID/stat` line must have
/// ended: a PID of at most 10 digits, " (", a name of at most 64 bytes, ")".
const STAT_NAME_END: usize = 128;

/// Field 22 of a `/proc/PID/stat` line, or None for a zombie. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// after the last ')' (searched for in the first [`STAT_NAME_END`] bytes
/// only: the numeric fields after it hold none).
fn stat_start_time(stat: &[u8]) -> Option<u64> {
    let head = stat.get(..stat.len().min(STAT_NAME_END))?;
    let close = head.iter().rposition(|&b| b == b')')?;
    let after = stat.get(close + 1..)?;
    let mut fields = after
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    // Field 3, the state: a zombie launcher is dead.
    if matches!(fields.next()?, b"Z" | b"X" | b"x") {
        return None;
    }
    let field = fields.nth(18)?;
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// The usable addresses of `family` (see [`addrs::select`]) of the live
/// machine called `name`, read directly from `dir/name` (no scan), or None.
/// The launcher's liveness, the dearest step, is checked last: an entry that
/// is absent, foreign or has no address to give is answered without it.
pub fn machine_by_name(
    dir: &Path,
    name: &str,
    family: Family,
) -> Result<Option<Vec<IpAddr>>, LookupError> {
    if !machine_name_is_valid(name) {
        return Ok(None);
    }
    let mut buf = [0u8; STACK_ENTRY];
    let Some(bytes) = read_entry(&dir.join(name), &mut buf)? else {
        return Ok(None);
    };
    let Some((launcher, start, all)) = entry_for(bytes.as_bytes(), name) else {
        return Ok(None);
    };
    let usable = addrs::select(&all, family);
    if usable.is_empty() || !launcher_alive(launcher, start) {
        return Ok(None);
    }
    Ok(Some(usable))
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
    let mut buf = [0u8; STACK_ENTRY];
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
        let Ok(Some(bytes)) = read_entry(&dirent.path(), &mut buf) else {
            continue;
        };
        let Some((launcher, start, addresses)) = entry_for(bytes.as_bytes(), name) else {
            continue;
        };
        if addresses.contains(addr) && launcher_alive(launcher, start) {
            best = Some(name.to_string());
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

        let web = machine_by_name(&t.0, "web", Family::Any).unwrap().unwrap();
        assert_eq!(web.len(), 2);
        for absent in [
            "other", "stale", "huge", "binary", "adir", "link", "nothere", "../web", ".web", "",
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
        // The longest name (64 bytes, all ')') after the longest PID still ends in reach.
        let longest = [
            b"4294967295 (".as_slice(),
            &[b')'; 64],
            b")",
            tail.as_bytes(),
        ]
        .concat();
        assert_eq!(stat_start_time(&longest), Some(777));
    }

    /// What the module must decide for `text`, computed with the registry crate's parser.
    fn reference(text: &str, name: &str) -> Option<(u32, u64, Vec<IpAddr>)> {
        let e = Entry::parse(text).ok()?;
        (e.name == name).then_some((e.launcher, e.launcher_start, e.addresses))
    }

    #[test]
    fn entry_view_reads_what_entry_parse_reads() {
        let cases = [
            "NAME=web\nLAUNCHER=42\nLAUNCHER_START=77\nADDRESSES=10.0.0.2 fd00::2\n",
            "NAME=web\r\nLAUNCHER=42\r\nLAUNCHER_START=77\r\nADDRESSES=10.0.0.2\r\n",
            "NAME=web\nADDRESSES=10.0.0.2\r",
            "NAME=web\nNAME=other\n",
            "NAME=other\nNAME=web\nLAUNCHER=1\nLAUNCHER=2\n",
            "NAME=web\nLAUNCHER=+5\nLAUNCHER_START=-3\n",
            "NAME=web\nLAUNCHER=4294967297\nLAUNCHER_START=99999999999999999999\n",
            "NAME=web\nLAUNCHER= 5\nADDRESSES=  10.0.0.1\t\u{a0}10.0.0.3 junk 300.1.1.1\n",
            "NAME=w\\eb\nLAUNCHER=1\n",
            "NAME=web\nADDRESSES=10.0.0.\\2\n",
            "NAME=web\nROOT=/x\\ny\nADDRESSES=10.0.0.2\n",
            "NAME=web=x\n",
            "NAME\nweb\n=web\n",
            "name=web\n",
            "",
            "\n\n\r\n",
            "NAME=-bad\n",
            "ADDRESSES=10.0.0.2\nNAME=web",
        ];
        for text in cases {
            assert_eq!(
                entry_for(text.as_bytes(), "web"),
                reference(text, "web"),
                "{text:?}"
            );
        }
        assert_eq!(entry_for(&[0xff, b'\n'], "web"), None);
        let big = format!("NAME=web\n{}", "X".repeat(MAX_ENTRY_SIZE));
        assert_eq!(entry_for(big.as_bytes(), "web"), None);
    }

    #[test]
    fn entry_view_agrees_on_generated_entries() {
        // Lines mixed from fragments, in a fixed pseudo-random order (an LCG),
        // so that duplicates, escapes and odd line ends meet in every way.
        let fragments = [
            "NAME=web",
            "NAME=we\\b",
            "NAME=db",
            "LAUNCHER=7",
            "LAUNCHER=x",
            "LAUNCHER=\\7",
            "LAUNCHER_START=9",
            "LAUNCHER_START=",
            "ADDRESSES=10.1.1.1 fd00::1",
            "ADDRESSES=",
            "ADDRESSES=1.2.3.4\\n5.6.7.8",
            "STATE=running",
            "=",
            "",
            "\r",
            "NAME",
        ];
        let ends = ["\n", "\r\n", "\r", ""];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        for _ in 0..5000 {
            let mut text = String::new();
            for _ in 0..next(8) {
                text.push_str(fragments[next(fragments.len())]);
                text.push_str(ends[next(ends.len())]);
            }
            assert_eq!(
                entry_for(text.as_bytes(), "web"),
                reference(&text, "web"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn entries_of_every_size_up_to_the_cap_are_read() {
        let t = TempDir::new("sizes");
        let base = entry("web", "10.0.0.2");
        for total in [
            base.len(),
            STACK_ENTRY - 1,
            STACK_ENTRY,
            STACK_ENTRY + 1,
            MAX_ENTRY_SIZE,
        ] {
            let pad = total - base.len();
            // An unknown key pads the entry to exactly `total` bytes.
            let text = if pad == 0 {
                base.clone()
            } else {
                format!("{base}X{}\n", "=".repeat(pad - 2))
            };
            assert_eq!(text.len(), total);
            fs::write(t.0.join("web"), &text).unwrap();
            let found = machine_by_name(&t.0, "web", Family::Any).unwrap();
            assert_eq!(found, Some(vec!["10.0.0.2".parse().unwrap()]), "{total}");
        }
        let over = format!("{base}X{}\n", "=".repeat(MAX_ENTRY_SIZE - base.len()));
        fs::write(t.0.join("web"), over).unwrap();
        assert_eq!(machine_by_name(&t.0, "web", Family::Any).unwrap(), None);
    }

    #[test]
    fn an_entry_without_a_final_newline_is_read_whole() {
        let t = TempDir::new("nonl");
        let text = entry("web", "10.0.0.2 10.0.0.3");
        fs::write(t.0.join("web"), text.trim_end()).unwrap();
        assert_eq!(
            machine_by_name(&t.0, "web", Family::V4).unwrap(),
            Some(vec![
                "10.0.0.2".parse().unwrap(),
                "10.0.0.3".parse().unwrap()
            ])
        );
    }

    #[test]
    fn family_and_usable_addresses_are_selected() {
        let t = TempDir::new("family");
        fs::write(
            t.0.join("web"),
            entry("web", "fe80::1 10.0.0.2 10.0.0.2 fd00::2"),
        )
        .unwrap();
        fs::write(t.0.join("ll"), entry("ll", "fe80::1 169.254.0.1 127.0.0.1")).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            machine_by_name(&t.0, "web", Family::Any).unwrap(),
            Some(vec![ip("10.0.0.2"), ip("fd00::2")])
        );
        assert_eq!(
            machine_by_name(&t.0, "web", Family::V6).unwrap(),
            Some(vec![ip("fd00::2")])
        );
        assert_eq!(machine_by_name(&t.0, "ll", Family::Any).unwrap(), None);
    }

    #[test]
    fn a_zombie_launcher_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = process_start_time(pid).unwrap();
        let t = TempDir::new("zombie");
        fs::write(
            t.0.join("z"),
            format!("NAME=z\nLAUNCHER={pid}\nLAUNCHER_START={start}\nADDRESSES=10.0.0.3\n"),
        )
        .unwrap();
        assert!(machine_by_name(&t.0, "z", Family::Any).unwrap().is_some());
        // Not waited for: once it exits it stays a zombie until the wait below.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
        {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!launcher_alive(pid, start));
        assert_eq!(machine_by_name(&t.0, "z", Family::Any).unwrap(), None);
        child.wait().unwrap();
        assert_eq!(machine_by_name(&t.0, "z", Family::Any).unwrap(), None);
    }

    #[test]
    fn stat_paths() {
        let path = |pid| {
            StatPath::new(pid)
                .as_cstr()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(path(0), "/proc/0/stat");
        assert_eq!(path(7), "/proc/7/stat");
        assert_eq!(path(4_294_967_295), "/proc/4294967295/stat");
    }

    #[test]
    fn directories_and_fifos_read_as_absent() {
        let t = TempDir::new("odd");
        fs::create_dir(t.0.join("adir")).unwrap();
        let mut buf = [0u8; STACK_ENTRY];
        assert!(read_entry(&t.0.join("adir"), &mut buf).unwrap().is_none());
        assert_eq!(read_entry_text(&t.0.join("adir")).unwrap(), None);
    }

    #[test]
    fn fifo_does_not_block() {
        let t = TempDir::new("fifo");
        let path = t.0.join("pipe");
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: c is a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert_eq!(machine_by_name(&t.0, "pipe", Family::Any).unwrap(), None);
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
