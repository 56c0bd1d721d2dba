//! Parsers for the values that the command line and `.nspawn` files share:
//! bind and tmpfs mount specifications, port forwards, environment
//! assignments, booleans, absolute paths, word lists and system call filters.
//!
//! Every function here is pure and follows the syntax systemd-nspawn(1) and
//! systemd.nspawn(5) document, so `--bind=` and `Bind=` accept exactly the
//! same strings. Errors name the whole offending value on one line.

use std::fmt;
use std::path::PathBuf;

use netspawn_common::names::ifname_is_valid;
use netspawn_common::unitfile::values::{parse_size_1024, parse_timespan, words, Extract};
use thiserror::Error;

use crate::config::model::{CpuSet, Rlimit, RLIMITS};
use crate::seccomp::{self, SeccompError, SyscallFilter};

/// A value that does not follow its syntax. `Display` is one line that quotes
/// the whole value and says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("invalid bind mount {spec:?}: {reason}")]
    Bind { spec: String, reason: String },
    #[error("invalid overlay mount {spec:?}: {reason}")]
    Overlay { spec: String, reason: String },
    #[error("invalid tmpfs mount {spec:?}: {reason}")]
    Tmpfs { spec: String, reason: String },
    #[error("invalid port forward {spec:?}: {reason}")]
    Port { spec: String, reason: String },
    #[error("invalid environment assignment {spec:?}: {reason}")]
    Env { spec: String, reason: String },
    #[error("invalid path {spec:?}: {reason}")]
    Path { spec: String, reason: String },
    #[error("invalid word list {spec:?}: {reason}")]
    Words { spec: String, reason: String },
    #[error("invalid interface name {name:?}: 1 to 15 printable characters without '/', ':' or whitespace")]
    IfName { name: String },
    #[error("invalid extra veth link {spec:?}: {reason}")]
    VethExtra { spec: String, reason: String },
    #[error("invalid {what} {spec:?}: {reason}")]
    Value {
        what: &'static str,
        spec: String,
        reason: String,
    },
    #[error("{0}")]
    Syscall(String),
}

fn bad(what: &'static str, spec: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Value {
        what,
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

/// A bind mount from the host (or from inside the container) into the
/// container, as `--bind=`/`--bind-ro=` and `Bind=`/`BindReadOnly=` give it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindSpec {
    /// Absolute source path. With `source_in_container` it is relative to the
    /// container's root directory (the leading `+` is removed).
    pub source: PathBuf,
    /// Absolute mount point inside the container, normalised, without `..`.
    pub dest: PathBuf,
    /// Mount read-only (`--bind-ro=`, `BindReadOnly=`).
    pub read_only: bool,
    /// Recursive bind (`rbind`, the default) or only the top mount (`norbind`).
    pub recursive: bool,
    /// The source was written with a leading `+`: resolve it below the
    /// container's root directory rather than on the host.
    pub source_in_container: bool,
}

/// One directory of an overlay mount: a host path, or with a leading `+`
/// a path below the container's root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OverlayDir {
    /// Absolute, normalised (without the `+`).
    pub path: PathBuf,
    pub in_container: bool,
}

/// An overlay file system mounted inside the container (`--overlay=`,
/// `--overlay-ro=`, `Overlay=`, `OverlayReadOnly=`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OverlaySpec {
    /// The lower directories, bottom first (as written).
    pub lower: Vec<OverlayDir>,
    /// The upper directory; `None` (written empty): a fresh tmpfs.
    pub upper: Option<OverlayDir>,
    /// Absolute mount point inside the container, normalised, without `..`.
    pub dest: PathBuf,
    pub read_only: bool,
}

/// A tmpfs mounted inside the container (`--tmpfs=`, `TemporaryFileSystem=`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TmpfsSpec {
    /// Absolute mount point inside the container, normalised, without `..`.
    pub path: PathBuf,
    /// Mount options passed to the kernel; `mode=0755` when none are given.
    pub options: String,
}

/// Transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A port of the container exposed on the host (`-p`, `Port=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSpec {
    pub proto: Proto,
    /// Port on the host side, 1..=65535.
    pub host_port: u16,
    /// Port inside the container, 1..=65535.
    pub container_port: u16,
}

/// The default tmpfs options, as systemd-nspawn uses them.
pub const DEFAULT_TMPFS_OPTIONS: &str = "mode=0755";

/// Parses systemd's boolean words: `1 yes y true t on` and `0 no n false f
/// off`, case-insensitively. Anything else (including "") is `None`.
pub use netspawn_common::unitfile::parse_boolean;

/// Why a path was refused by [`normalize_absolute`].
enum PathProblem {
    Empty,
    NotAbsolute,
    DotDot,
    Nul,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::Empty => "path is empty",
            PathProblem::NotAbsolute => "path is not absolute",
            PathProblem::DotDot => "path must not contain \"..\" components",
            PathProblem::Nul => "path contains a NUL byte",
        })
    }
}

/// Makes `/a//b/./c/` into `/a/b/c`. `..` is refused unless `allow_dotdot`,
/// in which case it is kept as written (it is the host's business).
fn normalize_absolute(s: &str, allow_dotdot: bool) -> Result<PathBuf, PathProblem> {
    if s.is_empty() {
        return Err(PathProblem::Empty);
    }
    if s.contains('\0') {
        return Err(PathProblem::Nul);
    }
    if !s.starts_with('/') {
        return Err(PathProblem::NotAbsolute);
    }
    let mut out = String::with_capacity(s.len());
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." if !allow_dotdot => return Err(PathProblem::DotDot),
            _ => {
                out.push('/');
                out.push_str(part);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(PathBuf::from(out))
}

/// Parses an absolute path inside the container (`--chdir=`,
/// `WorkingDirectory=`): normalised, `..` refused.
pub fn parse_absolute_path(s: &str) -> Result<PathBuf, SpecError> {
    normalize_absolute(s, false).map_err(|p| SpecError::Path {
        spec: s.to_string(),
        reason: p.to_string(),
    })
}

/// Splits `s` at unescaped `sep`, unescaping each field (`\X` is `X`), into
/// at most `max` fields; the rest after the `max`-th separator is returned raw.
/// A lone backslash at the very end is an error, as in systemd.
fn split_escaped(s: &str, sep: char, max: usize) -> Result<(Vec<String>, Option<&str>), String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, n)) => cur.push(n),
                None => return Err("ends in a lone backslash".to_string()),
            }
        } else if c == sep {
            fields.push(std::mem::take(&mut cur));
            if fields.len() == max {
                // `sep` is one ASCII byte here, so i + 1 is a char boundary.
                return Ok((fields, Some(&s[i + c.len_utf8()..])));
            }
        } else {
            cur.push(c);
        }
    }
    fields.push(cur);
    Ok((fields, None))
}

/// Parses `--overlay=`/`--overlay-ro=` as systemd-nspawn: colon-separated
/// directories (`\:` for a colon in a path), `LOWER:UPPER` (mounted at
/// UPPER without its `+`) or `LOWER…:UPPER:DEST`, where the lower
/// directories are listed bottom first, an empty UPPER means a fresh tmpfs
/// (the changes are thrown away), and a `+` before a directory puts it
/// below the container's root. Directories are absolute (systemd also takes
/// paths relative to its working directory).
pub fn parse_overlay(s: &str, read_only: bool) -> Result<OverlaySpec, SpecError> {
    let err = |reason: String| SpecError::Overlay {
        spec: s.to_string(),
        reason,
    };
    let (fields, _) = split_escaped(s, ':', usize::MAX).map_err(err)?;
    if fields.len() < 2 {
        return Err(err("needs at least two colon-separated directories".into()));
    }
    let dir = |f: &str| -> Result<OverlayDir, SpecError> {
        let (in_container, p) = match f.strip_prefix('+') {
            Some(p) => (true, p),
            None => (false, f),
        };
        let path = normalize_absolute(p, !in_container).map_err(|p| err(format!("{f:?}: {p}")))?;
        Ok(OverlayDir { path, in_container })
    };
    let (lower, upper, dest) = if fields.len() == 2 {
        let upper = dir(&fields[1])?;
        let dest = normalize_absolute(&upper.path.to_string_lossy(), false)
            .map_err(|p| err(format!("destination: {p}")))?;
        (vec![dir(&fields[0])?], Some(upper), dest)
    } else {
        let n = fields.len();
        let dest = normalize_absolute(&fields[n - 1], false)
            .map_err(|p| err(format!("destination: {p}")))?;
        let upper = match fields[n - 2].as_str() {
            "" => None,
            u => Some(dir(u)?),
        };
        let lower = fields[..n - 2]
            .iter()
            .map(|f| dir(f))
            .collect::<Result<Vec<_>, _>>()?;
        (lower, upper, dest)
    };
    Ok(OverlaySpec {
        lower,
        upper,
        dest,
        read_only,
    })
}

/// Parses `SRC[:DST[:OPTS]]` as `--bind=` (with `read_only` false) and
/// `--bind-ro=` (true) take it.
///
/// Colons inside paths are written `\:`. SRC is absolute, optionally after a
/// `+` meaning "below the container's root"; DST is absolute and defaults to
/// SRC (without the `+`). OPTS is a comma list of `rbind` (default),
/// `norbind` and `noidmap`; `idmap`, `rootidmap` and `owneridmap` are refused
/// because id-mapped bind mounts are not supported.
pub fn parse_bind(s: &str, read_only: bool) -> Result<BindSpec, SpecError> {
    let err = |reason: String| SpecError::Bind {
        spec: s.to_string(),
        reason,
    };
    let (fields, rest) = split_escaped(s, ':', 2).map_err(err)?;
    let src_raw = fields.first().map(String::as_str).unwrap_or("");
    let (source_in_container, src_path) = match src_raw.strip_prefix('+') {
        Some(p) => (true, p),
        None => (false, src_raw),
    };
    // A path below the container's root must not climb out of it; a host path
    // is the administrator's to choose.
    let source = normalize_absolute(src_path, !source_in_container)
        .map_err(|p| err(format!("source: {p}")))?;
    let dest = match fields.get(1) {
        Some(d) => normalize_absolute(d, false).map_err(|p| err(format!("destination: {p}")))?,
        None => normalize_absolute(src_path, false)
            .map_err(|p| err(format!("destination (taken from the source): {p}")))?,
    };
    let mut recursive = true;
    for opt in rest.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
        match opt {
            "rbind" => recursive = true,
            "norbind" => recursive = false,
            "noidmap" => {}
            "idmap" | "rootidmap" | "owneridmap" => {
                return Err(err(format!(
                    "option {opt:?} asks for an id-mapped mount; user-namespace id-mapped bind mounts are not supported"
                )))
            }
            _ => {
                return Err(err(format!(
                    "unknown option {opt:?} (expected rbind, norbind or noidmap)"
                )))
            }
        }
    }
    Ok(BindSpec {
        source,
        dest,
        read_only,
        recursive,
        source_in_container,
    })
}

/// Parses `PATH[:OPTIONS]` as `--tmpfs=` takes it. PATH is absolute (`\:`
/// for a colon in it); OPTIONS default to [`DEFAULT_TMPFS_OPTIONS`].
pub fn parse_tmpfs(s: &str) -> Result<TmpfsSpec, SpecError> {
    let err = |reason: String| SpecError::Tmpfs {
        spec: s.to_string(),
        reason,
    };
    let (fields, rest) = split_escaped(s, ':', 1).map_err(err)?;
    let raw = fields.first().map(String::as_str).unwrap_or("");
    let path = normalize_absolute(raw, false).map_err(|p| err(p.to_string()))?;
    let options = match rest {
        Some(o) if !o.is_empty() => {
            if o.contains('\0') {
                return Err(err("options contain a NUL byte".to_string()));
            }
            o.to_string()
        }
        _ => DEFAULT_TMPFS_OPTIONS.to_string(),
    };
    Ok(TmpfsSpec { path, options })
}

fn parse_port_number(s: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err("port number is missing".to_string());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a port number"));
    }
    match s.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(format!("port {s} is out of range 1..65535")),
    }
}

/// Parses `[tcp:|udp:]HOST[:CONTAINER]` as `-p`/`--port=` takes it. The
/// protocol defaults to TCP, CONTAINER to HOST.
pub fn parse_port(s: &str) -> Result<PortSpec, SpecError> {
    let err = |reason: String| SpecError::Port {
        spec: s.to_string(),
        reason,
    };
    let (proto, rest) = if let Some(r) = s.strip_prefix("tcp:") {
        (Proto::Tcp, r)
    } else if let Some(r) = s.strip_prefix("udp:") {
        (Proto::Udp, r)
    } else {
        (Proto::Tcp, s)
    };
    let (host_port, container_port) = match rest.split_once(':') {
        Some((h, c)) => (
            parse_port_number(h).map_err(err)?,
            parse_port_number(c).map_err(err)?,
        ),
        None => {
            let p = parse_port_number(rest).map_err(err)?;
            (p, p)
        }
    };
    Ok(PortSpec {
        proto,
        host_port,
        container_port,
    })
}

/// True for a name a shell could export: ASCII letters, digits and `_`,
/// not starting with a digit (systemd's `env_name_is_valid()`).
pub fn env_name_is_valid(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses `NAME=VALUE` (`-E`, `Environment=`). The value may be empty and may
/// contain `=`; it may not contain a NUL byte.
pub fn parse_env_assignment(s: &str) -> Result<(String, String), SpecError> {
    let err = |reason: &str| SpecError::Env {
        spec: s.to_string(),
        reason: reason.to_string(),
    };
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| err("expected NAME=VALUE"))?;
    if !env_name_is_valid(name) {
        return Err(err(
            "the name must be letters, digits and '_', not starting with a digit",
        ));
    }
    if value.contains('\0') {
        return Err(err("the value contains a NUL byte"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Splits a whitespace-separated list the way systemd's
/// `extract_first_word(..., EXTRACT_UNQUOTE)` does (the shared unit-file
/// word splitter): `"..."` and `'...'` group words (and may start or end in
/// the middle of one), a backslash makes the next character literal. An
/// unterminated quote or a lone trailing backslash is an error.
pub fn split_words(s: &str) -> Result<Vec<String>, SpecError> {
    words(s, Extract::UNQUOTE).map_err(|e| SpecError::Words {
        spec: s.to_string(),
        reason: e.strip_prefix(&format!("{s:?} ")).unwrap_or(&e).to_string(),
    })
}

/// Parses a `--system-call-filter=`/`SystemCallFilter=` value into words.
///
/// A leading `~` turns the whole list into a deny list; to keep the meaning
/// when lists from several lines are concatenated, each word of a deny list
/// is returned with its own `~` prefix (`"~a b"` gives `["~a", "~b"]`), and
/// each word of an allow list as written. The seccomp module interprets the
/// names (`@group`s, system call names).
pub fn parse_syscall_filter(s: &str) -> Result<Vec<String>, SpecError> {
    let (deny, items) = match s.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let words = split_words(items)?;
    Ok(words
        .into_iter()
        .map(|w| if deny { format!("~{w}") } else { w })
        .collect())
}

/// Parses `HOST[:CONTAINER]` for `--network-veth-extra=` and
/// `VirtualEthernetExtra=`: two interface names, the container side
/// defaulting to the host side's name.
pub fn parse_veth_extra(s: &str) -> Result<(String, String), SpecError> {
    let err = |reason: String| SpecError::VethExtra {
        spec: s.to_string(),
        reason,
    };
    let (host, container) = match s.split_once(':') {
        Some((h, c)) => (h, c),
        None => (s, s),
    };
    for name in [host, container] {
        if !ifname_is_valid(name) {
            return Err(err(format!("{name:?} is not a valid interface name")));
        }
    }
    Ok((host.to_string(), container.to_string()))
}

/// Checks one interface name (`--network-interface=`, `Interface=`, ...).
pub fn parse_ifname(s: &str) -> Result<String, SpecError> {
    if ifname_is_valid(s) {
        Ok(s.to_string())
    } else {
        Err(SpecError::IfName {
            name: s.to_string(),
        })
    }
}

/// Parses `-E NAME[=VALUE]`: `NAME` alone takes the value from our own
/// environment, or is empty when we have none (as systemd-nspawn).
pub fn parse_setenv(s: &str) -> Result<(String, String), SpecError> {
    if s.contains('=') {
        return parse_env_assignment(s);
    }
    let value = std::env::var(s).unwrap_or_default();
    parse_env_assignment(&format!("{s}={value}"))
}

/// Applies one `--system-call-filter=` value to `filter`, strictly: an
/// unknown name is an error.
pub fn parse_syscall_filter_arg(s: &str) -> Result<SyscallFilter, SpecError> {
    let mut f = SyscallFilter::default();
    for w in parse_syscall_filter(s)? {
        seccomp::parse_arg(&mut f, &w).map_err(|e| SpecError::Syscall(e.to_string()))?;
    }
    Ok(f)
}

/// Applies one `SystemCallFilter=` line to `filter`, as systemd does for
/// files: unknown system calls and groups are returned (to be warned
/// about) and skipped.
pub fn parse_syscall_filter_lenient(
    s: &str,
    mut filter: SyscallFilter,
) -> Result<(Vec<String>, SyscallFilter), String> {
    let mut unknown = Vec::new();
    for w in parse_syscall_filter(s).map_err(|e| e.to_string())? {
        match seccomp::parse_arg(&mut filter, &w) {
            Ok(()) => {}
            Err(SeccompError::UnknownSyscall(n) | SeccompError::UnknownGroup(n)) => unknown.push(n),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok((unknown, filter))
}

/// Parses a signal name or number: "SIGTERM", "TERM", "15", "SIGRTMIN+3",
/// "RTMIN+3" (systemd's `signal_from_string()`).
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse().ok()?
        };
        let n = libc::SIGRTMIN().checked_add(off)?;
        return (off >= 0 && n <= libc::SIGRTMAX()).then_some(n);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')?.parse().ok()?
        };
        let n = libc::SIGRTMAX().checked_sub(off)?;
        return (off >= 0 && n >= libc::SIGRTMIN()).then_some(n);
    }
    if name.is_empty() {
        return None;
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// A `--kill-signal=` value.
pub fn parse_signal_arg(s: &str) -> Result<i32, SpecError> {
    parse_signal(s).ok_or_else(|| bad("signal", s, "unknown signal"))
}

/// A user name or UID for `-u/--user=`/`User=` (looked up in the image's
/// /etc/passwd when the container starts): systemd's relaxed user name
/// rules (no ':', '/', whitespace or control characters, not "." or "..").
pub fn parse_user(s: &str) -> Result<String, SpecError> {
    let ok = !s.is_empty()
        && s.len() <= 256
        && s != "."
        && s != ".."
        && !s.starts_with('-')
        && !s
            .chars()
            .any(|c| c == ':' || c == '/' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(s.to_string())
    } else {
        Err(bad("user", s, "not a valid user name or UID"))
    }
}

/// A 128-bit id as `--uuid=`/`MachineID=` take it: 32 hex digits, dashes
/// allowed, not all zero. Returns it as 32 lowercase hex digits.
pub fn parse_machine_id(s: &str) -> Result<String, SpecError> {
    let hex: String = s
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 32
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
        || hex.chars().all(|c| c == '0')
    {
        return Err(bad("machine id", s, "expected 32 hex digits"));
    }
    Ok(hex)
}

/// `--oom-score-adjust=`/`OOMScoreAdjust=`: -1000..=1000.
pub fn parse_oom_score_adjust(s: &str) -> Result<i32, SpecError> {
    match s.parse::<i32>() {
        Ok(n) if (-1000..=1000).contains(&n) => Ok(n),
        _ => Err(bad(
            "OOM score adjustment",
            s,
            "expected a number from -1000 to 1000",
        )),
    }
}

/// Largest CPU number accepted (systemd's `CPU_SET_MAX`-ish bound).
const CPU_MAX: usize = 8191;

/// `--cpu-affinity=`/`CPUAffinity=`: CPU numbers and ranges (`0-3`),
/// separated by commas or whitespace (systemd's `parse_cpu_set()`).
pub fn parse_cpu_set(s: &str) -> Result<CpuSet, SpecError> {
    let err = |why: &str| bad("CPU set", s, why);
    let mut set = CpuSet::new();
    for item in s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        let num = |t: &str| -> Result<usize, SpecError> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("expected CPU numbers and ranges such as 0-3,5"));
            }
            t.parse::<usize>()
                .ok()
                .filter(|n| *n <= CPU_MAX)
                .ok_or_else(|| err("CPU number too large"))
        };
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(item)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(err("range start is above its end"));
        }
        set.extend(lo..=hi);
    }
    if set.is_empty() {
        return Err(err("no CPUs"));
    }
    Ok(set)
}

/// One limit of resource `RLIMITS[i]`: `infinity`, or a number in the
/// resource's unit (bytes with K/M/G... suffixes, seconds for CPU, a time
/// for RTTIME, a nice level for NICE), as systemd's `rlimit_parse()`.
fn parse_limit_one(i: usize, v: &str) -> Result<u64, String> {
    let v = v.trim();
    if v == "infinity" {
        return Ok(u64::MAX);
    }
    let name = RLIMITS[i].0;
    let n = match name {
        "FSIZE" | "DATA" | "STACK" | "CORE" | "RSS" | "AS" | "MEMLOCK" | "MSGQUEUE" => {
            parse_size_1024(v)
        }
        "CPU" => parse_timespan(v, 1_000_000)
            .ok()
            .flatten()
            .map(|us| (us.div_ceil(1_000_000)).min(u128::from(u64::MAX - 1)) as u64),
        "RTTIME" => parse_timespan(v, 1)
            .ok()
            .flatten()
            .map(|us| us.min(u128::from(u64::MAX - 1)) as u64),
        "NICE" => {
            // A signed value is a nice level (-20..19), unsigned the raw 0..40.
            if let Some(rest) = v.strip_prefix(['+', '-']) {
                let lvl: i64 = rest
                    .parse()
                    .map_err(|_| format!("{v:?} is not a nice level"))?;
                let lvl = if v.starts_with('-') { -lvl } else { lvl };
                if !(-20..=19).contains(&lvl) {
                    return Err(format!("{v:?} is not a nice level (-20..19)"));
                }
                Some((20 - lvl) as u64)
            } else {
                v.parse::<u64>().ok().filter(|n| *n <= 40)
            }
        }
        _ => {
            if v.bytes().all(|b| b.is_ascii_digit()) {
                v.parse::<u64>().ok()
            } else {
                None
            }
        }
    };
    n.ok_or_else(|| format!("{v:?} is not a valid limit for {name}"))
}

/// `SOFT[:HARD]` for resource `RLIMITS[i]` (`LimitNOFILE=1024:4096`); one
/// value sets both.
pub fn parse_rlimit(i: usize, v: &str) -> Result<Rlimit, SpecError> {
    let e = |why: String| bad("resource limit", v, why);
    let (soft, hard) = match v.split_once(':') {
        Some((s, h)) => (
            parse_limit_one(i, s).map_err(e)?,
            parse_limit_one(i, h).map_err(e)?,
        ),
        None => {
            let n = parse_limit_one(i, v).map_err(e)?;
            (n, n)
        }
    };
    if soft > hard {
        return Err(bad(
            "resource limit",
            v,
            "the soft limit is above the hard limit",
        ));
    }
    Ok(Rlimit { soft, hard })
}

/// `--rlimit=NAME=SOFT[:HARD]` (NAME as `NOFILE` or `RLIMIT_NOFILE`).
/// Returns the index into [`RLIMITS`] and the limit.
pub fn parse_rlimit_arg(s: &str) -> Result<(usize, Rlimit), SpecError> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| bad("resource limit", s, "expected NAME=SOFT[:HARD]"))?;
    let name = name.trim();
    let name = name.strip_prefix("RLIMIT_").unwrap_or(name);
    let i = RLIMITS
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case(name))
        .ok_or_else(|| bad("resource limit", s, format!("unknown resource {name:?}")))?;
    Ok((i, parse_rlimit(i, value)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &str, dest: &str, ro: bool, rec: bool, inside: bool) -> BindSpec {
        BindSpec {
            source: source.into(),
            dest: dest.into(),
            read_only: ro,
            recursive: rec,
            source_in_container: inside,
        }
    }

    #[test]
    fn overlay_specs_as_systemd_reads_them() {
        let d = |p: &str| OverlayDir {
            path: p.trim_start_matches('+').into(),
            in_container: p.starts_with('+'),
        };
        let o = parse_overlay("/a:/b", false).unwrap();
        assert_eq!(o.lower, [d("/a")]);
        assert_eq!(o.upper, Some(d("/b")));
        assert_eq!(o.dest, PathBuf::from("/b"));
        let o = parse_overlay("/l1:+/l2:/up\\:x:/mnt/m", true).unwrap();
        assert_eq!(o.lower, [d("/l1"), d("+/l2")]);
        assert_eq!(o.upper, Some(d("/up:x")));
        assert_eq!(
            (o.dest.as_path(), o.read_only),
            (std::path::Path::new("/mnt/m"), true)
        );
        // An empty upper: a tmpfs.
        let o = parse_overlay("/a:+/b::/m", false).unwrap();
        assert_eq!((o.lower.len(), o.upper), (2, None));
        // Two fields: the destination is the upper without its "+".
        assert_eq!(
            parse_overlay("+/a:+/var/x", false).unwrap().dest,
            PathBuf::from("/var/x")
        );
        for bad in [
            "",
            "/a",
            "/a:",
            ":/b",
            "/a:b",
            "/a:/b:rel",
            "/a::",
            "+a:/b",
            "/a:/b:/../m",
            "/a\\",
        ] {
            let e = parse_overlay(bad, false).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid overlay mount") && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn bind_accepts() {
        let cases: &[(&str, bool, BindSpec)] = &[
            ("/a", false, bind("/a", "/a", false, true, false)),
            ("/a", true, bind("/a", "/a", true, true, false)),
            ("/a:/b", false, bind("/a", "/b", false, true, false)),
            (
                "/a:/b:norbind",
                false,
                bind("/a", "/b", false, false, false),
            ),
            ("/a:/b:rbind", false, bind("/a", "/b", false, true, false)),
            (
                "/a:/b:norbind,rbind",
                false,
                bind("/a", "/b", false, true, false),
            ),
            ("/a:/b:noidmap", true, bind("/a", "/b", true, true, false)),
            ("/a:/b:", false, bind("/a", "/b", false, true, false)),
            (
                "/a:/b:,,norbind,",
                false,
                bind("/a", "/b", false, false, false),
            ),
            ("+/srv", false, bind("/srv", "/srv", false, true, true)),
            ("+/srv:/mnt", false, bind("/srv", "/mnt", false, true, true)),
            (
                "/with\\:colon:/x\\:y",
                false,
                bind("/with:colon", "/x:y", false, true, false),
            ),
            (
                "/back\\\\slash",
                false,
                bind("/back\\slash", "/back\\slash", false, true, false),
            ),
            (
                "//a/./b//:/c/d/",
                false,
                bind("/a/b", "/c/d", false, true, false),
            ),
            ("/", false, bind("/", "/", false, true, false)),
            // A host source may use "..": it is the host's path.
            (
                "/a/../b:/c",
                false,
                bind("/a/../b", "/c", false, true, false),
            ),
        ];
        for (input, ro, want) in cases {
            assert_eq!(parse_bind(input, *ro).as_ref(), Ok(want), "input {input:?}");
        }
    }

    #[test]
    fn bind_refuses() {
        let cases: &[(&str, &str)] = &[
            ("", "source: path is empty"),
            ("relative", "source: path is not absolute"),
            ("+relative", "source: path is not absolute"),
            ("+", "source: path is empty"),
            (":/b", "source: path is empty"),
            ("/a:relative", "destination: path is not absolute"),
            ("/a:", "destination: path is empty"),
            ("/a:/b/../c", "destination: path must not contain"),
            ("/a/../b", "destination (taken from the source)"),
            ("+/a/../b:/c", "source: path must not contain"),
            ("/a:/b:bogus", "unknown option \"bogus\""),
            ("/a:/b:idmap", "id-mapped bind mounts are not supported"),
            ("/a:/b:rootidmap", "not supported"),
            ("/a:/b:owneridmap", "not supported"),
            ("/a\\", "lone backslash"),
            ("/a\0b", "NUL"),
        ];
        for (input, needle) in cases {
            let e = parse_bind(input, false).expect_err(input);
            let msg = e.to_string();
            assert!(msg.contains(needle), "{input:?}: {msg}");
            assert!(msg.starts_with("invalid bind mount "), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn tmpfs() {
        let ok: &[(&str, &str, &str)] = &[
            ("/tmp", "/tmp", "mode=0755"),
            ("/tmp:", "/tmp", "mode=0755"),
            ("/run/x:mode=0700,size=10M", "/run/x", "mode=0700,size=10M"),
            ("/a\\:b:uid=0:gid=0", "/a:b", "uid=0:gid=0"),
            ("/var//tmp/", "/var/tmp", "mode=0755"),
        ];
        for (input, path, opts) in ok {
            let t = parse_tmpfs(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(t.path, PathBuf::from(path), "{input:?}");
            assert_eq!(t.options, *opts, "{input:?}");
        }
        for bad in ["", "tmp", ":mode=1", "/a/../b", "/a\\"] {
            let e = parse_tmpfs(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid tmpfs mount "), "{e}");
        }
    }

    #[test]
    fn ports() {
        let ok: &[(&str, Proto, u16, u16)] = &[
            ("80", Proto::Tcp, 80, 80),
            ("8080:80", Proto::Tcp, 8080, 80),
            ("tcp:443", Proto::Tcp, 443, 443),
            ("udp:53", Proto::Udp, 53, 53),
            ("udp:5353:53", Proto::Udp, 5353, 53),
            ("1", Proto::Tcp, 1, 1),
            ("65535:1", Proto::Tcp, 65535, 1),
        ];
        for (input, proto, h, c) in ok {
            let want = PortSpec {
                proto: *proto,
                host_port: *h,
                container_port: *c,
            };
            assert_eq!(parse_port(input), Ok(want), "{input:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "missing"),
            ("0", "out of range"),
            ("65536", "out of range"),
            ("99999999999999999999", "out of range"),
            ("80:0", "out of range"),
            ("sctp:80", "not a port number"),
            ("TCP:80", "not a port number"),
            ("udp:", "missing"),
            ("80:", "missing"),
            (":80", "missing"),
            ("1:2:3", "not a port number"),
            ("-1", "not a port number"),
            ("+80", "not a port number"),
            (" 80", "not a port number"),
        ];
        for (input, needle) in bad {
            let msg = parse_port(input).expect_err(input).to_string();
            assert!(msg.contains(needle), "{input:?}: {msg}");
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
        }
    }

    #[test]
    fn env() {
        let ok: &[(&str, &str, &str)] = &[
            ("A=1", "A", "1"),
            ("_x=", "_x", ""),
            ("PATH=/a:/b", "PATH", "/a:/b"),
            ("K=a=b", "K", "a=b"),
            ("k9=v w", "k9", "v w"),
        ];
        for (input, k, v) in ok {
            assert_eq!(
                parse_env_assignment(input),
                Ok((k.to_string(), v.to_string())),
                "{input:?}"
            );
        }
        for bad in ["", "A", "=1", "1A=x", "A-B=x", "A B=x", "Ä=x", "A=\0"] {
            let e = parse_env_assignment(bad).expect_err(bad);
            assert!(
                e.to_string().starts_with("invalid environment assignment "),
                "{e}"
            );
        }
    }

    #[test]
    fn booleans() {
        for t in ["1", "yes", "y", "true", "t", "on", "YES", "True", "On", "Y"] {
            assert_eq!(parse_boolean(t), Some(true), "{t}");
        }
        for f in ["0", "no", "n", "false", "f", "off", "NO", "False", "OFF"] {
            assert_eq!(parse_boolean(f), Some(false), "{f}");
        }
        for x in ["", "2", "maybe", " yes", "yes ", "oui", "enable"] {
            assert_eq!(parse_boolean(x), None, "{x:?}");
        }
    }

    #[test]
    fn absolute_paths() {
        assert_eq!(
            parse_absolute_path("/srv//x/."),
            Ok(PathBuf::from("/srv/x"))
        );
        assert_eq!(parse_absolute_path("/"), Ok(PathBuf::from("/")));
        for bad in ["", "srv", "./x", "/a/../b", "/.."] {
            assert!(parse_absolute_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn words() {
        let ok: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            ("a b  c", &["a", "b", "c"]),
            ("\ta\tb\t", &["a", "b"]),
            ("\"c c\" d", &["c c", "d"]),
            ("'c c' d", &["c c", "d"]),
            ("a\"b c\"d", &["ab cd"]),
            ("\"\"", &[""]),
            ("a\\ b", &["a b"]),
            ("\"a\\\"b\"", &["a\"b"]),
            ("'it\\'s'", &["it's"]),
            ("\"it's\"", &["it's"]),
            ("x\\\\y", &["x\\y"]),
        ];
        for (input, want) in ok {
            let got = split_words(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got, *want, "{input:?}");
        }
        for bad in ["\"abc", "'abc", "abc\\", "a\"b"] {
            assert!(split_words(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn syscall_filters() {
        let cases: &[(&str, &[&str])] = &[
            ("@system-service", &["@system-service"]),
            ("a b", &["a", "b"]),
            ("~a b", &["~a", "~b"]),
            ("~ @mount", &["~@mount"]),
            ("~", &[]),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_syscall_filter(input),
                Ok(want.iter().map(|w| w.to_string()).collect::<Vec<_>>()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn veth_extra_and_ifnames() {
        assert_eq!(
            parse_veth_extra("vx0"),
            Ok(("vx0".to_string(), "vx0".to_string()))
        );
        assert_eq!(
            parse_veth_extra("vx0:eth1"),
            Ok(("vx0".to_string(), "eth1".to_string()))
        );
        for bad in ["", ":", "a:", ":b", "a:b:c", "0123456789abcdef", "a b"] {
            assert!(parse_veth_extra(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_ifname("eth0"), Ok("eth0".to_string()));
        for bad in ["", "a/b", "a:b", "a b", "0123456789abcdef", ".", ".."] {
            let msg = parse_ifname(bad).expect_err(bad).to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
    }
}
